//! Inline mode with an injected clock and id source: jobs run on the
//! caller's thread, and the same calls write the same keys and values in
//! every column family, run after run (what a fuzz target or a model test
//! needs to replay a failure).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reactordb::{
    Action, ActionId, ActionType, BatchJob, Branch, ConsistencyToken, CounterModel,
    CreateDocumentInput, DocumentId, Durability, JobStatus, ModelRegistry, Reactor, Scope,
    SystemAction, TodoModel,
};

const WAIT: Duration = Duration::from_secs(10);

fn id(s: &str) -> DocumentId {
    DocumentId::new(s).expect("valid")
}

/// Every key and value of every column family, in order.
type Dump = BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>>;

fn dump(path: &Path) -> Dump {
    let raw = common::raw_db(path);
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), path).expect("list");
    names
        .into_iter()
        .map(|name| {
            let cf = raw.cf_handle(&name).expect("family");
            let entries = raw
                .iterator_cf(cf, rocksdb::IteratorMode::Start)
                .map(|e| {
                    let (k, v) = e.expect("entry");
                    (k.to_vec(), v.to_vec())
                })
                .collect();
            (name, entries)
        })
        .collect()
}

/// Names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A mixed run: creations, increments over several documents, a batch with
/// dependencies, undo and redo, header helpers, a resubmission, a refused
/// action. Returns the store's last ordinal.
fn scenario(path: &Path, seed: u64) -> u64 {
    let clock = Arc::new(AtomicU64::new(1_700_000_000_000 + seed));
    let ids = Arc::new(AtomicU64::new(seed * 1_000_000));
    let reactor = {
        let (clock, ids) = (Arc::clone(&clock), Arc::clone(&ids));
        Reactor::builder(path)
            .durability(Durability::Buffered)
            .registry(ModelRegistry::with_examples())
            .inline(true)
            .clock(move || clock.fetch_add(7, Ordering::Relaxed))
            .id_source(move || {
                let n = ids.fetch_add(1, Ordering::Relaxed);
                ActionId::new(format!("id-{n:08}")).expect("valid")
            })
            .open()
            .expect("open")
    };
    let workers = thread_names()
        .iter()
        .filter(|n| n.starts_with("reactordb-work"))
        .count();
    assert_eq!(workers, 0, "inline mode starts no worker threads");

    let done = |job: reactordb::JobHandle| {
        // Ran on this thread: done before `execute` returned.
        let status = reactor.job_status(job.id()).expect("known");
        assert!(status.is_done(), "{status:?}");
        job.written(WAIT)
    };
    let increment = |n: u64, by: i64| {
        Action::new(
            reactor.new_action_id(),
            ActionType::new("INCREMENT").expect("valid"),
            Scope::global(),
            clock.fetch_add(3, Ordering::Relaxed) + n,
            by.to_string().into_bytes(),
        )
    };
    for d in 0..4 {
        let input = CreateDocumentInput::new(CounterModel::document_type(), 1, format!("c{d}"));
        done(reactor.create(id(&format!("c{d}")), input).expect("submit")).expect("created");
    }
    let input = CreateDocumentInput::new(TodoModel::document_type(), 1, "todo");
    done(reactor.create(id("t"), input).expect("submit")).expect("created");
    for round in 0..5u64 {
        for d in 0..4 {
            let action = increment(round, d as i64 + 1);
            done(
                reactor
                    .execute(id(&format!("c{d}")), Branch::main(), vec![action])
                    .expect("submit"),
            )
            .expect("written");
        }
    }
    let resubmitted = increment(9, 100);
    for _ in 0..2 {
        done(
            reactor
                .execute(id("c0"), Branch::main(), vec![resubmitted.clone()])
                .expect("submit"),
        )
        .expect("written once");
    }
    let batch = (0..6)
        .map(|k| {
            let job = BatchJob::new(
                id(&format!("c{}", k % 3)),
                Branch::main(),
                vec![increment(20 + k as u64, 1)],
            );
            if k > 0 {
                job.depends_on(vec![k - 1])
            } else {
                job
            }
        })
        .collect();
    for job in reactor.submit_batch(batch).expect("batch") {
        done(job).expect("written");
    }
    done(
        reactor
            .undo(id("c1"), Branch::main(), Scope::global())
            .expect("undo"),
    )
    .expect("undone");
    done(
        reactor
            .undo(id("c1"), Branch::main(), Scope::global())
            .expect("undo"),
    )
    .expect("undone");
    done(
        reactor
            .redo(id("c1"), Branch::main(), Scope::global())
            .expect("redo"),
    )
    .expect("redone");
    done(
        reactor
            .set_name(id("c2"), Branch::main(), "renamed")
            .expect("submit"),
    )
    .expect("named");
    done(
        reactor
            .execute_system(
                id("c3"),
                Branch::main(),
                SystemAction::AddRelationship {
                    target: id("t"),
                    relationship_type: "child".into(),
                },
            )
            .expect("submit"),
    )
    .expect("related");
    let refused = Action::new(
        reactor.new_action_id(),
        ActionType::new("INCREMENT").expect("valid"),
        Scope::global(),
        1,
        b"not a number".to_vec(),
    );
    let failed = reactor
        .execute(id("c2"), Branch::main(), vec![refused])
        .expect("submit");
    assert!(matches!(
        reactor.job_status(failed.id()),
        Some(JobStatus::Failed { .. })
    ));
    reactor
        .execute_and_wait(id("c3"), Branch::main(), vec![increment(40, 5)], WAIT)
        .expect("written");
    let last = reactor.store().last_ordinal();
    reactor
        .view()
        .wait_for(ConsistencyToken(last))
        .expect("the view applied everything");
    reactor.close().expect("close");
    last.get()
}

#[test]
fn the_same_calls_write_the_same_bytes() {
    let runs: Vec<(u64, Dump)> = (0..3)
        .map(|_| {
            let dir = tempfile::tempdir().expect("tempdir");
            let last = scenario(dir.path(), 1);
            (last, dump(dir.path()))
        })
        .collect();
    assert!(
        runs[0].0 > 40,
        "the scenario wrote {} operations",
        runs[0].0
    );
    for (last, dump) in &runs[1..] {
        assert_eq!(*last, runs[0].0);
        for (family, entries) in &runs[0].1 {
            let other = dump.get(family).expect("same families");
            // The first entry that differs, named briefly.
            let differs = entries
                .iter()
                .zip(other)
                .position(|(a, b)| a != b)
                .or((entries.len() != other.len()).then_some(entries.len().min(other.len())));
            if let Some(at) = differs {
                let key = entries.get(at).map(|(k, _)| String::from_utf8_lossy(k));
                panic!("column family {family} differs between runs at entry {at} (key {key:?})");
            }
        }
        assert_eq!(dump.len(), runs[0].1.len());
    }
    // The comparison can fail: another seed (other timestamps and ids)
    // writes other bytes.
    let dir = tempfile::tempdir().expect("tempdir");
    scenario(dir.path(), 2);
    assert_ne!(dump(dir.path())["operations"], runs[0].1["operations"]);
}

#[test]
fn inline_callers_on_one_document_never_strand_a_job() {
    // One thread waits on its jobs (`execute_and_wait`), another submits
    // to the same document (`execute`): inline, nobody but the callers
    // runs jobs, so whatever one queues while the other runs must still
    // run, and every handle must be written in time.
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = Arc::new(
        Reactor::builder(dir.path())
            .durability(Durability::Buffered)
            .registry(ModelRegistry::with_examples())
            .inline(true)
            .open()
            .expect("open"),
    );
    let input = CreateDocumentInput::new(CounterModel::document_type(), 1, "c");
    reactor
        .create(id("c"), input)
        .expect("submit")
        .written(WAIT)
        .expect("created");
    let action = |tag: &str, n: u64| {
        Action::new(
            ActionId::new(format!("{tag}{n}")).expect("valid"),
            ActionType::new("INCREMENT").expect("valid"),
            Scope::global(),
            n,
            b"1".to_vec(),
        )
    };
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            for n in 0..300 {
                reactor
                    .execute_and_wait(id("c"), Branch::main(), vec![action("w", n)], WAIT)
                    .expect("written");
            }
        });
        let submitting = s.spawn(|| {
            let handles: Vec<_> = (0..300)
                .map(|n| {
                    reactor
                        .execute(id("c"), Branch::main(), vec![action("s", n)])
                        .expect("submit")
                })
                .collect();
            for handle in handles {
                handle.written(WAIT).expect("not stranded");
            }
        });
        waiting.join().expect("no panic");
        submitting.join().expect("no panic");
    });
    assert_eq!(reactor.metrics().jobs_written, 601);

    // The sharp case: a job queued while a long `execute_and_wait` runs,
    // with nothing submitted after it. The long job is 10,000 actions (tens
    // of ms); the other caller submits a few ms into it.
    let started = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let long = s.spawn(|| {
            let actions = (0..10_000).map(|n| action("long", n)).collect();
            started.wait();
            reactor
                .execute_and_wait(id("c"), Branch::main(), actions, WAIT)
                .expect("written");
        });
        started.wait();
        std::thread::sleep(Duration::from_millis(3));
        let queued = reactor
            .execute(id("c"), Branch::main(), vec![action("behind", 0)])
            .expect("submit");
        long.join().expect("no panic");
        queued
            .written(WAIT)
            .expect("not stranded behind the long job");
    });
}
