use rill_protocol::{Limits, ParsedMiniblock, StreamId};
use rill_store::{Store, StoreError, StoredGap, Write};

use crate::support::{
    STREAM, chain_with_snapshots, genesis, hashes, key, message, new_stream, next, next_with,
};

#[test]
fn stream_survives_a_reopen_with_its_chain_minipool_and_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let pool: Vec<_> = (0..5).map(|i| message(&g, i)).collect();
    let m1;
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .create_stream(&STREAM, &[key(1).address()], &g)
            .unwrap();
        for e in &pool {
            store
                .add_to_minipool(&STREAM, std::slice::from_ref(e))
                .unwrap();
        }
        m1 = next(Some(&g), pool[..3].to_vec());
        store.store_candidate(&STREAM, &m1).unwrap();
        store.promote(&STREAM, &m1).unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.stream_ids().unwrap(), vec![STREAM]);
    assert_eq!(store.head(&STREAM).unwrap(), Some((1, m1.hash())));
    let restored = store.load(&STREAM, 32).unwrap();
    assert_eq!(restored.miniblocks, vec![g.clone(), m1.clone()]);
    assert_eq!(
        hashes(&restored.minipool),
        hashes(&pool[3..]),
        "promoted events left the pool"
    );
    assert!(
        restored.candidates.is_empty(),
        "promotion removed the candidate"
    );

    let fetched = store
        .events(&STREAM, &[pool[0].hash(), pool[4].hash()])
        .unwrap();
    assert_eq!(fetched.len(), 2);
    let wire = store.miniblocks(&STREAM, 0, 1).unwrap();
    let reopened: Vec<_> = wire
        .into_iter()
        .map(|m| ParsedMiniblock::open(m, &Limits::default()).unwrap())
        .collect();
    assert_eq!(reopened, vec![g, m1]);
}

#[test]
fn a_candidate_told_which_events_are_pooled_writes_the_others_and_reopens_whole() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let pooled: Vec<_> = (0..3).map(|i| message(&g, i)).collect();
    let fetched = message(&g, 3);
    let mut events = pooled.clone();
    events.insert(1, fetched.clone());
    let m1 = next(Some(&g), events);
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .create_stream(&STREAM, &[key(1).address()], &g)
            .unwrap();
        store.add_to_minipool(&STREAM, &pooled).unwrap();
        store
            .store_pooled_candidate(&STREAM, &m1, &[true, false, true, true])
            .unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.events(&STREAM, &[fetched.hash()]).unwrap().len(),
        1,
        "the event not in the minipool was written with the candidate"
    );
    let restored = store.load(&STREAM, 32).unwrap();
    assert_eq!(restored.candidates, vec![m1.clone()]);
    store.promote(&STREAM, &m1).unwrap();
    let wire = store.miniblocks(&STREAM, 1, 1).unwrap();
    let reopened = ParsedMiniblock::open(wire[0].clone(), &Limits::default()).unwrap();
    assert_eq!(reopened, m1);
}

#[test]
fn a_batch_enters_the_minipool_in_order_once_and_its_events_are_not_written_again() {
    let (dir, store, g) = new_stream();
    let pool: Vec<_> = (0..4).map(|i| message(&g, i)).collect();
    store.add_to_minipool(&STREAM, &pool[..1]).unwrap();
    // Already there, then repeated within the batch: each is kept once, in first order.
    let batch = [
        pool[0].clone(),
        pool[1].clone(),
        pool[2].clone(),
        pool[1].clone(),
        pool[3].clone(),
    ];
    store.add_to_minipool(&STREAM, &batch).unwrap();
    assert_eq!(
        hashes(&store.load(&STREAM, 32).unwrap().minipool),
        hashes(&pool)
    );

    // An event dropped from the minipool (its bytes with it) and then named by a candidate is
    // written by the candidate; the others are found where admission wrote them.
    store
        .drop_from_minipool(&STREAM, &[pool[0].hash()])
        .unwrap();
    let m1 = next(Some(&g), pool.clone());
    store.store_candidate(&STREAM, &m1).unwrap();
    store.promote(&STREAM, &m1).unwrap();
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let restored = store.load(&STREAM, 32).unwrap();
    assert_eq!(restored.miniblocks, vec![g, m1]);
    assert!(restored.minipool.is_empty());
    assert_eq!(store.events(&STREAM, &hashes(&pool)).unwrap().len(), 4);
}

/// Creates the stream in a store at `dir` and closes it, for a test to write into sled itself.
fn create_and_close(dir: &std::path::Path, genesis: &ParsedMiniblock) {
    let store = Store::open(dir).unwrap();
    store
        .create_stream(&STREAM, &[key(1).address()], genesis)
        .unwrap();
    store.flush().unwrap();
}

#[test]
fn parts_left_by_a_candidate_cut_short_are_reached_by_nothing() {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let pool: Vec<_> = (0..3).map(|i| message(&g, i)).collect();
    let m1 = next(Some(&g), pool.clone());
    create_and_close(dir.path(), &g);
    {
        // A node killed after a candidate's parts (`id ‖ num ‖ hash ‖ part` → entries
        // `hash ‖ length ‖ envelope`) and before its header reopens with the parts alone
        // (of a candidate 1 other than the one promoted below).
        let db = rill_store::open_sled(dir.path()).unwrap();
        let bodies = db.open_tree("candidate_bodies").unwrap();
        let mut key = STREAM.0.to_vec();
        key.extend_from_slice(&1u64.to_be_bytes());
        key.extend_from_slice(&[0xab; 32]);
        key.extend_from_slice(&0u16.to_be_bytes());
        let mut part = Vec::new();
        for event in &pool {
            let envelope = event.envelope().encode_to_vec();
            part.extend_from_slice(event.hash().as_slice());
            part.extend_from_slice(&(envelope.len() as u32).to_be_bytes());
            part.extend_from_slice(&envelope);
        }
        bodies.insert(key, part).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert!(
        store.streams_with_pending().unwrap().is_empty(),
        "nothing to load the stream for at start"
    );
    let restored = store.load(&STREAM, 32).unwrap();
    assert!(restored.minipool.is_empty(), "no event in the minipool");
    assert!(restored.candidates.is_empty(), "no candidate");

    // The events' next arrival pools them; a candidate naming them is stored and promoted.
    store.add_to_minipool(&STREAM, &pool).unwrap();
    assert_eq!(
        hashes(&store.load(&STREAM, 32).unwrap().minipool),
        hashes(&pool)
    );
    store.store_candidate(&STREAM, &m1).unwrap();
    store.promote(&STREAM, &m1).unwrap();
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let restored = store.load(&STREAM, 32).unwrap();
    assert_eq!(restored.miniblocks, vec![g, m1]);
    assert!(restored.minipool.is_empty());
    drop(store);
    let db = rill_store::open_sled(dir.path()).unwrap();
    assert!(
        db.open_tree("candidate_bodies").unwrap().is_empty(),
        "the promotion removed the candidates' parts, the one cut short as well"
    );
}

#[test]
fn a_peer_is_served_events_from_the_pool_the_candidates_and_the_last_miniblocks() {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let events: Vec<_> = (0..9).map(|i| message(&g, i)).collect();
    create_and_close(dir.path(), &g);
    {
        // An event stored under its hash, as an older version did.
        let db = rill_store::open_sled(dir.path()).unwrap();
        let legacy = &events[8];
        db.open_tree("events")
            .unwrap()
            .insert(legacy.hash().as_slice(), legacy.envelope().encode_to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    // Miniblocks 1..=5 of one event each, a candidate 6 of one event not in the pool, and
    // one event in the pool.
    let mut head = g.clone();
    for event in &events[..5] {
        store
            .add_to_minipool(&STREAM, std::slice::from_ref(event))
            .unwrap();
        head = next(Some(&head), vec![event.clone()]);
        store.promote(&STREAM, &head).unwrap();
    }
    store
        .store_candidate(&STREAM, &next(Some(&head), vec![events[5].clone()]))
        .unwrap();
    store.add_to_minipool(&STREAM, &events[6..7]).unwrap();
    let served = |wanted: &[usize]| {
        let asked: Vec<_> = wanted.iter().map(|&i| events[i].hash()).collect();
        hashes(
            &store
                .events(&STREAM, &asked)
                .unwrap()
                .into_iter()
                .map(|e| rill_protocol::ParsedEvent::open_stored(e).unwrap())
                .collect::<Vec<_>>(),
        )
    };
    let expect = |wanted: &[usize]| wanted.iter().map(|&i| events[i].hash()).collect::<Vec<_>>();
    assert_eq!(served(&[6, 5, 4, 1, 8]), expect(&[6, 5, 4, 1, 8]));
    assert_eq!(
        served(&[0, 7]),
        expect(&[]),
        "miniblock 1 is older than the last four; event 7 was never stored"
    );
    assert!(
        store
            .events(&StreamId([9; 32]), &expect(&[6]))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_promotion_that_uses_part_of_a_write_keeps_the_rest_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let pool: Vec<_> = (0..8).map(|i| message(&g, i)).collect();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .create_stream(&STREAM, &[key(1).address()], &g)
            .unwrap();
        store.add_to_minipool(&STREAM, &pool[..3]).unwrap();
        store.add_to_minipool(&STREAM, &pool[3..6]).unwrap();
        store.add_to_minipool(&STREAM, &pool[6..]).unwrap();
        // The first write whole, the middle of the second, nothing of the third.
        let m1 = next(
            Some(&g),
            vec![
                pool[0].clone(),
                pool[4].clone(),
                pool[1].clone(),
                pool[2].clone(),
            ],
        );
        store.promote(&STREAM, &m1).unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let left = [3, 5, 6, 7].map(|i| pool[i].hash()).to_vec();
    assert_eq!(hashes(&store.load(&STREAM, 32).unwrap().minipool), left);
    store
        .drop_from_minipool(&STREAM, &[pool[6].hash()])
        .unwrap();
    assert_eq!(
        hashes(&store.load(&STREAM, 32).unwrap().minipool),
        [3, 5, 7].map(|i| pool[i].hash()).to_vec()
    );
    assert!(
        store.events(&STREAM, &[pool[6].hash()]).unwrap().is_empty(),
        "its bytes are gone"
    );
}

#[test]
fn one_event_additions_share_rows_and_keep_arrival_order_through_a_promotion_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    // 100 events one at a time (rows appended to), one of them again, then one addition
    // larger than a row, then one more alone (after a full row: a new row).
    let pool: Vec<_> = (0..1_200).map(|i| message(&g, i)).collect();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .create_stream(&STREAM, &[key(1).address()], &g)
            .unwrap();
        for event in &pool[..100] {
            store
                .add_to_minipool(&STREAM, std::slice::from_ref(event))
                .unwrap();
        }
        store
            .add_to_minipool(&STREAM, std::slice::from_ref(&pool[7]))
            .unwrap();
        store.add_to_minipool(&STREAM, &pool[100..1_199]).unwrap();
        store
            .add_to_minipool(&STREAM, std::slice::from_ref(&pool[1_199]))
            .unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        hashes(&store.load(&STREAM, 32).unwrap().minipool),
        hashes(&pool),
        "arrival order, each event once"
    );
    // A miniblock of every third event, across all the rows.
    let used: Vec<_> = pool.iter().step_by(3).cloned().collect();
    store.promote(&STREAM, &next(Some(&g), used)).unwrap();
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let left: Vec<_> = pool
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, e)| e.hash())
        .collect();
    assert_eq!(hashes(&store.load(&STREAM, 32).unwrap().minipool), left);
}

#[test]
fn a_minipool_written_by_the_first_layout_loads() {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let pool: Vec<_> = (0..3).map(|i| message(&g, i)).collect();
    create_and_close(dir.path(), &g);
    {
        // One row per event (`id ‖ seq → hash`) beside its index, as the first layout wrote.
        let db = rill_store::open_sled(dir.path()).unwrap();
        let (events, minipool, index) = (
            db.open_tree("events").unwrap(),
            db.open_tree("minipool").unwrap(),
            db.open_tree("minipool_index").unwrap(),
        );
        for (seq, event) in (0u64..).zip(&pool) {
            let mut key = STREAM.0.to_vec();
            key.extend_from_slice(&seq.to_be_bytes());
            events
                .insert(event.hash().as_slice(), event.envelope().encode_to_vec())
                .unwrap();
            minipool.insert(&key, event.hash().as_slice()).unwrap();
            let mut index_key = STREAM.0.to_vec();
            index_key.extend_from_slice(event.hash().as_slice());
            index.insert(index_key, &seq.to_be_bytes()).unwrap();
        }
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        hashes(&store.load(&STREAM, 32).unwrap().minipool),
        hashes(&pool)
    );
    let m1 = next(Some(&g), pool[..2].to_vec());
    store.promote(&STREAM, &m1).unwrap();
    assert_eq!(
        hashes(&store.load(&STREAM, 32).unwrap().minipool),
        hashes(&pool[2..])
    );
}

#[test]
fn racing_candidates_are_kept_side_by_side_until_one_is_promoted() {
    let (_dir, store, g) = new_stream();
    let a = next(Some(&g), vec![message(&g, 1)]);
    let b = next(Some(&g), vec![message(&g, 2)]);
    store.store_candidate(&STREAM, &a).unwrap();
    store.store_candidate(&STREAM, &b).unwrap();
    assert_eq!(store.candidates(&STREAM).unwrap().len(), 2);
    store.promote(&STREAM, &b).unwrap();
    assert!(store.candidates(&STREAM).unwrap().is_empty());
    assert_eq!(store.head(&STREAM).unwrap(), Some((1, b.hash())));
}

#[test]
fn out_of_order_promotion_is_refused_and_stores_nothing() {
    let (_dir, store, g) = new_stream();
    let m1 = next(Some(&g), vec![message(&g, 1)]);
    let m2 = next(Some(&m1), vec![message(&g, 2)]);
    assert!(matches!(
        store.promote(&STREAM, &m2),
        Err(StoreError::OutOfOrder(_))
    ));
    let forked = next(Some(&next(Some(&g), vec![])), vec![]);
    assert!(matches!(
        store.promote(&STREAM, &forked),
        Err(StoreError::OutOfOrder(_))
    ));
    assert_eq!(store.head(&STREAM).unwrap(), Some((0, g.hash())));
    assert!(
        store
            .events(&STREAM, &[m2.events()[0].hash()])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn dropped_events_leave_the_minipool() {
    let (_dir, store, g) = new_stream();
    let pool: Vec<_> = (0..3).map(|i| message(&g, i)).collect();
    for e in &pool {
        store
            .add_to_minipool(&STREAM, std::slice::from_ref(e))
            .unwrap();
        store
            .add_to_minipool(&STREAM, std::slice::from_ref(e))
            .unwrap(); // idempotent
    }
    store
        .drop_from_minipool(&STREAM, &[pool[1].hash()])
        .unwrap();
    let left: Vec<_> = store
        .minipool(&STREAM)
        .unwrap()
        .into_iter()
        .map(|e| e.hash)
        .collect();
    assert_eq!(left, vec![pool[0].hash().to_vec(), pool[2].hash().to_vec()]);
}

#[test]
fn unknown_stream_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(matches!(
        store.load(&STREAM, 32),
        Err(StoreError::UnknownStream(_))
    ));
}

#[test]
fn a_stream_is_created_once_with_its_genesis_in_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let g = genesis();
    store
        .write(&Write::CreateStream {
            stream: STREAM,
            nodes: vec![key(1).address()],
            genesis: g.clone(),
        })
        .unwrap();
    assert_eq!(store.head(&STREAM).unwrap(), Some((0, g.hash())));
    assert!(matches!(
        store.create_stream(&STREAM, &[key(1).address()], &g),
        Err(StoreError::OutOfOrder(_))
    ));
    let m1 = next(Some(&g), vec![]);
    assert!(matches!(
        store.create_stream(&rill_protocol::StreamId([9; 32]), &[key(1).address()], &m1),
        Err(StoreError::OutOfOrder(_))
    ));
    assert_eq!(store.stream_ids().unwrap(), vec![STREAM]);
}

#[test]
fn a_removed_stream_leaves_nothing_behind() {
    let (_dir, store, g) = new_stream();
    store.add_to_minipool(&STREAM, &[message(&g, 1)]).unwrap();
    store.remove_stream(&STREAM).unwrap();
    assert!(store.stream_ids().unwrap().is_empty());
    assert_eq!(store.head(&STREAM).unwrap(), None);
    assert!(store.minipool(&STREAM).unwrap().is_empty());
    store
        .create_stream(&STREAM, &[key(1).address()], &g)
        .unwrap();
}

#[test]
fn a_load_reads_from_the_latest_snapshot_or_the_window_not_from_the_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // 40 miniblocks, a snapshot every 8.
    let chain = chain_with_snapshots(40, 8);
    let g = chain[0].clone();
    store
        .create_stream(&STREAM, &[key(1).address()], &g)
        .unwrap();
    for m in &chain[1..] {
        store.promote(&STREAM, m).unwrap();
    }
    let nums = |window| -> Vec<u64> {
        store
            .load(&STREAM, window)
            .unwrap()
            .miniblocks
            .iter()
            .map(ParsedMiniblock::num)
            .collect()
    };
    // The base is the snapshot at 40 itself; the window reaches back 4.
    assert_eq!(nums(4), (36..=40).collect::<Vec<_>>());
    assert_eq!(nums(0), vec![40]);
    // One more miniblock: the base stays at 40.
    let m41 = next_with(chain.last(), vec![message(&g, 41)], None, 40);
    store.promote(&STREAM, &m41).unwrap();
    assert_eq!(nums(0), vec![40, 41]);
    assert_eq!(nums(3), vec![38, 39, 40, 41]);
    let loaded = store.load(&STREAM, 3).unwrap();
    assert_eq!(loaded.miniblocks.last().unwrap(), &m41);
}

#[test]
fn a_rebase_skips_history_that_a_checked_backfill_fills_in_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // The chain a peer holds: 20 miniblocks, a snapshot at 16.
    let chain = chain_with_snapshots(20, 16);
    let g = chain[0].clone();
    let gap = StoredGap {
        down_to: 3,
        below: 14,
        hash: chain[14].prev_hash(),
    };
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .create_stream(&STREAM, &[key(1).address()], &g)
            .unwrap();
        for m in &chain[1..=2] {
            store.promote(&STREAM, m).unwrap();
        }
        // A run that does not reach past the head is refused.
        assert!(matches!(
            store.rebase(&STREAM, &chain[2..=16], &gap),
            Err(StoreError::OutOfOrder(_))
        ));
        store
            .write(&Write::Rebase {
                stream: STREAM,
                miniblocks: chain[14..=16].to_vec(),
                gap,
            })
            .unwrap();
        assert_eq!(store.head(&STREAM).unwrap(), Some((16, chain[16].hash())));
        assert_eq!(store.gap(&STREAM).unwrap(), Some(gap));
        // Reads stop at the gap.
        let (page, complete) = store.miniblocks_page(&STREAM, 0, 16, 1 << 20).unwrap();
        assert_eq!(page.len(), 3);
        assert!(!complete);
        assert!(
            store
                .miniblocks_page(&STREAM, 5, 16, 1 << 20)
                .unwrap()
                .0
                .is_empty()
        );
        // The stream loads from its snapshot (the window stops at the gap), with the gap to
        // backfill.
        let loaded = store.load(&STREAM, 5).unwrap();
        assert_eq!(loaded.miniblocks.first().unwrap().num(), 14);
        assert_eq!(loaded.gap, Some(gap));
        // A backfill that is not the gap's top is refused; the top fills it part way.
        assert!(matches!(
            store.backfill(&STREAM, &chain[5..=12], None),
            Err(StoreError::OutOfOrder(_))
        ));
        let rest = StoredGap {
            down_to: 3,
            below: 9,
            hash: chain[9].prev_hash(),
        };
        store
            .backfill(&STREAM, &chain[9..=13], Some(&rest))
            .unwrap();
        assert_eq!(store.gap(&STREAM).unwrap(), Some(rest));
        // A restarted node loads the stream to go on backfilling.
        assert!(store.streams_with_pending().unwrap().contains(&STREAM));
    }
    let store = Store::open(dir.path()).unwrap();
    store.backfill(&STREAM, &chain[3..=8], None).unwrap();
    assert_eq!(store.gap(&STREAM).unwrap(), None);
    assert!(!store.streams_with_pending().unwrap().contains(&STREAM));
    let (page, complete) = store.miniblocks_page(&STREAM, 0, 16, 1 << 20).unwrap();
    assert!(complete);
    assert_eq!(
        page.iter()
            .map(|m| m.header.as_ref().unwrap().hash.clone())
            .collect::<Vec<_>>(),
        chain[..=16]
            .iter()
            .map(|m| m.hash().to_vec())
            .collect::<Vec<_>>()
    );
}
