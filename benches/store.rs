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
use reactordb::{
    Action, ActionId, ActionType, Branch, Digest, DocumentId, DocumentType, Durability,
    NewOperation, OperationStore, Revision, Scope, StoreOptions, SyncUnit,
};

const CFS: [&str; 4] = ["operations", "heads", "ordinals", "op_ids"];

fn doc_type() -> DocumentType {
    DocumentType::new("bench/counter").expect("valid")
}

fn new_op(unit: &SyncUnit, index: u64, tag: &str) -> NewOperation {
    let action = Action::new(
        ActionId::new(format!("{tag}-{index:08}")).expect("valid"),
        ActionType::new("INCREMENT").expect("valid"),
        unit.scope.clone(),
        1_700_000_000_000 + index,
        br#"{"by":1}"#.to_vec(),
    );
    NewOperation::new(index, action, Digest::of(&index.to_be_bytes()))
}

/// A stream that keeps growing across iterations.
struct Appender {
    store: OperationStore,
    unit: SyncUnit,
    next: u64,
    tag: String,
}

impl Appender {
    fn new(store: OperationStore, doc: &str) -> Self {
        let unit = SyncUnit::new(
            DocumentId::new(doc).expect("valid"),
            Scope::global(),
            Branch::main(),
        );
        Self {
            store,
            unit,
            next: 0,
            tag: doc.to_owned(),
        }
    }

    /// The next `n` operations, built outside any timing.
    fn prepare(&self, n: u64) -> Vec<NewOperation> {
        (self.next..self.next + n)
            .map(|i| new_op(&self.unit, i, &self.tag))
            .collect()
    }

    fn append(&mut self, n: u64) {
        let ops = self.prepare(n);
        self.append_prepared(ops);
    }

    fn append_prepared(&mut self, ops: Vec<NewOperation>) {
        let start = self.next;
        let n = ops.len() as u64;
        self.store
            .apply(
                &self.unit.document_id,
                &doc_type(),
                &self.unit.scope,
                &self.unit.branch,
                Revision(start),
                |txn| {
                    txn.add_operations(ops);
                },
            )
            .expect("apply");
        self.next += n;
    }
}

type Entry = (usize, Vec<u8>, Vec<u8>);

/// The exact (column family, key, value) puts our store makes for `calls`
/// calls of `per_call` operations, one batch per call, read back from a
/// scratch store filled by that workload.
fn recorded_batches(per_call: u64, calls: u64) -> Vec<Vec<Entry>> {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = OperationStore::open(
            dir.path(),
            StoreOptions::with_durability(Durability::Buffered),
        )
        .expect("open");
        let mut app = Appender::new(store, "recorded");
        for _ in 0..calls {
            app.append(per_call);
        }
    }
    let opts = rocksdb::Options::default();
    let names = rocksdb::DB::list_cf(&opts, dir.path()).expect("cfs");
    let db = rocksdb::DB::open_cf(&opts, dir.path(), names).expect("raw open");
    let read = |cf: &str| -> Vec<(Vec<u8>, Vec<u8>)> {
        let handle = db.cf_handle(cf).expect("cf");
        db.iterator_cf(handle, rocksdb::IteratorMode::Start)
            .map(|e| e.expect("entry"))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    };
    let (ops, heads, ordinals, ids) = (read(CFS[0]), read(CFS[1]), read(CFS[2]), read(CFS[3]));
    (0..calls as usize)
        .map(|call| {
            let mut batch = Vec::new();
            for i in call * per_call as usize..(call + 1) * per_call as usize {
                batch.push((0, ops[i].0.clone(), ops[i].1.clone()));
                batch.push((2, ordinals[i].0.clone(), ordinals[i].1.clone()));
                batch.push((3, ids[i].0.clone(), ids[i].1.clone()));
            }
            batch.push((1, heads[0].0.clone(), heads[0].1.clone()));
            batch
        })
        .collect()
}

/// splitmix64: a cheap, well-spread stand-in for hashed ids.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A raw RocksDB with the same options and column families as a store.
fn raw_db(path: &std::path::Path) -> rocksdb::DB {
    // Open through the store once so the options and families match.
    drop(
        OperationStore::open(path, StoreOptions::with_durability(Durability::Buffered))
            .expect("open"),
    );
    let opts = rocksdb::Options::default();
    let names = rocksdb::DB::list_cf(&opts, path).expect("cfs");
    let mut db_opts = rocksdb::Options::default();
    db_opts.set_atomic_flush(true);
    db_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    rocksdb::DB::open_cf(&db_opts, path, names).expect("raw open")
}

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
        // Building the operations (ids, validation) is the caller's work,
        // not the store's: it happens outside the timed part.
        group.bench_function(BenchmarkId::new("ours", per_call), |b| {
            b.iter_custom(|iters| {
                let calls: Vec<_> = (0..iters)
                    .map(|_| {
                        let ops = app.prepare(per_call);
                        app.next += per_call;
                        ops
                    })
                    .collect();
                app.next -= per_call * iters;
                let start = Instant::now();
                for ops in calls {
                    app.append_prepared(ops);
                }
                start.elapsed()
            })
        });

        let batches = recorded_batches(per_call, if per_call == 1 { 20_000 } else { 200 });
        let raw_dir = tempfile::tempdir().expect("tempdir");
        let db = raw_db(raw_dir.path());
        let handles: Vec<_> = CFS.iter().map(|n| db.cf_handle(n).expect("cf")).collect();
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(false);
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new("raw_rocksdb", per_call), |b| {
            let mut key = Vec::with_capacity(64);
            b.iter(|| {
                // The recorded bytes, with the index/ordinal fields moved on
                // so every call writes fresh keys, as `apply` does (only the
                // head is overwritten, as in `apply`).
                let mut batch = rocksdb::WriteBatch::default();
                let first = next as u64 * per_call;
                for (i, (cf, k, v)) in batches[next % batches.len()].iter().enumerate() {
                    let position = first + (i / 3) as u64;
                    key.clear();
                    key.extend_from_slice(k);
                    match cf {
                        0 => {
                            let at = key.len() - 8;
                            key[at..].copy_from_slice(&position.to_be_bytes());
                        }
                        2 => key.copy_from_slice(&(position + 1).to_be_bytes()),
                        3 => {
                            // Operation ids are hashes: fresh ones land at
                            // random places in the index, as `apply`'s do.
                            key[..8].copy_from_slice(&mix(position).to_be_bytes());
                            key[8..16].copy_from_slice(&mix(!position).to_be_bytes());
                            key[16..24].copy_from_slice(&position.to_be_bytes());
                        }
                        _ => {}
                    }
                    batch.put_cf(handles[*cf], &key, v);
                }
                db.write_opt(batch, &write).expect("write");
                next += 1;
            })
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
                                app.append_prepared(op);
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
