//! What the replicas' proposals for one round say they hold, for the leader's cut and for
//! the candidate's envelopes. A replica answers with its difference from the leader's
//! request (the positions of the request's hashes it lacks, and the hashes it holds beyond
//! them), so the request's hashes are indexed once per round, not gathered into a set per
//! replica; a replica of an older version lists its whole minipool instead.

use std::collections::{BTreeMap, HashMap};

use alloy_primitives::map::{B256Map, B256Set};
use alloy_primitives::{Address, B256};

use crate::{Holdings, ProposalReply};

/// One replica's proposal, ready to be asked about a hash.
#[derive(Debug)]
enum Held {
    Listed(B256Set),
    Difference {
        /// `lacks[i]`: the replica lacks the request's `i`-th hash.
        lacks: Vec<bool>,
        extra: B256Set,
    },
}

/// The round's proposals.
#[derive(Debug)]
pub(super) struct Proposals {
    /// The request's hashes and their positions (empty when no replica answered with a
    /// difference).
    asked: B256Map<u32>,
    held: HashMap<Address, Held>,
}

impl Proposals {
    /// `asked`: the hashes the round's request named, in order.
    pub(super) fn new(asked: &[B256], replies: &BTreeMap<Address, ProposalReply>) -> Self {
        let differences = replies
            .values()
            .any(|r| matches!(r.holds, Holdings::Difference { .. }));
        let asked_positions = if differences {
            asked.iter().zip(0u32..).map(|(h, i)| (*h, i)).collect()
        } else {
            B256Map::default()
        };
        let held = replies
            .iter()
            .map(|(node, reply)| {
                let held = match &reply.holds {
                    Holdings::Listed(hashes) => Held::Listed(hashes.iter().copied().collect()),
                    Holdings::Difference { lacking, extra } => {
                        let mut lacks = vec![false; asked.len()];
                        for i in lacking {
                            lacks[*i as usize] = true;
                        }
                        Held::Difference {
                            lacks,
                            extra: extra.iter().copied().collect(),
                        }
                    }
                };
                (*node, held)
            })
            .collect();
        Proposals {
            asked: asked_positions,
            held,
        }
    }

    /// Whether `node` proposed `hash`.
    pub(super) fn holds(&self, node: &Address, hash: &B256) -> bool {
        let position = self.asked.get(hash).copied();
        self.held
            .get(node)
            .is_some_and(|held| held.holds(hash, position))
    }

    /// How many replicas proposed `hash`.
    pub(super) fn holders(&self, hash: &B256) -> usize {
        let position = self.asked.get(hash).copied();
        self.held
            .values()
            .filter(|held| held.holds(hash, position))
            .count()
    }
}

impl Held {
    /// `position`: the hash's in the request, if it named it.
    fn holds(&self, hash: &B256, position: Option<u32>) -> bool {
        match (self, position) {
            (Held::Listed(hashes), _) => hashes.contains(hash),
            (Held::Difference { lacks, .. }, Some(i)) => !lacks[i as usize],
            (Held::Difference { extra, .. }, None) => extra.contains(hash),
        }
    }
}

/// Whether a reply's difference names only positions of a request of `asked` hashes (a
/// reply that does not is malformed, and the leader counts that replica as silent).
pub(super) fn fits(reply: &ProposalReply, asked: usize) -> bool {
    match &reply.holds {
        Holdings::Listed(_) => true,
        Holdings::Difference { lacking, .. } => lacking.iter().all(|i| (*i as usize) < asked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u8) -> B256 {
        B256::repeat_byte(i)
    }

    fn reply(holds: Holdings) -> ProposalReply {
        ProposalReply {
            num: 1,
            prev_hash: B256::ZERO,
            holds,
            snapshot_vote: false,
            missing: vec![],
        }
    }

    #[test]
    fn a_difference_and_a_list_say_the_same_of_every_hash() {
        let asked = [h(1), h(2), h(3)];
        let (a, b, c) = (
            Address::repeat_byte(1),
            Address::repeat_byte(2),
            Address::repeat_byte(3),
        );
        let replies = BTreeMap::from([
            // Holds 1 and 3 of the request, and 4.
            (
                a,
                reply(Holdings::Difference {
                    lacking: vec![1],
                    extra: vec![h(4)],
                }),
            ),
            (b, reply(Holdings::Listed(vec![h(1), h(3), h(4)]))),
            // Holds nothing.
            (
                c,
                reply(Holdings::Difference {
                    lacking: vec![0, 1, 2],
                    extra: vec![],
                }),
            ),
        ]);
        let proposals = Proposals::new(&asked, &replies);
        for (hash, held) in [
            (h(1), true),
            (h(2), false),
            (h(3), true),
            (h(4), true),
            (h(5), false),
        ] {
            assert_eq!(proposals.holds(&a, &hash), held, "{hash}");
            assert_eq!(proposals.holds(&b, &hash), held, "{hash}");
            assert!(!proposals.holds(&c, &hash));
            assert_eq!(proposals.holders(&hash), 2 * usize::from(held));
        }
        assert!(
            !proposals.holds(&Address::repeat_byte(9), &h(1)),
            "no reply"
        );
    }

    #[test]
    fn a_difference_naming_a_position_past_the_request_does_not_fit() {
        let lacking = |lacking| {
            reply(Holdings::Difference {
                lacking,
                extra: vec![],
            })
        };
        assert!(fits(&lacking(vec![0, 2]), 3));
        assert!(!fits(&lacking(vec![3]), 3));
        assert!(fits(&reply(Holdings::Listed(vec![h(1)])), 0));
    }
}
