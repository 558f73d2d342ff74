//! The `rill-node` binary runs on jemalloc with the options its `main.rs` sets: checked on the
//! built binary, whose allocator prints its run-time options at exit when asked to.

#![cfg(all(target_os = "linux", not(target_env = "musl")))]

use std::process::Command;

#[test]
fn jemalloc_returns_freed_pages_from_a_background_thread() {
    let output = Command::new(env!("CARGO_BIN_EXE_rill-node"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run rill-node --version");
    assert!(output.status.success());
    let stats = String::from_utf8_lossy(&output.stderr);
    for option in [
        "opt.background_thread: true",
        "opt.dirty_decay_ms: 1000",
        "opt.muzzy_decay_ms: 0",
    ] {
        assert!(
            stats.contains(option),
            "{option} missing from jemalloc's stats:\n{stats}"
        );
    }
}
