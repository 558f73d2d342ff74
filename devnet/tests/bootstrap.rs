//! The devnet bootstrap against a real anvil.

use std::time::Duration;

use rill_chain::anvil::Anvil;
use rill_chain::{NetworkConfig, NodeStatus, Registry, connect};
use rill_devnet::{ChainSource, DevnetConfig, DevnetFile, bootstrap};
use rill_protocol::NodeKey;
use rill_protocol::keys::address_of_peer;

#[tokio::test]
async fn bootstrap_registers_funded_nodes_and_writes_devnet_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = DevnetConfig::local(
        dir.path().to_owned(),
        4,
        Duration::from_millis(200),
        NetworkConfig {
            replication_factor: 3,
            ..NetworkConfig::default()
        },
    );
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

#[tokio::test]
async fn bootstrap_on_an_existing_chain_reuses_its_registry_and_nodes() {
    // The "existing chain" is an anvil this test starts; the devnet is told only its URL, a
    // deployer key and the registry to reuse.
    let dir = tempfile::tempdir().unwrap();
    let mut config = DevnetConfig::local(
        dir.path().to_owned(),
        3,
        Duration::from_millis(200),
        NetworkConfig::default(),
    );
    let first = bootstrap(&config).await.unwrap();
    let anvil = first
        .anvil
        .as_ref()
        .expect("the first bootstrap started anvil");
    let admin = Registry::new(
        first.file.registry,
        rill_chain::connect_with_key(&anvil.url(), &Anvil::dev_key()).unwrap(),
    );
    // One node was marked Failed meanwhile: reusing the registry makes it Operational again.
    admin
        .update_node_status(first.file.nodes[1].address, NodeStatus::Failed)
        .await
        .unwrap();

    config.chain = ChainSource::Existing {
        rpc_url: anvil.url(),
        deployer: Box::new(Anvil::dev_key()),
        registry: Some(first.file.registry),
        fund: alloy::primitives::U256::from(10u128.pow(18)),
    };
    config.network.replication_factor = 2;
    let second = bootstrap(&config).await.unwrap();
    assert!(second.anvil.is_none(), "no anvil of its own");
    assert_eq!(
        second.file.registry, first.file.registry,
        "the registry is reused"
    );
    let registry = Registry::new(second.file.registry, connect(&anvil.url()).unwrap());
    assert_eq!(registry.config().await.unwrap().replication_factor, 2);
    let registered = registry.nodes().await.unwrap();
    assert_eq!(registered.len(), 3, "the same keys, not registered twice");
    for (node, record) in second.file.nodes.iter().zip(&registered) {
        assert_eq!(record.address, node.address);
        assert_eq!(
            record.multiaddr, node.multiaddr,
            "addresses follow the new ports"
        );
        assert_eq!(record.status, NodeStatus::Operational);
    }
    assert_ne!(
        second.file.nodes[0].multiaddr,
        first.file.nodes[0].multiaddr
    );
}
