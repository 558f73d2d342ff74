//! Forwarding: a request about a stream this node does not hold goes to the stream's nodes,
//! one after the other, until one answers.

use alloy_primitives::Address;
use rill_p2p::PeerId;
use rill_protocol::{StreamId, pb};
use tracing::debug;

use super::{ClientService, fail};
use crate::convert::error;
use crate::directory::read;

impl ClientService {
    /// Sends the request to a node of the stream and relays its answer; a node that is down
    /// or busy is skipped for the next one.
    pub(super) async fn forward(
        &self,
        stream: StreamId,
        request: pb::ClientRequest,
    ) -> pb::ClientResponse {
        let targets: Vec<(Address, PeerId)> = {
            let directory = read(&self.directory);
            let Some(nodes) = directory.stream_nodes(&stream) else {
                return fail(error(
                    pb::ErrorCode::UnknownStream,
                    format!(
                        "no stream {stream} in the registry; create one with `rill stream create`"
                    ),
                ));
            };
            nodes
                .iter()
                .filter(|a| **a != self.me)
                .filter_map(|a| directory.node(a).map(|r| (*a, r.peer)))
                .collect()
        };
        for (address, peer) in targets {
            match self.p2p.client_request(peer, request.clone()).await {
                Ok(response)
                    if response
                        .error
                        .as_ref()
                        .is_some_and(|e| e.code == pb::ErrorCode::Unavailable as i32) =>
                {
                    debug!(%stream, node = %address, "stream node busy; trying the next");
                }
                Ok(response) => return response,
                Err(e) => {
                    debug!(%stream, node = %address, %e, "stream node unreachable; trying the next")
                }
            }
        }
        fail(error(
            pb::ErrorCode::Unavailable,
            format!("none of the nodes of stream {stream} answered; try again shortly"),
        ))
    }
}
