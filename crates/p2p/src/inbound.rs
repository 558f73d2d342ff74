//! Inbound requests: completing this node's own requests, and what differs between the two
//! node protocols when one arrives.

use std::collections::HashMap;

use alloy_primitives::Address;
use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use rill_protocol::pb;
use tokio::sync::oneshot;
use tracing::debug;

use crate::RequestError;
use crate::behaviour::Behaviour;
use crate::handle::{NetworkEvent, Responder};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

/// What differs between the two node protocols for an inbound request.
pub(crate) trait NodeProtocol {
    type Request;
    type Response;
    fn event(
        from: Address,
        request: Self::Request,
        responder: Responder<Self::Response>,
    ) -> NetworkEvent;
    fn responder(event: NetworkEvent) -> Option<Responder<Self::Response>>;
    fn refusal(error: pb::Error) -> Self::Response;
    fn send(
        behaviour: &mut Behaviour,
        channel: ResponseChannel<Self::Response>,
        response: Self::Response,
    );
}

/// `/rill/events/1`.
pub(crate) struct EventsProtocol;

impl NodeProtocol for EventsProtocol {
    type Request = pb::GetEventsRequest;
    type Response = pb::GetEventsResponse;

    fn event(
        from: Address,
        request: Self::Request,
        responder: Responder<Self::Response>,
    ) -> NetworkEvent {
        NetworkEvent::EventsRequest {
            from,
            request,
            responder,
        }
    }

    fn responder(event: NetworkEvent) -> Option<Responder<Self::Response>> {
        match event {
            NetworkEvent::EventsRequest { responder, .. } => Some(responder),
            _ => None,
        }
    }

    fn refusal(error: pb::Error) -> Self::Response {
        pb::GetEventsResponse {
            envelopes: vec![],
            error: Some(error),
        }
    }

    fn send(
        behaviour: &mut Behaviour,
        channel: ResponseChannel<Self::Response>,
        response: Self::Response,
    ) {
        let _ = behaviour.events.send_response(channel, response);
    }
}

/// `/rill/miniblock/1`.
pub(crate) struct MiniblockProtocol;

impl NodeProtocol for MiniblockProtocol {
    type Request = pb::MiniblockRequest;
    type Response = pb::MiniblockResponse;

    fn event(
        from: Address,
        request: Self::Request,
        responder: Responder<Self::Response>,
    ) -> NetworkEvent {
        NetworkEvent::MiniblockRequest {
            from,
            request,
            responder,
        }
    }

    fn responder(event: NetworkEvent) -> Option<Responder<Self::Response>> {
        match event {
            NetworkEvent::MiniblockRequest { responder, .. } => Some(responder),
            _ => None,
        }
    }

    fn refusal(error: pb::Error) -> Self::Response {
        pb::MiniblockResponse {
            kind: None,
            error: Some(error),
        }
    }

    fn send(
        behaviour: &mut Behaviour,
        channel: ResponseChannel<Self::Response>,
        response: Self::Response,
    ) {
        let _ = behaviour.miniblock.send_response(channel, response);
    }
}

/// Routes a request-response event: completes our outbound requests and returns an inbound one.
pub(crate) fn inbound<Req, Resp, Out>(
    event: request_response::Event<Req, Resp>,
    pending: &mut HashMap<OutboundRequestId, Reply<Out>>,
    wrap: impl FnOnce(Resp) -> Out,
) -> Option<(PeerId, Req, ResponseChannel<Resp>)> {
    match event {
        request_response::Event::Message { peer, message, .. } => match message {
            request_response::Message::Request {
                request, channel, ..
            } => Some((peer, request, channel)),
            request_response::Message::Response {
                request_id,
                response,
            } => {
                if let Some(reply) = pending.remove(&request_id) {
                    let _ = reply.send(Ok(wrap(response)));
                }
                None
            }
        },
        request_response::Event::OutboundFailure {
            request_id, error, ..
        } => {
            if let Some(reply) = pending.remove(&request_id) {
                let _ = reply.send(Err(error.into()));
            }
            None
        }
        request_response::Event::InboundFailure { peer, error, .. } => {
            debug!(%peer, %error, "inbound request failed");
            None
        }
        request_response::Event::ResponseSent { .. } => None,
    }
}

pub(crate) fn not_a_node(peer: &PeerId) -> pb::Error {
    pb::Error {
        code: pb::ErrorCode::NotANode as i32,
        message: format!(
            "peer {peer} is not a registered node; node protocols are for nodes (clients use /rill/client/1)"
        ),
        ..Default::default()
    }
}

pub(crate) fn busy() -> pb::Error {
    pb::Error {
        code: pb::ErrorCode::Unavailable as i32,
        message: "the node is busy; try again shortly".into(),
        ..Default::default()
    }
}
