//! Document View benchmarks (`cargo bench --bench view`), `Buffered` store:
//!
//! - `view_get/cached`: `get` of a small cached counter document;
//! - `view_get/cold/{1000,100000}`: `get` after clearing the cache, of a
//!   document with that many operations and a snapshot every 1,000: the
//!   cost is bounded by the tail since the snapshot, not the history;
//! - `view_fold/no_snapshots/100000`: a cold fold of 100,000 operations
//!   with snapshots disabled (throughput = operations folded per second
//!   through the counter's trivial reducer).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use reactordb::{
    system_action, Action, ActionId, ActionType, Branch, ConsistencyToken, CounterModel,
    CreateDocumentInput, Digest, DocumentId, DocumentView, Durability, EventBus, ModelRegistry,
    NewOperation, OperationStore, Revision, Scope, StoreOptions, SystemAction, ViewFilter,
    ViewOptions,
};

/// A store holding one counter document `doc` with `n` increments, and a
/// view over it that has applied them.
fn setup(n: u64, snapshot_every: u64) -> (tempfile::TempDir, DocumentView, DocumentId) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = OperationStore::open(
        dir.path(),
        StoreOptions::with_durability(Durability::Buffered),
    )
    .expect("open");
    let doc = DocumentId::new("doc").expect("valid");
    let doc_type = CounterModel::document_type();
    let create = system_action(
        ActionId::new("create").expect("valid"),
        0,
        &SystemAction::CreateDocument(CreateDocumentInput::new(doc_type.clone(), 1, "bench")),
    );
    store
        .apply(
            &doc,
            &doc_type,
            &Scope::document(),
            &Branch::main(),
            Revision(0),
            |txn| {
                txn.add_operation(NewOperation::new(0, create, Digest::default()));
            },
        )
        .expect("create");
    let mut written = 0;
    while written < n {
        let batch = (n - written).min(1_000);
        let ops: Vec<_> = (written..written + batch)
            .map(|i| {
                let action = Action::new(
                    ActionId::new(format!("a{i}")).expect("valid"),
                    ActionType::new("INCREMENT").expect("valid"),
                    Scope::global(),
                    i,
                    b"1".to_vec(),
                );
                NewOperation::new(i, action, Digest::default())
            })
            .collect();
        store
            .apply(
                &doc,
                &doc_type,
                &Scope::global(),
                &Branch::main(),
                Revision(written),
                |txn| {
                    txn.add_operations(ops);
                },
            )
            .expect("apply");
        written += batch;
    }
    let options = ViewOptions::default().snapshot_every(snapshot_every);
    let view = DocumentView::open(
        store.clone(),
        &EventBus::new(),
        ModelRegistry::with_examples(),
        options,
    )
    .expect("view");
    view.wait_for(ConsistencyToken(store.last_ordinal()))
        .expect("caught up");
    (dir, view, doc)
}

fn get(view: &DocumentView, doc: &DocumentId) {
    let d = view.get(doc, &ViewFilter::default(), None).expect("get");
    assert!(d.scopes.contains_key(&Scope::global()));
}

fn view_get(c: &mut Criterion) {
    let mut group = c.benchmark_group("view_get");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    let (_d, view, doc) = setup(10, 1_000);
    get(&view, &doc);
    group.bench_function("cached", |b| b.iter(|| get(&view, &doc)));
    for n in [1_000u64, 100_000] {
        // 50 operations past the last snapshot: a realistic tail.
        let (_d, view, doc) = setup(n + 50, 1_000);
        group.bench_function(BenchmarkId::new("cold", n), |b| {
            b.iter(|| {
                view.clear_cache();
                get(&view, &doc)
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("view_fold");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let n = 100_000u64;
    let (_d, view, doc) = setup(n, u64::MAX);
    group.throughput(Throughput::Elements(n));
    group.bench_function(BenchmarkId::new("no_snapshots", n), |b| {
        b.iter(|| {
            view.clear_cache();
            get(&view, &doc)
        })
    });
    group.finish();
}

criterion_group!(benches, view_get);
criterion_main!(benches);
