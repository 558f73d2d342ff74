//! Placement: which registered nodes hold a new stream.

use alloy_primitives::{Address, keccak256};
use rill_protocol::StreamId;

/// The `replication_factor` nodes of `nodes` closest to the stream id by
/// `keccak256(stream_id ‖ address)`: deterministic, and spread evenly over the nodes.
pub fn place(stream: &StreamId, nodes: &[Address], replication_factor: usize) -> Vec<Address> {
    let mut placed: Vec<Address> = nodes.to_vec();
    placed.sort_by_key(|a| keccak256([stream.0.as_slice(), a.as_slice()].concat()));
    placed.dedup();
    placed.truncate(replication_factor.max(1));
    placed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_deterministic_and_spreads_streams_over_nodes() {
        let nodes: Vec<Address> = (1..=5).map(Address::repeat_byte).collect();
        let mut counts = [0usize; 5];
        for i in 0..1000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let stream = StreamId(id);
            let placed = place(&stream, &nodes, 3);
            assert_eq!(placed, place(&stream, &nodes, 3));
            assert_eq!(placed.len(), 3);
            for node in placed {
                counts[nodes.iter().position(|n| *n == node).unwrap()] += 1;
            }
        }
        assert!(counts.iter().all(|c| (500..700).contains(c)), "{counts:?}");
    }
}
