//! Client sessions (`/rill/client-session/1`): one substream a client keeps open to a node and
//! sends its requests over, one at a time, each a frame answered by a frame. A request over
//! `/rill/client/1` opens a substream of its own, and closes it, with a timer for it on each
//! side; at one event per request that is most of what a client's add costs the transport.
//! The messages, their limits and the node's answers are the same on both protocols.
//!
//! The node's side ([`serve`]) runs one task per session, which hands each request to the
//! node as a [`NetworkEvent::ClientRequest`](crate::NetworkEvent::ClientRequest) and writes
//! the answer; the client's side ([`Sessions`]) keeps idle sessions per peer and opens more
//! when all are busy.

mod pool;
mod serve;

use std::time::Duration;

use libp2p::StreamProtocol;

pub(crate) use pool::Sessions;
pub(crate) use serve::{Server, serve};

/// The client session protocol.
pub(crate) const SESSION: StreamProtocol = StreamProtocol::new("/rill/client-session/1");

/// How long a client keeps an idle session for its next request (a node keeps it for
/// [`P2pConfig::session_idle`](crate::P2pConfig::session_idle), two minutes by default).
pub(crate) const KEEP_IDLE: Duration = Duration::from_secs(60);
