//! Clients waiting for their event to reach a quorum or a miniblock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use alloy_primitives::B256;
use rill_protocol::ParsedMiniblock;
use tokio::sync::oneshot;

/// What a client waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// More than half of the stream's nodes hold the event.
    Quorum,
    /// More than half of the stream's nodes hold the event, and so does every one heard from
    /// lately (what the node's budget of client events waits for).
    Replicated,
    /// The event is in a promoted miniblock (which also wakes the waits above).
    Miniblock,
}

struct Waiter {
    wait: Wait,
    /// Gets the miniblock number once promoted, `None` for a quorum.
    reply: oneshot::Sender<Option<u64>>,
}

/// The waiting clients, by event hash. Shared by the client service (which adds waiters) and
/// the node's loop (which wakes them).
#[derive(Clone, Default)]
pub(crate) struct Acks {
    waiting: Arc<Mutex<HashMap<B256, Vec<Waiter>>>>,
}

impl Acks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<B256, Vec<Waiter>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for `hash` to reach `wait`. Register before the event is admitted, so the
    /// moment cannot be missed.
    pub(crate) fn wait(&self, hash: B256, wait: Wait) -> oneshot::Receiver<Option<u64>> {
        let (reply, answer) = oneshot::channel();
        self.lock()
            .entry(hash)
            .or_default()
            .push(Waiter { wait, reply });
        answer
    }

    /// Forgets the waiters of an event that was refused or timed out.
    pub(crate) fn cancel(&self, hash: &B256) {
        let mut waiting = self.lock();
        if let Some(waiters) = waiting.get_mut(hash) {
            waiters.retain(|w| !w.reply.is_closed());
            if waiters.is_empty() {
                waiting.remove(hash);
            }
        }
    }

    /// `hash` reached `wait` (a quorum, or every live replica): wakes those waiting for it.
    pub(crate) fn reached(&self, hash: &B256, wait: Wait) {
        let mut waiting = self.lock();
        let Some(waiters) = waiting.get_mut(hash) else {
            return;
        };
        let (ready, rest): (Vec<_>, Vec<_>) = waiters.drain(..).partition(|w| w.wait == wait);
        *waiters = rest;
        if waiters.is_empty() {
            waiting.remove(hash);
        }
        for waiter in ready {
            let _ = waiter.reply.send(None);
        }
    }

    /// A miniblock was promoted: its events reached a quorum and a miniblock.
    pub(crate) fn promoted(&self, miniblock: &ParsedMiniblock) {
        let mut waiting = self.lock();
        if waiting.is_empty() {
            return;
        }
        for event in miniblock.events() {
            for waiter in waiting.remove(&event.hash()).unwrap_or_default() {
                let _ = waiter.reply.send(Some(miniblock.num()));
            }
        }
    }
}
