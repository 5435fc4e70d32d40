//! `Reactor::metrics` counts what happened.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::reactor::{action, id, open_inline};

use reactordb::{
    Action, Branch, CounterModel, CreateDocumentInput, Durability, ModelRegistry, Reactor,
    ViewFilter,
};

const WAIT: Duration = Duration::from_secs(10);

fn increment(n: usize, input: &str) -> Action {
    action(&format!("a{n}"), "INCREMENT", input, n as u64)
}

#[test]
fn metrics_count_what_happened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_inline(dir.path());
    let fresh = reactor.metrics();
    assert_eq!((fresh.jobs_written, fresh.jobs_failed), (0, 0));
    for d in 0..3 {
        let input = CreateDocumentInput::new(CounterModel::document_type(), 1, "c");
        reactor
            .create(id(&format!("c{d}")), input)
            .expect("submit")
            .written(WAIT)
            .expect("created");
    }
    for n in 0..10 {
        reactor
            .execute(id("c0"), Branch::main(), vec![increment(n, "1")])
            .expect("submit")
            .written(WAIT)
            .expect("written");
    }
    let refused = reactor
        .execute(id("c1"), Branch::main(), vec![increment(99, "x")])
        .expect("submit")
        .written(WAIT);
    assert!(refused.is_err());
    let token = reactor
        .execute_and_wait(id("c2"), Branch::main(), vec![increment(100, "2")], WAIT)
        .expect("written on the caller's thread");
    reactor.view().wait_for(token).expect("applied");
    for _ in 0..3 {
        reactor
            .view()
            .get(&id("c0"), &ViewFilter::default(), None)
            .expect("read");
    }

    let m = reactor.metrics();
    assert_eq!(m.jobs_written, 3 + 10 + 1, "{m:?}");
    assert_eq!(m.jobs_failed, 1);
    assert_eq!(m.job_latency.count(), 15);
    assert!(m.job_latency.quantile_upper_bound(0.99) > Duration::ZERO);
    assert_eq!((m.queued_jobs, m.queued_documents), (0, 0));
    assert_eq!(m.view_lag, 0);
    // c0's global stream: one miss, then hits.
    assert!(m.executor_cache.hits >= 9, "{:?}", m.executor_cache);
    assert!(m.executor_cache.misses >= 1);
    assert!(
        m.view_cache.hits >= 2 && m.view_cache.misses >= 1,
        "{:?}",
        m.view_cache
    );
    // Synced by default: every write of the 14 appends was an fsync.
    assert_eq!(m.commit.appends, 14);
    assert_eq!(m.commit.syncs, m.commit.writes);
    assert!((m.appends_per_fsync() - 14.0 / m.commit.syncs as f64).abs() < 1e-9);
}

#[test]
fn metrics_count_jobs_from_many_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = Arc::new(
        Reactor::builder(dir.path())
            .durability(Durability::Buffered)
            .registry(ModelRegistry::with_examples())
            .open()
            .expect("open"),
    );
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let reactor = Arc::clone(&reactor);
            std::thread::spawn(move || {
                let doc = id(&format!("t{t}"));
                let input = CreateDocumentInput::new(CounterModel::document_type(), 1, "t");
                reactor
                    .create(doc.clone(), input)
                    .expect("submit")
                    .written(WAIT)
                    .expect("created");
                for n in 0..50 {
                    reactor
                        .execute(doc.clone(), Branch::main(), vec![increment(n, "1")])
                        .expect("submit")
                        .written(WAIT)
                        .expect("written");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no panic");
    }
    let m = reactor.metrics();
    assert_eq!(m.jobs_written, 4 * 51);
    assert_eq!(m.job_latency.count(), 4 * 51);
    assert_eq!(m.commit.syncs, 0, "buffered");
    assert_eq!(m.appends_per_fsync(), 0.0);
}
