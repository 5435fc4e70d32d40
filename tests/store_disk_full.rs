//! A full disk is a fault like the others: a real filesystem runs out of
//! space (a small tmpfs mounted for the test), the append that meets it
//! fails with RocksDB's error, the store is poisoned, and after the space
//! grows and the store reopens, every acknowledged operation is there and
//! the ordinals are gapless. Needs root for `mount` (CI runs as root; a
//! run without it is skipped with a notice, except under `CI=true`).

mod common;

use std::process::Command;

use common::{append, assert_gapless_and_intact, op, open, unit};
use reactordb::Error;

struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(path: &std::path::Path, size: &str) -> Option<Mounted> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mounted(path.to_path_buf()))
}

#[test]
fn a_full_disk_poisons_the_store_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mounted) = mount_tmpfs(dir.path(), "6m") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must be able to mount a tmpfs for the disk-full test"
        );
        eprintln!("skipped: cannot mount a tmpfs here (not root)");
        return;
    };
    let db = dir.path().join("db");
    let u = unit("d", "global");
    let mut acknowledged = 0u64;
    let failure = {
        let store = open(&db);
        let mut failure = None;
        for i in 0..10_000u64 {
            let mut operation = op(&u, i, &format!("a{i}"), i + 1);
            operation.action.input = vec![b'x'; 64 * 1024];
            match append(&store, &u, i, vec![operation]) {
                Ok(_) => acknowledged += 1,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let failure = failure.expect("the disk fills up");
        assert!(store.is_poisoned(), "{failure:?}");
        let again = append(
            &store,
            &u,
            acknowledged,
            vec![op(&u, acknowledged, "late", 1)],
        );
        assert!(matches!(again, Err(Error::Poisoned)), "{again:?}");
        failure
    };
    assert!(matches!(failure, Error::Storage(_)), "{failure:?}");
    assert!(acknowledged > 0);
    // More space, then reopen: everything acknowledged is there, gapless.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    assert!(grown, "remount with more space");
    let store = open(&db);
    let on_disk = assert_gapless_and_intact(&store);
    assert!(on_disk >= acknowledged, "{on_disk} < {acknowledged}");
    println!(
        "disk full after {acknowledged} acknowledged 64 KiB appends: {failure}; {on_disk} on disk after reopen"
    );
    drop(store);
    drop(mounted);
}
