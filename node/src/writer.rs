//! The store writer: one thread writes the node's store, so the node's loop never waits for
//! sled. The loop hands it writes in the engine's order ([`WriteQueue::submit`]) and moves on.
//! Two positions say how far it got: *applied* (written, readable) and *flushed* (on disk).
//! What others could observe after a write (a request to a peer, a client told of a
//! promotion, a watcher's update) waits until the applied position passes it; what must
//! survive a crash (an acknowledgement, an announcement that counts toward a quorum, a vote
//! for a candidate, a registration) waits for a flush that covers it ([`Writer::durable`]:
//! group commit, one flush for every write since the last). The writer thread flushes too,
//! between its batches of writes, so neither a flush nor its completion is handed to another
//! thread.
//!
//! A failed write stops the writer: neither position passes it, so nothing that followed it
//! leaves the node, and the loop stops the node (fail-stop; a restart reloads what the store
//! holds).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use rill_store::{Store, StoreError, Write};
use tokio::sync::watch;
use tracing::{error, warn};

/// Jobs the writer takes before it publishes its position (a backlog is published in steps).
const PUBLISH_EVERY: usize = 64;
/// Jobs submitted and not yet written, at most: a loop this far ahead waits for the writer
/// (backpressure, as when it wrote itself).
const WRITE_QUEUE: usize = 1024;

/// One job for the writer thread, in submission order.
enum Job {
    Write(Write),
    /// The last chain block whose effects were submitted before it.
    LastBlock(u64),
    /// A write that fails (fault injection).
    Fail(StoreError),
    /// Not a write: a [`Writer::durable`] asked for a flush (no position of its own).
    Flush,
}

/// How far the writer got: positions count jobs, from 1.
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    applied: u64,
    flushed: u64,
    /// A write failed: no position will pass it.
    failed: bool,
}

struct Shared {
    submitted: AtomicU64,
    /// The highest position a [`Writer::durable`] asked to flush.
    marked: AtomicU64,
    progress: watch::Sender<Progress>,
    failure: Mutex<Option<StoreError>>,
}

/// Waits on the writer's positions; cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    /// To wake the writer thread for a flush when it has no writes to do.
    jobs: SyncSender<Job>,
}

/// The submitting side: owned by the node's loop (the executor), the store's one writer.
pub(crate) struct WriteQueue {
    jobs: SyncSender<Job>,
    writer: Writer,
}

impl WriteQueue {
    /// Starts the writer thread.
    pub(crate) fn spawn(store: Store, writes: Histogram, flushes: Histogram) -> Self {
        let (progress, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            submitted: AtomicU64::new(0),
            marked: AtomicU64::new(0),
            progress,
            failure: Mutex::new(None),
        });
        let (jobs, queue) = std::sync::mpsc::sync_channel(WRITE_QUEUE);
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("rill-store-writer".into())
            .spawn(move || write_jobs(store, queue, thread_shared, writes, flushes))
            .expect("a thread for the store writer");
        Self {
            writer: Writer {
                shared,
                jobs: jobs.clone(),
            },
            jobs,
        }
    }

    /// A handle to wait on the writer's positions.
    pub(crate) fn writer(&self) -> Writer {
        self.writer.clone()
    }

    /// Hands `write` to the writer; its position.
    pub(crate) fn submit(&self, write: Write) -> u64 {
        self.push(Job::Write(write))
    }

    /// Records the last chain block handled, after the writes its effects made.
    pub(crate) fn last_block(&self, number: u64) -> u64 {
        self.push(Job::LastBlock(number))
    }

    /// A write that fails in order, as a disk would (fault injection).
    pub(crate) fn fail(&self, error: StoreError) -> u64 {
        self.push(Job::Fail(error))
    }

    fn push(&self, job: Job) -> u64 {
        let position = self.writer.shared.submitted.fetch_add(1, Ordering::AcqRel) + 1;
        // The thread only ends after a failure; the job then never applies, like every
        // job after the failed one.
        let _ = self.jobs.send(job);
        position
    }
}

impl Writer {
    /// Jobs submitted so far.
    pub(crate) fn submitted(&self) -> u64 {
        self.shared.submitted.load(Ordering::Acquire)
    }

    /// Jobs written so far.
    pub(crate) fn applied_now(&self) -> u64 {
        self.shared.progress.borrow().applied
    }

    /// Resolves `true` once everything up to `position` is written (readable), `false` if a
    /// write up to it failed.
    pub(crate) fn applied(&self, position: u64) -> impl Future<Output = bool> + Send + 'static {
        let mut progress = self.shared.progress.subscribe();
        async move {
            progress
                .wait_for(|p| p.failed || p.applied >= position)
                .await
                .is_ok_and(|p| !p.failed)
        }
    }

    /// Resolves `true` once everything submitted so far is on disk, `false` if a write failed
    /// first.
    pub(crate) fn durable(&self) -> impl Future<Output = bool> + Send + 'static {
        let position = self.submitted();
        let marked_before = self.shared.marked.fetch_max(position, Ordering::AcqRel);
        // A mark at or past this one already sent its wake-up. A full queue means the writer
        // has jobs to take: it reads the marks after them.
        if marked_before < position {
            let _ = self.jobs.try_send(Job::Flush);
        }
        let mut progress = self.shared.progress.subscribe();
        async move {
            progress
                .wait_for(|p| p.failed || p.flushed >= position)
                .await
                .is_ok_and(|p| !p.failed)
        }
    }

    /// Blocks until everything up to `target` is written (or a write failed): for the loop
    /// before it reads back a stream it evicted, usually long written.
    pub(crate) fn settle(&self, target: u64) {
        loop {
            let progress = *self.shared.progress.borrow();
            if progress.failed || progress.applied >= target {
                return;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// The write failure that stops the node, if any (once).
    pub(crate) fn take_failure(&self) -> Option<StoreError> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// The writer thread: applies jobs in order and publishes its position, and after each batch
/// of jobs flushes if a [`Writer::durable`] asked for it; stops at the first failed write.
fn write_jobs(
    store: Store,
    queue: Receiver<Job>,
    shared: Arc<Shared>,
    writes: Histogram,
    flushes: Histogram,
) {
    let (mut position, mut flushed, mut target) = (0u64, 0u64, 0u64);
    while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next.take() {
            let started = Instant::now();
            let written = match job {
                Job::Write(write) => store.write(&write),
                Job::LastBlock(number) => store.set_last_block(number),
                Job::Fail(error) => Err(error),
                Job::Flush => {
                    next = queue.try_recv().ok();
                    continue;
                }
            };
            writes.observe(started.elapsed().as_secs_f64());
            if let Err(e) = written {
                error!(%e, position = position + 1, "store write failed; stopping");
                *shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                shared.progress.send_modify(|p| p.failed = true);
                return;
            }
            position += 1;
            taken += 1;
            if taken < PUBLISH_EVERY {
                next = queue.try_recv().ok();
            }
        }
        shared.progress.send_modify(|p| p.applied = position);
        // A flush waits until the writes marked when it was asked for are all written, and
        // covers every write by then: one flush for many marks (group commit). The target
        // stays put until it is reached, so marks that keep coming do not put it off.
        if target <= flushed {
            target = shared.marked.load(Ordering::Acquire);
        }
        if target > flushed && position >= target {
            flush(&store, &flushes);
            flushed = position;
            shared.progress.send_modify(|p| p.flushed = position);
        }
    }
}

/// Flushes everything written so far, retrying until it succeeds: nothing waiting on a flush
/// is told otherwise, and the writes queue up (backpressure) meanwhile.
fn flush(store: &Store, flushes: &Histogram) {
    loop {
        let started = Instant::now();
        match store.flush() {
            Ok(()) => {
                flushes.observe(started.elapsed().as_secs_f64());
                return;
            }
            Err(e) => {
                warn!(%e, "store flush failed; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram() -> Histogram {
        Histogram::new([0.001, 0.01, 0.1])
    }

    fn spawn(dir: &std::path::Path) -> (Store, WriteQueue) {
        let store = Store::open(dir).unwrap();
        let queue = WriteQueue::spawn(store.clone(), histogram(), histogram());
        (store, queue)
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
        writer.settle(last);
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
        writer.settle(after);
        assert_eq!(
            store.last_block().unwrap(),
            Some(1),
            "the write after it never ran"
        );
        assert!(matches!(writer.take_failure(), Some(StoreError::Sled(_))));
        assert!(writer.take_failure().is_none(), "reported once");
    }
}
