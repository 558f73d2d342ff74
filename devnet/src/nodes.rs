//! Node processes of a devnet: start, stop (SIGTERM), kill -9, restart, readiness and status.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use rill_client::Client;
use rill_client::p2p as rill_p2p_addr;
use rill_protocol::NodeKey;

use crate::{DevnetFile, DevnetNode};

/// A running `rill-node`; stopped with SIGTERM when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// The node as the devnet file describes it.
    pub node: DevnetNode,
}

impl NodeProcess {
    /// Starts node `index` of the devnet, logging to `<data_dir>/../node.log`.
    pub fn start(
        binary: &Path,
        file: &DevnetFile,
        index: usize,
        block_time: Duration,
    ) -> anyhow::Result<Self> {
        let mut process = Self::prepare(binary, file, index, block_time);
        process.spawn()?;
        Ok(process)
    }

    /// Node `index` of the devnet, not started yet: set its environment, then
    /// [`start_again`](Self::start_again).
    pub fn prepare(binary: &Path, file: &DevnetFile, index: usize, block_time: Duration) -> Self {
        let node = file.nodes[index].clone();
        let args = vec![
            "run".into(),
            "--key".into(),
            node.key_file.display().to_string(),
            "--data".into(),
            node.data_dir.display().to_string(),
            "--listen".into(),
            node.listen.clone(),
            "--rpc-url".into(),
            file.rpc_url.clone(),
            "--registry".into(),
            file.registry.to_string(),
            "--metrics".into(),
            node.metrics.clone(),
            "--block-time".into(),
            block_time.as_secs_f64().to_string(),
        ];
        let log = node.data_dir.with_file_name("node.log");
        Self {
            binary: binary.to_owned(),
            args,
            env: Vec::new(),
            log,
            child: None,
            node,
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        // On its own host the node runs in its namespace (`ip netns exec` executes the node in
        // place, so the child is the node itself: kill -9 reaches it).
        let mut command = match &self.node.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        let child = command
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Sets an environment variable for the next (re)start, e.g. `RILL_FAULTS` for a node
    /// built with the fault hooks; `None` removes it.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.env.push((key.to_owned(), value.to_owned()));
        }
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Deletes the node's data directory (the process must be down): it lost its disk.
    pub fn wipe(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "wipe a node that is down");
        if self.node.data_dir.exists() {
            std::fs::remove_dir_all(&self.node.data_dir)?;
        }
        Ok(())
    }

    /// Starts a stopped process again (no-op if it runs).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.is_none() {
            self.spawn()?;
        }
        Ok(())
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL (no shutdown, no flush).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Leaves the process running after this handle is gone (`rill-devnet up --detach`).
    pub fn detach(mut self) -> Option<u32> {
        let pid = self.pid();
        self.child = None;
        pid
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until the node answers a client `Info` request.
pub async fn wait_serving(node: &DevnetNode, timeout: Duration) -> anyhow::Result<Client> {
    let deadline = tokio::time::Instant::now() + timeout;
    let addr: rill_p2p_addr::Multiaddr = node.multiaddr.parse()?;
    loop {
        let attempt = async {
            let client = Client::connect(addr.clone(), NodeKey::generate()).await?;
            client.info(false).await?;
            Ok::<_, rill_client::ClientError>(client)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(client)) => return Ok(client),
            _ if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!(
                    "node {} did not start serving within {timeout:?}; see its node.log",
                    node.address
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// One line of the devnet's status table, from the node's own counters (`Info`).
#[derive(Clone, Debug, Default)]
pub struct NodeStatusRow {
    /// Connected peers that are registered nodes.
    pub node_peers: u64,
    /// Streams placed on the node.
    pub streams_held: u64,
    /// Streams loaded in memory.
    pub streams_loaded: u64,
    /// Miniblocks promoted (all streams).
    pub promoted: u64,
    /// Events waiting in minipools.
    pub minipool: u64,
    /// Last chain block processed.
    pub chain_head: u64,
}

/// Reads a node's status through `client` (kept across refreshes).
pub async fn status(client: &Client) -> Option<NodeStatusRow> {
    let info = tokio::time::timeout(Duration::from_secs(3), client.info(false))
        .await
        .ok()?
        .ok()?;
    Some(NodeStatusRow {
        node_peers: info.node_peers,
        streams_held: info.streams_held,
        streams_loaded: info.streams_loaded,
        promoted: info.miniblocks_promoted,
        minipool: info.minipool_events,
        chain_head: info.chain_head,
    })
}
