//! The CPU bound set by signatures, measured in the same run as the throughput it bounds.
//!
//! Every event is signed once (by its client) and its signer recovered once on each of its
//! replicas, all on this machine's cores: an event costs `replication × recover + sign` of
//! CPU, so the cores finalize at most `cores / that` events per second. The costs are
//! measured before the devnet starts and again after it stops.

use std::time::{Duration, Instant};

use rill_protocol::{Backend, Hash, NodeKey};

/// Per-operation costs of one backend.
pub(crate) struct Costs {
    backend: Backend,
    recover: Duration,
    sign: Duration,
}

/// Rounds of [`PER_ROUND`] operations each, per backend and operation: the fastest round
/// counts. A round slowed by something else on the machine (a devnet still shutting down,
/// another tenant) would lower the bound and flatter the ratio; runs of this bench measured
/// one recovery at 41–68 µs when timed in a single round.
const ROUNDS: usize = 5;
const PER_ROUND: usize = 400;

/// Measures recovery and signing with each backend (about a second in all), the backends'
/// rounds taken in turn so that a slow moment falls on both.
pub(crate) fn measure() -> Vec<Costs> {
    let key = NodeKey::generate();
    let hashes: Vec<Hash> = (0..PER_ROUND as u32)
        .map(|i| rill_protocol::framed_hash(rill_protocol::HashTag::Event, &i.to_be_bytes()))
        .collect();
    let mut costs: Vec<Costs> = [Backend::K256, Backend::Libsecp256k1]
        .into_iter()
        .map(|backend| Costs {
            backend,
            recover: Duration::MAX,
            sign: Duration::MAX,
        })
        .collect();
    for _ in 0..ROUNDS {
        for c in &mut costs {
            let started = Instant::now();
            let signatures: Vec<[u8; 65]> =
                hashes.iter().map(|h| c.backend.sign(&key, h)).collect();
            c.sign = c.sign.min(started.elapsed() / PER_ROUND as u32);
            let started = Instant::now();
            for (hash, signature) in hashes.iter().zip(&signatures) {
                let signer = c.backend.recover(hash, signature).expect("recovers");
                assert_eq!(signer, key.address());
            }
            c.recover = c.recover.min(started.elapsed() / PER_ROUND as u32);
        }
    }
    costs
}

/// Measures again, once the devnet is gone, and keeps the faster of each cost: what the cores
/// can do, whichever moment showed it.
pub(crate) fn measure_again(before: Vec<Costs>) -> Vec<Costs> {
    before
        .into_iter()
        .zip(measure())
        .map(|(a, b)| Costs {
            backend: a.backend,
            recover: a.recover.min(b.recover),
            sign: a.sign.min(b.sign),
        })
        .collect()
}

/// Events per second `cores` can check and sign at `replication`.
fn bound(cores: usize, replication: u64, recover: Duration, sign: Duration) -> f64 {
    cores as f64 / (replication as f64 * recover.as_secs_f64() + sign.as_secs_f64())
}

/// Prints the costs, the bound with the node's backend and with the fastest, and how close
/// `finalized` events/s came to each.
pub(crate) fn report(costs: &[Costs], replication: u64, finalized: f64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("\n| signature cost per operation ({cores} cores) | recover | sign |");
    println!("|---|---:|---:|");
    for c in costs {
        println!(
            "| {} | {:.1} µs | {:.1} µs |",
            c.backend.name(),
            micros(c.recover),
            micros(c.sign)
        );
    }
    let node = costs
        .iter()
        .find(|c| c.backend == Backend::NODE)
        .expect("the node's backend is measured");
    let fastest_recover = costs.iter().map(|c| c.recover).min().expect("costs");
    let fastest_sign = costs.iter().map(|c| c.sign).min().expect("costs");
    let rows = [
        (
            format!("node's ({})", node.backend.name()),
            bound(cores, replication, node.recover, node.sign),
        ),
        (
            "fastest available".to_owned(),
            bound(cores, replication, fastest_recover, fastest_sign),
        ),
    ];
    println!(
        "\n| CPU bound: {replication} × recover + sign per event | events/s | finalized / bound |"
    );
    println!("|---|---:|---:|");
    for (name, limit) in rows {
        println!(
            "| {name} | {limit:.0} | {:.1} % |",
            100.0 * finalized / limit
        );
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
