//! Shared by the benchmarks: an appender on one growing stream, the raw
//! RocksDB baseline writing the same bytes, and a raw database opened with
//! the store's column families.

#![allow(dead_code)] // each bench uses its own part

use std::time::{Duration, Instant};

use reactordb::{
    Action, ActionId, ActionType, Branch, Digest, DocumentId, DocumentType, Durability,
    NewOperation, OperationStore, OperationWithContext, Revision, Scope, StoreOptions, SyncUnit,
};

pub const CFS: [&str; 4] = ["operations", "heads", "ordinals", "op_ids"];

pub fn doc_type() -> DocumentType {
    DocumentType::new("bench/counter").expect("valid")
}

pub fn new_op(unit: &SyncUnit, index: u64, tag: &str) -> NewOperation {
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
pub struct Appender {
    pub store: OperationStore,
    pub unit: SyncUnit,
    pub next: u64,
    pub tag: String,
    pub document_type: DocumentType,
}

impl Appender {
    pub fn new(store: OperationStore, doc: &str) -> Self {
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
            document_type: doc_type(),
        }
    }

    /// The next `n` operations, built outside any timing.
    pub fn prepare(&self, n: u64) -> Vec<NewOperation> {
        (self.next..self.next + n)
            .map(|i| new_op(&self.unit, i, &self.tag))
            .collect()
    }

    pub fn append(&mut self, n: u64) {
        let ops = self.prepare(n);
        self.append_prepared(ops);
    }

    /// Times `calls` appends of `per_call` operations each. Building the
    /// operations, and dropping them once `apply` hands them back stored,
    /// is the caller's work, not the store's: it happens off the clock.
    pub fn timed_calls(&mut self, calls: u64, per_call: u64) -> Duration {
        let prepared: Vec<_> = (0..calls)
            .map(|_| {
                let ops = self.prepare(per_call);
                self.next += per_call;
                ops
            })
            .collect();
        self.next -= per_call * calls;
        let mut results = Vec::with_capacity(prepared.len());
        let start = Instant::now();
        for ops in prepared {
            results.push(self.append_prepared(ops));
        }
        let took = start.elapsed();
        drop(results);
        took
    }

    /// Appends operations built by [`prepare`](Self::prepare) and returns
    /// what the store returns: the caller's operations, now stored. The
    /// timed loops drop them after the clock stops, as they build them
    /// before it starts: making and discarding the caller's values is the
    /// caller's work, not the store's.
    pub fn append_prepared(&mut self, ops: Vec<NewOperation>) -> Vec<OperationWithContext> {
        let start = self.next;
        let n = ops.len() as u64;
        let stored = self
            .store
            .apply(
                &self.unit.document_id,
                &self.document_type,
                &self.unit.scope,
                &self.unit.branch,
                Revision(start),
                |txn| {
                    txn.add_operations(ops);
                },
            )
            .expect("apply");
        self.next += n;
        stored
    }
}

pub type Entry = (usize, Vec<u8>, Vec<u8>);

/// The exact (column family, key, value) puts our store makes for `calls`
/// calls of `per_call` operations, one batch per call, read back from a
/// scratch store filled by that workload.
pub fn recorded_batches(per_call: u64, calls: u64) -> Vec<Vec<Entry>> {
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
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A raw RocksDB with the same options and column families as a store.
pub fn raw_db(path: &std::path::Path) -> rocksdb::DB {
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

/// A raw RocksDB with the store's column families, in a temporary folder.
pub struct RawDb {
    pub db: rocksdb::DB,
    _dir: tempfile::TempDir,
}

impl RawDb {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = raw_db(dir.path());
        Self { db, _dir: dir }
    }

    /// The write side's column families, in [`CFS`] order.
    pub fn handles(&self) -> [&rocksdb::ColumnFamily; 4] {
        CFS.map(|n| self.db.cf_handle(n).expect("cf"))
    }
}

/// The raw side of the `apply` comparison: recorded batches of the store's
/// exact puts, written as raw `WriteBatch`es with the index, ordinal and
/// operation-id fields moved on so every call writes fresh keys, as
/// `apply` does (only the head is overwritten, as in `apply`).
pub struct RawBatches {
    batches: Vec<Vec<Entry>>,
    per_call: u64,
    next: usize,
    key: Vec<u8>,
    write: rocksdb::WriteOptions,
}

impl RawBatches {
    /// `calls` recorded batches of `per_call` operations (cycled through
    /// when more calls are made).
    pub fn new(per_call: u64, calls: u64) -> Self {
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(false);
        Self {
            batches: recorded_batches(per_call, calls),
            per_call,
            next: 0,
            key: Vec::with_capacity(64),
            write,
        }
    }

    /// Builds and writes the next call's batch.
    pub fn write_next(&mut self, db: &rocksdb::DB, handles: &[&rocksdb::ColumnFamily; 4]) {
        let mut batch = rocksdb::WriteBatch::default();
        let first = self.next as u64 * self.per_call;
        let key = &mut self.key;
        for (i, (cf, k, v)) in self.batches[self.next % self.batches.len()]
            .iter()
            .enumerate()
        {
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
                    // Operation ids are hashes: fresh ones land at random
                    // places in the index, as `apply`'s do.
                    key[..8].copy_from_slice(&mix(position).to_be_bytes());
                    key[8..16].copy_from_slice(&mix(!position).to_be_bytes());
                    key[16..24].copy_from_slice(&position.to_be_bytes());
                }
                _ => {}
            }
            batch.put_cf(handles[*cf], &key, v);
        }
        db.write_opt(batch, &self.write).expect("write");
        self.next += 1;
    }
}
