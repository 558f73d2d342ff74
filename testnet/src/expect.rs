//! Expectations: the promise, checked on every replica and against the registry.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use alloy_primitives::B256;
use rill_client::Client;
use rill_protocol::{StreamId, pb};

use crate::Testnet;

/// A stream as all its replicas agree on it.
#[derive(Clone, Debug)]
pub struct Finalized {
    /// The miniblock hashes, from the genesis on.
    pub chain: Vec<B256>,
    /// Every event hash in the chain, in order.
    pub events: Vec<B256>,
}

/// One replica's view of a stream.
struct View {
    chain: Vec<B256>,
    events: Vec<B256>,
}

fn view(got: &pb::GetStreamResponse) -> View {
    let mut view = View {
        chain: Vec::new(),
        events: Vec::new(),
    };
    for miniblock in &got.miniblocks {
        let header = miniblock.header.clone().unwrap_or_default();
        view.chain
            .push(B256::try_from(header.hash.as_slice()).unwrap_or_default());
        for event in &miniblock.events {
            view.events
                .push(B256::try_from(event.hash.as_slice()).unwrap_or_default());
        }
    }
    view
}

impl Testnet {
    /// Waits (up to `within`) until the promise holds for `stream`: every running replica's
    /// chain is the same, its head is the registry's head, and each of `acked` is in exactly
    /// one of its miniblocks. Panics with what still fails.
    pub async fn expect_finalized(
        &self,
        stream: StreamId,
        acked: &HashSet<B256>,
        within: Duration,
    ) -> Finalized {
        let deadline = tokio::time::Instant::now() + within;
        let registry = self.registry();
        let record = registry
            .stream(stream)
            .await
            .expect("the registry answers")
            .expect("the stream is allocated");
        let replicas: Vec<usize> = record
            .nodes
            .iter()
            .filter_map(|a| self.index_of(a))
            .collect();
        let mut clients: HashMap<usize, Client> = HashMap::new();
        loop {
            let problem = match self
                .check_finalized(stream, acked, &replicas, &mut clients)
                .await
            {
                Ok(finalized) => return finalized,
                Err(problem) => problem,
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "stream {stream} not finalized within {within:?}: {problem}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn check_finalized(
        &self,
        stream: StreamId,
        acked: &HashSet<B256>,
        replicas: &[usize],
        clients: &mut HashMap<usize, Client>,
    ) -> Result<Finalized, String> {
        let record = self
            .registry()
            .stream(stream)
            .await
            .map_err(|e| format!("registry: {e}"))?
            .ok_or("the stream is not allocated")?;
        let mut agreed: Option<View> = None;
        for &i in replicas {
            if !self.is_up(i) {
                continue;
            }
            let client = match clients.entry(i) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(self.client(i).await)
                }
            };
            let got = client
                .get_stream(stream)
                .await
                .map_err(|e| format!("node {i}: {e}"))?;
            let view = view(&got);
            let head = view.chain.last().copied().unwrap_or_default();
            if view.chain.len() as u64 != record.last_miniblock_num + 1
                || head != record.last_miniblock_hash
            {
                return Err(format!(
                    "node {i} is at miniblock {} while the registry is at {}",
                    view.chain.len() as u64 - 1,
                    record.last_miniblock_num
                ));
            }
            let mut count: HashMap<B256, usize> = HashMap::new();
            for hash in &view.events {
                *count.entry(*hash).or_default() += 1;
            }
            let missing = acked.iter().filter(|h| !count.contains_key(*h)).count();
            if missing > 0 {
                return Err(format!(
                    "node {i} lacks {missing} of {} acknowledged events",
                    acked.len()
                ));
            }
            if let Some((hash, n)) = count.iter().find(|(_, n)| **n > 1) {
                return Err(format!("node {i} holds event {hash} in {n} miniblocks"));
            }
            match &agreed {
                Some(other) if other.chain != view.chain => {
                    return Err(format!("node {i}'s chain differs from another replica's"));
                }
                Some(_) => {}
                None => agreed = Some(view),
            }
        }
        let view = agreed.ok_or("no replica is running")?;
        Ok(Finalized {
            chain: view.chain,
            events: view.events,
        })
    }
}
