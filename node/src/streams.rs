//! Which streams are in memory. A node holds every stream the registry placed on it (the store
//! has them all) but keeps in the engine only those in use: a stream is loaded from the store
//! (its latest snapshot and the miniblocks after it, see `Store::load`) when an input concerns
//! it, and an idle one (nothing in its minipool, no candidate, round, fetch or catch-up) is
//! evicted once it has not been used for `evict_idle_after`, or sooner when more than
//! `max_loaded` are in memory. A cold stream costs the node a map entry; it gets no ticks and
//! leads no rounds until something happens to it.
//!
//! Everything that hands the engine an input about one stream goes through here, so a cold
//! stream that receives an event, a proposal request, a candidate or a registration is loaded
//! first and then behaves exactly like a hot one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rill_engine::{Effect, Engine, Input, RestoredStream};
use rill_protocol::StreamId;
use rill_store::{Store, StoreError};
use tracing::{debug, error, info, warn};

use crate::metrics::Metrics;
use crate::writer::Writer;

/// How many streams stay in memory, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Residency {
    /// At most this many streams are loaded when idle ones can be evicted.
    pub max_loaded: usize,
    /// An idle stream unused for this long is evicted.
    pub evict_idle_after: Duration,
}

impl Default for Residency {
    fn default() -> Self {
        Self {
            max_loaded: 10_000,
            evict_idle_after: Duration::from_secs(60),
        }
    }
}

/// The engine, and the streams held but not loaded.
pub(crate) struct Streams {
    pub(crate) engine: Engine,
    store: Store,
    /// The store's writer: its writes land before this reads a stream back.
    writer: Writer,
    metrics: Metrics,
    residency: Residency,
    /// Held in the store, not in the engine; with the store writer's position when each left
    /// the engine (its last writes: reading it back waits for them).
    cold: HashMap<StreamId, u64>,
    /// Loaded streams and when each was last used.
    used: HashMap<StreamId, Instant>,
    /// Streams whose stored state did not load: removed from the store, to be taken again
    /// from the registry and caught up from peers.
    broken: Vec<StreamId>,
}

impl Streams {
    /// The streams the store holds, all cold but those with work pending (minipool events or
    /// candidates), which are loaded now. A stream an older version recorded without its
    /// genesis is removed, to be taken again from the registry.
    pub(crate) fn open(
        engine: Engine,
        store: Store,
        writer: Writer,
        metrics: Metrics,
        residency: Residency,
    ) -> Result<Self, StoreError> {
        let mut streams = Self {
            engine,
            store,
            writer,
            metrics,
            residency,
            cold: HashMap::new(),
            used: HashMap::new(),
            broken: Vec::new(),
        };
        for id in streams.store.stream_ids()? {
            if streams.store.head(&id)?.is_none() {
                warn!(stream = %id, "repairing: recorded without its genesis; taking it again from the registry");
                streams.store.remove_stream(&id)?;
                continue;
            }
            streams.cold.insert(id, 0);
        }
        for id in streams.store.streams_with_pending()? {
            if streams.cold.contains_key(&id) {
                streams.load(&id)?;
            }
        }
        let at_start = streams.used.len();
        streams.metrics.streams_loaded_at_start.set(at_start as i64);
        if at_start > 0 {
            info!(streams = at_start, "loaded the streams with work pending");
        }
        Ok(streams)
    }

    /// Whether this node holds the stream (loaded or not).
    pub(crate) fn holds(&self, id: &StreamId) -> bool {
        self.cold.contains_key(id) || self.engine.is_loaded(id)
    }

    /// How many streams this node holds.
    pub(crate) fn held(&self) -> usize {
        self.cold.len() + self.used.len()
    }

    /// How many are in memory.
    pub(crate) fn loaded(&self) -> usize {
        self.used.len()
    }

    /// Whether a round this node leads is in progress on any stream (see
    /// [`Engine::leads_rounds`]).
    pub(crate) fn leads_rounds(&self) -> bool {
        self.engine.leads_rounds()
    }

    /// Streams that failed to load since the last call: the caller takes them again.
    pub(crate) fn take_broken(&mut self) -> Vec<StreamId> {
        std::mem::take(&mut self.broken)
    }

    /// The engine, with `id` loaded if this node holds it. A stream this node does not hold is
    /// the engine's to refuse.
    pub(crate) fn for_stream(&mut self, id: &StreamId) -> &mut Engine {
        if self.cold.contains_key(id)
            && let Err(e) = self.load(id)
        {
            // The disk failed under the read; the stream stays cold and the input is refused
            // (a sender retries, a restart reads again).
            error!(stream = %id, %e, "cannot read the stream from the store");
        }
        if let Some(used) = self.used.get_mut(id) {
            *used = Instant::now();
        }
        &mut self.engine
    }

    /// An input for the engine, loading the stream it concerns first. A registered head a cold
    /// stream already has needs nothing: the stream stays cold (a restart reads every head).
    pub(crate) fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Effect> {
        match &input {
            Input::StreamAllocated { stream, .. } => {
                let stream = *stream;
                if self.holds(&stream) {
                    return Vec::new();
                }
                let effects = self.engine.handle(now_ms, input);
                if self.engine.is_loaded(&stream) {
                    self.used.insert(stream, Instant::now());
                }
                return effects;
            }
            Input::MiniblockRegistered { stream, num, .. }
                if self.cold.contains_key(stream) && self.stored_head(stream) >= Some(*num) =>
            {
                return Vec::new();
            }
            _ => {}
        }
        match input.stream() {
            Some(id) => self.for_stream(&id).handle(now_ms, input),
            None => self.engine.handle(now_ms, input),
        }
    }

    /// Evicts idle streams unused for `evict_idle_after`, then the least recently used idle
    /// ones while more than `max_loaded` are in memory.
    pub(crate) fn evict_idle(&mut self) {
        let now = Instant::now();
        let mut by_age: Vec<(Instant, StreamId)> =
            self.used.iter().map(|(id, used)| (*used, *id)).collect();
        by_age.sort_unstable();
        let mut loaded = self.used.len();
        for (used, id) in by_age {
            let stale = now.duration_since(used) >= self.residency.evict_idle_after;
            if !stale && loaded <= self.residency.max_loaded {
                break;
            }
            if self.engine.evict(&id) {
                self.used.remove(&id);
                self.cold.insert(id, self.writer.submitted());
                self.metrics.stream_evictions.inc();
                loaded -= 1;
                debug!(stream = %id, "evicted");
            }
        }
    }

    /// A cold stream's promoted head as stored (once its last writes are applied).
    fn stored_head(&self, id: &StreamId) -> Option<u64> {
        self.await_writes(id);
        self.store.head(id).ok().flatten().map(|(num, _)| num)
    }

    /// Waits until the writes a cold stream made before it left the engine are applied.
    fn await_writes(&self, id: &StreamId) {
        if let Some(position) = self.cold.get(id) {
            self.writer.block_until_applied(*position);
        }
    }

    /// Loads a cold stream from the store. One whose stored state does not load is removed
    /// from the store (and reported through [`Self::take_broken`]); the node stays up.
    fn load(&mut self, id: &StreamId) -> Result<(), StoreError> {
        let started = Instant::now();
        // Its last writes may still be on their way to the store.
        self.await_writes(id);
        let window = self.engine.config().recency_window;
        let stored = match self.store.load(id, window) {
            Ok(stored) => stored,
            Err(e @ (StoreError::Incomplete(_) | StoreError::Corrupt(_))) => {
                return self.broken(id, &e.to_string());
            }
            Err(e) => return Err(e),
        };
        let read = stored.miniblocks.len();
        let (pooled, candidates) = (stored.minipool.len(), stored.candidates.len());
        let gap = stored.gap.as_ref().map(|g| (g.down_to, g.below));
        let restored = RestoredStream {
            id: stored.id,
            nodes: stored.nodes,
            miniblocks: stored.miniblocks,
            minipool: stored.minipool,
            candidates: stored.candidates,
            gap: stored.gap.map(|g| rill_engine::Gap {
                down_to: g.down_to,
                below: g.below,
                hash: g.hash,
            }),
        };
        if let Err(reject) = self.engine.restore(restored) {
            self.metrics.reject(reject.code());
            return self.broken(id, &reject.to_string());
        }
        self.cold.remove(id);
        self.used.insert(*id, Instant::now());
        self.metrics.stream_loads.inc();
        self.metrics.stream_load_miniblocks.observe(read as f64);
        self.metrics
            .stream_load
            .observe(started.elapsed().as_secs_f64());
        debug!(stream = %id, miniblocks = read, pooled, candidates, ?gap, "loaded");
        Ok(())
    }

    fn broken(&mut self, id: &StreamId, why: &str) -> Result<(), StoreError> {
        error!(stream = %id, why, "stored stream does not load; taking it again from the registry");
        self.metrics.stream_load_failures.inc();
        self.store.remove_stream(id)?;
        self.cold.remove(id);
        self.broken.push(*id);
        Ok(())
    }
}
