//! The read server: `GetEvents`, `GetMiniblocks` and `GetStream` served from the store on
//! their own task (and blocking threads), never on the node's loop. Every answer is bounded in
//! bytes, far below the transport's frame limit: the asker pages through the rest. Its queue
//! is bounded: when it is full the asker is told the node is busy.

use std::sync::Arc;

use alloy_primitives::B256;
use rill_protocol::{StreamId, pb};
use rill_store::{Store, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::warn;

use crate::convert::error;
use crate::workers::Busy;

/// Reads served at once (each on a blocking thread).
const CONCURRENT_READS: usize = 4;
/// Bytes of events or miniblocks in one answer (at least one item, which the rules bound to
/// `maxMiniblockBytes`); the frame limit is 16 MiB.
pub(crate) const PAGE_BYTES: usize = 2 * 1024 * 1024;

/// A read.
#[derive(Debug)]
pub(crate) enum Query {
    /// Events by hash, from minipools and miniblocks.
    Events(pb::GetEventsRequest),
    /// Promoted miniblocks of a range, and the candidates after them.
    Miniblocks(pb::GetMiniblocksRequest),
    /// A stream: its nodes, miniblocks and minipool.
    Stream(pb::GetStreamRequest),
}

/// What a read found.
#[derive(Debug)]
pub(crate) enum Found {
    Events(Vec<pb::Envelope>),
    Miniblocks(pb::GetMiniblocksResponse),
    Stream(pb::GetStreamResponse),
}

type Reply = oneshot::Sender<Result<Found, pb::Error>>;

/// Handle to the read server.
#[derive(Clone, Debug)]
pub(crate) struct Reads {
    queue: mpsc::Sender<(Query, Reply)>,
}

impl Reads {
    /// Starts the read server on its own handle to the store.
    pub(crate) fn spawn(store: Store, capacity: usize) -> (Self, impl Future<Output = ()>) {
        let (queue, jobs) = mpsc::channel(capacity.max(1));
        (Self { queue }, serve(store, jobs))
    }

    /// Queues a read if there is room.
    pub(crate) fn try_ask(
        &self,
        query: Query,
    ) -> Result<oneshot::Receiver<Result<Found, pb::Error>>, Busy> {
        let (reply, answer) = oneshot::channel();
        self.queue.try_send((query, reply)).map_err(|_| Busy)?;
        Ok(answer)
    }

    /// Reads, waiting for room in the queue.
    pub(crate) async fn ask(&self, query: Query) -> Result<Found, pb::Error> {
        let (reply, answer) = oneshot::channel();
        let stopped = || error(pb::ErrorCode::Unavailable, "the node is stopping");
        self.queue
            .send((query, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn serve(store: Store, mut jobs: mpsc::Receiver<(Query, Reply)>) {
    let permits = Arc::new(Semaphore::new(CONCURRENT_READS));
    while let Some((query, reply)) = jobs.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let found = read(&store, query).map_err(|e| {
                warn!(%e, "store read failed");
                error(pb::ErrorCode::Internal, format!("store: {e}"))
            });
            drop(permit);
            let _ = reply.send(found.and_then(|f| f));
        });
    }
}

fn stream_id(bytes: &[u8]) -> Result<StreamId, pb::Error> {
    StreamId::from_slice(bytes)
        .ok_or_else(|| error(pb::ErrorCode::Malformed, "a stream id is 32 bytes"))
}

/// Serves one query. The outer error is the store's, the inner one the asker's.
fn read(store: &Store, query: Query) -> Result<Result<Found, pb::Error>, StoreError> {
    Ok(match query {
        Query::Events(request) => match stream_id(&request.stream_id) {
            Err(e) => Err(e),
            Ok(stream) => {
                let hashes: Vec<B256> = request
                    .hashes
                    .iter()
                    .filter_map(|h| B256::try_from(h.as_slice()).ok())
                    .collect();
                Ok(Found::Events(
                    store.events_page(&stream, &hashes, PAGE_BYTES)?,
                ))
            }
        },
        Query::Miniblocks(request) => match stream_id(&request.stream_id) {
            Err(e) => Err(e),
            Ok(stream) => {
                let (miniblocks, complete) =
                    store.miniblocks_page(&stream, request.from, request.to, PAGE_BYTES)?;
                // Candidates come with the page that reaches the end.
                let candidates = if request.include_candidate && complete {
                    store.candidates(&stream)?
                } else {
                    Vec::new()
                };
                Ok(Found::Miniblocks(pb::GetMiniblocksResponse {
                    miniblocks,
                    candidates,
                }))
            }
        },
        Query::Stream(request) => match stream_id(&request.stream_id) {
            Err(e) => Err(e),
            Ok(stream) => read_stream(store, stream, &request)?,
        },
    })
}

fn not_stored(stream: StreamId) -> pb::Error {
    error(
        pb::ErrorCode::UnknownStream,
        format!("stream {stream} is not stored here"),
    )
}

/// A page of a stream: its miniblocks from `from` and the minipool with the page that reaches
/// the head; or, asked for the head only, the head's header alone.
fn read_stream(
    store: &Store,
    stream: StreamId,
    request: &pb::GetStreamRequest,
) -> Result<Result<Found, pb::Error>, StoreError> {
    let Some((head, _)) = store.head(&stream)? else {
        return Ok(Err(not_stored(stream)));
    };
    if request.head_only {
        // The head and its header are written together; a stream removed since the head was
        // read has neither.
        let Some(header) = store.header(&stream, head)? else {
            return Ok(Err(not_stored(stream)));
        };
        return Ok(Ok(Found::Stream(pb::GetStreamResponse {
            stream_id: stream.0.to_vec(),
            served_by: Vec::new(),
            nodes: store.nodes(&stream)?.iter().map(|a| a.to_vec()).collect(),
            miniblocks: vec![pb::Miniblock {
                header: Some(header),
                events: Vec::new(),
            }],
            minipool: Vec::new(),
            head_num: head,
            next_from: None,
        })));
    }
    let to = if request.to == 0 {
        head
    } else {
        request.to.min(head)
    };
    let from = request.from.min(to);
    let (miniblocks, complete) = store.miniblocks_page(&stream, from, to, PAGE_BYTES)?;
    let last = miniblocks.len() as u64;
    if !complete
        && let Some(gap) = store.gap(&stream)?
        && (gap.down_to..gap.below).contains(&(from + last))
    {
        return Ok(Err(error(
            pb::ErrorCode::Unavailable,
            format!(
                "miniblocks {}..{} of stream {stream} are still being backfilled here; ask another replica",
                gap.down_to, gap.below
            ),
        )));
    }
    let next_from = (!complete).then_some(from + last);
    let minipool = if complete && to == head {
        let mut budget = PAGE_BYTES;
        store
            .minipool(&stream)?
            .into_iter()
            .take_while(|e| {
                let size = e.event.len() + 100;
                let fits = size <= budget;
                budget = budget.saturating_sub(size);
                fits
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Ok(Found::Stream(pb::GetStreamResponse {
        stream_id: stream.0.to_vec(),
        served_by: Vec::new(),
        nodes: store.nodes(&stream)?.iter().map(|a| a.to_vec()).collect(),
        miniblocks,
        minipool,
        head_num: head,
        next_from,
    })))
}
