//! The node's side: a task per session reads a request, hands it to the node, and writes the
//! answer, until the client closes the session or leaves it idle. A peer holds at most
//! `max_sessions` at once; a session over that is reset at once and counted.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::IncomingStreams;
use prost::Message as _;
use rill_protocol::pb;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tracing::debug;

use crate::P2pMetrics;
use crate::admission::SharedGate;
use crate::codec::{decode, read_frame, send_frame};
use crate::handle::{NetworkEvent, Responder, Route};
use crate::inbound::busy;

/// What every session task of a node shares.
#[derive(Clone)]
pub(crate) struct Server {
    /// Where requests go: the node's queue of network events.
    pub(crate) events: mpsc::Sender<NetworkEvent>,
    /// The client peers' rates, shared with `/rill/client/1`.
    pub(crate) gate: SharedGate,
    pub(crate) metrics: P2pMetrics,
    /// The largest request or answer.
    pub(crate) max_message: usize,
    /// Sessions one peer may hold at once.
    pub(crate) max_sessions: usize,
    /// How long a session may bring no request before the node closes it.
    pub(crate) idle: Duration,
    /// How long writing an answer may take (a client that does not read loses its session).
    pub(crate) write_timeout: Duration,
    /// Sessions open, per peer.
    pub(crate) open: Arc<Mutex<HashMap<PeerId, usize>>>,
}

/// Serves the sessions `incoming` brings, until the node stops taking network events.
pub(crate) async fn serve(server: Server, mut incoming: IncomingStreams) {
    loop {
        tokio::select! {
            next = incoming.next() => match next {
                Some((peer, stream)) => server.start(peer, stream),
                None => return,
            },
            () = server.events.closed() => return,
        }
    }
}

impl Server {
    fn start(&self, peer: PeerId, stream: Stream) {
        if !self.opened(peer) {
            debug!(%peer, max = self.max_sessions, "client session refused: too many open");
            self.metrics.client_sessions_refused.inc();
            return;
        }
        let server = self.clone();
        tokio::spawn(async move {
            if let Err(error) = server.run(peer, stream).await {
                debug!(%peer, %error, "client session failed");
            }
            server.closed(peer);
        });
    }

    /// Counts a new session of `peer`, unless it holds as many as it may.
    fn opened(&self, peer: PeerId) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(peer).or_default();
        if *count >= self.max_sessions {
            return false;
        }
        *count += 1;
        self.metrics.client_sessions.inc();
        true
    }

    fn closed(&self, peer: PeerId) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&peer);
            }
        }
        self.metrics.client_sessions.dec();
    }

    /// Request, answer, and again. A frame over the limit or bytes that do not decode end the
    /// session (as they end a `/rill/client/1` stream); so does the node dropping a request
    /// unanswered.
    async fn run(&self, peer: PeerId, mut stream: Stream) -> io::Result<()> {
        loop {
            let frame = match timeout(self.idle, read_frame(&mut stream, self.max_message)).await {
                Err(_) => break,
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(frame) => frame?,
            };
            let request: pb::ClientRequest = decode(&frame)?;
            let Some(response) = self.answer(peer, request).await else {
                break;
            };
            let bytes = response.encode_to_vec();
            timeout(
                self.write_timeout,
                send_frame(&mut stream, &bytes, self.max_message),
            )
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        }
        stream.close().await
    }

    /// The node's answer; `None` if the node dropped the request or is gone.
    async fn answer(&self, peer: PeerId, request: pb::ClientRequest) -> Option<pb::ClientResponse> {
        let refused = |error| {
            Some(pb::ClientResponse {
                kind: None,
                error: Some(error),
            })
        };
        let admitted = self.gate.lock().admit(&peer, &request);
        if let Err(refusal) = admitted {
            self.metrics.client_requests_limited.inc();
            return refused(refusal);
        }
        let (reply, answer) = oneshot::channel();
        let event = NetworkEvent::ClientRequest {
            peer,
            request,
            responder: Responder(Route::Session(reply)),
        };
        match self.events.try_send(event) {
            Ok(()) => answer.await.ok(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.requests_shed.inc();
                refused(busy())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => None,
        }
    }
}
