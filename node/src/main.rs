//! `rill-node`: runs a Rill node, or makes its key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use alloy_primitives::Address;
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rill_node::NodeConfig;
use rill_p2p::Multiaddr;
use rill_protocol::NodeKey;

/// The node's allocator on Linux (glibc targets): jemalloc, as the Rust networking nodes run it.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
mod allocator {
    /// A loaded node allocates and frees small buffers at a high rate (envelopes, gossip
    /// batches, sled's pages): glibc's malloc and free were about a tenth of a loaded devnet's
    /// CPU in its profile. The devnet's admitted rate with either allocator is within this
    /// machine's noise (BENCHMARKS.md).
    #[global_allocator]
    static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

    /// jemalloc's options, read once at its start (`_RJEM_MALLOC_CONF` in the environment
    /// still overrides them): a background thread returns freed pages to the system within
    /// about a second, instead of after ten seconds and only when the node next allocates.
    /// Without it a restarted node holding 7,500 idle streams kept the pages its start-up had
    /// freed: 1,907 B of RSS per held stream against 1,366 B with these options and 1,522 B
    /// with glibc's malloc (BENCHMARKS.md).
    #[unsafe(export_name = "_rjem_malloc_conf")]
    static MALLOC_CONF: MallocConf =
        MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

    /// A C string pointer that jemalloc reads before `main`; never written.
    #[repr(transparent)]
    struct MallocConf(*const std::ffi::c_char);

    // SAFETY: the pointer is to a static, immutable C string.
    unsafe impl Sync for MallocConf {}
}

#[derive(Parser)]
#[command(version, about = "A Rill stream node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of `Run` costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the node until SIGINT or SIGTERM.
    Run {
        /// The node key file (`rill-node keygen` makes one).
        #[arg(long, env = "RILL_KEY")]
        key: PathBuf,
        /// The data directory (sled).
        #[arg(long, env = "RILL_DATA")]
        data: PathBuf,
        /// The libp2p listen address.
        #[arg(long, env = "RILL_LISTEN", default_value = "/ip4/0.0.0.0/tcp/7600")]
        listen: Multiaddr,
        /// The chain's JSON-RPC URL.
        #[arg(long, env = "RILL_RPC_URL", default_value = "http://127.0.0.1:8545")]
        rpc_url: String,
        /// The registry contract address.
        #[arg(long, env = "RILL_REGISTRY")]
        registry: Address,
        /// Serve Prometheus metrics on this address.
        #[arg(long, env = "RILL_METRICS")]
        metrics: Option<SocketAddr>,
        /// The chain's block time in seconds (a registration batch waits at most half of it).
        #[arg(long, env = "RILL_BLOCK_TIME", default_value_t = 1.0)]
        block_time: f64,
        /// How often the chain is polled for a new block, in seconds (a public RPC may want
        /// less than the default's ten calls a second).
        #[arg(long, env = "RILL_CHAIN_POLL", default_value_t = 0.1)]
        chain_poll: f64,
        /// Act on a block only once this many blocks are on top of it: on a chain that can
        /// reorganize, a depth it will not reorganize past (finality is delayed by as many
        /// block times).
        #[arg(long, env = "RILL_CONFIRMATIONS", default_value_t = 0)]
        confirmations: u64,
        /// At most this many streams in memory (idle ones beyond it are evicted).
        #[arg(long, env = "RILL_MAX_LOADED_STREAMS", default_value_t = 10_000)]
        max_loaded_streams: usize,
        /// Evict a stream from memory after this many seconds idle.
        #[arg(long, env = "RILL_EVICT_IDLE_AFTER", default_value_t = 60.0)]
        evict_idle_after: f64,
        /// Requests per second one client may send (an `AddEvents` counts its events), with
        /// two seconds' worth at once; 0: no limit.
        #[arg(long, env = "RILL_CLIENT_RATE", default_value_t = rill_p2p::DEFAULT_CLIENT_RATE)]
        client_rate: f64,
        /// Streams one client may create per hour (all at once if it has not created any);
        /// 0: no limit.
        #[arg(long, env = "RILL_CLIENT_STREAM_CREATIONS", default_value_t = rill_node::DEFAULT_STREAM_CREATIONS_PER_HOUR)]
        client_stream_creations: f64,
        /// Events per stream that this node took from clients and its replicas do not all
        /// hold yet (a quorum, and every replica heard from in the last 3 s); more adds wait
        /// (up to 5 s, then `UNAVAILABLE`) so clients keep to the pace of the stream's slowest
        /// live replica; 0: no limit.
        #[arg(long, env = "RILL_MAX_UNREPLICATED", default_value_t = rill_node::DEFAULT_UNREPLICATED)]
        max_unreplicated: usize,
        /// As leader, cut the next candidate on one still waiting for its registration
        /// instead of waiting for its promotion (replicas accept chained candidates either way).
        #[arg(long, env = "RILL_CHAIN_CANDIDATES", default_value_t = false, action = clap::ArgAction::Set)]
        chain_candidates: bool,
        /// Milliseconds after a promotion that the store settles its events into the
        /// miniblock's own parts, past the burst of work each chain block brings (until then
        /// they are read from where its candidate kept them).
        #[arg(long, env = "RILL_SETTLE_AFTER_MS", default_value_t = rill_node::DEFAULT_SETTLE_AFTER.as_millis() as u64)]
        settle_after_ms: u64,
    },
    /// Create a node key file (mode 0600) and print its address and peer id.
    Keygen {
        /// Where to write the key.
        #[arg(long, default_value = "node.key")]
        out: PathBuf,
    },
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Keygen { out } => {
            let key = NodeKey::generate();
            key.save(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "address {}\npeer_id {}\nkey     {}",
                key.address(),
                key.peer_id(),
                out.display()
            );
            Ok(())
        }
        Command::Run {
            key,
            data,
            listen,
            rpc_url,
            registry,
            metrics,
            block_time,
            chain_poll,
            confirmations,
            max_loaded_streams,
            evict_idle_after,
            client_rate,
            client_stream_creations,
            max_unreplicated,
            chain_candidates,
            settle_after_ms,
        } => {
            let mut config = NodeConfig::new(key, data, listen, rpc_url, registry);
            config.metrics = metrics;
            config.block_time = Duration::from_secs_f64(block_time);
            config.poll_interval = Duration::from_secs_f64(chain_poll);
            config.confirmations = confirmations;
            config.residency = rill_node::Residency {
                max_loaded: max_loaded_streams,
                evict_idle_after: Duration::from_secs_f64(evict_idle_after),
            };
            config.client_limits = rill_node::ClientLimits {
                requests: (client_rate > 0.0).then(|| rill_node::Rate::per_second(client_rate)),
                stream_creations: (client_stream_creations > 0.0)
                    .then(|| rill_node::Rate::per_hour(client_stream_creations)),
                unreplicated: (max_unreplicated > 0).then_some(max_unreplicated),
            };
            config.chain_candidates = chain_candidates;
            config.settle_after = Duration::from_millis(settle_after_ms);
            #[cfg(feature = "faults")]
            if let Ok(spec) = std::env::var("RILL_FAULTS") {
                config.faults = Some(rill_node::faults::Faults::parse(&spec)?);
                tracing::warn!(%spec, "fault injection is on");
            }
            Ok(rill_node::run(config, shutdown_signal()).await?)
        }
    }
}
