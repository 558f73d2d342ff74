//! `rill`: the Rill command-line client.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// `println!` for the CLI's output (see [`print_line`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::print_line(format_args!($($arg)*))
    };
}

mod views;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use rill_client::{Client, DevnetFile};
use rill_p2p::Multiaddr;
use rill_protocol::{NodeKey, ParsedEvent, Payload, StreamId, pb};
use serde::Serialize;
use serde_json::json;
use views::{EventView, InfoView, MiniblockView, StreamView, hex0x};

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
        /// Who may join: anyone by themselves (open), or only those a member adds (invite).
        #[arg(long, value_enum, default_value_t = Policy::Open)]
        policy: Policy,
        /// An admin, who may remove other members (repeat for more; default: you).
        #[arg(long = "admin", value_name = "ADDR")]
        admins: Vec<alloy_primitives::Address>,
    },
    /// Show the stream as the node holds it: by default its last miniblocks and its minipool.
    Get {
        /// The stream id.
        stream: StreamId,
        /// Show this many of the last miniblocks (with the minipool).
        #[arg(long, default_value_t = 10, conflicts_with_all = ["from", "all"])]
        last: u64,
        /// Show miniblocks from this number on (paging through them).
        #[arg(long)]
        from: Option<u64>,
        /// ...up to this number (default: the head).
        #[arg(long, requires = "from")]
        to: Option<u64>,
        /// Show every miniblock, paging through the whole stream.
        #[arg(long)]
        all: bool,
    },
    /// Print events and miniblocks as they happen (Ctrl-C to stop).
    Watch {
        /// The stream id.
        stream: StreamId,
        /// Show each promoted miniblock from its header alone (the node sends no envelopes
        /// again: the events were shown when they were admitted).
        #[arg(long)]
        headers_only: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Policy {
    /// Anyone may join by themselves; members may add others.
    Open,
    /// Only a member may add someone.
    Invite,
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
    /// Add a text message, or one per line of a file (`-`: standard input), sent in batches
    /// of up to 1,000 events per request. Prints each event's hash, or why it was refused.
    Add {
        /// The stream id.
        stream: StreamId,
        /// The text.
        #[arg(required_unless_present = "file")]
        text: Option<String>,
        /// Add each non-empty line of this file as a message instead.
        #[arg(long, conflicts_with = "text")]
        file: Option<PathBuf>,
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
    /// Add someone to a stream (you must be a member; the way into an invite-only stream).
    Add {
        /// The stream id.
        stream: StreamId,
        /// The address to add.
        address: alloy_primitives::Address,
    },
    /// Remove a member from a stream (you must be one of its admins).
    Remove {
        /// The stream id.
        stream: StreamId,
        /// The member to remove.
        address: alloy_primitives::Address,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// The node's address, peer id, peers, streams, minipools, miniblocks and chain head.
    Info {
        /// Also list the ids of the streams it holds.
        #[arg(long)]
        streams: bool,
    },
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
    let devnet = DevnetFile::load(&cli.devnet)?;
    let node = devnet
        .nodes
        .first()
        .with_context(|| format!("{} lists no node", DevnetFile::path(&cli.devnet).display()))?;
    Ok(node.multiaddr.parse()?)
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

/// Prints a line of output. A reader that stopped (`rill stream get S | head`) ends the CLI
/// quietly, as it does other command-line tools; `println!` would panic.
fn print_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: writing the output: {e}");
            std::process::exit(1);
        }
    }
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
                out!(
                    "{}",
                    json!({ "address": key.address().to_string(), "key": path })
                );
            } else {
                out!("{} {}", key.address(), path.display());
            }
        }
        Command::Stream(StreamCommand::Create { id, policy, admins }) => {
            let client = connect(&cli).await?;
            let settings = pb::StreamSettings {
                join_policy: match policy {
                    Policy::Open => pb::JoinPolicy::Open,
                    Policy::Invite => pb::JoinPolicy::Invite,
                } as i32,
                admins: admins.iter().map(|a| a.to_vec()).collect(),
                ..Default::default()
            };
            let created = client.create_stream_with(*id, settings).await?;
            let stream = hex0x(&created.stream_id);
            if cli.json {
                let nodes: Vec<String> = created.nodes.iter().map(|n| hex0x(n)).collect();
                out!(
                    "{}",
                    json!({ "stream_id": stream, "genesis_hash": hex0x(&created.genesis_hash), "nodes": nodes })
                );
            } else {
                out!("{stream}");
            }
        }
        Command::Stream(StreamCommand::Get {
            stream,
            last,
            from,
            to,
            all,
        }) => {
            let client = connect(&cli).await?;
            let got = match (all, from) {
                (true, _) => client.get_stream(*stream).await?,
                (false, Some(from)) => {
                    client
                        .get_stream_range(*stream, *from, to.unwrap_or(0))
                        .await?
                }
                (false, None) => {
                    let head = client.get_stream_page(*stream, true, 0, 0).await?.head_num;
                    let from = head.saturating_sub(last.saturating_sub(1));
                    client.get_stream_range(*stream, from, 0).await?
                }
            };
            let view = StreamView::new(&got);
            if cli.json {
                print_json(&view);
            } else {
                view.print();
            }
        }
        Command::Stream(StreamCommand::Watch {
            stream,
            headers_only,
        }) => {
            let client = connect(&cli).await?;
            let mut after = 0;
            // The first poll returns at once: from it on the node keeps the stream's updates
            // for us, so nothing that happens after the line below is missed.
            let mut wait_ms = 0;
            loop {
                let batch = if *headers_only {
                    client.watch_headers(*stream, after, wait_ms).await?
                } else {
                    client.watch(*stream, after, wait_ms).await?
                };
                if wait_ms == 0 {
                    eprintln!("watching stream {stream} (Ctrl-C to stop)");
                    wait_ms = 20_000;
                }
                for update in batch.updates {
                    after = after.max(update.seq);
                    let seq = update.seq;
                    match update.kind {
                        Some(pb::stream_update::Kind::Event(e)) => {
                            let event = EventView::new(&e);
                            if cli.json {
                                print_json(&json!({ "seq": seq, "event": event }));
                            } else {
                                out!("event     {}", event.line());
                            }
                        }
                        Some(pb::stream_update::Kind::Miniblock(m)) => {
                            print_miniblock(seq, &MiniblockView::new(&m), cli.json);
                        }
                        Some(pb::stream_update::Kind::MiniblockHeader(header)) => {
                            let m = pb::Miniblock {
                                header: Some(header),
                                events: Vec::new(),
                            };
                            print_miniblock(seq, &MiniblockView::new(&m), cli.json);
                        }
                        None => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Command::Event(EventCommand::Add {
            stream,
            text,
            file,
            wait,
        }) => {
            let client = connect(&cli).await?;
            match (text, file) {
                (Some(text), _) => {
                    let (event, response) = client.add_message(*stream, text, ack(*wait)).await?;
                    print_added(cli.json, &event, response.miniblock_num);
                }
                (None, Some(file)) => add_lines(&cli, &client, *stream, file, ack(*wait)).await?,
                (None, None) => unreachable!("clap requires a text or a file"),
            }
        }
        Command::Member(command) => {
            let client = connect(&cli).await?;
            let (stream, join, address) = match command {
                MemberCommand::Join { stream } => (stream, true, client.address()),
                MemberCommand::Leave { stream } => (stream, false, client.address()),
                MemberCommand::Add { stream, address } => (stream, true, *address),
                MemberCommand::Remove { stream, address } => (stream, false, *address),
            };
            let (event, response) = client
                .member(*stream, join, address, pb::Ack::Miniblock)
                .await?;
            print_added(cli.json, &event, response.miniblock_num);
        }
        Command::Node(NodeCommand::Info { streams }) => {
            let client = connect(&cli).await?;
            let view = InfoView::new(client.info(*streams).await?);
            if cli.json {
                print_json(&view);
            } else {
                view.print();
            }
        }
    }
    Ok(())
}

/// One promoted miniblock of a watch.
fn print_miniblock(seq: u64, miniblock: &MiniblockView, json_out: bool) {
    if json_out {
        print_json(&json!({ "seq": seq, "miniblock": miniblock }));
    } else {
        out!(
            "miniblock #{} {} ({} events)",
            miniblock.num,
            miniblock.hash,
            miniblock.event_count
        );
    }
}

fn print_json(value: &impl Serialize) {
    out!("{}", serde_json::to_string(value).expect("views serialize"));
}

fn print_added(json_out: bool, event: &ParsedEvent, miniblock: Option<u64>) {
    let hash = hex0x(event.hash().as_slice());
    if json_out {
        print_json(&json!({ "hash": hash, "miniblock": miniblock }));
    } else {
        match miniblock {
            Some(num) => out!("{hash} in miniblock {num}"),
            None => out!("{hash}"),
        }
    }
}

/// `rill event add --file`: each non-empty line a message, in batches; one output line per
/// event, and an error at the end if any was refused.
async fn add_lines(
    cli: &Cli,
    client: &Client,
    stream: StreamId,
    file: &Path,
    ack: pb::Ack,
) -> anyhow::Result<()> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut refused = 0;
    for chunk in lines.chunks(rill_client::MAX_EVENTS_PER_REQUEST) {
        let payloads = chunk
            .iter()
            .map(|line| {
                Payload::Message(pb::Message {
                    data: line.as_bytes().to_vec(),
                })
            })
            .collect();
        for added in client.add_batch(stream, payloads, ack).await? {
            match added.result {
                Ok(miniblock) => print_added(cli.json, &added.event, miniblock),
                Err(e) => {
                    refused += 1;
                    let hash = hex0x(added.event.hash().as_slice());
                    if cli.json {
                        print_json(&json!({ "hash": hash, "error": e.to_string() }));
                    } else {
                        out!("{hash} refused: {e}");
                    }
                }
            }
        }
    }
    if refused > 0 {
        bail!("{refused} of {} events were refused", lines.len());
    }
    Ok(())
}
