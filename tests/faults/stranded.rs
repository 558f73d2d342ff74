use std::collections::HashSet;
use std::time::Duration;

use rill_protocol::{NodeKey, pb};
use rill_tests::Net;

use crate::sleep;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_one_replica_acknowledged_alone_reaches_the_others_when_they_return() {
    let mut net = Net::start(4, 3).await;
    let creator = NodeKey::generate();
    let (stream, replicas) = net.create_stream(&creator).await;
    let [alone, b, c] = replicas[..] else {
        panic!("three replicas")
    };
    net.nodes[b].kill9();
    net.nodes[c].kill9();
    let client = net.client(alone, &creator).await;
    let (event, _) = client
        .add_message(stream, "said while alone", pb::Ack::Local)
        .await
        .expect("the live replica acknowledges it locally");
    // Longer than any retry of the gossip that could not be delivered.
    sleep(35.0).await;
    net.nodes[b].start_again().unwrap();
    net.nodes[c].start_again().unwrap();
    net.wait_serving(b).await;
    net.wait_serving(c).await;
    let mut acked = HashSet::from([event.hash()]);
    for i in 0..5 {
        let (more, _) = client
            .add_message(stream, &format!("later {i}"), pb::Ack::Quorum)
            .await
            .expect("acknowledged by a quorum");
        acked.insert(more.hash());
    }
    net.expect_finalized(stream, &acked, Duration::from_secs(60))
        .await;
}
