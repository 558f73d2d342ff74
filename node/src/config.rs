//! Node settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use alloy_primitives::Address;
use rill_p2p::Multiaddr;
use rill_p2p::limits::Rate;

/// How much one client (one libp2p peer) may ask of this node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientLimits {
    /// Requests per second (an `AddEvents` costs its number of events), refused
    /// `RATE_LIMITED` beyond it at the network's edge; `None`: no limit.
    pub requests: Option<Rate>,
    /// Stream creations (each costs this node gas), refused `QUOTA_EXCEEDED` beyond it;
    /// `None`: no limit.
    pub stream_creations: Option<Rate>,
    /// Events per stream that this node took from clients and that its replicas do not all
    /// hold yet (a quorum, and every replica heard from lately); further adds wait for room,
    /// then are refused `UNAVAILABLE`. `None`: no limit (clients may outrun the replicas).
    pub unreplicated: Option<usize>,
}

/// Events per stream awaiting their replicas that a node takes from clients, by default:
/// small enough that a replica which falls behind slows the writers within about a second
/// at the rates one stream reaches on the devnet, large enough that it cost no throughput
/// there (BENCHMARKS.md, "Pacing writers to the slowest live replica").
pub const DEFAULT_UNREPLICATED: usize = 512;

/// Stream creations one client may make per hour by default.
pub const DEFAULT_STREAM_CREATIONS_PER_HOUR: f64 = 1_000.0;

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            requests: Some(Rate::per_second(rill_p2p::DEFAULT_CLIENT_RATE)),
            stream_creations: Some(Rate::per_hour(DEFAULT_STREAM_CREATIONS_PER_HOUR)),
            unreplicated: Some(DEFAULT_UNREPLICATED),
        }
    }
}

/// What `rill-node run` is told.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node key file.
    pub key_file: PathBuf,
    /// The sled data directory.
    pub data_dir: PathBuf,
    /// Where to listen (libp2p multiaddr).
    pub listen: Multiaddr,
    /// The chain's JSON-RPC endpoint.
    pub rpc_url: String,
    /// The registry contract.
    pub registry: Address,
    /// Where to serve Prometheus metrics, if anywhere (port 0 picks one).
    pub metrics: Option<SocketAddr>,
    /// The chain's block time (a registration batch waits at most half of it).
    pub block_time: Duration,
    /// How often the chain is polled for new blocks.
    pub poll_interval: Duration,
    /// Act on a block only once this many blocks are on top of it (a chain that reorganizes).
    pub confirmations: u64,
    /// How many streams stay in memory, and for how long when idle.
    pub residency: crate::Residency,
    /// How much one client may ask.
    pub client_limits: ClientLimits,
    /// As leader, chain a candidate on one still waiting for its registration
    /// (`EngineConfig::chain_candidates`).
    pub chain_candidates: bool,
    /// How long after a promotion its events are settled into its own parts in the store
    /// (rill-store's `settle.rs`): past the burst of work each chain block brings.
    pub settle_after: Duration,
    /// How long after its arrival a client's add waits for the acknowledgement it asked for
    /// (a quorum, or its miniblock) before it is answered `TIMEOUT`: inside a client's 40 s
    /// request timeout, so the answer is a typed one unless the node's loop or disk stalls
    /// for the difference.
    pub ack_timeout: Duration,
    /// Fault rules for tests (only with the `faults` feature).
    #[cfg(feature = "faults")]
    pub faults: Option<crate::faults::Faults>,
}

/// How long a client's add waits for its acknowledgement by default (`NodeConfig::ack_timeout`).
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

impl NodeConfig {
    /// Settings with the defaults for everything but where the node's key, data, network and
    /// chain are.
    pub fn new(
        key_file: PathBuf,
        data_dir: PathBuf,
        listen: Multiaddr,
        rpc_url: String,
        registry: Address,
    ) -> Self {
        Self {
            key_file,
            data_dir,
            listen,
            rpc_url,
            registry,
            metrics: None,
            block_time: Duration::from_secs(1),
            poll_interval: Duration::from_millis(100),
            confirmations: 0,
            residency: crate::Residency::default(),
            client_limits: ClientLimits::default(),
            chain_candidates: false,
            settle_after: crate::writer::DEFAULT_SETTLE_AFTER,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            #[cfg(feature = "faults")]
            faults: None,
        }
    }
}
