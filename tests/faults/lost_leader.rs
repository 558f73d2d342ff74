use std::collections::HashSet;
use std::time::Duration;

use rill_protocol::{NodeKey, pb};
use rill_tests::Net;

use crate::sleep;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_candidates_reach_no_replica_then_loses_its_disk_does_not_wedge_the_stream()
{
    let mut net = Net::start(4, 3).await;
    let creator = NodeKey::generate();
    let (stream, replicas) = net.create_stream(&creator).await;
    // Every candidate is lost on its way to the replicas.
    for &i in &replicas {
        net.nodes[i].set_env("RILL_FAULTS", Some("drop:candidate"));
        net.nodes[i].restart().unwrap();
    }
    for &i in &replicas {
        net.wait_serving(i).await;
    }
    let registry = net.registry();
    let before = registry.stream(stream).await.unwrap().unwrap();
    let client = net.client(replicas[0], &creator).await;
    let mut acked = HashSet::new();
    for i in 0..20 {
        let (event, _) = client
            .add_message(stream, &format!("m{i}"), pb::Ack::Quorum)
            .await
            .expect("held by a quorum");
        acked.insert(event.hash());
    }
    // Leaders build candidates, none reaches a replica: nothing is registered.
    sleep(6.0).await;
    let during = registry.stream(stream).await.unwrap().unwrap();
    assert_eq!(
        during.last_miniblock_num, before.last_miniblock_num,
        "no candidate is registered without a write quorum"
    );
    // The node the events came through loses its disk; the faults end.
    net.nodes[replicas[0]].kill9();
    net.nodes[replicas[0]].wipe().unwrap();
    for &i in &replicas {
        net.nodes[i].set_env("RILL_FAULTS", None);
        net.nodes[i].restart().unwrap();
    }
    for &i in &replicas {
        net.wait_serving(i).await;
    }
    net.expect_finalized(stream, &acked, Duration::from_secs(90))
        .await;
}
