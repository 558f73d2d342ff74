use std::time::Duration;

use rill_protocol::{NodeKey, StreamId, pb};

use rill_tests::{Net, chain, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_member_is_refused_until_its_join_is_promoted() {
    let net = Net::start(4, 3).await;
    let alice = NodeKey::generate();
    let carol = NodeKey::generate();
    let created = net
        .client(0, &alice)
        .await
        .create_stream(None)
        .await
        .unwrap();
    let stream = StreamId::from_slice(&created.stream_id).unwrap();
    let (replicas, _) = net.placement(&created);
    let carol_client = net.client(replicas[0], &carol).await;

    let refused = carol_client
        .add_message(stream, "let me in", pb::Ack::Local)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(pb::ErrorCode::NotAMember), "{refused}");

    let (join, _) = carol_client
        .membership(stream, true, pb::Ack::Local)
        .await
        .expect("a join is admitted");
    // The join is only in the minipool: carol is still not a member.
    let early = carol_client
        .add_message(stream, "too early", pb::Ack::Local)
        .await
        .unwrap_err();
    assert_eq!(early.code(), Some(pb::ErrorCode::NotAMember), "{early}");

    eventually(
        Duration::from_secs(30),
        "the join is in a promoted miniblock",
        || async {
            chain(&carol_client, stream)
                .await
                .is_some_and(|c| c.event_hashes.contains(&join.hash()))
        },
    )
    .await;
    carol_client.head(stream, true).await.unwrap();
    carol_client
        .add_message(stream, "now a member", pb::Ack::Quorum)
        .await
        .expect("accepted after the join");
}
