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
//! A promotion of a candidate this node stored ([`Write::PromoteCandidate`]) moves the head
//! with a small write and leaves its events where the candidate keeps them; the writer
//! settles it once `settle_after` has passed, in small steps ([`Store::settle_step`]) taken
//! only while no job waits (or, if jobs never stop coming, one after each batch once it is
//! overdue by another `settle_after`). Every replica promotes at the same moment, in the
//! burst of work each chain block brings, and the whole write was the longest of the block,
//! ahead of the client adds queued behind it; in one piece later it held them up as much
//! (BENCHMARKS.md, "Settling promotions after the block"). A settlement has no position:
//! nothing waits for it, reads find the events either way, and a node stopped first settles
//! when it opens the store again.
//!
//! A failed write stops the writer: neither position passes it, so nothing that followed it
//! leaves the node, and the loop stops the node (fail-stop; a restart reloads what the store
//! holds).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use rill_protocol::{ParsedMiniblock, StreamId};
use rill_store::{Settling, Store, StoreError, Write};
use tokio::sync::watch;
use tracing::{error, warn};

/// Jobs the writer takes before it publishes its position (a backlog is published in steps).
const PUBLISH_EVERY: usize = 64;
/// Jobs submitted and not yet written, at most: a loop this far ahead waits for the writer
/// (backpressure, as when it wrote itself).
const WRITE_QUEUE: usize = 1024;
/// How long after its promotion a miniblock is settled by default: past the burst of work
/// that the chain block brings to every replica (BENCHMARKS.md, "Settling promotions after
/// the block").
pub const DEFAULT_SETTLE_AFTER: Duration = Duration::from_millis(300);

/// What the writer observes.
#[derive(Clone)]
pub(crate) struct WriterMetrics {
    /// Each write.
    pub(crate) writes: Histogram,
    /// Each flush.
    pub(crate) flushes: Histogram,
    /// Each step of a promotion's settlement.
    pub(crate) settle_steps: Histogram,
    /// Promotions not settled yet.
    pub(crate) pending: Gauge,
}

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

impl Shared {
    /// Nothing submitted, written or failed yet.
    fn new() -> Arc<Self> {
        let (progress, _) = watch::channel(Progress::default());
        Arc::new(Self {
            submitted: AtomicU64::new(0),
            marked: AtomicU64::new(0),
            progress,
            failure: Mutex::new(None),
        })
    }
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
    /// Starts the writer thread; it settles promotions `settle_after` they were written.
    pub(crate) fn spawn(store: Store, settle_after: Duration, metrics: WriterMetrics) -> Self {
        let shared = Shared::new();
        let (jobs, queue) = std::sync::mpsc::sync_channel(WRITE_QUEUE);
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("rill-store-writer".into())
            .spawn(move || {
                let writer = WriterThread {
                    store,
                    shared: thread_shared,
                    settle_after,
                    settling: VecDeque::new(),
                    current: None,
                    metrics,
                };
                writer.run(queue);
            })
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
    pub(crate) fn block_until_applied(&self, target: u64) {
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

/// The writer thread's state.
struct WriterThread {
    store: Store,
    shared: Arc<Shared>,
    settle_after: Duration,
    /// Promotions to settle, each with when: in the order they were promoted.
    settling: VecDeque<(Instant, StreamId, ParsedMiniblock)>,
    /// The settlement under way, and when it was due.
    current: Option<(Settling, Instant)>,
    metrics: WriterMetrics,
}

impl WriterThread {
    /// Applies jobs in order and publishes its position, and after each batch of jobs
    /// flushes if a [`Writer::durable`] asked for it; takes a settlement's step whenever no
    /// job waits and one is due; stops at the first failed write. Once the queue closes (the
    /// node stops), settles the rest.
    fn run(mut self, queue: Receiver<Job>) {
        let (mut position, mut flushed, mut target) = (0u64, 0u64, 0u64);
        loop {
            let first = match self.next_due() {
                None => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(due) => queue.recv_timeout(due.saturating_duration_since(Instant::now())),
            };
            let first = match first {
                Ok(job) => job,
                // Nothing waits: a step.
                Err(RecvTimeoutError::Timeout) => {
                    if !self.settle_step(Instant::now()) {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(job) = next.take() {
                let started = Instant::now();
                let written = match job {
                    Job::Write(write) => self.write(write),
                    Job::LastBlock(number) => self.store.set_last_block(number),
                    Job::Fail(error) => Err(error),
                    Job::Flush => {
                        next = queue.try_recv().ok();
                        continue;
                    }
                };
                self.metrics.writes.observe(started.elapsed().as_secs_f64());
                if let Err(e) = written {
                    self.fail(e, position + 1);
                    return;
                }
                position += 1;
                taken += 1;
                if taken < PUBLISH_EVERY {
                    next = queue.try_recv().ok();
                }
            }
            self.shared.progress.send_modify(|p| p.applied = position);
            // A flush waits until the writes marked when it was asked for are all written, and
            // covers every write by then: one flush for many marks (group commit). The target
            // stays put until it is reached, so marks that keep coming do not put it off.
            if target <= flushed {
                target = self.shared.marked.load(Ordering::Acquire);
            }
            if target > flushed && position >= target {
                flush(&self.store, &self.metrics.flushes);
                flushed = position;
                self.shared.progress.send_modify(|p| p.flushed = position);
            }
            // Jobs that never stop coming do not put a settlement off for ever.
            let now = Instant::now();
            if self
                .next_due()
                .is_some_and(|due| due + self.settle_after <= now)
                && !self.settle_step(now)
            {
                return;
            }
        }
        // The node is stopping: settle what is left, so that a clean stop leaves nothing
        // pending (a kill leaves it to the next open).
        let end = Instant::now() + self.settle_after;
        while self.next_due().is_some() {
            if !self.settle_step(end) {
                return;
            }
        }
        flush(&self.store, &self.metrics.flushes);
    }

    /// When the next settlement step is due, if one is waiting.
    fn next_due(&self) -> Option<Instant> {
        match &self.current {
            Some((_, due)) => Some(*due),
            None => self.settling.front().map(|(due, ..)| *due),
        }
    }

    /// Carries out one write; a promotion of a stored candidate is settled later.
    fn write(&mut self, write: Write) -> Result<(), StoreError> {
        self.store.write(&write)?;
        if let Write::PromoteCandidate { stream, miniblock } = write {
            let due = Instant::now() + self.settle_after;
            self.settling.push_back((due, stream, miniblock));
            self.show_pending();
        }
        Ok(())
    }

    /// Takes the next step of the settlement under way, or starts the next one due by
    /// `now`; false if a step failed (the writer stops).
    fn settle_step(&mut self, now: Instant) -> bool {
        let (mut settling, due) = match self.current.take() {
            Some(current) => current,
            None => {
                if self.next_due().is_none_or(|due| due > now) {
                    return true;
                }
                let (due, stream, miniblock) = self.settling.pop_front().expect("one is due");
                match self.store.start_settling(&stream, &miniblock) {
                    Ok(Some(settling)) => (settling, due),
                    Ok(None) => {
                        self.show_pending();
                        return true;
                    }
                    Err(e) => return self.fail_settling(e),
                }
            }
        };
        let started = Instant::now();
        let step = self.store.settle_step(&mut settling);
        self.metrics
            .settle_steps
            .observe(started.elapsed().as_secs_f64());
        match step {
            Ok(true) => {
                self.show_pending();
                true
            }
            Ok(false) => {
                self.current = Some((settling, due));
                true
            }
            Err(e) => self.fail_settling(e),
        }
    }

    /// Publishes how many promotions wait to be settled.
    fn show_pending(&self) {
        let pending = self.settling.len() + usize::from(self.current.is_some());
        self.metrics.pending.set(pending as i64);
    }

    fn fail_settling(&self, e: StoreError) -> bool {
        // Read first: a `borrow()` held through `fail` would deadlock its `send_modify`.
        let applied = self.shared.progress.borrow().applied;
        self.fail(e, applied);
        false
    }

    /// Stops every position at a failed write (or settlement).
    fn fail(&self, e: StoreError, position: u64) {
        error!(%e, position, "store write failed; stopping");
        *self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(e);
        self.shared.progress.send_modify(|p| p.failed = true);
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
mod tests;
