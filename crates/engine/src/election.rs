//! Leader election: `nodes[keccak256(stream_id ‖ u64_be(block_number) ‖ prevrandao) mod n]`.

use alloy_primitives::{Address, B256, U256, keccak256};
use rill_protocol::StreamId;

/// The node that leads `stream`'s next miniblock at chain block `block_number`.
///
/// # Panics
/// If `nodes` is empty (a stream always has at least one node).
pub fn elect_leader(
    stream: &StreamId,
    block_number: u64,
    prevrandao: &B256,
    nodes: &[Address],
) -> Address {
    assert!(!nodes.is_empty(), "a stream has at least one node");
    let mut input = [0u8; 72];
    input[..32].copy_from_slice(stream.as_bytes());
    input[32..40].copy_from_slice(&block_number.to_be_bytes());
    input[40..].copy_from_slice(prevrandao.as_slice());
    let draw = U256::from_be_bytes(keccak256(input).0);
    let index = draw % U256::from(nodes.len());
    nodes[index.to::<usize>()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_is_deterministic_and_spreads_over_nodes() {
        let nodes: Vec<Address> = (1..=3).map(Address::repeat_byte).collect();
        let stream = StreamId([5; 32]);
        let mut counts = [0usize; 3];
        for block in 0..3000 {
            let randao = B256::from(U256::from(block * 7919));
            let leader = elect_leader(&stream, block, &randao, &nodes);
            assert_eq!(leader, elect_leader(&stream, block, &randao, &nodes));
            counts[nodes.iter().position(|n| *n == leader).unwrap()] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn election_matches_an_independent_computation() {
        // keccak256(0x05 * 32 ‖ 0x000000000000002a ‖ 0x01 * 32) computed with pycryptodome;
        // its value mod 3 is 0.
        let nodes: Vec<Address> = (1..=3).map(Address::repeat_byte).collect();
        let leader = elect_leader(&StreamId([5; 32]), 42, &B256::repeat_byte(1), &nodes);
        assert_eq!(leader, nodes[ELECTED_INDEX]);
    }

    const ELECTED_INDEX: usize = 0;
}
