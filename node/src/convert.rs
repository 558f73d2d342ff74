//! Between the engine's types and their protobuf wire form. Opening (hash and signature
//! checks) happens on the worker pool, never here.

use alloy_primitives::B256;
use rill_engine::{Holdings, ProposalReply, ProposalRequest, Request};
use rill_p2p::NodeRequest;
use rill_protocol::{ParsedEvent, StreamId, pb};

use crate::workers::Opener;

/// 32-byte hashes from their wire form; `None` if one is not 32 bytes.
pub(crate) fn hashes(wire: &[Vec<u8>]) -> Option<Vec<B256>> {
    wire.iter()
        .map(|h| B256::try_from(h.as_slice()).ok())
        .collect()
}

pub(crate) fn hashes_to_pb(hashes: &[B256]) -> Vec<Vec<u8>> {
    hashes.iter().map(|h| h.to_vec()).collect()
}

/// The wire form of one of the engine's requests.
pub(crate) fn request_to_pb(stream: StreamId, request: Request) -> NodeRequest {
    use pb::miniblock_request::Kind;
    let stream_id = stream.0.to_vec();
    let miniblock = |kind| NodeRequest::Miniblock(pb::MiniblockRequest { kind: Some(kind) });
    match request {
        Request::Proposal(p) => miniblock(Kind::Propose(pb::ProposeMiniblockRequest {
            stream_id,
            num: p.num,
            prev_hash: p.prev_hash.to_vec(),
            hashes: hashes_to_pb(&p.hashes),
            chain_block: p.chain_block,
            difference: p.difference,
        })),
        Request::SaveCandidate {
            miniblock: candidate,
            held,
        } => {
            // The envelopes the replica proposed stay behind: its minipool holds them.
            let omits_proposed = held.iter().any(|h| *h);
            let events = candidate
                .events()
                .iter()
                .zip(held.iter().chain(std::iter::repeat(&false)))
                .filter(|(_, held)| !**held)
                .map(|(e, _)| e.envelope().clone())
                .collect();
            let header = Some(candidate.header_event().envelope().clone());
            miniblock(Kind::SaveCandidate(pb::SaveMiniblockCandidateRequest {
                stream_id,
                candidate: Some(pb::Miniblock { header, events }),
                omits_proposed,
            }))
        }
        Request::GetEvents(hashes) => NodeRequest::Events(pb::GetEventsRequest {
            stream_id,
            hashes: hashes_to_pb(&hashes),
        }),
        Request::GetMiniblocks { from, to } => {
            miniblock(Kind::GetMiniblocks(pb::GetMiniblocksRequest {
                stream_id,
                from,
                to,
                include_candidate: true,
            }))
        }
    }
}

/// A proposal request from the wire; `None` if a hash is not 32 bytes.
pub(crate) fn proposal_request(p: &pb::ProposeMiniblockRequest) -> Option<ProposalRequest> {
    Some(ProposalRequest {
        num: p.num,
        prev_hash: B256::try_from(p.prev_hash.as_slice()).ok()?,
        hashes: hashes(&p.hashes)?,
        chain_block: p.chain_block,
        difference: p.difference,
    })
}

pub(crate) fn reply_to_pb(reply: ProposalReply) -> pb::ProposeMiniblockResponse {
    let (listed, difference, lacking, extra) = match reply.holds {
        Holdings::Listed(hashes) => (hashes, false, vec![], vec![]),
        Holdings::Difference { lacking, extra } => (vec![], true, lacking, extra),
    };
    pb::ProposeMiniblockResponse {
        num: reply.num,
        prev_hash: reply.prev_hash.to_vec(),
        hashes: hashes_to_pb(&listed),
        difference,
        lacking,
        extra: hashes_to_pb(&extra),
        snapshot_vote: reply.snapshot_vote,
        missing: reply
            .missing
            .into_iter()
            .map(ParsedEvent::into_envelope)
            .collect(),
    }
}

/// A replica's proposal from the wire, its events opened; `None` if anything is malformed.
pub(crate) fn reply_from_pb(
    reply: pb::ProposeMiniblockResponse,
    opener: &Opener,
) -> Option<ProposalReply> {
    let holds = if reply.difference {
        Holdings::Difference {
            lacking: reply.lacking,
            extra: hashes(&reply.extra)?,
        }
    } else {
        Holdings::Listed(hashes(&reply.hashes)?)
    };
    Some(ProposalReply {
        num: reply.num,
        prev_hash: B256::try_from(reply.prev_hash.as_slice()).ok()?,
        holds,
        snapshot_vote: reply.snapshot_vote,
        missing: reply
            .missing
            .into_iter()
            .map(|e| opener.open(e).ok())
            .collect::<Option<_>>()?,
    })
}

/// A typed error for a response.
pub(crate) fn error(code: pb::ErrorCode, message: impl Into<String>) -> pb::Error {
    pb::Error {
        code: code as i32,
        message: message.into(),
        ..Default::default()
    }
}
