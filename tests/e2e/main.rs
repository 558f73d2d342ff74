//! End-to-end scenarios over real processes: anvil, four `rill-node` processes, the `rill`
//! binary, real libp2p on 127.0.0.1. Scenarios run one at a time (a devnet each).

mod batches;
mod chains;
mod membership;
mod replicas;
mod restart;
mod watch;
