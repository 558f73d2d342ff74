//! Who may do what, on whole nodes over real libp2p and a real anvil: outsiders overhear no
//! gossip, streams' access policies hold, and clients are limited.

use std::collections::HashSet;
use std::time::Duration;

use alloy_primitives::{Address, B256};
use futures::StreamExt;
use rill_protocol::envelope::new_event;
use rill_protocol::{NodeKey, ParsedEvent, StreamId, pb, seal};
use rill_testnet::{ClientLimits, Outsider, Rate, Testnet};

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_subscribed_to_the_nodes_inboxes_receives_nothing_while_they_gossip() {
    logs();
    let net = Testnet::builder().nodes(3).replication(3).start().await;
    let nodes = (0..net.len())
        .map(|i| (net.address(i), net.multiaddr(i)))
        .collect();
    let refused_before = net
        .metric_total("rill_p2p_gossip_subscriptions_refused_total")
        .await;
    let outsider = Outsider::start(nodes);
    // Every node sees the outsider's subscription to its inbox (and refuses it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while net
        .metric_total("rill_p2p_gossip_subscriptions_refused_total")
        .await
        < refused_before + net.len() as f64
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outsider's subscriptions reach the nodes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let published_before = net.metric_total("rill_p2p_gossip_published_total").await;
    let creator = NodeKey::generate();
    let created = net
        .client_with(0, creator.clone())
        .await
        .create_stream(None)
        .await
        .expect("created");
    let stream = StreamId::from_slice(&created.stream_id).unwrap();
    let mut acked = HashSet::new();
    for i in 0..3 {
        let client = net.client_with(i, creator.clone()).await;
        for j in 0..5 {
            let (event, _) = client
                .add_message(stream, &format!("from {i}: {j}"), pb::Ack::Quorum)
                .await
                .expect("acknowledged");
            acked.insert(event.hash());
        }
    }
    net.expect_finalized(stream, &acked, Duration::from_secs(30))
        .await;
    assert!(
        net.metric_total("rill_p2p_gossip_published_total").await > published_before,
        "the stream's nodes gossiped to each other's inboxes"
    );
    assert!(
        outsider.node_subscriptions() > 0,
        "gossipsub spoke with the outsider (it saw the nodes' subscriptions)"
    );
    assert_eq!(outsider.messages(), 0, "the outsider overheard gossip");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A join (or leave) of `address` signed by `key`, on top of `head`.
fn membership(key: &NodeKey, head: (u64, B256), join: bool, address: Address) -> ParsedEvent {
    let payload = rill_client::membership(join, address);
    seal(new_event(Some(head), now_ms(), payload), key).expect("sealed")
}

/// Sends `event` on its own and returns the node's refusal code (None: accepted).
async fn send(
    client: &rill_client::Client,
    stream: StreamId,
    event: &ParsedEvent,
) -> Option<pb::ErrorCode> {
    let results = client
        .add_envelopes(stream, vec![event.envelope().clone()], pb::Ack::Local)
        .await
        .expect("answered");
    results[0]
        .error
        .as_ref()
        .map(|e| pb::ErrorCode::try_from(e.code).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_only_streams_rules_hold_on_every_replica_and_nothing_refused_is_stored() {
    logs();
    let net = Testnet::builder().nodes(3).replication(3).start().await;
    let (creator, invitee, stranger) = (
        NodeKey::generate(),
        NodeKey::generate(),
        NodeKey::generate(),
    );
    let settings = pb::StreamSettings {
        join_policy: pb::JoinPolicy::Invite as i32,
        ..Default::default()
    };
    let admins = net.client_with(0, creator.clone()).await;
    let created = admins
        .create_stream_with(None, settings)
        .await
        .expect("created");
    let stream = StreamId::from_slice(&created.stream_id).unwrap();

    // Joining by oneself is refused, with what is needed.
    let strangers = net.client_with(1, stranger.clone()).await;
    let head = strangers.head(stream, true).await.unwrap();
    let self_join = membership(&stranger, head, true, stranger.address());
    assert_eq!(
        send(&strangers, stream, &self_join).await,
        Some(pb::ErrorCode::InviteOnly)
    );

    // A member invites: the invitee posts from the next miniblock on.
    let (invited, _) = admins
        .member(stream, true, invitee.address(), pb::Ack::Miniblock)
        .await
        .expect("the creator invites");
    // From the next miniblock on each replica: once every replica has promoted the invite.
    net.expect_finalized(stream, &[invited.hash()].into(), Duration::from_secs(30))
        .await;
    let invitees = net.client_with(2, invitee.clone()).await;
    let (posted, _) = invitees
        .add_message(stream, "hello", pb::Ack::Miniblock)
        .await
        .expect("the invitee posts");

    // A member that is not an admin cannot remove another.
    let head = invitees.head(stream, true).await.unwrap();
    let kick = membership(&invitee, head, false, creator.address());
    assert_eq!(
        send(&invitees, stream, &kick).await,
        Some(pb::ErrorCode::NotAnAdmin)
    );

    // The admin (the creator: the inception named none) removes the invitee.
    let (removed, _) = admins
        .member(stream, false, invitee.address(), pb::Ack::Miniblock)
        .await
        .expect("the admin removes a member");
    net.expect_finalized(stream, &[removed.hash()].into(), Duration::from_secs(30))
        .await;
    let refused_after = invitees
        .add_message(stream, "still here?", pb::Ack::Local)
        .await
        .expect_err("a removed member cannot post");
    assert_eq!(refused_after.code(), Some(pb::ErrorCode::NotAMember));

    let acked: HashSet<_> = [invited.hash(), posted.hash(), removed.hash()].into();
    let finalized = net
        .expect_finalized(stream, &acked, Duration::from_secs(30))
        .await;
    for bad in [self_join.hash(), kick.hash()] {
        assert!(!finalized.events.contains(&bad), "{bad} is in the chain");
        for i in 0..net.len() {
            let pool = net
                .client(i)
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
    assert!(
        net.metric(1, "rill_inputs_rejected_total{reason=\"invite_only\"}")
            .await
            >= 1.0
    );
    assert!(
        net.metric(2, "rill_inputs_rejected_total{reason=\"not_an_admin\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_limited_and_another_clients_events_still_finalize() {
    logs();
    let net = Testnet::builder()
        .nodes(3)
        .replication(3)
        .client_limits(ClientLimits {
            requests: Some(Rate {
                per_second: 50.0,
                burst: 50.0,
            }),
            stream_creations: Some(Rate::per_hour(2.0)),
            ..ClientLimits::default()
        })
        .start()
        .await;
    let creator = NodeKey::generate();
    let writer = net.client_with(0, creator.clone()).await;
    let created = writer.create_stream(None).await.expect("created");
    let stream = StreamId::from_slice(&created.stream_id).unwrap();

    // One client floods node 0 with adds (empty envelopes), 64 at a time.
    let flooder = net.client_with(0, NodeKey::generate()).await.unpaced();
    let flood = tokio::spawn(async move {
        futures::stream::iter(0..2_000)
            .map(|_| flooder.add_envelopes(stream, vec![pb::Envelope::default()], pb::Ack::Local))
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
    });
    // Meanwhile another client adds its events through the same node.
    let mut acked = HashSet::new();
    for i in 0..20 {
        let (event, _) = writer
            .add_message(stream, &format!("m{i}"), pb::Ack::Quorum)
            .await
            .expect("the other client is served");
        acked.insert(event.hash());
    }
    let answers = flood.await.unwrap();
    let limited = answers
        .iter()
        .filter(|a| matches!(a, Err(e) if e.code() == Some(pb::ErrorCode::RateLimited)))
        .count();
    let judged = answers
        .iter()
        .filter(|a| matches!(a, Ok(r) if r[0].error.as_ref().is_some_and(|e| e.code == pb::ErrorCode::Malformed as i32)))
        .count();
    assert_eq!(
        limited + judged,
        answers.len(),
        "each flood request is refused"
    );
    assert!(
        limited > 1_000,
        "the flood is mostly refused at the edge ({limited} of 2,000)"
    );
    assert!(
        judged >= 50,
        "within its rate the flooder is served ({judged})"
    );
    assert_eq!(
        net.metric(0, "rill_p2p_client_requests_limited_total")
            .await,
        limited as f64
    );
    net.expect_finalized(stream, &acked, Duration::from_secs(30))
        .await;

    // A client that paces itself (the default) waits as told: all of its requests are served.
    let paced = net.client_with(0, NodeKey::generate()).await;
    let limited_before = net
        .metric(0, "rill_p2p_client_requests_limited_total")
        .await;
    let answers: Vec<_> = futures::stream::iter(0..120)
        .map(|_| paced.add_envelopes(stream, vec![pb::Envelope::default()], pb::Ack::Local))
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(
        answers.iter().all(|a| matches!(a, Ok(r) if r[0].error.as_ref().is_some_and(|e| e.code == pb::ErrorCode::Malformed as i32))),
        "every paced request is served: {:?}",
        answers.iter().find(|a| a.is_err())
    );
    assert!(
        net.metric(0, "rill_p2p_client_requests_limited_total")
            .await
            > limited_before,
        "120 requests at 50/s were paced, not sent at once"
    );

    // Stream creations: two per client per hour; the third is refused, another client's not.
    writer
        .create_stream(None)
        .await
        .expect("the second creation");
    let refused = writer
        .create_stream(None)
        .await
        .expect_err("over the budget");
    assert_eq!(
        refused.code(),
        Some(pb::ErrorCode::QuotaExceeded),
        "{refused}"
    );
    assert_eq!(
        net.metric(0, "rill_stream_creations_refused_total").await,
        1.0
    );
    net.client_with(0, NodeKey::generate())
        .await
        .create_stream(None)
        .await
        .expect("another client has its own budget");
}
