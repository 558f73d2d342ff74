use std::time::Duration;

use rand::Rng;
use rill_devnet::load::{Acked, Load};
use rill_protocol::{NodeKey, pb};
use rill_tests::{Launch, Net};

use crate::{long, sleep};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_killed_at_random_under_quorum_load_lose_no_acknowledged_event() {
    let mut net = Net::start(4, 3).await;
    let creator = NodeKey::generate();
    let (stream, replicas) = net.create_stream(&creator).await;
    let load = net.load(stream, &creator, &replicas, 8, pb::Ack::Quorum, 64);
    let rounds = if long() { 12 } else { 4 };
    let mut rng = rand::thread_rng();
    for _ in 0..rounds {
        sleep(4.0).await;
        let victim = rng.gen_range(0..net.nodes.len());
        eprintln!("kill -9 node {victim}");
        net.nodes[victim].kill9();
        sleep(2.0).await;
        net.nodes[victim].start_again().unwrap();
    }
    sleep(3.0).await;
    let acked = stop_load(load).await;
    net.expect_finalized(stream, &acked.events, Duration::from_secs(120))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_with_promotions_left_pending_settle_them_and_lose_nothing() {
    // Promotions wait ten minutes to be settled: every kill below leaves some pending (the
    // head moved, the events still where their candidates kept them).
    let launch = Launch {
        env: vec![("RILL_SETTLE_AFTER_MS", "600000".into())],
        ..Launch::local(4)
    };
    let mut net = Net::launch(launch, |network| network.replication_factor = 3).await;
    let creator = NodeKey::generate();
    let (stream, replicas) = net.create_stream(&creator).await;
    let load = net.load(stream, &creator, &replicas, 8, pb::Ack::Quorum, 64);
    sleep(5.0).await;
    eprintln!("kill -9 every replica: {replicas:?}");
    for &i in &replicas {
        net.nodes[i].kill9();
    }
    sleep(1.0).await;
    for &i in &replicas {
        net.nodes[i].start_again().unwrap();
    }
    sleep(5.0).await;
    let acked = stop_load(load).await;
    for &i in &replicas {
        let log = net.nodes[i].node.data_dir.with_file_name("node.log");
        let log = std::fs::read_to_string(log).unwrap();
        assert!(
            log.contains("settled the promotions the last run left pending"),
            "replica {i} started again with promotions to settle"
        );
    }
    net.expect_finalized(stream, &acked.events, Duration::from_secs(120))
        .await;
}

/// Stops the load and checks that it made progress.
async fn stop_load(load: Load) -> Acked {
    let acked = load.stop().await;
    eprintln!(
        "{} events acknowledged, {} adds failed",
        acked.events.len(),
        acked.failures
    );
    assert!(acked.events.len() > 100, "the load made progress");
    acked
}
