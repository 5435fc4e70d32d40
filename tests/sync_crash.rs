//! Sync through a real killed process: a child runs two reactors syncing
//! over an in-process channel, both writing to one shared document, and
//! reports each write once it is written; the parent SIGKILLs it, reopens
//! both databases, resumes their sessions and checks: the sessions resume
//! from stored cursors, every reported write reaches both replicas, the
//! replicas hold the same set, no operation under two contents, every
//! chain verifies. Over several kill cycles on the same databases.
//!
//! The document is a counter: most loads sort before the receiver's own
//! newest write and refold from the last snapshot, and a model whose state
//! grows with the history would make that cost, not sync, what the long
//! mode measures.
//!
//! `REACTORDB_SYNC_CRASH_CYCLES=50 cargo test --test sync_crash --
//! --nocapture` runs the long mode.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::docs::stream_ops;
use common::reactor::*;
use reactordb::{
    in_process_pair, CounterModel, Reactor, RemoteOptions, Scope, SyncManager, SyncOptions,
    SyncUnit,
};

const CHILD_ENV: &str = "REACTORDB_SYNC_CRASH_CHILD_DIR";

fn node(dir: &std::path::Path, me: &str, other: &str) -> (Arc<Reactor>, SyncManager) {
    let reactor = Arc::new(open(dir, 2));
    let options = SyncOptions::new()
        .name(me)
        .resend_after(Duration::from_millis(50))
        .anti_entropy_every(None);
    let sync = SyncManager::open(reactor.clone(), options).expect("sync");
    sync.add_remote(other, RemoteOptions::new())
        .expect("remote");
    (reactor, sync)
}

#[test]
fn sync_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // run normally: nothing to do
    };
    let dir = std::path::Path::new(&dir);
    let (a, sa) = node(&dir.join("a"), "a", "b");
    let (b, sb) = node(&dir.join("b"), "b", "a");
    let (x, y) = in_process_pair();
    let _sessions = (
        sa.attach("b", x).expect("attach"),
        sb.attach("a", y).expect("attach"),
    );
    let unit = SyncUnit::new(id("doc"), Scope::document(), main());
    if a.store().head(&unit).expect("head").is_none() {
        written(
            &a.create(id("doc"), create_input(CounterModel::document_type()))
                .expect("submit"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.store().head(&unit).expect("head").is_none() {
        assert!(Instant::now() < deadline, "the creation never reached b");
        std::thread::sleep(Duration::from_millis(5));
    }
    let prefix = std::process::id();
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        let (reactor, name) = if n % 2 == 0 { (&a, "a") } else { (&b, "b") };
        let aid = format!("p{prefix}-{name}{n}");
        let job = reactor
            .execute(id("doc"), main(), vec![action(&aid, "INCREMENT", "1", n)])
            .expect("submit");
        written(&job);
        writeln!(out, "ack {aid}").expect("stdout");
        out.flush().expect("flush");
    }
}

fn action_ids(reactor: &Reactor) -> BTreeSet<String> {
    stream_ops(reactor.store(), "doc", &Scope::global())
        .iter()
        .map(|o| o.action.id.to_string())
        .collect()
}

fn set(reactor: &Reactor) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for scope in [Scope::document(), Scope::global()] {
        for op in stream_ops(reactor.store(), "doc", &scope) {
            out.entry(op.id.to_string())
                .or_default()
                .insert(op.content_hash.to_string());
        }
    }
    out
}

#[test]
fn syncing_reactors_killed_mid_sync_resume_and_converge() {
    let cycles: usize = common::env_or("REACTORDB_SYNC_CRASH_CYCLES", 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked: BTreeSet<String> = BTreeSet::new();
    for cycle in 0..cycles {
        let mut child = common::spawn_child("sync_crash_child", CHILD_ENV, dir.path());
        let spawned = Instant::now();
        let stdout = child.stdout.take().expect("piped");
        let mut count = 0;
        for line in BufReader::new(stdout).lines() {
            if let Some(aid) = line.expect("line").strip_prefix("ack ") {
                acked.insert(aid.to_owned());
                count += 1;
                if count >= 200 + cycle * 37 % 100 {
                    break;
                }
            }
        }
        // Sessions write their acked outbox cursor every 100 ms: a child
        // killed sooner may not have written one yet (a resend, not a
        // loss), and the cursor check below needs one.
        std::thread::sleep(Duration::from_millis(400).saturating_sub(spawned.elapsed()));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        assert!(
            count >= 200,
            "cycle {cycle}: the child reported {count} writes"
        );

        let (a, sa) = node(&dir.path().join("a"), "a", "b");
        let (b, sb) = node(&dir.path().join("b"), "b", "a");
        for (s, other) in [(&sa, "b"), (&sb, "a")] {
            let remote = &s.remotes().expect("remotes")[0];
            assert_eq!(remote.name, other);
            assert!(
                remote.outbox_cursor > 0 && remote.inbox_cursor > 0,
                "cycle {cycle}: cursors were stored: {remote:?}"
            );
        }
        let (x, y) = in_process_pair();
        let sessions = (
            sa.attach("b", x).expect("attach"),
            sb.attach("a", y).expect("attach"),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let caught_up = [(&sa, &a), (&sb, &b)].iter().all(|(s, r)| {
                s.remotes().expect("remotes")[0].outbox_cursor >= r.store().last_ordinal().get()
            });
            if caught_up && set(&a) == set(&b) {
                break;
            }
            assert!(Instant::now() < deadline, "cycle {cycle}: never converged");
            std::thread::sleep(Duration::from_millis(10));
        }
        for (name, reactor) in [("a", &a), ("b", &b)] {
            let held = action_ids(reactor);
            let missing: Vec<&String> = acked.difference(&held).collect();
            assert!(
                missing.is_empty(),
                "cycle {cycle}: {name} lacks written {missing:?}"
            );
            for (op, contents) in set(reactor) {
                assert_eq!(contents.len(), 1, "cycle {cycle}: {op} under two contents");
            }
            assert!(reactor.store().verify_all().expect("verify").is_clean());
        }
        drop(sessions);
        drop((sa, sb, a, b));
        eprintln!("cycle {cycle}: {count} writes reported, converged");
    }
    println!(
        "sync crash: {cycles} cycles, {} writes, none lost",
        acked.len()
    );
}
