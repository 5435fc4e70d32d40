//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod counter_v2;
pub mod docs;
pub mod history;
pub mod model;
#[cfg(feature = "nats")]
pub mod nats_cluster;
pub mod reactor;

use reactordb::{
    Action, ActionId, ActionType, Branch, Digest, DocumentId, DocumentType, Durability,
    NewOperation, OperationStore, OperationWithContext, Result, Revision, Scope, StoreOptions,
    SyncUnit,
};

/// A test's size from the environment (its long mode), or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    env_opt(name).unwrap_or(default)
}

/// A value from the environment, when it is set and parses.
pub fn env_opt<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Rewrites, with raw RocksDB, the stored value of the operation at `index`
/// of `doc`'s `global` stream on `main` (the database must be closed).
pub fn edit_operation(dir: &std::path::Path, doc: &str, index: u64, edit: impl Fn(&mut Vec<u8>)) {
    let db = raw_db(dir);
    let cf = db.cf_handle("operations").expect("cf");
    let mut key = format!("{doc}\0main\0global\0").into_bytes();
    key.extend_from_slice(&index.to_be_bytes());
    let mut value = db.get_cf(cf, &key).expect("get").expect("stored");
    edit(&mut value);
    db.put_cf(cf, &key, &value).expect("put");
}

/// The seeded scenarios' only source of randomness (xorshift64*): the same
/// seed gives the same scenario on every machine.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub fn seeded(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (near enough for tests).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A probability from 0 to `max_percent` %, in whole percents.
    pub fn p(&mut self, max_percent: u64) -> f64 {
        self.below(max_percent + 1) as f64 / 100.0
    }
}

/// The database opened with raw RocksDB (every column family), to edit
/// bytes behind the engine's back.
pub fn raw_db(path: &std::path::Path) -> rocksdb::DB {
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, path).expect("list cfs");
    rocksdb::DB::open_cf(&opts, path, cfs).expect("raw open")
}

pub fn open(dir: &std::path::Path) -> OperationStore {
    OperationStore::open(dir, StoreOptions::with_durability(Durability::Buffered))
        .expect("open store")
}

pub fn doc_type() -> DocumentType {
    DocumentType::new("test/counter").expect("valid")
}

pub fn unit(doc: &str, scope: &str) -> SyncUnit {
    SyncUnit::new(
        DocumentId::new(doc).expect("valid"),
        Scope::new(scope).expect("valid"),
        Branch::main(),
    )
}

pub fn action(id: &str, scope: &Scope, ts: u64) -> Action {
    Action::new(
        ActionId::new(id).expect("valid"),
        ActionType::new(if ts.is_multiple_of(2) { "EVEN" } else { "ODD" }).expect("valid"),
        scope.clone(),
        ts,
        id.as_bytes().to_vec(),
    )
}

/// An operation at `index` carrying action `id`, timestamped `ts`.
pub fn op(unit: &SyncUnit, index: u64, id: &str, ts: u64) -> NewOperation {
    NewOperation::new(
        index,
        action(id, &unit.scope, ts),
        Digest::of(id.as_bytes()),
    )
}

pub fn append(
    store: &OperationStore,
    unit: &SyncUnit,
    revision: u64,
    ops: Vec<NewOperation>,
) -> Result<Vec<OperationWithContext>> {
    store.apply(
        &unit.document_id,
        &doc_type(),
        &unit.scope,
        &unit.branch,
        Revision(revision),
        |txn| {
            txn.add_operations(ops);
        },
    )
}

/// Every ordinal in the store's feed, in order.
pub fn ordinals_on_disk(store: &OperationStore) -> Vec<u64> {
    store
        .get_since_ordinal(reactordb::Ordinal(1), reactordb::Paging::all())
        .expect("feed")
        .items
        .iter()
        .map(|o| o.context.ordinal.get())
        .collect()
}

/// Checks the feed is gapless from 1 and every chain verifies; returns how
/// many operations the store holds.
pub fn assert_gapless_and_intact(store: &OperationStore) -> u64 {
    let ordinals = ordinals_on_disk(store);
    assert_eq!(ordinals, (1..=ordinals.len() as u64).collect::<Vec<_>>());
    assert!(store.verify_all().expect("verify").is_clean());
    ordinals.len() as u64
}

pub fn revision(store: &OperationStore, unit: &SyncUnit) -> u64 {
    store
        .head(unit)
        .expect("head")
        .map_or(0, |h| h.revision.get())
}

/// Appends one operation per id at the stream's head.
pub fn append_ids(
    store: &OperationStore,
    unit: &SyncUnit,
    ids: &[&str],
) -> Vec<OperationWithContext> {
    let start = revision(store, unit);
    let ops = ids
        .iter()
        .enumerate()
        .map(|(i, id)| op(unit, start + i as u64, id, 1_000 + start + i as u64))
        .collect();
    append(store, unit, start, ops).expect("append")
}

/// Starts this test binary again as a child process that runs only the
/// test `name`, with `env` set to `dir` (the child's signal to do its
/// work), its stdout piped and its stderr discarded. For crash tests: the
/// parent reads what the child acknowledged, then kills it.
pub fn spawn_child(name: &str, env: &str, dir: &std::path::Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(env, dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child")
}

/// Every file under `dir` (relative path) with a blake3 hash of its bytes:
/// compared before and after, it shows whether anything was written.
pub fn file_hashes(dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let hash = blake3::hash(&std::fs::read(&path).expect("read"));
                let name = path
                    .strip_prefix(dir)
                    .expect("inside")
                    .display()
                    .to_string();
                out.insert(name, hash.to_hex().to_string());
            }
        }
    }
    out
}

/// A copy, in a temporary directory, of the checked-in database
/// `tests/fixtures/{name}` (opening a database changes its files).
pub fn fixture_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    for entry in std::fs::read_dir(from).expect("the fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    dir
}
