//! Faults of the network itself, between nodes on hosts of their own (network namespaces
//! joined by the devnet's emulated network): a minority partitioned under load, and latency
//! with jitter and loss between every pair of hosts. Skipped, saying why, where namespaces
//! cannot be made.

use std::time::Duration;

use rill_devnet::hosts::{Faults, available_or_skip};
use rill_protocol::{NodeKey, pb};
use rill_tests::Net;

use crate::{long, sleep};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_partitioned_for_thirty_seconds_under_load_loses_nothing() {
    if !available_or_skip("partition") {
        return;
    }
    let net = Net::on_hosts(4, 3).await;
    let creator = NodeKey::generate();
    let (stream, replicas) = net.create_stream(&creator).await;
    let everyone: Vec<usize> = (0..net.nodes.len()).collect();
    let load = net.load(stream, &creator, &everyone, 8, pb::Ack::Quorum, 64);
    sleep(3.0).await;
    let cut = replicas[0];
    eprintln!("partition: node {cut} (a replica) cut off from every other host");
    net.hosts().set_faults(Faults {
        partitioned: [cut].into(),
        ..Faults::default()
    });
    let before = load.acked();
    sleep(if long() { 60.0 } else { 30.0 }).await;
    let during = load.acked() - before;
    net.hosts().set_faults(Faults::default());
    eprintln!("healed; {during} events acknowledged by the majority meanwhile");
    sleep(5.0).await;
    let acked = load.stop().await;
    let stats = net.hosts().stats();
    eprintln!(
        "{} events acknowledged, {} adds failed; link: {stats:?}",
        acked.events.len(),
        acked.failures
    );
    assert!(stats.partitioned > 0, "the partition dropped packets");
    assert!(during > 50, "the majority kept acknowledging");
    let finalized = net
        .expect_finalized(stream, &acked.events, Duration::from_secs(120))
        .await;
    assert!(finalized.events.len() >= acked.events.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_with_jitter_and_loss_between_all_hosts_loses_nothing() {
    if !available_or_skip("latency and loss") {
        return;
    }
    let net = Net::on_hosts(4, 3).await;
    // The stream's nodes first dial each other under a constant delay: their SYNs cross, which
    // once wedged them (a TCP simultaneous open from reused ports, then no address to redial).
    net.hosts().set_faults(Faults {
        latency_ms: 100,
        ..Faults::default()
    });
    let creator = NodeKey::generate();
    let (stream, _) = net.create_stream(&creator).await;
    let faults = Faults {
        latency_ms: 100,
        jitter_ms: 20,
        loss_percent: 1.0,
        ..Faults::default()
    };
    eprintln!("faults between every pair of hosts: {faults:?}");
    net.hosts().set_faults(faults);
    let everyone: Vec<usize> = (0..net.nodes.len()).collect();
    let load = net.load(stream, &creator, &everyone, 8, pb::Ack::Quorum, 64);
    sleep(if long() { 60.0 } else { 20.0 }).await;
    let acked = load.stop().await;
    let stats = net.hosts().stats();
    eprintln!(
        "{} events acknowledged, {} adds failed; link: {stats:?}",
        acked.events.len(),
        acked.failures
    );
    assert!(stats.lost > 0, "the link lost packets");
    assert!(acked.events.len() > 20, "the load made progress");
    // Still under the faults: the promise holds on a slow, lossy network.
    net.expect_finalized(stream, &acked.events, Duration::from_secs(120))
        .await;
}
