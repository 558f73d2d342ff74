//! What goes into the engine and what comes out.

use alloy_primitives::{Address, B256};
use rill_protocol::{ParsedEvent, ParsedMiniblock, StreamId};

use crate::Reject;

/// The leader's request for a replica's proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalRequest {
    /// The miniblock number being built.
    pub num: u64,
    /// The head it builds on.
    pub prev_hash: B256,
    /// The leader's minipool hashes.
    pub hashes: Vec<B256>,
    /// The chain block that elected the leader.
    pub chain_block: u64,
}

/// A replica's proposal.
#[derive(Clone, Debug, PartialEq)]
pub struct ProposalReply {
    /// The number the replica would build next.
    pub num: u64,
    /// The replica's head.
    pub prev_hash: B256,
    /// The replica's minipool hashes.
    pub hashes: Vec<B256>,
    /// Whether the replica thinks a snapshot is due.
    pub snapshot_vote: bool,
    /// Events the replica holds and the leader lacks.
    pub missing: Vec<ParsedEvent>,
}

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
}

/// A gossip message on a stream's topic.
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
    /// A miniblock was promoted.
    MiniblockPromoted {
        /// The stream.
        stream: StreamId,
        /// The miniblock.
        miniblock: ParsedMiniblock,
    },
}

/// An input to the engine.
#[derive(Clone, Debug)]
pub enum Input {
    /// The registry allocated a stream; `genesis` is its miniblock 0.
    StreamAllocated {
        /// The stream.
        stream: StreamId,
        /// Its nodes, in registry order.
        nodes: Vec<Address>,
        /// Its genesis miniblock.
        genesis: ParsedMiniblock,
    },
    /// `NewEventReceived` from a peer.
    GossipEvent {
        /// The peer.
        from: Address,
        /// The stream.
        stream: StreamId,
        /// The event.
        event: ParsedEvent,
    },
    /// `NewEventInPool` from a peer.
    EventInPool {
        /// The peer.
        from: Address,
        /// The stream.
        stream: StreamId,
        /// The event hash.
        hash: B256,
    },
    /// Time passed (timers: fetch delays, proposal timeouts, catch-up retries).
    Tick,
    /// A new chain block.
    ChainBlock {
        /// Its number.
        number: u64,
        /// Its randomness.
        prevrandao: B256,
    },
    /// The registry logged a registered miniblock head (or reported the current head).
    MiniblockRegistered {
        /// The stream.
        stream: StreamId,
        /// Its number.
        num: u64,
        /// Its hash.
        hash: B256,
    },
    /// The registry refused this node's registration.
    RegistrationRejected {
        /// The stream.
        stream: StreamId,
        /// The number.
        num: u64,
        /// The hash.
        hash: B256,
        /// The contract's reason.
        reason: String,
    },
    /// A leader asks for this node's proposal.
    ProposalRequest {
        /// The leader.
        from: Address,
        /// The stream.
        stream: StreamId,
        /// The request.
        request: ProposalRequest,
    },
    /// A replica answered this node's proposal request.
    ProposalReply {
        /// The replica.
        from: Address,
        /// The stream.
        stream: StreamId,
        /// The reply.
        reply: ProposalReply,
    },
    /// A leader sent its candidate.
    Candidate {
        /// The sender.
        from: Address,
        /// The stream.
        stream: StreamId,
        /// The candidate.
        miniblock: ParsedMiniblock,
    },
    /// Events fetched from a peer.
    FetchedEvents {
        /// The peer.
        from: Address,
        /// The stream.
        stream: StreamId,
        /// The events.
        events: Vec<ParsedEvent>,
    },
    /// Miniblocks fetched from a peer (catch-up).
    FetchedMiniblocks {
        /// The peer.
        from: Address,
        /// The stream.
        stream: StreamId,
        /// The miniblocks, in any order.
        miniblocks: Vec<ParsedMiniblock>,
    },
}

/// An effect for the node to carry out, in order.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Store the event in the stream's minipool (durably, before gossiping it).
    StoreEvent {
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
    /// Store a candidate (one atomic write), beside any other candidates of the same number.
    StoreCandidate {
        /// The stream.
        stream: StreamId,
        /// The candidate.
        miniblock: ParsedMiniblock,
    },
    /// Promote the miniblock: one atomic write that stores it, removes its events from the
    /// minipool and every candidate up to its number, and moves the head.
    Promote {
        /// The stream.
        stream: StreamId,
        /// The miniblock.
        miniblock: ParsedMiniblock,
    },
    /// Publish on the stream's topic (to its other nodes).
    Gossip {
        /// The stream.
        stream: StreamId,
        /// What.
        message: Gossip,
    },
    /// Ask a replica for its proposal.
    RequestProposal {
        /// The replica.
        to: Address,
        /// The stream.
        stream: StreamId,
        /// The request.
        request: ProposalRequest,
    },
    /// Answer a leader's proposal request.
    ReplyProposal {
        /// The leader.
        to: Address,
        /// The stream.
        stream: StreamId,
        /// The reply.
        reply: ProposalReply,
    },
    /// Send a candidate to a replica.
    SendCandidate {
        /// The replica.
        to: Address,
        /// The stream.
        stream: StreamId,
        /// The candidate.
        miniblock: ParsedMiniblock,
    },
    /// Queue a registration with the batched registrar.
    Register(Registration),
    /// Fetch events from a peer.
    FetchEvents {
        /// The peer.
        from: Address,
        /// The stream.
        stream: StreamId,
        /// The hashes.
        hashes: Vec<B256>,
    },
    /// Fetch miniblocks `from_num ..= to_num` (and the candidate after them) from a peer.
    FetchMiniblocks {
        /// The peer.
        from: Address,
        /// The stream.
        stream: StreamId,
        /// First number.
        from_num: u64,
        /// Last number.
        to_num: u64,
    },
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
