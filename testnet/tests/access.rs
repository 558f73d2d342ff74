//! Who may do what, on whole nodes over real libp2p and a real anvil: outsiders overhear no
//! gossip, streams' access policies hold, and clients are limited.

use std::collections::HashSet;
use std::time::Duration;

use rill_protocol::{NodeKey, StreamId, pb};
use rill_testnet::{Outsider, Testnet};

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn sum(net: &Testnet, metric: &str) -> f64 {
    let mut total = 0.0;
    for i in 0..net.len() {
        total += net.metric(i, metric).await;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_subscribed_to_the_nodes_inboxes_receives_nothing_while_they_gossip() {
    logs();
    let net = Testnet::builder().nodes(3).replication(3).start().await;
    let nodes = (0..net.len())
        .map(|i| (net.address(i), net.multiaddr(i)))
        .collect();
    let outsider = Outsider::start(nodes);
    // Every node sees the outsider's subscription to its inbox (and refuses it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sum(&net, "rill_p2p_gossip_subscriptions_refused_total").await < net.len() as f64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outsider's subscriptions reach the nodes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let published_before = sum(&net, "rill_p2p_gossip_published_total").await;
    let creator = NodeKey::generate();
    let created = net
        .client_with(0, creator.clone())
        .await
        .create_stream(None)
        .await
        .expect("created");
    let stream = StreamId::from_slice(&created.stream_id).unwrap();
    let mut acked = HashSet::new();
    for i in 0..3 {
        let client = net.client_with(i, creator.clone()).await;
        for j in 0..5 {
            let (event, _) = client
                .add_message(stream, &format!("from {i}: {j}"), pb::Ack::Quorum)
                .await
                .expect("acknowledged");
            acked.insert(event.hash());
        }
    }
    net.expect_finalized(stream, &acked, Duration::from_secs(30))
        .await;
    assert!(
        sum(&net, "rill_p2p_gossip_published_total").await > published_before,
        "the stream's nodes gossiped to each other's inboxes"
    );
    assert!(
        outsider.node_subscriptions() > 0,
        "gossipsub spoke with the outsider (it saw the nodes' subscriptions)"
    );
    assert_eq!(outsider.messages(), 0, "the outsider overheard gossip");
}
