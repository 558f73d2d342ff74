//! Raw bytes on `/rill/events/1`: an oversized frame and garbage close the stream, and the node
//! keeps serving others.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, noise, tcp, yamux};
use rill_p2p::{NetworkEvent, NodeRequest, NodeResponse};
use rill_protocol::pb;

use crate::support::registered_nodes;

/// Writes whatever bytes it is given; reads whatever comes back.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.read_to_end(&mut buf).await?;
        if buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed without a response",
            ));
        }
        Ok(buf)
    }

    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&res).await?;
        io.close().await
    }
}

#[tokio::test]
async fn oversized_and_malformed_requests_close_the_stream_and_the_node_keeps_serving() {
    let mut nodes = registered_nodes(2).await;
    let mut raw = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                RawCodec,
                [(
                    StreamProtocol::new("/rill/events/1"),
                    ProtocolSupport::Outbound,
                )],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            )
        })
        .unwrap()
        .build();
    let target = nodes[0].peer_id();
    raw.dial(nodes[0].addr.clone()).unwrap();

    let oversized = {
        let mut bytes = (10_000_000u32).to_be_bytes().to_vec();
        bytes.extend(vec![0u8; 1024]);
        bytes
    };
    let garbage = {
        let mut bytes = 8u32.to_be_bytes().to_vec();
        bytes.extend([0xff; 8]);
        bytes
    };
    let mut outcomes = Vec::new();
    for request in [oversized, garbage] {
        let id = loop {
            // Send once connected.
            if raw.is_connected(&target) {
                break raw.behaviour_mut().send_request(&target, request);
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), raw.select_next_some()).await;
        };
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match raw.select_next_some().await {
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                        request_id,
                        error,
                        ..
                    }) if request_id == id => break Err(error.to_string()),
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    }) if request_id == id => break Ok(response),
                    _ => {}
                }
            }
        })
        .await
        .expect("an outcome");
        outcomes.push(outcome);
    }
    for outcome in &outcomes {
        assert!(
            outcome.is_err(),
            "the stream is closed without an answer: {outcome:?}"
        );
    }

    // The node still answers a registered node.
    let asker = nodes[1].p2p.clone();
    let mut node0 = nodes.remove(0);
    let server = tokio::spawn(async move {
        let responder = node0
            .next(Duration::from_secs(10), |e| match e {
                NetworkEvent::EventsRequest { responder, .. } => Some(responder),
                _ => None,
            })
            .await
            .expect("the request arrives");
        responder
            .send(pb::GetEventsResponse {
                envelopes: vec![],
                error: None,
            })
            .await;
        // Kept running until the asker has its answer.
        node0
    });
    let answer = asker
        .request(
            target,
            NodeRequest::Events(pb::GetEventsRequest {
                stream_id: vec![1; 32],
                hashes: vec![],
            }),
        )
        .await
        .expect("still served");
    assert!(matches!(answer, NodeResponse::Events(e) if e.error.is_none()));
    drop(server.await.unwrap());
}
