//! Registry benchmarks against a real anvil: gas per entry of `setStreamLastMiniblockBatch` for
//! batches of 1, 10, 50 and 100, and the time to read 10,000 streams with paginated calls.
//!
//! `cargo bench -p rill-chain --bench registration`

use std::time::{Duration, Instant};

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use rill_chain::anvil::{Anvil, AnvilConfig};
use rill_chain::bindings::RillRegistry;
use rill_chain::{NetworkConfig, NodeStatus, Registry, connect_with_key, transfer};
use rill_protocol::{NodeKey, StreamId};

#[tokio::main]
async fn main() {
    let anvil = Anvil::start(AnvilConfig::with_block_time(Duration::from_millis(200))).unwrap();
    let admin = Registry::deploy(connect_with_key(&anvil.url(), &Anvil::dev_key()).unwrap())
        .await
        .unwrap();
    admin.apply_config(&NetworkConfig::default()).await.unwrap();
    let key = NodeKey::generate();
    transfer(admin.provider(), key.address(), U256::from(10u128.pow(21)))
        .await
        .unwrap();
    admin
        .register_node(
            key.address(),
            "/ip4/127.0.0.1/tcp/1",
            NodeStatus::Operational,
        )
        .await
        .unwrap();
    let provider = connect_with_key(&anvil.url(), &key).unwrap();
    let contract = RillRegistry::new(admin.address(), provider.clone());

    // Streams on 3 nodes, as with replication 3 (the node is the first, so it may register).
    let others = [NodeKey::generate().address(), NodeKey::generate().address()];
    for other in others {
        admin
            .register_node(other, "/ip4/127.0.0.1/tcp/2", NodeStatus::Operational)
            .await
            .unwrap();
    }
    let streams = allocate(&contract, &key, &others, 10_000).await;

    println!("## setStreamLastMiniblockBatch gas (replication 3)\n");
    println!("| batch | gas used | gas per entry |");
    println!("|---:|---:|---:|");
    let mut offset = 0;
    for batch in [1usize, 10, 50, 100] {
        let entries: Vec<RillRegistry::SetMiniblock> = streams[offset..offset + batch]
            .iter()
            .map(|id| RillRegistry::SetMiniblock {
                streamId: (*id).into(),
                prevMiniblockHash: B256::ZERO,
                lastMiniblockHash: B256::repeat_byte(7),
                lastMiniblockNum: 1,
                isSealed: false,
            })
            .collect();
        offset += batch;
        let receipt = contract
            .setStreamLastMiniblockBatch(entries)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status());
        let gas = receipt.gas_used;
        println!("| {batch} | {gas} | {} |", gas / batch as u64);
    }

    println!("\n## Paginated stream reads\n");
    println!("| streams | page size | calls | time |");
    println!("|---:|---:|---:|---:|");
    for page in [1000u64, 2500, 5000] {
        let start = Instant::now();
        let all = admin.streams(page).await.unwrap();
        assert_eq!(all.len(), 10_000);
        let calls = 10_000u64.div_ceil(page);
        println!(
            "| {} | {page} | {calls} | {:.0?} |",
            all.len(),
            start.elapsed()
        );
    }
}

async fn allocate(
    contract: &RillRegistry::RillRegistryInstance<rill_chain::ChainProvider>,
    key: &NodeKey,
    others: &[alloy::primitives::Address],
    count: usize,
) -> Vec<StreamId> {
    let mut ids = Vec::with_capacity(count);
    let mut last = None;
    for _ in 0..count {
        let id = StreamId::random();
        let nodes = vec![key.address(), others[0], others[1]];
        let pending = contract
            .allocateStream(id.into(), nodes, B256::ZERO, Default::default())
            .gas(300_000)
            .max_fee_per_gas(10_000_000_000)
            .max_priority_fee_per_gas(1_000_000_000)
            .send()
            .await
            .unwrap();
        ids.push(id);
        last = Some(pending);
    }
    last.unwrap().get_receipt().await.unwrap();
    let _ = contract.provider().get_block_number().await;
    ids
}
