//! A failed fsync is a fault like the others. A child process runs a
//! `Synced` store with a tiny `LD_PRELOAD` shim (compiled here with the C
//! compiler RocksDB's build needs anyway) that makes `fsync`/`fdatasync`
//! fail with EIO once a flag file exists. The append that meets it fails
//! with RocksDB's error, the store is poisoned, and after a reopen without
//! the shim every acknowledged append is there, gapless, chains intact.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{append, assert_gapless_and_intact, op, unit};
use reactordb::{Durability, OperationStore, StoreOptions};

const CHILD_ENV: &str = "REACTORDB_FSYNC_CHILD_DIR";
const FLAG_ENV: &str = "REACTORDB_FAIL_FSYNC_FLAG";

const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int failing(void) {
    const char *flag = getenv("REACTORDB_FAIL_FSYNC_FLAG");
    return flag != NULL && access(flag, F_OK) == 0;
}

int fsync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

int fdatasync(int fd) {
    if (failing()) { errno = EIO; return -1; }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
"#;

/// The child: appends one operation at a time to a `Synced` store and
/// reports each acknowledgement; after 50 it raises the flag, then reports
/// the first failure and what the next append answers.
#[test]
fn fsync_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // run normally: nothing to do
    };
    let flag = std::env::var(FLAG_ENV).expect("flag path");
    let store = OperationStore::open(
        std::path::Path::new(&dir).join("db"),
        StoreOptions::with_durability(Durability::Synced),
    )
    .expect("open");
    let u = unit("d", "global");
    let mut out = std::io::stdout().lock();
    // The harness's own "test fsync_child ..." has no line end yet.
    writeln!(out).expect("stdout");
    for i in 0..10_000u64 {
        if i == 50 {
            std::fs::write(&flag, b"").expect("raise the flag");
        }
        match append(&store, &u, i, vec![op(&u, i, &format!("a{i}"), i + 1)]) {
            Ok(_) => writeln!(out, "ack {i}").expect("stdout"),
            Err(e) => {
                writeln!(out, "err {e}").expect("stdout");
                let next = append(&store, &u, i, vec![op(&u, i, "again", 1)]);
                writeln!(out, "next {next:?}").expect("stdout");
                writeln!(out, "poisoned {}", store.is_poisoned()).expect("stdout");
                break;
            }
        }
        out.flush().expect("flush");
    }
}

#[test]
fn a_failed_fsync_poisons_the_store_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("shim.c");
    let shim = dir.path().join("shim.so");
    std::fs::write(&source, SHIM).expect("write shim");
    let built = ["cc", "clang", "gcc"].iter().any(|compiler| {
        Command::new(compiler)
            .args(["-shared", "-fPIC", "-o"])
            .arg(&shim)
            .arg(&source)
            .arg("-ldl")
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(
        built,
        "a C compiler (cc, clang or gcc) builds the fsync shim"
    );
    let flag = dir.path().join("fail-fsync");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "fsync_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, dir.path())
        .env(FLAG_ENV, &flag)
        .env("LD_PRELOAD", &shim)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let mut acknowledged = Vec::new();
    let mut failure = None;
    let mut next = None;
    let mut poisoned = None;
    let output = child.wait_with_output().expect("child runs");
    for line in BufReader::new(&output.stdout[..]).lines() {
        let line = line.expect("line");
        if let Some(i) = line.strip_prefix("ack ") {
            acknowledged.push(i.parse::<u64>().expect("index"));
        } else if let Some(e) = line.strip_prefix("err ") {
            failure = Some(e.to_owned());
        } else if let Some(n) = line.strip_prefix("next ") {
            next = Some(n.to_owned());
        } else if let Some(p) = line.strip_prefix("poisoned ") {
            poisoned = Some(p == "true");
        }
    }
    let failure = failure.expect("an append failed once fsync did");
    assert!(failure.contains("IO error"), "{failure}");
    assert_eq!(next.as_deref(), Some("Err(Poisoned)"));
    assert_eq!(poisoned, Some(true));
    assert_eq!(acknowledged, (0..50).collect::<Vec<_>>());
    // Reopened without the shim: every acknowledged append is there.
    let store = OperationStore::open(dir.path().join("db"), StoreOptions::default()).expect("open");
    let on_disk = assert_gapless_and_intact(&store);
    assert!(on_disk >= acknowledged.len() as u64, "{on_disk}");
    println!(
        "fsync failed after {} acknowledged synced appends: {failure}; {on_disk} on disk after reopen",
        acknowledged.len()
    );
}
