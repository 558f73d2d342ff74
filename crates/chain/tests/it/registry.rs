use alloy::primitives::{Address, B256};
use rill_chain::bindings::RillRegistry;
use rill_chain::{ChainError, NetworkConfig, NodeStatus};
use rill_protocol::StreamId;

use crate::support::{Chain, allocate};

#[tokio::test]
async fn config_nodes_and_streams_read_back_as_written() {
    let chain = Chain::start(None).await;
    assert_eq!(
        chain.admin.config().await.unwrap(),
        NetworkConfig::default()
    );
    chain
        .admin
        .set_config(NetworkConfig::REPLICATION_FACTOR, 5)
        .await
        .unwrap();
    assert_eq!(chain.admin.config().await.unwrap().replication_factor, 5);

    let a = chain.add_node().await;
    let b = chain.add_node().await;
    chain
        .admin
        .update_node_status(b.key.address(), NodeStatus::Departing)
        .await
        .unwrap();
    a.registry
        .update_node_multiaddr(a.key.address(), "/ip4/127.0.0.1/tcp/9")
        .await
        .unwrap();
    let nodes = chain.admin.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].multiaddr, "/ip4/127.0.0.1/tcp/9");
    assert_eq!(nodes[1].status, NodeStatus::Departing);

    let genesis = B256::repeat_byte(1);
    let id = allocate(&a, &[&a, &b], genesis).await;
    let stream = chain.admin.stream(id).await.unwrap().unwrap();
    assert_eq!(stream.nodes, vec![a.key.address(), b.key.address()]);
    assert_eq!(
        (stream.last_miniblock_hash, stream.last_miniblock_num),
        (genesis, 0)
    );
    assert_eq!(stream.genesis_hash, genesis);
    // The genesis miniblock itself is only in the allocation log.
    let head = chain.admin.block_number().await.unwrap();
    let unknown = StreamId::random();
    let found = chain.admin.genesis_of(&[id, unknown], head).await.unwrap();
    assert_eq!(found.get(&id), Some(&vec![0xaa; 8]));
    assert!(!found.contains_key(&unknown));
    assert_eq!(chain.admin.stream(StreamId::random()).await.unwrap(), None);
}

#[tokio::test]
async fn allocation_is_refused_with_the_contract_reason() {
    let chain = Chain::start(None).await;
    let a = chain.add_node().await;
    let id = allocate(&a, &[&a], B256::ZERO).await;
    let again = a
        .registry
        .allocate_stream(id, vec![a.key.address()], B256::ZERO, vec![])
        .await;
    assert!(
        matches!(
            again,
            Err(ChainError::Reverted(
                RillRegistry::RillRegistryErrors::StreamAlreadyExists(_)
            ))
        ),
        "{again:?}"
    );
    let unknown = Address::repeat_byte(9);
    let bad = a
        .registry
        .allocate_stream(StreamId::random(), vec![unknown], B256::ZERO, vec![])
        .await;
    assert!(
        matches!(
            bad,
            Err(ChainError::Reverted(
                RillRegistry::RillRegistryErrors::UnknownNode(_)
            ))
        ),
        "{bad:?}"
    );
    let contract = RillRegistry::new(a.registry.address(), a.registry.provider().clone());
    let limit = contract.MAX_STREAM_NODES().call().await.unwrap();
    assert_eq!(
        limit,
        alloy::primitives::U256::from(rill_chain::MAX_STREAM_NODES)
    );
    let mut twelve = vec![a.key.address()];
    twelve.extend(chain.register_addresses(11).await);
    let crowded = a
        .registry
        .allocate_stream(StreamId::random(), twelve, B256::ZERO, vec![])
        .await;
    assert!(
        matches!(
            crowded,
            Err(ChainError::Reverted(
                RillRegistry::RillRegistryErrors::TooManyNodes(_)
            ))
        ),
        "{crowded:?}"
    );
    // The owner is not an operational node.
    let by_owner = chain
        .admin
        .allocate_stream(
            StreamId::random(),
            vec![a.key.address()],
            B256::ZERO,
            vec![],
        )
        .await;
    assert!(
        matches!(
            by_owner,
            Err(ChainError::Reverted(
                RillRegistry::RillRegistryErrors::NotOperationalNode(_)
            ))
        ),
        "{by_owner:?}"
    );
}

#[tokio::test]
async fn paginated_reads_return_all_of_2000_streams() {
    // Interval mining packs many pipelined allocations into each block (automine would mine
    // one block per transaction).
    let chain = Chain::start(Some(std::time::Duration::from_millis(200))).await;
    let node = chain.add_node().await;
    let contract = RillRegistry::new(node.registry.address(), node.registry.provider().clone());
    // Pipeline the allocations: send all, then wait for the last receipt.
    let mut ids = Vec::new();
    let mut last = None;
    for _ in 0..2000 {
        let id = StreamId::random();
        let pending = contract
            .allocateStream(
                id.into(),
                vec![node.key.address()],
                B256::ZERO,
                Default::default(),
            )
            .gas(200_000)
            .max_fee_per_gas(10_000_000_000)
            .max_priority_fee_per_gas(1_000_000_000)
            .send()
            .await
            .unwrap();
        ids.push(id);
        last = Some(pending);
    }
    let receipt = last.unwrap().get_receipt().await.unwrap();
    assert!(receipt.status());
    assert_eq!(chain.admin.stream_count().await.unwrap(), 2000);

    let streams = chain.admin.streams(500).await.unwrap();
    let read: Vec<StreamId> = streams.iter().map(|s| s.id).collect();
    assert_eq!(read, ids, "every stream, once, in allocation order");
    // A page size that does not divide the count.
    assert_eq!(chain.admin.streams(333).await.unwrap().len(), 2000);
}
