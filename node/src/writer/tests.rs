//! The writer against a real sled directory.

use super::*;

fn histogram() -> Histogram {
    Histogram::new([0.001, 0.01, 0.1])
}

fn metrics() -> WriterMetrics {
    WriterMetrics {
        writes: histogram(),
        flushes: histogram(),
        settle_steps: histogram(),
        pending: Gauge::default(),
    }
}

fn spawn(dir: &std::path::Path) -> (Store, WriteQueue) {
    let store = Store::open(dir).unwrap();
    let queue = WriteQueue::spawn(store.clone(), DEFAULT_SETTLE_AFTER, metrics());
    (store, queue)
}

/// A stream with one event in its pool and a candidate of it stored, then promoted.
fn promote_a_candidate(queue: &WriteQueue) -> (StreamId, ParsedMiniblock, u64) {
    use rill_protocol::{NodeKey, Payload, pb, seal};
    let key = NodeKey::from_secret_bytes(&[3; 32]).unwrap();
    let stream = StreamId([5; 32]);
    let inception = rill_protocol::envelope::inception(stream, Default::default(), 0, &key);
    let genesis = ParsedMiniblock::genesis(vec![inception], 1, 0, &key).unwrap();
    let event = seal(
        pb::StreamEvent {
            creator: vec![],
            salt: vec![1],
            prev_miniblock_hash: genesis.hash().to_vec(),
            prev_miniblock_num: 0,
            created_at_ms: 0,
            payload: Some(Payload::Message(pb::Message { data: vec![1] })),
        },
        &key,
    )
    .unwrap();
    let header = pb::MiniblockHeader {
        num: 1,
        prev_hash: genesis.hash().to_vec(),
        timestamp_ms: 2,
        event_hashes: vec![event.hash().to_vec()],
        ..Default::default()
    };
    let miniblock = ParsedMiniblock::seal(header, vec![event.clone()], &key).unwrap();
    queue.submit(Write::CreateStream {
        stream,
        nodes: vec![key.address()],
        genesis,
    });
    queue.submit(Write::AddToMinipool {
        stream,
        events: vec![event],
    });
    queue.submit(Write::StoreCandidate {
        stream,
        miniblock: miniblock.clone(),
        pooled: vec![true],
    });
    let position = queue.submit(Write::PromoteCandidate {
        stream,
        miniblock: miniblock.clone(),
    });
    (stream, miniblock, position)
}

#[tokio::test]
async fn a_promoted_candidate_is_settled_after_the_delay_with_no_position_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = spawn(dir.path());
    let writer = queue.writer();
    let (stream, miniblock, position) = promote_a_candidate(&queue);
    assert!(writer.applied(position).await);
    assert_eq!(store.head(&stream).unwrap(), Some((1, miniblock.hash())));
    assert!(
        store.minipool(&stream).unwrap().is_empty(),
        "promoted, though not settled yet"
    );
    // Writes after it are applied and flushed without waiting for the settlement.
    let after = queue.last_block(7);
    assert!(writer.applied(after).await);
    assert!(writer.durable().await);
    assert_eq!(writer.submitted(), after, "a settlement takes no position");
    assert_eq!(store.pending_promotions().unwrap(), 1, "not settled yet");
    tokio::time::sleep(DEFAULT_SETTLE_AFTER * 3).await;
    assert_eq!(
        store.pending_promotions().unwrap(),
        0,
        "settled by the writer"
    );
    assert!(writer.take_failure().is_none());
}

#[tokio::test]
async fn a_writer_that_stops_settles_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let queue = WriteQueue::spawn(store.clone(), Duration::from_secs(3600), metrics());
    let writer = queue.writer();
    let (stream, _, position) = promote_a_candidate(&queue);
    assert!(writer.applied(position).await);
    assert_eq!(store.pending_promotions().unwrap(), 1, "an hour to go");
    drop((queue, writer));
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.pending_promotions().unwrap() > 0 {
        assert!(Instant::now() < deadline, "settled once its queue closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.load(&stream, 8).unwrap().miniblocks.len(), 2);
}

#[tokio::test]
async fn writes_land_in_order_and_positions_follow_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = spawn(dir.path());
    let writer = queue.writer();
    let mut last = 0;
    for block in 1..=500 {
        last = queue.last_block(block);
    }
    assert_eq!(last, 500);
    assert!(writer.applied(last).await);
    assert_eq!(
        store.last_block().unwrap(),
        Some(500),
        "the last write is the last"
    );
    assert!(writer.durable().await);
    assert!(writer.applied_now() >= 500);
    writer.block_until_applied(last);
    assert!(writer.take_failure().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_durable_is_served_while_writes_keep_coming_and_after_they_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue) = spawn(dir.path());
    let writer = queue.writer();
    let mut waits = Vec::new();
    for block in 1..=3000 {
        queue.last_block(block);
        if block % 100 == 0 {
            // Asked while the writer is busy with a backlog, from tasks of their own (a
            // mark at or past another's sends no wake-up of its own).
            let writer = writer.clone();
            waits.push(tokio::spawn(async move {
                let asked_at = writer.submitted();
                (asked_at, writer.durable().await)
            }));
        }
    }
    for wait in waits {
        let (asked_at, durable) = wait.await.unwrap();
        assert!(durable);
        assert!(writer.shared.progress.borrow().flushed >= asked_at);
    }
    assert!(writer.durable().await);
    assert_eq!(writer.shared.progress.borrow().flushed, 3000);
    // A write already written, then a flush asked once the writer waits for jobs again:
    // the wake-up is the only job it gets (a lost one would leave the ask unserved).
    let last = queue.last_block(3001);
    assert!(writer.applied(last).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let idle = tokio::time::timeout(Duration::from_secs(30), writer.durable());
    assert_eq!(idle.await.ok(), Some(true), "served");
    assert_eq!(writer.shared.progress.borrow().flushed, last);
    // Everything is flushed already: nothing to wait for.
    assert!(writer.durable().await);
}

#[tokio::test]
async fn a_failed_write_stops_every_position_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = spawn(dir.path());
    let writer = queue.writer();
    let before = queue.last_block(1);
    assert!(writer.applied(before).await);
    queue.fail(StoreError::io("injected"));
    let after = queue.last_block(3);
    assert!(
        !writer.applied(after).await,
        "nothing passes the failed write"
    );
    assert!(!writer.durable().await, "nor is anything after it durable");
    writer.block_until_applied(after);
    assert_eq!(
        store.last_block().unwrap(),
        Some(1),
        "the write after it never ran"
    );
    assert!(matches!(writer.take_failure(), Some(StoreError::Sled(_))));
    assert!(writer.take_failure().is_none(), "reported once");
}

/// A settlement that fails stops the writer and tells every waiter, instead of holding the
/// progress it reads while it publishes the failure (which deadlocked the writer thread, and
/// with it the node: gdb found a testnet node's writer so in a hung CI run).
#[test]
fn a_failed_settlement_stops_the_writer_without_deadlocking_it() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Shared::new();
    let writer = WriterThread {
        store: Store::open(dir.path()).unwrap(),
        shared: shared.clone(),
        settle_after: DEFAULT_SETTLE_AFTER,
        settling: VecDeque::new(),
        current: None,
        metrics: metrics(),
    };
    let (done, returned) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(writer.fail_settling(StoreError::Corrupt("a test's".into())));
    });
    let goes_on = returned
        .recv_timeout(Duration::from_secs(10))
        .expect("fail_settling returns");
    assert!(!goes_on, "the writer stops");
    assert!(shared.progress.borrow().failed, "waiters are told");
    assert!(shared.failure.lock().unwrap().is_some());
}
