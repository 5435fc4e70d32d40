//! An in-memory reference model of the Operation Store's append rules,
//! driven against the real store by the proptest in `tests/store_model.rs`
//! and by the fuzz target `fuzz/fuzz_targets/store_model.rs`.

use std::collections::HashSet;

use reactordb::{
    Action, ActionId, ActionType, Branch, Digest, DocumentId, DocumentType, Durability, Error,
    InvalidOperationReason, NewOperation, OperationFilter, OperationStore, Ordinal, Paging,
    Revision, Scope, StoreOptions, SyncUnit,
};

/// One append: to stream `stream % STREAMS`, at the stream's revision
/// shifted by `shift` (saturating at 0), of operations `(action id from a
/// pool of 8, skip)`.
#[derive(Clone, Debug)]
pub struct Append {
    pub stream: u8,
    pub shift: i8,
    pub ops: Vec<(u8, u8)>,
}

pub const STREAMS: usize = 3;

fn unit(stream: usize) -> SyncUnit {
    SyncUnit::new(
        DocumentId::new(format!("doc{}", stream % 2)).expect("valid"),
        Scope::new(if stream == 2 { "local" } else { "global" }).expect("valid"),
        Branch::main(),
    )
}

fn new_op(u: &SyncUnit, index: u64, action: u8, skip: u8) -> NewOperation {
    let mut op = NewOperation::new(
        index,
        Action::new(
            ActionId::new(format!("a{}", action % 8)).expect("valid"),
            ActionType::new("T").expect("valid"),
            u.scope.clone(),
            index,
            vec![action],
        ),
        Digest::of(&[action]),
    );
    op.skip = u64::from(skip % 4);
    op
}

/// Applies every command to a fresh store and to the model, asserting that
/// each outcome and the final contents agree.
pub fn check(commands: &[Append]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = OperationStore::open(
        dir.path(),
        StoreOptions::with_durability(Durability::Buffered),
    )
    .expect("open");
    let doc_type = DocumentType::new("model/doc").expect("valid");
    // Per stream: (action id, skip) at each index.
    let mut model: Vec<Vec<(u8, u64)>> = vec![Vec::new(); STREAMS];
    let mut ordinals = 0u64;

    for cmd in commands {
        let s = cmd.stream as usize % STREAMS;
        let u = unit(s);
        let len = model[s].len() as u64;
        let revision = len.saturating_add_signed(i64::from(cmd.shift));
        let ops: Vec<NewOperation> = cmd
            .ops
            .iter()
            .enumerate()
            .map(|(i, &(a, k))| new_op(&u, revision + i as u64, a, k))
            .collect();
        let result = store.apply(
            &u.document_id,
            &doc_type,
            &u.scope,
            &u.branch,
            Revision(revision),
            |txn| {
                txn.add_operations(ops.clone());
            },
        );

        // What the model expects.
        let mut ids = HashSet::new();
        let invalid = ops.iter().enumerate().find_map(|(pos, op)| {
            if op.skip > op.index {
                Some((pos, "skip"))
            } else if !ids.insert(op.action.id.clone()) {
                Some((pos, "dup"))
            } else {
                None
            }
        });
        if let Some((pos, what)) = invalid {
            match (&result, what) {
                (
                    Err(Error::InvalidOperation {
                        position,
                        reason: InvalidOperationReason::SkipOutOfRange { .. },
                    }),
                    "skip",
                )
                | (
                    Err(Error::InvalidOperation {
                        position,
                        reason: InvalidOperationReason::DuplicateActionInTxn,
                    }),
                    "dup",
                ) => {
                    assert_eq!(*position, pos)
                }
                other => panic!("expected invalid {what} at {pos}, got {other:?}"),
            }
            continue;
        }
        if revision == len {
            let stored = result.expect("append at the head succeeds");
            assert_eq!(stored.len(), ops.len());
            for (op, s_op) in ops.iter().zip(&stored) {
                ordinals += 1;
                assert_eq!(s_op.context.ordinal, Ordinal(ordinals));
                assert_eq!(s_op.operation.index, op.index);
                let a = op.action.input[0];
                model[s].push((a, op.skip));
            }
            continue;
        }
        let matches: Vec<bool> = ops
            .iter()
            .map(|op| {
                model[s]
                    .get(op.index as usize)
                    .is_some_and(|&(a, k)| a % 8 == op.action.input[0] % 8 && k == op.skip)
            })
            .collect();
        match result {
            Ok(replayed) => {
                assert!(
                    revision < len && !ops.is_empty() && matches.iter().all(|m| *m),
                    "unexpected replay"
                );
                assert_eq!(replayed.len(), ops.len());
            }
            Err(Error::DuplicateOperation { index, .. }) => {
                let first = matches
                    .iter()
                    .position(|m| *m)
                    .expect("a duplicate was named");
                assert!(revision < len && !matches.iter().all(|m| *m));
                assert_eq!(index, revision + first as u64);
            }
            Err(Error::RevisionMismatch {
                expected, actual, ..
            }) => {
                assert!(revision > len || ops.is_empty() || !matches.iter().any(|m| *m));
                assert_eq!((expected, actual), (len, revision));
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    for (s, stream) in model.iter().enumerate() {
        let u = unit(s);
        let page = store
            .get_since(&u, Revision(0), &OperationFilter::default(), Paging::all())
            .expect("scan");
        let got: Vec<(u8, u64)> = page
            .items
            .iter()
            .map(|o| (o.action.input[0] % 8, o.skip))
            .collect();
        let want: Vec<(u8, u64)> = stream.iter().map(|&(a, k)| (a % 8, k)).collect();
        assert_eq!(got, want);
    }
    assert_eq!(store.last_ordinal(), Ordinal(ordinals));
    assert!(store.verify_all().expect("verify").is_clean());
}
