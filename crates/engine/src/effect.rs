//! What comes out of the engine: effects for the node to carry out, in order, and the answers to
//! inputs that ask a question.

use alloy_primitives::{Address, B256};
use rill_protocol::{ParsedEvent, ParsedMiniblock, StreamId};

use crate::{Reject, Request};

/// A miniblock head to register in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Registration {
    /// The stream.
    pub stream: StreamId,
    /// The head it builds on.
    pub prev_hash: B256,
    /// The new miniblock's hash.
    pub hash: B256,
    /// Its number.
    pub num: u64,
    /// What it builds on.
    pub kind: RegistrationKind,
}

/// What a registered candidate builds on, and whose it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegistrationKind {
    /// This node's candidate on the registered head.
    Next,
    /// This node's candidate chained on a candidate the registry had not taken yet (which is
    /// registered before it).
    Chained,
    /// Another leader's candidate, registered before this node's chained one.
    Base,
}

/// A write to the node's store. Each one is atomic on its own.
#[derive(Clone, Debug)]
pub enum StoreOp {
    /// Record a new stream with its nodes and promote its genesis, in one write.
    CreateStream {
        /// The stream.
        stream: StreamId,
        /// Its nodes, in registry order.
        nodes: Vec<Address>,
        /// Its genesis miniblock.
        genesis: ParsedMiniblock,
    },
    /// Add the event to the stream's minipool.
    AddToMinipool {
        /// The stream.
        stream: StreamId,
        /// The event.
        event: ParsedEvent,
    },
    /// Remove events that are no longer admissible from the minipool.
    DropFromMinipool {
        /// The stream.
        stream: StreamId,
        /// The events.
        hashes: Vec<B256>,
    },
    /// Store a candidate beside any other candidates of the same number.
    StoreCandidate {
        /// The stream.
        stream: StreamId,
        /// The candidate.
        miniblock: ParsedMiniblock,
        /// Per event of the candidate, whether it is in this node's minipool, whose
        /// envelopes the store holds already: only the others need looking up.
        pooled: Vec<bool>,
    },
    /// Promote the miniblock: store it, remove its events from the minipool and every
    /// candidate up to its number, and move the head.
    Promote {
        /// The stream.
        stream: StreamId,
        /// The miniblock.
        miniblock: ParsedMiniblock,
    },
    /// A replica far behind took a peer's snapshot: store the run (oldest first, ending in
    /// the snapshot miniblock) as the new head; what lies between is not stored.
    Rebase {
        /// The stream.
        stream: StreamId,
        /// The run.
        miniblocks: Vec<ParsedMiniblock>,
        /// What it skipped, to backfill.
        gap: crate::Gap,
    },
    /// Fill the top of the gap a rebase left with checked miniblocks (oldest first); the head
    /// does not move. `gap` is what remains missing, if anything.
    Backfill {
        /// The stream.
        stream: StreamId,
        /// The miniblocks, each the parent of the next, the last the parent of the gap's top.
        miniblocks: Vec<ParsedMiniblock>,
        /// The rest of the gap.
        gap: Option<crate::Gap>,
    },
}

/// A gossip message to the stream's other nodes.
#[derive(Clone, Debug, PartialEq)]
pub enum Gossip {
    /// `NewEventReceived`: the full event, from the node a client gave it to.
    EventReceived(ParsedEvent),
    /// `NewEventInPool`: this node now holds the event.
    EventInPool(B256),
}

/// Something subscribers or waiting clients care about.
#[derive(Clone, Debug, PartialEq)]
pub enum Notification {
    /// An event entered this node's minipool.
    EventAdmitted {
        /// The stream.
        stream: StreamId,
        /// The event.
        event: ParsedEvent,
    },
    /// More than half of the stream's nodes hold the event.
    EventQuorum {
        /// The stream.
        stream: StreamId,
        /// The event hash.
        hash: B256,
    },
    /// More than half of the stream's nodes hold the event, and so does every node heard
    /// from lately: the node's writers may go on (a node silent for longer does not hold them
    /// back).
    EventReplicated {
        /// The stream.
        stream: StreamId,
        /// The event hash.
        hash: B256,
    },
    /// A miniblock was promoted.
    MiniblockPromoted {
        /// The stream.
        stream: StreamId,
        /// The miniblock.
        miniblock: ParsedMiniblock,
    },
}

/// An effect for the node to carry out, in order.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Write to the store.
    Store(StoreOp),
    /// Publish to the stream's other nodes.
    Gossip {
        /// The stream.
        stream: StreamId,
        /// What.
        message: Gossip,
    },
    /// Gossip to one node of the stream (a push of what it has not confirmed holding, or a
    /// confirmation to the node that pushed).
    GossipTo {
        /// The node.
        to: Address,
        /// The stream.
        stream: StreamId,
        /// What.
        message: Gossip,
    },
    /// Send a request to a node of the stream; its answer comes back as
    /// [`crate::Input::Response`].
    Send {
        /// The node.
        to: Address,
        /// The stream.
        stream: StreamId,
        /// The request.
        request: Request,
    },
    /// Queue a registration with the batched registrar. The registrations of one call's
    /// effects reach the registry in their order (a chained candidate after its base).
    Register(Registration),
    /// Tell subscribers and waiting clients.
    Notify(Notification),
    /// An input was refused (for metrics and logs; nothing was stored).
    Rejected {
        /// The stream.
        stream: StreamId,
        /// The peer it came from, if any.
        from: Option<Address>,
        /// Why.
        reason: Reject,
    },
}

/// The answer to an input that asks a question, and the effects it caused. The node carries
/// out the effects before it answers.
#[must_use = "the answer goes back to the peer that asked"]
#[derive(Debug)]
pub struct Answer<T> {
    /// The answer.
    pub answer: T,
    /// Effects to carry out first.
    pub effects: Vec<Effect>,
}

/// A node's verdict on a gossip message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and useful.
    Accept,
    /// Not useful (a duplicate, an event this node cannot judge yet, a stream it does not
    /// hold) but something an honest node may send.
    Ignore,
    /// Something no honest node sends: penalise the sender.
    Reject,
}

/// A replica's verdict on a leader's candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CandidateVerdict {
    /// Checked and stored (or already stored): the replica confirms once its copy is durable.
    Stored,
    /// It names a chain block this node has not seen yet; it is kept and checked when the
    /// block arrives.
    Deferred,
    /// This node already promoted a miniblock of that number.
    Stale,
    /// Refused.
    Refused(Reject),
}
