//! A fixed pool of threads for CPU-bound work (opening envelopes: hash and signature checks),
//! fed by bounded queues, so nothing per event runs on the node's loop and a flood of work
//! waits (or is shed) instead of piling up. The pool keeps the node's [`SignerCache`], so an
//! event that arrives twice (gossip, and a proposal's missing events) is recovered once.
//!
//! Work comes in two lanes, and a thread always takes [`Lane::Replication`] first: events other
//! nodes send, candidates, answers to this node's requests. [`Lane::Admission`] (clients' new
//! events) gets the threads only when nothing of the first waits. A node whose replicas keep
//! it busy thus takes clients' events more slowly instead of falling behind the stream's
//! other nodes (which would then cost it a catch-up, every event checked again).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use alloy_primitives::B256;
use rill_protocol::{
    Limits, MiniblockError, OpenError, ParsedEvent, ParsedMiniblock, SignerCache, pb,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Signers remembered: a few seconds of events at the rates one node admits, more while its
/// queues are long (a copy of an event that arrives then, pushed again or in a fetched
/// miniblock, is answered from here rather than recovered again).
const SIGNERS_CACHED: usize = 128 * 1024;

type Job = Box<dyn FnOnce() + Send>;

/// Which queue a job waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Keeping up with the stream's other nodes: served first.
    Replication,
    /// Clients' new events: served when no replication work waits.
    Admission,
}

/// The queue is full: the caller sheds the work.
#[derive(Debug)]
pub(crate) struct Busy;

/// The queued jobs, each holding its room in its lane until a thread takes it.
#[derive(Default)]
struct Lanes {
    replication: VecDeque<(Job, OwnedSemaphorePermit)>,
    admission: VecDeque<(Job, OwnedSemaphorePermit)>,
    closed: bool,
}

struct Queue {
    lanes: Mutex<Lanes>,
    ready: Condvar,
    /// Room in each lane.
    replication: Arc<Semaphore>,
    admission: Arc<Semaphore>,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn room(&self, lane: Lane) -> &Arc<Semaphore> {
        match lane {
            Lane::Replication => &self.replication,
            Lane::Admission => &self.admission,
        }
    }

    fn push(&self, lane: Lane, job: Job, room: OwnedSemaphorePermit) {
        let mut lanes = self.lock();
        match lane {
            Lane::Replication => lanes.replication.push_back((job, room)),
            Lane::Admission => lanes.admission.push_back((job, room)),
        }
        drop(lanes);
        self.ready.notify_one();
    }

    /// The next job, replication first; `None` once the pool is closed.
    fn take(&self) -> Option<Job> {
        let mut lanes = self.lock();
        loop {
            let next = match lanes.replication.pop_front() {
                Some(job) => Some(job),
                None => lanes.admission.pop_front(),
            };
            if let Some((job, room)) = next {
                drop(room);
                return Some(job);
            }
            if lanes.closed {
                return None;
            }
            lanes = self.ready.wait(lanes).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Closes the queue when the last handle is dropped, which ends the threads.
struct Closer(Arc<Queue>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_all();
    }
}

/// Handle to the pool. Cheap to clone; the threads end when every handle is gone.
#[derive(Clone)]
pub(crate) struct Workers {
    queue: Arc<Queue>,
    _closer: Arc<Closer>,
    signers: Arc<SignerCache>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers").finish_non_exhaustive()
    }
}

/// Opens envelopes with the node's signer cache; moved into the jobs that open them.
#[derive(Clone, Debug)]
pub(crate) struct Opener {
    signers: Arc<SignerCache>,
    limits: Limits,
}

impl Opener {
    /// Checks one envelope (see [`ParsedEvent::open`]).
    pub(crate) fn open(&self, envelope: pb::Envelope) -> Result<ParsedEvent, OpenError> {
        ParsedEvent::open_cached(envelope, &self.limits, &self.signers)
    }

    /// Checks a miniblock, reusing the events in `known` (see
    /// [`ParsedMiniblock::open_reusing`]).
    pub(crate) fn open_miniblock(
        &self,
        miniblock: pb::Miniblock,
        known: &HashMap<B256, ParsedEvent>,
    ) -> Result<ParsedMiniblock, MiniblockError> {
        ParsedMiniblock::open_reusing(miniblock, &self.limits, &self.signers, |hash| {
            known.get(hash).cloned()
        })
    }

    /// Checks a leader's candidate: [`Opener::open_miniblock`], or with `omitting` one whose
    /// events leave out some of `known` (see [`ParsedMiniblock::open_omitting`]).
    pub(crate) fn open_candidate(
        &self,
        candidate: pb::Miniblock,
        known: &HashMap<B256, ParsedEvent>,
        omitting: bool,
    ) -> Result<ParsedMiniblock, MiniblockError> {
        if !omitting {
            return self.open_miniblock(candidate, known);
        }
        ParsedMiniblock::open_omitting(candidate, &self.limits, &self.signers, |hash| {
            known.get(hash).cloned()
        })
    }
}

impl Workers {
    /// `threads` threads behind two queues of `capacity` jobs each.
    pub(crate) fn spawn(threads: usize, capacity: usize) -> Self {
        let queue = Arc::new(Queue {
            lanes: Mutex::default(),
            ready: Condvar::new(),
            replication: Arc::new(Semaphore::new(capacity.max(1))),
            admission: Arc::new(Semaphore::new(capacity.max(1))),
        });
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("rill-worker-{index}"))
                .spawn(move || {
                    while let Some(job) = queue.take() {
                        job();
                    }
                })
                .expect("spawning a worker thread");
        }
        Self {
            _closer: Arc::new(Closer(queue.clone())),
            queue,
            signers: Arc::new(SignerCache::new(SIGNERS_CACHED)),
        }
    }

    /// Signatures recovered so far (each event once per node, the cache answering repeats).
    pub(crate) fn recovered(&self) -> u64 {
        self.signers.recovered()
    }

    /// Something that opens envelopes under `limits`, to move into a job.
    pub(crate) fn opener(&self, limits: Limits) -> Opener {
        Opener {
            signers: self.signers.clone(),
            limits,
        }
    }

    /// Runs `work` in `lane` and waits for its result (waiting for room in the lane first).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let room = self.queue.room(lane).clone().acquire_owned().await.ok()?;
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A caller that stopped waiting (an add refused after its wait) costs no work.
            if !reply.is_closed() {
                let _ = reply.send(work());
            }
        });
        self.queue.push(lane, job, room);
        result.await.ok()
    }

    /// Queues `work` in the replication lane if there is room.
    pub(crate) fn try_spawn(&self, work: impl FnOnce() + Send + 'static) -> Result<(), Busy> {
        let lane = Lane::Replication;
        let room = self
            .queue
            .room(lane)
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        self.queue.push(lane, Box::new(work), room);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Occupies a worker thread until the returned sender sends (or is dropped).
    fn hold_the_thread(workers: &Workers) -> std::sync::mpsc::Sender<()> {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        workers
            .try_spawn(move || {
                let _ = gate.recv();
            })
            .unwrap();
        release
    }

    #[tokio::test]
    async fn replication_work_goes_before_waiting_client_work() {
        let workers = Workers::spawn(1, 16);
        // Hold the only thread so both lanes fill.
        let release = hold_the_thread(&workers);
        let order = Arc::new(Mutex::new(Vec::new()));
        let client = {
            let (workers, order) = (workers.clone(), order.clone());
            tokio::spawn(async move {
                workers
                    .run(Lane::Admission, move || {
                        order.lock().unwrap().push("client")
                    })
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        for _ in 0..3 {
            let order = order.clone();
            workers
                .try_spawn(move || order.lock().unwrap().push("replication"))
                .unwrap();
        }
        release.send(()).unwrap();
        client.await.unwrap().expect("ran");
        assert_eq!(
            *order.lock().unwrap(),
            ["replication", "replication", "replication", "client"]
        );
    }

    #[tokio::test]
    async fn work_whose_caller_stopped_waiting_is_skipped() {
        let workers = Workers::spawn(1, 16);
        let release = hold_the_thread(&workers);
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            workers.run(Lane::Admission, move || flag.store(true, Ordering::SeqCst)),
        )
        .await;
        assert!(gave_up.is_err(), "the thread is held: the wait runs out");
        release.send(()).unwrap();
        assert_eq!(workers.run(Lane::Admission, || 1).await, Some(1));
        assert!(!ran.load(Ordering::SeqCst), "its job did not run");
    }

    #[tokio::test]
    async fn a_full_lane_sheds_and_the_threads_end_with_the_last_handle() {
        let workers = Workers::spawn(1, 1);
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        workers
            .try_spawn(move || {
                let _ = gate.recv();
                flag.store(true, Ordering::SeqCst);
            })
            .unwrap();
        // The thread may not have taken the first job yet: fill the lane's one place.
        while workers.try_spawn(|| {}).is_ok() {}
        assert!(workers.try_spawn(|| {}).is_err(), "no room: shed");
        release.send(()).unwrap();
        assert_eq!(workers.run(Lane::Replication, || 7).await, Some(7));
        assert!(ended.load(Ordering::SeqCst));
        drop(workers);
    }
}
