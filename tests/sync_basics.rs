//! Sync's promises one at a time, through the public API: each operation
//! goes to a remote once and never back; a filter sends only what it
//! passes and its cursor still covers the rest; status and `wait_synced`;
//! remotes and cursors survive a restart; a peer restored from a backup
//! (cursors gone backwards) is repaired by the anti-entropy pass; a relay
//! forwards the originator's signature.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::docs::stream_ops;
use common::reactor::*;
use reactordb::{
    in_process_pair, DocumentSyncStatus, Reactor, RemoteFilter, RemoteOptions, Scope,
    SessionHandle, SyncManager, SyncOptions,
};

fn options(name: &str) -> SyncOptions {
    SyncOptions::new()
        .name(name)
        .anti_entropy_every(None)
        .resend_after(Duration::from_secs(5))
}

fn node(dir: &std::path::Path, name: &str, options: SyncOptions) -> (Arc<Reactor>, SyncManager) {
    let reactor = Arc::new(open(dir, 2));
    let sync = SyncManager::open(reactor.clone(), options.name(name)).expect("sync");
    (reactor, sync)
}

fn link(a: &SyncManager, b: &SyncManager) -> (SessionHandle, SessionHandle) {
    let (x, y) = in_process_pair();
    (
        a.attach(b.name(), x).expect("attach"),
        b.attach(a.name(), y).expect("attach"),
    )
}

fn append(reactor: &Reactor, doc: &str, aid: &str, ts: u64) -> reactordb::ConsistencyToken {
    written(
        &reactor
            .execute(id(doc), main(), vec![action(aid, "APPEND", aid, ts)])
            .expect("submit"),
    )
}

/// The set (op id, content) of a document's synced scopes.
fn set(reactor: &Reactor, doc: &str) -> std::collections::BTreeSet<(String, String)> {
    [Scope::document(), Scope::global()]
        .iter()
        .flat_map(|s| stream_ops(reactor.store(), doc, s))
        .map(|o| (o.id.to_string(), o.content_hash.to_string()))
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn quiet(a: &SyncManager, b: &SyncManager) -> bool {
    [a, b].iter().all(|s| {
        let last = s.reactor().store().last_ordinal().get();
        s.remotes()
            .expect("remotes")
            .iter()
            .all(|r| r.connected && r.outbox_cursor >= last)
    })
}

/// Two nodes `a` and `b`, each the other's remote, and `doc` created on `a`.
fn pair_with_doc(
    a_dir: &std::path::Path,
    b_dir: &std::path::Path,
    options: impl Fn(&str) -> SyncOptions,
) -> [(Arc<Reactor>, SyncManager); 2] {
    let (a, sa) = node(a_dir, "a", options("a"));
    let (b, sb) = node(b_dir, "b", options("b"));
    sa.add_remote("b", RemoteOptions::new()).expect("remote");
    sb.add_remote("a", RemoteOptions::new()).expect("remote");
    a.create(id("doc"), create_input(LogModel::document_type()))
        .expect("submit")
        .written(WAIT)
        .expect("created");
    [(a, sa), (b, sb)]
}

#[test]
fn each_operation_goes_to_a_remote_once_and_never_back() {
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let [(a, sa), (b, sb)] = pair_with_doc(da.path(), db.path(), options);
    // Concurrent histories: each side's later merge re-appends copies of
    // its own operations behind the other's.
    let (sessions_a, sessions_b) = link(&sa, &sb);
    wait_until("the creation to arrive", || quiet(&sa, &sb));
    drop((sessions_a, sessions_b));
    for i in 0..20u64 {
        append(&a, "doc", &format!("a{i}"), 100 + 2 * i);
        append(&b, "doc", &format!("b{i}"), 101 + 2 * i);
    }
    let _link = link(&sa, &sb);
    wait_until("quiet", || {
        quiet(&sa, &sb) && set(&a, "doc") == set(&b, "doc")
    });
    for i in 20..30u64 {
        append(&a, "doc", &format!("a{i}"), 100 + 2 * i);
        append(&b, "doc", &format!("b{i}"), 101 + 2 * i);
    }
    wait_until("quiet", || {
        quiet(&sa, &sb) && set(&a, "doc") == set(&b, "doc")
    });
    let (to_b, to_a) = (&sa.remotes().expect("r")[0], &sb.remotes().expect("r")[0]);
    assert!(
        a.store().last_ordinal().get() > set(&a, "doc").len() as u64,
        "copies were re-appended"
    );
    // The counters add up over a manager's sessions: a originated its
    // creation and 30 appends, b its 30; none went twice or came back.
    assert_eq!(
        to_b.sent_operations, 31,
        "a sent each of its operations once: {to_b:?}"
    );
    assert_eq!(
        to_a.sent_operations, 30,
        "b sent only its own, once: {to_a:?}"
    );
    assert_eq!(to_a.received_operations, 31);
}

#[test]
fn a_filter_sends_only_what_it_passes_and_its_cursor_covers_the_rest() {
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, sa) = node(da.path(), "a", options("a"));
    let (b, sb) = node(db.path(), "b", options("b"));
    let only_x = RemoteFilter::all().documents([id("x")]);
    sa.add_remote("b", RemoteOptions::new().filter(only_x))
        .expect("remote");
    sb.add_remote("a", RemoteOptions::new()).expect("remote");
    for doc in ["x", "y"] {
        a.create(id(doc), create_input(LogModel::document_type()))
            .expect("submit")
            .written(WAIT)
            .expect("created");
    }
    append(&a, "x", "x1", 5);
    let token = append(&a, "y", "y1", 6);
    assert_eq!(
        sa.document_status("b", &id("x")).expect("status"),
        DocumentSyncStatus::Pending
    );
    let _link = link(&sa, &sb);
    // The last write is filtered out, yet acked: a filter is no hole.
    sa.wait_synced("b", token, WAIT).expect("covered");
    assert_eq!(set(&b, "x"), set(&a, "x"));
    assert!(set(&b, "y").is_empty(), "y never went");
    assert_eq!(
        sa.document_status("b", &id("x")).expect("status"),
        DocumentSyncStatus::Synced
    );
    // Widening the filter on the running session sends what it skipped.
    sa.add_remote("b", RemoteOptions::new()).expect("widen");
    wait_until("y at b", || set(&b, "y") == set(&a, "y"));
}

#[test]
fn remotes_and_cursors_survive_a_restart_and_nothing_is_sent_twice() {
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let [(a, sa), (b, sb)] = pair_with_doc(da.path(), db.path(), options);
    for i in 0..10 {
        append(&a, "doc", &format!("a{i}"), 10 + i);
    }
    let token = a.store().last_ordinal();
    let l = link(&sa, &sb);
    sa.wait_synced("b", reactordb::ConsistencyToken(token), WAIT)
        .expect("synced");
    let before = sa.remotes().expect("remotes");
    drop(l);
    drop((sa, sb, a, b));

    let (a, sa) = node(da.path(), "a", options("a"));
    let (b, sb) = node(db.path(), "b", options("b"));
    let after = sa.remotes().expect("remotes");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].name, "b");
    assert_eq!(
        after[0].outbox_cursor, before[0].outbox_cursor,
        "cursor kept"
    );
    assert!(after[0].outbox_cursor >= token.get());
    append(&a, "doc", "a-late", 100);
    let _link = link(&sa, &sb);
    wait_until("quiet", || {
        quiet(&sa, &sb) && set(&a, "doc") == set(&b, "doc")
    });
    assert_eq!(
        sa.remotes().expect("r")[0].sent_operations,
        1,
        "only the new one went"
    );
}

#[test]
fn a_peer_restored_from_a_backup_is_repaired_by_anti_entropy() {
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let with_repair =
        |name: &str| options(name).anti_entropy_every(Some(Duration::from_millis(100)));
    let [(a, sa), (b, sb)] = pair_with_doc(da.path(), db.path(), with_repair);
    let l = link(&sa, &sb);
    append(&a, "doc", "a1", 10);
    wait_until("the creation at b", || !set(&b, "doc").is_empty());
    append(&b, "doc", "b1", 11);
    wait_until("quiet", || {
        quiet(&sa, &sb) && set(&a, "doc") == set(&b, "doc")
    });
    let backup = tempfile::tempdir().expect("dir");
    let backup_path = backup.path().join("b");
    b.store().backup(&backup_path).expect("backup");
    // After the backup, b writes and a loads it; then b is lost and comes
    // back from the backup: its cursors and its own last write go back.
    append(&b, "doc", "b2", 12);
    append(&a, "doc", "a2", 13);
    wait_until("quiet", || {
        quiet(&sa, &sb) && set(&a, "doc") == set(&b, "doc")
    });
    let full = set(&a, "doc");
    drop(l);
    drop((sb, b));
    let (b, sb) = node(&backup_path, "b", with_repair("b"));
    assert!(set(&b, "doc").len() < full.len(), "the backup is behind");
    let _link = link(&sa, &sb);
    // b2 came to a from b, so a's outbox never sends it back; only the
    // digest exchange can show b lacks it.
    wait_until("repaired", || {
        set(&b, "doc") == full && set(&a, "doc") == full
    });
}

#[test]
fn a_sender_restored_from_a_backup_that_writes_again_is_taken_anew() {
    // Without anti-entropy: the cursors alone must see that b's inbox
    // cursor for a names ordinals a has since reused.
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let [(a, sa), (b, sb)] = pair_with_doc(da.path(), db.path(), options);
    let l = link(&sa, &sb);
    append(&a, "doc", "a1", 10);
    wait_until("quiet", || {
        quiet(&sa, &sb) && set(&a, "doc") == set(&b, "doc")
    });
    let backup = tempfile::tempdir().expect("dir");
    let restored = backup.path().join("a");
    a.store().backup(&restored).expect("backup");
    append(&a, "doc", "a2", 11);
    append(&a, "doc", "a3", 12);
    wait_until("quiet", || {
        quiet(&sa, &sb) && set(&a, "doc") == set(&b, "doc")
    });
    drop(l);
    drop((sa, a));
    // a comes back from the backup and writes before it reconnects: its
    // new operations take the ordinals a2 and a3 had.
    let (a, sa) = node(&restored, "a", options("a"));
    append(&a, "doc", "a4", 13);
    append(&a, "doc", "a5", 14);
    let _link = link(&sa, &sb);
    wait_until("b holds a4 and a5", || {
        let held: Vec<String> = stream_ops(b.store(), "doc", &Scope::global())
            .iter()
            .map(|o| o.action.id.to_string())
            .collect();
        held.contains(&"a4".to_string()) && held.contains(&"a5".to_string())
    });
}

/// A relay keeps the originator's signature: `a` signs what it writes,
/// `b` passes it on to `c`, and `c`, which trusts only `a`'s key, loads
/// all of it (it would refuse `b`'s forwarding without `a`'s signature as
/// unsigned). `b`'s own writes, signed by `b`, are refused by `c`.
#[test]
fn a_relay_forwards_the_originators_signature() {
    let dirs = [(); 3].map(|()| tempfile::tempdir().expect("dir"));
    let a_key = reactordb::SigningKey::from_seed_phrase("a");
    let b_key = reactordb::SigningKey::from_seed_phrase("b");
    let (a, sa) = node(dirs[0].path(), "a", options("a").signing_key(a_key.clone()));
    let (b, sb) = node(dirs[1].path(), "b", options("b").signing_key(b_key));
    let (c, sc) = node(dirs[2].path(), "c", options("c"));
    let trusts_a = || RemoteOptions::new().trusted_keys([a_key.public_key()]);
    sa.add_remote("b", RemoteOptions::new()).expect("remote");
    sb.add_remote("a", trusts_a()).expect("remote");
    sb.add_remote("c", RemoteOptions::new()).expect("remote");
    sc.add_remote("b", trusts_a()).expect("remote");
    a.create(id("doc"), create_input(LogModel::document_type()))
        .expect("submit")
        .written(WAIT)
        .expect("created");
    for i in 0..5u64 {
        append(&a, "doc", &format!("a{i}"), 100 + i);
    }
    let _ab = link(&sa, &sb);
    wait_until("b to hold a's operations", || {
        set(&b, "doc") == set(&a, "doc")
    });
    let from_a = set(&a, "doc");
    append(&b, "doc", "b0", 200);
    let _bc = link(&sb, &sc);
    wait_until("c to take all of b's feed", || {
        let last = b.store().last_ordinal().get();
        sb.remotes()
            .expect("remotes")
            .iter()
            .any(|r| r.name == "c" && r.outbox_cursor >= last)
    });
    // Everything a originated arrived with a's signature and loaded.
    assert_eq!(set(&c, "doc"), from_a);
    let letters = sc.dead_letters("b").expect("letters");
    assert_eq!(
        letters.len(),
        1,
        "only b's own write is refused: {letters:?}"
    );
    assert!(letters[0].reason.contains("not trusted"), "{letters:?}");
}
