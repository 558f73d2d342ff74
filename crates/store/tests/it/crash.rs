//! A writer process is killed (SIGKILL) at random points while it adds events, stores
//! candidates, promotes miniblocks and settles them; each time the store reopens consistent and the writer
//! resumes from it.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use rill_protocol::ParsedMiniblock;
use rill_store::Store;

use crate::support::{STREAM, genesis, hashes, key, message, next};

const CHILD_DIR: &str = "RILL_STORE_CRASH_DIR";

/// The writer, run in a child process by the test below.
#[test]
#[ignore = "run by store_reopens_consistent_after_the_writer_is_killed"]
fn writer_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&dir)).unwrap();
    let mut head: ParsedMiniblock = match store.head(&STREAM).unwrap() {
        None => {
            let g = genesis();
            store
                .create_stream(&STREAM, &[key(1).address()], &g)
                .unwrap();
            g
        }
        Some(_) => store.load(&STREAM, 32).unwrap().miniblocks.pop().unwrap(),
    };
    let mut salt = u64::from(std::process::id()) << 32;
    // A promotion settled one promotion late, or at once (every third), as the node's writer
    // settles after a delay: a kill finds none, one or two pending.
    let mut unsettled: Option<ParsedMiniblock> = None;
    loop {
        let events: Vec<_> = (0..20)
            .map(|_| {
                salt += 1;
                message(&head, salt)
            })
            .collect();
        // One at a time, then one write of ten: the promotion below uses part of that row.
        for e in &events[..10] {
            store
                .add_to_minipool(&STREAM, std::slice::from_ref(e))
                .unwrap();
        }
        store.add_to_minipool(&STREAM, &events[10..]).unwrap();
        // Fifteen events from the pool and one written with the candidate.
        salt += 1;
        let mut included = events[..15].to_vec();
        included.push(message(&head, salt));
        let candidate = next(Some(&head), included);
        let mut pooled = vec![true; 15];
        pooled.push(false);
        store
            .store_pooled_candidate(&STREAM, &candidate, &pooled)
            .unwrap();
        store.promote_candidate(&STREAM, &candidate).unwrap();
        if let Some(previous) = unsettled.take() {
            store.settle(&STREAM, &previous).unwrap();
        }
        if candidate.num().is_multiple_of(3) {
            store.settle(&STREAM, &candidate).unwrap();
        } else {
            unsettled = Some(candidate.clone());
        }
        head = candidate;
    }
}

fn check_consistent(store: &Store) -> u64 {
    assert_eq!(
        store.pending_promotions().unwrap(),
        0,
        "opening settled every pending promotion"
    );
    let restored = store.load(&STREAM, 32).expect("reopens and verifies");
    let (head_num, head_hash) = store.head(&STREAM).unwrap().expect("a head");
    assert_eq!(
        restored.miniblocks.len() as u64,
        head_num + 1,
        "every miniblock up to the head"
    );
    assert_eq!(restored.miniblocks.last().unwrap().hash(), head_hash);
    for pair in restored.miniblocks.windows(2) {
        assert_eq!(pair[1].prev_hash(), pair[0].hash(), "linked");
    }
    let included: HashSet<_> = restored
        .miniblocks
        .iter()
        .flat_map(|m| hashes(m.events()))
        .collect();
    assert!(
        restored
            .minipool
            .iter()
            .all(|e| !included.contains(&e.hash())),
        "no promoted event left in the minipool"
    );
    assert!(
        restored.candidates.iter().all(|c| c.num() > head_num),
        "no stale candidate"
    );
    head_num
}

#[test]
fn store_reopens_consistent_after_the_writer_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last = 0;
    for round in 0..6u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::writer_child",
                "--ignored",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + 137 * round));
        child.kill().unwrap(); // SIGKILL: no destructor, no flush
        child.wait().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let head = check_consistent(&store);
        assert!(head >= last, "the head never goes back");
        last = head;
    }
    assert!(last > 0, "the writer made progress between kills");
}
