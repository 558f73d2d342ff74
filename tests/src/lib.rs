//! Support for the end-to-end and fault scenarios over real processes: the workspace's
//! binaries, a devnet of `rill-node` processes per scenario, and what to wait for.
//!
//! The scenarios run the real `rill-node` and `rill` binaries, built once per test run with
//! the fault hooks compiled in (`RILL_FAULTS`), against a real anvil.

mod bins;
mod hardhat;
mod net;
mod watchdog;

pub use bins::{Binaries, binaries};
pub use hardhat::Hardhat;
pub use net::{BLOCK_TIME, Chain, Launch, Net, chain, eventually};
pub use watchdog::children;
