//! A real killed process running a reactor: every job that reached
//! `WriteReady` before SIGKILL is in the store after reopen (`Buffered`
//! survives a process crash), and the reopened view catches up to it.
//! Jobs are submitted many at a time, so workers write them in runs.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};

use common::docs::stream_ops;
use common::reactor::*;
use reactordb::{CounterModel, Scope, ViewFilter};

const CHILD_ENV: &str = "REACTORDB_REACTOR_CRASH_CHILD_DIR";
const DOCS: usize = 8;

/// The child: creates the documents, then submits increments 64 at a time
/// and prints each job's action once it is written. Killed by the parent.
#[test]
fn reactor_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // run normally: nothing to do
    };
    let reactor = open(std::path::Path::new(&dir), 4);
    for d in 0..DOCS {
        create_counter(&reactor, &format!("doc-{d}"));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "created").expect("stdout");
    for round in 0u64.. {
        let jobs: Vec<_> = (0..64u64)
            .map(|i| {
                let n = round * 64 + i;
                let doc = format!("doc-{}", n as usize % DOCS);
                let action = format!("a{n}");
                let job = reactor
                    .execute(id(&doc), main(), vec![increment(&action)])
                    .expect("submit");
                (doc, action, job)
            })
            .collect();
        for (doc, action, job) in jobs {
            written(&job);
            writeln!(out, "ack {doc} {action}").expect("stdout");
        }
        out.flush().expect("flush");
    }
}

#[test]
fn written_jobs_survive_sigkill_and_the_view_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = common::spawn_child("reactor_crash_child", CHILD_ENV, dir.path());
    let stdout = child.stdout.take().expect("piped");
    let mut acked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut count = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(rest) = line.strip_prefix("ack ") {
            let (doc, action) = rest.split_once(' ').expect("doc and action");
            acked
                .entry(doc.to_owned())
                .or_default()
                .push(action.to_owned());
            count += 1;
            if count >= 2_000 {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(count >= 2_000, "child acknowledged {count} jobs");

    let reactor = open(dir.path(), 2);
    assert!(reactor.store().verify_all().expect("verify").is_clean());
    for d in 0..DOCS {
        let doc = format!("doc-{d}");
        let stored: Vec<String> = stream_ops(reactor.store(), &doc, &Scope::global())
            .iter()
            .map(|o| o.action.id.to_string())
            .collect();
        // Every acknowledged action is stored, in submission order (the
        // stream may hold more: written, not yet reported when killed).
        let acked = acked.get(&doc).cloned().unwrap_or_default();
        assert!(
            stored.len() >= acked.len(),
            "{doc}: {} stored < {} acknowledged",
            stored.len(),
            acked.len()
        );
        assert_eq!(stored[..acked.len()], acked[..], "{doc}");
        // The reopened view caught up with everything stored.
        let token = reactordb::ConsistencyToken(reactor.store().last_ordinal());
        let read = reactor
            .view()
            .get(&id(&doc), &ViewFilter::default(), Some(token))
            .expect("read");
        let value = CounterModel::value(read.state(&Scope::global()).expect("global"));
        assert_eq!(value, Some(stored.len() as i64), "{doc}");
    }
}
