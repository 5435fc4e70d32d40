//! Edits to stored history, made with raw RocksDB, are found by `verify`.

mod common;

use common::*;
use reactordb::{ChainFault, OperationStore, StoreOptions};

fn build(dir: &std::path::Path) -> (reactordb::SyncUnit, reactordb::SyncUnit) {
    let store = open(dir);
    let clean = unit("clean", "global");
    let target = unit("target", "global");
    append_ids(&store, &clean, &["c0", "c1"]);
    append_ids(&store, &target, &["t0", "t1", "t2", "t3", "t4"]);
    assert!(store.verify_all().expect("verify").is_clean());
    let visited = visit_units(&store, usize::MAX).expect("visit");
    let listed: Vec<_> = store
        .all_streams()
        .expect("list")
        .into_iter()
        .map(|s| s.unit)
        .collect();
    assert_eq!(visited, listed);
    assert_eq!(listed, vec![clean.clone(), target.clone()]);
    (clean, target)
}

/// The streams `visit_streams` hands over, stopping after `at_most`.
fn visit_units(
    store: &OperationStore,
    at_most: usize,
) -> reactordb::Result<Vec<reactordb::SyncUnit>> {
    let mut visited = Vec::new();
    store.visit_streams(|s| {
        visited.push(s.unit);
        visited.len() < at_most
    })?;
    Ok(visited)
}

#[test]
fn a_flipped_byte_in_the_content_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clean, target) = build(dir.path());
    // The input bytes of the action ("t2") sit near the end of the value.
    edit_operation(dir.path(), "target", 2, |v| {
        let pos = v.windows(2).rposition(|w| w == b"t2").expect("input bytes");
        v[pos + 1] = b'X';
    });
    let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
    assert!(store.verify(&clean).expect("verify").is_clean());
    let report = store.verify(&target).expect("verify");
    let broken = report.first_broken.expect("tampering found");
    assert_eq!(
        (broken.unit, broken.index, broken.fault),
        (target.clone(), 2, ChainFault::HashMismatch)
    );
    let all = store
        .verify_all()
        .expect("verify all")
        .first_broken
        .expect("found");
    assert_eq!((all.unit, all.index), (target, 2));
}

#[test]
fn a_rewritten_hash_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, target) = build(dir.path());
    // Bytes 9..41 hold the stored chain hash.
    edit_operation(dir.path(), "target", 3, |v| v[20] ^= 0x01);
    let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
    let broken = store
        .verify(&target)
        .expect("verify")
        .first_broken
        .expect("found");
    assert_eq!((broken.index, broken.fault), (3, ChainFault::HashMismatch));
}

#[test]
fn a_truncated_value_and_a_missing_operation_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, target) = build(dir.path());
    edit_operation(dir.path(), "target", 1, |v| v.truncate(30));
    let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
    let broken = store
        .verify(&target)
        .expect("verify")
        .first_broken
        .expect("found");
    assert_eq!((broken.index, broken.fault), (1, ChainFault::Undecodable));
    drop(store);

    let dir = tempfile::tempdir().expect("tempdir");
    let (_, target) = build(dir.path());
    {
        let db = raw_db(dir.path());
        let cf = db.cf_handle("operations").expect("cf");
        let mut key = b"target\0main\0global\0".to_vec();
        key.extend_from_slice(&4u64.to_be_bytes());
        db.delete_cf(cf, &key).expect("delete");
    }
    let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
    let broken = store
        .verify(&target)
        .expect("verify")
        .first_broken
        .expect("found");
    assert_eq!((broken.index, broken.fault), (5, ChainFault::HeadMismatch));
}

/// The ordinal (bytes 1..9 of the value) is patched in at commit, after the
/// chain hash was taken, so the hash does not cover it: `verify` checks it
/// against the ordinal index and against its predecessor's. A low-bit flip
/// moves it onto a neighbour's ordinal; a high-bit flip past every ordinal.
#[test]
fn a_flipped_ordinal_is_named() {
    for (byte, index) in [(8, 2), (1, 3), (8, 0)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (clean, target) = build(dir.path());
        edit_operation(dir.path(), "target", index, |v| v[byte] ^= 0x01);
        let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
        assert!(store.verify(&clean).expect("verify").is_clean());
        let broken = store
            .verify(&target)
            .expect("verify")
            .first_broken
            .expect("found");
        assert_eq!(
            (broken.index, broken.fault),
            (index, ChainFault::OrdinalMismatch),
            "byte {byte} of operation {index}"
        );
    }
}

/// The first broken place `verify_all` finds; panics when all is clean.
fn first_broken_of_all(store: &OperationStore) -> reactordb::BrokenLink {
    store
        .verify_all()
        .expect("verify")
        .first_broken
        .expect("found")
}

/// The op-id key of action `action` at `index` (skip 0) of `unit`.
fn op_id_key(unit: &reactordb::SyncUnit, action: &str, index: u64) -> Vec<u8> {
    let id =
        reactordb::OperationId::derive(unit, &reactordb::ActionId::new(action).expect("valid"));
    let mut key = id.as_bytes().to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key.extend_from_slice(&0u64.to_be_bytes());
    key
}

/// Sets the op-id entry `key` to name the stream of `doc` (global, main).
fn put_op_id(dir: &std::path::Path, key: &[u8], doc: &str) {
    let db = raw_db(dir);
    let cf = db.cf_handle("op_ids").expect("cf");
    let mut value = vec![1u8];
    value.extend_from_slice(format!("{doc}\0main\0global\0").as_bytes());
    db.put_cf(cf, key, &value).expect("put");
}

/// Deduplication trusts the operation-id index: a lost entry would let a
/// resubmitted action be applied twice. `verify` checks every operation is
/// indexed under its id, index and skip, in its own stream.
#[test]
fn a_lost_or_misdirected_op_id_entry_is_named() {
    for misdirect in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (clean, target) = build(dir.path());
        let key = op_id_key(&target, "t2", 2);
        if misdirect {
            // Indexed, but as an operation of the other stream.
            put_op_id(dir.path(), &key, "clean");
        } else {
            let db = raw_db(dir.path());
            let cf = db.cf_handle("op_ids").expect("cf");
            assert!(db.get_cf(cf, &key).expect("get").is_some(), "indexed");
            db.delete_cf(cf, &key).expect("delete");
        }
        let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
        assert!(store.verify(&clean).expect("verify").is_clean());
        let broken = first_broken_of_all(&store);
        assert_eq!(
            (broken.unit, broken.index, broken.fault),
            (target, 2, ChainFault::OpIdIndexMismatch),
            "misdirected: {misdirect}"
        );
    }
}

/// `verify_all` finds streams by their operations too: a lost head is
/// named, not a stream nobody checks. Reads that list streams or read
/// that head answer `Corrupt` naming the heads family (never a stream
/// that reads as empty), and an append at index 0, what a writer that
/// believed the stream new would send, is refused: it would overwrite the
/// stream's history.
#[test]
fn a_lost_head_is_named_by_verify_all_and_refused_by_reads_and_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, target) = build(dir.path());
    {
        let db = raw_db(dir.path());
        let cf = db.cf_handle("heads").expect("cf");
        db.delete_cf(cf, b"target\0main\0global\0").expect("delete");
    }
    let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
    let report = store.verify_all().expect("verify");
    let broken = report.first_broken.expect("found");
    assert_eq!(
        (broken.unit, broken.fault),
        (target.clone(), ChainFault::HeadMismatch)
    );
    assert_eq!(report.operations_checked, 2 + 5, "both streams walked");
    let lost_head =
        |r: reactordb::Result<_>| matches!(r, Err(reactordb::Error::Corrupt { cf: "heads", .. }));
    let doc = target.document_id.clone();
    assert!(lost_head(store.head(&target).map(|_| ())));
    assert!(lost_head(store.streams(&doc).map(|_| ())));
    assert!(lost_head(store.all_streams().map(|_| ())));
    // A visit meets the loss at its place; one that stops before it (the
    // lost head is the second stream's) does not.
    assert!(lost_head(store.visit_streams(|_| true)));
    let visited = visit_units(&store, 1).expect("stopped before the lost head");
    assert_eq!(visited, vec![unit("clean", "global")]);
    assert!(lost_head(
        store.get_revisions(&doc, &target.branch).map(|_| ())
    ));
    let first = store.get(&target, 0).expect("read").expect("stored");
    let before = store.last_ordinal();
    let overwrite = vec![op(&target, 0, "intruder", 9_000)];
    assert!(lost_head(append(&store, &target, 0, overwrite).map(|_| ())));
    assert_eq!(store.get(&target, 0).expect("read"), Some(first));
    assert_eq!(store.last_ordinal(), before, "nothing written");
    // Other streams read and write as before.
    let clean = unit("clean", "global");
    assert_eq!(revision(&store, &clean), 2);
    append_ids(&store, &clean, &["c2"]);
}

/// An op-id entry naming an operation the stream does not hold would make
/// deduplication take a new action as applied: `verify_all` names it, and
/// the reactor fails the job with `Corrupt` instead of acknowledging an
/// action it never wrote.
#[test]
fn a_dangling_op_id_entry_is_named_and_never_taken_as_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, target) = build(dir.path());
    put_op_id(dir.path(), &op_id_key(&target, "ghost", 2), "target");
    let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
    let broken = first_broken_of_all(&store);
    assert_eq!(
        (broken.unit, broken.index, broken.fault),
        (target, 2, ChainFault::OpIdIndexMismatch)
    );
    drop(store);

    // Through the reactor: the entry claims an action of a counter's
    // global stream that was never written.
    let dir = tempfile::tempdir().expect("tempdir");
    let global = reactordb::SyncUnit::new(
        reactor::id("c"),
        reactordb::Scope::global(),
        reactor::main(),
    );
    {
        let reactor = reactor::open(dir.path(), 1);
        reactor::create_counter(&reactor, "c");
        reactor::written(
            &reactor
                .execute(
                    reactor::id("c"),
                    reactor::main(),
                    vec![reactor::increment("a")],
                )
                .expect("submit"),
        );
    }
    put_op_id(dir.path(), &op_id_key(&global, "b", 0), "c");
    // And one for an undo, which takes the merge path.
    put_op_id(dir.path(), &op_id_key(&global, "u", 0), "c");
    let reactor = reactor::open(dir.path(), 1);
    let undo = reactor::action("u", reactordb::ACTION_UNDO, "", 1);
    for action in [reactor::increment("b"), undo] {
        let job = reactor
            .execute(reactor::id("c"), reactor::main(), vec![action])
            .expect("submit");
        let error = reactor::failure(&job);
        assert!(
            matches!(*error, reactordb::Error::Corrupt { cf: "op_ids", .. }),
            "{error}"
        );
    }
    assert_eq!(
        reactor
            .store()
            .head(&global)
            .expect("head")
            .map(|h| h.revision.0),
        Some(1),
        "nothing written"
    );
}

/// The last entry of the ordinal feed lost: the store does not hand its
/// ordinal out again (the last group commit recorded it beside the feed),
/// and `verify` names the operation that lost its entry. A lost format
/// version in a database that holds operations is refused, not assumed.
#[test]
fn a_lost_last_ordinal_entry_is_not_reused_and_a_lost_format_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, target) = build(dir.path());
    let last = {
        let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
        store.last_ordinal()
    };
    {
        let db = raw_db(dir.path());
        let cf = db.cf_handle("ordinals").expect("cf");
        db.delete_cf(cf, last.get().to_be_bytes()).expect("delete");
    }
    let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
    assert_eq!(
        store.last_ordinal(),
        last,
        "the lost ordinal is still taken"
    );
    let broken = first_broken_of_all(&store);
    assert_eq!((broken.unit.clone(), broken.index), (target.clone(), 4));
    assert_eq!(broken.fault, ChainFault::OrdinalMismatch);
    let written = append_ids(&store, &target, &["t5"]);
    assert_eq!(
        written[0].context.ordinal,
        last.next(),
        "an ordinal was reused"
    );
    drop(store);

    {
        let db = raw_db(dir.path());
        db.delete(b"meta/format_version").expect("delete");
    }
    match OperationStore::open(dir.path(), StoreOptions::default()) {
        Err(reactordb::Error::Corrupt { cf: "default", .. }) => {}
        other => panic!("a lost format version was assumed: {:?}", other.map(|_| ())),
    }
}

/// The ordinal feed (what the view and sync catch up from) never skips:
/// a lost entry in its middle or at its end, or an entry naming another
/// operation, is `Corrupt { cf: "ordinals" }` for a read that passes it,
/// instead of a feed that silently leaves an operation out. Reads that
/// end before the damage are served.
#[test]
fn a_gap_or_a_misdirected_entry_in_the_ordinal_feed_is_refused() {
    let feed = |store: &OperationStore, from: u64, limit: usize| {
        store
            .get_since_ordinal(reactordb::Ordinal(from), reactordb::Paging::first(limit))
            .map(|p| p.items.len())
    };
    let feed_corrupt = |r: reactordb::Result<usize>| {
        matches!(r, Err(reactordb::Error::Corrupt { cf: "ordinals", .. }))
    };
    // 7 operations: ordinals 1..=7.
    for lost in [3u64, 7] {
        let dir = tempfile::tempdir().expect("tempdir");
        build(dir.path());
        {
            let db = raw_db(dir.path());
            let cf = db.cf_handle("ordinals").expect("cf");
            db.delete_cf(cf, lost.to_be_bytes()).expect("delete");
        }
        let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
        assert!(feed_corrupt(feed(&store, 1, 100)), "entry {lost} lost");
        assert!(feed_corrupt(feed(&store, lost, 100)), "entry {lost} lost");
        // A full page whose range spans the gap, not only a page that ends
        // short of the last ordinal.
        assert!(feed_corrupt(feed(&store, lost - 1, 2)), "entry {lost} lost");
        // A page that ends before the gap is served; the next one is not.
        let page = store
            .get_since_ordinal(
                reactordb::Ordinal(1),
                reactordb::Paging::first(lost as usize - 2),
            )
            .expect("before it");
        assert_eq!(page.items.len(), lost as usize - 2);
        let next = store.get_since_ordinal(
            reactordb::Ordinal(1),
            reactordb::Paging::new(page.next_cursor, 100),
        );
        assert!(
            feed_corrupt(next.map(|p| p.items.len())),
            "entry {lost} lost"
        );
    }
    // Entry 2 rewritten to name the operation at ordinal 5.
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    {
        let db = raw_db(dir.path());
        let cf = db.cf_handle("ordinals").expect("cf");
        let fifth = db
            .get_cf(cf, 5u64.to_be_bytes())
            .expect("get")
            .expect("stored");
        db.put_cf(cf, 2u64.to_be_bytes(), fifth).expect("put");
    }
    let store = OperationStore::open(dir.path(), StoreOptions::default()).expect("open");
    assert!(feed_corrupt(feed(&store, 1, 100)));
    assert_eq!(feed(&store, 3, 100).expect("after it"), 5);
}
