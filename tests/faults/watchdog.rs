//! The watchdog's view of this process's children: the nodes and anvil it kills when a
//! scenario hangs.

use std::process::Command;

use rill_tests::children;

#[test]
fn children_are_found_through_proc() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    assert!(children().contains(&child.id()));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!children().contains(&child.id()));
}
