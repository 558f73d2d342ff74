//! The promise, checked: every acknowledged event in exactly one miniblock on every replica,
//! the replicas' chains identical, and the registry's head equal to theirs.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use alloy_primitives::{Address, B256};
use prost::Message as _;
use rill_chain::Registry;
use rill_client::Client;
use rill_protocol::{Payload, StreamId, pb};

/// A stream as all its replicas agree on it.
#[derive(Clone, Debug)]
pub struct Finalized {
    /// The miniblock hashes, from the genesis on.
    pub chain: Vec<B256>,
    /// Every event hash in the chain, in order.
    pub events: Vec<B256>,
    /// Each miniblock's header and who produced it.
    pub headers: Vec<(pb::MiniblockHeader, Address)>,
}

/// One replica's view of a stream.
struct View {
    chain: Vec<B256>,
    events: Vec<B256>,
    headers: Vec<(pb::MiniblockHeader, Address)>,
}

fn view(got: &pb::GetStreamResponse) -> View {
    let mut view = View {
        chain: Vec::new(),
        events: Vec::new(),
        headers: Vec::new(),
    };
    for miniblock in &got.miniblocks {
        let header = miniblock.header.clone().unwrap_or_default();
        view.chain
            .push(B256::try_from(header.hash.as_slice()).unwrap_or_default());
        if let Ok(event) = pb::StreamEvent::decode(header.event.as_slice())
            && let Some(Payload::MiniblockHeader(fields)) = event.payload
        {
            let producer = Address::try_from(event.creator.as_slice()).unwrap_or_default();
            view.headers.push((fields, producer));
        }
        for event in &miniblock.events {
            view.events
                .push(B256::try_from(event.hash.as_slice()).unwrap_or_default());
        }
    }
    view
}

/// How long one look at the registry and the replicas may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits (up to `within`) until the promise holds for `stream` on the replicas reached
/// through `clients` (replicas that are down are left out by passing `None`): the same chain
/// on each, its head the registry's head, and each of `acked` in exactly one of its
/// miniblocks. Returns what they agree on, or what still fails.
pub async fn expect_finalized(
    registry: &Registry,
    clients: &[Option<Client>],
    stream: StreamId,
    acked: &HashSet<B256>,
    within: Duration,
) -> Result<Finalized, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        // One look at the registry and every replica; bounded, so a chain or replica that
        // stops answering is a problem reported at the deadline, never a wait without end.
        let look = tokio::time::timeout(CHECK_TIMEOUT, check(registry, clients, stream, acked));
        let problem = match look.await {
            Ok(Ok(finalized)) => return Ok(finalized),
            Ok(Err(problem)) => problem,
            Err(_) => format!("one check took longer than {CHECK_TIMEOUT:?}"),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "stream {stream} not finalized within {within:?}: {problem}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn check(
    registry: &Registry,
    clients: &[Option<Client>],
    stream: StreamId,
    acked: &HashSet<B256>,
) -> Result<Finalized, String> {
    let record = registry
        .stream(stream)
        .await
        .map_err(|e| format!("registry: {e}"))?
        .ok_or("the stream is not allocated")?;
    let mut agreed: Option<View> = None;
    for (i, client) in clients.iter().enumerate() {
        let Some(client) = client else { continue };
        let got = client
            .get_stream(stream)
            .await
            .map_err(|e| format!("replica {i}: {e}"))?;
        let view = view(&got);
        let head = view.chain.last().copied().unwrap_or_default();
        if view.chain.len() as u64 != record.last_miniblock_num + 1
            || head != record.last_miniblock_hash
        {
            return Err(format!(
                "replica {i} is at miniblock {} while the registry is at {}",
                view.chain.len() as u64 - 1,
                record.last_miniblock_num
            ));
        }
        let mut count: HashMap<B256, usize> = HashMap::new();
        for hash in &view.events {
            *count.entry(*hash).or_default() += 1;
        }
        let missing: Vec<_> = acked.iter().filter(|h| !count.contains_key(*h)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "replica {i} lacks {} of {} acknowledged events, among them {:?}",
                missing.len(),
                acked.len(),
                &missing[..missing.len().min(3)]
            ));
        }
        if let Some((hash, n)) = count.iter().find(|(_, n)| **n > 1) {
            return Err(format!("replica {i} holds event {hash} in {n} miniblocks"));
        }
        match &agreed {
            Some(other) if other.chain != view.chain => {
                return Err(format!(
                    "replica {i}'s chain differs from another replica's"
                ));
            }
            Some(_) => {}
            None => agreed = Some(view),
        }
    }
    let view = agreed.ok_or("no replica is running")?;
    Ok(Finalized {
        chain: view.chain,
        events: view.events,
        headers: view.headers,
    })
}
