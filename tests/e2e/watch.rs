use std::io::{BufRead, BufReader};
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
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
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
    for text in ["one", "two", "three"] {
        assert!(
            seen.iter()
                .any(|l| l.starts_with("event") && l.ends_with(text)),
            "watch printed {text}: {seen:?}"
        );
    }
    assert!(
        seen.iter()
            .any(|l| l.starts_with("miniblock #") && !l.starts_with("miniblock #0")),
        "watch printed a miniblock: {seen:?}"
    );
}
