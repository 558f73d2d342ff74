//! Effects that others observe, carried out only once the store writes the engine decided
//! before them are applied: a request to a peer (which may ask back for what this node
//! stored), a client's acknowledgement and a watcher's update (the client may read the stream
//! next). They keep their order: while any waits, the ones after it wait behind it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use alloy_primitives::{Address, B256};
use rill_engine::Request;
use rill_protocol::{ParsedMiniblock, StreamId, pb};
use tokio::sync::mpsc;

use crate::client::{Acks, Wait, Watch};
use crate::requests::Requests;
use crate::writer::Writer;

/// One effect to carry out after the writes before it.
pub(crate) enum After {
    Send {
        to: Address,
        stream: StreamId,
        request: Request,
    },
    Quorum(B256),
    Replicated(B256),
    Promoted {
        stream: StreamId,
        miniblock: ParsedMiniblock,
    },
    Update {
        stream: StreamId,
        update: pb::stream_update::Kind,
    },
}

/// Where the effects go.
#[derive(Clone)]
struct Targets {
    requests: Requests,
    acks: Acks,
    watch: Watch,
}

impl Targets {
    fn carry_out(&self, after: After) {
        match after {
            After::Send {
                to,
                stream,
                request,
            } => self.requests.send(to, stream, request),
            After::Quorum(hash) => self.acks.reached(&hash, Wait::Quorum),
            After::Replicated(hash) => self.acks.reached(&hash, Wait::Replicated),
            After::Promoted { stream, miniblock } => {
                self.acks.promoted(&miniblock);
                self.watch.promoted(stream, miniblock);
            }
            After::Update { stream, update } => self.watch.push(stream, update),
        }
    }
}

/// Carries out effects at once when nothing they follow is still being written, else hands
/// them, in order, to a task that waits for the writer.
pub(crate) struct AfterWrites {
    writer: Writer,
    targets: Targets,
    waiting: Arc<AtomicUsize>,
    queue: mpsc::UnboundedSender<(u64, After)>,
}

impl AfterWrites {
    pub(crate) fn spawn(writer: Writer, requests: Requests, acks: Acks, watch: Watch) -> Self {
        let targets = Targets {
            requests,
            acks,
            watch,
        };
        let waiting = Arc::new(AtomicUsize::new(0));
        let (queue, mut queued) = mpsc::unbounded_channel::<(u64, After)>();
        let (task_writer, task_targets, task_waiting) =
            (writer.clone(), targets.clone(), waiting.clone());
        tokio::spawn(async move {
            while let Some((position, after)) = queued.recv().await {
                // A failed write: nothing after it leaves the node.
                if !task_writer.applied(position).await {
                    return;
                }
                task_targets.carry_out(after);
                task_waiting.fetch_sub(1, Ordering::AcqRel);
            }
        });
        Self {
            writer,
            targets,
            waiting,
            queue,
        }
    }

    /// Carries out `after` once every write submitted so far is applied.
    pub(crate) fn push(&self, after: After) {
        let position = self.writer.submitted();
        if self.waiting.load(Ordering::Acquire) == 0 && self.writer.applied_now() >= position {
            return self.targets.carry_out(after);
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _ = self.queue.send((position, after));
    }

    /// Whether `stream` has watchers (an update costs a copy of the event).
    pub(crate) fn watched(&self, stream: &StreamId) -> bool {
        self.targets.watch.watched(stream)
    }
}
