use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rill_protocol::{NodeKey, StreamId, pb};

use rill_tests::Net;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rill_stream_watch_shows_events_and_miniblocks() {
    let net = Net::start(4, 3).await;
    let alice = NodeKey::generate();
    let client = net.client(0, &alice).await;
    let created = client.create_stream(None).await.unwrap();
    let stream = StreamId::from_slice(&created.stream_id).unwrap();
    let key_file = net.dir.path().join("watcher.key");
    let mut watcher = Command::new(&rill_tests::binaries().cli)
        .args(["--node", &net.nodes[1].node.multiaddr, "--key"])
        .arg(&key_file)
        .args(["stream", "watch", &stream.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let (notes_tx, notes_rx) = std::sync::mpsc::channel();
    forward_lines(watcher.stdout.take().unwrap(), lines_tx);
    forward_lines(watcher.stderr.take().unwrap(), notes_tx);
    // The watcher says when the node keeps the stream's updates for it: events before that
    // are not part of a watch.
    let mut notes = Vec::new();
    while !notes
        .iter()
        .any(|n: &String| n.starts_with("watching stream"))
    {
        match notes_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(note) => notes.push(note),
            Err(e) => panic!("watch did not start ({e}): {notes:?}"),
        }
    }
    for text in ["one", "two", "three"] {
        client
            .add_message(stream, text, pb::Ack::Miniblock)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
        let events = seen
            .iter()
            .filter(|l| l.starts_with("event") && l.contains("message"))
            .count();
        let miniblocks = seen
            .iter()
            .filter(|l| l.starts_with("miniblock #") && !l.starts_with("miniblock #0"))
            .count();
        if events >= 3 && miniblocks >= 1 {
            break;
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    notes.extend(notes_rx.try_iter());
    for text in ["one", "two", "three"] {
        assert!(
            seen.iter()
                .any(|l| l.starts_with("event") && l.ends_with(text)),
            "watch printed {text}: {seen:?}; its notes: {notes:?}"
        );
    }
    assert!(
        seen.iter()
            .any(|l| l.starts_with("miniblock #") && !l.starts_with("miniblock #0")),
        "watch printed a miniblock: {seen:?}; its notes: {notes:?}"
    );
}

/// Sends each line `from` prints to `to`, on a thread of its own, until it closes.
fn forward_lines(from: impl Read + Send + 'static, to: std::sync::mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let _ = to.send(line);
        }
    });
}
