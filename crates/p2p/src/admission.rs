//! Whether a client request is within its peer's rate. The swarm's task (requests over
//! `/rill/client/1`) and the client sessions' tasks share one [`ClientGate`], so a peer has one
//! budget whichever way it asks.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use libp2p::PeerId;
use rill_protocol::pb;

use crate::limits::{Buckets, Rate};

/// The registered nodes (not limited: they forward the requests of their own, limited,
/// clients) and what each other peer may still ask.
#[derive(Debug)]
pub(crate) struct ClientGate {
    nodes: HashSet<PeerId>,
    limits: Option<Buckets<PeerId>>,
}

/// The gate, shared between tasks.
#[derive(Clone, Debug)]
pub(crate) struct SharedGate(Arc<Mutex<ClientGate>>);

impl SharedGate {
    /// A gate holding each client peer to `rate` (`None`: no limit).
    pub(crate) fn new(rate: Option<Rate>) -> Self {
        Self(Arc::new(Mutex::new(ClientGate {
            nodes: HashSet::new(),
            limits: rate.map(Buckets::new),
        })))
    }

    /// The gate; a task that panicked holding it left nothing half-updated that matters here.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ClientGate> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientGate {
    /// Replaces the registered nodes.
    pub(crate) fn set_nodes(&mut self, nodes: impl IntoIterator<Item = PeerId>) {
        self.nodes = nodes.into_iter().collect();
    }

    /// Forgets the buckets that have refilled completely.
    pub(crate) fn prune(&mut self, now: Instant) {
        if let Some(limits) = &mut self.limits {
            limits.prune(now);
        }
    }

    /// Takes the request's cost (1, or its number of events) from its peer's bucket, or says
    /// `RATE_LIMITED` with how long to wait.
    pub(crate) fn admit(
        &mut self,
        peer: &PeerId,
        request: &pb::ClientRequest,
    ) -> Result<(), pb::Error> {
        if self.nodes.contains(peer) {
            return Ok(());
        }
        let Some(limits) = &mut self.limits else {
            return Ok(());
        };
        let cost = match &request.kind {
            Some(pb::client_request::Kind::AddEvents(add)) => add.envelopes.len().max(1),
            _ => 1,
        };
        limits
            .take(peer, cost as f64, Instant::now())
            .map_err(|wait| pb::Error {
                code: pb::ErrorCode::RateLimited as i32,
                message: format!(
                    "more requests from {peer} than this node serves one client; retry in {} ms",
                    wait.as_millis().max(1)
                ),
                retry_after_ms: u32::try_from(wait.as_millis().max(1)).unwrap_or(u32::MAX),
            })
    }
}
