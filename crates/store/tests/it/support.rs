use alloy_primitives::B256;
use rill_protocol::{NodeKey, ParsedEvent, ParsedMiniblock, Payload, StreamId, pb, seal};

pub(crate) fn key(seed: u8) -> NodeKey {
    NodeKey::from_secret_bytes(&[seed; 32]).unwrap()
}

pub(crate) const STREAM: StreamId = StreamId([1; 32]);

/// A store in a fresh directory (kept while the `TempDir` lives) holding [`STREAM`] from its
/// genesis, and that genesis.
pub(crate) fn new_stream() -> (tempfile::TempDir, rill_store::Store, ParsedMiniblock) {
    let dir = tempfile::tempdir().unwrap();
    let store = rill_store::Store::open(dir.path()).unwrap();
    let g = genesis();
    store
        .create_stream(&STREAM, &[key(1).address()], &g)
        .unwrap();
    (dir, store, g)
}

pub(crate) fn genesis() -> ParsedMiniblock {
    let inception =
        rill_protocol::envelope::inception(STREAM, pb::StreamSettings::default(), 0, &key(2));
    ParsedMiniblock::genesis(vec![inception], 1, 0, &key(1)).unwrap()
}

pub(crate) fn message(prev: &ParsedMiniblock, salt: u64) -> ParsedEvent {
    seal(
        pb::StreamEvent {
            creator: vec![],
            salt: salt.to_be_bytes().to_vec(),
            prev_miniblock_hash: prev.hash().to_vec(),
            prev_miniblock_num: prev.num(),
            created_at_ms: 0,
            payload: Some(Payload::Message(pb::Message { data: vec![7; 40] })),
        },
        &key(2),
    )
    .unwrap()
}

/// The miniblock after `prev` (or the genesis) holding `events`.
pub(crate) fn next(prev: Option<&ParsedMiniblock>, events: Vec<ParsedEvent>) -> ParsedMiniblock {
    next_with(prev, events, None, 0)
}

/// The miniblock after `prev` with a snapshot (or not) and the last snapshot's number.
pub(crate) fn next_with(
    prev: Option<&ParsedMiniblock>,
    events: Vec<ParsedEvent>,
    snapshot: Option<pb::Snapshot>,
    prev_snapshot_num: u64,
) -> ParsedMiniblock {
    let header = pb::MiniblockHeader {
        num: prev.map_or(0, |p| p.num() + 1),
        prev_hash: prev.map_or(vec![], |p| p.hash().to_vec()),
        timestamp_ms: prev.map_or(1, |p| p.header().timestamp_ms + 1),
        event_hashes: events.iter().map(|e| e.hash().to_vec()).collect(),
        event_num_offset: 0,
        snapshot,
        prev_snapshot_num,
        chain_block: 0,
    };
    ParsedMiniblock::seal(header, events, &key(1)).unwrap()
}

pub(crate) fn hashes(events: &[ParsedEvent]) -> Vec<B256> {
    events.iter().map(|e| e.hash()).collect()
}

/// The genesis and `count` miniblocks after it, one message each, a snapshot every `every`.
pub(crate) fn chain_with_snapshots(count: u64, every: u64) -> Vec<ParsedMiniblock> {
    let g = genesis();
    let mut chain = vec![g.clone()];
    let mut last_snapshot = 0;
    for num in 1..=count {
        let snapshot = num.is_multiple_of(every).then(|| pb::Snapshot {
            stream_id: STREAM.0.to_vec(),
            members: vec![key(2).address().to_vec()],
            settings: None,
            event_count: num,
        });
        chain.push(next_with(
            chain.last(),
            vec![message(&g, num)],
            snapshot,
            last_snapshot,
        ));
        if num.is_multiple_of(every) {
            last_snapshot = num;
        }
    }
    chain
}
