//! Group commit: what a client is told about, and what a node announces or counts toward a
//! quorum, must be on disk; but one flush (an fsync) per write would serialise the node behind
//! the disk. Writes are marked instead, and a flusher task makes all writes since its last
//! flush durable with one `flush`, off the node's loop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use rill_store::Store;
use tokio::sync::{mpsc, watch};
use tracing::warn;

/// Handle to the flusher; the flusher ends when every handle is gone.
#[derive(Clone, Debug)]
pub(crate) struct Durability {
    marked: Arc<AtomicU64>,
    wake: mpsc::Sender<()>,
    flushed: watch::Receiver<u64>,
}

impl Durability {
    pub(crate) fn spawn(store: Store, flushes: Histogram) -> Self {
        let marked = Arc::new(AtomicU64::new(0));
        let (wake, mut woken) = mpsc::channel(1);
        let (flushed_tx, flushed) = watch::channel(0);
        let task_marked = marked.clone();
        tokio::spawn(async move {
            while woken.recv().await.is_some() {
                // Everything marked by now was written before it was marked.
                let target = task_marked.load(Ordering::Acquire);
                while target > *flushed_tx.borrow() {
                    let store = store.clone();
                    let started = std::time::Instant::now();
                    match tokio::task::spawn_blocking(move || store.flush()).await {
                        Ok(Ok(())) => {
                            flushes.observe(started.elapsed().as_secs_f64());
                            let _ = flushed_tx.send(target);
                        }
                        other => {
                            warn!(?other, "store flush failed; retrying");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        });
        Self {
            marked,
            wake,
            flushed,
        }
    }

    /// Marks everything written so far; the future resolves (`true`) once it is on disk, or
    /// `false` if the flusher is gone.
    pub(crate) fn mark(&self) -> impl Future<Output = bool> + Send + 'static {
        let seq = self.marked.fetch_add(1, Ordering::AcqRel) + 1;
        // A full channel means a wake-up is already pending; it will see this mark.
        let _ = self.wake.try_send(());
        let mut flushed = self.flushed.clone();
        async move { flushed.wait_for(|f| *f >= seq).await.is_ok() }
    }
}
