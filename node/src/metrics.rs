//! Prometheus metrics, served as text over plain HTTP.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

/// Counters and gauges of one node.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) events_admitted: AtomicU64,
    pub(crate) rejected: Mutex<BTreeMap<&'static str, u64>>,
    pub(crate) miniblocks_produced: AtomicU64,
    pub(crate) miniblocks_promoted: AtomicU64,
    pub(crate) registration_entries: AtomicU64,
    pub(crate) registration_rejected: AtomicU64,
    pub(crate) fetches: AtomicU64,
    pub(crate) peers: AtomicU64,
    pub(crate) chain_head: AtomicU64,
    pub(crate) minipool_events: AtomicU64,
    pub(crate) streams: AtomicU64,
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reject(&self, reason: &'static str) {
        *self
            .rejected
            .lock()
            .expect("lock")
            .entry(reason)
            .or_default() += 1;
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        line(
            "rill_events_admitted_total",
            "counter",
            "Events admitted into a minipool.",
            get(&self.events_admitted),
        );
        line(
            "rill_miniblocks_produced_total",
            "counter",
            "Candidates this node built as leader.",
            get(&self.miniblocks_produced),
        );
        line(
            "rill_miniblocks_promoted_total",
            "counter",
            "Miniblocks promoted.",
            get(&self.miniblocks_promoted),
        );
        line(
            "rill_registration_entries_total",
            "counter",
            "Miniblock heads sent for registration.",
            get(&self.registration_entries),
        );
        line(
            "rill_registration_rejected_total",
            "counter",
            "Registration entries the registry refused.",
            get(&self.registration_rejected),
        );
        line(
            "rill_fetches_total",
            "counter",
            "Event and miniblock fetches sent to peers.",
            get(&self.fetches),
        );
        line("rill_peers", "gauge", "Connected peers.", get(&self.peers));
        line(
            "rill_chain_head",
            "gauge",
            "Last chain block processed.",
            get(&self.chain_head),
        );
        line(
            "rill_minipool_events",
            "gauge",
            "Events waiting in minipools.",
            get(&self.minipool_events),
        );
        line("rill_streams", "gauge", "Streams held.", get(&self.streams));
        let _ = writeln!(
            out,
            "# HELP rill_events_rejected_total Inputs refused, by reason.\n# TYPE rill_events_rejected_total counter"
        );
        for (reason, count) in self.rejected.lock().expect("lock").iter() {
            let _ = writeln!(
                out,
                "rill_events_rejected_total{{reason=\"{reason}\"}} {count}"
            );
        }
        out
    }
}

/// Serves `GET /metrics` (any path, in fact) until the process ends.
pub(crate) async fn serve(addr: SocketAddr, metrics: std::sync::Arc<Metrics>) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            warn!(%addr, %e, "metrics endpoint unavailable");
            return;
        }
    };
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let body = metrics.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}
