//! `append_parts`: several streams in one atomic write.

use super::*;
use crate::model::{
    Action, ActionId, ActionType, Branch, Digest, DocumentId, DocumentType, NewOperation, Revision,
    Scope, SyncUnit,
};

fn unit(scope: Scope) -> SyncUnit {
    SyncUnit::new(DocumentId::new("d").expect("valid"), scope, Branch::main())
}

fn part(scope: Scope, revision: u64, ids: &[&str]) -> StreamAppend {
    let operations = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let action = Action::new(
                ActionId::new(*id).expect("valid"),
                ActionType::new("PUT").expect("valid"),
                scope.clone(),
                1,
                Vec::new(),
            );
            NewOperation::new(revision + i as u64, action, Digest::default())
        })
        .collect();
    StreamAppend {
        unit: unit(scope),
        document_type: DocumentType::new("t/x").expect("valid"),
        revision: Revision(revision),
        operations,
        order: LogOrder::Unknown,
        state: None,
    }
}

fn open() -> (tempfile::TempDir, OperationStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = OperationStore::open(
        dir.path(),
        StoreOptions::with_durability(Durability::Buffered),
    )
    .expect("open");
    (dir, store)
}

#[test]
fn a_stale_part_fails_the_whole_write() {
    let (_dir, store) = open();
    store
        .append_parts(vec![part(Scope::local(), 0, &["l0"])], Vec::new(), None)
        .expect("first");
    // The global part is fine, the local one stale: nothing is written.
    let err = store
        .append_parts(
            vec![
                part(Scope::global(), 0, &["g0"]),
                part(Scope::local(), 0, &["l1"]),
            ],
            Vec::new(),
            None,
        )
        .expect_err("stale");
    assert!(matches!(err, Error::RevisionMismatch { .. }), "{err:?}");
    assert_eq!(store.last_ordinal(), Ordinal(1));
    assert_eq!(store.head(&unit(Scope::global())).expect("head"), None);
}

#[test]
fn one_stream_in_two_parts_continues_and_replays_whole() {
    let (_dir, store) = open();
    let write = || {
        vec![
            part(Scope::global(), 0, &["g0", "g1"]),
            part(Scope::local(), 0, &["l0"]),
            part(Scope::global(), 2, &["g2"]),
        ]
    };
    let stored = store
        .append_parts(write(), Vec::new(), None)
        .expect("write");
    let order: Vec<_> = stored
        .iter()
        .map(|o| (o.operation.action.id.to_string(), o.context.ordinal.get()))
        .collect();
    assert_eq!(
        order,
        [
            ("g0".into(), 1),
            ("g1".into(), 2),
            ("l0".into(), 3),
            ("g2".into(), 4)
        ]
    );
    assert_eq!(
        store
            .head(&unit(Scope::global()))
            .expect("head")
            .map(|h| h.revision),
        Some(Revision(3))
    );
    assert!(store.verify_all().expect("verify").is_clean());
    // The same write again: an idempotent replay of every part.
    let again = store
        .append_parts(write(), Vec::new(), None)
        .expect("replay");
    assert_eq!(again.len(), 4);
    assert_eq!(store.last_ordinal(), Ordinal(4));
}
