//! Registry benchmarks against a real anvil: gas per entry of `setStreamLastMiniblockBatch` for
//! batches of 1, 10, 50 and 100, and the time to read 10,000 streams with paginated calls
//! (a page of 2,500 three-node streams already exceeds anvil's `eth_call` gas limit).
//!
//! `cargo bench -p rill-chain --bench registration` (`RILL_BENCH_STREAMS=N` to allocate fewer)

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
    let count: usize = std::env::var("RILL_BENCH_STREAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let started = Instant::now();
    let streams = allocate(&contract, &key, &others, count).await;
    eprintln!("allocated {count} streams in {:.1?}", started.elapsed());

    // Warm-up: each stream's first registration turns zero storage into non-zero (a one-off
    // cost); the table measures the steady state, miniblock n -> n + 1.
    let mut offset = 0;
    let mut rows = Vec::new();
    for batch in [1usize, 10, 50, 100] {
        let ids = &streams[offset..offset + batch];
        offset += batch;
        let first = register(&contract, ids, B256::ZERO, B256::repeat_byte(7), 1).await;
        let steady = register(
            &contract,
            ids,
            B256::repeat_byte(7),
            B256::repeat_byte(8),
            2,
        )
        .await;
        rows.push((batch, first, steady));
    }
    println!("## setStreamLastMiniblockBatch gas (replication 3)\n");
    println!("| batch | gas, first registration | per entry | gas, steady state | per entry |");
    println!("|---:|---:|---:|---:|---:|");
    for (batch, first, steady) in rows {
        let n = batch as u64;
        println!(
            "| {batch} | {first} | {} | {steady} | {} |",
            first / n,
            steady / n
        );
    }
    println!("\n## Paginated stream reads\n");
    println!("| streams | page size | calls | time |");
    println!("|---:|---:|---:|---:|");
    for page in [250u64, 500, 1000] {
        let start = Instant::now();
        let all = admin.streams(page).await.unwrap();
        assert_eq!(all.len(), count);
        let calls = (count as u64).div_ceil(page);
        println!(
            "| {} | {page} | {calls} | {:.0?} |",
            all.len(),
            start.elapsed()
        );
    }
}

async fn register(
    contract: &RillRegistry::RillRegistryInstance<rill_chain::ChainProvider>,
    ids: &[StreamId],
    prev: B256,
    hash: B256,
    num: u64,
) -> u64 {
    let entries: Vec<RillRegistry::SetMiniblock> = ids
        .iter()
        .map(|id| RillRegistry::SetMiniblock {
            streamId: (*id).into(),
            prevMiniblockHash: prev,
            lastMiniblockHash: hash,
            lastMiniblockNum: num,
            isSealed: false,
        })
        .collect();
    let receipt = contract
        .setStreamLastMiniblockBatch(entries)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status());
    receipt.gas_used
}

async fn allocate(
    contract: &RillRegistry::RillRegistryInstance<rill_chain::ChainProvider>,
    key: &NodeKey,
    others: &[alloy::primitives::Address],
    count: usize,
) -> Vec<StreamId> {
    // Pipeline chunks of allocations and check what landed: anvil may drop part of a large
    // backlog, so top up until the registry holds `count` streams.
    loop {
        let have = contract
            .getStreamCount()
            .call()
            .await
            .unwrap()
            .to::<usize>();
        if have >= count {
            break;
        }
        // Full blocks raise the base fee: price each chunk from the current gas price.
        let fee = contract.provider().get_gas_price().await.unwrap() * 3;
        let mut last = None;
        for _ in 0..(count - have).min(500) {
            let nodes = vec![key.address(), others[0], others[1]];
            let pending = contract
                .allocateStream(
                    StreamId::random().into(),
                    nodes,
                    B256::ZERO,
                    Default::default(),
                )
                .gas(300_000)
                .max_fee_per_gas(fee)
                .max_priority_fee_per_gas(fee / 10)
                .send()
                .await
                .unwrap();
            last = Some(*pending.tx_hash());
        }
        let hash = last.expect("sent at least one");
        let deadline = Instant::now() + Duration::from_secs(30);
        while contract
            .provider()
            .get_transaction_receipt(hash)
            .await
            .unwrap()
            .is_none()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let page = Registry::new(*contract.address(), contract.provider().clone());
    page.streams(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .take(count)
        .collect()
}
