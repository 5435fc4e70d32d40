//! Revision guard, idempotency cases and input validation.

mod common;

use common::*;
use reactordb::{Error, InvalidOperationReason, Revision};

#[test]
fn wrong_revision_fails_with_both_numbers_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let u = unit("doc", "global");
    append_ids(&store, &u, &["a", "b"]);
    let before = store.last_ordinal();
    let stats = store.commit_stats();

    for wrong in [0u64, 1, 3, 10] {
        // Fresh action ids: at a stale revision none of them is stored.
        let err = append(
            &store,
            &u,
            wrong,
            vec![op(&u, wrong, &format!("x{wrong}"), 5)],
        )
        .unwrap_err();
        match err {
            Error::RevisionMismatch {
                unit,
                expected,
                actual,
            } => {
                assert_eq!(unit, u);
                assert_eq!(expected, 2);
                assert_eq!(actual, wrong);
            }
            other => panic!("expected RevisionMismatch, got {other:?}"),
        }
        assert!(Error::RevisionMismatch {
            unit: u.clone(),
            expected: 2,
            actual: wrong
        }
        .is_retryable());
    }
    assert_eq!(revision(&store, &u), 2);
    assert_eq!(store.last_ordinal(), before);
    assert!(store.get(&u, 2).expect("get").is_none());
    assert_eq!(
        store.commit_stats(),
        stats,
        "a refused append commits nothing"
    );
}

#[test]
fn identical_replay_returns_the_stored_operations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let u = unit("doc", "global");
    let first =
        append(&store, &u, 0, vec![op(&u, 0, "a", 10), op(&u, 1, "b", 11)]).expect("append");
    append_ids(&store, &u, &["c"]);
    let stats = store.commit_stats();
    let replay =
        append(&store, &u, 0, vec![op(&u, 0, "a", 10), op(&u, 1, "b", 11)]).expect("replay");
    assert_eq!(replay, first, "same operations, hashes and ordinals");
    assert_eq!(revision(&store, &u), 3);
    assert_eq!(store.last_ordinal().get(), 3, "a replay writes nothing");
    assert_eq!(store.commit_stats(), stats, "a replay commits nothing");
}

#[test]
fn same_op_id_at_another_index_is_a_reshuffled_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let u = unit("doc", "global");
    let original = append_ids(&store, &u, &["a", "b"]);
    let mut moved = op(&u, 2, "a", 10);
    moved.skip = 2;
    let copy = append(&store, &u, 2, vec![moved]).expect("reshuffled copy is allowed");
    assert_eq!(copy[0].operation.id, original[0].operation.id);
    assert_eq!(copy[0].operation.index, 2);
    let copies = store.locate(&original[0].operation.id).expect("locate");
    assert_eq!(
        copies.iter().map(|l| (l.index, l.skip)).collect::<Vec<_>>(),
        vec![(0, 0), (2, 2)]
    );
    assert!(store.verify(&u).expect("verify").is_clean());
}

#[test]
fn partial_replay_fails_with_duplicate_operation_naming_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let u = unit("doc", "global");
    let stored = append_ids(&store, &u, &["a", "b"]);
    // b is stored at 1; c is new.
    let err = append(
        &store,
        &u,
        1,
        vec![op(&u, 1, "b", 1_001), op(&u, 2, "c", 1_002)],
    )
    .unwrap_err();
    match err {
        Error::DuplicateOperation { op_id, index, skip } => {
            assert_eq!(op_id, stored[1].operation.id);
            assert_eq!((index, skip), (1, 0));
        }
        other => panic!("expected DuplicateOperation, got {other:?}"),
    }
    assert!(!Error::DuplicateOperation {
        op_id: stored[1].operation.id,
        index: 1,
        skip: 0
    }
    .is_retryable());
    // a at 0 matches, x at 1 does not.
    let err = append(
        &store,
        &u,
        0,
        vec![op(&u, 0, "a", 1_000), op(&u, 1, "x", 9)],
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::DuplicateOperation { index: 0, .. }),
        "{err:?}"
    );
    assert_eq!(revision(&store, &u), 2);
}

#[test]
fn concurrent_conflict_is_a_revision_mismatch_not_a_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let u = unit("doc", "global");
    append_ids(&store, &u, &["a"]);
    // Two writers both read revision 1; the second loses.
    append(&store, &u, 1, vec![op(&u, 1, "mine", 5)]).expect("first writer");
    let err = append(&store, &u, 1, vec![op(&u, 1, "theirs", 5)]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::RevisionMismatch {
                expected: 2,
                actual: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[test]
fn invalid_transactions_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let u = unit("doc", "global");
    append_ids(&store, &u, &["a"]);

    let gap = append(&store, &u, 1, vec![op(&u, 1, "b", 1), op(&u, 3, "c", 1)]).unwrap_err();
    assert!(
        matches!(
            gap,
            Error::InvalidOperation {
                position: 1,
                reason: InvalidOperationReason::NonConsecutiveIndex {
                    expected: 2,
                    found: 3
                }
            }
        ),
        "{gap:?}"
    );

    let other_scope = unit("doc", "local");
    let wrong_scope = append(&store, &u, 1, vec![op(&other_scope, 1, "b", 1)]).unwrap_err();
    assert!(
        matches!(
            wrong_scope,
            Error::InvalidOperation {
                position: 0,
                reason: InvalidOperationReason::ScopeMismatch { .. }
            }
        ),
        "{wrong_scope:?}"
    );

    let mut far = op(&u, 1, "b", 1);
    far.skip = 2;
    let skip = append(&store, &u, 1, vec![far]).unwrap_err();
    assert!(
        matches!(
            skip,
            Error::InvalidOperation {
                reason: InvalidOperationReason::SkipOutOfRange { index: 1, skip: 2 },
                ..
            }
        ),
        "{skip:?}"
    );

    let twice = append(&store, &u, 1, vec![op(&u, 1, "b", 1), op(&u, 2, "b", 1)]).unwrap_err();
    assert!(
        matches!(
            twice,
            Error::InvalidOperation {
                position: 1,
                reason: InvalidOperationReason::DuplicateActionInTxn
            }
        ),
        "{twice:?}"
    );

    let other_type = reactordb::DocumentType::new("other/type").expect("valid");
    let mismatch = store
        .apply(
            &u.document_id,
            &other_type,
            &u.scope,
            &u.branch,
            Revision(1),
            |txn| {
                txn.add_operation(op(&u, 1, "b", 1));
            },
        )
        .unwrap_err();
    assert!(
        matches!(mismatch, Error::DocumentTypeMismatch { .. }),
        "{mismatch:?}"
    );

    assert_eq!(revision(&store, &u), 1);
    assert_eq!(store.last_ordinal().get(), 1);
}

#[test]
fn append_condition_on_another_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let target = unit("doc", "global");
    let read = unit("other", "global");
    append_ids(&store, &read, &["r1"]);

    let conditional = |required: u64, id: &str| {
        let rev = revision(&store, &target);
        store.apply(
            &target.document_id,
            &doc_type(),
            &target.scope,
            &target.branch,
            Revision(rev),
            |txn| {
                txn.add_operation(op(&target, rev, id, 1));
                txn.require_revision(read.clone(), Revision(required));
            },
        )
    };
    conditional(1, "ok").expect("read set unchanged");
    append_ids(&store, &read, &["r2"]);
    let err = conditional(1, "stale").unwrap_err();
    match &err {
        Error::AppendConditionFailed {
            condition,
            expected,
            actual,
        } => {
            assert_eq!(condition, &read);
            assert_eq!((*expected, *actual), (1, 2));
        }
        other => panic!("expected AppendConditionFailed, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(revision(&store, &target), 1);
    // A condition on the target stream itself is checked too.
    let err = store
        .apply(
            &target.document_id,
            &doc_type(),
            &target.scope,
            &target.branch,
            Revision(1),
            |txn| {
                txn.add_operation(op(&target, 1, "self", 1));
                txn.require_revision(target.clone(), Revision(7));
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::AppendConditionFailed {
                expected: 7,
                actual: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn ids_are_validated_at_construction() {
    use reactordb::{DocumentId, IdError, Scope};
    assert!(matches!(DocumentId::new(""), Err(IdError::Empty { .. })));
    assert!(matches!(
        DocumentId::new("a\0b"),
        Err(IdError::ForbiddenCharacter { position: 1, .. })
    ));
    assert!(matches!(
        Scope::new("x".repeat(256)),
        Err(IdError::TooLong { len: 256, .. })
    ));
    assert!(matches!(
        DocumentId::from_bytes(&[0xff, 0xfe]),
        Err(IdError::NotUtf8 { .. })
    ));
    assert_eq!(DocumentId::new("ok-1").expect("valid").as_str(), "ok-1");
    assert!(matches!(
        reactordb::OperationId::from_hex("zz"),
        Err(IdError::BadHex { .. })
    ));
}
