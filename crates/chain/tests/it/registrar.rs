use std::collections::HashSet;
use std::time::Duration;

use alloy::primitives::{Address, B256, TxHash};
use futures::future::join_all;
use rill_chain::{
    AllocationFailure, AllocationOutcome, Leading, MiniblockRegistration, NewStream, Queued,
    Registrar, RegistrarConfig, RegistrarMetrics, RegistrationFailure, RegistrationOutcome,
};
use rill_protocol::StreamId;

use alloy::providers::Provider as _;
use rill_chain::{Registry, connect_with_key};

use crate::support::{Chain, Proxy, TestNode, allocate};

fn next(stream: StreamId, prev: B256, num: u64) -> MiniblockRegistration {
    MiniblockRegistration {
        stream_id: stream,
        prev_hash: prev,
        hash: B256::from(StreamId::random().0),
        num,
        sealed: false,
    }
}

fn registrar(node: &TestNode, max_batch: usize) -> Registrar {
    Registrar::spawn(
        node.registry.clone(),
        node.key.address(),
        RegistrarConfig {
            max_batch,
            flush_after: Duration::from_millis(200),
            ..RegistrarConfig::default()
        },
    )
}

/// `count` streams placed on `node` alone, each allocated in its own transaction.
async fn own_streams(node: &TestNode, count: usize) -> Vec<StreamId> {
    let mut streams = Vec::new();
    for _ in 0..count {
        streams.push(allocate(node, &[node], B256::ZERO).await);
    }
    streams
}

#[tokio::test]
async fn batch_of_100_entries_registers_in_one_transaction() {
    let chain = Chain::start(None).await;
    let node = chain.add_node().await;
    let streams = own_streams(&node, 100).await;
    let registrar = registrar(&node, 100);
    let entries: Vec<_> = streams.iter().map(|s| next(*s, B256::ZERO, 1)).collect();
    let outcomes = join_all(entries.iter().map(|e| registrar.register(*e))).await;

    let txs: HashSet<_> = outcomes
        .iter()
        .map(|o| match o {
            Ok(RegistrationOutcome::Registered { tx, .. }) => *tx,
            other => panic!("expected registered, got {other:?}"),
        })
        .collect();
    assert_eq!(txs.len(), 1, "all 100 in one transaction");
    for entry in entries {
        let stream = chain.admin.stream(entry.stream_id).await.unwrap().unwrap();
        assert_eq!(
            (stream.last_miniblock_hash, stream.last_miniblock_num),
            (entry.hash, 1)
        );
    }
}

/// Entries asked for while a transaction is in flight wait in the registrar's channel; once it
/// is mined they all leave in the next one, not one by one (their wait so far must not make
/// the batch leave before the rest of them are in: that fed on itself, one entry per block
/// behind an ever longer queue).
#[tokio::test]
async fn entries_that_waited_behind_a_transaction_in_flight_leave_together_in_the_next() {
    let chain = Chain::start(None).await;
    let node = chain.add_node().await;
    let streams = own_streams(&node, 31).await;
    anvil_call(&chain, "evm_setAutomine", serde_json::json!([false])).await;
    let registrar = registrar(&node, 100);
    let first = tokio::spawn({
        let registrar = registrar.clone();
        let entry = next(streams[0], B256::ZERO, 1);
        async move { registrar.register(entry).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = tokio::spawn({
        let registrar = registrar.clone();
        let entries: Vec<_> = streams[1..]
            .iter()
            .map(|s| next(*s, B256::ZERO, 1))
            .collect();
        async move { join_all(entries.iter().map(|e| registrar.register(*e))).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    anvil_call(&chain, "anvil_mine", serde_json::json!([1])).await;
    anvil_call(&chain, "evm_setAutomine", serde_json::json!([true])).await;

    let tx = |outcome: Result<RegistrationOutcome, _>| match outcome {
        Ok(RegistrationOutcome::Registered { tx, .. }) => tx,
        other => panic!("expected registered, got {other:?}"),
    };
    let first = tx(first.await.unwrap());
    let txs: HashSet<_> = waiting.await.unwrap().into_iter().map(tx).collect();
    assert_eq!(txs.len(), 1, "the 30 that waited leave in one transaction");
    assert!(
        !txs.contains(&first),
        "and not in the one they waited behind"
    );
}

/// A flush sends what is queued without waiting out the window, here an hour, and entries
/// flushed while a transaction is in flight leave, together, as soon as its receipt is in.
#[tokio::test]
async fn a_flush_sends_what_is_queued_at_once_or_right_after_the_transaction_in_flight() {
    let chain = Chain::start(None).await;
    let node = chain.add_node().await;
    let streams = own_streams(&node, 4).await;
    anvil_call(&chain, "evm_setAutomine", serde_json::json!([false])).await;
    let registrar = Registrar::spawn(
        node.registry.clone(),
        node.key.address(),
        RegistrarConfig {
            flush_after: Duration::from_secs(3600),
            ..RegistrarConfig::default()
        },
    );
    let first = registrar
        .queue_in_order(vec![next(streams[0], B256::ZERO, 1)])
        .await;
    registrar.flush().await;
    eventually_pending(&chain, node.key.address()).await;
    let rest = registrar
        .queue_in_order(
            streams[1..]
                .iter()
                .map(|s| next(*s, B256::ZERO, 1))
                .collect(),
        )
        .await;
    registrar.flush().await;
    anvil_call(&chain, "anvil_mine", serde_json::json!([1])).await;
    anvil_call(&chain, "evm_setAutomine", serde_json::json!([true])).await;

    let first = flushed(first).await;
    let rest: HashSet<_> = flushed(rest).await.into_iter().collect();
    assert_eq!(
        rest.len(),
        1,
        "the three flushed behind it leave in one transaction"
    );
    assert!(!rest.contains(&first[0]), "after the one in flight");
}

/// While the caller leads rounds whose registrations are still to come, or has not handled
/// the block the last batch was mined in, a flush holds the batch back; the flush after
/// those rounds sends it.
#[tokio::test]
async fn a_flush_while_the_caller_leads_rounds_waits_for_the_next_one() {
    let chain = Chain::start(None).await;
    let node = chain.add_node().await;
    let streams = own_streams(&node, 3).await;
    let (leading, caller) = tokio::sync::watch::channel(Leading {
        block: 0,
        rounds: true,
    });
    let registrar = Registrar::spawn(
        node.registry.clone(),
        node.key.address(),
        RegistrarConfig {
            flush_after: Duration::from_secs(3600),
            leading: Some(caller),
            ..RegistrarConfig::default()
        },
    );
    let queue = |i: usize| registrar.queue_in_order(vec![next(streams[i], B256::ZERO, 1)]);
    let held_back = |why: &'static str| {
        let (chain, sender) = (&chain, node.key.address());
        async move {
            let before = nonce(chain, sender).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(nonce(chain, sender).await, before, "{why}");
        }
    };

    let first = queue(0).await;
    registrar.flush().await;
    held_back("nothing is sent while rounds are led").await;
    leading.send_replace(Leading::default());
    let second = queue(1).await;
    registrar.flush().await;
    let (first, second) = (flushed(first).await, flushed(second).await);
    assert_eq!(first, second, "the held entry leaves with the next round's");

    let mined_in = chain
        .provider()
        .get_transaction_receipt(first[0])
        .await
        .unwrap()
        .and_then(|receipt| receipt.block_number)
        .unwrap();
    let third = queue(2).await;
    registrar.flush().await;
    held_back("nothing is sent before the caller handled that block").await;
    leading.send_replace(Leading {
        block: mined_in,
        rounds: false,
    });
    registrar.flush().await;
    flushed(third).await;
}

#[tokio::test]
async fn bad_entries_are_rejected_with_their_reason_while_the_rest_apply() {
    let chain = Chain::start(None).await;
    let a = chain.add_node().await;
    let outsider = chain.add_node().await;
    let good = allocate(&a, &[&a], B256::ZERO).await;
    let wrong_prev = allocate(&a, &[&a], B256::ZERO).await;
    let wrong_num = allocate(&a, &[&a], B256::ZERO).await;
    let not_ours = allocate(&outsider, &[&outsider], B256::ZERO).await;

    let registrar = registrar(&a, 10);
    let entries = [
        next(good, B256::ZERO, 1),
        next(wrong_prev, B256::repeat_byte(1), 1),
        next(wrong_num, B256::ZERO, 2),
        next(not_ours, B256::ZERO, 1),
        next(StreamId::random(), B256::ZERO, 1),
    ];
    let outcomes = join_all(entries.iter().map(|e| registrar.register(*e))).await;
    let reasons: Vec<_> = outcomes
        .into_iter()
        .map(|o| match o.unwrap() {
            RegistrationOutcome::Registered { .. } => None,
            RegistrationOutcome::Rejected { reason, .. } => Some(reason),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            None,
            Some(RegistrationFailure::BadPrevHash),
            Some(RegistrationFailure::BadMiniblockNum),
            Some(RegistrationFailure::NotAStreamNode),
            Some(RegistrationFailure::UnknownStream),
        ]
    );
    assert_eq!(
        chain
            .admin
            .stream(good)
            .await
            .unwrap()
            .unwrap()
            .last_miniblock_num,
        1
    );
    assert_eq!(
        chain
            .admin
            .stream(wrong_prev)
            .await
            .unwrap()
            .unwrap()
            .last_miniblock_num,
        0
    );
    assert_eq!(
        chain
            .admin
            .stream(not_ours)
            .await
            .unwrap()
            .unwrap()
            .last_miniblock_num,
        0
    );
}

#[tokio::test]
async fn registrar_chains_miniblocks_and_allocates_through_one_nonce() {
    // Allocation and registration interleave from one key without nonce clashes.
    let chain = Chain::start(Some(Duration::from_millis(500))).await;
    let node = chain.add_node().await;
    let registrar = registrar(&node, 50);
    let stream = StreamId::random();
    let allocated = registrar
        .allocate(new_stream(stream, vec![node.key.address()]))
        .await
        .unwrap();
    assert!(matches!(allocated, AllocationOutcome::Allocated { .. }));
    let mut prev = new_stream(stream, vec![]).genesis_hash;
    for num in 1..=5 {
        let entry = next(stream, prev, num);
        let other = StreamId::random();
        let (outcome, allocated) = tokio::join!(
            registrar.register(entry),
            registrar.allocate(new_stream(other, vec![node.key.address()]))
        );
        assert!(matches!(
            outcome.unwrap(),
            RegistrationOutcome::Registered { .. }
        ));
        assert!(matches!(
            allocated.unwrap(),
            AllocationOutcome::Allocated { .. }
        ));
        prev = entry.hash;
    }
    let record = chain.admin.stream(stream).await.unwrap().unwrap();
    assert_eq!(
        (record.last_miniblock_hash, record.last_miniblock_num),
        (prev, 5)
    );
}

fn new_stream(id: StreamId, nodes: Vec<Address>) -> NewStream {
    NewStream {
        id,
        nodes,
        genesis_hash: B256::repeat_byte(7),
        genesis: vec![1, 2, 3],
    }
}

#[tokio::test]
async fn a_batch_of_new_streams_applies_each_entry_on_its_own() {
    // Twenty allocations queued at once go out in one transaction; the bad ones get the
    // contract's reason, the good ones are allocated with their genesis in the log.
    let chain = Chain::start(Some(Duration::from_millis(500))).await;
    let node = chain.add_node().await;
    let me = node.key.address();
    let registrar = registrar(&node, 50);
    let existing = StreamId::random();
    assert!(matches!(
        registrar
            .allocate(new_stream(existing, vec![me]))
            .await
            .unwrap(),
        AllocationOutcome::Allocated { .. }
    ));
    let good: Vec<StreamId> = (0..16).map(|_| StreamId::random()).collect();
    let mut entries: Vec<NewStream> = good.iter().map(|id| new_stream(*id, vec![me])).collect();
    entries.insert(3, new_stream(existing, vec![me]));
    entries.insert(7, new_stream(StreamId::random(), vec![]));
    entries.insert(
        11,
        new_stream(StreamId::random(), vec![Address::repeat_byte(9)]),
    );
    entries.insert(13, new_stream(StreamId::random(), vec![me, me]));
    let outcomes = join_all(entries.into_iter().map(|e| registrar.allocate(e))).await;
    let mut txs = HashSet::new();
    let mut refused = Vec::new();
    for outcome in outcomes {
        match outcome.unwrap() {
            AllocationOutcome::Allocated { tx, .. } => {
                txs.insert(tx);
            }
            AllocationOutcome::Rejected { reason, tx } => {
                txs.insert(tx);
                refused.push(reason);
            }
        }
    }
    assert_eq!(
        refused,
        vec![
            AllocationFailure::AlreadyExists,
            AllocationFailure::NoNodes,
            AllocationFailure::UnknownNode,
            AllocationFailure::DuplicateNode
        ]
    );
    assert_eq!(txs.len(), 1, "one transaction for the whole batch");
    let head = chain.admin.block_number().await.unwrap();
    let genesis = chain.admin.genesis_of(&good, head).await.unwrap();
    assert_eq!(genesis.len(), good.len());
    for id in &good {
        let record = chain.admin.stream(*id).await.unwrap().unwrap();
        assert_eq!(record.genesis_hash, B256::repeat_byte(7));
        assert_eq!(genesis[id], vec![1, 2, 3]);
    }
}

#[tokio::test]
async fn a_record_keeps_eleven_nodes_in_order_and_its_seal() {
    // The registry packs a stream's head number, flags and nodes into one slot: eleven nodes
    // fill it, a twelfth is refused. The caller is the eleventh, in the slot's top bits, so its
    // registrations only apply if the membership check reads them.
    let chain = Chain::start(Some(Duration::from_millis(500))).await;
    let node = chain.add_node().await;
    let mut members = chain.register_addresses(10).await;
    members.push(node.key.address());
    let registrar = registrar(&node, 10);
    let id = StreamId::random();
    let mut twelve = members.clone();
    twelve.extend(chain.register_addresses(1).await);
    let (eleven, too_many) = tokio::join!(
        registrar.allocate(new_stream(id, members.clone())),
        registrar.allocate(new_stream(StreamId::random(), twelve))
    );
    assert!(matches!(
        eleven.unwrap(),
        AllocationOutcome::Allocated { .. }
    ));
    assert!(matches!(
        too_many.unwrap(),
        AllocationOutcome::Rejected {
            reason: AllocationFailure::TooManyNodes,
            ..
        }
    ));
    let record = chain.admin.stream(id).await.unwrap().unwrap();
    assert_eq!(record.nodes, members);
    assert_eq!((record.last_miniblock_num, record.sealed), (0, false));

    let sealing = MiniblockRegistration {
        sealed: true,
        ..next(id, record.genesis_hash, 1)
    };
    assert!(matches!(
        registrar.register(sealing).await.unwrap(),
        RegistrationOutcome::Registered { .. }
    ));
    let record = chain.admin.stream(id).await.unwrap().unwrap();
    assert_eq!(
        (
            record.last_miniblock_hash,
            record.last_miniblock_num,
            record.sealed
        ),
        (sealing.hash, 1, true)
    );
    assert_eq!(record.nodes, members, "the head's update keeps the nodes");
    let after = registrar.register(next(id, sealing.hash, 2)).await.unwrap();
    assert!(
        matches!(
            after,
            RegistrationOutcome::Rejected {
                reason: RegistrationFailure::Sealed,
                ..
            }
        ),
        "{after:?}"
    );
}

/// The registrar sets each batch's gas limit itself instead of having the chain simulate the
/// batch first: a heavy batch (first registrations, streams on five nodes with a large
/// genesis) must still fit in it.
#[tokio::test]
async fn a_heavy_batch_fits_the_gas_the_registrar_gives_it() {
    let chain = Chain::start(Some(Duration::from_millis(500))).await;
    let node = chain.add_node().await;
    let mut nodes = vec![node.key.address()];
    for _ in 0..4 {
        nodes.push(chain.add_node().await.key.address());
    }
    let streams = own_streams(&node, 60).await;
    let registrar = registrar(&node, 100);
    let heads = join_all(
        streams
            .iter()
            .map(|s| registrar.register(next(*s, B256::ZERO, 1))),
    );
    let allocations = join_all((0..20).map(|_| {
        registrar.allocate(NewStream {
            id: StreamId::random(),
            nodes: nodes.clone(),
            genesis_hash: B256::repeat_byte(7),
            genesis: vec![0xab; 4096],
        })
    }));
    let (heads, allocations) = futures::join!(heads, allocations);
    let mut txs = HashSet::new();
    for outcome in heads {
        match outcome {
            Ok(RegistrationOutcome::Registered { tx, .. }) => txs.insert(tx),
            other => panic!("expected registered, got {other:?}"),
        };
    }
    for outcome in allocations {
        match outcome {
            Ok(AllocationOutcome::Allocated { tx, .. }) => txs.insert(tx),
            other => panic!("expected allocated, got {other:?}"),
        };
    }
    assert_eq!(txs.len(), 1, "one transaction for the whole batch");
}

/// Calls one of anvil's own JSON-RPC methods (mining control, mempool surgery).
async fn anvil_call(chain: &Chain, method: &'static str, params: serde_json::Value) {
    let _: serde_json::Value = chain
        .provider()
        .raw_request(method.into(), params)
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"));
}

/// A registrar that gives a transaction one second to be mined, counting into `metrics`.
fn impatient(node: &TestNode, metrics: &RegistrarMetrics) -> Registrar {
    Registrar::spawn(
        node.registry.clone(),
        node.key.address(),
        RegistrarConfig {
            flush_after: Duration::from_millis(50),
            receipt_timeout: Duration::from_secs(1),
            metrics: metrics.clone(),
            ..RegistrarConfig::default()
        },
    )
}

#[tokio::test]
async fn a_registration_whose_transaction_is_dropped_is_sent_again_and_registers() {
    // The mempool loses the registrar's transaction (a node restarted, eviction): before the
    // replacement, the registrar would wait for it forever and every later head with it.
    let chain = Chain::start(None).await;
    let node = chain.add_node().await;
    let stream = allocate(&node, &[&node], B256::ZERO).await;
    anvil_call(&chain, "evm_setAutomine", serde_json::json!([false])).await;
    let metrics = RegistrarMetrics::default();
    let registrar = impatient(&node, &metrics);
    let entry = next(stream, B256::ZERO, 1);
    let outcome = tokio::spawn({
        let registrar = registrar.clone();
        async move { registrar.register(entry).await }
    });
    eventually_pending(&chain, node.key.address()).await;
    anvil_call(&chain, "anvil_dropAllTransactions", serde_json::json!([])).await;
    anvil_call(&chain, "evm_setAutomine", serde_json::json!([true])).await;

    expect_registered(outcome).await;
    let record = chain.admin.stream(stream).await.unwrap().unwrap();
    assert_eq!(
        (record.last_miniblock_hash, record.last_miniblock_num),
        (entry.hash, 1)
    );
    assert!(metrics.replacements.get() >= 1, "sent again");
    // The nonce goes on from there: the next head registers too.
    let after = next(stream, entry.hash, 2);
    assert!(matches!(
        registrar.register(after).await,
        Ok(RegistrationOutcome::Registered { .. })
    ));
}

#[tokio::test]
async fn a_registration_stuck_in_the_mempool_is_replaced_and_only_one_is_mined() {
    // No block for several receipt timeouts: the registrar replaces its transaction (same
    // nonce, higher fees) each time; when blocks come back exactly one of them is mined and
    // its outcome is the answer.
    let chain = Chain::start(None).await;
    let node = chain.add_node().await;
    let stream = allocate(&node, &[&node], B256::ZERO).await;
    let nonce_before = nonce(&chain, node.key.address()).await;
    anvil_call(&chain, "evm_setAutomine", serde_json::json!([false])).await;
    let metrics = RegistrarMetrics::default();
    let registrar = impatient(&node, &metrics);
    let entry = next(stream, B256::ZERO, 1);
    let outcome = tokio::spawn(async move { registrar.register(entry).await });
    // Two receipt timeouts, each followed by a replacement, before a block comes.
    for _ in 0..300 {
        if metrics.replacements.get() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anvil_call(&chain, "anvil_mine", serde_json::json!([1])).await;
    anvil_call(&chain, "evm_setAutomine", serde_json::json!([true])).await;

    expect_registered(outcome).await;
    let nonce_after = nonce(&chain, node.key.address()).await;
    assert_eq!(nonce_after, nonce_before + 1, "one transaction mined");
    assert!(metrics.replacements.get() >= 2, "replaced at each timeout");
    let record = chain.admin.stream(stream).await.unwrap().unwrap();
    assert_eq!(record.last_miniblock_num, 1);
}

#[tokio::test]
async fn a_receipt_lost_to_an_rpc_outage_is_found_again_and_the_batch_is_not_sent_twice() {
    // The transaction is sent, then the RPC endpoint goes away while its receipt is awaited.
    // The registrar keeps the nonce and, once the endpoint is back, finds the transaction
    // mined; with a fresh nonce it would have sent the batch a second time (and been told
    // its own heads were out of order).
    let chain = Chain::start(Some(Duration::from_secs(1))).await;
    let node = chain.add_node().await;
    let stream = allocate(&node, &[&node], B256::ZERO).await;
    let proxy = Proxy::start(chain.anvil.port()).await;
    let through_proxy = Registry::new(
        chain.admin.address(),
        connect_with_key(&proxy.url(), &node.key).unwrap(),
    );
    let registrar = Registrar::spawn(
        through_proxy,
        node.key.address(),
        RegistrarConfig {
            flush_after: Duration::from_millis(10),
            max_attempts: 12,
            ..RegistrarConfig::default()
        },
    );
    let nonce_before = nonce(&chain, node.key.address()).await;
    let entry = next(stream, B256::ZERO, 1);
    let outcome = tokio::spawn(async move { registrar.register(entry).await });
    // Sent (it is in anvil's pool until the next block), then the endpoint goes away.
    eventually_pending(&chain, node.key.address()).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.restore().await;

    expect_registered(outcome).await;
    let nonce_after = nonce(&chain, node.key.address()).await;
    assert_eq!(
        nonce_after,
        nonce_before + 1,
        "one transaction for the batch"
    );
}

/// How many transactions `sender` has had mined.
async fn nonce(chain: &Chain, sender: Address) -> u64 {
    chain
        .provider()
        .get_transaction_count(sender)
        .await
        .unwrap()
}

/// Waits (at most a minute) for a spawned `register` and expects the head registered.
async fn expect_registered(
    outcome: tokio::task::JoinHandle<Result<RegistrationOutcome, rill_chain::RegistrarError>>,
) {
    let outcome = tokio::time::timeout(Duration::from_secs(60), outcome)
        .await
        .expect("the registrar answers")
        .unwrap();
    assert!(
        matches!(outcome, Ok(RegistrationOutcome::Registered { .. })),
        "{outcome:?}"
    );
}

/// The transactions that registered flushed entries, waiting at most a minute (their window
/// is an hour: only a flush sends them).
async fn flushed(queued: Queued) -> Vec<TxHash> {
    tokio::time::timeout(Duration::from_secs(60), queued.outcomes())
        .await
        .expect("flushed entries do not wait out the window")
        .into_iter()
        .map(|outcome| match outcome {
            Ok(RegistrationOutcome::Registered { tx, .. }) => tx,
            other => panic!("expected registered, got {other:?}"),
        })
        .collect()
}

/// Waits until `sender` has a transaction in anvil's pool.
async fn eventually_pending(chain: &Chain, sender: Address) {
    let mined = nonce(chain, sender).await;
    for _ in 0..200 {
        let pending = chain
            .provider()
            .get_transaction_count(sender)
            .pending()
            .await
            .unwrap();
        if pending > mined {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no transaction from {sender} reached the pool");
}
