//! The built binaries, run as processes: `rill-node` on jemalloc with the options its
//! `main.rs` sets (its allocator prints its run-time options at exit when asked to), and the
//! `rill` CLI writing into a pipe whose reader is gone.

use std::process::Command;

#[cfg(all(target_os = "linux", not(target_env = "musl")))]
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

/// `rill stream get S | head`: the reader stops, and the CLI ends quietly instead of panicking.
#[test]
fn the_cli_ends_quietly_when_the_reader_of_its_output_is_gone() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let key = dir.path().join("client.key");
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_rill"))
        .arg("keygen")
        .arg("--out")
        .arg(&key)
        .stdout(writer)
        .output()
        .expect("run rill keygen");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}: {stderr}", output.status);
    assert!(stderr.is_empty(), "nothing to report: {stderr}");
    assert!(
        key.exists(),
        "the key is written before its address is printed"
    );
}
