//! The fixture of format 2 (`tests/fixtures/format_v2`): a database this
//! format's build wrote, checked in, so every later build proves it still
//! opens it and reads it as written (operations, heads, view data,
//! snapshots, indexes).
//!
//! It was made by `write_the_format_2_fixture` (ignored; run by hand to
//! regenerate: `REACTORDB_FIXTURE_OUT=tests/fixtures/format_v2 cargo test
//! --features fault-injection --test format_fixture -- --ignored`), with an
//! inline reactor, a fixed clock and fixed ids:
//! - `count` (counter, slug `count`, meta `owner=ops`): +1 … +5, an undo of
//!   the +5, its redo: 15; a `child` relationship to `todo`;
//! - `todo` (todo list, slug `todo`): items `a` (done) and `b`;
//! - `gone` (counter): +2, then deleted;
//! - `branched` (counter, on branch `feature` only): +3.
//!
//! Snapshots every 3 operations, so the `snapshots` family is not empty.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reactordb::{
    Action, ActionId, ActionType, Branch, ConsistencyToken, CounterModel, CreateDocumentInput,
    DocumentId, Error, ModelRegistry, OperationStore, Paging, Reactor, Relationship, Scope,
    StoreOptions, TodoAction, TodoModel, TodoState, ViewFilter, ViewOptions,
};

const WAIT: Duration = Duration::from_secs(10);

fn id(s: &str) -> DocumentId {
    DocumentId::new(s).expect("valid")
}

fn feature() -> Branch {
    Branch::new("feature").expect("valid")
}

fn open(path: &Path, clock: Option<Arc<AtomicU64>>) -> Reactor {
    let mut builder = Reactor::builder(path)
        .registry(ModelRegistry::with_examples())
        .view_options(ViewOptions::default().snapshot_every(3))
        .inline(true);
    if let Some(clock) = clock {
        let ids = Arc::new(AtomicU64::new(0));
        builder = builder
            .clock(move || clock.fetch_add(1, Ordering::Relaxed))
            .id_source(move || {
                let n = ids.fetch_add(1, Ordering::Relaxed);
                ActionId::new(format!("fixture-{n:04}")).expect("valid")
            });
    }
    builder.open().expect("open")
}

fn counter_action(reactor: &Reactor, by: i64, at: u64) -> Action {
    Action::new(
        reactor.new_action_id(),
        ActionType::new("INCREMENT").expect("valid"),
        Scope::global(),
        at,
        by.to_string().into_bytes(),
    )
}

fn todo_action(reactor: &Reactor, action: &TodoAction, at: u64) -> Action {
    Action::new(
        reactor.new_action_id(),
        action.action_type(),
        Scope::global(),
        at,
        serde_json::to_vec(action).expect("json"),
    )
}

#[test]
#[ignore = "writes the fixture; run by hand with REACTORDB_FIXTURE_OUT"]
fn write_the_format_2_fixture() {
    let out = std::env::var("REACTORDB_FIXTURE_OUT").expect("REACTORDB_FIXTURE_OUT");
    write_fixture(Path::new(&out));
}

fn write_fixture(out: &Path) {
    assert!(!out.exists(), "{} exists", out.display());
    let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
    let reactor = open(out, Some(Arc::clone(&clock)));
    let now = || clock.load(Ordering::Relaxed);
    let done = |job: reactordb::Result<reactordb::JobHandle>| {
        job.expect("submit").written(WAIT).expect("written");
    };
    let counter = CounterModel::document_type();
    done(reactor.create(
        id("count"),
        CreateDocumentInput::new(counter.clone(), 1, "count").slug("count"),
    ));
    for by in 1..=5 {
        let action = counter_action(&reactor, by, now());
        done(reactor.execute(id("count"), Branch::main(), vec![action]));
    }
    done(reactor.undo(id("count"), Branch::main(), Scope::global()));
    done(reactor.redo(id("count"), Branch::main(), Scope::global()));
    done(reactor.set_meta(id("count"), Branch::main(), "owner", Some("ops".into())));
    done(reactor.create(
        id("todo"),
        CreateDocumentInput::new(TodoModel::document_type(), 1, "todo").slug("todo"),
    ));
    for action in [
        TodoAction::Add {
            id: "a".into(),
            title: "first".into(),
        },
        TodoAction::Add {
            id: "b".into(),
            title: "second".into(),
        },
        TodoAction::Toggle { id: "a".into() },
    ] {
        let action = todo_action(&reactor, &action, now());
        done(reactor.execute(id("todo"), Branch::main(), vec![action]));
    }
    done(reactor.add_relationship(id("count"), id("todo"), "child"));
    done(reactor.create(
        id("gone"),
        CreateDocumentInput::new(counter.clone(), 1, "gone"),
    ));
    let action = counter_action(&reactor, 2, now());
    done(reactor.execute(id("gone"), Branch::main(), vec![action]));
    done(reactor.delete_document(id("gone"), Branch::main()));
    done(reactor.create_on(
        id("branched"),
        feature(),
        CreateDocumentInput::new(counter, 1, "branched"),
    ));
    let action = counter_action(&reactor, 3, now());
    done(reactor.execute(id("branched"), feature(), vec![action]));
    let last = reactor.store().last_ordinal();
    reactor
        .view()
        .wait_for(ConsistencyToken(last))
        .expect("applied");
    reactor.close().expect("close");
}

fn counter_value(reactor: &Reactor, doc: &str, branch: Branch) -> Option<i64> {
    let read = reactor
        .view()
        .get(&id(doc), &ViewFilter::on(branch), None)
        .expect("read");
    read.state(&Scope::global()).and_then(CounterModel::value)
}

/// Everything the fixture holds, read through the store and the view.
fn reads_as_written(reactor: &Reactor) {
    let store = reactor.store();
    assert!(store.verify_all().expect("verify").is_clean());
    assert!(reactordb::verify_view(store)
        .expect("verify view")
        .first_fault
        .is_none());
    let snapshots = reactordb::verify_snapshots(store).expect("snapshots");
    assert!(snapshots.first_broken.is_none());
    assert!(snapshots.snapshots_checked > 0, "the fixture has snapshots");
    assert!(reactordb::verify_histories(store)
        .expect("histories")
        .first_diverged
        .is_none());

    assert_eq!(counter_value(reactor, "count", Branch::main()), Some(15));
    let count = reactor
        .view()
        .get_by_slug("count", &ViewFilter::default(), None)
        .expect("by slug");
    assert_eq!(
        count.header.meta.get("owner").map(String::as_str),
        Some("ops")
    );
    assert_eq!(
        reactor
            .view()
            .outgoing_relationships(&id("count"))
            .expect("relationships"),
        vec![Relationship {
            source: id("count"),
            relationship_type: "child".into(),
            target: id("todo"),
        }]
    );
    let todo = reactor
        .view()
        .get_by_slug("todo", &ViewFilter::default(), None)
        .expect("todo");
    let state: TodoState =
        serde_json::from_slice(todo.state(&Scope::global()).expect("scope")).expect("json");
    assert_eq!(state.items.len(), 2);
    assert!(state.items["a"].done && !state.items["b"].done);
    assert!(matches!(
        reactor
            .view()
            .get(&id("gone"), &ViewFilter::default(), None),
        Err(Error::DocumentDeleted { .. })
    ));
    assert_eq!(counter_value(reactor, "branched", feature()), Some(3));
    let counters = reactor
        .view()
        .find_by_type(&CounterModel::document_type(), Paging::all())
        .expect("by type")
        .items;
    assert_eq!(counters, vec![id("count")]);
}

#[test]
fn the_format_2_fixture_opens_and_reads_as_written() {
    let dir = common::fixture_copy("format_v2");
    {
        // Written before the view's values had a version byte: the
        // checkpoint is a bare u64 and index entries are empty. This build
        // writes `{1}`-prefixed ones and must read these.
        let options = rocksdb::Options::default();
        let families = rocksdb::DB::list_cf(&options, dir.path()).expect("families");
        let raw =
            rocksdb::DB::open_cf_for_read_only(&options, dir.path(), families, false).expect("raw");
        let meta = raw.cf_handle("view_meta").expect("view_meta");
        let checkpoint = raw.get_cf(meta, b"c").expect("read").expect("checkpoint");
        assert_eq!(checkpoint.len(), 8);
        let type_entry = raw
            .prefix_iterator_cf(meta, b"t")
            .next()
            .expect("a type index entry")
            .expect("read");
        assert!(type_entry.1.is_empty());
    }
    {
        let store = OperationStore::open_read_only(dir.path(), StoreOptions::default())
            .expect("open read-only");
        assert_eq!(store.format_version(), 2);
        // Its view data reads as it is (a view that could not read it
        // would be rebuilt silently at open: checked here, before).
        let view = reactordb::verify_view(&store).expect("verify view");
        assert!(view.first_fault.is_none(), "{:?}", view.first_fault);
        assert!(view.headers_checked >= 4);
    }
    let reactor = open(dir.path(), None);
    assert!(reactor.migration().is_none(), "format 2 needs no migration");
    reads_as_written(&reactor);
    // Cold: every document folded again from what is on disk.
    reactor.view().clear_cache();
    reads_as_written(&reactor);
    // And it takes new writes.
    let action = counter_action(&reactor, 10, 1_800_000_000_000);
    let token = reactor
        .execute_and_wait(id("count"), Branch::main(), vec![action], WAIT)
        .expect("written");
    reactor.view().wait_for(token).expect("applied");
    assert_eq!(counter_value(&reactor, "count", Branch::main()), Some(25));
    drop(reactor);
    // Reopened after this build wrote to it: still as written, plus that.
    let reactor = open(dir.path(), None);
    assert_eq!(counter_value(&reactor, "count", Branch::main()), Some(25));
    assert!(reactor.store().verify_all().expect("verify").is_clean());
}
