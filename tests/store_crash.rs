//! A real killed process: every append acknowledged before SIGKILL is there
//! after reopen (`Buffered` survives a process crash), chains verify and
//! ordinals stay gapless.

mod common;

use std::io::{BufRead, BufReader, Write};

use common::*;
use reactordb::{Ordinal, Paging};

const CHILD_ENV: &str = "REACTORDB_CRASH_CHILD_DIR";

/// The child: appends forever to four streams, printing each acknowledged
/// ordinal. It is killed by the parent; it never returns on its own.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // run normally: nothing to do
    };
    let store = open(std::path::Path::new(&dir));
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let u = unit(&format!("doc-{}", i % 4), "global");
        let rev = revision(&store, &u);
        let ops = vec![
            op(&u, rev, &format!("a{i}"), i),
            op(&u, rev + 1, &format!("b{i}"), i),
        ];
        let stored = append(&store, &u, rev, ops).expect("append");
        writeln!(out, "ack {}", stored[1].context.ordinal.get()).expect("stdout");
        out.flush().expect("flush");
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = spawn_child("crash_child", CHILD_ENV, dir.path());
    let stdout = child.stdout.take().expect("piped");
    let mut last_ack = 0u64;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(n) = line.strip_prefix("ack ") {
            last_ack = n.parse().expect("ordinal");
            if last_ack >= 3_000 {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(last_ack >= 3_000, "child acknowledged {last_ack}");

    let store = open(dir.path());
    let last = store.last_ordinal().get();
    assert!(
        last >= last_ack,
        "lost acknowledged writes: {last} < {last_ack}"
    );
    let feed = store
        .get_since_ordinal(Ordinal(1), Paging::all())
        .expect("feed");
    assert_eq!(feed.items.len() as u64, last);
    for (i, item) in feed.items.iter().enumerate() {
        assert_eq!(item.context.ordinal.get(), i as u64 + 1);
    }
    assert!(store.verify_all().expect("verify").is_clean());
    // Batches are atomic: each stream holds whole a/b pairs.
    for s in store.all_streams().expect("streams") {
        assert_eq!(s.revision.get() % 2, 0, "{:?} holds half a batch", s.unit);
    }
}
