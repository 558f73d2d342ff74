use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::B256;
use alloy::providers::Provider;
use rill_chain::{
    ChainBlock, ChainMonitor, MiniblockRegistration, MonitorConfig, NetworkConfig, Registrar,
    RegistrarConfig, RegistryEvent, connect,
};
use rill_protocol::StreamId;
use tokio::sync::mpsc;

use crate::support::{Chain, Proxy, TestNode, allocate};

async fn recv(blocks: &mut mpsc::Receiver<ChainBlock>) -> ChainBlock {
    tokio::time::timeout(Duration::from_secs(30), blocks.recv())
        .await
        .expect("a block within 30 s")
        .expect("monitor running")
}

/// Registers miniblocks 1..=count of `stream`, one after the other, in the background.
fn register_chain(
    node: &TestNode,
    stream: StreamId,
    count: u64,
    pause: Duration,
) -> tokio::task::JoinHandle<Vec<B256>> {
    let registrar = Registrar::spawn(
        node.registry.clone(),
        node.key.address(),
        RegistrarConfig::default(),
    );
    tokio::spawn(async move {
        let mut prev = B256::ZERO;
        let mut hashes = Vec::new();
        for num in 1..=count {
            let hash = B256::from(StreamId::random().0);
            let entry = MiniblockRegistration {
                stream_id: stream,
                prev_hash: prev,
                hash,
                num,
                sealed: false,
            };
            registrar.register(entry).await.unwrap();
            hashes.push(hash);
            prev = hash;
            tokio::time::sleep(pause).await;
        }
        hashes
    })
}

fn registered(blocks: &[ChainBlock]) -> Vec<(u64, B256)> {
    blocks
        .iter()
        .flat_map(|b| &b.events)
        .filter_map(|e| match e {
            RegistryEvent::MiniblockRegistered { num, hash, .. } => Some((*num, *hash)),
            _ => None,
        })
        .collect()
}

fn assert_consecutive(blocks: &[ChainBlock]) {
    for pair in blocks.windows(2) {
        assert_eq!(
            pair[1].block.number,
            pair[0].block.number + 1,
            "no gap, no repeat"
        );
    }
}

#[tokio::test]
async fn monitor_sees_every_block_and_registry_log_in_order_over_20_blocks() {
    let chain = Chain::start(Some(Duration::from_secs(1))).await;
    let node = chain.add_node().await;
    let stream = allocate(&node, &[&node], B256::ZERO).await;
    let provider = connect(&chain.anvil.url()).unwrap();
    let mut monitor = ChainMonitor::spawn(
        provider.clone(),
        chain.admin.address(),
        MonitorConfig::default(),
    );

    let writer = register_chain(&node, stream, 12, Duration::from_millis(300));
    chain
        .admin
        .set_config(NetworkConfig::SNAPSHOT_INTERVAL, 7)
        .await
        .unwrap();

    let mut blocks = Vec::new();
    while blocks.len() < 21 {
        blocks.push(recv(&mut monitor).await);
    }
    let hashes = writer.await.unwrap();
    // Let the last registration's block arrive too.
    while registered(&blocks).len() < hashes.len() {
        blocks.push(recv(&mut monitor).await);
    }

    assert_consecutive(&blocks);
    for b in &blocks {
        let header = provider
            .get_block_by_number(BlockNumberOrTag::Number(b.block.number))
            .await
            .unwrap()
            .unwrap()
            .header;
        assert_eq!(b.block.hash, header.hash);
        assert_eq!(b.block.prevrandao, header.mix_hash);
        assert_eq!(b.block.timestamp, header.timestamp);
    }
    let expected: Vec<_> = hashes
        .iter()
        .enumerate()
        .map(|(i, h)| (i as u64 + 1, *h))
        .collect();
    assert_eq!(
        registered(&blocks),
        expected,
        "every registration, in order"
    );
    assert!(blocks.iter().flat_map(|b| &b.events).any(|e| matches!(
        e,
        RegistryEvent::ConfigUpdated { key, value: 7 } if key == NetworkConfig::SNAPSHOT_INTERVAL
    )));
}

#[tokio::test]
async fn monitor_resumes_without_gaps_after_an_rpc_outage() {
    let chain = Chain::start(Some(Duration::from_millis(500))).await;
    let node = chain.add_node().await;
    let stream = allocate(&node, &[&node], B256::ZERO).await;
    let proxy = Proxy::start(chain.anvil.port()).await;
    let mut monitor = ChainMonitor::spawn(
        connect(&proxy.url()).unwrap(),
        chain.admin.address(),
        MonitorConfig::default(),
    );

    let mut blocks = vec![recv(&mut monitor).await];
    // Registrations go straight to anvil, so some land while the monitor is cut off.
    let writer = register_chain(&node, stream, 8, Duration::from_millis(200));
    blocks.push(recv(&mut monitor).await);
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore().await;
    let hashes = writer.await.unwrap();
    while registered(&blocks).len() < hashes.len() {
        blocks.push(recv(&mut monitor).await);
    }
    assert_consecutive(&blocks);
    assert!(
        blocks.len() >= 6,
        "blocks mined during the outage were delivered after it"
    );
    let expected: Vec<_> = hashes
        .iter()
        .enumerate()
        .map(|(i, h)| (i as u64 + 1, *h))
        .collect();
    assert_eq!(registered(&blocks), expected);
}

#[tokio::test]
async fn restarted_monitor_resumes_from_the_last_block_seen() {
    let chain = Chain::start(Some(Duration::from_millis(300))).await;
    let provider = connect(&chain.anvil.url()).unwrap();
    let mut first = ChainMonitor::spawn(
        provider.clone(),
        chain.admin.address(),
        MonitorConfig::default(),
    );
    let mut last = recv(&mut first).await.block.number;
    for _ in 0..3 {
        last = recv(&mut first).await.block.number;
    }
    drop(first);
    // The "node" is down for a few blocks.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let config = MonitorConfig {
        from_block: Some(last + 1),
        ..MonitorConfig::default()
    };
    let mut second = ChainMonitor::spawn(provider, chain.admin.address(), config);
    let mut blocks = Vec::new();
    for _ in 0..5 {
        blocks.push(recv(&mut second).await);
    }
    assert_eq!(blocks[0].block.number, last + 1);
    assert_consecutive(&blocks);
}

#[tokio::test]
async fn with_confirmations_a_block_is_delivered_only_once_that_many_are_on_top() {
    let chain = Chain::start(Some(Duration::from_millis(300))).await;
    let provider = connect(&chain.anvil.url()).unwrap();
    let mut monitor = ChainMonitor::spawn(
        provider.clone(),
        chain.admin.address(),
        MonitorConfig {
            confirmations: 3,
            ..MonitorConfig::default()
        },
    );
    let mut blocks = Vec::new();
    while blocks.len() < 5 {
        let block = recv(&mut monitor).await;
        let head = provider.get_block_number().await.unwrap();
        assert!(
            head >= block.block.number + 3,
            "block {} delivered at head {head}",
            block.block.number
        );
        blocks.push(block);
    }
    assert_consecutive(&blocks);
}
