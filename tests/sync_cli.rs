//! Two OS processes of the `reactordb` binary syncing over gRPC on
//! 127.0.0.1: `serve` on one database, `sync --peer` on another. A
//! document edited on both sides converges (same operations, same state
//! hash), `local` operations never arrive, and a wrong token is refused
//! with a message naming it.
#![cfg(feature = "grpc")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::docs::stream_ops;
use common::reactor::*;
use reactordb::{Action, ActionId, ActionType, Reactor, Scope};

const BIN: &str = env!("CARGO_BIN_EXE_reactordb");

fn increment_in(reactor: &Reactor, aid: &str, scope: Scope) {
    let add = Action::new(
        ActionId::new(aid).expect("id"),
        ActionType::new("INCREMENT").expect("type"),
        scope,
        1,
        b"1".to_vec(),
    );
    written(
        &reactor
            .execute(id("doc"), main(), vec![add])
            .expect("submit"),
    );
}

/// A running `reactordb` whose stdout lines arrive on a channel.
struct Process {
    child: Child,
    lines: flume::Receiver<String>,
}

impl Process {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn reactordb");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = flume::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for a line `pred` accepts.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line saying {what}"),
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number after `key ` in a live line.
fn field(line: &str, key: &str) -> u64 {
    line.split(", ")
        .find_map(|part| part.strip_prefix(&format!("{key} ")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Serves `a`, syncs `b` with it until `b` has sent `sent` and received
/// `received` operations and nothing of either side is unacked.
fn sync_round(a: &std::path::Path, b: &std::path::Path, sent: u64, received: u64) {
    let a_db = a.to_str().expect("utf-8");
    let b_db = b.to_str().expect("utf-8");
    let server = Process::start(&[
        "--db",
        a_db,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token",
        "T",
    ]);
    let listening = server.wait_for("listening", |l| l.starts_with("listening on "));
    let addr = listening
        .split_whitespace()
        .nth(2)
        .expect("an address")
        .to_owned();
    let url = format!("http://{addr}");
    let client = Process::start(&[
        "--db", b_db, "sync", "--peer", &url, "--token", "T", "--remote", "a",
    ]);
    // The server has acked all b sent when b's lag is 0; b has loaded all
    // the server sent when the server's lag is 0.
    client.wait_for("everything moved", |l| {
        l.contains(": connected")
            && field(l, "sent") >= sent
            && field(l, "received") >= received
            && field(l, "lag") == 0
    });
    server.wait_for("a's lag 0", |l| {
        l.contains(": connected") && field(l, "lag") == 0
    });
}

fn global_ids(reactor: &Reactor) -> Vec<String> {
    let mut ids: Vec<String> = stream_ops(reactor.store(), "doc", &Scope::global())
        .iter()
        .map(|o| o.action.id.to_string())
        .collect();
    ids.sort();
    ids.dedup(); // a merge re-appends copies: the set is what counts
    ids
}

fn state_hash(reactor: &Reactor) -> reactordb::Digest {
    let token = reactordb::ConsistencyToken(reactor.store().last_ordinal());
    reactor
        .view()
        .get(&id("doc"), &reactordb::ViewFilter::default(), Some(token))
        .expect("doc")
        .scopes[&Scope::global()]
        .state_hash
}

#[test]
fn two_processes_sync_a_document_edited_on_both_sides_and_keep_local_home() {
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    {
        let a = open(da.path(), 2);
        create_counter(&a, "doc");
        increment_in(&a, "a1", Scope::global());
        increment_in(&a, "a-local", Scope::local());
    }
    sync_round(da.path(), db.path(), 0, 2);
    {
        let (a, b) = (open(da.path(), 2), open(db.path(), 2));
        assert_eq!(global_ids(&b), ["a1"]);
        assert!(
            stream_ops(b.store(), "doc", &Scope::local()).is_empty(),
            "local stayed home"
        );
        increment_in(&a, "a2", Scope::global());
        increment_in(&b, "b1", Scope::global());
        increment_in(&b, "b-local", Scope::local());
    }
    sync_round(da.path(), db.path(), 1, 1);
    let (a, b) = (open(da.path(), 2), open(db.path(), 2));
    assert_eq!(global_ids(&a), ["a1", "a2", "b1"]);
    assert_eq!(global_ids(&a), global_ids(&b));
    assert_eq!(state_hash(&a), state_hash(&b));
    for (reactor, own) in [(&a, "a-local"), (&b, "b-local")] {
        let local: Vec<String> = stream_ops(reactor.store(), "doc", &Scope::local())
            .iter()
            .map(|o| o.action.id.to_string())
            .collect();
        assert_eq!(local, [own]);
    }
}

#[test]
fn a_wrong_token_is_refused_with_a_message_naming_it() {
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    drop(open(da.path(), 1));
    let a_db = da.path().to_str().expect("utf-8");
    let server = Process::start(&[
        "--db",
        a_db,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token",
        "right",
    ]);
    let listening = server.wait_for("listening", |l| l.starts_with("listening on "));
    let url = format!(
        "http://{}",
        listening.split_whitespace().nth(2).expect("addr")
    );
    let out = Command::new(BIN)
        .args([
            "--db",
            db.path().to_str().expect("utf-8"),
            "sync",
            "--peer",
            &url,
            "--token",
            "wrong",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("token"), "{stderr}");
}

/// A database a running `serve` holds is backed up by asking it:
/// `backup NAME --server URL --token T` writes a checkpoint under its
/// `--backup-dir` that opens on its own with everything; a wrong token, a
/// name that escapes the directory, and a taken name are refused, each
/// with one line.
#[test]
fn a_held_database_is_backed_up_by_its_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("served");
    let backups = dir.path().join("backups");
    {
        let reactor = open(&db, 2);
        create_counter(&reactor, "doc");
        increment_in(&reactor, "i1", Scope::global());
    }
    let served = Process::start(&[
        "--db",
        db.to_str().expect("utf8"),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token",
        "s3cret",
        "--backup-dir",
        backups.to_str().expect("utf8"),
    ]);
    let line = served.wait_for("listening", |l| l.starts_with("listening on "));
    let addr = line
        .trim_start_matches("listening on ")
        .split(' ')
        .next()
        .expect("address");
    let url = format!("http://{addr}");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .output()
            .expect("run reactordb")
    };
    // The writer holds the database: a local backup says what to do.
    let local = run(&[
        "--db",
        db.to_str().expect("utf8"),
        "backup",
        dir.path().join("local").to_str().expect("utf8"),
    ]);
    assert!(!local.status.success());
    let said = String::from_utf8_lossy(&local.stderr);
    assert!(said.contains("--server"), "{said}");

    let asked = run(&["backup", "first", "--server", &url, "--token", "s3cret"]);
    assert!(
        asked.status.success(),
        "{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    let copy = backups.join("first");
    assert!(String::from_utf8_lossy(&asked.stdout).contains(copy.to_str().expect("utf8")));
    {
        let reactor = open(&copy, 1);
        assert_eq!(
            stream_ops(reactor.store(), "doc", &Scope::global()).len(),
            1
        );
        assert!(reactor.store().verify_all().expect("verify").is_clean());
    }
    for (args, expect) in [
        (
            vec!["backup", "second", "--server", &url, "--token", "wrong"],
            "token",
        ),
        (
            vec!["backup", "../out", "--server", &url, "--token", "s3cret"],
            "name",
        ),
        (
            vec!["backup", "first", "--server", &url, "--token", "s3cret"],
            "exists",
        ),
        (
            vec!["backup", "x.tmp", "--server", &url, "--token", "s3cret"],
            "name",
        ),
    ] {
        let refused = run(&args);
        assert!(!refused.status.success(), "{args:?}");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(said.contains(expect), "{args:?}: {said}");
    }
    assert!(!dir.path().join("out").exists());
    drop(served);
}
