//! Loading a stream from its latest snapshot, eviction, and snapshot votes, on one engine that
//! leads every miniblock of its stream.

use rill_engine::{
    Effect, Engine, EngineConfig, NetworkParams, Reject, RestoredStream, StoreOp, StreamView,
};
use rill_protocol::ParsedMiniblock;

use crate::support::{Solo, genesis, key, member, message};

const INTERVAL: u64 = 4;
const WINDOW: u64 = 6;

fn config() -> EngineConfig {
    EngineConfig {
        params: NetworkParams {
            snapshot_interval: INTERVAL,
            ..NetworkParams::default()
        },
        recency_window: WINDOW,
        admission_margin: 2,
        ..EngineConfig::default()
    }
}

fn promoted(effects: &[Effect]) -> Vec<ParsedMiniblock> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Store(StoreOp::Promote { miniblock, .. }) => Some(miniblock.clone()),
            _ => None,
        })
        .collect()
}

/// A solo stream with `count` miniblocks after the genesis, one event each (a join of a new
/// member at miniblock 3), and every promoted miniblock, the genesis first.
fn history(count: u64) -> (Solo, Vec<ParsedMiniblock>) {
    let mut solo = Solo::new(config());
    let mut chain = vec![genesis(solo.stream, &solo.creator, &key(1))];
    for salt in 0..count {
        let event = if salt == 2 {
            member(&solo.creator, solo.head(), true, key(40).address())
        } else {
            message(&solo.creator, solo.head(), salt)
        };
        solo.add(event).unwrap();
        let effects = solo.next_block();
        chain.extend(promoted(&effects));
    }
    assert_eq!(chain.len() as u64, count + 1, "one miniblock per block");
    (solo, chain)
}

/// What the store hands over: the base (genesis or latest snapshot) or `WINDOW` before the
/// head, whichever is older, up to the head.
fn stored(chain: &[ParsedMiniblock]) -> Vec<ParsedMiniblock> {
    let head = chain.len() - 1;
    let base = chain
        .iter()
        .rposition(|m| m.num() == 0 || m.header().snapshot.is_some())
        .unwrap();
    chain[base.min(head.saturating_sub(WINDOW as usize))..].to_vec()
}

fn load(solo: &Solo, miniblocks: Vec<ParsedMiniblock>) -> Result<Engine, Reject> {
    let mut engine = Engine::new(key(1), config());
    engine.restore(RestoredStream {
        id: solo.stream,
        nodes: vec![key(1).address()],
        miniblocks,
        minipool: vec![],
        candidates: vec![],
        gap: None,
    })?;
    Ok(engine)
}

#[test]
fn snapshots_come_every_interval_and_hold_the_state_after_their_miniblock() {
    let (_, chain) = history(13);
    let snapshots: Vec<u64> = chain
        .iter()
        .filter(|m| m.header().snapshot.is_some())
        .map(ParsedMiniblock::num)
        .collect();
    assert_eq!(snapshots, vec![4, 8, 12]);
    let at_8 = chain[8].header().snapshot.clone().unwrap();
    assert_eq!(
        at_8.event_count,
        1 + 8,
        "the inception and one event per miniblock"
    );
    assert_eq!(
        at_8.members.len(),
        2,
        "the creator and the member who joined"
    );
    for miniblock in &chain[9..] {
        let expected = if miniblock.num() > 12 { 12 } else { 8 };
        assert_eq!(miniblock.header().prev_snapshot_num, expected);
    }
}

#[test]
fn a_stream_loaded_from_its_latest_snapshot_judges_events_as_the_live_one_does() {
    let (solo, chain) = history(30);
    let slice = stored(&chain);
    // The base is the snapshot at 28; the window reaches back to 24.
    assert_eq!(slice.first().unwrap().num(), 24);
    assert_eq!(
        slice.len(),
        7,
        "what was read does not grow with the history"
    );
    let mut loaded = load(&solo, slice).unwrap();
    let live = solo.engine.stream(&solo.stream).unwrap();
    let view = loaded.stream(&solo.stream).unwrap();
    assert_eq!(view.head(), live.head());
    assert_eq!(view.members(), live.members());
    // An event of a miniblock in the window is a duplicate; a new one on a recent miniblock
    // is admitted; one on a miniblock out of the window is stale.
    // Miniblock 27 is before the base (28): remembered from the window, not the snapshot.
    let included = chain[27].events()[0].clone();
    assert!(matches!(
        loaded.add_event(1, solo.stream, included),
        Err(Reject::Duplicate(_))
    ));
    let recent = (chain[26].num(), chain[26].hash());
    loaded
        .add_event(1, solo.stream, message(&solo.creator, recent, 999))
        .unwrap();
    let old = (chain[20].num(), chain[20].hash());
    assert!(matches!(
        loaded.add_event(1, solo.stream, message(&solo.creator, old, 998)),
        Err(Reject::StaleMiniblock { .. })
    ));
}

#[test]
fn the_next_miniblock_of_a_loaded_stream_carries_the_right_offsets() {
    let (solo, chain) = history(10);
    let engine = load(&solo, stored(&chain)).unwrap();
    let mut reloaded = Solo::from_engine(engine, &solo);
    reloaded
        .add(message(&solo.creator, reloaded.head(), 77))
        .unwrap();
    let next = promoted(&reloaded.next_block());
    assert_eq!(next.len(), 1);
    let header = next[0].header();
    assert_eq!(header.num, 11);
    assert_eq!(header.event_num_offset, 1 + 10);
    assert_eq!(header.prev_snapshot_num, 8);
}

#[test]
fn stored_miniblocks_that_do_not_chain_are_refused() {
    let (solo, chain) = history(10);
    let mut slice = stored(&chain);
    slice.remove(2);
    assert!(matches!(
        load(&solo, slice),
        Err(Reject::BrokenChain { .. })
    ));
    let no_base: Vec<_> = chain[9..].to_vec();
    assert!(matches!(load(&solo, no_base), Err(Reject::BadSnapshot(_))));
}

#[test]
fn an_evicted_stream_is_gone_from_memory_and_loads_back_to_produce_miniblocks() {
    let (mut solo, chain) = history(9);
    // Busy: an event waits in the minipool.
    solo.add(message(&solo.creator, solo.head(), 500)).unwrap();
    assert!(!solo.engine.evict(&solo.stream));
    let mut chain = chain;
    chain.extend(promoted(&solo.next_block()));
    // Idle now: evicted.
    assert!(solo.engine.evict(&solo.stream));
    assert!(!solo.engine.is_loaded(&solo.stream));
    assert!(matches!(
        solo.add(message(&solo.creator, (10, chain[10].hash()), 501)),
        Err(Reject::UnknownStream(_))
    ));
    // Loaded again from what the store holds, the cold stream produces the next miniblock.
    let engine = load(&solo, stored(&chain)).unwrap();
    let mut reloaded = Solo::from_engine(engine, &solo);
    reloaded
        .add(message(&solo.creator, reloaded.head(), 502))
        .unwrap();
    let next = promoted(&reloaded.next_block());
    assert_eq!(
        next.iter().map(ParsedMiniblock::num).collect::<Vec<_>>(),
        vec![11]
    );
}
