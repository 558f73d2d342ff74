//! The emulated network between the hosts: a router in user space that moves every IP packet
//! from one host's TUN interface to another's, applying the faults in force (latency with
//! jitter, loss, a partition) on the way.
//!
//! It exists because the kernels this project runs on do not always have `sch_netem` (the one
//! this project's CI runs on has no netem, no classifiers and no firewall): the same faults
//! applied by a router the project owns work on every Linux kernel with TUN, and are seeded.

use std::collections::{BTreeSet, BinaryHeap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

use super::tun::Tun;

/// The faults applied between hosts (the default: none).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// One-way delay added to every packet, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Each packet's delay varies uniformly by up to this much either way, in milliseconds.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Share of packets dropped, in percent.
    #[serde(default)]
    pub loss_percent: f64,
    /// Node indexes cut off from every other host (the other nodes, the chain, the clients);
    /// they still reach each other.
    #[serde(default)]
    pub partitioned: BTreeSet<usize>,
}

impl Faults {
    /// Whether host `a` and host `b` (`None`: the chain's and clients' host) are on different
    /// sides of the partition.
    fn split(&self, a: Option<usize>, b: Option<usize>) -> bool {
        let cut = |h: Option<usize>| h.is_some_and(|i| self.partitioned.contains(&i));
        cut(a) != cut(b)
    }
}

/// What the link did, since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets delivered.
    pub delivered: u64,
    /// Packets dropped by the partition.
    pub partitioned: u64,
    /// Packets dropped as loss.
    pub lost: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    partitioned: AtomicU64,
    lost: AtomicU64,
}

struct Delayed {
    due: Instant,
    seq: u64,
    to: usize,
    packet: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    // Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// The running router: one reader thread per interface and one thread releasing delayed
/// packets. Endpoint 0 is the hosts' host (chain, clients), endpoint `i + 1` node `i`; a packet
/// goes to the endpoint whose address is its destination (`base + endpoint + 1`).
pub(crate) struct Link {
    stop: Arc<AtomicBool>,
    faults: Arc<RwLock<Faults>>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
}

const POLL: Duration = Duration::from_millis(100);

impl Link {
    /// Starts routing between `tuns` (endpoint order), whose addresses are `base + 1 + index`.
    pub(crate) fn start(tuns: Vec<Tun>, base: Ipv4Addr, seed: u64) -> Self {
        let tuns: Arc<Vec<Tun>> = Arc::new(tuns);
        let stop = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(RwLock::new(Faults::default()));
        let counters = Arc::new(Counters::default());
        let (delay_tx, delay_rx) = mpsc::channel::<Delayed>();
        let mut threads = Vec::new();
        for from in 0..tuns.len() {
            let (tuns, stop, faults, counters, delay_tx) = (
                tuns.clone(),
                stop.clone(),
                faults.clone(),
                counters.clone(),
                delay_tx.clone(),
            );
            let rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(from as u64));
            threads.push(std::thread::spawn(move || {
                Reader {
                    from,
                    base,
                    tuns,
                    faults,
                    counters,
                    delay_tx,
                    rng,
                    seq: 0,
                }
                .run(&stop)
            }));
        }
        drop(delay_tx);
        {
            let (tuns, counters) = (tuns.clone(), counters.clone());
            threads.push(std::thread::spawn(move || {
                release(delay_rx, &tuns, &counters)
            }));
        }
        Self {
            stop,
            faults,
            counters,
            threads,
        }
    }

    /// Puts `faults` in force for every packet from now on.
    pub(crate) fn set_faults(&self, faults: Faults) {
        *self.faults.write().expect("faults lock") = faults;
    }

    /// The faults in force.
    pub(crate) fn faults(&self) -> Faults {
        self.faults.read().expect("faults lock").clone()
    }

    /// What the link did so far.
    pub(crate) fn stats(&self) -> LinkStats {
        LinkStats {
            delivered: self.counters.delivered.load(Ordering::Relaxed),
            partitioned: self.counters.partitioned.load(Ordering::Relaxed),
            lost: self.counters.lost.load(Ordering::Relaxed),
        }
    }

    /// Follows `path` (JSON [`Faults`], written by `rill-devnet fault`): puts its content in
    /// force whenever it changes; a missing file means no faults.
    pub(crate) fn follow(&mut self, path: PathBuf) {
        let (stop, faults) = (self.stop.clone(), self.faults.clone());
        self.threads.push(std::thread::spawn(move || {
            let mut seen = None;
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).ok();
                if text != seen {
                    let wanted = match text.as_deref().map(serde_json::from_str::<Faults>) {
                        None => Some(Faults::default()),
                        Some(Ok(wanted)) => Some(wanted),
                        Some(Err(e)) => {
                            tracing::warn!(path = %path.display(), "unreadable faults file: {e}");
                            None
                        }
                    };
                    if let Some(wanted) = wanted {
                        tracing::info!(?wanted, "faults between hosts");
                        *faults.write().expect("faults lock") = wanted;
                    }
                    seen = text;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

struct Reader {
    from: usize,
    base: Ipv4Addr,
    tuns: Arc<Vec<Tun>>,
    faults: Arc<RwLock<Faults>>,
    counters: Arc<Counters>,
    delay_tx: mpsc::Sender<Delayed>,
    rng: rand::rngs::StdRng,
    seq: u64,
}

impl Reader {
    fn run(mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Ordering::Relaxed) {
            match self.tuns[self.from].read_timeout(&mut buf, POLL) {
                Ok(0) => {}
                Ok(n) => self.route(&buf[..n]),
                Err(e) => {
                    tracing::warn!(interface = %self.tuns[self.from].name, "link read: {e}");
                    std::thread::sleep(POLL);
                }
            }
        }
    }

    /// The endpoint an IPv4 packet is for, if it is one of the link's.
    fn destination(&self, packet: &[u8]) -> Option<usize> {
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            return None;
        }
        let to = u32::from_be_bytes(packet[16..20].try_into().ok()?);
        let offset = to.checked_sub(u32::from(self.base))?.checked_sub(1)? as usize;
        (offset < self.tuns.len()).then_some(offset)
    }

    fn route(&mut self, packet: &[u8]) {
        let Some(to) = self.destination(packet) else {
            return;
        };
        let host = |endpoint: usize| endpoint.checked_sub(1);
        let delay = {
            let faults = self.faults.read().expect("faults lock");
            if faults.split(host(self.from), host(to)) {
                self.counters.partitioned.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if faults.loss_percent > 0.0 && self.rng.gen_range(0.0..100.0) < faults.loss_percent {
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let jitter = faults.jitter_ms.min(faults.latency_ms) as i64;
            let millis = faults.latency_ms as i64
                + if jitter > 0 {
                    self.rng.gen_range(-jitter..=jitter)
                } else {
                    0
                };
            Duration::from_millis(millis as u64)
        };
        if delay.is_zero() {
            deliver(&self.tuns, &self.counters, to, packet);
            return;
        }
        self.seq += 1;
        let _ = self.delay_tx.send(Delayed {
            due: Instant::now() + delay,
            seq: self.seq,
            to,
            packet: packet.to_vec(),
        });
    }
}

fn deliver(tuns: &[Tun], counters: &Counters, to: usize, packet: &[u8]) {
    // A full or vanished interface drops the packet, as a real link would.
    if tuns[to].write(packet).is_ok() {
        counters.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

/// Releases delayed packets when due; ends when every reader is gone.
fn release(delayed: mpsc::Receiver<Delayed>, tuns: &[Tun], counters: &Counters) {
    let mut queue = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while queue.peek().is_some_and(|d: &Delayed| d.due <= now) {
            let d = queue.pop().expect("peeked");
            deliver(tuns, counters, d.to, &d.packet);
        }
        let wait = queue
            .peek()
            .map_or(POLL, |d: &Delayed| d.due.saturating_duration_since(now));
        match delayed.recv_timeout(wait) {
            Ok(d) => queue.push(d),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_separates_its_nodes_from_everyone_else() {
        let faults = Faults {
            partitioned: [1, 2].into(),
            ..Faults::default()
        };
        assert!(faults.split(Some(1), Some(0)));
        assert!(faults.split(Some(1), None), "the chain's host is outside");
        assert!(
            !faults.split(Some(1), Some(2)),
            "the minority talks among itself"
        );
        assert!(!faults.split(Some(0), Some(3)));
        assert!(!Faults::default().split(Some(0), None));
    }

    #[test]
    fn delayed_packets_leave_earliest_first() {
        let at = Instant::now();
        let mut heap = BinaryHeap::new();
        for (ms, seq) in [(30, 1), (10, 2), (20, 3), (10, 4)] {
            heap.push(Delayed {
                due: at + Duration::from_millis(ms),
                seq,
                to: 0,
                packet: vec![],
            });
        }
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|d| d.seq)).collect();
        assert_eq!(order, [2, 4, 3, 1]);
    }
}
