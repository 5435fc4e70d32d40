//! An adversarial peer: operations handed to `Reactor::load` with forged
//! ids, one id with two contents, undo and redo markers naming anything
//! (each other, themselves, nothing), huge indexes and skips, timestamps
//! past the bound, foreign scopes, documents and types. Each load must be
//! merged or refused with a typed error; whatever was merged must leave
//! every stream verifying and holding its effective history; the view
//! must read the document; and loading an accepted batch again must write
//! nothing.

use super::harness::{self, cause, rare, written};
use crate::error::Error;
use crate::merge::check::{Bytes, Choices};
use crate::merge::{marker_input, MAX_TIMESTAMP_MS};
use crate::model::{
    Action, ActionId, ActionType, Digest, DocumentId, DocumentType, Operation, OperationContext,
    OperationId, OperationWithContext, Ordinal, Scope, SyncUnit,
};
use crate::models::CounterModel;

fn digest(choices: &mut Bytes<'_>) -> Digest {
    let mut d = Digest::default();
    d.0[0] = choices.below(256) as u8;
    d.0[31] = choices.below(256) as u8;
    d
}

/// One operation the peer sends, every field picked by the fuzzer.
fn forge(choices: &mut Bytes<'_>, doc: &DocumentId, sent: &[OperationId]) -> OperationWithContext {
    let scope = match choices.below(10) {
        0 => Scope::document(),
        1 => Scope::local(),
        2 => Scope::new("custom").expect("valid"),
        _ => Scope::global(),
    };
    let action_id = ActionId::new(format!("p{}", choices.below(6))).expect("valid");
    let action_type = match choices.below(20) {
        0..=2 => crate::merge::ACTION_UNDO,
        3..=4 => crate::merge::ACTION_REDO,
        5 => "CREATE_DOCUMENT",
        6 => "DELETE_DOCUMENT",
        7..=8 => "NOT_A_COUNTER_ACTION",
        _ => "INCREMENT",
    };
    let input = match action_type {
        crate::merge::ACTION_UNDO | crate::merge::ACTION_REDO => {
            let target = if !sent.is_empty() && !rare(choices, 20) {
                sent[choices.below(sent.len() as u64) as usize]
            } else {
                OperationId([choices.below(256) as u8; 16])
            };
            marker_input(&target)
        }
        _ if rare(choices, 3) => b"{not json".to_vec(),
        _ => (choices.below(11) as i64 - 5).to_string().into_bytes(),
    };
    let timestamp = if rare(choices, 3) {
        MAX_TIMESTAMP_MS + 1 + choices.below(3)
    } else {
        choices.below(40)
    };
    let action = Action::new(
        action_id.clone(),
        ActionType::new(action_type).expect("valid"),
        if rare(choices, 3) {
            Scope::global()
        } else {
            scope.clone()
        },
        timestamp,
        input,
    );
    let document_id = if rare(choices, 3) {
        DocumentId::new("someone-else").expect("valid")
    } else {
        doc.clone()
    };
    let unit = SyncUnit::new(document_id.clone(), scope.clone(), harness::main());
    let id = if rare(choices, 3) {
        OperationId([choices.below(256) as u8; 16])
    } else {
        OperationId::derive(&unit, &action_id)
    };
    let content_hash = if rare(choices, 3) {
        digest(choices)
    } else {
        Operation::content_hash_of(&id, timestamp, &action)
    };
    let index = match choices.below(40) {
        0 => u64::MAX - choices.below(3),
        1 => 1 << 40,
        _ => choices.below(8),
    };
    let skip = match choices.below(40) {
        0 => index.saturating_add(1),
        1 => u64::MAX,
        2..=7 => choices.below(index.saturating_add(1).min(8)),
        _ => 0,
    };
    let document_type = if rare(choices, 3) {
        DocumentType::new("other/type").expect("valid")
    } else {
        CounterModel::document_type()
    };
    OperationWithContext {
        operation: Operation {
            id,
            index,
            skip,
            timestamp_utc_ms: timestamp,
            hash: digest(choices),
            state_hash: digest(choices),
            content_hash,
            action,
            error: None,
        },
        context: OperationContext {
            document_id,
            document_type,
            scope,
            branch: harness::main(),
            ordinal: Ordinal(choices.below(1000)),
        },
    }
}

/// Whether a failed load's error is one a peer may cause (a finding
/// otherwise: a panic, damage read back, a poisoned store, a hang).
fn acceptable(error: &Error) -> bool {
    !matches!(
        error,
        Error::WorkerPanicked
            | Error::Corrupt { .. }
            | Error::Poisoned
            | Error::Storage(_)
            | Error::WaitTimeout { .. }
            | Error::Shutdown
    )
}

/// Loads of forged batches into a fresh document, checked as the module
/// says.
pub fn fuzz_load(data: &[u8]) {
    harness::with_reactor(|reactor, input| {
        let mut choices = Bytes(data);
        let doc = DocumentId::new(format!("l{input}")).expect("valid");
        if !rare(&mut choices, 30) {
            harness::create_counter(reactor, &doc);
        }
        let mut sent: Vec<OperationId> = Vec::new();
        let mut last = reactor.store().last_ordinal();
        while !choices.0.is_empty() {
            let batch: Vec<OperationWithContext> = (0..=choices.below(4))
                .map(|_| {
                    let op = forge(&mut choices, &doc, &sent);
                    sent.push(op.operation.id);
                    op
                })
                .collect();
            match written(reactor.load(doc.clone(), harness::main(), batch.clone())) {
                Ok(token) => {
                    last = last.max(token.0);
                    // The same operations again: nothing new to write.
                    let before = reactor.store().last_ordinal();
                    let again = written(reactor.load(doc.clone(), harness::main(), batch));
                    assert!(again.is_ok(), "a repeated load failed: {again:?}");
                    assert_eq!(
                        reactor.store().last_ordinal(),
                        before,
                        "a repeated load wrote"
                    );
                }
                Err(e) => assert!(acceptable(cause(&e)), "load: {e:?}"),
            }
        }
        harness::assert_document_sound(reactor.store(), &doc);
        let token = crate::view::ConsistencyToken(last);
        match reactor
            .view()
            .get(&doc, &crate::view::ViewFilter::default(), Some(token))
        {
            Ok(_) => {}
            Err(e) => assert!(
                matches!(
                    e,
                    Error::DocumentNotFound { .. } | Error::DocumentDeleted { .. }
                ),
                "read after loads: {e:?}"
            ),
        }
    });
}
