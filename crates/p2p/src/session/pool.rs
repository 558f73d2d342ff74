//! The client's side: sessions kept idle per peer, the most recently used taken first, and a
//! new one opened when none is idle. A peer that does not serve sessions (an older node) is
//! remembered, and its requests go over `/rill/client/1`; so does a request whose new session
//! the node did not take.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use libp2p::{PeerId, Stream};
use libp2p_stream::{Control, OpenStreamError};
use prost::Message as _;
use rill_protocol::pb;
use tokio::time::timeout;
use tracing::debug;

use super::{KEEP_IDLE, SESSION};
use crate::codec::{decode, read_frame, send_frame};
use crate::error::protocol_refused;
use crate::{P2p, RequestError};

/// Idle sessions kept per peer, at most.
const MAX_IDLE: usize = 64;

/// A client's sessions.
pub(crate) struct Sessions {
    control: Control,
    idle: Mutex<HashMap<PeerId, Vec<(Stream, Instant)>>>,
    unsupported: Mutex<HashSet<PeerId>>,
    max_message: usize,
    timeout: Duration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("max_message", &self.max_message)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a session could not answer.
enum Failure {
    /// The peer does not serve sessions.
    Unsupported,
    /// A new session closed before its first answer began. libp2p-stream drops a session
    /// the node's side has no room to take at that moment (its queue of new sessions holds
    /// one), so a burst of new sessions loses some; the request goes over `/rill/client/1`.
    NotTaken,
    /// The request failed.
    Failed(RequestError),
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        if protocol_refused(&error) {
            return Failure::Unsupported;
        }
        Failure::Failed(match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
            | io::ErrorKind::WriteZero => RequestError::ConnectionClosed,
            kind => RequestError::Stream(kind),
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sessions {
    /// Sessions opened through `control`, for messages up to `max_message` bytes, each
    /// request answered within `timeout`.
    pub(crate) fn new(control: Control, max_message: usize, timeout: Duration) -> Self {
        Self {
            control,
            idle: Mutex::default(),
            unsupported: Mutex::default(),
            max_message,
            timeout,
        }
    }

    /// The answer to `request` over a session with `peer`, or `None` if the peer does not
    /// serve sessions (the caller asks over `/rill/client/1` then).
    pub(crate) async fn request(
        &self,
        p2p: &P2p,
        peer: PeerId,
        request: &pb::ClientRequest,
    ) -> Option<Result<pb::ClientResponse, RequestError>> {
        if lock(&self.unsupported).contains(&peer) {
            return None;
        }
        match self.ask(p2p, peer, &request.encode_to_vec()).await {
            Ok(response) => Some(Ok(response)),
            Err(Failure::Failed(error)) => Some(Err(error)),
            Err(Failure::Unsupported) => {
                lock(&self.unsupported).insert(peer);
                None
            }
            Err(Failure::NotTaken) => {
                debug!(%peer, "a new client session closed before its answer; asking over /rill/client/1");
                None
            }
        }
    }

    async fn ask(
        &self,
        p2p: &P2p,
        peer: PeerId,
        request: &[u8],
    ) -> Result<pb::ClientResponse, Failure> {
        if let Some(mut session) = self.take_idle(peer) {
            match self.exchange(&mut session, request).await {
                Ok(response) => {
                    self.keep(peer, session);
                    return Ok(response);
                }
                // The node closed the idle session, or its connection dropped, before an
                // answer began: a new session asks again.
                Err(Failure::Failed(RequestError::ConnectionClosed)) => {}
                Err(failure) => return Err(failure),
            }
        }
        let mut session = self.open(p2p, peer).await?;
        match self.exchange(&mut session, request).await {
            Ok(response) => {
                self.keep(peer, session);
                Ok(response)
            }
            Err(Failure::Failed(RequestError::ConnectionClosed)) => Err(Failure::NotTaken),
            Err(failure) => Err(failure),
        }
    }

    async fn exchange(
        &self,
        session: &mut Stream,
        request: &[u8],
    ) -> Result<pb::ClientResponse, Failure> {
        let exchange = async {
            send_frame(session, request, self.max_message).await?;
            decode(&read_frame(session, self.max_message).await?)
        };
        match timeout(self.timeout, exchange).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(Failure::Failed(RequestError::Timeout)),
        }
    }

    /// A new session. The swarm connects first (with the addresses it knows, saying why it
    /// cannot): libp2p-stream would dial on its own, without them.
    async fn open(&self, p2p: &P2p, peer: PeerId) -> Result<Stream, Failure> {
        p2p.dial(peer, None).await.map_err(Failure::Failed)?;
        let mut control = self.control.clone();
        match timeout(self.timeout, control.open_stream(peer, SESSION)).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(OpenStreamError::UnsupportedProtocol(_))) => Err(Failure::Unsupported),
            Ok(Err(OpenStreamError::Io(error))) => Err(error.into()),
            Ok(Err(_)) => Err(Failure::Failed(RequestError::Stream(io::ErrorKind::Other))),
            Err(_) => Err(Failure::Failed(RequestError::Timeout)),
        }
    }

    /// The most recently used idle session with `peer`; those idle too long are dropped.
    fn take_idle(&self, peer: PeerId) -> Option<Stream> {
        let mut idle = lock(&self.idle);
        let sessions = idle.get_mut(&peer)?;
        let now = Instant::now();
        sessions.retain(|(_, since)| now.duration_since(*since) < KEEP_IDLE);
        let session = sessions.pop().map(|(session, _)| session);
        if sessions.is_empty() {
            idle.remove(&peer);
        }
        session
    }

    fn keep(&self, peer: PeerId, session: Stream) {
        let mut idle = lock(&self.idle);
        let sessions = idle.entry(peer).or_default();
        if sessions.len() < MAX_IDLE {
            sessions.push((session, Instant::now()));
        }
    }
}
