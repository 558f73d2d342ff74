//! Why the engine refused an input. Every reason has its own variant so it can be counted and
//! reported; the node maps them to wire error codes.

use alloy_primitives::{Address, B256};
use rill_protocol::{MiniblockError, StreamId};

/// A refused event, candidate, proposal or miniblock.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// This node holds no such stream.
    #[error("unknown stream {0}")]
    UnknownStream(StreamId),
    /// The sender is not one of the stream's nodes.
    #[error("{0} is not a node of this stream")]
    NotAStreamNode(Address),
    /// The event is larger than the stream allows.
    #[error("event is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The event builds on a miniblock too old to accept events for.
    #[error("event refers to miniblock {num}, older than the last {window}; refresh and resend")]
    StaleMiniblock {
        /// The miniblock it names.
        num: u64,
        /// The recency window.
        window: u64,
    },
    /// The event names a miniblock this stream does not have (a future number or wrong hash).
    #[error("event refers to miniblock {num} {hash} which this stream does not have")]
    UnknownMiniblock {
        /// The number it names.
        num: u64,
        /// The hash it names.
        hash: B256,
    },
    /// The event is already in the minipool or a recent miniblock.
    #[error("duplicate event {0}")]
    Duplicate(B256),
    /// The creator (or the address a leave names) is not a member as of the last miniblock.
    #[error("{0} is not a member of the stream (as of its last miniblock); join first")]
    NotAMember(Address),
    /// The address is already a member.
    #[error("{0} is already a member")]
    AlreadyMember(Address),
    /// A join by oneself on an invite-only stream.
    #[error("the stream is invite-only: {0} cannot join by itself; a member must add it")]
    InviteOnly(Address),
    /// A member that is not an admin tried to remove another member.
    #[error(
        "{0} is not an admin of the stream: only its admins remove other members (anyone may leave)"
    )]
    NotAnAdmin(Address),
    /// This payload may not be added as an event (inceptions and headers).
    #[error("{0} cannot be added to a stream as an event")]
    BadPayload(&'static str),
    /// The candidate's header or events do not open.
    #[error("malformed miniblock: {0}")]
    Malformed(MiniblockError),
    /// The candidate is not the next miniblock.
    #[error("expected miniblock {expected}, got {got}")]
    WrongNum {
        /// The next number.
        expected: u64,
        /// The candidate's number.
        got: u64,
    },
    /// The candidate does not build on this node's head.
    #[error("candidate builds on {got}, not on the head {expected}")]
    BadPrevHash {
        /// The head.
        expected: B256,
        /// What it names.
        got: B256,
    },
    /// The candidate was signed by someone other than the elected leader.
    #[error("candidate signed by {got}, but {expected} leads at block {block}")]
    WrongLeader {
        /// The elected leader.
        expected: Address,
        /// The signer.
        got: Address,
        /// The electing block.
        block: u64,
    },
    /// The candidate names a chain block this node has not seen or no longer remembers.
    #[error("candidate names chain block {0}, which this node does not know")]
    UnknownChainBlock(u64),
    /// The timestamp does not increase.
    #[error("candidate timestamp {got} is not after the head's {head}")]
    BadTimestamp {
        /// The head's.
        head: u64,
        /// The candidate's.
        got: u64,
    },
    /// The timestamp is ahead of this node's clock by more than the allowed skew.
    #[error("header timestamp {got} is more than {skew_ms} ms ahead of this node's clock ({now})")]
    FutureTimestamp {
        /// The header's.
        got: u64,
        /// This node's clock.
        now: u64,
        /// The allowed skew.
        skew_ms: u64,
    },
    /// The candidate names a chain block too far behind the chain's head to lead.
    #[error("candidate names chain block {block}, too old to lead at head {head}")]
    StaleTurn {
        /// The electing block.
        block: u64,
        /// The chain head.
        head: u64,
    },
    /// Event offset, snapshot or size fields are wrong.
    #[error("candidate header is inconsistent: {0}")]
    BadHeader(&'static str),
    /// An event of the candidate is not admissible.
    #[error("candidate event {index} is not admissible: {reason}")]
    InadmissibleEvent {
        /// Its position.
        index: usize,
        /// Why.
        reason: Box<Reject>,
    },
    /// The genesis miniblock is not a valid start of this stream.
    #[error("bad genesis: {0}")]
    BadGenesis(&'static str),
    /// A miniblock's snapshot is not a valid state of this stream.
    #[error("bad snapshot: {0}")]
    BadSnapshot(&'static str),
    /// The event refers to a recent miniblock this node does not have: it took the stream
    /// from a later snapshot and cannot judge the event (another node can).
    #[error("event refers to miniblock {num}, before the snapshot this node started from")]
    BeforeSnapshot {
        /// The number it names.
        num: u64,
    },
    /// Stored miniblocks do not form a chain.
    #[error("stored miniblock {num} does not follow the one before it")]
    BrokenChain {
        /// The first one that does not link.
        num: u64,
    },
}

impl Reject {
    /// Whether the input may pass once this node (at head `head`) promotes more miniblocks:
    /// membership is judged as of the last promoted miniblock, and the sender may be ahead.
    pub fn may_pass_later(&self, head: u64) -> bool {
        match self {
            Reject::NotAMember(_) | Reject::AlreadyMember(_) => true,
            Reject::UnknownMiniblock { num, .. } => *num > head,
            _ => false,
        }
    }

    /// Whether an honest node may send what was refused: a duplicate, an event this node
    /// judges against a slightly different state (a miniblock ahead or behind, membership
    /// changed, the rules just changed), a stream this node does not hold. Gossip refused for
    /// such a reason is ignored; anything else is the sender's fault and penalised.
    pub fn is_honest_race(&self) -> bool {
        match self {
            Reject::Duplicate(_)
            | Reject::UnknownStream(_)
            | Reject::NotAMember(_)
            | Reject::AlreadyMember(_)
            | Reject::StaleMiniblock { .. }
            | Reject::BeforeSnapshot { .. }
            | Reject::TooLarge { .. } => true,
            // One ahead of this node is parked, not refused: what is refused names a
            // miniblock the registered chain does not have.
            Reject::UnknownMiniblock { .. }
            | Reject::NotAStreamNode(_)
            | Reject::BadPayload(_)
            | Reject::InviteOnly(_)
            | Reject::NotAnAdmin(_)
            | Reject::Malformed(_)
            | Reject::WrongNum { .. }
            | Reject::BadPrevHash { .. }
            | Reject::WrongLeader { .. }
            | Reject::UnknownChainBlock(_)
            | Reject::BadTimestamp { .. }
            | Reject::FutureTimestamp { .. }
            | Reject::StaleTurn { .. }
            | Reject::BadHeader(_)
            | Reject::InadmissibleEvent { .. }
            | Reject::BadGenesis(_)
            | Reject::BadSnapshot(_)
            | Reject::BrokenChain { .. } => false,
        }
    }

    /// A short stable name for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Reject::UnknownStream(_) => "unknown_stream",
            Reject::NotAStreamNode(_) => "not_a_stream_node",
            Reject::TooLarge { .. } => "too_large",
            Reject::StaleMiniblock { .. } => "stale_miniblock",
            Reject::UnknownMiniblock { .. } => "unknown_miniblock",
            Reject::Duplicate(_) => "duplicate",
            Reject::NotAMember(_) => "not_a_member",
            Reject::AlreadyMember(_) => "already_member",
            Reject::InviteOnly(_) => "invite_only",
            Reject::NotAnAdmin(_) => "not_an_admin",
            Reject::BadPayload(_) => "bad_payload",
            Reject::Malformed(_) => "malformed",
            Reject::WrongNum { .. } => "wrong_num",
            Reject::BadPrevHash { .. } => "bad_prev_hash",
            Reject::WrongLeader { .. } => "wrong_leader",
            Reject::UnknownChainBlock(_) => "unknown_chain_block",
            Reject::BadTimestamp { .. } => "bad_timestamp",
            Reject::FutureTimestamp { .. } => "future_timestamp",
            Reject::StaleTurn { .. } => "stale_turn",
            Reject::BadHeader(_) => "bad_header",
            Reject::InadmissibleEvent { .. } => "inadmissible_event",
            Reject::BadGenesis(_) => "bad_genesis",
            Reject::BadSnapshot(_) => "bad_snapshot",
            Reject::BeforeSnapshot { .. } => "before_snapshot",
            Reject::BrokenChain { .. } => "broken_chain",
        }
    }
}
