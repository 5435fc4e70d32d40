//! A crash between the operation write and the view update: operations
//! written while the view is closed (or whose events were never emitted) are
//! applied exactly once when it opens.

mod common;

use common::docs::{global_counter, reference_counter, Writer};
use common::open;
use reactordb::{CounterModel, DocumentView, EventBus, ModelRegistry, Scope, ViewOptions};

fn counter(view: &DocumentView, doc: &str) -> i64 {
    global_counter(view, doc).1
}

#[test]
fn operations_written_while_the_view_was_closed_apply_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ViewOptions::default().snapshot_every(4);
    {
        let store = open(dir.path());
        let bus = EventBus::new();
        let view = DocumentView::open(
            store.clone(),
            &bus,
            ModelRegistry::with_examples(),
            options.clone(),
        )
        .expect("view");
        let mut w = Writer::new(store.clone(), bus);
        w.create("c", &CounterModel::document_type(), None);
        let mut token = None;
        for _ in 0..10 {
            token = Some(w.increment("c", &Scope::global(), 1));
        }
        view.wait_for(token.expect("written")).expect("caught up");
        assert_eq!(counter(&view, "c"), 10);
    }
    // The view is closed: these writes reach only the store.
    let last = {
        let store = open(dir.path());
        let mut w = Writer::new(store.clone(), EventBus::new());
        w.next_action = 1_000;
        for _ in 0..7 {
            w.increment("c", &Scope::global(), 2);
        }
        store.last_ordinal()
    };
    let store = open(dir.path());
    let view = DocumentView::open(
        store.clone(),
        &EventBus::new(),
        ModelRegistry::with_examples(),
        options.clone(),
    )
    .expect("view");
    assert_eq!(view.applied(), last, "caught up during open");
    assert_eq!(counter(&view, "c"), 24);
    assert_eq!(
        reference_counter(&store, "c", &Scope::global()),
        Some((17, 24))
    );
    drop(view);
    // Reopen again: nothing is applied twice.
    let view = DocumentView::open(
        store.clone(),
        &EventBus::new(),
        ModelRegistry::with_examples(),
        options,
    )
    .expect("view");
    assert_eq!(view.applied(), last);
    assert_eq!(counter(&view, "c"), 24);
}

#[test]
fn writes_that_bypass_the_bus_still_arrive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let view = DocumentView::open(
        store.clone(),
        &EventBus::new(),
        ModelRegistry::with_examples(),
        ViewOptions::default(),
    )
    .expect("view");
    // This writer emits on a bus the view does not follow.
    let mut w = Writer::new(store.clone(), EventBus::new());
    w.create("c", &CounterModel::document_type(), None);
    let token = w.increment("c", &Scope::global(), 5);
    view.wait_for(token).expect("applied from the store");
    assert_eq!(counter(&view, "c"), 5);
}

#[test]
fn a_slow_subscriber_gap_is_filled_from_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let bus = EventBus::new();
    // A one-event queue: most events are dropped for the view.
    let options = ViewOptions::default().bus_capacity(1);
    let view = DocumentView::open(store.clone(), &bus, ModelRegistry::with_examples(), options)
        .expect("view");
    let mut w = Writer::new(store.clone(), bus);
    w.create("c", &CounterModel::document_type(), None);
    let mut token = None;
    for _ in 0..500 {
        token = Some(w.increment("c", &Scope::global(), 1));
    }
    view.wait_for(token.expect("written")).expect("caught up");
    assert_eq!(counter(&view, "c"), 500);
}
