//! Reading a database without writing it: `open_read_only` on a closed
//! database, `open_secondary` on one a live writer holds, and the
//! read-only view over either. They read everything the log holds (also
//! what the writer's view had not applied), refuse every write with
//! `Error::ReadOnly`, and leave every file as it was.

mod common;

use std::time::Duration;

use common::docs::{global_counter, Writer};
use reactordb::{
    Action, ActionId, ActionType, Branch, CounterModel, CreateDocumentInput, Digest, DocumentId,
    DocumentView, Durability, Error, EventBus, ModelRegistry, NewOperation, OperationStore,
    Reactor, Revision, Scope, StoreOptions, ViewOptions,
};

fn refused(result: reactordb::Result<impl std::fmt::Debug>) {
    assert!(matches!(result, Err(Error::ReadOnly)), "{result:?}");
}

#[test]
fn a_read_only_store_and_view_read_everything_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ty = CounterModel::document_type();
    {
        // Three increments the writer's view applies, then two it never
        // sees (written with no view following).
        let (store, bus, view) = common::docs::open_view(dir.path(), ViewOptions::default());
        let mut w = Writer::new(store.clone(), bus);
        w.create("c", &ty, None);
        for _ in 0..3 {
            w.increment("c", &Scope::global(), 1);
        }
        view.wait_for(reactordb::ConsistencyToken(store.last_ordinal()))
            .expect("applied");
        drop(view);
        let mut w = Writer::new(store, EventBus::new());
        for _ in 0..2 {
            w.increment("c", &Scope::global(), 10);
        }
    }
    let before = common::file_hashes(dir.path());

    let store = OperationStore::open_read_only(dir.path(), StoreOptions::default()).expect("open");
    assert!(store.is_read_only());
    assert_eq!(store.last_ordinal().get(), 6);
    assert!(store.verify_all().expect("verify").is_clean());
    let view = DocumentView::open_read_only(
        store.clone(),
        ModelRegistry::with_examples(),
        ViewOptions::default(),
    )
    .expect("read-only view");
    assert_eq!(
        global_counter(&view, "c"),
        (5, 23),
        "all five, past the view"
    );
    assert_eq!(view.applied(), store.last_ordinal());

    let action = Action::new(
        ActionId::new("x").expect("valid"),
        ActionType::new("INCREMENT").expect("valid"),
        Scope::global(),
        1,
        b"1".to_vec(),
    );
    refused(store.apply(
        &DocumentId::new("c").expect("valid"),
        &ty,
        &Scope::global(),
        &Branch::main(),
        Revision(5),
        |txn| {
            txn.add_operation(NewOperation::new(5, action, Digest::default()));
        },
    ));
    refused(store.sync_wal());
    refused(store.flush());
    refused(store.backup(dir.path().join("copy")));
    refused(reactordb::rebuild_view(&store));
    drop(view);
    store.close().expect("close");
    assert_eq!(
        common::file_hashes(dir.path()),
        before,
        "a reader changed a file"
    );
}

#[test]
fn a_secondary_follows_a_live_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secondary_dir = tempfile::tempdir().expect("tempdir");
    let writer = Reactor::builder(dir.path())
        .durability(Durability::Buffered)
        .registry(ModelRegistry::with_examples())
        .open()
        .expect("open");
    let wait = Duration::from_secs(10);
    let input = CreateDocumentInput::new(CounterModel::document_type(), 1, "c");
    writer
        .create(DocumentId::new("c").expect("valid"), input)
        .expect("submit")
        .written(wait)
        .expect("created");
    let increment = |n: u64| {
        let action = Action::new(
            ActionId::new(format!("i{n}")).expect("valid"),
            ActionType::new("INCREMENT").expect("valid"),
            Scope::global(),
            n,
            b"1".to_vec(),
        );
        writer
            .execute_and_wait(
                DocumentId::new("c").expect("valid"),
                Branch::main(),
                vec![action],
                wait,
            )
            .expect("written")
    };
    increment(1);

    // The writer holds the database: a second writer cannot open it, a
    // secondary can.
    assert!(OperationStore::open(dir.path(), StoreOptions::default()).is_err());
    let reader =
        OperationStore::open_secondary(dir.path(), secondary_dir.path(), StoreOptions::default())
            .expect("secondary");
    let view = DocumentView::open_read_only(
        reader.clone(),
        ModelRegistry::with_examples(),
        ViewOptions::default(),
    )
    .expect("view");
    assert_eq!(global_counter(&view, "c"), (1, 1));

    // The writer goes on (on another thread, while the reader follows).
    let writes = std::thread::scope(|s| {
        let writing = s.spawn(|| (2..=200).map(increment).last().expect("some"));
        while !writing.is_finished() {
            let seen = reader.catch_up().expect("catch up");
            let (revision, value) = global_counter(&view, "c");
            assert_eq!(revision as i64, value, "a consistent fold at {seen:?}");
        }
        writing.join().expect("no panic")
    });
    assert_eq!(reader.catch_up().expect("catch up"), writes.0);
    assert_eq!(global_counter(&view, "c"), (200, 200));
    assert!(reader.verify_all().expect("verify").is_clean());
    refused(reader.sync_wal());
}
