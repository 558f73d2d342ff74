//! The devnet bootstrap against a real anvil.

use std::time::Duration;

use rill_chain::{NetworkConfig, NodeStatus, Registry, connect};
use rill_devnet::{ChainSource, DevnetConfig, DevnetFile, bootstrap};
use rill_protocol::NodeKey;
use rill_protocol::keys::address_of_peer;

#[tokio::test]
async fn bootstrap_registers_funded_nodes_and_writes_devnet_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = DevnetConfig {
        dir: dir.path().to_owned(),
        nodes: 4,
        block_time: Duration::from_millis(200),
        network: NetworkConfig {
            replication_factor: 3,
            ..NetworkConfig::default()
        },
        chain: ChainSource::Anvil,
        hosts: None,
        save_chain_every: None,
    };
    let chain = bootstrap(&config).await.unwrap();
    let file = DevnetFile::load(dir.path()).unwrap();
    assert_eq!(file, chain.file);
    assert_eq!(file.chain_id, 31337);

    let registry = Registry::new(file.registry, connect(&file.rpc_url).unwrap());
    assert_eq!(registry.config().await.unwrap().replication_factor, 3);
    let registered = registry.nodes().await.unwrap();
    assert_eq!(registered.len(), 4);
    for (node, record) in file.nodes.iter().zip(&registered) {
        assert_eq!(record.address, node.address);
        assert_eq!(record.multiaddr, node.multiaddr);
        assert_eq!(record.status, NodeStatus::Operational);
        let key = NodeKey::load(&node.key_file).unwrap();
        assert_eq!(key.address(), node.address);
        assert_eq!(
            address_of_peer(&node.peer_id.parse().unwrap()),
            Some(node.address)
        );
        let balance = {
            use alloy::providers::Provider;
            registry.provider().get_balance(node.address).await.unwrap()
        };
        assert!(!balance.is_zero(), "node {} is funded", node.address);
    }
}
