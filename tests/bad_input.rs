//! The bad-input table (README, "Bad input"): each public entry point fed
//! each kind of invalid input it can receive returns its named error, and
//! nothing is written: every stream head and the last ordinal are the same
//! before and after. Opening with bad options leaves nothing on disk.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::reactor::{create_counter, create_input, id, main, WAIT};
use common::{append, op, unit};
use reactordb::{
    Action, ActionId, ActionType, Digest, DocumentId, DocumentType, Error, ExportLine, IdError,
    InvalidOperationReason, Operation, OperationFilter, OperationStore, OperationWithContext,
    Ordinal, Paging, Reactor, Revision, Scope, StoreOptions, ViewFilter, ViewOptions,
    MAX_ACTION_BYTES, MAX_ID_LEN, MAX_JOB_ACTIONS, MAX_LOAD_OPERATIONS,
};

/// Every head (stream, revision, last hash) and the last ordinal.
type Footprint = (Vec<(String, u64, Digest)>, Ordinal);

fn footprint(store: &OperationStore) -> Footprint {
    let heads = store
        .all_streams()
        .expect("streams")
        .into_iter()
        .map(|s| (s.unit.to_string(), s.revision.get(), s.head_hash))
        .collect();
    (heads, store.last_ordinal())
}

/// The error behind a failed job (jobs share theirs with the job table).
fn cause(error: Error) -> Arc<Error> {
    match error {
        Error::JobFailed { error, .. } => error,
        other => Arc::new(other),
    }
}

/// Runs `call`, which must fail; asserts nothing was written; returns the
/// error (unwrapped from `JobFailed`).
fn refused<T: std::fmt::Debug>(
    store: &OperationStore,
    call: impl FnOnce() -> reactordb::Result<T>,
) -> Arc<Error> {
    let before = footprint(store);
    let result = call();
    let error = cause(result.expect_err("the input must be refused"));
    assert_eq!(footprint(store), before, "a refused input wrote: {error}");
    error
}

fn reactor(dir: &Path) -> Reactor {
    let reactor = common::reactor::open(dir, 2);
    create_counter(&reactor, "doc");
    reactor
}

fn increment(action_id: &str, input: Vec<u8>) -> Action {
    Action::new(
        ActionId::new(action_id).expect("valid"),
        ActionType::new("INCREMENT").expect("valid"),
        Scope::global(),
        1,
        input,
    )
}

fn run(reactor: &Reactor, actions: Vec<Action>) -> reactordb::Result<reactordb::ConsistencyToken> {
    reactor.execute(id("doc"), main(), actions)?.written(WAIT)
}

fn is_empty_dir(path: &Path) -> bool {
    !path.exists() || std::fs::read_dir(path).expect("read dir").next().is_none()
}

// ---- ids ------------------------------------------------------------------

#[test]
fn ids_empty_too_long_or_with_control_characters_are_refused() {
    assert!(matches!(DocumentId::new(""), Err(IdError::Empty { .. })));
    let long = "x".repeat(MAX_ID_LEN + 1);
    assert!(matches!(
        DocumentId::new(&long),
        Err(IdError::TooLong { .. })
    ));
    assert!(DocumentId::new("x".repeat(MAX_ID_LEN)).is_ok());
    assert!(matches!(
        DocumentId::new("a\0b"),
        Err(IdError::ForbiddenCharacter { .. })
    ));
    assert!(matches!(
        Scope::new("a\nb"),
        Err(IdError::ForbiddenCharacter { .. })
    ));
    assert!(matches!(ActionType::new(""), Err(IdError::Empty { .. })));
    assert!(matches!(
        DocumentType::new(&long),
        Err(IdError::TooLong { .. })
    ));
}

// ---- opening ----------------------------------------------------------------

#[test]
fn bad_options_are_refused_before_anything_reaches_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let store = OperationStore::open(&path, StoreOptions::default().block_cache_bytes(10));
    assert!(matches!(
        store,
        Err(Error::InvalidOptions {
            option: "block_cache_bytes",
            ..
        })
    ));
    assert!(is_empty_dir(&path), "the store's bad options left files");
    let refused: [(&str, reactordb::ReactorBuilder); 4] = [
        ("workers", Reactor::builder(&path).workers(0)),
        ("queue_capacity", Reactor::builder(&path).queue_capacity(0)),
        (
            "snapshot_every",
            Reactor::builder(&path).view_options(ViewOptions::default().snapshot_every(0)),
        ),
        (
            "cached_stream_heads",
            Reactor::builder(&path).store_options(StoreOptions::default().cached_stream_heads(0)),
        ),
    ];
    for (name, builder) in refused {
        match builder.open() {
            Err(Error::InvalidOptions { option, .. }) => assert_eq!(option, name),
            other => panic!("{name}: {:?}", other.map(|_| ())),
        }
        assert!(is_empty_dir(&path), "{name}: bad options left files");
    }
}

// ---- OperationStore::apply ---------------------------------------------------

#[test]
fn apply_refuses_each_malformed_transaction_by_name_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::open(dir.path());
    let u = unit("doc", "global");
    common::append_ids(&store, &u, &["a", "b"]);

    let reason = |e: Arc<Error>| match &*e {
        Error::InvalidOperation { reason, .. } => reason.clone(),
        other => panic!("expected InvalidOperation, got {other:?}"),
    };
    // An index that is not revision + position.
    let e = refused(&store, || append(&store, &u, 2, vec![op(&u, 3, "c", 5)]));
    assert!(matches!(
        reason(e),
        InvalidOperationReason::NonConsecutiveIndex {
            expected: 2,
            found: 3
        }
    ));
    // An action in another scope than the transaction's.
    let mut other_scope = op(&u, 2, "c", 5);
    other_scope.action.scope = Scope::local();
    let e = refused(&store, || append(&store, &u, 2, vec![other_scope]));
    assert!(matches!(
        reason(e),
        InvalidOperationReason::ScopeMismatch { .. }
    ));
    // A skip past the stream's start.
    let mut skip = op(&u, 2, "c", 5);
    skip.skip = 3;
    let e = refused(&store, || append(&store, &u, 2, vec![skip]));
    assert!(matches!(
        reason(e),
        InvalidOperationReason::SkipOutOfRange { index: 2, skip: 3 }
    ));
    // One action id twice in a transaction.
    let e = refused(&store, || {
        append(&store, &u, 2, vec![op(&u, 2, "c", 5), op(&u, 3, "c", 6)])
    });
    assert!(matches!(
        reason(e),
        InvalidOperationReason::DuplicateActionInTxn
    ));
    // An operation past MAX_OPERATION_BYTES.
    let mut huge = op(&u, 2, "c", 5);
    huge.action.input = vec![7; reactordb::MAX_OPERATION_BYTES + 1];
    let e = refused(&store, || append(&store, &u, 2, vec![huge]));
    assert!(matches!(reason(e), InvalidOperationReason::TooLarge { .. }));
    // Another document type than the stream's.
    let e = refused(&store, || {
        store.apply(
            &u.document_id,
            &DocumentType::new("other/type").expect("valid"),
            &u.scope,
            &u.branch,
            Revision(2),
            |txn| {
                txn.add_operation(op(&u, 2, "c", 5));
            },
        )
    });
    assert!(matches!(*e, Error::DocumentTypeMismatch { .. }));
    // A stale revision with new operations.
    let e = refused(&store, || append(&store, &u, 1, vec![op(&u, 1, "c", 5)]));
    assert!(matches!(
        *e,
        Error::RevisionMismatch {
            expected: 2,
            actual: 1,
            ..
        }
    ));
}

#[test]
fn a_page_of_zero_items_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::open(dir.path());
    let u = unit("doc", "global");
    common::append_ids(&store, &u, &["a"]);
    let e = refused(&store, || {
        store.get_since(
            &u,
            Revision(0),
            &OperationFilter::default(),
            Paging::first(0),
        )
    });
    assert!(matches!(
        *e,
        Error::InvalidArgument {
            argument: "limit",
            ..
        }
    ));
    let e = refused(&store, || {
        store.get_since_ordinal(Ordinal(1), Paging::first(0))
    });
    assert!(matches!(
        *e,
        Error::InvalidArgument {
            argument: "limit",
            ..
        }
    ));
    // A huge limit is one page of everything.
    let all = store
        .get_since_ordinal(Ordinal(1), Paging::first(usize::MAX))
        .expect("page");
    assert_eq!(all.items.len(), 1);
}

// ---- Reactor::execute, create, undo ------------------------------------------

#[test]
fn execute_refuses_bad_jobs_by_name_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = reactor(dir.path());
    let store = reactor.store().clone();

    // Limits: checked at submission, so nothing is queued.
    let many: Vec<Action> = (0..=MAX_JOB_ACTIONS)
        .map(|i| increment(&format!("m{i}"), b"1".to_vec()))
        .collect();
    let e = refused(&store, || reactor.execute(id("doc"), main(), many.clone()));
    assert!(matches!(*e, Error::LimitExceeded { max, .. } if max == MAX_JOB_ACTIONS as u64));
    let e = refused(&store, || {
        reactor.execute_and_wait(id("doc"), main(), many, WAIT)
    });
    assert!(matches!(*e, Error::LimitExceeded { .. }));
    let big = increment("big", vec![b'1'; MAX_ACTION_BYTES + 1]);
    let e = refused(&store, || run(&reactor, vec![big]));
    assert!(matches!(*e, Error::LimitExceeded { max, .. } if max == MAX_ACTION_BYTES as u64));
    // A document that does not exist.
    let e = refused(&store, || {
        reactor
            .execute(id("nobody"), main(), vec![increment("x", b"1".to_vec())])?
            .written(WAIT)
    });
    assert!(matches!(*e, Error::DocumentNotFound { .. }));
    // An input the model refuses, after valid actions: the job writes none.
    let e = refused(&store, || {
        run(
            &reactor,
            vec![
                increment("ok", b"1".to_vec()),
                increment("bad", b"x".to_vec()),
            ],
        )
    });
    assert!(
        matches!(*e, Error::InvalidAction { ref action_id, .. } if action_id.as_str() == "bad")
    );
    // An action type the model does not know.
    let unknown = Action::new(
        ActionId::new("u").expect("valid"),
        ActionType::new("NO_SUCH_ACTION").expect("valid"),
        Scope::global(),
        1,
        Vec::new(),
    );
    let e = refused(&store, || run(&reactor, vec![unknown]));
    assert!(matches!(*e, Error::InvalidAction { .. }));
    // An undo marker among other actions (undo is a job of its own).
    let marker = Action::new(
        ActionId::new("m").expect("valid"),
        ActionType::new(reactordb::ACTION_UNDO).expect("valid"),
        Scope::global(),
        1,
        Vec::new(),
    );
    let e = refused(&store, || {
        run(&reactor, vec![increment("y", b"1".to_vec()), marker])
    });
    assert!(matches!(*e, Error::InvalidAction { .. }));
    // A model nobody registered.
    let mut input = create_input(DocumentType::new("no/such/model").expect("valid"));
    input.model_version = 1;
    let e = refused(&store, || reactor.create(id("new"), input));
    assert!(matches!(*e, Error::ModelNotFound { .. }));
    // Nothing to undo, and a structural operation.
    let e = refused(&store, || {
        reactor
            .undo(id("doc"), main(), Scope::global())?
            .written(WAIT)
    });
    assert!(matches!(*e, Error::NothingToUndo { .. }));
    let e = refused(&store, || {
        reactor
            .undo(id("doc"), main(), Scope::document())?
            .written(WAIT)
    });
    assert!(matches!(*e, Error::NotUndoable { .. }));
    // A read of a document that does not exist.
    let e = refused(&store, || {
        reactor
            .view()
            .get(&id("nobody"), &ViewFilter::default(), None)
    });
    assert!(matches!(*e, Error::DocumentNotFound { .. }));
}

// ---- Reactor::load -----------------------------------------------------------

/// A well-formed operation of `doc`'s global stream, as a peer sends it.
fn peer_op(doc: &str, action_id: &str, index: u64) -> OperationWithContext {
    let action = increment(action_id, b"1".to_vec());
    let unit = reactordb::SyncUnit::new(id(doc), Scope::global(), main());
    let op_id = reactordb::OperationId::derive(&unit, &action.id);
    OperationWithContext {
        operation: Operation {
            id: op_id,
            index,
            skip: 0,
            timestamp_utc_ms: 10 + index,
            hash: Digest::default(),
            state_hash: Digest::default(),
            content_hash: Operation::content_hash_of(&op_id, 10 + index, &action),
            action,
            error: None,
        },
        context: reactordb::OperationContext {
            document_id: id(doc),
            document_type: reactordb::CounterModel::document_type(),
            scope: Scope::global(),
            branch: main(),
            ordinal: Ordinal(1),
        },
    }
}

#[test]
fn load_refuses_foreign_forged_and_malformed_operations_by_name_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = reactor(dir.path());
    let store = reactor.store().clone();
    let load = |ops: Vec<OperationWithContext>| reactor.load(id("doc"), main(), ops)?.written(WAIT);
    let invalid = |e: Arc<Error>, what: &str| match &*e {
        Error::InvalidLoad { reason, .. } => assert!(reason.contains(what), "{reason}"),
        other => panic!("{what}: expected InvalidLoad, got {other:?}"),
    };
    // Each bad operation rides behind a good one: the whole load is refused.
    let good = || peer_op("doc", "good", 0);
    invalid(
        refused(&store, || load(vec![good(), peer_op("other", "x", 1)])),
        "belongs to",
    );
    let mut forged = peer_op("doc", "x", 1);
    forged.operation.id =
        reactordb::OperationId::derive(&unit("doc", "global"), &ActionId::new("y").expect("valid"));
    invalid(
        refused(&store, || load(vec![good(), forged])),
        "does not derive",
    );
    let mut tampered = peer_op("doc", "x", 1);
    tampered.operation.action.input = b"5".to_vec();
    invalid(
        refused(&store, || load(vec![good(), tampered])),
        "content hash",
    );
    let mut skip = peer_op("doc", "x", 1);
    skip.operation.skip = 2;
    invalid(
        refused(&store, || load(vec![good(), skip])),
        "reaches before",
    );
    let mut late = peer_op("doc", "x", 1);
    late.operation.timestamp_utc_ms = reactordb::MAX_TIMESTAMP_MS + 1;
    invalid(refused(&store, || load(vec![good(), late])), "is past");
    let mut scope = peer_op("doc", "x", 1);
    scope.context.scope = Scope::local();
    invalid(refused(&store, || load(vec![good(), scope])), "scope");
    let mut big = peer_op("doc", "x", 1);
    big.operation.action.input = vec![b'1'; MAX_ACTION_BYTES + 1];
    invalid(refused(&store, || load(vec![good(), big])), "bytes");
    // Too many operations: refused at submission.
    let many = vec![good(); MAX_LOAD_OPERATIONS + 1];
    let e = refused(&store, || reactor.load(id("doc"), main(), many));
    assert!(matches!(*e, Error::LimitExceeded { max, .. } if max == MAX_LOAD_OPERATIONS as u64));
    // The good one alone loads.
    load(vec![good()]).expect("a good operation loads");
}

// ---- import ------------------------------------------------------------------

#[test]
fn import_lines_that_do_not_parse_or_do_not_fit_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::open(dir.path());
    for line in ["", "not json", "{}", r#"{"document_id":"a\u0000b"}"#] {
        assert!(ExportLine::parse(line).is_err(), "{line:?} parsed");
    }
    let u = unit("doc", "global");
    let stored = common::append_ids(&store, &u, &["a"]);
    let mut line = ExportLine {
        document_id: u.document_id.clone(),
        document_type: common::doc_type(),
        scope: u.scope.clone(),
        branch: u.branch.clone(),
        operation: stored[0].operation.clone(),
    };
    line.operation.index = 5; // not the stream's next index
    line.operation.action.id = ActionId::new("b").expect("valid");
    let parsed = ExportLine::parse(&line.to_json()).expect("parses");
    let e = refused(&store, || parsed.apply_to(&store));
    assert!(matches!(
        *e,
        Error::RevisionMismatch {
            expected: 1,
            actual: 5,
            ..
        }
    ));
}
