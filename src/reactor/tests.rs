//! The reactor's memory bounds, counted (not timed): with small bounds,
//! real threads touching far more documents, streams and jobs than any
//! bound keep every in-memory structure within it, and everything reads
//! back correctly afterwards (an evicted head is read again from disk, so
//! the revision guard and the chains hold).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::model::{ActionId, ActionType};
use crate::models::{CounterModel, CreateDocumentInput};
use crate::view::ViewFilter;

const WAIT: Duration = Duration::from_secs(60);
const DOCS: usize = 300;
const THREADS: usize = 4;
const WORKERS: usize = 4;
const HEADS: usize = 16;
const STATES: usize = 8;
const JOBS: usize = 32;
const VIEW_DOCS: usize = 8;

fn counts(reactor: &Reactor) -> [usize; 5] {
    let inner = &reactor.inner;
    [
        inner.store.cached_heads(),
        inner.executor.cached_states(),
        inner.jobs.records(),
        inner.queue.documents(),
        inner.view.cached_documents(),
    ]
}

fn increment(doc: &DocumentId, n: usize) -> Action {
    Action::new(
        ActionId::new(format!("{doc}-{n}")).expect("id"),
        ActionType::new("INCREMENT").expect("type"),
        Scope::global(),
        1_000 + n as u64,
        b"1".to_vec(),
    )
}

#[test]
fn every_structure_stays_within_its_bound_and_everything_reads_back() {
    let dir = tempfile::tempdir().expect("dir");
    let reactor = Arc::new(
        Reactor::builder(dir.path())
            .store_options(StoreOptions {
                cached_stream_heads: HEADS,
                ..StoreOptions::with_durability(Durability::Buffered)
            })
            .view_options(ViewOptions {
                cache_max_documents: VIEW_DOCS,
                ..ViewOptions::default()
            })
            .registry(ModelRegistry::with_examples())
            .workers(WORKERS)
            .cached_stream_states(STATES)
            .retained_jobs(JOBS)
            .open()
            .expect("open"),
    );
    // While the writers run, a watcher samples every count. A job holds
    // the heads of the streams it writes (at most two: document and
    // global) only while it runs, so the store may exceed its bound by
    // that much per worker; queues exist only for documents with jobs in
    // them (or a job just finished); job records past the retention only
    // while jobs are running.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (reactor, stop) = (reactor.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut peak = [0usize; 5];
            while !stop.load(Ordering::Acquire) {
                for (p, c) in peak.iter_mut().zip(counts(&reactor)) {
                    *p = (*p).max(c);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            peak
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let reactor = reactor.clone();
            std::thread::spawn(move || {
                for d in (t..DOCS).step_by(THREADS) {
                    let doc = DocumentId::new(format!("doc-{d}")).expect("id");
                    let create =
                        CreateDocumentInput::new(CounterModel::document_type(), 1, doc.to_string());
                    reactor
                        .create(doc.clone(), create)
                        .expect("submit")
                        .written(WAIT)
                        .expect("created");
                    for n in 0..3 {
                        let action = vec![increment(&doc, n)];
                        if n % 2 == 0 {
                            reactor
                                .execute(doc.clone(), Branch::main(), action)
                                .expect("submit")
                                .written(WAIT)
                                .expect("written");
                        } else {
                            // On this thread, when the document is idle.
                            reactor
                                .execute_and_wait(doc.clone(), Branch::main(), action, WAIT)
                                .expect("written");
                        }
                    }
                    // Read it, so the view's cache takes it in.
                    let token = ConsistencyToken(reactor.store().last_ordinal());
                    reactor
                        .view()
                        .get(&doc, &ViewFilter::default(), Some(token))
                        .expect("read");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    stop.store(true, Ordering::Release);
    let peak = watcher.join().expect("watcher");
    let [heads, states, jobs, queues, view] = peak;
    // A head in use is not evicted: every thread running a job (a worker,
    // or a caller in `execute_and_wait`) may hold two (document + global).
    assert!(
        heads <= HEADS + 2 * (WORKERS + THREADS),
        "store heads peaked at {heads}"
    );
    assert!(states <= STATES, "executor states peaked at {states}");
    assert!(jobs <= JOBS + THREADS, "job records peaked at {jobs}");
    // A worker drops a document's queue just after it reports the job,
    // so a writer may already have its next document queued: two each.
    assert!(queues <= 2 * THREADS, "document queues peaked at {queues}");
    assert!(view <= VIEW_DOCS, "view cache peaked at {view}");
    // At rest every bound holds exactly. A worker drops a document's queue
    // just after reporting its last job, so rest is when the queues are
    // gone (within a deadline).
    let deadline = std::time::Instant::now() + WAIT;
    while counts(&reactor)[3] > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let [heads, states, jobs, queues, view] = counts(&reactor);
    assert!(
        heads <= HEADS && states <= STATES && jobs <= JOBS,
        "{heads} {states} {jobs}"
    );
    assert!(queues == 0 && view <= VIEW_DOCS, "{queues} {view}");

    // Everything reads back, and a write to a long-evicted stream checks
    // its revision against the head read again from disk.
    for d in 0..DOCS {
        let doc = DocumentId::new(format!("doc-{d}")).expect("id");
        let token = reactor
            .execute(doc.clone(), Branch::main(), vec![increment(&doc, 3)])
            .expect("submit")
            .written(WAIT)
            .expect("written");
        let read = reactor
            .view()
            .get(&doc, &ViewFilter::default(), Some(token))
            .expect("read");
        let state = &read.scopes[&Scope::global()].state;
        assert_eq!(CounterModel::value(state), Some(4), "{doc}");
    }
    assert!(reactor.store().verify_all().expect("verify").is_clean());
    let [heads, states, ..] = counts(&reactor);
    assert!(heads <= HEADS && states <= STATES, "{heads} {states}");
}

/// A handle keeps its job's record: with two finished jobs retained, a
/// creation whose handle is waited on only after fifty other jobs finished
/// still answers how it ended (fails without the pin: `JobUnknown`); the
/// record goes with its last handle, and the bound holds again.
#[test]
fn a_handle_learns_how_its_job_ended_however_many_finish_meanwhile() {
    let dir = tempfile::tempdir().expect("dir");
    let reactor = Reactor::builder(dir.path())
        .durability(Durability::Buffered)
        .registry(ModelRegistry::with_examples())
        .retained_jobs(2)
        .open()
        .expect("open");
    let doc = DocumentId::new("d").expect("id");
    let create = CreateDocumentInput::new(CounterModel::document_type(), 1, doc.to_string());
    let first = reactor.create(doc.clone(), create).expect("submit");
    for n in 0..50 {
        reactor
            .execute(doc.clone(), Branch::main(), vec![increment(&doc, n)])
            .expect("submit")
            .written(WAIT)
            .expect("written");
    }
    first.written(WAIT).expect("the creation's outcome");
    assert!(first.status().expect("status").is_done());
    let id = first.id();
    let copy = first.clone();
    drop(first);
    assert!(reactor.job_status(id).is_some(), "a clone still holds it");
    drop(copy);
    assert!(
        reactor.job_status(id).is_none(),
        "the last handle let it go"
    );
    assert!(reactor.inner.jobs.records() <= 2);
}
