//! Sustained load: writers adding events to a stream through any of its nodes, moving to
//! the next node when one is down, and remembering what was acknowledged.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_primitives::B256;
use rill_client::Client;
use rill_client::p2p::Multiaddr;
use rill_protocol::{NodeKey, Payload, StreamId, pb};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Writers running against a stream.
pub struct Load {
    stop: watch::Sender<bool>,
    writers: Vec<JoinHandle<HashSet<B256>>>,
    failures: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
}

/// What a load achieved.
#[derive(Debug, Default)]
pub struct Acked {
    /// The events the nodes acknowledged.
    pub events: HashSet<B256>,
    /// Adds that failed (a node down, a timeout) and were not acknowledged.
    pub failures: u64,
}

impl Load {
    /// How many events were acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Stops the writers and returns what was acknowledged.
    pub async fn stop(self) -> Acked {
        let _ = self.stop.send(true);
        let mut events = HashSet::new();
        for writer in self.writers {
            events.extend(writer.await.unwrap_or_default());
        }
        Acked {
            events,
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

impl Load {
    /// Starts `writers` writers adding `bytes`-byte messages to `stream` with `ack`, signed by
    /// `key` (a member), through the nodes at `addrs` in turn.
    pub fn start(
        stream: StreamId,
        key: &NodeKey,
        addrs: &[Multiaddr],
        writers: usize,
        ack: pb::Ack,
        bytes: usize,
    ) -> Load {
        let (stop, stopped) = watch::channel(false);
        let failures = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let writers = (0..writers)
            .map(|w| {
                let counters = (failures.clone(), acked.clone());
                tokio::spawn(write(
                    stream,
                    key.clone(),
                    addrs.to_vec(),
                    w,
                    ack,
                    bytes,
                    stopped.clone(),
                    counters,
                ))
            })
            .collect();
        Load {
            stop,
            writers,
            failures,
            acked,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn write(
    stream: StreamId,
    key: NodeKey,
    addrs: Vec<Multiaddr>,
    first: usize,
    ack: pb::Ack,
    bytes: usize,
    stopped: watch::Receiver<bool>,
    (failures, acked_count): (Arc<AtomicU64>, Arc<AtomicU64>),
) -> HashSet<B256> {
    let mut acked = HashSet::new();
    let mut target = first;
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    while !*stopped.borrow() {
        if client.is_none() {
            let addr = addrs[target % addrs.len()].clone();
            match tokio::time::timeout(Duration::from_secs(3), Client::connect(addr, key.clone()))
                .await
            {
                Ok(Ok(c)) => client = Some(c),
                _ => {
                    target += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(c) = client.as_ref() else { continue };
        n += 1;
        let mut data = format!("w{first}-{n}-").into_bytes();
        data.resize(bytes.max(data.len()), b'.');
        let payload = Payload::Message(pb::Message { data });
        match tokio::time::timeout(Duration::from_secs(35), c.add(stream, payload, ack)).await {
            Ok(Ok((event, _))) => {
                acked.insert(event.hash());
                acked_count.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                failures.fetch_add(1, Ordering::Relaxed);
                client = None;
                target += 1;
            }
        }
    }
    acked
}
