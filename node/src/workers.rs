//! A fixed pool of threads for CPU-bound work (opening envelopes: hash and signature checks),
//! fed by a bounded queue, so nothing per event runs on the node's loop and a flood of work
//! waits (or is shed) instead of piling up. The pool keeps the node's [`SignerCache`], so an
//! event that arrives twice (gossip, and a proposal's missing events) is recovered once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use alloy_primitives::B256;
use rill_protocol::{
    Limits, MiniblockError, OpenError, ParsedEvent, ParsedMiniblock, SignerCache, pb,
};
use tokio::sync::{mpsc, oneshot};

/// Signers remembered: a few seconds of events at the rates one node admits.
const SIGNERS_CACHED: usize = 32 * 1024;

type Job = Box<dyn FnOnce() + Send>;

/// The queue is full: the caller sheds the work.
#[derive(Debug)]
pub(crate) struct Busy;

/// Handle to the pool. Cheap to clone; the threads end when every handle is gone.
#[derive(Clone, Debug)]
pub(crate) struct Workers {
    jobs: mpsc::Sender<Job>,
    signers: Arc<SignerCache>,
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
}

impl Workers {
    /// `threads` threads behind a queue of `capacity` jobs.
    pub(crate) fn spawn(threads: usize, capacity: usize) -> Self {
        let (jobs, receiver) = mpsc::channel::<Job>(capacity.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads.max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("rill-worker-{index}"))
                .spawn(move || {
                    loop {
                        let job = receiver.lock().expect("worker queue").blocking_recv();
                        match job {
                            Some(job) => job(),
                            None => return,
                        }
                    }
                })
                .expect("spawning a worker thread");
        }
        Self {
            jobs,
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

    /// Runs `work` on the pool and waits for its result (waiting for room in the queue).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(work());
        });
        self.jobs.send(job).await.ok()?;
        result.await.ok()
    }

    /// Queues `work` if there is room; its result goes to `done`.
    pub(crate) fn try_spawn(&self, work: impl FnOnce() + Send + 'static) -> Result<(), Busy> {
        self.jobs.try_send(Box::new(work)).map_err(|_| Busy)
    }
}
