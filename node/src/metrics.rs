//! The node's Prometheus metrics (typed families, label enums, histograms) and the HTTP server
//! that serves them at `/metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;
use rill_chain::RegistrarMetrics;
use rill_engine::RequestKind;
use rill_p2p::P2pMetrics;
use tracing::{debug, warn};

/// A node-to-node request, as a label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub(crate) enum Kind {
    Proposal,
    SaveCandidate,
    GetEvents,
    GetMiniblocks,
}

impl From<RequestKind> for Kind {
    fn from(kind: RequestKind) -> Self {
        match kind {
            RequestKind::Proposal => Kind::Proposal,
            RequestKind::SaveCandidate(_) => Kind::SaveCandidate,
            RequestKind::GetEvents => Kind::GetEvents,
            RequestKind::GetMiniblocks => Kind::GetMiniblocks,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabels {
    pub(crate) kind: Kind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) reason: &'static str,
}

/// A gossip verdict, as a label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub(crate) enum VerdictLabel {
    Accept,
    Ignore,
    Reject,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VerdictLabels {
    pub(crate) verdict: VerdictLabel,
}

/// Where an admitted event came from, as a label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub(crate) enum Origin {
    Client,
    Peer,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OriginLabels {
    pub(crate) origin: Origin,
}

fn seconds() -> Histogram {
    // 1 ms to ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric of one node. Cheap to clone (shared handles).
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    pub(crate) events_admitted: Family<OriginLabels, Counter>,
    pub(crate) signature_recoveries: Counter,
    pub(crate) inputs_rejected: Family<ReasonLabels, Counter>,
    pub(crate) gossip_verdicts: Family<VerdictLabels, Counter>,
    pub(crate) miniblocks_produced: Counter,
    pub(crate) miniblocks_chained: Counter,
    pub(crate) miniblocks_promoted: Counter,
    pub(crate) events_promoted: Counter,
    pub(crate) requests: Family<KindLabels, Counter>,
    pub(crate) request_failures: Family<KindLabels, Counter>,
    pub(crate) client_requests_shed: Counter,
    pub(crate) client_adds_held_back: Counter,
    pub(crate) client_adds_paced: Counter,
    pub(crate) gossip_events_held_already: Counter,
    pub(crate) candidate_events_left_out: Counter,
    pub(crate) stream_creations_refused: Counter,
    pub(crate) peers: Gauge,
    pub(crate) chain_head: Gauge,
    pub(crate) streams_held: Gauge,
    pub(crate) streams_loaded: Gauge,
    pub(crate) minipool_events: Gauge,
    pub(crate) store_write_backlog: Gauge,
    pub(crate) store_promotions_pending: Gauge,
    pub(crate) streams_busy: Gauge,
    pub(crate) stream_loads: Counter,
    pub(crate) streams_loaded_at_start: Gauge,
    pub(crate) stream_evictions: Counter,
    pub(crate) stream_load_failures: Counter,
    pub(crate) stream_load_miniblocks: Histogram,
    pub(crate) stream_load: Histogram,
    pub(crate) snapshot_jumps: Counter,
    pub(crate) backfilled_miniblocks: Counter,
    pub(crate) add_to_quorum: Histogram,
    pub(crate) add_to_replicated: Histogram,
    pub(crate) add_to_promoted: Histogram,
    pub(crate) candidate_to_registered: Histogram,
    pub(crate) registration_lag: Histogram,
    pub(crate) block_to_candidate: Histogram,
    pub(crate) candidate_to_write_quorum: Histogram,
    pub(crate) catch_up_page: Histogram,
    pub(crate) round_batch_items: Histogram,
    pub(crate) store_write: Histogram,
    pub(crate) store_flush: Histogram,
    pub(crate) store_settle_step: Histogram,
    pub(crate) p2p: P2pMetrics,
    pub(crate) registrar: RegistrarMetrics,
}

impl Metrics {
    /// The metrics and the registry that serves them.
    pub(crate) fn new() -> (Self, Registry) {
        let metrics = Self {
            events_admitted: Family::default(),
            signature_recoveries: Counter::default(),
            inputs_rejected: Family::default(),
            gossip_verdicts: Family::default(),
            miniblocks_produced: Counter::default(),
            miniblocks_chained: Counter::default(),
            miniblocks_promoted: Counter::default(),
            events_promoted: Counter::default(),
            requests: Family::default(),
            request_failures: Family::default(),
            client_requests_shed: Counter::default(),
            client_adds_held_back: Counter::default(),
            client_adds_paced: Counter::default(),
            gossip_events_held_already: Counter::default(),
            candidate_events_left_out: Counter::default(),
            stream_creations_refused: Counter::default(),
            peers: Gauge::default(),
            chain_head: Gauge::default(),
            streams_held: Gauge::default(),
            streams_loaded: Gauge::default(),
            minipool_events: Gauge::default(),
            store_write_backlog: Gauge::default(),
            store_promotions_pending: Gauge::default(),
            streams_busy: Gauge::default(),
            stream_loads: Counter::default(),
            streams_loaded_at_start: Gauge::default(),
            stream_evictions: Counter::default(),
            stream_load_failures: Counter::default(),
            stream_load_miniblocks: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            snapshot_jumps: Counter::default(),
            backfilled_miniblocks: Counter::default(),
            stream_load: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
            add_to_quorum: seconds(),
            add_to_replicated: seconds(),
            add_to_promoted: seconds(),
            candidate_to_registered: seconds(),
            registration_lag: Histogram::new(linear_buckets(1.0, 1.0, 8)),
            block_to_candidate: seconds(),
            candidate_to_write_quorum: seconds(),
            catch_up_page: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            round_batch_items: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            store_write: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
            store_flush: seconds(),
            store_settle_step: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
            p2p: P2pMetrics::default(),
            registrar: RegistrarMetrics::default(),
        };
        let mut registry = Registry::with_prefix("rill");
        metrics.register(&mut registry);
        (metrics, registry)
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "events_admitted",
            "Events admitted into a minipool, by origin",
            self.events_admitted.clone(),
        );
        r.register(
            "inputs_rejected",
            "Events, candidates and gossip refused, by reason",
            self.inputs_rejected.clone(),
        );
        r.register(
            "gossip_verdicts",
            "Gossip messages judged, by verdict",
            self.gossip_verdicts.clone(),
        );
        r.register(
            "gossip_events_held_already",
            "Events gossip brought that this node held already, answered without opening them",
            self.gossip_events_held_already.clone(),
        );
        r.register(
            "candidate_events_left_out",
            "Events of leaders' candidates that came without their envelope, taken from this \
             node's minipool (it had proposed them)",
            self.candidate_events_left_out.clone(),
        );
        r.register(
            "miniblocks_produced",
            "Candidates this node built as leader",
            self.miniblocks_produced.clone(),
        );
        r.register(
            "miniblocks_chained",
            "Candidates this node built on a candidate the registry had not taken yet",
            self.miniblocks_chained.clone(),
        );
        r.register(
            "miniblocks_promoted",
            "Miniblocks promoted",
            self.miniblocks_promoted.clone(),
        );
        r.register(
            "snapshot_jumps",
            "Far-behind catch-ups that started from a peer's snapshot",
            self.snapshot_jumps.clone(),
        );
        r.register(
            "backfilled_miniblocks",
            "Miniblocks skipped by a snapshot jump and fetched since",
            self.backfilled_miniblocks.clone(),
        );
        r.register(
            "signature_recoveries",
            "Event signatures recovered (once per event on each node; repeats come from a cache)",
            self.signature_recoveries.clone(),
        );
        r.register(
            "events_promoted",
            "Events in the miniblocks promoted",
            self.events_promoted.clone(),
        );
        r.register(
            "requests",
            "Node-to-node requests sent, by kind",
            self.requests.clone(),
        );
        r.register(
            "request_failures",
            "Node-to-node requests that got no usable answer, by kind",
            self.request_failures.clone(),
        );
        r.register(
            "client_requests_shed",
            "Client requests answered busy because the client service was full",
            self.client_requests_shed.clone(),
        );
        r.register(
            "client_adds_held_back",
            "Client adds refused UNAVAILABLE: their stream's budget of events awaiting its replicas stayed spent, or the node stayed busy with its replicas' work",
            self.client_adds_held_back.clone(),
        );
        r.register(
            "client_adds_paced",
            "Client adds that waited for room in their stream's budget of events not yet held by a quorum and every live node of the stream",
            self.client_adds_paced.clone(),
        );
        r.register(
            "stream_creations_refused",
            "Stream creations refused QUOTA_EXCEEDED: the client used its budget",
            self.stream_creations_refused.clone(),
        );
        r.register("peers", "Connected peers", self.peers.clone());
        r.register(
            "chain_head",
            "Last chain block processed",
            self.chain_head.clone(),
        );
        r.register(
            "streams_held",
            "Streams this node holds (in its store)",
            self.streams_held.clone(),
        );
        r.register(
            "streams_loaded_at_start",
            "Streams loaded when the node opened its store (those with work pending: minipool events, candidates, history to backfill)",
            self.streams_loaded_at_start.clone(),
        );
        r.register(
            "stream_loads",
            "Streams loaded from the store into memory",
            self.stream_loads.clone(),
        );
        r.register(
            "stream_evictions",
            "Idle streams evicted from memory",
            self.stream_evictions.clone(),
        );
        r.register(
            "stream_load_failures",
            "Stored streams that did not load and were taken again from the registry",
            self.stream_load_failures.clone(),
        );
        r.register(
            "stream_load_miniblocks",
            "Miniblocks read to load one stream (its latest snapshot and the window)",
            self.stream_load_miniblocks.clone(),
        );
        r.register(
            "stream_load_seconds",
            "Time to load one stream from the store",
            self.stream_load.clone(),
        );
        r.register(
            "streams_loaded",
            "Streams loaded in memory",
            self.streams_loaded.clone(),
        );
        r.register(
            "streams_busy",
            "Loaded streams with work in progress (minipool, candidate, round, fetch, catch-up)",
            self.streams_busy.clone(),
        );
        r.register(
            "minipool_events",
            "Events waiting in loaded minipools",
            self.minipool_events.clone(),
        );
        r.register(
            "store_write_backlog",
            "Store writes the loop handed to the writer and it has not written yet",
            self.store_write_backlog.clone(),
        );
        r.register(
            "store_promotions_pending",
            "Promotions whose events are not settled into their miniblock's own parts yet (about one per stream promoted in the last --settle-after-ms is normal; a count that keeps growing means settling falls behind)",
            self.store_promotions_pending.clone(),
        );
        r.register(
            "add_to_quorum_seconds",
            "From a client's event admitted here to more than half of the stream's nodes holding it",
            self.add_to_quorum.clone(),
        );
        r.register(
            "add_to_replicated_seconds",
            "From a client's event admitted here to more than half of the stream's nodes and every one heard from lately holding it",
            self.add_to_replicated.clone(),
        );
        r.register(
            "add_to_promoted_seconds",
            "From a client's event admitted here to its miniblock promoted here",
            self.add_to_promoted.clone(),
        );
        r.register(
            "block_to_candidate_seconds",
            "From a chain block handed to the engine to a candidate built here in its round",
            self.block_to_candidate.clone(),
        );
        r.register(
            "candidate_to_write_quorum_seconds",
            "From a candidate built here to more than half of the stream's nodes storing it",
            self.candidate_to_write_quorum.clone(),
        );
        r.register(
            "candidate_to_registered_seconds",
            "From a candidate's write quorum to its registration promoted here",
            self.candidate_to_registered.clone(),
        );
        r.register(
            "registration_lag_blocks",
            "Chain blocks from the block a candidate built here was elected at to the block whose logs promoted it (1: the next block)",
            self.registration_lag.clone(),
        );
        r.register(
            "catch_up_page_miniblocks",
            "Miniblocks per catch-up page received",
            self.catch_up_page.clone(),
        );
        r.register(
            "round_batch_items",
            "Proposal and candidate requests per exchange sent to one peer",
            self.round_batch_items.clone(),
        );
        r.register(
            "store_write_seconds",
            "One store write, on the writer's thread",
            self.store_write.clone(),
        );
        r.register(
            "store_flush_seconds",
            "One group-commit flush of the store",
            self.store_flush.clone(),
        );
        r.register(
            "store_settle_step_seconds",
            "One step of settling a promotion after its block (a few of its parts written, or a few pool rows cleared): the longest an add queued behind it waits",
            self.store_settle_step.clone(),
        );
        self.p2p.register(r.sub_registry_with_prefix("p2p"));
        self.registrar
            .register(r.sub_registry_with_prefix("registration"));
    }

    pub(crate) fn reject(&self, reason: &'static str) {
        self.inputs_rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// Serves `GET /metrics` on `addr` until the task is dropped.
pub(crate) async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(%e, "metrics endpoint: accept failed");
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = respond(&request, &registry);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%e, "metrics connection ended");
            }
        });
    }
}

/// Binds the metrics endpoint.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

fn respond(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status, content_type: &'static str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if request.method() != Method::GET || request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "metrics are at GET /metrics\n".into(),
        );
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        ),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "encoding failed\n".into(),
        ),
    }
}
