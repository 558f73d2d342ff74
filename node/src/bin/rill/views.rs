//! What the CLI prints: typed views of events, miniblocks, streams and nodes, serialized for
//! `--json` and written out as text otherwise.

use alloy_primitives::{Address, B256};
use prost::Message as _;
use rill_protocol::{Limits, ParsedEvent, Payload, pb};
use serde::Serialize;

pub(crate) fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// An event as the CLI shows it.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum EventView {
    Opened {
        hash: String,
        creator: String,
        kind: &'static str,
        text: String,
        envelope: String,
    },
    /// An envelope that does not open (shown, not trusted).
    Unopened { hash: String, error: String },
}

impl EventView {
    pub(crate) fn new(envelope: &pb::Envelope) -> Self {
        let limits = Limits {
            max_event_bytes: usize::MAX / 2,
        };
        match ParsedEvent::open(envelope.clone(), &limits) {
            Ok(event) => {
                let (kind, text) = describe(&event);
                EventView::Opened {
                    hash: hex0x(event.hash().as_slice()),
                    creator: hex0x(event.creator().as_slice()),
                    kind,
                    text,
                    envelope: hex0x(&envelope.encode_to_vec()),
                }
            }
            Err(e) => EventView::Unopened {
                hash: hex0x(&envelope.hash),
                error: e.to_string(),
            },
        }
    }

    pub(crate) fn line(&self) -> String {
        match self {
            EventView::Opened {
                kind,
                creator,
                text,
                ..
            } => format!("{kind} {creator} {text}"),
            EventView::Unopened { hash, error } => format!("unreadable {hash}: {error}"),
        }
    }
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

/// A miniblock as the CLI shows it.
#[derive(Serialize)]
pub(crate) struct MiniblockView {
    pub(crate) num: u64,
    pub(crate) hash: String,
    pub(crate) prev_hash: String,
    pub(crate) producer: String,
    pub(crate) timestamp_ms: u64,
    /// The events its header names (`events` is empty for a header alone).
    pub(crate) event_count: usize,
    pub(crate) events: Vec<EventView>,
}

impl MiniblockView {
    pub(crate) fn new(miniblock: &pb::Miniblock) -> Self {
        let header = miniblock.header.clone().unwrap_or_default();
        let fields = pb::StreamEvent::decode(header.event.as_slice()).ok();
        let producer = fields
            .as_ref()
            .map(|f| hex0x(&f.creator))
            .unwrap_or_default();
        let (num, prev, timestamp_ms, event_count) = match fields.and_then(|f| f.payload) {
            Some(Payload::MiniblockHeader(h)) => {
                (h.num, h.prev_hash, h.timestamp_ms, h.event_hashes.len())
            }
            _ => (0, vec![], 0, 0),
        };
        let prev = if prev.is_empty() {
            B256::ZERO.to_vec()
        } else {
            prev
        };
        Self {
            num,
            hash: hex0x(&header.hash),
            prev_hash: hex0x(&prev),
            producer,
            timestamp_ms,
            event_count,
            events: miniblock.events.iter().map(EventView::new).collect(),
        }
    }

    pub(crate) fn line(&self) -> String {
        format!("miniblock #{} {} by {}", self.num, self.hash, self.producer)
    }
}

/// A stream (or a page of it) as the CLI shows it.
#[derive(Serialize)]
pub(crate) struct StreamView {
    pub(crate) stream_id: String,
    pub(crate) served_by: String,
    pub(crate) nodes: Vec<String>,
    pub(crate) miniblocks: Vec<MiniblockView>,
    pub(crate) minipool: Vec<String>,
}

impl StreamView {
    pub(crate) fn new(got: &pb::GetStreamResponse) -> Self {
        Self {
            stream_id: hex0x(&got.stream_id),
            served_by: hex0x(&got.served_by),
            nodes: got.nodes.iter().map(|n| hex0x(n)).collect(),
            miniblocks: got.miniblocks.iter().map(MiniblockView::new).collect(),
            minipool: got.minipool.iter().map(|e| hex0x(&e.hash)).collect(),
        }
    }

    pub(crate) fn print(&self) {
        out!("stream    {}\nserved by {}", self.stream_id, self.served_by);
        for miniblock in &self.miniblocks {
            out!("{}", miniblock.line());
            for event in &miniblock.events {
                out!("  {}", event.line());
            }
        }
        out!("minipool  {} event(s)", self.minipool.len());
    }
}

/// A node's status as the CLI shows it.
#[derive(Serialize)]
pub(crate) struct InfoView {
    pub(crate) address: String,
    pub(crate) peer_id: String,
    pub(crate) peers: Vec<String>,
    pub(crate) node_peers: u64,
    pub(crate) streams_held: u64,
    pub(crate) streams_loaded: u64,
    pub(crate) streams_busy: u64,
    pub(crate) minipool_events: u64,
    pub(crate) miniblocks_promoted: u64,
    pub(crate) miniblocks_produced: u64,
    pub(crate) chain_head: u64,
    pub(crate) version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) streams: Vec<String>,
}

impl InfoView {
    pub(crate) fn new(info: pb::InfoResponse) -> Self {
        Self {
            address: Address::try_from(info.address.as_slice())
                .unwrap_or_default()
                .to_string(),
            peer_id: info.peer_id,
            peers: info.peers,
            node_peers: info.node_peers,
            streams_held: info.streams_held,
            streams_loaded: info.streams_loaded,
            streams_busy: info.streams_busy,
            minipool_events: info.minipool_events,
            miniblocks_promoted: info.miniblocks_promoted,
            miniblocks_produced: info.miniblocks_produced,
            chain_head: info.chain_head,
            version: info.version,
            streams: info.streams.iter().map(|s| hex0x(s)).collect(),
        }
    }

    pub(crate) fn print(&self) {
        out!(
            "address    {}\npeer id    {}\npeers      {} ({} nodes)\nstreams    {} held, {} loaded, {} busy\nminipools  {} event(s)\nminiblocks {} promoted, {} produced\nchain head {}",
            self.address,
            self.peer_id,
            self.peers.len(),
            self.node_peers,
            self.streams_held,
            self.streams_loaded,
            self.streams_busy,
            self.minipool_events,
            self.miniblocks_promoted,
            self.miniblocks_produced,
            self.chain_head
        );
        for stream in &self.streams {
            out!("  {stream}");
        }
    }
}
