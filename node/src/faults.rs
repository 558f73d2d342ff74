//! Fault injection for tests: drop or delay one kind of message between nodes, partition
//! them, or make a node's store writes fail. The rules are only compiled in with the `faults` feature (the testnet and the fault
//! suite turn it on); without it every message is delivered and nothing here is reachable.
//!
//! Every node checks its outgoing messages against the rules, so a rule shared by all the
//! nodes of a testnet (or given to each process as `RILL_FAULTS`) cuts both directions of a
//! partition.

use std::time::Duration;

use alloy_primitives::Address;

/// The kinds of node-to-node messages a rule can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Gossip of full events (`NewEventReceived`).
    GossipEvents,
    /// Gossip of announcements (`NewEventInPool`).
    GossipAnnouncements,
    /// `ProposeMiniblock` requests.
    Proposal,
    /// `SaveMiniblockCandidate` requests.
    Candidate,
    /// `GetEvents` requests.
    GetEvents,
    /// `GetMiniblocks` requests.
    GetMiniblocks,
    /// This node's registration transactions (a rule's `to` is ignored): a delay holds them
    /// back, a drop loses them as a transaction that never lands would.
    Registration,
}

/// What happens to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// It is sent.
    Deliver,
    /// It is lost.
    Drop,
    /// It is sent after this long.
    Delay(Duration),
}

#[cfg(feature = "faults")]
pub use rules::{FaultSpecError, Faults};

#[cfg(feature = "faults")]
mod rules {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use alloy_primitives::Address;

    use super::{Action, MessageKind};

    #[derive(Clone, Debug)]
    struct Rule {
        kind: Option<MessageKind>,
        from: Option<Address>,
        to: Option<Address>,
        action: Action,
    }

    impl Rule {
        fn matches(&self, kind: MessageKind, from: Address, to: Address) -> bool {
            self.kind.is_none_or(|k| k == kind)
                && self.from.is_none_or(|f| f == from)
                && self.to.is_none_or(|t| t == to)
        }
    }

    /// Fault rules, shared by every node they are given to. Cheap to clone.
    #[derive(Clone, Debug, Default)]
    pub struct Faults {
        rules: Arc<Mutex<Vec<Rule>>>,
        /// Nodes whose store writes fail.
        failing_stores: Arc<Mutex<Vec<Address>>>,
    }

    /// A `RILL_FAULTS` spec that does not parse.
    #[derive(Debug, thiserror::Error)]
    #[error(
        "bad fault spec {0:?}: expected `drop:<kind>` or `delay:<kind>:<ms>`, kinds: gossip-events, gossip-announcements, proposal, candidate, get-events, get-miniblocks, registration, all"
    )]
    pub struct FaultSpecError(String);

    impl Faults {
        fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
            self.rules.lock().unwrap_or_else(|p| p.into_inner())
        }

        fn add(
            &self,
            kind: Option<MessageKind>,
            from: Option<Address>,
            to: Option<Address>,
            action: Action,
        ) {
            self.lock().push(Rule {
                kind,
                from,
                to,
                action,
            });
        }

        /// Drops messages of `kind` (every kind if `None`) from `from` to `to` (anyone if
        /// `None`).
        pub fn drop(&self, kind: Option<MessageKind>, from: Option<Address>, to: Option<Address>) {
            self.add(kind, from, to, Action::Drop);
        }

        /// Delays messages of `kind` from `from` to `to` by `by`.
        pub fn delay(
            &self,
            kind: Option<MessageKind>,
            from: Option<Address>,
            to: Option<Address>,
            by: Duration,
        ) {
            self.add(kind, from, to, Action::Delay(by));
        }

        /// Cuts every message between `side` and `rest`, both ways.
        pub fn partition(&self, side: &[Address], rest: &[Address]) {
            for a in side {
                for b in rest {
                    self.drop(None, Some(*a), Some(*b));
                    self.drop(None, Some(*b), Some(*a));
                }
            }
        }

        /// Removes every rule.
        pub fn heal(&self) {
            self.lock().clear();
            self.failing_stores
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }

        /// Makes every store write of `node` fail from now on (a disk that stopped working).
        pub fn fail_store_writes(&self, node: Address) {
            self.failing_stores
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(node);
        }

        /// Whether `node`'s store writes fail.
        pub fn store_fails(&self, node: Address) -> bool {
            self.failing_stores
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&node)
        }

        /// What happens to a message of `kind` from `from` to `to`: the first matching rule
        /// decides.
        pub fn action(&self, kind: MessageKind, from: Address, to: Address) -> Action {
            self.lock()
                .iter()
                .find(|r| r.matches(kind, from, to))
                .map_or(Action::Deliver, |r| r.action)
        }

        /// Rules from a spec such as `drop:candidate,delay:proposal:200` (how a process of the
        /// fault suite gets them, through `RILL_FAULTS`).
        pub fn parse(spec: &str) -> Result<Self, FaultSpecError> {
            let faults = Self::default();
            for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let bad = || FaultSpecError(part.to_owned());
                let mut fields = part.split(':');
                let (verb, kind) = (
                    fields.next().ok_or_else(bad)?,
                    fields.next().ok_or_else(bad)?,
                );
                let kind = match kind {
                    "gossip-events" => Some(MessageKind::GossipEvents),
                    "gossip-announcements" => Some(MessageKind::GossipAnnouncements),
                    "proposal" => Some(MessageKind::Proposal),
                    "candidate" => Some(MessageKind::Candidate),
                    "get-events" => Some(MessageKind::GetEvents),
                    "get-miniblocks" => Some(MessageKind::GetMiniblocks),
                    "registration" => Some(MessageKind::Registration),
                    "all" => None,
                    _ => return Err(bad()),
                };
                match (verb, fields.next()) {
                    ("drop", None) => faults.drop(kind, None, None),
                    ("delay", Some(ms)) => {
                        let ms: u64 = ms.parse().map_err(|_| bad())?;
                        faults.delay(kind, None, None, Duration::from_millis(ms));
                    }
                    _ => return Err(bad()),
                }
            }
            Ok(faults)
        }
    }
}

/// The fault hook of one node: what happens to its outgoing messages.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hook {
    #[cfg(feature = "faults")]
    faults: Option<Faults>,
}

impl Hook {
    #[cfg(feature = "faults")]
    pub(crate) fn new(faults: Option<Faults>) -> Self {
        Self { faults }
    }

    /// What happens to a message of `kind` from this node (`from`) to `to`.
    #[cfg_attr(not(feature = "faults"), allow(unused_variables))]
    pub(crate) fn action(&self, kind: MessageKind, from: Address, to: Address) -> Action {
        #[cfg(feature = "faults")]
        if let Some(faults) = &self.faults {
            return faults.action(kind, from, to);
        }
        Action::Deliver
    }

    /// Whether this node's (`me`) store writes are made to fail.
    #[cfg_attr(not(feature = "faults"), allow(unused_variables))]
    pub(crate) fn store_fails(&self, me: Address) -> bool {
        #[cfg(feature = "faults")]
        if let Some(faults) = &self.faults {
            return faults.store_fails(me);
        }
        false
    }
}
