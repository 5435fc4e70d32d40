//! Close, reopen: everything is there and ordinals continue.

mod common;

use common::*;
use reactordb::{Durability, Error, OperationStore, Ordinal, Paging, Revision, StoreOptions};

#[test]
fn reopen_keeps_everything_and_continues_ordinals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = unit("doc-a", "global");
    let b = unit("doc-b", "local");
    let (head_a, head_b) = {
        let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
        assert_eq!(
            store.durability(),
            Durability::Synced,
            "synced is the default"
        );
        append_ids(&store, &a, &["a1", "a2", "a3"]);
        append_ids(&store, &b, &["b1"]);
        (store.head(&a).expect("head"), store.head(&b).expect("head"))
    };
    let store = open(dir.path());
    assert_eq!(store.last_ordinal(), Ordinal(4));
    assert_eq!(store.head(&a).expect("head"), head_a);
    assert_eq!(store.head(&b).expect("head"), head_b);
    assert_eq!(revision(&store, &a), 3);
    // The in-memory revision guard starts from the persisted head.
    let err = append(&store, &a, 0, vec![op(&a, 0, "late", 1)]).unwrap_err();
    assert!(
        matches!(err, Error::RevisionMismatch { expected: 3, .. }),
        "{err:?}"
    );
    let next = append_ids(&store, &a, &["a4"]);
    assert_eq!(next[0].context.ordinal, Ordinal(5));
    assert_eq!(next[0].operation.index, 3);
    let all = store
        .get_since_ordinal(Ordinal(0), Paging::all())
        .expect("feed");
    let ids: Vec<_> = all
        .items
        .iter()
        .map(|o| o.operation.action.id.to_string())
        .collect();
    assert_eq!(ids, ["a1", "a2", "a3", "b1", "a4"]);
    assert!(store.verify_all().expect("verify").is_clean());
    let revs = store
        .get_revisions(&a.document_id, &a.branch)
        .expect("revisions");
    assert_eq!(revs.revisions.get(&a.scope), Some(&Revision(4)));
}

#[test]
fn a_locked_database_cannot_be_opened_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = open(dir.path());
    let second = OperationStore::open(dir.path(), StoreOptions::default());
    assert!(matches!(second, Err(Error::Storage(_))), "{second:?}");
}

#[test]
fn options_are_validated_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let too_small = [
        (
            "block_cache_bytes",
            StoreOptions::default().block_cache_bytes(10),
        ),
        (
            "memtable_budget_bytes",
            StoreOptions::default().memtable_budget_bytes(1 << 10),
        ),
        (
            "background_threads",
            StoreOptions::default().background_threads(0),
        ),
        (
            "background_threads",
            StoreOptions::default().background_threads(65),
        ),
    ];
    for (name, options) in too_small {
        let err = OperationStore::open(dir.path(), options).unwrap_err();
        assert!(
            matches!(err, Error::InvalidOptions { option, .. } if option == name),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn background_threads_reach_rocksdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = OperationStore::open(dir.path(), StoreOptions::default().background_threads(5))
        .expect("open");
    drop(store);
    // RocksDB records the options it runs with in its OPTIONS file.
    let options = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("OPTIONS-"))
        })
        .max()
        .expect("an OPTIONS file");
    let text = std::fs::read_to_string(options).expect("read");
    assert!(text.contains("max_background_jobs=5"), "{text}");
}

#[test]
fn a_newer_format_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()));
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(false);
        let cfs = rocksdb::DB::list_cf(&opts, dir.path()).expect("list cfs");
        let db = rocksdb::DB::open_cf(&opts, dir.path(), cfs).expect("raw open");
        db.put(b"meta/format_version", 99u32.to_be_bytes())
            .expect("put");
    }
    let err = OperationStore::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::IncompatibleFormat {
                found: 99,
                supported: 2
            }
        ),
        "{err:?}"
    );
}

#[test]
fn memory_counts_memtables_as_they_fill_and_the_block_cache_as_reads_fill_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || {
        StoreOptions::default()
            .durability(Durability::Buffered)
            .block_cache_bytes(4 << 20)
    };
    let units: Vec<_> = (0..200)
        .map(|d| unit(&format!("doc-{d:03}"), "global"))
        .collect();
    {
        let store = OperationStore::open(dir.path(), options()).expect("open");
        let before = store.memory();
        for unit in &units {
            let ids: Vec<String> = (0..20)
                .map(|i| format!("{}-{i}", unit.document_id))
                .collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            append_ids(&store, unit, &ids);
        }
        let after = store.memory();
        // 4,000 operations of a few hundred bytes each sit in memtables.
        assert!(
            after.memtable_bytes >= before.memtable_bytes + (400 << 10),
            "{before:?} -> {after:?}"
        );
    }
    // Reopened, the log is in table files (RocksDB flushes what it
    // recovers from the WAL as it opens): reading it fills the cache.
    let store = OperationStore::open(dir.path(), options()).expect("reopen");
    let cold = store.memory();
    let read = store
        .get_since_ordinal(Ordinal(1), Paging::all())
        .expect("feed");
    assert_eq!(read.items.len(), 4_000);
    let warm = store.memory();
    assert!(
        warm.block_cache_bytes >= cold.block_cache_bytes + (100 << 10),
        "{cold:?} -> {warm:?}"
    );
    assert!(warm.block_cache_pinned_bytes <= warm.block_cache_bytes);
}
