use std::time::Duration;

use rill_chain::NodeStatus;
use rill_protocol::{NodeKey, pb};
use rill_tests::Net;

use crate::sleep;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_under_load_applies_from_one_block_on_every_node_through_a_rolling_restart()
{
    let mut net = Net::start_with(4, |network| {
        network.replication_factor = 3;
        network.snapshot_interval = 16;
    })
    .await;
    let creator = NodeKey::generate();
    let (stream, replicas) = net.create_stream(&creator).await;
    let load = net.load(stream, &creator, &replicas, 4, pb::Ack::Quorum, 64);
    sleep(3.0).await;
    let admin = net.admin();
    let before = admin.block_number().await.unwrap();
    admin.set_config("snapshotInterval", 4).await.unwrap();
    let after = admin.block_number().await.unwrap();
    for i in 0..net.nodes.len() {
        net.nodes[i].restart().unwrap();
        net.wait_serving(i).await;
        sleep(1.0).await;
    }
    sleep(3.0).await;
    let acked = load.stop().await;
    let finalized = net
        .expect_finalized(stream, &acked.events, Duration::from_secs(90))
        .await;
    let mut checked_after = 0;
    for (header, _) in &finalized.headers[1..] {
        let interval = if header.chain_block > after {
            checked_after += 1;
            4
        } else if header.chain_block <= before {
            16
        } else {
            continue;
        };
        // A snapshot once `interval` miniblocks passed since the last one (when a majority
        // votes for it), and no later than twice the interval.
        let since = header.num - header.prev_snapshot_num;
        let follows = match header.snapshot.is_some() {
            true => since >= interval,
            false => since < 2 * interval,
        };
        assert!(
            follows,
            "miniblock {} (block {}, {since} after the last snapshot, snapshot {}) follows the interval of its block",
            header.num,
            header.chain_block,
            header.snapshot.is_some()
        );
    }
    assert!(
        checked_after >= 4,
        "miniblocks were produced after the change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departing_node_keeps_serving_but_is_not_elected_while_the_stream_goes_on() {
    let net = Net::start(4, 3).await;
    let creator = NodeKey::generate();
    let (stream, replicas) = net.create_stream(&creator).await;
    let load = net.load(stream, &creator, &replicas, 4, pb::Ack::Quorum, 64);
    sleep(3.0).await;
    let departing = net.nodes[replicas[0]].node.address;
    let admin = net.admin();
    admin
        .update_node_status(departing, NodeStatus::Departing)
        .await
        .unwrap();
    let change = admin.block_number().await.unwrap();
    sleep(8.0).await;
    let acked = load.stop().await;
    let finalized = net
        .expect_finalized(stream, &acked.events, Duration::from_secs(60))
        .await;
    let after: Vec<_> = finalized
        .headers
        .iter()
        .filter(|(header, _)| header.chain_block > change)
        .collect();
    assert!(after.len() >= 3, "the stream went on");
    assert!(
        after.iter().all(|(_, producer)| *producer != departing),
        "the departing node led nothing after it departed"
    );
}
