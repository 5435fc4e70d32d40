//! The merge through real reactors, one named test per way the earlier
//! merge diverged (issue "Convergent merge", cases 1–6): each exchange must
//! leave every replica with the same effective history, state and state
//! hash, and a bad load must write nothing.

mod common;

use common::docs::{effective, stream_ops};
use common::reactor::*;
use reactordb::{
    Action, ActionId, ActionType, ConsistencyToken, Digest, DocumentModel, DocumentType, Error,
    OperationWithContext, Reactor, ReduceError, Scope, SystemAction, ViewFilter,
};

/// Every operation of a document (all scopes), as a peer would send it.
fn everything(reactor: &Reactor, doc: &str) -> Vec<OperationWithContext> {
    operations_of(reactor, doc, |_| true)
}

fn load(reactor: &Reactor, doc: &str, ops: Vec<OperationWithContext>) {
    written(&reactor.load(id(doc), main(), ops).expect("submit"));
}

fn history(reactor: &Reactor, doc: &str, scope: &Scope) -> Vec<String> {
    effective(&stream_ops(reactor.store(), doc, scope))
        .iter()
        .map(|o| o.action.id.to_string())
        .collect()
}

/// (state, state hash) of a scope as the view serves it, fully caught up.
fn read(reactor: &Reactor, doc: &str, scope: &Scope) -> (Vec<u8>, Digest) {
    let token = ConsistencyToken(reactor.store().last_ordinal());
    let d = reactor
        .view()
        .get(&id(doc), &ViewFilter::default(), Some(token))
        .expect("get");
    let s = &d.scopes[scope];
    (s.state.clone(), s.state_hash)
}

fn replicas(n: usize) -> (Vec<tempfile::TempDir>, Vec<Reactor>) {
    let dirs: Vec<_> = (0..n)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let reactors = dirs.iter().map(|d| open(d.path(), 2)).collect();
    (dirs, reactors)
}

/// Creates `doc` (a log document) on the first replica and loads its
/// creation into the others.
fn create_everywhere(reactors: &[Reactor], doc: &str) {
    written(
        &reactors[0]
            .create(id(doc), create_input(LogModel::document_type()))
            .expect("submit"),
    );
    for r in &reactors[1..] {
        load(r, doc, everything(&reactors[0], doc));
    }
}

/// Creates `doc` as a log document on one replica only.
fn create_log(reactor: &Reactor, doc: &str) {
    written(
        &reactor
            .create(id(doc), create_input(LogModel::document_type()))
            .expect("submit"),
    );
}

/// Appends `APPEND aid` at `ts` to `reactor`'s global stream of `doc`
/// around the reactor (`OperationStore::apply`, stored as `doc_type`).
fn apply_around(reactor: &Reactor, doc_type: DocumentType, aid: &str, ts: u64) {
    let unit = reactordb::SyncUnit::new(id("doc"), Scope::global(), main());
    let revision = reactor
        .store()
        .head(&unit)
        .expect("head")
        .map_or(reactordb::Revision(0), |h| h.revision);
    reactor
        .store()
        .apply(
            &id("doc"),
            &doc_type,
            &Scope::global(),
            &main(),
            revision,
            |txn| {
                txn.add_operation(reactordb::NewOperation::new(
                    revision.get(),
                    action(aid, "APPEND", aid, ts),
                    Digest::default(),
                ));
            },
        )
        .expect("apply");
}

/// An `APPEND` of its own id in the `local` scope (never synced).
fn local_append(aid: &str, ts: u64) -> Action {
    Action::new(
        ActionId::new(aid).expect("valid"),
        ActionType::new("APPEND").expect("valid"),
        Scope::local(),
        ts,
        aid.as_bytes().to_vec(),
    )
}

/// Undoes the latest operation of the global scope; panics if it fails.
fn undo_global(reactor: &Reactor) {
    written(
        &reactor
            .undo(id("doc"), main(), Scope::global())
            .expect("submit"),
    );
}

/// Redoes the latest undo of the global scope; panics if it fails.
fn redo_global(reactor: &Reactor) {
    written(
        &reactor
            .redo(id("doc"), main(), Scope::global())
            .expect("submit"),
    );
}

fn append(reactor: &Reactor, doc: &str, aid: &str, ts: u64) {
    written(
        &reactor
            .execute(id(doc), main(), vec![action(aid, "APPEND", aid, ts)])
            .expect("submit"),
    );
}

/// Exchanges everything between every pair, then checks that all agree.
fn converge(reactors: &[Reactor], doc: &str, scopes: &[Scope]) -> Vec<Vec<String>> {
    for r in reactors {
        for q in reactors {
            if !std::ptr::eq(r, q) {
                load(q, doc, everything(r, doc));
            }
        }
    }
    let histories: Vec<Vec<String>> = scopes
        .iter()
        .map(|s| history(&reactors[0], doc, s))
        .collect();
    for (i, r) in reactors.iter().enumerate() {
        for (scope, expected) in scopes.iter().zip(&histories) {
            assert_eq!(&history(r, doc, scope), expected, "replica {i}, {scope}");
            assert_eq!(
                read(r, doc, scope),
                read(&reactors[0], doc, scope),
                "replica {i}, {scope}"
            );
        }
        assert!(r.store().verify_all().expect("verify").is_clean());
        assert!(reactordb::verify_histories(r.store())
            .expect("verify")
            .is_clean());
    }
    histories
}

#[test]
fn case1_an_undo_reaches_the_peer() {
    let (_dirs, rs) = replicas(2);
    create_everywhere(&rs, "doc");
    append(&rs[0], "doc", "x1", 10);
    undo_global(&rs[0]);
    let undo_id = history(&rs[0], "doc", &Scope::global())[0].clone();
    assert_eq!(
        history(&rs[0], "doc", &Scope::global()),
        std::slice::from_ref(&undo_id)
    );
    load(&rs[1], "doc", everything(&rs[0], "doc"));
    assert_eq!(history(&rs[1], "doc", &Scope::global()), [undo_id]);
    assert_eq!(read(&rs[1], "doc", &Scope::global()).0, b"[]");
    // A redo on the peer brings x1 back on both.
    redo_global(&rs[1]);
    let h = converge(&rs, "doc", &[Scope::global()]);
    assert_eq!(h[0][0], "x1");
    assert_eq!(read(&rs[0], "doc", &Scope::global()).0, br#"["x1"]"#);
}

#[test]
fn case2_a_moved_operation_keeps_what_it_hid() {
    let (_dirs, rs) = replicas(3);
    create_everywhere(&rs, "doc");
    for (aid, ts) in [("a1", 1), ("a2", 3), ("a3", 5)] {
        append(&rs[0], "doc", aid, ts);
    }
    for (aid, ts) in [("b1", 2), ("b2", 4), ("b3", 6)] {
        append(&rs[1], "doc", aid, ts);
    }
    let (from_a, from_b) = (everything(&rs[0], "doc"), everything(&rs[1], "doc"));
    load(&rs[0], "doc", from_b);
    load(&rs[1], "doc", from_a);
    // c1 sorts between a1 and b1: the first operation A must move is b1,
    // which carries the skip of A's earlier merge.
    append(&rs[2], "doc", "c1", 1);
    for r in &rs[..2] {
        load(r, "doc", everything(&rs[2], "doc"));
    }
    // Right after that load (a later merge that re-appends from an earlier
    // position could hide a wrong log), A and B agree, with no duplicate.
    let expected = ["a1", "c1", "b1", "a2", "b2", "a3", "b3"];
    assert_eq!(history(&rs[0], "doc", &Scope::global()), expected);
    assert_eq!(history(&rs[1], "doc", &Scope::global()), expected);
    let h = converge(&rs, "doc", &[Scope::global()]);
    assert_eq!(h[0], ["a1", "c1", "b1", "a2", "b2", "a3", "b3"]);
    let state = read(&rs[0], "doc", &Scope::global()).0;
    let items: Vec<String> = serde_json::from_slice(&state).expect("json");
    assert_eq!(items.len(), 7, "no duplicated action: {items:?}");
}

/// The operations of `doc` in `scope` on `from` whose action id is in
/// `ids`, the last copy of each (a re-appended copy, where there is one).
fn latest_copies(from: &Reactor, doc: &str, ids: &[&str]) -> Vec<OperationWithContext> {
    let mut picked: Vec<OperationWithContext> = Vec::new();
    for op in everything(from, doc) {
        if ids.contains(&op.operation.action.id.as_str()) {
            picked.retain(|p| p.operation.id != op.operation.id);
            picked.push(op);
        }
    }
    picked
}

fn header(r: &Reactor) -> reactordb::DocumentHeader {
    r.view()
        .get(
            &id("doc"),
            &ViewFilter::default(),
            Some(ConsistencyToken(r.store().last_ordinal())),
        )
        .expect("get")
        .header
}

#[test]
fn case3_structural_ties_order_the_same_everywhere() {
    let (_dirs, rs) = replicas(3);
    create_everywhere(&rs, "doc");
    // Far past the creation, so each operation is stamped with its
    // action's time: ADD and REMOVE tie.
    const T: u64 = 4_000_000_000_000;
    let system = |r: &Reactor, aid: &str, ts: u64, kind: SystemAction| {
        let a = reactordb::system_action(ActionId::new(aid).expect("valid"), ts, &kind);
        written(&r.execute(id("doc"), main(), vec![a]).expect("submit"));
    };
    let relation = || (id("other"), "child".to_owned());
    system(
        &rs[1],
        "rename",
        T - 1,
        SystemAction::SetName { name: "n".into() },
    );
    let (target, relationship_type) = relation();
    system(
        &rs[1],
        "a-remove",
        T,
        SystemAction::RemoveRelationship {
            target,
            relationship_type,
        },
    );
    let (target, relationship_type) = relation();
    system(
        &rs[0],
        "z-add",
        T,
        SystemAction::AddRelationship {
            target,
            relationship_type,
        },
    );
    // A receives the rename first (its ADD is re-appended further down its
    // log), then the REMOVE; C gets only the latest copies. The same
    // operations sit at different positions on each replica, so a
    // tie-break on position would order them differently.
    load(&rs[0], "doc", latest_copies(&rs[1], "doc", &["rename"]));
    load(&rs[0], "doc", latest_copies(&rs[1], "doc", &["a-remove"]));
    load(&rs[1], "doc", everything(&rs[0], "doc"));
    load(
        &rs[2],
        "doc",
        latest_copies(&rs[0], "doc", &["z-add", "rename"]),
    );
    load(&rs[2], "doc", latest_copies(&rs[1], "doc", &["a-remove"]));
    let expected = history(&rs[0], "doc", &Scope::document());
    assert_eq!(expected.len(), 4, "{expected:?}");
    assert_eq!(
        &expected[2..],
        ["a-remove", "z-add"],
        "action id breaks the tie"
    );
    for r in &rs[1..] {
        assert_eq!(history(r, "doc", &Scope::document()), expected);
        assert_eq!(header(r), header(&rs[0]));
    }
    assert!(header(&rs[0]).relationships.iter().next().is_some());
    converge(&rs, "doc", &[Scope::document()]);
}

#[test]
fn case4_local_order_is_the_order_peers_see() {
    let (_dirs, rs) = replicas(2);
    create_everywhere(&rs, "doc");
    // b1 then a1 at one timestamp: a1 is stamped past b1, so peers that
    // sort by the operations' own fields keep b1 first too.
    append(&rs[0], "doc", "b1", 100);
    append(&rs[0], "doc", "a1", 100);
    // An action stamped earlier than an operation already held sorts after
    // it, here and everywhere.
    append(&rs[1], "doc", "late", 500);
    load(&rs[0], "doc", everything(&rs[1], "doc"));
    append(&rs[0], "doc", "early", 1);
    assert_eq!(
        history(&rs[0], "doc", &Scope::global()),
        ["b1", "a1", "late", "early"]
    );
    let h = converge(&rs, "doc", &[Scope::global()]);
    assert_eq!(h[0], ["b1", "a1", "late", "early"]);
    let ops = stream_ops(rs[0].store(), "doc", &Scope::global());
    let early = ops
        .iter()
        .find(|o| o.action.id.as_str() == "early")
        .expect("there");
    assert_eq!(
        early.action.timestamp_utc_ms, 1,
        "the action keeps its time"
    );
    assert!(
        early.timestamp_utc_ms > 500,
        "the operation is stamped past"
    );
}

/// Version 2 of the log model: upgrading keeps the list.
struct LogV2;

impl DocumentModel for LogV2 {
    fn document_type(&self) -> DocumentType {
        LogModel::document_type()
    }
    fn version(&self) -> u32 {
        2
    }
    fn initial_state(&self, scope: &Scope) -> Vec<u8> {
        LogModel.initial_state(scope)
    }
    fn reduce(&self, scope: &Scope, state: &[u8], action: &Action) -> Result<Vec<u8>, ReduceError> {
        LogModel.reduce(scope, state, action)
    }
    fn upgrade(&self, _from: u32, _scope: &Scope, state: &[u8]) -> Result<Vec<u8>, ReduceError> {
        Ok(state.to_vec())
    }
}

#[test]
fn case5_an_upgrade_after_edits_stays_in_history_and_header() {
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let rs: Vec<Reactor> = dirs
        .iter()
        .map(|d| {
            Reactor::builder(d.path())
                .durability(reactordb::Durability::Buffered)
                .registry(registry())
                .register(LogV2)
                .clock(|| 1_000)
                .open()
                .expect("open")
        })
        .collect();
    create_everywhere(&rs, "doc");
    let system = |r: &Reactor, aid: &str, kind: SystemAction| {
        let a = reactordb::system_action(ActionId::new(aid).expect("valid"), 0, &kind);
        written(&r.execute(id("doc"), main(), vec![a]).expect("submit"));
    };
    system(
        &rs[0],
        "rename-a",
        SystemAction::SetName { name: "a".into() },
    );
    system(
        &rs[0],
        "upgrade",
        SystemAction::UpgradeDocument {
            from_version: 1,
            to_version: 2,
        },
    );
    system(
        &rs[1],
        "rename-b",
        SystemAction::SetName { name: "b".into() },
    );
    let h = converge(&rs, "doc", &[Scope::document()]);
    assert!(h[0].contains(&"upgrade".to_owned()), "{h:?}");
    assert_eq!(header(&rs[1]).model_version, 2);
}

fn refused(reactor: &Reactor, doc: &str, ops: Vec<OperationWithContext>) -> std::sync::Arc<Error> {
    let before = reactor.store().last_ordinal();
    let job = reactor.load(id(doc), main(), ops).expect("submit");
    let error = failure(&job);
    assert_eq!(reactor.store().last_ordinal(), before, "nothing written");
    error
}

#[test]
fn case6_a_load_validates_everything_before_it_writes() {
    let (_dirs, rs) = replicas(2);
    create_everywhere(&rs, "doc");
    append(&rs[0], "doc", "x1", 10);
    written(
        &rs[0]
            .execute(id("doc"), main(), vec![local_append("l1", 11)])
            .expect("submit"),
    );
    let good = everything(&rs[0], "doc");

    // A skip past the start of its stream (the old code panicked).
    let mut bad = good.clone();
    let last = bad.last_mut().expect("ops");
    last.operation.skip = last.operation.index + 5;
    assert!(matches!(
        *refused(&rs[1], "doc", bad),
        Error::InvalidLoad { .. }
    ));

    // The second scope's operation claims another scope than its action:
    // the first scope is not written either.
    let mut bad = good.clone();
    let local = bad
        .iter_mut()
        .find(|o| o.context.scope == Scope::local())
        .expect("local op");
    local.operation.action.scope = Scope::global();
    assert!(matches!(
        *refused(&rs[1], "doc", bad),
        Error::InvalidLoad { .. }
    ));

    // A timestamp past the bound (it would make the stream's clock
    // saturate), through load and through execute.
    let mut bad = good.clone();
    bad.last_mut().expect("ops").operation.timestamp_utc_ms = reactordb::MAX_TIMESTAMP_MS + 1;
    assert!(matches!(
        *refused(&rs[1], "doc", bad),
        Error::InvalidLoad { .. }
    ));
    let job = rs[0]
        .execute(
            id("doc"),
            main(),
            vec![action("late", "APPEND", "x", u64::MAX)],
        )
        .expect("submit");
    assert!(matches!(*failure(&job), Error::InvalidAction { .. }));

    // Content edited after it was hashed: the input, the action's
    // timestamp, the operation's timestamp (which moves it in the order).
    for edit in 0..3 {
        let mut bad = good.clone();
        let op = &mut bad.last_mut().expect("ops").operation;
        match edit {
            0 => op.action.input = b"forged".to_vec(),
            1 => op.action.timestamp_utc_ms += 1,
            _ => op.timestamp_utc_ms -= 1,
        }
        match &*refused(&rs[1], "doc", bad) {
            Error::InvalidLoad { reason, .. } => {
                assert!(reason.contains("content hash"), "{reason}")
            }
            other => panic!("edit {edit}: {other:?}"),
        }
    }

    // A forged id.
    let mut bad = good.clone();
    bad[0].operation.id = bad[1].operation.id;
    assert!(matches!(
        *refused(&rs[1], "doc", bad),
        Error::InvalidLoad { .. }
    ));

    // A creation of an unregistered type, through load and through execute.
    let unknown = reactordb::system_action(
        ActionId::new("c-unknown").expect("valid"),
        1,
        &SystemAction::CreateDocument(create_input(
            DocumentType::new("test/unregistered").expect("valid"),
        )),
    );
    let job = rs[1]
        .execute(id("other"), main(), vec![unknown.clone()])
        .expect("submit");
    assert!(matches!(*failure(&job), Error::ModelNotFound { .. }));
    let mut bad = good.clone();
    bad.truncate(1);
    bad[0].operation.action = unknown;
    bad[0].operation.id =
        reactordb::OperationId::derive(&bad[0].context.unit(), &bad[0].operation.action.id);
    bad[0].operation.content_hash = reactordb::Operation::content_hash_of(
        &bad[0].operation.id,
        bad[0].operation.timestamp_utc_ms,
        &bad[0].operation.action,
    );
    assert!(matches!(
        *refused(&rs[1], "doc", bad),
        Error::ModelNotFound { .. }
    ));

    // And the good load lands whole.
    load(&rs[1], "doc", good);
    assert_eq!(history(&rs[1], "doc", &Scope::global()), ["x1"]);
    assert_eq!(history(&rs[1], "doc", &Scope::local()), ["l1"]);
}

#[test]
fn structural_operations_are_not_undoable_and_empty_histories_say_so() {
    let (_dirs, rs) = replicas(1);
    create_everywhere(&rs, "doc");
    let job = rs[0]
        .undo(id("doc"), main(), Scope::global())
        .expect("submit");
    assert!(matches!(*failure(&job), Error::NothingToUndo { .. }));
    let job = rs[0]
        .undo(id("doc"), main(), Scope::document())
        .expect("submit");
    assert!(matches!(*failure(&job), Error::NotUndoable { .. }));
    let job = rs[0]
        .redo(id("doc"), main(), Scope::global())
        .expect("submit");
    assert!(matches!(*failure(&job), Error::NothingToUndo { .. }));
}

#[test]
fn a_job_over_two_scopes_writes_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = Reactor::builder(dir.path())
        .durability(reactordb::Durability::Buffered)
        .registry(registry())
        .workers(1)
        .max_retries(0)
        .open()
        .expect("open");
    let rs = [reactor];
    create_everywhere(&rs, "doc");
    let local = |aid: &str| local_append(aid, 5);
    written(
        &rs[0]
            .execute(id("doc"), main(), vec![local("l0")])
            .expect("submit"),
    );
    // A write around the reactor: its cached head of the local stream is
    // stale now, so the job's local part meets a revision conflict, and
    // with no retries the job fails. Its global part must not be written.
    rs[0]
        .store()
        .apply(
            &id("doc"),
            &LogModel::document_type(),
            &Scope::local(),
            &main(),
            reactordb::Revision(1),
            |txn| {
                txn.add_operation(reactordb::NewOperation::new(
                    1,
                    local("direct"),
                    Digest::default(),
                ));
            },
        )
        .expect("direct write");
    let before = rs[0].store().last_ordinal();
    let job = rs[0]
        .execute(
            id("doc"),
            main(),
            vec![action("g1", "APPEND", "g1", 5), local("l1")],
        )
        .expect("submit");
    assert!(matches!(*failure(&job), Error::RevisionMismatch { .. }));
    assert_eq!(rs[0].store().last_ordinal(), before, "nothing written");
    assert!(history(&rs[0], "doc", &Scope::global()).is_empty());
}

#[test]
fn an_undo_that_arrives_first_holds_its_target_for_a_later_redo() {
    let (_dirs, rs) = replicas(2);
    create_everywhere(&rs, "doc");
    append(&rs[0], "doc", "x1", 10);
    undo_global(&rs[0]);
    let undo = history(&rs[0], "doc", &Scope::global())[0].clone();
    // B gets the undo before its target, then the target: cancelled on
    // arrival, yet stored.
    load(&rs[1], "doc", latest_copies(&rs[0], "doc", &[&undo]));
    load(&rs[1], "doc", latest_copies(&rs[0], "doc", &["x1"]));
    assert_eq!(
        history(&rs[1], "doc", &Scope::global()),
        std::slice::from_ref(&undo)
    );
    // A redo from A: B must bring x1 back from its own log.
    redo_global(&rs[0]);
    let redo: Vec<String> = history(&rs[0], "doc", &Scope::global())
        .into_iter()
        .filter(|a| a != "x1")
        .collect();
    load(&rs[1], "doc", latest_copies(&rs[0], "doc", &[&redo[0]]));
    assert_eq!(
        history(&rs[1], "doc", &Scope::global()),
        history(&rs[0], "doc", &Scope::global())
    );
    assert_eq!(read(&rs[1], "doc", &Scope::global()).0, br#"["x1"]"#);
}

fn open_with_clock(dir: &std::path::Path, now: u64) -> Reactor {
    Reactor::builder(dir)
        .durability(reactordb::Durability::Buffered)
        .registry(registry())
        .workers(1)
        .clock(move || now)
        .open()
        .expect("open")
}

#[test]
fn two_creations_of_one_document_with_different_types_converge() {
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let rs = [
        open_with_clock(dirs[0].path(), 200),
        open_with_clock(dirs[1].path(), 100),
    ];
    create_log(&rs[0], "doc");
    append(&rs[0], "doc", "x1", 300);
    create_counter(&rs[1], "doc");
    // B's creation sorts first (t=100): both end with its type, and A's
    // streams, stored with A's type, still take B's operations.
    converge(&rs, "doc", &[Scope::document(), Scope::global()]);
    for r in &rs {
        assert_eq!(
            header(r).document_type,
            reactordb::CounterModel::document_type()
        );
    }
    // Both keep writing afterwards.
    written(
        &rs[0]
            .execute(id("doc"), main(), vec![increment("i1")])
            .expect("submit"),
    );
    converge(&rs, "doc", &[Scope::document(), Scope::global()]);
}

#[test]
fn a_creation_behind_early_operations_lands_even_in_a_run() {
    let (_dirs, rs) = replicas(2);
    create_log(&rs[0], "doc");
    let rename = reactordb::system_action(
        ActionId::new("rename").expect("valid"),
        1,
        &SystemAction::SetName { name: "n".into() },
    );
    written(
        &rs[0]
            .execute(id("doc"), main(), vec![rename])
            .expect("submit"),
    );
    // B holds the rename but not the creation.
    load(&rs[1], "doc", latest_copies(&rs[0], "doc", &["rename"]));
    let create = reactordb::system_action(
        ActionId::new("b-create").expect("valid"),
        1,
        &SystemAction::CreateDocument(create_input(LogModel::document_type())),
    );
    let jobs = rs[1]
        .submit_batch(vec![
            reactordb::BatchJob::new(id("doc"), main(), vec![action("early", "APPEND", "e", 1)]),
            reactordb::BatchJob::new(id("doc"), main(), vec![create]),
        ])
        .expect("submit");
    assert!(matches!(*failure(&jobs[0]), Error::DocumentNotFound { .. }));
    written(&jobs[1]);
    assert_eq!(
        history(&rs[1], "doc", &Scope::document()),
        ["b-create", "rename"]
    );
    converge(&rs, "doc", &[Scope::document()]);
}

#[test]
fn an_action_named_create_outside_the_document_scope_is_an_ordinary_one() {
    let (_dirs, rs) = replicas(2);
    create_everywhere(&rs, "doc");
    append(&rs[0], "doc", "x1", 10);
    // The log model takes any action type: in the global scope this one is
    // plain data, sorted by its time like any other.
    written(
        &rs[0]
            .execute(
                id("doc"),
                main(),
                vec![action("c-global", "CREATE_DOCUMENT", "c", 1)],
            )
            .expect("submit"),
    );
    let h = converge(&rs, "doc", &[Scope::global()]);
    assert_eq!(h[0].last().map(String::as_str), Some("c-global"));
}

#[test]
fn a_stream_clock_at_the_bound_refuses_local_writes_rather_than_tie() {
    let (_dirs, rs) = replicas(2);
    create_everywhere(&rs, "doc");
    append(&rs[0], "doc", "edge", reactordb::MAX_TIMESTAMP_MS);
    load(&rs[1], "doc", everything(&rs[0], "doc"));
    let before = rs[1].store().last_ordinal();
    let job = rs[1]
        .execute(id("doc"), main(), vec![action("next", "APPEND", "n", 5)])
        .expect("submit");
    assert!(matches!(*failure(&job), Error::InvalidAction { .. }));
    assert_eq!(rs[1].store().last_ordinal(), before);
}

#[test]
fn a_scope_whose_model_version_is_missing_is_parked_until_registered() {
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let with_v2 = |dir: &std::path::Path| {
        Reactor::builder(dir)
            .durability(reactordb::Durability::Buffered)
            .registry(registry())
            .register(LogV2)
            .workers(1)
            .open()
            .expect("open")
    };
    let a = with_v2(dirs[0].path());
    let b = open(dirs[1].path(), 1); // knows the log model at version 1 only
    let rs = [a, b];
    create_everywhere(&rs, "doc");
    append(&rs[0], "doc", "x1", 10);
    let upgrade = SystemAction::UpgradeDocument {
        from_version: 1,
        to_version: 2,
    };
    let a_up = reactordb::system_action(ActionId::new("up-doc").expect("valid"), 11, &upgrade);
    written(
        &rs[0]
            .execute(id("doc"), main(), vec![a_up])
            .expect("submit"),
    );
    let global_up = Action::new(
        ActionId::new("up-global").expect("valid"),
        ActionType::new("UPGRADE_DOCUMENT").expect("valid"),
        Scope::global(),
        12,
        br#"{"from_version":1,"to_version":2}"#.to_vec(),
    );
    written(
        &rs[0]
            .execute(id("doc"), main(), vec![global_up])
            .expect("submit"),
    );
    append(&rs[0], "doc", "x2", 13);

    // B cannot reduce version 2: the load still lands, the scope parked.
    load(&rs[1], "doc", everything(&rs[0], "doc"));
    assert_eq!(
        history(&rs[1], "doc", &Scope::global()),
        history(&rs[0], "doc", &Scope::global())
    );
    let token = ConsistencyToken(rs[1].store().last_ordinal());
    let parked = rs[1]
        .view()
        .get(&id("doc"), &ViewFilter::default(), Some(token));
    assert!(
        matches!(parked, Err(Error::ModelNotFound { version: 2, .. })),
        "{parked:?}"
    );
    // Registered (here: reopened with version 2), the scope reads as A's.
    let [a, b] = rs;
    drop(b);
    let b = with_v2(dirs[1].path());
    assert_eq!(
        read(&b, "doc", &Scope::global()),
        read(&a, "doc", &Scope::global())
    );
    assert!(reactordb::verify_histories(b.store())
        .expect("verify")
        .is_clean());
}

#[test]
fn scopes_that_arrive_before_their_creation_are_parked_until_it_lands() {
    // A peer's global and local operations arrive before the document
    // scope (another sync order): they are stored, not refused, and once
    // the creation arrives the replicas agree.
    let (_dirs, rs) = replicas(2);
    create_log(&rs[0], "doc");
    append(&rs[0], "doc", "x1", 10);
    written(
        &rs[0]
            .execute(id("doc"), main(), vec![local_append("l1", 11)])
            .expect("submit"),
    );
    let not_document = operations_of(&rs[0], "doc", |s| *s != Scope::document());
    assert_eq!(not_document.len(), 2);
    load(&rs[1], "doc", not_document);
    assert_eq!(history(&rs[1], "doc", &Scope::global()), ["x1"]);
    let early = rs[1]
        .view()
        .get(
            &id("doc"),
            &ViewFilter::default(),
            Some(ConsistencyToken(rs[1].store().last_ordinal())),
        )
        .unwrap_err();
    assert!(matches!(early, Error::DocumentNotFound { .. }), "{early:?}");
    let document = operations_of(&rs[0], "doc", |s| *s == Scope::document());
    load(&rs[1], "doc", document);
    converge(
        &rs,
        "doc",
        &[Scope::document(), Scope::global(), Scope::local()],
    );
    // And the parked scope takes local writes on the reduced state.
    append(&rs[1], "doc", "x2", 20);
    converge(&rs, "doc", &[Scope::global()]);
}

/// A: the counter type created at t=200 (sorts second). B: the log type
/// created at t=100 (wins), then `b1` (an `APPEND`, which the counter model
/// refuses) at t=300.
fn two_creations() -> (Vec<tempfile::TempDir>, [Reactor; 2]) {
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let rs = [
        open_with_clock(dirs[0].path(), 200),
        open_with_clock(dirs[1].path(), 100),
    ];
    create_counter(&rs[0], "doc");
    create_log(&rs[1], "doc");
    append(&rs[1], "doc", "b1", 300);
    (dirs, rs)
}

#[test]
fn an_operation_refused_under_the_losing_creation_is_reduced_again_when_the_winner_lands() {
    let (_dirs, rs) = two_creations();
    // A gets B's append before B's creation: under A's counter type it is
    // refused (recorded with its error).
    load(
        &rs[0],
        "doc",
        operations_of(&rs[1], "doc", |s| *s == Scope::global()),
    );
    let refused = stream_ops(rs[0].store(), "doc", &Scope::global());
    assert!(refused.iter().all(|o| o.error.is_some()), "{refused:?}");
    // B's creation wins: the append counts on A as on B.
    load(
        &rs[0],
        "doc",
        operations_of(&rs[1], "doc", |s| *s == Scope::document()),
    );
    converge(&rs, "doc", &[Scope::document(), Scope::global()]);
    assert_eq!(read(&rs[0], "doc", &Scope::global()).0, br#"["b1"]"#);
}

#[test]
fn a_load_that_switches_creation_never_reduces_on_a_stale_cached_head() {
    let (_dirs, rs) = two_creations();
    // A writes under its own creation first, so it caches its global head
    // (counter state).
    written(
        &rs[0]
            .execute(id("doc"), main(), vec![action("i0", "INCREMENT", "", 250)])
            .expect("submit"),
    );
    // Then B's creation and append arrive in one load: the append sorts
    // last, after A's head, and must reduce under the log model.
    load(&rs[0], "doc", everything(&rs[1], "doc"));
    converge(&rs, "doc", &[Scope::document(), Scope::global()]);
    assert_eq!(read(&rs[0], "doc", &Scope::global()).0, br#"["","b1"]"#);
}

#[test]
fn a_log_written_around_the_reactor_is_planned_whole_by_its_next_merge() {
    let (_dirs, rs) = replicas(2);
    create_everywhere(&rs, "doc");
    append(&rs[0], "doc", "x1", 10);
    append(&rs[0], "doc", "x2", 20);
    load(&rs[1], "doc", everything(&rs[0], "doc"));
    // Around the reactor: `y` (t=15) appended at A's head, out of order.
    let unit = reactordb::SyncUnit::new(id("doc"), Scope::global(), main());
    let head = rs[0].store().head(&unit).expect("head").expect("stream");
    assert!(head.in_merge_order);
    apply_around(&rs[0], LogModel::document_type(), "y", 15);
    let head = rs[0].store().head(&unit).expect("head").expect("stream");
    assert!(!head.in_merge_order);
    assert!(!reactordb::verify_histories(rs[0].store())
        .expect("verify")
        .is_clean());
    // B's next operation sorts last; loading it into A is A's first merge
    // since: it plans from the whole log and puts `y` in its place.
    append(&rs[1], "doc", "z", 30);
    load(&rs[0], "doc", everything(&rs[1], "doc"));
    assert_eq!(
        history(&rs[0], "doc", &Scope::global()),
        ["x1", "y", "x2", "z"]
    );
    let head = rs[0].store().head(&unit).expect("head").expect("stream");
    assert!(head.in_merge_order);
    converge(&rs, "doc", &[Scope::global()]);
}

#[test]
fn a_local_creation_reduces_the_scopes_parked_before_it() {
    // B holds A's global operations, parked (no creation), then creates the
    // document itself: the parked operations are reduced under it, with
    // state hashes, like any others.
    let (_dirs, rs) = replicas(2);
    create_log(&rs[0], "doc");
    append(&rs[0], "doc", "x1", 10);
    load(
        &rs[1],
        "doc",
        operations_of(&rs[0], "doc", |s| *s == Scope::global()),
    );
    let parked = stream_ops(rs[1].store(), "doc", &Scope::global());
    assert!(parked.iter().all(|o| o.state_hash == Digest::default()));
    create_log(&rs[1], "doc");
    let reduced = effective(&stream_ops(rs[1].store(), "doc", &Scope::global()))
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(reduced.len(), 1);
    assert_eq!(
        reduced[0].state_hash,
        read(&rs[1], "doc", &Scope::global()).1
    );
    converge(&rs, "doc", &[Scope::document(), Scope::global()]);
}

#[test]
fn a_creation_change_puts_a_log_written_around_the_reactor_in_order() {
    let (_dirs, rs) = two_creations();
    // A: two increments, then one between them written around the reactor.
    for (aid, ts) in [("i0", 250), ("i2", 260)] {
        written(
            &rs[0]
                .execute(id("doc"), main(), vec![action(aid, "INCREMENT", "", ts)])
                .expect("submit"),
        );
    }
    apply_around(&rs[0], reactordb::CounterModel::document_type(), "i1", 255);
    // B's creation wins: A's global scope is reduced again, and put in
    // merge order on the way.
    load(
        &rs[0],
        "doc",
        operations_of(&rs[1], "doc", |s| *s == Scope::document()),
    );
    assert_eq!(history(&rs[0], "doc", &Scope::global()), ["i0", "i1", "i2"]);
    assert!(reactordb::verify_histories(rs[0].store())
        .expect("verify")
        .is_clean());
    converge(&rs, "doc", &[Scope::document(), Scope::global()]);
}

#[test]
fn snapshots_written_as_a_creation_change_drops_the_old_ones_chain_from_nothing() {
    // Every operation snapshotted: the batch that drops the losing
    // creation's snapshots writes new ones right after; they chain from
    // zero, and verify stays clean.
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let open_snapshotting = |dir: &std::path::Path, now: u64| {
        Reactor::builder(dir)
            .durability(reactordb::Durability::Buffered)
            .registry(registry())
            .workers(1)
            .clock(move || now)
            .view_options(reactordb::ViewOptions::default().snapshot_every(1))
            .open()
            .expect("open")
    };
    let rs = [
        open_snapshotting(dirs[0].path(), 200),
        open_snapshotting(dirs[1].path(), 100),
    ];
    create_counter(&rs[0], "doc");
    for (aid, ts) in [("i0", 250), ("i1", 260)] {
        written(
            &rs[0]
                .execute(id("doc"), main(), vec![action(aid, "INCREMENT", "", ts)])
                .expect("submit"),
        );
    }
    create_log(&rs[1], "doc");
    converge(&rs, "doc", &[Scope::document(), Scope::global()]);
    for r in &rs {
        let report = reactordb::verify_snapshots(r.store()).expect("verify");
        assert!(report.first_broken.is_none(), "{report:?}");
        assert!(report.snapshots_checked > 0);
    }
}
