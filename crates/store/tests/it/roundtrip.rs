use rill_protocol::{Limits, ParsedMiniblock};
use rill_store::{Store, StoreError, Write};

use crate::support::{STREAM, genesis, hashes, key, message, next};

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
            store.add_to_minipool(&STREAM, e).unwrap();
        }
        m1 = next(Some(&g), pool[..3].to_vec());
        store.store_candidate(&STREAM, &m1).unwrap();
        store.promote(&STREAM, &m1).unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.stream_ids().unwrap(), vec![STREAM]);
    assert_eq!(store.head(&STREAM).unwrap(), Some((1, m1.hash())));
    let restored = store.load(&STREAM, &Limits::default()).unwrap();
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

    let fetched = store.events(&[pool[0].hash(), pool[4].hash()]).unwrap();
    assert_eq!(fetched.len(), 2);
    let wire = store.miniblocks(&STREAM, 0, 1).unwrap();
    let reopened: Vec<_> = wire
        .into_iter()
        .map(|m| ParsedMiniblock::open(m, &Limits::default()).unwrap())
        .collect();
    assert_eq!(reopened, vec![g, m1]);
}

#[test]
fn racing_candidates_are_kept_side_by_side_until_one_is_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let g = genesis();
    store
        .create_stream(&STREAM, &[key(1).address()], &g)
        .unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let g = genesis();
    store
        .create_stream(&STREAM, &[key(1).address()], &g)
        .unwrap();
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
    assert!(store.events(&[m2.events()[0].hash()]).unwrap().is_empty());
}

#[test]
fn dropped_events_leave_the_minipool() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let g = genesis();
    store
        .create_stream(&STREAM, &[key(1).address()], &g)
        .unwrap();
    let pool: Vec<_> = (0..3).map(|i| message(&g, i)).collect();
    for e in &pool {
        store.add_to_minipool(&STREAM, e).unwrap();
        store.add_to_minipool(&STREAM, e).unwrap(); // idempotent
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
        store.load(&STREAM, &Limits::default()),
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
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let g = genesis();
    store
        .create_stream(&STREAM, &[key(1).address()], &g)
        .unwrap();
    store.add_to_minipool(&STREAM, &message(&g, 1)).unwrap();
    store.remove_stream(&STREAM).unwrap();
    assert!(store.stream_ids().unwrap().is_empty());
    assert_eq!(store.head(&STREAM).unwrap(), None);
    assert!(store.minipool(&STREAM).unwrap().is_empty());
    store
        .create_stream(&STREAM, &[key(1).address()], &g)
        .unwrap();
}
