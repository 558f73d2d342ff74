//! Client requests over one connection on 127.0.0.1, answered at once by the node's side:
//! round trips one at a time (their latency), then 16 in flight (their rate). What a request
//! costs the transport (noise, yamux, and over `/rill/client/1` a substream and its
//! protocol's negotiation each), without the node's work. Each measurement runs twice: over
//! `/rill/client/1`, then over client sessions, from two clients of one node, alternating.
//! `cargo bench -p rill-p2p --bench requests`.

use std::time::{Duration, Instant};

use rill_p2p::{NetworkEvent, P2p, P2pConfig, PeerId, spawn};
use rill_protocol::{NodeKey, pb};

/// Requests per measurement.
const REQUESTS: usize = 20_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
}

async fn run() {
    // No client rate: every request is answered, none refused at the edge.
    let config = P2pConfig {
        client_rate: None,
        ..P2pConfig::node(vec!["/ip4/127.0.0.1/tcp/0".parse().expect("an address")])
    };
    let (node, mut events) = spawn(&NodeKey::generate(), config)
        .await
        .expect("the node's swarm starts");
    let addr = match events.recv().await {
        Some(NetworkEvent::Listening(addr)) => addr,
        other => panic!("expected the listen address first, got {other:?}"),
    };
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let NetworkEvent::ClientRequest { responder, .. } = event {
                tokio::spawn(responder.send(pb::ClientResponse {
                    kind: Some(pb::client_response::Kind::Info(pb::InfoResponse::default())),
                    error: None,
                }));
            }
        }
    });
    let to = node.peer_id();
    let mut clients = Vec::new();
    for sessions in [false, true] {
        let config = P2pConfig {
            client_sessions: sessions,
            ..P2pConfig::client()
        };
        let (client, mut client_events) = spawn(&NodeKey::generate(), config)
            .await
            .expect("the client's swarm starts");
        tokio::spawn(async move { while client_events.recv().await.is_some() {} });
        client
            .dial(to, Some(addr.clone()))
            .await
            .expect("the client connects");
        measure(&client, to, 1, 1_000).await;
        clients.push((sessions, client));
    }
    println!("| requests in flight | over | requests/s | latency p50 / p99 |");
    println!("|---:|---|---:|---:|");
    for in_flight in [1, 16] {
        for (sessions, client) in &clients {
            let over = if *sessions {
                "client sessions"
            } else {
                "`/rill/client/1`"
            };
            let (rate, p50, p99) = measure(client, to, in_flight, REQUESTS).await;
            println!("| {in_flight} | {over} | {rate:.0} | {p50:.0?} / {p99:.0?} |");
        }
    }
}

/// `requests` Info requests, `in_flight` at a time: their rate and latency p50 / p99.
async fn measure(
    client: &P2p,
    to: PeerId,
    in_flight: usize,
    requests: usize,
) -> (f64, Duration, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut took = Vec::with_capacity(requests / in_flight);
                for _ in 0..requests / in_flight {
                    let sent = Instant::now();
                    let request = pb::ClientRequest {
                        kind: Some(pb::client_request::Kind::Info(pb::InfoRequest::default())),
                    };
                    client.client_request(to, request).await.expect("an answer");
                    took.push(sent.elapsed());
                }
                took
            })
        })
        .collect();
    let mut took = Vec::with_capacity(requests);
    for task in tasks {
        took.extend(task.await.expect("the task ends"));
    }
    let rate = took.len() as f64 / start.elapsed().as_secs_f64();
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    (rate, at(0.5), at(0.99))
}
