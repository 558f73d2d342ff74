use std::collections::HashSet;
use std::time::Duration;

use rill_protocol::{NodeKey, StreamId, pb};

use rill_tests::{Net, chain, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_killed_mid_stream_restarts_catches_up_and_loses_nothing_acknowledged() {
    let mut net = Net::start(4, 3).await;
    let alice = NodeKey::generate();
    let created = net
        .client(0, &alice)
        .await
        .create_stream(None)
        .await
        .unwrap();
    let stream = StreamId::from_slice(&created.stream_id).unwrap();
    let (replicas, _) = net.placement(&created);
    let victim = replicas[2];
    let writer = net.client(replicas[0], &alice).await;

    let mut acked = HashSet::new();
    for i in 0..60 {
        if i == 20 {
            net.nodes[victim].kill9();
        }
        if i == 40 {
            net.nodes[victim].restart().expect("restarts");
        }
        // With one replica down, quorum (2 of 3) still acknowledges.
        match writer
            .add_message(stream, &format!("m{i}"), pb::Ack::Quorum)
            .await
        {
            Ok((event, _)) => {
                acked.insert(event.hash());
            }
            Err(e) => panic!("add {i}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rill_devnet::wait_serving(&net.nodes[victim].node, Duration::from_secs(60))
        .await
        .unwrap();
    let mut clients = Vec::new();
    for i in &replicas {
        clients.push(net.client(*i, &NodeKey::generate()).await);
    }
    eventually(
        Duration::from_secs(90),
        "every replica, the restarted one too, holds every acknowledged event",
        || async {
            let mut heads = Vec::new();
            for client in &clients {
                let Some(c) = chain(client, stream).await else {
                    return false;
                };
                let held: HashSet<_> = c.event_hashes.iter().copied().collect();
                if !acked.iter().all(|h| held.contains(h)) {
                    return false;
                }
                heads.push(c.hashes);
            }
            heads.windows(2).all(|w| w[0] == w[1])
        },
    )
    .await;
}
