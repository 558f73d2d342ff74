use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use rill_client::Client;
use rill_protocol::{NodeKey, ParsedEvent, StreamId, pb};

use rill_tests::Net;

/// `rill stream watch` prints each admitted event and each promoted miniblock with the number
/// of its events, also with `--headers-only` (where the node sends the header alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rill_stream_watch_shows_events_and_miniblocks() {
    let net = Net::start(4, 3).await;
    let alice = NodeKey::generate();
    let client = net.client(0, &alice).await;
    let created = client.create_stream(None).await.unwrap();
    let stream = StreamId::from_slice(&created.stream_id).unwrap();
    let mut whole = CliWatch::start(&net, stream, &[]);
    let mut headers = CliWatch::start(&net, stream, &["--headers-only"]);
    for text in ["one", "two", "three"] {
        client
            .add_message(stream, text, pb::Ack::Miniblock)
            .await
            .unwrap();
    }
    for watch in [&mut whole, &mut headers] {
        watch.read_until_promoted(3);
        for text in ["one", "two", "three"] {
            assert!(
                watch
                    .seen
                    .iter()
                    .any(|l| l.starts_with("event") && l.ends_with(text)),
                "watch {:?} printed {text}: {:?}; its notes: {:?}",
                watch.args,
                watch.seen,
                watch.notes
            );
        }
    }
}

/// A `rill stream watch` process and what it printed.
struct CliWatch {
    args: Vec<String>,
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    notes: Vec<String>,
    seen: Vec<String>,
}

impl CliWatch {
    /// Starts a watch of `stream` on node 1, and waits until the node keeps the stream's
    /// updates for it (events before that are not part of a watch).
    fn start(net: &Net, stream: StreamId, args: &[&str]) -> Self {
        let key_file = net.dir.path().join("watcher.key");
        let mut child = Command::new(&rill_tests::binaries().cli)
            .args(["--node", &net.nodes[1].node.multiaddr, "--key"])
            .arg(&key_file)
            .args(["stream", "watch", &stream.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines_tx, lines) = std::sync::mpsc::channel();
        let (notes_tx, notes_rx) = std::sync::mpsc::channel();
        forward_lines(child.stdout.take().unwrap(), lines_tx);
        forward_lines(child.stderr.take().unwrap(), notes_tx);
        let mut notes = Vec::new();
        while !notes
            .iter()
            .any(|n: &String| n.starts_with("watching stream"))
        {
            match notes_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(note) => notes.push(note),
                Err(e) => panic!("watch {args:?} did not start ({e}): {notes:?}"),
            }
        }
        Self {
            args: args.iter().map(|a| a.to_string()).collect(),
            child,
            lines,
            notes,
            seen: Vec::new(),
        }
    }

    /// Reads lines until it printed `events` message events and promoted miniblocks (after
    /// the genesis) naming that many events, or 20 s passed; fails in the second case.
    fn read_until_promoted(&mut self, events: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let messages = self
                .seen
                .iter()
                .filter(|l| l.starts_with("event") && l.contains("message"))
                .count();
            let promoted: usize = self
                .seen
                .iter()
                .filter(|l| l.starts_with("miniblock #") && !l.starts_with("miniblock #0"))
                .filter_map(|l| {
                    l.rsplit_once(" (")?
                        .1
                        .strip_suffix(" events)")?
                        .parse::<usize>()
                        .ok()
                })
                .sum();
            if messages >= events && promoted >= events {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "watch {:?} printed {messages} messages and {promoted} promoted events: {:?}; \
                 its notes: {:?}",
                self.args,
                self.seen,
                self.notes
            );
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(line);
            }
        }
    }
}

impl Drop for CliWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A watch that asks for headers alone gets each promoted miniblock as its header, naming the
/// events by hash, while a whole watch of the same node gets the same miniblock with its
/// envelopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headers_only_watch_gets_promoted_miniblocks_as_headers() {
    let net = Net::start(4, 3).await;
    let alice = NodeKey::generate();
    let client = net.client(0, &alice).await;
    let created = client.create_stream(None).await.unwrap();
    let stream = StreamId::from_slice(&created.stream_id).unwrap();
    let watcher = net.client(1, &NodeKey::generate()).await;
    // The first polls start the node's log of the stream's updates.
    let whole_start = watcher.watch(stream, 0, 0).await.unwrap();
    let headers_start = watcher.watch_headers(stream, 0, 0).await.unwrap();
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        let (event, _) = client
            .add_message(stream, text, pb::Ack::Miniblock)
            .await
            .unwrap();
        sent.push(event.hash());
    }
    let whole = promoted_until(&watcher, stream, last_seq(&whole_start), false, &sent).await;
    let headers = promoted_until(&watcher, stream, last_seq(&headers_start), true, &sent).await;
    for hash in &sent {
        let in_whole = whole.iter().find(|(_, named, _)| named.contains(hash));
        let in_headers = headers.iter().find(|(_, named, _)| named.contains(hash));
        let (Some(whole), Some(headers)) = (in_whole, in_headers) else {
            panic!("{hash} promoted in both watches: {whole:?} / {headers:?}");
        };
        assert_eq!(whole.0, headers.0, "the same miniblock header in both");
        assert_eq!(whole.1, headers.1);
        assert!(whole.2.contains(hash), "the whole miniblock carries {hash}");
        assert!(headers.2.is_empty(), "a header alone carries no envelopes");
    }
}

/// A promotion as a watch shows it: its header's hash, the events its header names, and the
/// hashes of the envelopes it carries.
type Shown = (Vec<u8>, Vec<B256>, Vec<B256>);

/// Polls `stream` on `client` from `after` until the promotions seen name every one of
/// `events`; fails on a miniblock update of the kind not asked for.
async fn promoted_until(
    client: &Client,
    stream: StreamId,
    mut after: u64,
    headers_only: bool,
    events: &[B256],
) -> Vec<Shown> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut shown: Vec<Shown> = Vec::new();
    while !events
        .iter()
        .all(|e| shown.iter().any(|(_, named, _)| named.contains(e)))
    {
        assert!(Instant::now() < deadline, "promotions seen: {shown:?}");
        let batch = if headers_only {
            client.watch_headers(stream, after, 1_000).await.unwrap()
        } else {
            client.watch(stream, after, 1_000).await.unwrap()
        };
        for update in batch.updates {
            after = after.max(update.seq);
            let (header, carried) = match update.kind {
                Some(pb::stream_update::Kind::Miniblock(m)) => {
                    assert!(!headers_only, "a whole miniblock in a headers-only watch");
                    let carried = m.events.iter().map(|e| hash_of(&e.hash)).collect();
                    (m.header.unwrap(), carried)
                }
                Some(pb::stream_update::Kind::MiniblockHeader(header)) => {
                    assert!(headers_only, "a header alone in a whole watch");
                    (header, Vec::new())
                }
                _ => continue,
            };
            let parsed = ParsedEvent::open_stored(header.clone()).unwrap();
            let named = parsed
                .miniblock_header()
                .unwrap()
                .event_hashes
                .iter()
                .map(|h| hash_of(h))
                .collect();
            shown.push((header.hash, named, carried));
        }
    }
    shown
}

fn last_seq(response: &pb::SubscribeResponse) -> u64 {
    response.updates.iter().map(|u| u.seq).max().unwrap_or(0)
}

fn hash_of(bytes: &[u8]) -> B256 {
    B256::try_from(bytes).unwrap()
}

/// Sends each line `from` prints to `to`, on a thread of its own, until it closes.
fn forward_lines(from: impl Read + Send + 'static, to: std::sync::mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let _ = to.send(line);
        }
    });
}
