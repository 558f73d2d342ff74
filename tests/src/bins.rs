//! The workspace's binaries, built once per test run in the profile the tests run in.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The build, as `scripts/test` runs it before the tests (keep the two the same, or the
/// scenarios rebuild the node's dependencies with other features).
const BUILD: &[&str] = &[
    "build",
    "--locked",
    "-p",
    "rill-node",
    "-p",
    "rill-devnet",
    "--features",
    "rill-node/faults",
    "--bin",
    "rill-node",
    "--bin",
    "rill",
    "--bin",
    "rill-devnet",
];

/// Where the binaries are.
#[derive(Debug)]
pub struct Binaries {
    /// `rill-node`, with the fault hooks compiled in.
    pub node: PathBuf,
    /// The `rill` CLI.
    pub cli: PathBuf,
    /// `rill-devnet`, which starts the `rill-node` beside it.
    pub devnet: PathBuf,
}

/// Builds `rill-node` (with `--features faults`), `rill` and `rill-devnet` once, next to the
/// test binary, and returns their paths. Cargo is not running while tests run, so this is a
/// plain build: a no-op after `scripts/test`'s, which is the same command in the same
/// environment.
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        // target/<profile>/deps/<test> → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("the test binary lives in target/<profile>/deps")
            .to_owned();
        let release = profile_dir.file_name().is_some_and(|p| p == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(BUILD);
        if release {
            build.arg("--release");
        }
        // cargo sets these for the test process; build scripts that depend on them (ring's
        // does) would see a change from the top-level build and rebuild half the dependency
        // tree, twice per test run.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .iter()
            .any(|prefix| key.starts_with(prefix))
            {
                build.env_remove(key.as_ref());
            }
        }
        let status = build.status().expect("running cargo build");
        assert!(
            status.success(),
            "building rill-node, rill and rill-devnet failed"
        );
        Binaries {
            node: profile_dir.join("rill-node"),
            cli: profile_dir.join("rill"),
            devnet: profile_dir.join("rill-devnet"),
        }
    })
}
