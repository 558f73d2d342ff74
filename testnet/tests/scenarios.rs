//! Whole nodes in one process, over real libp2p and a real anvil, under faults.

use std::collections::HashSet;
use std::time::Duration;

use rill_protocol::{NodeKey, StreamId, pb};
use rill_testnet::{MessageKind, Testnet};

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn stream(net: &Testnet, creator: &NodeKey) -> (StreamId, Vec<usize>) {
    let created = net
        .client_with(0, creator.clone())
        .await
        .create_stream(None)
        .await
        .expect("the stream is created");
    let (replicas, _) = net.placement(&created);
    (StreamId::from_slice(&created.stream_id).unwrap(), replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_crashed_under_load_restarts_and_every_acknowledged_event_is_finalized() {
    logs();
    let mut net = Testnet::builder().nodes(4).replication(3).start().await;
    let creator = NodeKey::generate();
    let (stream, replicas) = stream(&net, &creator).await;
    let load = net.load(stream, &creator, &replicas, 4, pb::Ack::Quorum, 64);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = replicas[1];
    net.crash(victim).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    net.restart(victim).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let acked = load.stop().await;
    assert!(
        acked.events.len() > 50,
        "the load made progress: {} acknowledged",
        acked.events.len()
    );
    let finalized = net
        .expect_finalized(stream, &acked.events, Duration::from_secs(60))
        .await;
    assert!(finalized.chain.len() > 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_never_gets_full_events_fetches_the_announced_ones() {
    logs();
    let net = Testnet::builder().nodes(3).replication(3).start().await;
    let creator = NodeKey::generate();
    let (stream, _) = stream(&net, &creator).await;
    let deaf = 2;
    // Node 2 never receives NewEventReceived; it hears NewEventInPool from node 1.
    net.faults().drop(
        Some(MessageKind::GossipEvents),
        None,
        Some(net.address(deaf)),
    );
    let client = net.client_with(0, creator.clone()).await;
    let mut acked = HashSet::new();
    for i in 0..10 {
        let (event, _) = client
            .add_message(stream, &format!("m{i}"), pb::Ack::Quorum)
            .await
            .expect("acknowledged by nodes 0 and 1");
        acked.insert(event.hash());
    }
    net.expect_finalized(stream, &acked, Duration::from_secs(30))
        .await;
    let fetches = net
        .metric(deaf, "rill_requests_total{kind=\"GetEvents\"}")
        .await;
    assert!(
        fetches >= 1.0,
        "node 2 fetched the events it was told about"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_that_land_blocks_late_chain_candidates_and_lose_nothing() {
    logs();
    // Three of the four nodes chain candidates as leaders (so at least two of any stream's
    // three); node 3 only judges chained ones.
    let net = Testnet::builder()
        .nodes(4)
        .replication(3)
        .chain_candidates(0)
        .chain_candidates(1)
        .chain_candidates(2)
        .start()
        .await;
    let creator = NodeKey::generate();
    let (stream, replicas) = stream(&net, &creator).await;
    // Every registration lands about two blocks after its candidate reached its write quorum:
    // the next rounds led by a chaining node build on the waiting candidate instead of waiting.
    let late = net.block_time() * 2;
    net.faults()
        .delay(Some(MessageKind::Registration), None, None, late);
    let load = net.load(stream, &creator, &replicas, 4, pb::Ack::Quorum, 64);
    tokio::time::sleep(net.block_time() * 12).await;
    let acked = load.stop().await;
    assert!(
        acked.events.len() > 20,
        "the load made progress: {} acknowledged",
        acked.events.len()
    );
    let finalized = net
        .expect_finalized(stream, &acked.events, Duration::from_secs(60))
        .await;
    let chained = net.metric_total("rill_miniblocks_chained_total").await;
    eprintln!(
        "{} events acknowledged, {} miniblocks, {chained} chained",
        acked.events.len(),
        finalized.chain.len()
    );
    assert!(chained >= 1.0, "some round chained on a waiting candidate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_latency_histograms_of_the_path_of_an_event() {
    logs();
    let net = Testnet::builder().nodes(3).replication(3).start().await;
    let creator = NodeKey::generate();
    let (stream, _) = stream(&net, &creator).await;
    let client = net.client_with(0, creator.clone()).await;
    for i in 0..5 {
        client
            .add_message(stream, &format!("m{i}"), pb::Ack::Miniblock)
            .await
            .expect("in a miniblock");
    }
    let metrics = net.metrics(0).await;
    for family in [
        "rill_add_to_quorum_seconds_bucket",
        "rill_add_to_promoted_seconds_bucket",
        "rill_candidate_to_registered_seconds_bucket",
        "rill_registration_batch_size_bucket",
        "rill_p2p_gossip_published_total",
    ] {
        assert!(metrics.contains(family), "{family} is served:\n{metrics}");
    }
    // One scrape per node: a node records a registration's two metrics together, and may
    // record the last one between two scrapes (one CI run read 4 candidates and 5 lags).
    let totals = net
        .metric_totals(&[
            "rill_candidate_to_registered_seconds_count",
            "rill_registration_lag_blocks_count",
            "rill_registration_lag_blocks_sum",
        ])
        .await;
    let (produced, lags, lag_blocks) = (totals[0], totals[1], totals[2]);
    assert!(produced >= 1.0, "some node observed a registration");
    assert_eq!(
        lags, produced,
        "one registration lag per own candidate promoted"
    );
    assert!(
        lag_blocks >= lags,
        "a registration lands at least a block after its election"
    );
    assert!(net.metric(0, "rill_add_to_promoted_seconds_count").await >= 5.0);
    // The promotions were settled after their blocks, in steps, and none is left pending.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while net.metric_total("rill_store_promotions_pending").await > 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "promotions settle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        net.metric_total("rill_store_settle_step_seconds_count")
            .await
            >= 3.0
    );
}

/// An add whose acknowledgement cannot come (no blocks, so no miniblock) is answered
/// `TIMEOUT` by the node once its ack timeout has passed since the add arrived: a typed answer
/// that says where the event is, inside the client's own request timeout. The event stays in
/// the minipool and is finalized once the chain moves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_whose_miniblock_cannot_come_is_answered_timeout_and_finalized_later() {
    use rill_protocol::Payload;
    logs();
    let ack_timeout = Duration::from_secs(3);
    let net = Testnet::builder()
        .nodes(3)
        .replication(3)
        .ack_timeout(ack_timeout)
        .start()
        .await;
    let creator = NodeKey::generate();
    let (stream, _) = stream(&net, &creator).await;
    let client = net.client_with(0, creator.clone()).await;
    // Read the head before the clock starts: the add alone is timed.
    client.head(stream, true).await.expect("the stream's head");
    net.pause_chain().await;
    let sent = tokio::time::Instant::now();
    let payload = Payload::Message(pb::Message {
        data: b"waits for a block".to_vec(),
    });
    let mut added = client
        .add_batch(stream, vec![payload], pb::Ack::Miniblock)
        .await
        .expect("the node answers the request");
    let took = sent.elapsed();
    let added = added.pop().expect("one result");
    let refused = added.result.expect_err("no miniblock without blocks");
    assert_eq!(refused.code(), Some(pb::ErrorCode::Timeout), "{refused}");
    assert!(
        refused.to_string().contains("minipool"),
        "the answer says where the event is: {refused}"
    );
    assert!(
        took >= ack_timeout && took < ack_timeout + Duration::from_secs(2),
        "answered {took:?} after the add was sent (ack timeout {ack_timeout:?})"
    );
    net.resume_chain().await;
    let acked = HashSet::from([added.event.hash()]);
    net.expect_finalized(stream, &acked, Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_disk_fails_stops_and_every_acknowledged_event_is_still_finalized() {
    logs();
    let mut net = Testnet::builder().nodes(4).replication(3).start().await;
    let creator = NodeKey::generate();
    let (stream, replicas) = stream(&net, &creator).await;
    let load = net.load(stream, &creator, &replicas, 4, pb::Ack::Quorum, 64);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = replicas[1];
    net.faults().fail_store_writes(net.address(victim));
    // Fail-stop: the node does not go on with an engine ahead of its store.
    let stopped = net.wait_stopped(victim, Duration::from_secs(30)).await;
    assert!(
        stopped.is_err(),
        "the node stopped because a write failed: {stopped:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    net.faults().heal();
    net.restart(victim).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let acked = load.stop().await;
    assert!(
        acked.events.len() > 50,
        "the load made progress: {} acknowledged",
        acked.events.len()
    );
    // Every acknowledged event, on every replica, the restarted one included.
    net.expect_finalized(stream, &acked.events, Duration::from_secs(60))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_bad_events_finalizes_the_good_ones_and_stores_none_of_the_bad() {
    use rill_protocol::envelope::new_event;
    use rill_protocol::{Payload, seal};
    logs();
    let net = Testnet::builder().nodes(4).replication(3).start().await;
    let creator = NodeKey::generate();
    let (stream, replicas) = stream(&net, &creator).await;
    let client = net.client_with(replicas[0], creator.clone()).await;
    let head = client.head(stream, true).await.expect("the head");
    let message = |key: &NodeKey, text: &str| {
        let payload = Payload::Message(pb::Message {
            data: text.as_bytes().to_vec(),
        });
        seal(new_event(Some(head), now_ms(), payload), key).expect("sealed")
    };
    let good: Vec<_> = (0..8)
        .map(|i| message(&creator, &format!("good {i}")))
        .collect();
    // A damaged r could still recover to some key; a bad recovery id never does.
    let mut forged = message(&creator, "forged").envelope().clone();
    forged.signature[64] = 5;
    // The creator's event, signed by someone else.
    let mut impostor = message(&creator, "impostor").envelope().clone();
    let impostor_hash = rill_protocol::Hash::from_slice(&impostor.hash);
    impostor.signature = NodeKey::generate().sign_hash(&impostor_hash).to_vec();
    let outsider = message(&NodeKey::generate(), "not a member");
    let mut envelopes: Vec<pb::Envelope> = good.iter().map(|e| e.envelope().clone()).collect();
    envelopes.insert(2, forged.clone());
    envelopes.insert(5, outsider.envelope().clone());
    envelopes.insert(7, pb::Envelope::default());
    envelopes.insert(9, impostor);
    envelopes.push(good[0].envelope().clone());

    let results = client
        .add_envelopes(stream, envelopes, pb::Ack::Quorum)
        .await
        .expect("the request is answered");
    let codes: Vec<Option<pb::ErrorCode>> = results
        .iter()
        .map(|r| {
            r.error
                .as_ref()
                .map(|e| pb::ErrorCode::try_from(e.code).unwrap())
        })
        .collect();
    use pb::ErrorCode as C;
    let refused = [
        (2, C::BadSignature),
        (5, C::NotAMember),
        (7, C::Malformed),
        (9, C::CreatorMismatch),
        (12, C::Duplicate),
    ];
    for (i, code) in codes.iter().enumerate() {
        let expected = refused.iter().find(|(at, _)| *at == i).map(|(_, c)| *c);
        assert_eq!(*code, expected, "event {i}: {:?}", results[i].error);
    }

    let acked: HashSet<_> = good.iter().map(|e| e.hash()).collect();
    let finalized = net
        .expect_finalized(stream, &acked, Duration::from_secs(30))
        .await;
    for bad in [
        rill_protocol::framed_hash(rill_protocol::HashTag::Event, &forged.event),
        outsider.hash(),
        impostor_hash,
    ] {
        assert!(!finalized.events.contains(&bad), "{bad} is in the chain");
        for i in &replicas {
            let pool = net
                .client(*i)
                .await
                .get_stream(stream)
                .await
                .unwrap()
                .minipool;
            assert!(
                pool.iter().all(|e| e.hash != bad.to_vec()),
                "{bad} in node {i}'s minipool"
            );
        }
    }

    let too_many = vec![pb::Envelope::default(); rill_protocol::MAX_EVENTS_PER_REQUEST + 1];
    let error = client
        .add_envelopes(stream, too_many, pb::Ack::Local)
        .await
        .expect_err("over the limit");
    assert_eq!(error.code(), Some(C::TooLarge));
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Three nodes that each take at most `budget` client events per stream that its replicas do
/// not all hold yet, and a stream on all three.
async fn budgeted(budget: usize) -> (Testnet, NodeKey, StreamId) {
    let net = Testnet::builder()
        .nodes(3)
        .replication(3)
        .client_limits(rill_testnet::ClientLimits {
            unreplicated: Some(budget),
            ..rill_testnet::ClientLimits::default()
        })
        .start()
        .await;
    let creator = NodeKey::generate();
    let (stream, replicas) = stream(&net, &creator).await;
    assert_eq!(replicas, vec![0, 1, 2]);
    (net, creator, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_a_quorum_holds_its_clients_back_until_its_replicas_return() {
    logs();
    let budget = 4;
    let (mut net, creator, stream) = budgeted(budget).await;
    // Both other replicas crash: nothing node 0 takes can reach a quorum.
    net.crash(1).await;
    net.crash(2).await;
    let client = net.client_with(0, creator.clone()).await;
    let mut acked = HashSet::new();
    for i in 0..budget {
        let (event, _) = client
            .add_message(stream, &format!("before {i}"), pb::Ack::Local)
            .await
            .expect("durable on node 0, within the stream's budget");
        acked.insert(event.hash());
    }
    let held_back = client
        .add_message(stream, "one too many", pb::Ack::Local)
        .await
        .expect_err("the budget is spent: held back");
    assert_eq!(held_back.code(), Some(pb::ErrorCode::Unavailable));
    assert!(
        held_back
            .to_string()
            .contains("wait for the stream's replicas"),
        "says why: {held_back}"
    );
    assert_eq!(net.metric(0, "rill_client_adds_held_back_total").await, 1.0);
    // The replicas return: the events reach a quorum, the budget comes back, and adds go in.
    net.restart(1).await;
    net.restart(2).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut after = 0;
    while after < 2 * budget {
        match client
            .add_message(stream, &format!("after {after}"), pb::Ack::Local)
            .await
        {
            Ok((event, _)) => {
                acked.insert(event.hash());
                after += 1;
            }
            Err(e) if e.code() == Some(pb::ErrorCode::Unavailable) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still held back: {e}"
                );
            }
            Err(e) => panic!("add: {e}"),
        }
    }
    net.expect_finalized(stream, &acked, Duration::from_secs(60))
        .await;
}

/// Adds `count` events one after the other, each acknowledged once a quorum holds it, and
/// returns how many adds waited for room in the stream's budget meanwhile.
async fn paced_adds(
    net: &Testnet,
    client: &rill_client::Client,
    stream: StreamId,
    count: usize,
    acked: &mut HashSet<alloy_primitives::B256>,
) -> f64 {
    let paced = "rill_client_adds_paced_total";
    let before = net.metric(0, paced).await;
    for i in 0..count {
        let (event, _) = client
            .add_message(
                stream,
                &format!("paced {}", acked.len() + i),
                pb::Ack::Quorum,
            )
            .await
            .expect("held by a quorum, within the wait for the budget");
        acked.insert(event.hash());
    }
    net.metric(0, paced).await - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_wait_for_a_slow_replica_but_not_for_a_crashed_one() {
    logs();
    let budget = 4;
    let (mut net, creator, stream) = budgeted(budget).await;
    let client = net.client_with(0, creator.clone()).await;
    let mut acked = HashSet::new();
    // All three replicas keep up, and node 0 hears from each of them (so node 2 counts as
    // live from here on).
    paced_adds(&net, &client, stream, budget, &mut acked).await;
    // Node 2 is slow: node 0 hears that it holds the events two seconds late. A quorum
    // (nodes 0 and 1) still acknowledges each add at once, but the budget waits for node 2.
    let delay = Duration::from_secs(2);
    net.faults().delay(
        Some(MessageKind::GossipAnnouncements),
        Some(net.address(2)),
        Some(net.address(0)),
        delay,
    );
    let waited = paced_adds(&net, &client, stream, 3 * budget, &mut acked).await;
    assert!(waited >= 1.0, "no add waited for the slow replica");
    // Node 2 crashes. Once it has been silent for the pacing window, the writers go at the
    // quorum's pace again. The events added just before the crash keep their shares of the
    // budget until their miniblock is promoted (node 2's delayed announcements of them never
    // come), and rounds that node 2 would lead fail meanwhile: the wait covers the delay too
    // (without it, one add in one CI run still waited).
    net.crash(2).await;
    let window = Duration::from_millis(rill_engine::EngineConfig::default().pace_window_ms);
    tokio::time::sleep(delay + window + Duration::from_millis(2_500)).await;
    let waited = paced_adds(&net, &client, stream, 3 * budget, &mut acked).await;
    assert_eq!(waited, 0.0, "the writers waited for a crashed replica");
    // The promise holds once node 2 is back: every acknowledged event in one miniblock on
    // every replica, the chains identical and registered.
    net.faults().heal();
    net.restart(2).await;
    net.expect_finalized(stream, &acked, Duration::from_secs(60))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_arrive_again_late_are_not_checked_again() {
    logs();
    let net = Testnet::builder().nodes(3).replication(3).start().await;
    let creator = NodeKey::generate();
    let (stream, _) = stream(&net, &creator).await;
    let late = 2;
    // Node 0's full events reach node 2 three seconds late; node 1 announces them at once,
    // so node 2 fetches them first. Then the late copies arrive.
    net.faults().delay(
        Some(MessageKind::GossipEvents),
        Some(net.address(0)),
        Some(net.address(late)),
        Duration::from_secs(3),
    );
    let recovered = "rill_signature_recoveries_total";
    let before = net.metric(late, recovered).await;
    let client = net.client_with(0, creator.clone()).await;
    let mut acked = HashSet::new();
    let count = 10;
    for i in 0..count {
        let (event, _) = client
            .add_message(stream, &format!("m{i}"), pb::Ack::Quorum)
            .await
            .expect("acknowledged by nodes 0 and 1");
        acked.insert(event.hash());
    }
    net.expect_finalized(stream, &acked, Duration::from_secs(30))
        .await;
    let held = "rill_gossip_events_held_already_total";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while net.metric(late, held).await < count as f64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the late copies were answered without opening them"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        net.metric(late, "rill_requests_total{kind=\"GetEvents\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        net.metric(late, recovered).await - before,
        count as f64,
        "each event's signature checked once on node 2"
    );
}
