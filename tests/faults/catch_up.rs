use std::time::{Duration, Instant};

use rill_protocol::{NodeKey, pb};
use rill_tests::Net;

use crate::{long, sleep};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_while_fifty_megabytes_are_finalized_catches_up_in_pages() {
    let mut net = Net::start(4, 3).await;
    let creator = NodeKey::generate();
    let (stream, replicas) = net.create_stream(&creator).await;
    let lagging = replicas[2];
    net.nodes[lagging].kill9();
    let event_bytes = 40 * 1024;
    let target: u64 = if long() { 200 } else { 50 } * 1024 * 1024;
    let started = Instant::now();
    let load = net.load(
        stream,
        &creator,
        &replicas[..2],
        4,
        pb::Ack::Quorum,
        event_bytes,
    );
    while load.acked() * (event_bytes as u64) < target {
        sleep(0.5).await;
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the load is too slow"
        );
    }
    let acked = load.stop().await;
    let megabytes = (acked.events.len() * event_bytes) as f64 / 1e6;
    eprintln!(
        "{} events ({megabytes:.0} MB) acknowledged in {:?}",
        acked.events.len(),
        started.elapsed()
    );
    // Finalized on the two live replicas first, then the third comes back and catches up.
    net.expect_finalized(stream, &acked.events, Duration::from_secs(120))
        .await;
    let back = Instant::now();
    net.nodes[lagging].start_again().unwrap();
    net.wait_serving(lagging).await;
    let serving = back.elapsed();
    let finalized = net
        .expect_finalized(stream, &acked.events, Duration::from_secs(300))
        .await;
    let caught_up = back.elapsed();
    eprintln!(
        "catch-up: serving after {serving:?}, {} miniblocks ({megabytes:.0} MB) in {caught_up:?}: {:.1} MB/s, {:.0} events/s",
        finalized.chain.len(),
        megabytes / caught_up.as_secs_f64(),
        acked.events.len() as f64 / caught_up.as_secs_f64()
    );
}
