//! One gate for every store of the process, so that sled's own process-wide lock cannot
//! deadlock.
//!
//! sled 0.34 guards all its databases in a process with a single reader-writer lock: a
//! transaction (or batch) takes it exclusively, and a flush holds it shared while it waits
//! for the log to reach the disk, as does the flush that closes a database when its last
//! handle is dropped. Once a transaction waits for the lock, every new reader queues behind
//! it, sled's background flushers among them. A CI run hung in exactly that state (gdb):
//! in-process nodes that were closing held the lock in their flushes, waiting for the disk,
//! while running nodes waited to commit and every node's background flusher waited behind
//! them; nothing moved again.
//!
//! The gate orders the two kinds before they reach sled's lock: a transaction passes it
//! alone, flushes and closes pass it together. A flush then never holds sled's lock while a
//! transaction waits for it. A node has one store, and its writer thread both commits and
//! flushes, so the gate costs it nothing; it matters where several stores share a process
//! (the in-process testnet, tests).

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static GATE: RwLock<()> = RwLock::new(());

/// Held around a sled transaction.
pub(crate) fn transaction() -> RwLockWriteGuard<'static, ()> {
    GATE.write().unwrap_or_else(|p| p.into_inner())
}

/// Held around a flush, and around the drop that closes a database.
pub(crate) fn flush() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|p| p.into_inner())
}

/// `T` (a store's trees), dropped behind the gate: dropping the last handle of a sled
/// database flushes it.
#[derive(Debug)]
pub(crate) struct ClosedBehindGate<T>(Option<T>);

impl<T> ClosedBehindGate<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self(Some(inner))
    }
}

impl<T> std::ops::Deref for ClosedBehindGate<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_ref().expect("taken only when dropped")
    }
}

impl<T> Drop for ClosedBehindGate<T> {
    fn drop(&mut self) {
        let _gate = flush();
        drop(self.0.take());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A flush waits for a transaction that passed the gate, and a transaction for a flush:
    /// sled's lock never sees both at once.
    #[test]
    fn a_flush_and_a_transaction_never_pass_the_gate_together() {
        let committing = transaction();
        let (tx, rx) = mpsc::channel();
        let flusher = std::thread::spawn(move || {
            let _flushing = flush();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "a flush passed while a transaction held the gate"
        );
        drop(committing);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the flush passes once the transaction is done");
        flusher.join().unwrap();

        let flushing = flush();
        let also_flushing = flush();
        let (tx, rx) = mpsc::channel();
        let committer = std::thread::spawn(move || {
            let _committing = transaction();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop((flushing, also_flushing));
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the transaction passes once the flushes are done");
        committer.join().unwrap();
    }
}
