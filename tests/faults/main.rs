//! The fault suite over real processes: a real anvil, `rill-node` processes with their own
//! sled directories, and faults injected for real (kill -9, lost disks, fault rules through
//! `RILL_FAULTS`, registry changes by its owner). Every scenario ends by checking the promise:
//! every acknowledged event is in exactly one miniblock on every replica, the replicas' chains
//! are identical, and the registry's head is theirs. `RILL_FAULTS_LONG=1` runs the long
//! variants. Network faults (partitions, latency, loss) run between nodes on hosts of their own
//! (see `rill_devnet::hosts`).

mod catch_up;
mod hosts_cli;
mod kill9;
mod lost_leader;
mod network;
mod registry_changes;
mod stranded;
mod watchdog;

use std::time::Duration;

/// Whether to run the long variants.
fn long() -> bool {
    std::env::var_os("RILL_FAULTS_LONG").is_some()
}

async fn sleep(seconds: f64) {
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
}
