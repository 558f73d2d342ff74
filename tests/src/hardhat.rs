//! Hardhat's node: a second EVM, not anvil, for the devnet scenario (npm `hardhat`, pinned in
//! the workspace's `package-lock.json`, configured by `tests/hardhat/hardhat.config.js`).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rill_chain::anvil::{install, workspace_root};

/// How long hardhat's node may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running `hardhat node`; killed when dropped.
pub struct Hardhat {
    child: Child,
    port: u16,
}

impl Hardhat {
    /// Starts hardhat's node on a free 127.0.0.1 port (installing the npm packages on first
    /// use) and waits until it serves JSON-RPC.
    pub fn start() -> Self {
        let root = workspace_root();
        install(&root).expect("npm packages are installed");
        let port = rill_devnet::free_port().expect("a free port");
        // The CLI's own entry point under node: the child is the chain itself, not a wrapper.
        let mut child = Command::new("node")
            .arg(root.join("node_modules/hardhat/internal/cli/bootstrap.js"))
            .arg("--config")
            .arg(root.join("tests/hardhat/hardhat.config.js"))
            .args([
                "node",
                "--hostname",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .env("HARDHAT_DISABLE_TELEMETRY_PROMPT", "true")
            // Plain lines: with `CI` set (as CI services do) its colours would be on.
            .env("NO_COLOR", "1")
            .current_dir(root.join("tests/hardhat"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (Node.js) runs hardhat");
        // It logs every call: a thread drains its output for as long as it runs (so it never
        // blocks on a full pipe) and reports when it serves.
        let stdout = child.stdout.take().expect("piped");
        let (serving_tx, serving) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Matched inside the line all the same, colour codes or not.
                if line.contains("Started HTTP") {
                    let _ = serving_tx.send(());
                }
            }
        });
        let mut hardhat = Self { child, port };
        match serving.recv_timeout(START_TIMEOUT) {
            Ok(()) => hardhat,
            Err(RecvTimeoutError::Disconnected) => panic!("hardhat's node exited before serving"),
            Err(RecvTimeoutError::Timeout) => {
                let _ = hardhat.child.kill();
                panic!("hardhat's node did not serve within {START_TIMEOUT:?}")
            }
        }
    }

    /// Its JSON-RPC endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Hardhat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
