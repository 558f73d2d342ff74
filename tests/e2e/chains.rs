//! The devnet on chains it did not start: hardhat's node (an EVM that is not anvil), and a
//! devnet resumed from the anvil state it saved.

use std::collections::HashSet;
use std::time::Duration;

use alloy_primitives::U256;
use rill_chain::anvil::Anvil;
use rill_devnet::{ChainSource, DevnetConfig, resume};
use rill_protocol::{NodeKey, pb};
use rill_tests::{BLOCK_TIME, Hardhat, Launch, Net};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_devnet_scenario_runs_on_hardhats_node() {
    let hardhat = Hardhat::start();
    let launch = Launch {
        // Hardhat's first account has the same well-known key as anvil's.
        chain: ChainSource::Existing {
            rpc_url: hardhat.url(),
            deployer: Box::new(Anvil::dev_key()),
            registry: None,
            fund: U256::from(10u128.pow(19)),
        },
        ..Launch::local(4)
    };
    let net = Net::launch(launch, |network| network.replication_factor = 3).await;
    let creator = NodeKey::generate();
    let (stream, replicas) = net.create_stream(&creator).await;
    let everyone: Vec<usize> = (0..net.nodes.len()).collect();
    let load = net.load(stream, &creator, &everyone, 4, pb::Ack::Quorum, 64);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let acked = load.stop().await;
    eprintln!(
        "on hardhat: {} events acknowledged on {} replicas",
        acked.events.len(),
        replicas.len()
    );
    assert!(acked.events.len() > 20, "the load made progress");
    net.expect_finalized(stream, &acked.events, Duration::from_secs(90))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_devnet_resumes_with_its_chain_and_streams() {
    let mut net = Net::start(4, 3).await;
    let creator = NodeKey::generate();
    let (stream, replicas) = net.create_stream(&creator).await;
    let load = net.load(stream, &creator, &replicas, 4, pb::Ack::Quorum, 64);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = load.stop().await.events;
    net.expect_finalized(stream, &before, Duration::from_secs(60))
        .await;

    // Everything stops: the nodes, then anvil (SIGTERM: it writes its state).
    for node in &mut net.nodes {
        node.stop();
    }
    let rpc_url = net.chain.file.rpc_url.clone();
    drop(net.chain.anvil.take());
    assert!(
        rill_chain::connect(&rpc_url).is_ok() && net.registry().block_number().await.is_err(),
        "the chain is down"
    );

    let config = DevnetConfig::local(
        net.dir.path().to_owned(),
        net.nodes.len(),
        BLOCK_TIME,
        Default::default(),
    );
    net.chain = resume(&config).await.expect("the devnet resumes");
    assert_eq!(net.chain.file.rpc_url, rpc_url, "the same endpoint");
    for i in 0..net.nodes.len() {
        net.nodes[i].start_again().unwrap();
        net.wait_serving(i).await;
    }
    // The registry and the stream are as they were; the stream goes on.
    let load = net.load(stream, &creator, &replicas, 4, pb::Ack::Quorum, 64);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = load.stop().await.events;
    assert!(!after.is_empty(), "the resumed devnet acknowledges events");
    let all: HashSet<_> = before.union(&after).copied().collect();
    net.expect_finalized(stream, &all, Duration::from_secs(60))
        .await;
}
