//! What goes into the engine: inputs that only cause effects, and the requests and responses of
//! the node-to-node protocols.

use alloy_primitives::{Address, B256};
use rill_protocol::{ParsedEvent, ParsedMiniblock, StreamId};

use crate::{NetworkParams, NodeStatus};

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
    /// Whether the leader takes the replica's minipool as a [`Holdings::Difference`] from
    /// `hashes`. A leader of an older version does not ask for one, and gets the whole list.
    pub difference: bool,
}

/// Which minipool events a replica's proposal says it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holdings {
    /// Every one, listed.
    Listed(Vec<B256>),
    /// Relative to the request's hashes, which the replica and the leader mostly share: the
    /// positions of those it lacks, and the hashes it holds beyond them.
    Difference {
        /// Positions in the request's `hashes`.
        lacking: Vec<u32>,
        /// Held, and not among the request's `hashes`.
        extra: Vec<B256>,
    },
}

/// A replica's proposal.
#[derive(Clone, Debug, PartialEq)]
pub struct ProposalReply {
    /// The number the replica would build next.
    pub num: u64,
    /// The replica's head.
    pub prev_hash: B256,
    /// The replica's minipool events, those its base has not included.
    pub holds: Holdings,
    /// Whether the replica thinks a snapshot is due.
    pub snapshot_vote: bool,
    /// Events the replica holds and the leader lacks.
    pub missing: Vec<ParsedEvent>,
}

/// A request this node sends to another node of a stream. The node turns it into its wire
/// form, sends it, and hands the answer back as [`Input::Response`].
#[derive(Clone, Debug)]
pub enum Request {
    /// `ProposeMiniblock`: the leader asks a replica for its proposal.
    Proposal(ProposalRequest),
    /// `SaveMiniblockCandidate`: the leader hands its candidate to a replica.
    SaveCandidate {
        /// The candidate.
        miniblock: ParsedMiniblock,
        /// `held[i]`: the replica held the `i`-th event, by its proposal for this round, so
        /// the wire form may leave its envelope out (the replica takes it from its minipool,
        /// or answers that it lacks it). Empty: every envelope is sent.
        held: Vec<bool>,
    },
    /// `GetEvents`: events this node lacks.
    GetEvents(Vec<B256>),
    /// `GetMiniblocks`: promoted miniblocks `from ..= to` and the candidates after them.
    GetMiniblocks {
        /// First number.
        from: u64,
        /// Last number.
        to: u64,
    },
}

impl Request {
    /// What kind of request this is (how a failure is reported back).
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Proposal(_) => RequestKind::Proposal,
            Request::SaveCandidate { miniblock, .. } => {
                RequestKind::SaveCandidate(miniblock.hash())
            }
            Request::GetEvents(_) => RequestKind::GetEvents,
            Request::GetMiniblocks { .. } => RequestKind::GetMiniblocks,
        }
    }
}

/// A request's kind, without its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// `ProposeMiniblock`.
    Proposal,
    /// `SaveMiniblockCandidate` of the candidate with this hash.
    SaveCandidate(B256),
    /// `GetEvents`.
    GetEvents,
    /// `GetMiniblocks`.
    GetMiniblocks,
}

/// The answer to one of this node's [`Request`]s.
#[derive(Clone, Debug)]
pub enum Response {
    /// A replica's proposal.
    Proposal(ProposalReply),
    /// The replica stored the candidate with this hash durably.
    CandidateSaved(B256),
    /// The replica cannot judge the candidate yet (it has not seen its chain block): ask again
    /// shortly.
    CandidateDeferred(B256),
    /// The replica refused the candidate with this hash.
    CandidateRefused(B256),
    /// Events, opened (some of the asked ones may be missing: answers are bounded in bytes).
    Events(Vec<ParsedEvent>),
    /// A page of the peer's promoted miniblocks (answers are bounded in bytes), the candidates
    /// it holds after them, and the randomness of the chain blocks they name, to check who
    /// produced them.
    Miniblocks {
        /// Promoted miniblocks, in order.
        miniblocks: Vec<ParsedMiniblock>,
        /// Candidates the peer holds (only with the last page).
        candidates: Vec<ParsedMiniblock>,
        /// `(number, prevrandao)` of chain blocks the miniblocks name.
        randomness: Vec<(u64, B256)>,
    },
    /// The peer did not answer (unreachable, timeout, refusal, or an answer that did not open).
    Failed(RequestKind),
}

/// Gossip from another node of a stream, opened.
#[derive(Clone, Debug)]
pub enum PeerGossip {
    /// `NewEventReceived`: full events.
    Events(Vec<ParsedEvent>),
    /// `NewEventInPool`: the sender holds these events.
    InPool(Vec<B256>),
    /// `NewEventInPool` for events whose copy this node is checking already (it arrived and
    /// waits for its signature check): the sender holds them, and they are fetched only if
    /// the copy does not get in for a while (a node whose checks lag behind would otherwise
    /// fetch, and check again, what is already on its way).
    InPoolArriving(Vec<B256>),
    /// `NewEventReceived` for events this node already holds ([`StreamView::holds_event`]),
    /// which the node therefore did not open again: answered as the events themselves would
    /// be (the sender holds them, and hears that this node does).
    ///
    /// [`StreamView::holds_event`]: crate::StreamView::holds_event
    HeldAlready(Vec<B256>),
}

/// An input to the engine that only causes effects.
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
    /// Time passed (timers: fetch delays, proposal timeouts, catch-up retries).
    Tick,
    /// A new chain block.
    ChainBlock {
        /// Its number.
        number: u64,
        /// Its randomness.
        prevrandao: B256,
    },
    /// The chain's head is at least this block (blocks far behind it are not led).
    ChainHead(u64),
    /// The registry's network rules changed: in force for miniblocks elected from
    /// `from_block` on.
    Params {
        /// The first chain block they apply to.
        from_block: u64,
        /// The rules.
        params: NetworkParams,
    },
    /// A node's status changed in the registry, from `from_block` on.
    NodeStatus {
        /// The node.
        node: Address,
        /// The first chain block it applies to.
        from_block: u64,
        /// Its status.
        status: NodeStatus,
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
    /// The registry refused this node's registration of a candidate.
    RegistrationRejected {
        /// The stream.
        stream: StreamId,
        /// The number.
        num: u64,
        /// The hash.
        hash: B256,
    },
    /// The answer to one of this node's requests.
    Response {
        /// The peer that was asked.
        from: Address,
        /// The stream.
        stream: StreamId,
        /// What it said.
        response: Response,
    },
}

impl Input {
    /// The stream the input concerns; `None` for node-wide inputs (time, chain blocks, rules,
    /// node statuses), which only loaded streams see.
    pub fn stream(&self) -> Option<StreamId> {
        match self {
            Input::StreamAllocated { stream, .. }
            | Input::MiniblockRegistered { stream, .. }
            | Input::RegistrationRejected { stream, .. }
            | Input::Response { stream, .. } => Some(*stream),
            Input::Tick
            | Input::ChainBlock { .. }
            | Input::ChainHead(_)
            | Input::Params { .. }
            | Input::NodeStatus { .. } => None,
        }
    }
}
