//! A database written by format 1 (`tests/fixtures/format_v1`, made by the
//! build before the content hash, with the old demo's positional undo: a
//! `NOOP` whose skip hides the operation before it) opens in this build:
//! its values decode, and the reactor migrates it at open so the undo
//! keeps its meaning here *and* on a peer that loads the document.
//!
//! The fixture's `legacy` counter: create, +1 (`a1`), +10 (`a2`), a NOOP
//! with skip 1 (`u1`, undoes `a2`), +100 (`a3`): 101. `plain`: create, +5.
//! `undone-undo`: create, +7 (`y1`), that build's `UNDO` marker of it, then
//! a NOOP with skip 1 that hides the marker (the undo undone): 7.
//! `undone-both`: create, +3 (`z1`), that build's `UNDO` marker of it, then
//! a NOOP with skip 2 hiding both: 0.

mod common;

use std::path::Path;

use common::docs::{effective, stream_ops};
use common::reactor::{main, operations_of, written};
use reactordb::{
    ConsistencyToken, CounterModel, DocumentId, ModelRegistry, OperationStore, Reactor, Scope,
    StoreOptions, ViewFilter, ACTION_UNDO,
};

fn open(path: &Path) -> Reactor {
    Reactor::builder(path)
        .registry(ModelRegistry::with_examples())
        .open()
        .expect("open")
}

fn counter(reactor: &Reactor, doc: &str) -> Option<i64> {
    let token = ConsistencyToken(reactor.store().last_ordinal());
    let d = reactor
        .view()
        .get(
            &DocumentId::new(doc).expect("valid"),
            &ViewFilter::default(),
            Some(token),
        )
        .expect("get");
    d.state(&Scope::global()).and_then(CounterModel::value)
}

fn history(store: &OperationStore, doc: &str) -> Vec<(String, String)> {
    effective(&stream_ops(store, doc, &Scope::global()))
        .iter()
        .map(|o| (o.action.id.to_string(), o.action.action_type.to_string()))
        .collect()
}

#[test]
fn a_format_1_database_opens_and_its_positional_undo_travels_as_a_marker() {
    let dir = common::fixture_copy("format_v1");
    // The store alone reads format 1 and leaves it as it is.
    let before_plain = {
        let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open v1");
        assert_eq!(store.format_version(), 1);
        assert!(!store.is_current_format());
        let legacy = history(&store, "legacy");
        let ids: Vec<&str> = legacy.iter().map(|(id, _)| id.as_str()).collect();
        assert!(ids.contains(&"a1") && ids.contains(&"u1") && !ids.contains(&"a2"));
        assert!(store.verify_all().expect("verify").is_clean());
        stream_ops(&store, "plain", &Scope::global())
    };

    let reactor = open(dir.path());
    let report = reactor
        .migration()
        .expect("a format-1 database is migrated");
    assert_eq!(
        (report.undos, report.rewritten, report.not_undoable),
        (2, 3, 0)
    );
    assert!(report.streams >= 8, "{report:?}");
    assert_eq!(reactor.store().format_version(), 2);
    // The undo keeps its meaning: +1, +100.
    assert_eq!(counter(&reactor, "legacy"), Some(101));
    assert_eq!(counter(&reactor, "plain"), Some(5));
    let legacy = history(reactor.store(), "legacy");
    assert!(!legacy.iter().any(|(id, _)| id == "a2"), "{legacy:?}");
    assert!(
        legacy.iter().any(|(_, t)| t == ACTION_UNDO),
        "the undo is a marker now: {legacy:?}"
    );
    // An undo undone by position stays undone: a redo marker now.
    assert_eq!(counter(&reactor, "undone-undo"), Some(7));
    let undone = history(reactor.store(), "undone-undo");
    assert!(
        undone.iter().any(|(_, t)| t == reactordb::ACTION_REDO),
        "{undone:?}"
    );
    // An undo hidden with its target: the target stays out, no redo.
    assert_eq!(counter(&reactor, "undone-both"), Some(0));
    let both = history(reactor.store(), "undone-both");
    assert!(
        !both.iter().any(|(_, t)| t == reactordb::ACTION_REDO),
        "{both:?}"
    );
    // A stream with no positional undo is not rewritten.
    assert_eq!(
        stream_ops(reactor.store(), "plain", &Scope::global()),
        before_plain
    );
    assert!(reactor.store().verify_all().expect("verify").is_clean());
    assert!(reactordb::verify_histories(reactor.store())
        .expect("verify")
        .is_clean());

    // The point: a peer that loads the document undoes `a2` too.
    let peer_dir = tempfile::tempdir().expect("tempdir");
    let peer = open(peer_dir.path());
    let sent = operations_of(&reactor, "legacy", |_| true);
    written(
        &peer
            .load(DocumentId::new("legacy").expect("valid"), main(), sent)
            .expect("submit"),
    );
    assert_eq!(counter(&peer, "legacy"), Some(101));
    assert_eq!(history(peer.store(), "legacy"), legacy);
    let sent = operations_of(&reactor, "undone-undo", |_| true);
    written(
        &peer
            .load(DocumentId::new("undone-undo").expect("valid"), main(), sent)
            .expect("submit"),
    );
    assert_eq!(counter(&peer, "undone-undo"), Some(7));
    let sent = operations_of(&reactor, "undone-both", |_| true);
    written(
        &peer
            .load(DocumentId::new("undone-both").expect("valid"), main(), sent)
            .expect("submit"),
    );
    assert_eq!(counter(&peer, "undone-both"), Some(0));

    // Reopening does not migrate again and writes nothing.
    let last = reactor.store().last_ordinal();
    drop(reactor);
    let reactor = open(dir.path());
    assert!(reactor.migration().is_none());
    assert_eq!(reactor.store().last_ordinal(), last);
    assert_eq!(counter(&reactor, "legacy"), Some(101));
}

#[test]
fn a_migration_cut_short_runs_again_and_finds_nothing_new() {
    // Run the migration, then put the format record back to 1, as if the
    // process had died before recording it: the next open re-runs it,
    // rewrites nothing and records 2.
    let dir = common::fixture_copy("format_v1");
    let last = {
        let reactor = open(dir.path());
        assert!(reactor.migration().is_some());
        reactor.store().last_ordinal()
    };
    {
        let db = common::raw_db(dir.path());
        db.put(b"meta/format_version", 1u32.to_be_bytes())
            .expect("put");
    }
    let reactor = open(dir.path());
    let report = reactor.migration().expect("runs again");
    assert_eq!((report.undos, report.rewritten), (0, 0), "{report:?}");
    assert_eq!(reactor.store().last_ordinal(), last);
    assert_eq!(reactor.store().format_version(), 2);
    assert_eq!(counter(&reactor, "legacy"), Some(101));
}
