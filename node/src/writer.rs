//! The store writer: one thread writes the node's store, so the node's loop never waits for
//! sled. The loop hands it writes in the engine's order ([`WriteQueue::submit`]) and moves on.
//! Two positions say how far it got: *applied* (written, readable) and *flushed* (on disk).
//! What others could observe after a write (a request to a peer, a client told of a
//! promotion, a watcher's update) waits until the applied position passes it; what must
//! survive a crash (an acknowledgement, an announcement that counts toward a quorum, a vote
//! for a candidate, a registration) waits for a flush that covers it ([`Writer::durable`]:
//! group commit, one flush for every write since the last, on a task of its own).
//!
//! A failed write stops the writer: neither position passes it, so nothing that followed it
//! leaves the node, and the loop stops the node (fail-stop; a restart reloads what the store
//! holds).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;
use rill_store::{Store, StoreError, Write};
use tokio::sync::{mpsc, watch};
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
    wake_flusher: mpsc::Sender<()>,
}

/// The submitting side: owned by the node's loop (the executor), the store's one writer.
pub(crate) struct WriteQueue {
    jobs: std::sync::mpsc::SyncSender<Job>,
    writer: Writer,
}

impl WriteQueue {
    /// Starts the writer thread and the flusher task.
    pub(crate) fn spawn(store: Store, writes: Histogram, flushes: Histogram) -> Self {
        let (progress, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            submitted: AtomicU64::new(0),
            marked: AtomicU64::new(0),
            progress,
            failure: Mutex::new(None),
        });
        let (jobs, queue) = std::sync::mpsc::sync_channel(WRITE_QUEUE);
        let thread_store = store.clone();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("rill-store-writer".into())
            .spawn(move || write_jobs(thread_store, queue, thread_shared, writes))
            .expect("a thread for the store writer");
        let (wake_flusher, woken) = mpsc::channel(1);
        tokio::spawn(flush_marks(store, woken, shared.clone(), flushes));
        Self {
            jobs,
            writer: Writer {
                shared,
                wake_flusher,
            },
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
        self.shared.marked.fetch_max(position, Ordering::AcqRel);
        // A full channel means a wake-up is already pending; it will see this mark.
        let _ = self.wake_flusher.try_send(());
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

/// The writer thread: applies jobs in order and publishes its position; stops at the first
/// failure.
fn write_jobs(
    store: Store,
    queue: std::sync::mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    writes: Histogram,
) {
    let mut position = 0u64;
    while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next.take() {
            let started = Instant::now();
            let written = match job {
                Job::Write(write) => store.write(&write),
                Job::LastBlock(number) => store.set_last_block(number),
                Job::Fail(error) => Err(error),
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
    }
}

/// The flusher: on each wake-up, flushes once everything marked is written, covering every
/// write up to the position it then read.
async fn flush_marks(
    store: Store,
    mut woken: mpsc::Receiver<()>,
    shared: Arc<Shared>,
    flushes: Histogram,
) {
    let mut progress = shared.progress.subscribe();
    while woken.recv().await.is_some() {
        loop {
            let marked = shared.marked.load(Ordering::Acquire);
            let Ok(now) = progress
                .wait_for(|p| p.failed || p.flushed >= marked || p.applied >= marked)
                .await
                .map(|p| *p)
            else {
                return;
            };
            if now.failed {
                return;
            }
            if now.flushed >= marked {
                break;
            }
            // Everything up to `now.applied` was written before this flush starts.
            let store = store.clone();
            let started = Instant::now();
            match tokio::task::spawn_blocking(move || store.flush()).await {
                Ok(Ok(())) => {
                    flushes.observe(started.elapsed().as_secs_f64());
                    shared
                        .progress
                        .send_modify(|p| p.flushed = p.flushed.max(now.applied));
                }
                other => {
                    warn!(?other, "store flush failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
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
