//! Reactor benchmarks (`cargo bench --bench reactor`), `Buffered` store:
//!
//! - `reactor/hot_doc_job`: one job on a hot document, submit → readable;
//! - `reactor/many_docs`: jobs spread over 100 documents, all in flight,
//!   per job;
//! - `load/<n>`: loading one peer operation (sorting after everything) into
//!   a stream of `n` = 1,000 and 20,000 operations: a merge reads what it
//!   changes, so the two should take about the same time (the ratio of the
//!   two is the check; a merge that read its whole stream grew with `n`);
//!
//! then the standard workloads (W1 many-docs, W2 hot-doc, W3 contention)
//! once each, printed as JSON lines, as `reactordb bench --json` does.

use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
#[path = "../src/cli/workloads.rs"]
mod workloads;

use reactordb::{
    Action, ActionId, ActionType, Branch, CounterModel, CreateDocumentInput, DocumentId,
    Durability, JobStatus, ModelRegistry, Reactor, Scope,
};
use workloads::WorkloadConfig;

fn reactor(dir: &std::path::Path, docs: usize) -> Reactor {
    let reactor = Reactor::builder(dir)
        .durability(Durability::Buffered)
        .registry(ModelRegistry::with_examples())
        .queue_capacity(1_000_000)
        .block_when_full(true)
        .open()
        .expect("open");
    let jobs: Vec<_> = (0..docs)
        .map(|d| {
            reactor
                .create(
                    DocumentId::new(format!("d{d}")).expect("valid"),
                    CreateDocumentInput::new(CounterModel::document_type(), 1, "bench"),
                )
                .expect("create")
        })
        .collect();
    for job in jobs {
        job.wait_written(Duration::from_secs(60)).expect("created");
    }
    reactor
}

fn increment(n: u64) -> Vec<Action> {
    vec![Action::new(
        ActionId::new(format!("a{n}")).expect("valid"),
        ActionType::new("INCREMENT").expect("valid"),
        Scope::global(),
        n,
        Vec::new(),
    )]
}

fn jobs(c: &mut Criterion) {
    let mut group = c.benchmark_group("reactor");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Elements(1));

    let dir = tempfile::tempdir().expect("tempdir");
    let hot = reactor(dir.path(), 1);
    let doc = DocumentId::new("d0").expect("valid");
    let mut n = 0u64;
    group.bench_function("hot_doc_job", |b| {
        b.iter(|| {
            n += 1;
            let job = hot
                .execute(doc.clone(), Branch::main(), increment(n))
                .expect("submit");
            let status = job.wait_readable(Duration::from_secs(60)).expect("in time");
            assert!(matches!(status, JobStatus::ReadReady { .. }));
        })
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let many = reactor(dir.path(), 100);
    let ids: Vec<_> = (0..100)
        .map(|d| DocumentId::new(format!("d{d}")).expect("valid"))
        .collect();
    let mut m = 0u64;
    group.bench_function("many_docs", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let handles: Vec<_> = (0..iters)
                .map(|i| {
                    m += 1;
                    many.execute(
                        ids[(i % 100) as usize].clone(),
                        Branch::main(),
                        increment(m),
                    )
                    .expect("submit")
                })
                .collect();
            for h in handles {
                h.wait_written(Duration::from_secs(60)).expect("written");
            }
            start.elapsed()
        })
    });
    group.finish();
}

/// A peer's `INCREMENT` of `d0`'s global scope, built as a peer stores it.
fn peer_op(n: u64, ts: u64) -> reactordb::OperationWithContext {
    use reactordb::{Digest, Operation, OperationContext, OperationId, Ordinal, SyncUnit};
    let doc = DocumentId::new("d0").expect("valid");
    let unit = SyncUnit::new(doc.clone(), Scope::global(), Branch::main());
    let action = increment(n).remove(0);
    let action = Action {
        timestamp_utc_ms: ts,
        ..action
    };
    let id = OperationId::derive(&unit, &action.id);
    reactordb::OperationWithContext {
        operation: Operation {
            id,
            index: 0,
            skip: 0,
            timestamp_utc_ms: ts,
            hash: Digest::default(),
            state_hash: Digest::default(),
            content_hash: Operation::content_hash_of(&id, ts, &action),
            action,
            error: None,
        },
        context: OperationContext {
            document_id: doc,
            document_type: CounterModel::document_type(),
            scope: Scope::global(),
            branch: Branch::main(),
            ordinal: Ordinal(1),
        },
    }
}

fn loads(c: &mut Criterion) {
    let mut group = c.benchmark_group("load");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Elements(1));
    for size in [1_000u64, 20_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = reactor(dir.path(), 1);
        let doc = DocumentId::new("d0").expect("valid");
        for chunk in (0..size).collect::<Vec<_>>().chunks(1_000) {
            let actions: Vec<Action> = chunk.iter().flat_map(|&n| increment(n + 1)).collect();
            r.execute(doc.clone(), Branch::main(), actions)
                .expect("submit")
                .wait_written(Duration::from_secs(60))
                .expect("written");
        }
        let mut n = 10 * size;
        group.bench_function(format!("{size}"), |b| {
            b.iter(|| {
                n += 1;
                let job = r
                    .load(doc.clone(), Branch::main(), vec![peer_op(n, n)])
                    .expect("submit");
                let status = job.wait_written(Duration::from_secs(60)).expect("in time");
                assert!(matches!(
                    status,
                    JobStatus::WriteReady { .. } | JobStatus::ReadReady { .. }
                ));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, jobs, loads);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let workers = reactordb::default_workers();
    let config = |docs, actions| WorkloadConfig {
        docs,
        actions,
        durability: Durability::Buffered,
        workers,
    };
    type Run =
        fn(&std::path::Path, &WorkloadConfig) -> reactordb::Result<workloads::WorkloadReport>;
    let runs: [(Run, WorkloadConfig); 3] = [
        (workloads::many_docs, config(100, 100)),
        (workloads::hot_doc, config(1, 2_000)),
        (workloads::contention, config(1, 1_000)),
    ];
    for (run, config) in runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = run(dir.path(), &config).expect("workload");
        println!("{}", serde_json::to_string(&report).expect("json"));
    }
}
