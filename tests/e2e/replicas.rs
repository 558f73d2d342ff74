use std::time::Duration;

use rill_protocol::{NodeKey, StreamId, pb};

use rill_tests::{Net, chain, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_events_from_two_clients_end_identical_on_every_replica_and_registered() {
    let net = Net::start(4, 3).await;
    let alice = NodeKey::generate();
    let bob = NodeKey::generate();
    let creator = net.client(0, &alice).await;
    let created = creator.create_stream(None).await.expect("stream created");
    let stream = StreamId::from_slice(&created.stream_id).unwrap();
    let (replicas, outsider) = net.placement(&created);
    assert_eq!(replicas.len(), 3);
    let outsider = outsider.expect("4 nodes, replication 3");

    // Alice talks to the node that does not hold the stream (it forwards); Bob to a replica.
    let alice_client = net.client(outsider, &alice).await;
    let bob_client = net.client(replicas[0], &bob).await;
    bob_client
        .membership(stream, true, pb::Ack::Miniblock)
        .await
        .expect("bob joins");
    let post = |client: rill_client::Client, who: &'static str| async move {
        for i in 0..100 {
            client
                .add_message(stream, &format!("{who} {i}"), pb::Ack::Quorum)
                .await
                .unwrap_or_else(|e| panic!("{who} {i}: {e}"));
        }
    };
    tokio::join!(post(alice_client, "alice"), post(bob_client, "bob"));

    let mut clients = Vec::new();
    for i in &replicas {
        clients.push(net.client(*i, &NodeKey::generate()).await);
    }
    eventually(
        Duration::from_secs(90),
        "every replica holds all 200 messages in miniblocks",
        || async {
            for client in &clients {
                match chain(client, stream).await {
                    Some(c) if c.messages.len() == 200 && c.minipool == 0 => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await;

    // Identical chains, every message once, and the registry names the head.
    let registry = net.registry();
    eventually(
        Duration::from_secs(30),
        "the replicas and the registry agree on the head",
        || async {
            let record = registry.stream(stream).await.unwrap().unwrap();
            let mut chains = Vec::new();
            for client in &clients {
                chains.push(chain(client, stream).await.unwrap());
            }
            let first = &chains[0];
            chains.iter().all(|c| c.hashes == first.hashes)
                && record.last_miniblock_num + 1 == first.hashes.len() as u64
                && record.last_miniblock_hash == *first.hashes.last().unwrap()
        },
    )
    .await;
    let c = chain(&clients[0], stream).await.unwrap();
    let mut messages = c.messages.clone();
    messages.sort();
    messages.dedup();
    assert_eq!(messages.len(), 200, "each message exactly once");
    let mut events = c.event_hashes.clone();
    events.sort();
    events.dedup();
    assert_eq!(events.len(), c.event_hashes.len(), "no event twice");

    // A client's head: the last miniblock's header alone, from a replica or forwarded by the
    // node that does not hold the stream.
    let head = (c.hashes.len() as u64 - 1, *c.hashes.last().unwrap());
    clients.push(net.client(outsider, &NodeKey::generate()).await);
    for client in &clients {
        let page = client.get_stream_page(stream, true, 0, 0).await.unwrap();
        assert_eq!(page.head_num, head.0);
        assert!(page.minipool.is_empty());
        let [miniblock] = page.miniblocks.as_slice() else {
            panic!("one miniblock, not {}", page.miniblocks.len());
        };
        assert!(
            miniblock.events.is_empty(),
            "a head-only read leaves the events out"
        );
        assert_eq!(client.head(stream, true).await.unwrap(), head);
    }
    drop(net);
}
