//! Token buckets per key: how much a client may ask of a node. A bucket holds up to `burst`
//! tokens and refills at `per_second`; a request takes its cost or is refused with the time
//! until it would fit. The network uses one per client peer for requests (at the edge, before
//! the node sees them); the node uses another for stream creations.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A rate and how much of it may be used at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// The most tokens a bucket holds (what a quiet client may spend at once).
    pub burst: f64,
}

impl Rate {
    /// `per_second`, with a burst of two seconds' worth (at least one token).
    pub fn per_second(per_second: f64) -> Self {
        Self {
            per_second,
            burst: (2.0 * per_second).max(1.0),
        }
    }

    /// `count` per hour, all of which may be used at once.
    pub fn per_hour(count: f64) -> Self {
        Self {
            per_second: count / 3600.0,
            burst: count.max(1.0),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One bucket per key, created full on first use.
#[derive(Debug)]
pub struct Buckets<K> {
    rate: Rate,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// Buckets that refill at `rate`.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: HashMap::new(),
        }
    }

    /// Takes `cost` tokens from `key`'s bucket at `now`, or says how long until they would be
    /// there (a cost above the burst never fits: it waits for a full bucket).
    pub fn take(&mut self, key: &K, cost: f64, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        let bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate.per_second).min(rate.burst);
        bucket.at = now;
        let cost = cost.min(rate.burst);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            return Ok(());
        }
        let missing = cost - bucket.tokens;
        Err(Duration::from_secs_f64(
            (missing / rate.per_second).min(86_400.0),
        ))
    }

    /// Forgets buckets that have refilled completely: they hold nothing a new one would not.
    pub fn prune(&mut self, now: Instant) {
        let rate = self.rate;
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * rate.per_second < rate.burst
        });
    }

    /// How many keys have a bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key has one.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_spends_its_burst_then_refills_at_the_rate() {
        let mut buckets = Buckets::new(Rate {
            per_second: 10.0,
            burst: 5.0,
        });
        let t0 = Instant::now();
        for _ in 0..5 {
            buckets.take(&"a", 1.0, t0).unwrap();
        }
        let wait = buckets.take(&"a", 1.0, t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        // Another key is not affected.
        buckets.take(&"b", 5.0, t0).unwrap();
        // 300 ms later: 3 tokens.
        let t1 = t0 + Duration::from_millis(300);
        buckets.take(&"a", 3.0, t1).unwrap();
        assert!(buckets.take(&"a", 1.0, t1).is_err());
        // A cost over the burst waits for a full bucket, then passes.
        let t2 = t1 + Duration::from_secs(1);
        buckets.take(&"a", 50.0, t2).unwrap();
    }

    #[test]
    fn full_buckets_are_pruned_and_pruned_keys_start_full() {
        let mut buckets = Buckets::new(Rate::per_hour(2.0));
        let t0 = Instant::now();
        buckets.take(&1, 2.0, t0).unwrap();
        assert!(buckets.take(&1, 1.0, t0).is_err());
        buckets.prune(t0 + Duration::from_secs(60));
        assert_eq!(buckets.len(), 1, "still refilling");
        buckets.prune(t0 + Duration::from_secs(3600));
        assert!(buckets.is_empty());
        buckets.take(&1, 2.0, t0).unwrap();
    }
}
