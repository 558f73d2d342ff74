//! `rill-devnet up --hosts` and `rill-devnet fault` as an operator runs them: real processes,
//! real namespaces, the faults file followed by the running devnet. Skipped, saying why, where
//! namespaces cannot be made (`RILL_REQUIRE_HOSTS` makes that a failure).

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rill_client::Client;
use rill_devnet::DevnetFile;
use rill_protocol::{NodeKey, StreamId, pb};
use rill_tests::binaries;

/// Runs `rill-devnet ARGS --dir DIR` to its end; what it printed.
fn rill_devnet(args: &[&str], dir: &Path) -> String {
    let output = Command::new(&binaries().devnet)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "rill-devnet {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn answers(client_of: &DevnetFile, i: usize) -> bool {
    let addr = client_of.nodes[i].multiaddr.parse().unwrap();
    let attempt = async {
        let client = Client::connect(addr, NodeKey::generate()).await.ok()?;
        client.info(false).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(4), attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_on_hosts_takes_faults_from_the_command_line() {
    if !rill_devnet::hosts::available_or_skip("devnet on hosts") {
        return;
    }
    // `rill-devnet` starts the `rill-node` beside it.
    let binary = &binaries().devnet;
    assert_eq!(binary.parent(), binaries().node.parent());
    let dir = tempfile::tempdir().unwrap();
    let subnet = (200 + std::process::id() % 50).to_string();
    let mut devnet = Command::new(binary)
        .args(["up", "--hosts", "--subnet", &subnet, "--nodes", "3"])
        .args(["--replication", "3", "--block-time", "0.5", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(devnet.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("Ctrl-C stops the devnet") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let file = DevnetFile::load(dir.path()).unwrap();
    assert_eq!(
        file.nodes[2].listen,
        format!("/ip4/10.{subnet}.0.4/tcp/30333")
    );
    assert_eq!(
        file.nodes[2].netns.as_deref(),
        Some(&*format!("rill-{subnet}-2"))
    );

    let key = NodeKey::generate();
    let client = Client::connect(file.nodes[1].multiaddr.parse().unwrap(), key.clone())
        .await
        .unwrap();
    let created = client.create_stream(None).await.unwrap();
    let stream = StreamId::from_slice(&created.stream_id).unwrap();

    let said = rill_devnet(&["fault", "partition", "0"], dir.path());
    assert!(said.contains("\"partitioned\":[0]"), "{said}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!answers(&file, 0).await, "node 0 is cut off");
    assert!(answers(&file, 1).await, "node 1 is not");
    // Two of three replicas still make a quorum.
    let (event, _) = client
        .add_message(stream, "during the partition", pb::Ack::Quorum)
        .await
        .expect("acknowledged by the majority");
    let hash = event.hash().to_vec();

    rill_devnet(&["fault", "heal"], dir.path());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(answers(&file, 0).await, "node 0 is back");
    let back = Client::connect(file.nodes[0].multiaddr.parse().unwrap(), key)
        .await
        .unwrap();
    let mut caught_up = false;
    for _ in 0..60 {
        let got = back.get_stream(stream).await.unwrap();
        if got
            .miniblocks
            .iter()
            .flat_map(|m| &m.events)
            .any(|e| e.hash == hash)
        {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        caught_up,
        "node 0 holds the event added while it was cut off"
    );

    // SIGTERM: the devnet stops and takes its namespaces with it.
    Command::new("kill")
        .args(["-TERM", &devnet.id().to_string()])
        .status()
        .unwrap();
    assert!(devnet.wait().unwrap().success());
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(
        !namespaces.contains(&format!("rill-{subnet}-")),
        "namespaces left: {namespaces}"
    );
}
