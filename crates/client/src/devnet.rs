//! `devnet.json`: where a network's nodes and chain are, as `rill-devnet` writes it and the
//! CLI and the tests read it.

use std::path::{Path, PathBuf};

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

/// `DIR/devnet.json`: everything a client or a node needs to find the devnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetFile {
    /// The chain's JSON-RPC endpoint.
    pub rpc_url: String,
    /// The chain id.
    pub chain_id: u64,
    /// The registry contract.
    pub registry: Address,
    /// The nodes, in registration order.
    pub nodes: Vec<DevnetNode>,
}

/// One node of the devnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetNode {
    /// Its address.
    pub address: Address,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its address for peers and clients: the listen address and `/p2p/<peer id>`.
    pub multiaddr: String,
    /// What it listens on.
    pub listen: String,
    /// Its Prometheus metrics address.
    pub metrics: String,
    /// Its key file.
    pub key_file: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The network namespace it runs in, when the devnet puts nodes on their own hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// Why a devnet file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DevnetFileError {
    /// There is no file (no devnet was started there).
    #[error("no devnet at {path} (start one with `scripts/devnet up`, or pass --node MULTIADDR)", path = path.display())]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not a devnet file.
    #[error("{path} is not a devnet file: {source}", path = path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
    /// The file could not be written.
    #[error("writing {path}: {source}", path = path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl DevnetFile {
    /// Where the file lives in a devnet directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("devnet.json")
    }

    /// Reads `DIR/devnet.json`.
    pub fn load(dir: &Path) -> Result<Self, DevnetFileError> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path).map_err(|source| DevnetFileError::Missing {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| DevnetFileError::Malformed { path, source })
    }

    /// Writes `DIR/devnet.json`.
    pub fn save(&self, dir: &Path) -> Result<(), DevnetFileError> {
        let path = Self::path(dir);
        let text = serde_json::to_string_pretty(self).expect("a devnet file serializes");
        std::fs::write(&path, text + "\n").map_err(|source| DevnetFileError::Write { path, source })
    }
}
