//! Durability per append and per job, `sync_wal`, `flush` and `close`.
//!
//! Whether a write was fsynced is read from `CommitStats::syncs`, which
//! counts the group writes made with RocksDB's `sync` option and the
//! explicit log syncs: the override must reach the write that carries it.

mod common;

use std::time::Duration;

use common::reactor::create_counter;
use reactordb::{
    Action, ActionId, ActionType, Branch, CounterModel, Digest, DocumentId, Durability, Error,
    ModelRegistry, NewOperation, OperationStore, Reactor, Revision, Scope, StoreOptions,
};

const WAIT: Duration = Duration::from_secs(10);

fn action(id: &str, scope: Scope) -> Action {
    Action::new(
        ActionId::new(id).expect("valid"),
        ActionType::new("INCREMENT").expect("valid"),
        scope,
        1,
        b"1".to_vec(),
    )
}

fn doc(s: &str) -> DocumentId {
    DocumentId::new(s).expect("valid")
}

/// One single-operation append to `doc`'s global stream at `index`.
fn append(
    store: &OperationStore,
    name: &str,
    index: u64,
    durability: Option<Durability>,
) -> reactordb::Result<()> {
    store.apply(
        &doc(name),
        &CounterModel::document_type(),
        &Scope::global(),
        &Branch::main(),
        Revision(index),
        |txn| {
            let id = format!("{name}-{index}");
            txn.add_operation(NewOperation::new(
                index,
                action(&id, Scope::global()),
                Digest::default(),
            ));
            if let Some(durability) = durability {
                txn.set_durability(durability);
            }
        },
    )?;
    Ok(())
}

/// A `Buffered` store on `dir`.
fn buffered(dir: &std::path::Path) -> OperationStore {
    OperationStore::open(dir, StoreOptions::with_durability(Durability::Buffered)).expect("open")
}

fn syncs(store: &OperationStore) -> u64 {
    store.commit_stats().syncs
}

#[test]
fn an_append_overrides_the_store_durability_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let buffered = buffered(dir.path());
    for i in 0..3 {
        append(&buffered, "d", i, None).expect("append");
    }
    assert_eq!(syncs(&buffered), 0, "a buffered store syncs nothing");
    append(&buffered, "d", 3, Some(Durability::Synced)).expect("append");
    assert_eq!(syncs(&buffered), 1, "a synced append syncs");
    // A synced replay of a buffered write syncs before it answers.
    append(&buffered, "d", 0, None).expect("buffered replay");
    assert_eq!(syncs(&buffered), 1);
    append(&buffered, "d", 1, Some(Durability::Synced)).expect("synced replay");
    assert_eq!(syncs(&buffered), 2, "a synced replay syncs");
    buffered.sync_wal().expect("sync");
    assert_eq!(syncs(&buffered), 3);
    drop(buffered);

    let synced = OperationStore::open(
        dir.path(),
        StoreOptions::with_durability(Durability::Synced),
    )
    .expect("reopen");
    append(&synced, "d", 4, None).expect("append");
    assert_eq!(syncs(&synced), 1);
    append(&synced, "d", 5, Some(Durability::Buffered)).expect("append");
    assert_eq!(syncs(&synced), 1, "a buffered append does not sync");
    assert_eq!(synced.commit_stats().writes, 2);
}

#[test]
fn a_synced_append_is_acknowledged_only_after_its_group_synced_under_concurrency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = buffered(dir.path());
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let name = format!("t{t}");
                for i in 0..300 {
                    // Every third thread asks for Synced: its groups mix
                    // synced and buffered appends.
                    let synced = t % 3 == 0;
                    let before = syncs(&store);
                    append(&store, &name, i, synced.then_some(Durability::Synced)).expect("append");
                    if synced {
                        assert!(syncs(&store) > before, "acknowledged before a sync");
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no panic");
    }
    let stats = store.commit_stats();
    assert_eq!(stats.appends, 6 * 300);
    assert!(stats.syncs >= 1 && stats.syncs <= 2 * 300, "{stats:?}");
}

#[test]
fn flush_writes_table_files_and_close_releases_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tables = || {
        std::fs::read_dir(dir.path())
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.path().extension().is_some_and(|x| x == "sst"))
                    .unwrap_or(false)
            })
            .count()
    };
    let store = buffered(dir.path());
    for i in 0..10 {
        append(&store, "d", i, None).expect("append");
    }
    let before = tables();
    store.flush().expect("flush");
    assert!(tables() > before, "flush wrote no table file");
    // Every family was flushed (the `default` one, which holds the last
    // ordinal, too): no log left holds a write, so reopening replays none.
    let logs: Vec<u64> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| std::fs::metadata(p).expect("meta").len())
        .collect();
    assert!(
        logs.iter().all(|&len| len == 0),
        "logs still hold writes: {logs:?}"
    );

    // Another handle alive: the database stays open for it.
    let other = store.clone();
    assert!(matches!(
        store.close(),
        Err(Error::StillOpen { handles: 1 })
    ));
    append(&other, "d", 10, None).expect("the other handle still writes");
    other.close().expect("last handle closes");
    // The lock is released: the path opens again at once, with everything.
    let reopened = OperationStore::open(dir.path(), StoreOptions::default()).expect("reopen");
    assert_eq!(
        reopened
            .get_revisions(&doc("d"), &Branch::main())
            .expect("revisions")
            .revisions
            .get(&Scope::global())
            .map(|r| r.get()),
        Some(11)
    );
}

#[test]
fn a_job_overrides_the_reactor_durability() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = Reactor::builder(dir.path())
        .durability(Durability::Buffered)
        .registry(ModelRegistry::with_examples())
        .open()
        .expect("open");
    create_counter(&reactor, "c");
    let syncs = || reactor.store().commit_stats().syncs;
    let before = syncs();
    reactor
        .execute(
            doc("c"),
            Branch::main(),
            vec![action("a1", Scope::global())],
        )
        .expect("submit")
        .written(WAIT)
        .expect("written");
    assert_eq!(syncs(), before, "a default job in a buffered reactor");

    let before = syncs();
    reactor
        .execute_with(
            doc("c"),
            Branch::main(),
            vec![action("a2", Scope::global())],
            Durability::Synced,
        )
        .expect("submit")
        .written(WAIT)
        .expect("written");
    assert!(syncs() > before, "a synced job syncs before WriteReady");

    let before = syncs();
    reactor
        .execute_and_wait_with(
            doc("c"),
            Branch::main(),
            vec![action("a3", Scope::global())],
            Durability::Synced,
            WAIT,
        )
        .expect("written");
    assert!(syncs() > before, "on the caller's thread too");

    // A synced resubmission of a buffered action writes nothing, but syncs.
    let before = (syncs(), reactor.store().last_ordinal());
    reactor
        .execute_and_wait_with(
            doc("c"),
            Branch::main(),
            vec![action("a1", Scope::global())],
            Durability::Synced,
            WAIT,
        )
        .expect("replayed");
    assert_eq!(reactor.store().last_ordinal(), before.1, "nothing written");
    assert!(syncs() > before.0, "the replay synced");

    // An undo (the merge path) carries the override too.
    // (A resubmission in a synced reactor of an action first written
    // buffered: see `a_synced_reactor_syncs_a_resubmission_of_a_buffered_write`.)
    let before = syncs();
    let undo = Action::new(
        ActionId::new("u1").expect("valid"),
        ActionType::new(reactordb::ACTION_UNDO).expect("valid"),
        Scope::global(),
        2,
        Vec::new(),
    );
    reactor
        .execute_with(doc("c"), Branch::main(), vec![undo], Durability::Synced)
        .expect("submit")
        .written(WAIT)
        .expect("undone");
    assert!(syncs() > before, "a synced undo syncs");

    let before = reactor.store().commit_stats().syncs;
    let store = reactor.store().clone();
    reactor.close().expect("close");
    assert!(store.commit_stats().syncs > before, "close syncs the log");
}

#[test]
fn an_ephemeral_store_and_reactor_touch_no_disk_and_vanish_on_drop() {
    // The working directory stays as it was: nothing is created anywhere
    // a relative or the ephemeral path could land.
    let cwd_before: Vec<_> = std::fs::read_dir(".")
        .expect("cwd")
        .map(|e| e.expect("entry").file_name())
        .collect();
    let store = OperationStore::open_ephemeral(StoreOptions::with_durability(Durability::Buffered))
        .expect("open");
    for i in 0..50 {
        append(&store, "d", i, None).expect("append");
    }
    store.flush().expect("flush into memory");
    assert_eq!(store.last_ordinal().get(), 50);
    assert!(store.verify_all().expect("verify").is_clean());
    assert!(store.backup("/tmp/never").is_err());
    let leftovers = || {
        std::fs::read_dir(std::env::temp_dir())
            .expect("temp dir")
            .filter(|e| {
                let name = e.as_ref().expect("entry").file_name();
                let name = name.to_string_lossy().into_owned();
                name.starts_with(&format!("reactordb-ephemeral-{}-", std::process::id()))
            })
            .count()
    };
    assert_eq!(leftovers(), 0, "an ephemeral store left a directory");
    drop(store);
    // A second one starts empty: nothing outlived the first.
    let again = OperationStore::open_ephemeral(StoreOptions::default()).expect("open");
    assert_eq!(again.last_ordinal().get(), 0);

    let reactor = Reactor::ephemeral()
        .registry(ModelRegistry::with_examples())
        .inline(true)
        .open()
        .expect("open");
    create_counter(&reactor, "c");
    let token = reactor
        .execute_and_wait(
            doc("c"),
            Branch::main(),
            vec![action("a", Scope::global())],
            WAIT,
        )
        .expect("written");
    let read = reactor
        .view()
        .get(&doc("c"), &reactordb::ViewFilter::default(), Some(token))
        .expect("read");
    assert_eq!(
        CounterModel::value(read.state(&Scope::global()).expect("scope")),
        Some(1)
    );
    drop(reactor);
    let cwd_after: Vec<_> = std::fs::read_dir(".")
        .expect("cwd")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(cwd_before, cwd_after, "something was written to the disk");
    assert_eq!(leftovers(), 0, "an ephemeral reactor left a directory");
}

#[test]
fn a_synced_reactor_syncs_a_resubmission_of_a_buffered_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = Reactor::builder(dir.path())
        .registry(ModelRegistry::with_examples())
        .open()
        .expect("open"); // Synced
    create_counter(&reactor, "c");
    let first = action("b1", Scope::global());
    reactor
        .execute_with(
            doc("c"),
            Branch::main(),
            vec![first.clone()],
            Durability::Buffered,
        )
        .expect("submit")
        .written(WAIT)
        .expect("written");
    // A plain retry: the reactor's own durability, Synced, applies.
    for retry in [
        |r: &Reactor, a: Action| {
            r.execute(doc("c"), Branch::main(), vec![a])
                .expect("submit")
                .written(WAIT)
                .map(|_| ())
        },
        |r: &Reactor, a: Action| {
            r.execute_and_wait(doc("c"), Branch::main(), vec![a], WAIT)
                .map(|_| ())
        },
    ] {
        let before = (
            reactor.store().commit_stats().syncs,
            reactor.store().last_ordinal(),
        );
        retry(&reactor, first.clone()).expect("replayed");
        assert_eq!(reactor.store().last_ordinal(), before.1, "nothing written");
        assert!(
            reactor.store().commit_stats().syncs > before.0,
            "acknowledged without an fsync"
        );
    }
}
