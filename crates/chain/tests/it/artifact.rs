use std::process::Command;

use rill_chain::anvil::{install, workspace_root};

/// The committed ABI/bytecode must be what the pinned solc makes of the committed source.
#[test]
fn committed_registry_artifact_matches_its_source() {
    let root = workspace_root();
    install(&root).expect("npm packages install");
    let output = Command::new("node")
        .arg("protocol/contracts/build.mjs")
        .arg("--check")
        .current_dir(&root)
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
