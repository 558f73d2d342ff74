//! Hardhat's node: a second EVM, not anvil, for the devnet scenario (npm `hardhat`, pinned in
//! the workspace's `package-lock.json`, configured by `tests/hardhat/hardhat.config.js`).

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use rill_chain::anvil::{install, workspace_root};

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
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
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
            .current_dir(root.join("tests/hardhat"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (Node.js) runs hardhat");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("Started HTTP") => break,
                Some(Ok(_)) => {}
                _ => panic!("hardhat's node exited before serving"),
            }
        }
        // It logs every call: keep draining so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, port }
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
