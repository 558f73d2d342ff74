//! A node always starts and keeps serving: bad allocations are refused, counted and never
//! stored; a stream an older version left half-written is repaired at start.

use std::collections::HashSet;
use std::time::Duration;

use alloy::primitives::U256;
use prost::Message as _;
use rill_chain::{NodeStatus, transfer};
use rill_protocol::{NodeKey, ParsedMiniblock, StreamId, pb};
use rill_testnet::Testnet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_allocations_are_refused_counted_never_stored_and_nodes_still_start() {
    let mut net = Testnet::builder().nodes(3).replication(3).start().await;
    // A registered node allocates streams with genesis that do not open or are not valid.
    let rogue = NodeKey::generate();
    let admin = net.admin();
    transfer(
        admin.provider(),
        rogue.address(),
        U256::from(10u128.pow(19)),
    )
    .await
    .unwrap();
    admin
        .register_node(
            rogue.address(),
            &format!("/ip4/127.0.0.1/tcp/9/p2p/{}", rogue.peer_id()),
            NodeStatus::Operational,
        )
        .await
        .unwrap();
    let rogue_registry = net.registry_as(&rogue);
    let nodes = net.addresses(&[0, 1, 2]);
    let (garbled, wrong) = (StreamId::random(), StreamId::random());
    rogue_registry
        .allocate_stream(garbled, nodes.clone(), Default::default(), vec![1, 2, 3])
        .await
        .unwrap();
    // This genesis opens, but its inception names another stream.
    let inception = rill_protocol::envelope::inception(
        StreamId::random(),
        pb::StreamSettings::default(),
        0,
        &NodeKey::generate(),
    );
    let genesis = ParsedMiniblock::genesis(vec![inception], 1, 0, &rogue).unwrap();
    rogue_registry
        .allocate_stream(
            wrong,
            nodes,
            genesis.hash(),
            genesis.to_pb().encode_to_vec(),
        )
        .await
        .unwrap();
    tokio::time::sleep(net.block_time() * 3).await;
    for i in 0..3 {
        let refused = net
            .metric(i, "rill_inputs_rejected_total{reason=\"bad_genesis\"}")
            .await;
        assert!(refused >= 2.0, "node {i} counted both refusals ({refused})");
        for stream in [garbled, wrong] {
            let error = net.client(i).await.get_stream(stream).await.unwrap_err();
            assert_eq!(error.code(), Some(pb::ErrorCode::UnknownStream), "{error}");
        }
    }
    // A restart reads them from the registry again: refused again, and the node serves.
    net.restart(0).await;
    assert!(
        net.metric(0, "rill_inputs_rejected_total{reason=\"bad_genesis\"}")
            .await
            >= 2.0
    );
    let creator = NodeKey::generate();
    let created = net
        .client_with(0, creator.clone())
        .await
        .create_stream(None)
        .await
        .expect("the restarted node serves");
    assert_eq!(created.nodes.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_an_older_version_left_half_written_is_repaired_at_start() {
    let mut net = Testnet::builder().nodes(3).replication(3).start().await;
    let creator = NodeKey::generate();
    let client = net.client_with(0, creator.clone()).await;
    let created = client.create_stream(None).await.unwrap();
    let stream = StreamId::from_slice(&created.stream_id).unwrap();
    let mut acked = HashSet::new();
    for i in 0..3 {
        let (event, _) = client
            .add_message(stream, &format!("m{i}"), pb::Ack::Miniblock)
            .await
            .unwrap();
        acked.insert(event.hash());
    }
    net.stop(1).await;
    {
        // What an older version left when killed between writing the stream's record and its
        // genesis: the record, and no chain.
        // The stopped node's last store handles may still be closing.
        let db = rill_store::open_sled(net.data_dir(1)).unwrap();
        db.open_tree("heads").unwrap().remove(stream.0).unwrap();
        let miniblocks = db.open_tree("miniblocks").unwrap();
        for key in miniblocks.scan_prefix(stream.0).keys() {
            miniblocks.remove(key.unwrap()).unwrap();
        }
        db.flush().unwrap();
    }
    net.restart(1).await;
    net.expect_finalized(stream, &acked, Duration::from_secs(30))
        .await;
}
