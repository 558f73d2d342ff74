//! Promotions in two steps: the head moves with a small write, the events settle later (or
//! when the store is opened again).

use rill_protocol::{Limits, ParsedEvent, ParsedMiniblock};
use rill_store::{Store, StoreError, Write};

use crate::support::{STREAM, genesis, hashes, key, message, new_stream, next};

/// A stream whose pool holds `pooled`, and candidate 1 of `pooled[..3]` and `unpooled`
/// stored (the pool's events read from its rows, `unpooled` written with it).
fn with_candidate(
    store: &Store,
    g: &ParsedMiniblock,
    pooled: &[ParsedEvent],
    unpooled: &ParsedEvent,
) -> ParsedMiniblock {
    store
        .create_stream(&STREAM, &[key(1).address()], g)
        .unwrap();
    store.add_to_minipool(&STREAM, pooled).unwrap();
    let mut events = pooled[..3].to_vec();
    events.push(unpooled.clone());
    let m1 = next(Some(g), events);
    store
        .store_pooled_candidate(&STREAM, &m1, &[true, true, true, false])
        .unwrap();
    m1
}

/// What every read of the stream says once miniblock 1 is promoted, pending or settled.
fn reads_as_promoted(
    store: &Store,
    g: &ParsedMiniblock,
    m1: &ParsedMiniblock,
    pooled: &[ParsedEvent],
    unpooled: &ParsedEvent,
) {
    assert_eq!(store.head(&STREAM).unwrap(), Some((1, m1.hash())));
    assert_eq!(
        store.header(&STREAM, 1).unwrap().as_ref(),
        Some(m1.header_event().envelope()),
        "the head's header alone"
    );
    let wire = store.miniblocks(&STREAM, 0, 1).unwrap();
    let opened: Vec<_> = wire
        .into_iter()
        .map(|m| ParsedMiniblock::open(m, &Limits::default()).unwrap())
        .collect();
    assert_eq!(opened, vec![g.clone(), m1.clone()], "assembled whole");
    let minipool = store.minipool(&STREAM).unwrap();
    let minipool: Vec<_> = minipool
        .into_iter()
        .map(|e| ParsedEvent::open_stored(e).unwrap().hash())
        .collect();
    assert_eq!(
        minipool,
        hashes(&pooled[3..]),
        "promoted events are not pooled"
    );
    assert!(
        store.candidates(&STREAM).unwrap().is_empty(),
        "no candidate"
    );
    let restored = store.load(&STREAM, 32).unwrap();
    assert_eq!(restored.miniblocks, vec![g.clone(), m1.clone()]);
    assert_eq!(hashes(&restored.minipool), hashes(&pooled[3..]));
    assert!(restored.candidates.is_empty());
    let fetched = store
        .events(&STREAM, &[pooled[0].hash(), unpooled.hash()])
        .unwrap();
    assert_eq!(fetched.len(), 2, "a peer is served the miniblock's events");
}

#[test]
fn a_pending_promotion_reads_as_promoted_and_settles_into_its_own_parts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let g = genesis();
    let pooled: Vec<_> = (0..5).map(|i| message(&g, i)).collect();
    let unpooled = message(&g, 99);
    let m1 = with_candidate(&store, &g, &pooled, &unpooled);

    store.promote_candidate(&STREAM, &m1).unwrap();
    reads_as_promoted(&store, &g, &m1, &pooled, &unpooled);

    store.settle(&STREAM, &m1).unwrap();
    reads_as_promoted(&store, &g, &m1, &pooled, &unpooled);
    store.settle(&STREAM, &m1).unwrap();
    assert_eq!(
        store.pending_promotions().unwrap(),
        0,
        "nothing left pending"
    );

    // Settled: the miniblock no longer needs its candidate's parts or the pool's rows. The
    // next promotion, whole, finds only its own events in the pool.
    let m2 = next(Some(&m1), pooled[3..].to_vec());
    store.promote(&STREAM, &m2).unwrap();
    assert!(store.minipool(&STREAM).unwrap().is_empty());
    assert_eq!(store.miniblocks(&STREAM, 1, 2).unwrap().len(), 2);
}

#[test]
fn a_store_reopened_settles_the_promotions_left_pending() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let pooled: Vec<_> = (0..5).map(|i| message(&g, i)).collect();
    let unpooled = message(&g, 99);
    let m1;
    {
        let store = Store::open(dir.path()).unwrap();
        m1 = with_candidate(&store, &g, &pooled, &unpooled);
        store
            .write(&Write::PromoteCandidate {
                stream: STREAM,
                miniblock: m1.clone(),
            })
            .unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.settled_at_open(), 1, "opening settled it");
    assert_eq!(store.pending_promotions().unwrap(), 0);
    reads_as_promoted(&store, &g, &m1, &pooled, &unpooled);
}

#[test]
fn a_promotion_whose_candidate_is_not_stored_is_written_whole() {
    let (_dir, store, g) = new_stream();
    let events: Vec<_> = (0..3).map(|i| message(&g, i)).collect();
    let m1 = next(Some(&g), events);
    store.promote_candidate(&STREAM, &m1).unwrap();
    assert_eq!(store.pending_promotions().unwrap(), 0, "nothing pending");
    let restored = store.load(&STREAM, 32).unwrap();
    assert_eq!(restored.miniblocks, vec![g, m1]);
}

#[test]
fn a_whole_promotion_after_a_pending_one_keeps_the_candidate_it_reads_from() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let pooled: Vec<_> = (0..5).map(|i| message(&g, i)).collect();
    let unpooled = message(&g, 99);
    let (m1, m2);
    {
        let store = Store::open(dir.path()).unwrap();
        m1 = with_candidate(&store, &g, &pooled, &unpooled);
        store.promote_candidate(&STREAM, &m1).unwrap();
        // A fetched miniblock, promoted whole, removes the candidates up to its number but
        // the one the pending promotion still reads its unpooled event from.
        m2 = next(Some(&m1), pooled[3..4].to_vec());
        store.promote(&STREAM, &m2).unwrap();
        let wire = store.miniblocks(&STREAM, 1, 1).unwrap().pop().unwrap();
        assert_eq!(ParsedMiniblock::open_stored(wire).unwrap(), m1);
        store.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let restored = store.load(&STREAM, 32).unwrap();
    assert_eq!(restored.miniblocks, vec![g, m1, m2]);
    assert_eq!(hashes(&restored.minipool), hashes(&pooled[4..]));
    assert!(store.candidates(&STREAM).unwrap().is_empty());
}

#[test]
fn a_pending_promotion_out_of_order_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let g = genesis();
    let pooled: Vec<_> = (0..5).map(|i| message(&g, i)).collect();
    let m1 = with_candidate(&store, &g, &pooled, &message(&g, 99));
    let m2 = next(Some(&m1), pooled[3..].to_vec());
    store.store_candidate(&STREAM, &m2).unwrap();
    let refused = store.promote_candidate(&STREAM, &m2);
    assert!(
        matches!(refused, Err(StoreError::OutOfOrder(_))),
        "{refused:?}"
    );
    assert_eq!(store.head(&STREAM).unwrap(), Some((0, g.hash())));
    assert_eq!(store.pending_promotions().unwrap(), 0);
    // A miniblock other than the one promoted at its number is not pending: settling it
    // leaves the pending one as it is.
    store.promote_candidate(&STREAM, &m1).unwrap();
    let other = next(Some(&g), pooled[..1].to_vec());
    store.settle(&STREAM, &other).unwrap();
    assert_eq!(store.pending_promotions().unwrap(), 1);
    store.settle(&STREAM, &m1).unwrap();
    assert_eq!(store.pending_promotions().unwrap(), 0);
}

#[test]
fn a_removed_stream_leaves_no_pending_promotion_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let g = genesis();
    let pooled: Vec<_> = (0..5).map(|i| message(&g, i)).collect();
    let m1 = with_candidate(&store, &g, &pooled, &message(&g, 99));
    store.promote_candidate(&STREAM, &m1).unwrap();
    store.remove_stream(&STREAM).unwrap();
    assert_eq!(store.pending_promotions().unwrap(), 0);
    store.settle(&STREAM, &m1).unwrap();
    assert!(store.stream_ids().unwrap().is_empty());
    assert!(store.miniblocks(&STREAM, 0, 1).unwrap().is_empty());
}

/// A promotion of 1,000 events, each added on its own (about 80 pool rows), left pending.
fn a_large_pending_promotion(
    store: &Store,
) -> (ParsedMiniblock, ParsedMiniblock, Vec<ParsedEvent>) {
    let g = genesis();
    store
        .create_stream(&STREAM, &[key(1).address()], &g)
        .unwrap();
    let pooled: Vec<_> = (0..1_010).map(|i| message(&g, i)).collect();
    for e in &pooled {
        store
            .add_to_minipool(&STREAM, std::slice::from_ref(e))
            .unwrap();
    }
    let m1 = next(Some(&g), pooled[..1_000].to_vec());
    store
        .store_pooled_candidate(&STREAM, &m1, &vec![true; 1_000])
        .unwrap();
    store.promote_candidate(&STREAM, &m1).unwrap();
    (g, m1, pooled)
}

#[test]
fn a_node_stopped_at_any_step_of_a_settlement_finishes_it_when_it_opens_the_store() {
    let steps = {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (_, m1, _) = a_large_pending_promotion(&store);
        let mut settling = store.start_settling(&STREAM, &m1).unwrap().unwrap();
        let mut steps = 1;
        while !store.settle_step(&mut settling).unwrap() {
            steps += 1;
        }
        steps
    };
    // Parts, the mark, the pool's rows, the candidates: each more than one step here but
    // the last two.
    assert!(steps >= 6, "{steps} steps");
    for stop_after in 0..steps {
        let dir = tempfile::tempdir().unwrap();
        let (g, m1, pooled);
        {
            let store = Store::open(dir.path()).unwrap();
            (g, m1, pooled) = a_large_pending_promotion(&store);
            let mut settling = store.start_settling(&STREAM, &m1).unwrap().unwrap();
            for _ in 0..stop_after {
                assert!(!store.settle_step(&mut settling).unwrap());
            }
            // Every read holds on the way.
            let restored = store.load(&STREAM, 8).unwrap();
            assert_eq!(restored.miniblocks, vec![g.clone(), m1.clone()]);
            assert_eq!(hashes(&restored.minipool), hashes(&pooled[1_000..]));
            assert!(restored.candidates.is_empty());
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.settled_at_open(),
            1,
            "stopped after {stop_after} steps"
        );
        assert_eq!(store.pending_promotions().unwrap(), 0);
        let restored = store.load(&STREAM, 8).unwrap();
        assert_eq!(restored.miniblocks, vec![g, m1]);
        assert_eq!(hashes(&restored.minipool), hashes(&pooled[1_000..]));
        let rows = store.minipool(&STREAM).unwrap();
        assert_eq!(rows.len(), 10, "the pool's rows hold only what is pooled");
    }
}

/// A busy stream's pool grows while a settlement runs. The rows added after it started
/// cannot hold the miniblock's events: its steps leave them unread.
#[test]
fn a_settlement_reads_only_the_pool_rows_older_than_its_start() {
    let settle = |store: &Store, m1: &ParsedMiniblock, g: &ParsedMiniblock, more: u64| {
        let mut settling = store.start_settling(&STREAM, m1).unwrap().unwrap();
        // Hundreds of rows (one event added at a time) once the settlement started.
        for i in 0..more {
            let e = message(g, 10_000 + i);
            store
                .add_to_minipool(&STREAM, std::slice::from_ref(&e))
                .unwrap();
        }
        let mut steps = 1;
        while !store.settle_step(&mut settling).unwrap() {
            steps += 1;
        }
        steps
    };
    let alone = {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (g, m1, _) = a_large_pending_promotion(&store);
        settle(&store, &m1, &g, 0)
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (g, m1, _) = a_large_pending_promotion(&store);
    let busy = settle(&store, &m1, &g, 5_000);
    // Were they read, the later rows would take ten more steps here.
    assert_eq!(busy, alone, "{busy} steps, {alone} alone");
    assert_eq!(store.pending_promotions().unwrap(), 0);
    let pooled = store.minipool(&STREAM).unwrap();
    assert_eq!(pooled.len(), 10 + 5_000, "the later events stay pooled");
    let wire = store.miniblocks(&STREAM, 1, 1).unwrap().pop().unwrap();
    assert_eq!(ParsedMiniblock::open_stored(wire).unwrap(), m1);
}

/// Reads race the writer: a peer's catch-up or a client's read assembles a miniblock while
/// the writer settles its promotion, or reads a candidate while the writer promotes it. Such
/// a read gives the miniblock whole, or leaves out the candidate promoted meanwhile; it never
/// fails for an event that moved while it read.
#[test]
fn reads_while_promotions_settle_find_every_event() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (_dir, store, g) = new_stream();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) {
                let head = store.head(&STREAM).unwrap().map_or(0, |(num, _)| num);
                let from = head.saturating_sub(1);
                for miniblock in store.miniblocks(&STREAM, from, head).unwrap() {
                    ParsedMiniblock::open_stored(miniblock).unwrap();
                }
                for candidate in store.candidates(&STREAM).unwrap() {
                    ParsedMiniblock::open_stored(candidate).unwrap();
                }
                reads += 1;
            }
            reads
        })
    };
    let mut prev = g;
    for round in 0..150u64 {
        let pooled: Vec<_> = (0..40).map(|i| message(&prev, round * 1000 + i)).collect();
        for run in pooled.chunks(2) {
            store.add_to_minipool(&STREAM, run).unwrap();
        }
        // Many events the candidate keeps itself: a read spends longer on its parts before
        // it reads the pool's rows.
        let unpooled = (40..200).map(|i| message(&prev, round * 1000 + i));
        let mut events = pooled.clone();
        events.extend(unpooled);
        let mut flags = vec![true; pooled.len()];
        flags.resize(events.len(), false);
        let miniblock = next(Some(&prev), events);
        store
            .store_pooled_candidate(&STREAM, &miniblock, &flags)
            .unwrap();
        // Every other miniblock is promoted whole, taking its candidate with it.
        if round % 2 == 0 {
            store.promote_candidate(&STREAM, &miniblock).unwrap();
            store.settle(&STREAM, &miniblock).unwrap();
        } else {
            store.promote(&STREAM, &miniblock).unwrap();
        }
        prev = miniblock;
    }
    done.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("no read failed");
    assert!(reads > 0);
    assert_eq!(store.pending_promotions().unwrap(), 0);
    assert!(store.minipool(&STREAM).unwrap().is_empty());
}
