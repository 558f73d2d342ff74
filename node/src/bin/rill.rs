//! `rill`: the Rill command-line client.

use std::path::PathBuf;
use std::time::Duration;

use alloy_primitives::{Address, B256};
use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use prost::Message as _;
use rill_client::Client;
use rill_p2p::Multiaddr;
use rill_protocol::{Limits, NodeKey, ParsedEvent, Payload, StreamId, pb};
use serde_json::json;

#[derive(Parser)]
#[command(
    version,
    about = "Talk to a Rill network: create streams, add events, watch them"
)]
struct Cli {
    /// Devnet directory: use the first node of DIR/devnet.json.
    #[arg(long, global = true, default_value = ".devnet")]
    devnet: PathBuf,
    /// Talk to exactly this node (a multiaddr ending in /p2p/<peer id>).
    #[arg(long, global = true, env = "RILL_NODE")]
    node: Option<Multiaddr>,
    /// The client's signing key (created on first use if missing).
    #[arg(long, global = true, env = "RILL_CLIENT_KEY")]
    key: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a signing key.
    Keygen {
        /// Where to write it (default: the --key path).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Streams.
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Events.
    #[command(subcommand)]
    Event(EventCommand),
    /// Membership.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Nodes.
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Subcommand)]
enum StreamCommand {
    /// Create a stream; you join it in its genesis miniblock. Prints its id.
    Create {
        /// The id (64 hex digits); random if omitted.
        #[arg(long)]
        id: Option<StreamId>,
    },
    /// Show the stream as the node holds it.
    Get {
        /// The stream id.
        stream: StreamId,
    },
    /// Print events and miniblocks as they happen (Ctrl-C to stop).
    Watch {
        /// The stream id.
        stream: StreamId,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Wait {
    /// Stored by the node you talk to.
    Local,
    /// Held by more than half of the stream's nodes.
    Quorum,
    /// In a registered, promoted miniblock.
    Miniblock,
}

#[derive(Subcommand)]
enum EventCommand {
    /// Add a text message. Prints its hash.
    Add {
        /// The stream id.
        stream: StreamId,
        /// The text.
        text: String,
        /// How long to wait.
        #[arg(long, value_enum, default_value_t = Wait::Quorum)]
        wait: Wait,
    },
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Join a stream (you may post once the join's miniblock is promoted).
    Join {
        /// The stream id.
        stream: StreamId,
    },
    /// Leave a stream.
    Leave {
        /// The stream id.
        stream: StreamId,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// The node's address, peer id, peers, streams and chain head.
    Info,
}

fn default_key_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("rill").join("client.key")
}

fn node_addr(cli: &Cli) -> anyhow::Result<Multiaddr> {
    if let Some(node) = &cli.node {
        return Ok(node.clone());
    }
    let path = cli.devnet.join("devnet.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no devnet at {} (start one with `scripts/devnet up`, or pass --node MULTIADDR)",
            path.display()
        )
    })?;
    let devnet: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a devnet file", path.display()))?;
    let addr = devnet["nodes"][0]["multiaddr"]
        .as_str()
        .with_context(|| format!("{} lists no node", path.display()))?;
    Ok(addr.parse()?)
}

fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

fn describe(event: &ParsedEvent) -> (&'static str, String) {
    match event.payload() {
        Payload::Inception(_) => ("inception", String::new()),
        Payload::Member(m) => {
            let join = m.op() == pb::member::Op::Join;
            (if join { "join" } else { "leave" }, hex0x(&m.address))
        }
        Payload::Message(m) => ("message", String::from_utf8_lossy(&m.data).into_owned()),
        Payload::MiniblockHeader(_) => ("header", String::new()),
    }
}

fn event_json(envelope: &pb::Envelope) -> serde_json::Value {
    match ParsedEvent::open(
        envelope.clone(),
        &Limits {
            max_event_bytes: usize::MAX / 2,
        },
    ) {
        Ok(event) => {
            let (kind, text) = describe(&event);
            json!({
                "hash": hex0x(event.hash().as_slice()),
                "creator": hex0x(event.creator().as_slice()),
                "kind": kind,
                "text": text,
                "envelope": hex0x(&envelope.encode_to_vec()),
            })
        }
        Err(e) => json!({ "hash": hex0x(&envelope.hash), "error": e.to_string() }),
    }
}

fn miniblock_json(miniblock: &pb::Miniblock) -> serde_json::Value {
    let header = miniblock.header.clone().unwrap_or_default();
    let fields = pb::StreamEvent::decode(header.event.as_slice()).ok();
    let producer = fields
        .as_ref()
        .map(|f| hex0x(&f.creator))
        .unwrap_or_default();
    let (num, prev) = match fields.and_then(|f| f.payload) {
        Some(Payload::MiniblockHeader(h)) => (h.num, h.prev_hash),
        _ => (0, vec![]),
    };
    let prev = if prev.is_empty() {
        B256::ZERO.to_vec()
    } else {
        prev
    };
    json!({
        "num": num,
        "hash": hex0x(&header.hash),
        "prev_hash": hex0x(&prev),
        "producer": producer,
        "events": miniblock.events.iter().map(event_json).collect::<Vec<_>>(),
    })
}

fn ack(wait: Wait) -> pb::Ack {
    match wait {
        Wait::Local => pb::Ack::Local,
        Wait::Quorum => pb::Ack::Quorum,
        Wait::Miniblock => pb::Ack::Miniblock,
    }
}

async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let key_path = cli.key.clone().unwrap_or_else(default_key_path);
    let (key, created) = NodeKey::load_or_generate(&key_path)
        .with_context(|| format!("client key {}", key_path.display()))?;
    if created {
        eprintln!(
            "created client key {} ({})",
            key_path.display(),
            key.address()
        );
    }
    let addr = node_addr(cli)?;
    Client::connect(addr.clone(), key)
        .await
        .with_context(|| format!("connecting to {addr}"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Keygen { out } => {
            let path = out
                .clone()
                .or_else(|| cli.key.clone())
                .unwrap_or_else(default_key_path);
            if path.exists() {
                bail!(
                    "{} already exists; refusing to overwrite a key",
                    path.display()
                );
            }
            let key = NodeKey::generate();
            key.save(&path)?;
            if cli.json {
                println!(
                    "{}",
                    json!({ "address": key.address().to_string(), "key": path })
                );
            } else {
                println!("{} {}", key.address(), path.display());
            }
        }
        Command::Stream(StreamCommand::Create { id }) => {
            let client = connect(&cli).await?;
            let created = client.create_stream(*id).await?;
            let stream = hex0x(&created.stream_id);
            if cli.json {
                let nodes: Vec<String> = created.nodes.iter().map(|n| hex0x(n)).collect();
                println!(
                    "{}",
                    json!({ "stream_id": stream, "genesis_hash": hex0x(&created.genesis_hash), "nodes": nodes })
                );
            } else {
                println!("{stream}");
            }
        }
        Command::Stream(StreamCommand::Get { stream }) => {
            let client = connect(&cli).await?;
            let got = client.get_stream(*stream).await?;
            let value = json!({
                "stream_id": hex0x(&got.stream_id),
                "served_by": hex0x(&got.served_by),
                "nodes": got.nodes.iter().map(|n| hex0x(n)).collect::<Vec<_>>(),
                "miniblocks": got.miniblocks.iter().map(miniblock_json).collect::<Vec<_>>(),
                "minipool": got.minipool.iter().map(|e| hex0x(&e.hash)).collect::<Vec<_>>(),
            });
            if cli.json {
                println!("{value}");
            } else {
                println!(
                    "stream    {}\nserved by {}",
                    value["stream_id"], value["served_by"]
                );
                for mb in got.miniblocks.iter().map(miniblock_json) {
                    println!(
                        "miniblock #{} {} by {}",
                        mb["num"],
                        mb["hash"].as_str().unwrap_or(""),
                        mb["producer"].as_str().unwrap_or("")
                    );
                    for e in mb["events"].as_array().into_iter().flatten() {
                        println!(
                            "  {} {} {}",
                            e["kind"].as_str().unwrap_or(""),
                            e["creator"].as_str().unwrap_or(""),
                            e["text"].as_str().unwrap_or("")
                        );
                    }
                }
                println!("minipool  {} event(s)", got.minipool.len());
            }
        }
        Command::Stream(StreamCommand::Watch { stream }) => {
            let client = connect(&cli).await?;
            let mut after = 0;
            loop {
                let batch = client.watch(*stream, after, 20_000).await?;
                for update in batch.updates {
                    after = after.max(update.seq);
                    let value = match update.kind {
                        Some(pb::stream_update::Kind::Event(e)) => {
                            json!({ "seq": update.seq, "event": event_json(&e) })
                        }
                        Some(pb::stream_update::Kind::Miniblock(m)) => {
                            json!({ "seq": update.seq, "miniblock": miniblock_json(&m) })
                        }
                        None => continue,
                    };
                    if cli.json {
                        println!("{value}");
                    } else if let Some(e) = value.get("event") {
                        println!(
                            "event     {} {} {}",
                            e["kind"].as_str().unwrap_or(""),
                            e["creator"].as_str().unwrap_or(""),
                            e["text"].as_str().unwrap_or("")
                        );
                    } else {
                        let m = &value["miniblock"];
                        println!(
                            "miniblock #{} {} ({} events)",
                            m["num"],
                            m["hash"].as_str().unwrap_or(""),
                            m["events"].as_array().map_or(0, Vec::len)
                        );
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Command::Event(EventCommand::Add { stream, text, wait }) => {
            let client = connect(&cli).await?;
            let (event, response) = client.add_message(*stream, text, ack(*wait)).await?;
            print_added(cli.json, &event, &response);
        }
        Command::Member(command) => {
            let (stream, join) = match command {
                MemberCommand::Join { stream } => (stream, true),
                MemberCommand::Leave { stream } => (stream, false),
            };
            let client = connect(&cli).await?;
            let (event, response) = client.membership(*stream, join, pb::Ack::Miniblock).await?;
            print_added(cli.json, &event, &response);
        }
        Command::Node(NodeCommand::Info) => {
            let client = connect(&cli).await?;
            let info = client.info().await?;
            let address = Address::try_from(info.address.as_slice()).unwrap_or_default();
            let streams: Vec<String> = info.streams.iter().map(|s| hex0x(s)).collect();
            if cli.json {
                println!(
                    "{}",
                    json!({ "address": address.to_string(), "peer_id": info.peer_id, "peers": info.peers, "streams": streams, "chain_head": info.chain_head, "version": info.version })
                );
            } else {
                println!(
                    "address    {address}\npeer id    {}\npeers      {}\nstreams    {}\nchain head {}",
                    info.peer_id,
                    info.peers.len(),
                    streams.len(),
                    info.chain_head
                );
                for s in streams {
                    println!("  {s}");
                }
            }
        }
    }
    Ok(())
}

fn print_added(json_out: bool, event: &ParsedEvent, response: &pb::AddEventResponse) {
    let hash = hex0x(event.hash().as_slice());
    if json_out {
        println!(
            "{}",
            json!({ "hash": hash, "miniblock": response.miniblock_num })
        );
    } else {
        match response.miniblock_num {
            Some(num) => println!("{hash} in miniblock {num}"),
            None => println!("{hash}"),
        }
    }
}
