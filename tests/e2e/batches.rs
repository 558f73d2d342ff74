use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use alloy_primitives::B256;
use rill_protocol::{NodeKey, StreamId};

use rill_tests::Net;

/// `rill event add --file`: every non-empty line becomes an event, sent in batches of at most
/// 1,000 per request, each acknowledged by a quorum and then finalized on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rill_event_add_file_sends_every_line_in_batches_and_each_finalizes() {
    let net = Net::start(4, 3).await;
    let alice = NodeKey::generate();
    let created = net
        .client(0, &alice)
        .await
        .create_stream(None)
        .await
        .unwrap();
    let stream = StreamId::from_slice(&created.stream_id).unwrap();
    let key_file = net.dir.path().join("alice.key");
    alice.save(&key_file).unwrap();
    let lines = 1_100;
    let mut text = String::new();
    for i in 0..lines {
        text.push_str(&format!("line {i}\n"));
        if i % 100 == 0 {
            text.push_str("   \n\n");
        }
    }
    let file = net.dir.path().join("lines.txt");
    std::fs::write(&file, text).unwrap();

    let output = Command::new(&rill_tests::binaries().cli)
        .args(["--node", &net.nodes[1].node.multiaddr, "--key"])
        .arg(&key_file)
        .args([
            "event",
            "add",
            &stream.to_string(),
            "--wait",
            "quorum",
            "--file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "rill event add --file failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let acked: HashSet<B256> = stdout
        .lines()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a hash: {l}"))
        })
        .collect();
    assert_eq!(acked.len(), lines, "one distinct event per non-empty line");
    // Each in exactly one miniblock on every replica, the registry's head theirs.
    net.expect_finalized(stream, &acked, Duration::from_secs(60))
        .await;
}
