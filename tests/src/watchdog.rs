//! The last resort against a scenario that hangs: a devnet that lives longer than its budget
//! means the test waits on something that will never come. Instead of holding the whole test
//! run until CI's own limit (which tells nothing), the watchdog prints the nodes' log tails,
//! kills this process's children (nodes, anvil) and exits the test binary with a failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// How long one devnet may live: `RILL_TEST_WATCHDOG_SECS`, 20 minutes unless set (the
/// longest scenario takes a few).
fn budget() -> Duration {
    let secs = std::env::var("RILL_TEST_WATCHDOG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1200);
    Duration::from_secs(secs)
}

/// Disarmed when dropped.
pub(crate) struct Watchdog {
    _disarm: mpsc::Sender<()>,
}

impl Watchdog {
    /// Arms a watchdog for a devnet whose nodes log to `logs`.
    pub(crate) fn arm(logs: Vec<PathBuf>) -> Self {
        let budget = budget();
        let (disarm, disarmed) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = disarmed.recv_timeout(budget) {
                fire(budget, &logs);
            }
        });
        Self { _disarm: disarm }
    }
}

fn fire(budget: Duration, logs: &[PathBuf]) -> ! {
    // Straight to the file descriptor: the test harness captures `eprintln!`, and what it
    // captured is lost when the process exits.
    let mut out = std::io::stderr().lock();
    let _ = writeln!(
        out,
        "WATCHDOG: a devnet has lived for {budget:?}: the test hangs; stopping the run"
    );
    for log in logs {
        let _ = write!(
            out,
            "---- {} (tail) ----\n{}",
            log.display(),
            log_tail(log, 30)
        );
    }
    for pid in children() {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    std::process::exit(1)
}

/// The last `lines` unindented lines of the file at `path` (empty if it cannot be read), each ending in a
/// newline.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // A backtrace's frames (indented) would push the error they follow out of the tail.
    let tail: Vec<&str> = text
        .lines()
        .rev()
        .filter(|line| !line.starts_with(' '))
        .take(lines)
        .collect();
    tail.iter().rev().map(|line| format!("{line}\n")).collect()
}

/// This process's children, from `/proc`: what the watchdog kills.
pub fn children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces or ')'.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(me)
        })
        .collect()
}
