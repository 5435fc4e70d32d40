//! Operation Store benchmarks.
//!
//! - `apply/ours/{1,100}` vs `apply/raw_rocksdb/{1,100}`: `Buffered` appends
//!   of 1 and 100 operations per call against a raw RocksDB `WriteBatch`
//!   that writes the same keys and values (copied from a store filled by
//!   the same workload, with index, ordinal and operation-id fields made
//!   fresh on every call, as `apply`'s are) to the same column families,
//!   in the same run.
//! - `synced_appends/{1,16}_threads`: single-operation `Synced` appends,
//!   each thread on its own stream; group commit shares the fsyncs.
//!
//! Run: `cargo bench --bench store`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use reactordb::{Durability, OperationStore, StoreOptions};

mod common;
use common::{raw_db, Appender, RawBatches, RawDb};

fn apply_vs_raw(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(6));
    for per_call in [1u64, 100] {
        group.throughput(Throughput::Elements(per_call));
        let dir = tempfile::tempdir().expect("tempdir");
        let store = OperationStore::open(
            dir.path(),
            StoreOptions::with_durability(Durability::Buffered),
        )
        .expect("open");
        let mut app = Appender::new(store, &format!("ours{per_call}"));
        group.bench_function(BenchmarkId::new("ours", per_call), |b| {
            b.iter_custom(|iters| app.timed_calls(iters, per_call))
        });

        let raw = RawDb::new();
        let handles = raw.handles();
        let mut batches = RawBatches::new(per_call, if per_call == 1 { 20_000 } else { 200 });
        group.bench_function(BenchmarkId::new("raw_rocksdb", per_call), |b| {
            b.iter(|| batches.write_next(&raw.db, &handles))
        });
    }
    group.finish();
}

fn synced_group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("synced_appends");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(1));
    for threads in [1usize, 16] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = OperationStore::open(
            dir.path(),
            StoreOptions::with_durability(Durability::Synced),
        )
        .expect("open");
        let round = AtomicU64::new(0);
        group.bench_function(BenchmarkId::new("threads", threads), |b| {
            b.iter_custom(|iters| {
                let r = round.fetch_add(1, Ordering::Relaxed);
                let per_thread = iters.div_ceil(threads as u64);
                let prepared: Vec<_> = (0..threads)
                    .map(|t| {
                        let mut app = Appender::new(store.clone(), &format!("r{r}-t{t}"));
                        let ops: Vec<_> = (0..per_thread)
                            .map(|_| {
                                let op = app.prepare(1);
                                app.next += 1;
                                op
                            })
                            .collect();
                        app.next = 0;
                        (app, ops)
                    })
                    .collect();
                let start = Instant::now();
                std::thread::scope(|s| {
                    for (mut app, ops) in prepared {
                        s.spawn(move || {
                            for op in ops {
                                drop(app.append_prepared(op));
                            }
                        });
                    }
                });
                // Report the time per operation actually written.
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_thread * threads as u64) as f64)
            })
        });
    }
    // The same shape on raw RocksDB: one synced single-put batch per call,
    // so the ratio above can be read against what RocksDB's own write group
    // achieves on this machine.
    for threads in [1usize, 16] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = raw_db(dir.path());
        let round = AtomicU64::new(0);
        group.bench_function(BenchmarkId::new("raw_rocksdb_threads", threads), |b| {
            b.iter_custom(|iters| {
                let r = round.fetch_add(1, Ordering::Relaxed);
                let per_thread = iters.div_ceil(threads as u64);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let db = &db;
                        s.spawn(move || {
                            let cf = db.cf_handle("operations").expect("cf");
                            let mut write = rocksdb::WriteOptions::default();
                            write.set_sync(true);
                            for i in 0..per_thread {
                                let mut batch = rocksdb::WriteBatch::default();
                                batch.put_cf(cf, format!("r{r}-t{t}-{i:08}"), [7u8; 160]);
                                db.write_opt(batch, &write).expect("write");
                            }
                        });
                    }
                });
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_thread * threads as u64) as f64)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, apply_vs_raw, synced_group_commit);
criterion_main!(benches);
