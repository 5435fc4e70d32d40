//! The view's reads: read-your-writes, timeouts, slugs, types,
//! relationships, deletion, scope filters and the cache bounds.

mod common;

use std::time::{Duration, Instant};

use common::docs::{open_view, Writer};
use reactordb::{
    ConsistencyToken, CounterModel, DocumentId, DocumentView, Error, EventBus, ModelRegistry,
    OperationFilter, OperationStore, Ordinal, Paging, Scope, SystemAction, TodoAction, TodoModel,
    TodoState, Typed, ViewFilter, ViewOptions,
};

fn setup(options: ViewOptions) -> (tempfile::TempDir, OperationStore, DocumentView, Writer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, bus, view) = open_view(dir.path(), options);
    let writer = Writer::new(store.clone(), bus);
    (dir, store, view, writer)
}

fn id(s: &str) -> DocumentId {
    DocumentId::new(s).expect("valid")
}

#[test]
fn a_read_with_the_token_of_a_write_sees_that_write() {
    // A long poll interval: the read must not depend on the worker's timing.
    let (_dir, _store, view, mut w) =
        setup(ViewOptions::default().poll_interval(Duration::from_secs(5)));
    w.create("c", &CounterModel::document_type(), None);
    for i in 1..=50 {
        let token = w.increment("c", &Scope::global(), 1);
        let doc = view
            .get(&id("c"), &ViewFilter::default(), Some(token))
            .expect("get");
        assert_eq!(
            CounterModel::value(doc.state(&Scope::global()).expect("scope")),
            Some(i)
        );
        assert!(view.applied() >= token.0);
    }
}

#[test]
fn a_token_from_the_future_times_out_with_the_named_error() {
    let options = ViewOptions::default().consistency_timeout(Duration::from_millis(150));
    let (_dir, store, view, mut w) = setup(options);
    w.create("c", &CounterModel::document_type(), None);
    let future = ConsistencyToken(Ordinal(store.last_ordinal().get() + 10));
    let start = Instant::now();
    let err = view
        .get(&id("c"), &ViewFilter::default(), Some(future))
        .unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(150));
    match err {
        Error::ConsistencyTimeout { token, applied } => {
            assert_eq!(token, future.0.get());
            assert_eq!(applied, store.last_ordinal().get());
        }
        other => panic!("expected ConsistencyTimeout, got {other:?}"),
    }
    assert!(Error::ConsistencyTimeout {
        token: 1,
        applied: 0
    }
    .is_retryable());
}

#[test]
fn headers_slugs_types_relationships_and_deletion() {
    let (_dir, store, view, mut w) = setup(ViewOptions::default());
    let counter = CounterModel::document_type();
    let todo = TodoModel::document_type();
    w.create("a", &counter, Some("alpha"));
    w.create("b", &counter, None);
    w.create("t", &todo, Some("tasks"));
    w.system(
        "a",
        &counter,
        SystemAction::SetName {
            name: "Alpha".into(),
        },
    );
    w.system(
        "a",
        &counter,
        SystemAction::SetMeta {
            key: "k".into(),
            value: Some("v".into()),
        },
    );
    w.system(
        "a",
        &counter,
        SystemAction::AddRelationship {
            target: id("b"),
            relationship_type: "child".into(),
        },
    );
    let token = w.system(
        "t",
        &todo,
        SystemAction::AddRelationship {
            target: id("b"),
            relationship_type: "uses".into(),
        },
    );
    view.wait_for(token).expect("applied");

    let a = view
        .get_by_slug("alpha", &ViewFilter::default(), None)
        .expect("by slug");
    assert_eq!(a.header.id, id("a"));
    assert_eq!(a.header.name, "Alpha");
    assert_eq!(a.header.meta.get("k").map(String::as_str), Some("v"));
    assert_eq!(
        view.get_by_id_or_slug("tasks", &ViewFilter::default(), None)
            .expect("slug")
            .header
            .id,
        id("t")
    );
    assert_eq!(
        view.get_by_id_or_slug("b", &ViewFilter::default(), None)
            .expect("id")
            .header
            .id,
        id("b")
    );
    assert!(matches!(
        view.get_by_slug("nope", &ViewFilter::default(), None),
        Err(Error::SlugNotFound { .. })
    ));

    let page = view.find_by_type(&counter, Paging::first(1)).expect("type");
    assert_eq!(page.items, vec![id("a")]);
    let rest = view
        .find_by_type(&counter, Paging::after(page.next_cursor.expect("more"), 10))
        .expect("type");
    assert_eq!((rest.items, rest.next_cursor), (vec![id("b")], None));
    assert_eq!(
        view.find_by_type(&todo, Paging::all()).expect("type").items,
        vec![id("t")]
    );

    let incoming = view.incoming_relationships(&id("b")).expect("incoming");
    assert_eq!(
        incoming
            .iter()
            .map(|r| (r.source.as_str(), r.relationship_type.as_str()))
            .collect::<Vec<_>>(),
        vec![("a", "child"), ("t", "uses")]
    );
    let outgoing = view.outgoing_relationships(&id("a")).expect("outgoing");
    assert_eq!(outgoing.len(), 1);
    assert_eq!(outgoing[0].target, id("b"));

    let token = w.system(
        "a",
        &counter,
        SystemAction::RemoveRelationship {
            target: id("b"),
            relationship_type: "child".into(),
        },
    );
    view.wait_for(token).expect("applied");
    assert!(view
        .outgoing_relationships(&id("a"))
        .expect("outgoing")
        .is_empty());

    let token = w.system("a", &counter, SystemAction::DeleteDocument);
    let err = view
        .get(&id("a"), &ViewFilter::default(), Some(token))
        .unwrap_err();
    assert!(
        matches!(&err, Error::DocumentDeleted { id: d } if *d == id("a")),
        "{err:?}"
    );
    assert!(!view
        .exists(&id("a"), &reactordb::Branch::main())
        .expect("exists"));
    assert!(view
        .exists(&id("b"), &reactordb::Branch::main())
        .expect("exists"));
    assert!(matches!(
        view.get_by_slug("alpha", &ViewFilter::default(), None),
        Err(Error::SlugNotFound { .. })
    ));
    assert_eq!(
        view.find_by_type(&counter, Paging::all())
            .expect("type")
            .items,
        vec![id("b")]
    );
    let missing = view
        .get(&id("zzz"), &ViewFilter::default(), None)
        .unwrap_err();
    assert!(matches!(missing, Error::DocumentNotFound { .. }));

    let many = view
        .get_many(&[id("b"), id("a"), id("zzz")], &ViewFilter::default(), None)
        .expect("many");
    assert!(many[0].is_ok());
    assert!(matches!(many[1], Err(Error::DocumentDeleted { .. })));
    assert!(matches!(many[2], Err(Error::DocumentNotFound { .. })));

    let ops = view
        .get_operations(
            &id("a"),
            &Scope::document(),
            &reactordb::Branch::main(),
            &OperationFilter::default(),
            Paging::all(),
        )
        .expect("ops");
    assert_eq!(ops.items.len(), 6);
    let _ = store;
}

#[test]
fn typed_todo_model_and_scope_filters() {
    let (_dir, _store, view, mut w) = setup(ViewOptions::default());
    let todo = TodoModel::document_type();
    w.create("t", &todo, None);
    let mut write = |action: TodoAction, scope: Scope| {
        let aid = w.action_id();
        let a = reactordb::Action::new(
            aid,
            action.action_type(),
            scope,
            1,
            Typed::<TodoModel>::encode_input(&action),
        );
        w.write(&id("t"), &todo, a, 0)
    };
    write(
        TodoAction::Add {
            id: "1".into(),
            title: "milk".into(),
        },
        Scope::global(),
    );
    write(
        TodoAction::Add {
            id: "2".into(),
            title: "eggs".into(),
        },
        Scope::global(),
    );
    write(TodoAction::Toggle { id: "1".into() }, Scope::global());
    // Refused by the reducer (no such item): recorded, no state change.
    write(TodoAction::Remove { id: "9".into() }, Scope::global());
    let token = write(
        TodoAction::Add {
            id: "x".into(),
            title: "private".into(),
        },
        Scope::local(),
    );

    let filter = ViewFilter::default().scopes(vec![Scope::global()]);
    let doc = view.get(&id("t"), &filter, Some(token)).expect("get");
    assert_eq!(
        doc.scopes.keys().cloned().collect::<Vec<_>>(),
        vec![Scope::global()]
    );
    let state: TodoState =
        Typed::<TodoModel>::decode_state(doc.state(&Scope::global()).expect("global"))
            .expect("decode");
    assert_eq!(state.items.len(), 2);
    assert!(state.items["1"].done && !state.items["2"].done);
    let all = view
        .get(&id("t"), &ViewFilter::default(), None)
        .expect("get");
    assert_eq!(all.scopes.len(), 3, "document, global, local");
    assert_eq!(
        all.scopes[&Scope::global()].state_hash,
        reactordb::Digest::of(&all.scopes[&Scope::global()].state)
    );
}

#[test]
fn the_cache_never_exceeds_its_bounds() {
    let options = ViewOptions::default()
        .cache_max_documents(5)
        .cache_max_bytes(2_000);
    let (_dir, _store, view, mut w) = setup(options);
    let mut token = None;
    for d in 0..40 {
        w.create(&format!("d{d}"), &CounterModel::document_type(), None);
        token = Some(w.increment(&format!("d{d}"), &Scope::global(), d));
    }
    view.wait_for(token.expect("written")).expect("applied");
    for round in 0..3 {
        for d in 0..40 {
            let doc = view
                .get(&id(&format!("d{d}")), &ViewFilter::default(), None)
                .expect("get");
            assert_eq!(
                CounterModel::value(doc.state(&Scope::global()).expect("scope")),
                Some(d)
            );
            let (docs, bytes) = view.cache_usage();
            assert!(docs <= 5, "round {round}: {docs} documents cached");
            assert!(bytes <= 2_000, "round {round}: {bytes} bytes cached");
        }
    }
    assert!(view.cache_usage().0 > 0, "the cache is used");
}

#[test]
fn invalid_view_options_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::open(dir.path());
    let bad = ViewOptions::default().snapshot_every(0);
    let err = DocumentView::open(store, &EventBus::new(), ModelRegistry::new(), bad).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidOptions {
            option: "snapshot_every",
            ..
        }
    ));
}
