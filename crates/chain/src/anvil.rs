//! A real anvil process for tests and devnets.
//!
//! anvil comes from the npm package `@foundry-rs/anvil`, pinned in the workspace's
//! `package-lock.json`. [`binary`] finds the platform binary (never the `.bin/anvil` node
//! wrapper: killing the wrapper would leave anvil running) and runs `npm ci` once, under a file
//! lock, if it is missing. [`Anvil`] starts it on a free 127.0.0.1 port and kills it on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rill_protocol::NodeKey;

/// anvil's first dev account key (from its default mnemonic): funded with 10,000 ETH.
pub const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// Why anvil could not be installed or started.
#[derive(Debug, thiserror::Error)]
pub enum AnvilError {
    /// npm is missing or `npm ci` failed.
    #[error("installing anvil with `npm ci` in {dir} failed: {reason}; install Node.js/npm and run `npm ci` there", dir = dir.display())]
    Install {
        /// Where npm ran.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The process could not be started or exited before listening.
    #[error("anvil did not start: {0}")]
    Start(String),
}

/// The workspace root this crate was built in (where `package-lock.json` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}

fn platform_package() -> &'static str {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "aarch64") => "anvil-linux-arm64",
        ("macos", "x86_64") => "anvil-darwin-amd64",
        ("macos", "aarch64") => "anvil-darwin-arm64",
        ("windows", _) => "anvil-win32-amd64",
        _ => "anvil-linux-amd64",
    }
}

/// Where `npm ci` in `root` puts the anvil binary.
pub fn binary_in(root: &Path) -> PathBuf {
    root.join("node_modules/@foundry-rs")
        .join(platform_package())
        .join("bin/anvil")
}

/// The anvil binary: `$RILL_ANVIL` if set, else the workspace's, installed on first use.
pub fn binary() -> Result<PathBuf, AnvilError> {
    if let Some(path) = std::env::var_os("RILL_ANVIL") {
        return Ok(PathBuf::from(path));
    }
    let root = workspace_root();
    let path = binary_in(&root);
    if !path.exists() {
        install(&root)?;
    }
    Ok(path)
}

/// Runs `npm ci` in `root` unless anvil, solc and hardhat are already there. Concurrent callers (parallel test
/// binaries) wait on a lock file, so npm runs once.
pub fn install(root: &Path) -> Result<(), AnvilError> {
    let fail = |reason: String| AnvilError::Install {
        dir: root.to_owned(),
        reason,
    };
    let lock = std::fs::File::create(root.join(".npm-install.lock"))
        .map_err(|e| fail(format!("lock file: {e}")))?;
    lock.lock().map_err(|e| fail(format!("lock file: {e}")))?;
    if binary_in(root).exists()
        && root.join("node_modules/solc").exists()
        && root.join("node_modules/hardhat").exists()
    {
        return Ok(());
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(root)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| fail(format!("could not run npm: {e}")))?;
    if !status.success() {
        return Err(fail(format!("npm ci exited with {status}")));
    }
    if !binary_in(root).exists() {
        return Err(fail(format!(
            "{} is still missing",
            binary_in(root).display()
        )));
    }
    Ok(())
}

/// How to start anvil.
#[derive(Clone, Debug, Default)]
pub struct AnvilConfig {
    /// Interval mining every this long; `None` mines a block per transaction.
    pub block_time: Option<Duration>,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Address to listen on; 127.0.0.1 if `None` (a devnet of hosts gives the machine's
    /// address on the hosts' network).
    pub host: Option<std::net::IpAddr>,
    /// Where anvil keeps its state: loaded at start if the file exists, written on exit
    /// (SIGTERM), so a devnet can resume.
    pub state: Option<PathBuf>,
    /// Also write the state this often (a devnet killed without SIGTERM then loses at most
    /// this much of its chain).
    pub state_interval: Option<Duration>,
    /// Chain id; anvil's default (31337) if `None`.
    pub chain_id: Option<u64>,
    /// Block gas limit; anvil's default (30 M) if `None`.
    pub gas_limit: Option<u64>,
}

impl AnvilConfig {
    /// Interval mining every `block_time`.
    pub fn with_block_time(block_time: Duration) -> Self {
        Self {
            block_time: Some(block_time),
            ..Self::default()
        }
    }
}

/// A running anvil; killed when dropped.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    host: std::net::IpAddr,
    port: u16,
}

impl Anvil {
    /// Starts anvil and waits until it listens.
    pub fn start(config: AnvilConfig) -> Result<Self, AnvilError> {
        let host = config
            .host
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let mut command = Command::new(binary()?);
        command
            .args([
                "--host",
                &host.to_string(),
                "--port",
                &config.port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(block_time) = config.block_time {
            command.args(["--block-time", &block_time.as_secs_f64().to_string()]);
        }
        if let Some(chain_id) = config.chain_id {
            command.args(["--chain-id", &chain_id.to_string()]);
        }
        if let Some(gas_limit) = config.gas_limit {
            command.args(["--gas-limit", &gas_limit.to_string()]);
        }
        if let Some(state) = &config.state {
            command.arg("--state").arg(state);
        }
        if let Some(interval) = config.state_interval {
            command.args(["--state-interval", &interval.as_secs().max(1).to_string()]);
        }
        let mut child = command
            .spawn()
            .map_err(|e| AnvilError::Start(format!("spawn: {e}")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AnvilError::Start("exited before listening".into()));
            };
            if let Some(address) = line.strip_prefix("Listening on ") {
                let port = address
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim().parse().ok());
                match port {
                    Some(port) => break port,
                    None => return Err(AnvilError::Start(format!("unexpected line {line:?}"))),
                }
            }
        };
        // Keep draining anvil's log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { child, host, port })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its HTTP JSON-RPC endpoint.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The funded dev account's key.
    pub fn dev_key() -> NodeKey {
        let bytes: [u8; 32] = alloy::hex::decode(DEV_KEY)
            .expect("constant hex")
            .try_into()
            .expect("32 bytes");
        NodeKey::from_secret_bytes(&bytes).expect("anvil's dev key is valid")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        // SIGTERM first: anvil writes its state file (if it keeps one) on the way out.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
