//! `StoreOptions::low_priority_background`: RocksDB's flush and compaction
//! threads run at `nice` 19 once a store opened with it, and at the
//! process's priority before. A test binary of its own: the setting is the
//! process's (RocksDB's default environment), so it would reach every other
//! test's stores.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use reactordb::{
    Action, ActionId, ActionType, Branch, CounterModel, Digest, DocumentId, Durability,
    NewOperation, OperationStore, Revision, Scope, StoreOptions,
};

/// The `nice` value of each of this process's threads named `name`.
fn nice_of(name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
        let path = task.expect("a task").path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue; // ended meanwhile
        };
        if comm.trim_end() != name {
            continue;
        }
        if let Ok(stat) = std::fs::read_to_string(path.join("stat")) {
            out.push(nice_in(&stat));
        }
    }
    out
}

/// The `nice` value in a `stat` file: field 19, the 17th after the name's
/// closing parenthesis (proc(5)).
fn nice_in(stat: &str) -> i64 {
    stat[stat.rfind(')').expect("a stat") + 1..]
        .split_whitespace()
        .nth(16)
        .expect("a nice field")
        .parse()
        .expect("a nice value")
}

/// Five flushes of a few appends each: work for the flush threads, and
/// level-0 files enough (four) for a compaction.
fn write_and_flush(store: &OperationStore, name: &str) {
    let document = DocumentId::new(name).expect("an id");
    for round in 0..5u64 {
        for i in 0..20 {
            let index = round * 20 + i;
            store
                .apply(
                    &document,
                    &CounterModel::document_type(),
                    &Scope::global(),
                    &Branch::main(),
                    Revision(index),
                    |txn| {
                        let action = Action::new(
                            ActionId::new(format!("{name}-{index}")).expect("an id"),
                            ActionType::new("INCREMENT").expect("a type"),
                            Scope::global(),
                            1,
                            b"1".to_vec(),
                        );
                        txn.add_operation(NewOperation::new(index, action, Digest::default()));
                    },
                )
                .expect("apply");
        }
        store.flush().expect("flush");
    }
}

/// Waits until `done` holds (a pool's thread takes its priority when it
/// next runs a job).
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn background_threads_drop_to_the_lowest_priority_only_when_asked() {
    let own = nice_in(&std::fs::read_to_string("/proc/self/stat").expect("stat"));
    let options = StoreOptions::with_durability(Durability::Buffered);

    let plain_dir = tempfile::tempdir().expect("tempdir");
    let plain = OperationStore::open(plain_dir.path(), options.clone()).expect("open");
    write_and_flush(&plain, "plain");
    let flushers = nice_of("rocksdb:high");
    assert!(!flushers.is_empty(), "no flush thread found");
    assert!(
        flushers.iter().all(|&n| n == own),
        "flush threads {flushers:?}, process {own}"
    );
    assert!(nice_of("rocksdb:low").iter().all(|&n| n == own));

    let low_dir = tempfile::tempdir().expect("tempdir");
    let low =
        OperationStore::open(low_dir.path(), options.low_priority_background(true)).expect("open");
    write_and_flush(&low, "low");
    wait_until("the flush threads at nice 19", || {
        nice_of("rocksdb:high").iter().all(|&n| n == 19)
    });
    // Five level-0 files make a compaction, on a thread of the other pool.
    wait_until("a compaction thread at nice 19", || {
        nice_of("rocksdb:low").contains(&19)
    });
    // Both stores still read and write.
    write_and_flush(&plain, "plain-again");
    assert_eq!(low.last_ordinal().get(), 100);
    assert_eq!(plain.last_ordinal().get(), 200);
}
