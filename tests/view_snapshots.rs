//! Snapshots: damaged ones are never served and get replaced; a skip that
//! reaches below a snapshot makes the fold start further back.

mod common;

use common::raw_db;

use common::docs::{global_counter, open_view, reference_counter, Writer};
use reactordb::{CounterModel, DocumentView, EventBus, OperationStore, Scope, ViewOptions};

fn open_all(dir: &std::path::Path, every: u64) -> (OperationStore, EventBus, DocumentView) {
    open_view(dir, ViewOptions::default().snapshot_every(every))
}

fn snapshot_key(doc: &str, revision: u64) -> Vec<u8> {
    let mut key = format!("{doc}\0main\0global\0").into_bytes();
    key.extend_from_slice(&revision.to_be_bytes());
    key
}

#[test]
fn a_corrupt_snapshot_is_not_served_and_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, bus, view) = open_all(dir.path(), 10);
        let mut w = Writer::new(store, bus);
        w.create("c", &CounterModel::document_type(), None);
        let mut token = None;
        for i in 0..25 {
            token = Some(w.increment("c", &Scope::global(), i));
        }
        view.wait_for(token.expect("written")).expect("applied");
    }
    let original = {
        let db = raw_db(dir.path());
        let cf = db.cf_handle("snapshots").expect("cf");
        let good = db
            .get_cf(cf, snapshot_key("c", 20))
            .expect("get")
            .expect("snapshot at 20 written");
        assert!(
            db.get_cf(cf, snapshot_key("c", 10)).expect("get").is_some(),
            "snapshot at 10 written"
        );
        // Flip one byte in the middle of the snapshot at 20.
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xFF;
        db.put_cf(cf, snapshot_key("c", 20), &bad).expect("put");
        good
    };
    {
        let (store, _bus, view) = open_all(dir.path(), 10);
        assert_eq!(
            global_counter(&view, "c"),
            (25, (0..25).sum()),
            "correct despite the bad snapshot"
        );
        assert_eq!(
            reference_counter(&store, "c", &Scope::global()),
            Some((25, (0..25).sum()))
        );
    }
    let db = raw_db(dir.path());
    let cf = db.cf_handle("snapshots").expect("cf");
    let replaced = db
        .get_cf(cf, snapshot_key("c", 20))
        .expect("get")
        .expect("present");
    assert_eq!(
        replaced, original,
        "the damaged snapshot was rewritten from operations"
    );
}

#[test]
fn an_undo_reaching_below_the_latest_snapshot_refolds_from_further_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, bus, view) = open_all(dir.path(), 10);
    let mut w = Writer::new(store.clone(), bus);
    w.create("c", &CounterModel::document_type(), None);
    let mut token = None;
    for i in 1..=25 {
        token = Some(w.increment("c", &Scope::global(), i));
    }
    view.wait_for(token.expect("written")).expect("applied");
    assert_eq!(global_counter(&view, "c"), (25, (1..=25).sum()));
    // Index 25 undoes 8 operations: indexes 17..25, below the snapshot at 20.
    let token = w.undo("c", &CounterModel::document_type(), &Scope::global(), 8);
    view.wait_for(token).expect("applied");
    let expected = reference_counter(&store, "c", &Scope::global()).expect("folded");
    assert_eq!(expected, (26, (1..=17).sum()));
    assert_eq!(global_counter(&view, "c"), expected, "cached path");
    view.clear_cache();
    assert_eq!(
        global_counter(&view, "c"),
        expected,
        "cold path from an older snapshot"
    );
    // More operations after the undo, past the next snapshot boundary.
    for i in 0..10 {
        token_ok(&view, w.increment("c", &Scope::global(), 100 + i));
    }
    view.clear_cache();
    assert_eq!(
        global_counter(&view, "c"),
        reference_counter(&store, "c", &Scope::global()).expect("folded")
    );
}

fn token_ok(view: &DocumentView, token: reactordb::ConsistencyToken) {
    view.wait_for(token).expect("applied");
}

#[test]
fn a_snapshot_key_at_revision_zero_is_skipped_not_looped_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, bus, view) = open_all(dir.path(), 10);
        let mut w = Writer::new(store, bus);
        w.create("c", &CounterModel::document_type(), None);
        let mut token = None;
        for i in 0..15 {
            token = Some(w.increment("c", &Scope::global(), i));
        }
        view.wait_for(token.expect("written")).expect("applied");
    }
    {
        // The only snapshot moves to revision 0 (its bytes intact).
        let db = raw_db(dir.path());
        let cf = db.cf_handle("snapshots").expect("cf");
        let good = db
            .get_cf(cf, snapshot_key("c", 10))
            .expect("get")
            .expect("snapshot at 10 written");
        db.delete_cf(cf, snapshot_key("c", 10)).expect("delete");
        db.put_cf(cf, snapshot_key("c", 0), &good).expect("put");
    }
    let (_store, _bus, view) = open_all(dir.path(), 10);
    assert_eq!(global_counter(&view, "c"), (15, (0..15).sum()));
}

#[test]
fn verify_names_a_snapshot_whose_predecessor_was_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, bus, view) = open_all(dir.path(), 10);
        let mut w = Writer::new(store.clone(), bus);
        w.create("c", &CounterModel::document_type(), None);
        let mut token = None;
        for i in 0..25 {
            token = Some(w.increment("c", &Scope::global(), i));
        }
        view.wait_for(token.expect("written")).expect("applied");
        let report = reactordb::verify_snapshots(&store).expect("verify");
        assert!(report.first_broken.is_none(), "{report:?}");
        assert!(report.snapshots_checked >= 2);
    }
    {
        let db = raw_db(dir.path());
        let cf = db.cf_handle("snapshots").expect("cf");
        db.delete_cf(cf, snapshot_key("c", 10)).expect("delete");
    }
    let (store, _bus, _view) = open_all(dir.path(), 10);
    let report = reactordb::verify_snapshots(&store).expect("verify");
    let (unit, revision) = report.first_broken.expect("the chain break is found");
    assert_eq!((unit.scope, revision), (Scope::global(), 20));
}
