//! Group commit: what a client is told about must be on disk, but one flush (an fsync) per
//! event would serialise the node behind the disk. Writes are marked instead, and a flusher
//! task makes all writes since its last flush durable with one `flush`, off the node's loop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rill_store::Store;
use tokio::sync::{Notify, watch};
use tracing::warn;

/// Handle to the flusher.
pub(crate) struct Durability {
    marked: Arc<AtomicU64>,
    wake: Arc<Notify>,
    flushed: watch::Receiver<u64>,
}

impl Durability {
    pub(crate) fn spawn(store: Store) -> Self {
        let marked = Arc::new(AtomicU64::new(0));
        let wake = Arc::new(Notify::new());
        let (flushed_tx, flushed) = watch::channel(0);
        let (task_marked, task_wake) = (marked.clone(), wake.clone());
        tokio::spawn(async move {
            loop {
                task_wake.notified().await;
                // Everything marked by now was written before it was marked.
                let target = task_marked.load(Ordering::Acquire);
                if target <= *flushed_tx.borrow() {
                    continue;
                }
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.flush()).await {
                    Ok(Ok(())) => {
                        if flushed_tx.send(target).is_err() {
                            return;
                        }
                    }
                    other => {
                        warn!(?other, "store flush failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        task_wake.notify_one();
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
        self.wake.notify_one();
        let mut flushed = self.flushed.clone();
        async move { flushed.wait_for(|f| *f >= seq).await.is_ok() }
    }
}
