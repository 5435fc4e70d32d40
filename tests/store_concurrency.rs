//! Real threads against one store: the revision guard, gapless ordinals and
//! ordinal visibility.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use reactordb::{Error, Ordinal, Paging};

#[test]
fn sixteen_threads_on_four_streams_store_everything_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    store_everything_exactly_once(open(dir.path()), 4, 2_000);
}

/// With room for one stream head in memory, heads are evicted between
/// nearly every two writes: the revision guard must hold all the same (an
/// evicted head is read again from disk, a head in use is never evicted).
#[test]
fn with_one_cached_head_sixteen_threads_on_eight_streams_store_everything_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = reactordb::OperationStore::open(
        dir.path(),
        reactordb::StoreOptions::with_durability(reactordb::Durability::Buffered)
            .cached_stream_heads(1),
    )
    .expect("open");
    store_everything_exactly_once(store, 8, 500);
}

fn store_everything_exactly_once(
    store: reactordb::OperationStore,
    streams: usize,
    per_thread: usize,
) {
    const THREADS: usize = 16;
    let units: Vec<_> = (0..streams)
        .map(|i| unit(&format!("doc-{i}"), "global"))
        .collect();

    std::thread::scope(|s| {
        for t in 0..THREADS {
            let store = store.clone();
            let u = units[t % streams].clone();
            s.spawn(move || {
                let mut retries = 0u64;
                for i in 0..per_thread {
                    let id = format!("t{t}-{i}");
                    loop {
                        let rev = revision(&store, &u);
                        match append(&store, &u, rev, vec![op(&u, rev, &id, i as u64)]) {
                            Ok(_) => break,
                            Err(e) if e.is_retryable() => retries += 1,
                            Err(e) => panic!("unexpected error: {e:?}"),
                        }
                    }
                }
                retries
            });
        }
    });

    let total = (THREADS * per_thread) as u64;
    assert_eq!(store.last_ordinal().get(), total);
    let mut seen_ids = HashSet::new();
    for u in &units {
        let page = store
            .get_since(
                u,
                reactordb::Revision(0),
                &Default::default(),
                Paging::all(),
            )
            .expect("scan");
        assert_eq!(page.items.len(), THREADS / streams * per_thread);
        for (expected, op) in page.items.iter().enumerate() {
            assert_eq!(op.index, expected as u64, "indexes are gapless");
            assert!(
                seen_ids.insert(op.action.id.clone()),
                "stored once: {:?}",
                op.action.id
            );
        }
        assert!(store.verify(u).expect("verify").is_clean());
    }
    assert_eq!(seen_ids.len() as u64, total);
    let feed = store
        .get_since_ordinal(Ordinal(1), Paging::all())
        .expect("feed");
    assert_eq!(feed.items.len() as u64, total);
    for (i, item) in feed.items.iter().enumerate() {
        assert_eq!(
            item.context.ordinal.get(),
            i as u64 + 1,
            "ordinals are gapless"
        );
    }
    assert!(store.verify_all().expect("verify all").is_clean());
}

#[test]
fn a_concurrent_feed_reader_never_sees_a_gap() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 600;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let store = store.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut last = 0u64;
            let mut seen = BTreeMap::new();
            loop {
                let finished = done.load(Ordering::Acquire);
                let page = store
                    .get_since_ordinal(Ordinal(last + 1), Paging::first(97))
                    .expect("feed");
                for item in &page.items {
                    assert_eq!(
                        item.context.ordinal.get(),
                        last + 1,
                        "stepped over an ordinal"
                    );
                    last += 1;
                    let key = (item.context.unit(), item.operation.index);
                    assert!(seen.insert(key, item.operation.action.id.clone()).is_none());
                }
                if finished && page.items.is_empty() {
                    return seen;
                }
            }
        })
    };

    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let store = store.clone();
            s.spawn(move || {
                let u = unit(&format!("w{w}"), "global");
                for i in 0..PER_WRITER as u64 {
                    // Batches of 1 to 3 operations, so groups mix sizes.
                    let n = 1 + (i % 3);
                    let rev = revision(&store, &u);
                    let ops = (0..n)
                        .map(|k| op(&u, rev + k, &format!("{i}-{k}"), i))
                        .collect();
                    append(&store, &u, rev, ops).expect("own stream, no conflicts");
                }
            });
        }
    });
    done.store(true, Ordering::Release);
    let seen = reader.join().expect("reader");
    let expected: u64 = (0..PER_WRITER as u64).map(|i| 1 + i % 3).sum::<u64>() * WRITERS as u64;
    assert_eq!(seen.len() as u64, expected, "every operation exactly once");
    assert_eq!(store.last_ordinal().get(), expected);
}

#[test]
fn conflicting_writers_on_one_stream_each_get_a_retryable_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let u = unit("hot", "global");
    let barrier = std::sync::Barrier::new(8);
    let outcomes: Vec<Result<(), Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (store, u, barrier) = (store.clone(), u.clone(), &barrier);
                s.spawn(move || {
                    barrier.wait();
                    append(&store, &u, 0, vec![op(&u, 0, &format!("t{t}"), 1)]).map(|_| ())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "exactly one wins"
    );
    for err in outcomes.into_iter().filter_map(Result::err) {
        assert!(
            matches!(
                err,
                Error::RevisionMismatch {
                    expected: 1,
                    actual: 0,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(revision(&store, &u), 1);
}

/// `Synced` group commit gathers the callers a group released before it
/// writes; callers that stop writing (here: threads with fewer operations
/// finish early) must only shorten that wait, never lose or stall a write.
#[test]
fn synced_writers_that_come_and_go_lose_nothing() {
    const THREADS: usize = 16;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = reactordb::OperationStore::open(
        dir.path(),
        reactordb::StoreOptions::with_durability(reactordb::Durability::Synced),
    )
    .expect("open");
    let counts: Vec<usize> = (0..THREADS).map(|t| 5 + 3 * t).collect();
    std::thread::scope(|s| {
        for (t, &count) in counts.iter().enumerate() {
            let store = store.clone();
            s.spawn(move || {
                let u = unit(&format!("synced-{t}"), "global");
                for i in 0..count {
                    // Some callers pause between writes, so groups form
                    // from callers that are not all waiting at once.
                    if t % 4 == 0 && i % 5 == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    let stored = append(
                        &store,
                        &u,
                        i as u64,
                        vec![op(&u, i as u64, &format!("s{i}"), 1)],
                    )
                    .expect("append");
                    assert_eq!(stored[0].operation.index, i as u64);
                }
            });
        }
    });
    let total: usize = counts.iter().sum();
    assert_eq!(store.last_ordinal().get(), total as u64);
    let feed = store
        .get_since_ordinal(Ordinal(1), Paging::all())
        .expect("feed");
    let ordinals: Vec<u64> = feed.items.iter().map(|o| o.context.ordinal.get()).collect();
    assert_eq!(ordinals, (1..=total as u64).collect::<Vec<_>>());
    for (t, &count) in counts.iter().enumerate() {
        let u = unit(&format!("synced-{t}"), "global");
        assert_eq!(revision(&store, &u), count as u64, "{t}");
    }
    assert!(store.verify_all().expect("verify all").is_clean());
    let stats = store.commit_stats();
    assert_eq!(stats.appends, total as u64);
    assert_eq!(stats.operations, total as u64);
    assert!(
        stats.writes < stats.appends,
        "16 synced writers share fsyncs: {stats:?}"
    );
}

/// The commit statistics count what was committed: a lone caller's every
/// append is a write of its own, with all its operations.
#[test]
fn a_lone_caller_commits_each_append_in_a_write_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let u = unit("alone", "global");
    let start = store.commit_stats();
    let mut index = 0;
    for size in 1..=5u64 {
        let ops = (index..index + size)
            .map(|i| op(&u, i, &format!("a{i}"), i))
            .collect();
        append(&store, &u, index, ops).expect("append");
        index += size;
    }
    let stats = store.commit_stats().since(&start);
    assert_eq!((stats.writes, stats.appends, stats.operations), (5, 5, 15));
    assert_eq!(stats.appends_per_write(), 1.0);
    assert!(!stats.write_time.is_zero());
}

/// Listings cross-check heads against the operations family (a stream
/// holding operations without a head is `Corrupt`, a lost head): streams
/// created by another thread while a listing or a head read runs never
/// look lost. The reader takes the newest streams, the ones a writer is
/// creating, with `streams`, `all_streams`, `get_revisions` and `head`.
#[test]
fn streams_being_created_never_look_like_lost_heads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let created = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, created, done) = (store.clone(), created.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..600 {
                let doc = format!("doc-{i}");
                append_ids(&store, &unit(&doc, "global"), &["g"]);
                append_ids(&store, &unit(&doc, "local"), &["l"]);
                created.store(i + 1, Ordering::Release);
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut reads = 0u64;
    while !done.load(Ordering::Acquire) {
        // The stream the writer is creating now, and the one after it.
        let i = created.load(Ordering::Acquire);
        for doc in [format!("doc-{i}"), format!("doc-{}", i + 1)] {
            let id = reactordb::DocumentId::new(doc.as_str()).expect("valid");
            let listed = store.streams(&id).expect("streams");
            assert!(listed.len() <= 2);
            store
                .get_revisions(&id, &reactordb::Branch::main())
                .expect("revisions");
            for scope in ["global", "local"] {
                store.head(&unit(&doc, scope)).expect("head");
            }
        }
        if reads.is_multiple_of(16) {
            store.all_streams().expect("all streams");
        }
        reads += 1;
    }
    writer.join().expect("writer");
    assert_eq!(store.all_streams().expect("all streams").len(), 1_200);
    assert!(reads > 100, "the reader ran alongside: {reads} rounds");
}
