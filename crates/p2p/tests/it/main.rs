//! rill-p2p over real sockets on 127.0.0.1, several swarms in one process.

mod gating;
mod gossip;
mod malformed;
mod sessions;
mod support;
