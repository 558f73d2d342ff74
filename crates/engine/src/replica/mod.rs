//! One stream as this node replicates it: its promoted state, its minipool, and the protocol
//! state of each phase. Each phase has its own file and adds its methods to [`Replica`]:
//!
//! - `admission`: client and peer events into the minipool; events parked until this node
//!   catches up with the sender;
//! - `fetch`: announcements of events this node lacks, and fetching them;
//! - `round`: leading a miniblock (proposals, the quorum cut, the signed candidate) and
//!   answering another leader's proposal request; `proposals` reads what the replies say
//!   each replica holds;
//! - `candidate`: a replica's checks of a leader's candidate;
//! - `promotion`: registered heads and promoting candidates;
//! - `catch_up`: fetching registered miniblocks this node lacks, page by page, or jumping
//!   to a peer's snapshot when far behind;
//! - `backfill`: after a jump, fetching the skipped history newest first;
//! - `sync`: pushing minipool events to the nodes that have not confirmed holding them
//!   (anti-entropy), so no event a live node holds is stranded.

mod admission;
mod backfill;
mod candidate;
mod catch_up;
mod fetch;
mod promotion;
mod proposals;
mod round;
mod sync;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use alloy_primitives::{Address, B256};
use rill_protocol::{NodeKey, ParsedEvent, ParsedMiniblock, StreamId};

use crate::chain::ChainBlocks;
use crate::config::Timeline;
use crate::electorate::Electorate;
use crate::minipool::Minipool;
use crate::stream::{Head, Rules, Stream};
use crate::{Effect, EngineConfig, Gossip, NetworkParams, Notification, Reject, Request, StoreOp};

pub use backfill::Gap;

/// What every phase needs besides the stream: who this node is, the parameters and the rules
/// in force, the electorate, the chain blocks it has seen, the time, and where effects go.
pub(crate) struct Ctx<'a> {
    pub(crate) me: Address,
    pub(crate) key: &'a NodeKey,
    pub(crate) config: &'a EngineConfig,
    pub(crate) params: &'a Timeline<NetworkParams>,
    pub(crate) electorate: &'a Electorate,
    pub(crate) blocks: &'a ChainBlocks,
    pub(crate) now_ms: u64,
    pub(crate) effects: Vec<Effect>,
}

impl Ctx<'_> {
    /// The network's rules in force now (admission into the minipool).
    pub(crate) fn params_now(&self) -> NetworkParams {
        self.params.latest()
    }

    /// The rules of a miniblock elected at chain block `block`.
    pub(crate) fn params_at(&self, block: u64) -> NetworkParams {
        self.params.at(block)
    }

    /// The rules events are judged by now (what the next miniblock may include).
    pub(crate) fn rules_now(&self) -> Rules {
        self.config.rules(&self.params_now())
    }

    /// The rules an event enters the minipool by now (a narrower window than inclusion).
    pub(crate) fn admission_rules(&self) -> Rules {
        self.config.admission_rules(&self.params_now())
    }

    /// Admission rules of a miniblock elected at `block`.
    pub(crate) fn rules_at(&self, block: u64) -> Rules {
        self.config.rules(&self.params_at(block))
    }

    pub(crate) fn gossip_to(&mut self, to: Address, stream: StreamId, message: Gossip) {
        self.effects.push(Effect::GossipTo {
            to,
            stream,
            message,
        });
    }

    pub(crate) fn store(&mut self, op: StoreOp) {
        self.effects.push(Effect::Store(op));
    }

    pub(crate) fn gossip(&mut self, stream: StreamId, message: Gossip) {
        self.effects.push(Effect::Gossip { stream, message });
    }

    pub(crate) fn send(&mut self, to: Address, stream: StreamId, request: Request) {
        self.effects.push(Effect::Send {
            to,
            stream,
            request,
        });
    }

    pub(crate) fn notify(&mut self, notification: Notification) {
        self.effects.push(Effect::Notify(notification));
    }

    pub(crate) fn rejected(&mut self, stream: StreamId, from: Option<Address>, reason: Reject) {
        tracing::debug!(?from, %reason, "refused");
        self.effects.push(Effect::Rejected {
            stream,
            from,
            reason,
        });
    }
}

/// A read-only view of a stream for the node (status, `GetStream`).
pub trait StreamView {
    /// The head.
    fn head(&self) -> Head;
    /// The nodes, in registry order.
    fn nodes(&self) -> &[Address];
    /// Members as of the head.
    fn members(&self) -> &BTreeSet<Address>;
    /// Minipool hashes in arrival order.
    fn minipool_hashes(&self) -> Vec<B256>;
    /// How many events wait in the minipool.
    fn minipool_len(&self) -> usize;
    /// An event of the minipool.
    fn pool_event(&self, hash: &B256) -> Option<&ParsedEvent>;
    /// Whether this node holds the event: in its minipool or a recent miniblock.
    fn holds_event(&self, hash: &B256) -> bool;
    /// Whether the stream has work in progress: minipool events, a candidate, a round, a
    /// fetch, a catch-up or a backfill.
    fn busy(&self) -> bool;
}

/// One stream's replica on this node.
#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) stream: Stream,
    pub(crate) pool: Minipool,
    missing: fetch::MissingEvents,
    candidates: candidate::Candidates,
    round: Option<round::Round>,
    offer: Option<candidate::Offer>,
    parked: admission::Parked,
    registered: BTreeMap<u64, B256>,
    catch_up: Option<catch_up::CatchUp>,
    backfill: Option<backfill::Backfill>,
    /// When each other node of the stream was last found holding one of its events.
    heard: HashMap<Address, u64>,
}

impl Replica {
    pub(crate) fn new(stream: Stream) -> Self {
        Self {
            stream,
            pool: Minipool::default(),
            missing: Default::default(),
            candidates: Default::default(),
            round: None,
            offer: None,
            parked: Default::default(),
            registered: BTreeMap::new(),
            catch_up: None,
            backfill: None,
            heard: HashMap::new(),
        }
    }

    /// Miniblocks this replica skipped when it jumped to a peer's snapshot, to fetch.
    pub(crate) fn set_gap(&mut self, gap: Option<Gap>) {
        self.backfill = gap.map(backfill::Backfill::new);
    }

    pub(crate) fn id(&self) -> StreamId {
        self.stream.id
    }

    pub(crate) fn is_node(&self, address: &Address) -> bool {
        self.stream.nodes.contains(address)
    }

    /// The other nodes of the stream.
    pub(crate) fn peers(&self, me: Address) -> impl Iterator<Item = Address> + '_ {
        self.stream.nodes.iter().copied().filter(move |n| *n != me)
    }

    /// The other nodes of the stream this node waits for (not Failed).
    pub(crate) fn live_peers(&self, ctx: &Ctx<'_>) -> Vec<Address> {
        self.peers(ctx.me)
            .filter(|n| ctx.electorate.waited_for(n))
            .collect()
    }

    /// More than half of the stream's nodes.
    pub(crate) fn quorum(&self) -> usize {
        self.stream.nodes.len() / 2 + 1
    }

    /// Whether the replica holds nothing beyond its promoted state (which the store has): no
    /// minipool, no candidate, no round or offer, nothing missing, parked or to catch up.
    pub(crate) fn is_idle(&self) -> bool {
        self.pool.is_empty()
            && self.missing.is_empty()
            && self.candidates.is_empty()
            && self.round.is_none()
            && self.offer.is_none()
            && self.parked.is_empty()
            && self.catch_up.is_none()
            && self.backfill.is_none()
            && self.registered.is_empty()
    }

    /// Whether a round this node leads is in progress: proposals still coming, or its
    /// candidate waiting for a write quorum.
    pub(crate) fn leading(&self) -> bool {
        self.round.is_some() || self.offer.is_some()
    }

    /// Restores a stored candidate after a restart (in number order): one for the next
    /// number that builds on the head, or one chained on such a candidate.
    pub(crate) fn restore_candidate(&mut self, candidate: ParsedMiniblock) {
        if self.builds_on_held(candidate.num(), candidate.prev_hash()) {
            self.candidates.keep(candidate);
        }
    }

    /// Whether a tick at `now_ms` may have anything to do (checked before a tick visits the
    /// stream, so that a tick costs nothing for the streams that wait on nothing).
    pub(crate) fn tick_due(&self, now_ms: u64) -> bool {
        !self.missing.is_empty()
            || self.pool.push_due_at(now_ms)
            || self.catch_up.is_some()
            || self.backfill.is_some()
            || self.round.is_some()
            || self.offer.is_some()
    }

    /// Time passed: fetches and pushes that are due, catch-up retries, late proposal rounds,
    /// candidates waiting for their write quorum.
    pub(crate) fn on_tick(&mut self, ctx: &mut Ctx<'_>) {
        self.fetch_due(ctx);
        self.push_due(ctx);
        self.catch_up_due(ctx);
        self.backfill_due(ctx);
        self.round_timeout(ctx);
        self.offer_due(ctx);
    }

    /// A new chain block: candidates that waited for it, then perhaps a round to lead.
    pub(crate) fn on_block(&mut self, ctx: &mut Ctx<'_>, number: u64, prevrandao: B256) {
        self.recheck_deferred(ctx);
        self.maybe_lead(ctx, number, prevrandao);
    }
}

impl StreamView for Replica {
    fn head(&self) -> Head {
        self.stream.head
    }

    fn nodes(&self) -> &[Address] {
        &self.stream.nodes
    }

    fn members(&self) -> &BTreeSet<Address> {
        &self.stream.members
    }

    fn minipool_hashes(&self) -> Vec<B256> {
        self.pool.hashes().copied().collect()
    }

    fn minipool_len(&self) -> usize {
        self.pool.len()
    }

    fn pool_event(&self, hash: &B256) -> Option<&ParsedEvent> {
        self.pool.get(hash)
    }

    fn holds_event(&self, hash: &B256) -> bool {
        self.pool.contains(hash) || self.stream.recently_included(hash)
    }

    fn busy(&self) -> bool {
        !self.is_idle()
    }
}
