//! The stateful targets: the reactor driven against an in-memory model of
//! counters, and the import line parser feeding a store.

use std::collections::BTreeMap;

use super::harness::{self, cause, rare, written, WAIT};
use crate::error::Error;
use crate::merge::check::{Bytes, Choices};
use crate::model::{Action, ActionId, ActionType, DocumentId, Scope};
use crate::store::ExportLine;
use crate::view::ConsistencyToken;

/// The model of one counter stream (independent of the merge code): the
/// amounts in effect in submission order, and those undone, latest undo
/// last. An undo cancels the latest amount in effect; a redo cancels the
/// latest undo, and its amount comes back at its place.
#[derive(Default)]
struct Counter {
    applied: Vec<(u64, i64)>,
    undone: Vec<(u64, i64)>,
}

impl Counter {
    fn value(&self) -> i64 {
        self.applied.iter().map(|(_, amount)| amount).sum()
    }

    /// `false` when there is nothing to undo (or redo).
    fn undo(&mut self, redo: bool) -> bool {
        let (from, to) = if redo {
            (&mut self.undone, &mut self.applied)
        } else {
            (&mut self.applied, &mut self.undone)
        };
        let Some(op) = from.pop() else {
            return false;
        };
        let at = to.partition_point(|(n, _)| *n < op.0);
        if redo {
            to.insert(at, op);
        } else {
            to.push(op);
        }
        true
    }
}

fn increment(id: String, scope: &Scope, input: &str) -> Action {
    Action::new(
        ActionId::new(id).expect("valid"),
        ActionType::new("INCREMENT").expect("valid"),
        scope.clone(),
        1,
        input.as_bytes().to_vec(),
    )
}

/// Execute (queued or on the caller's thread), undo, redo and reads on two
/// fresh counter documents, each checked against the model as it
/// returns; at the end every scope's value, every chain and every history.
pub fn fuzz_reactor(data: &[u8]) {
    harness::with_reactor(|reactor, input| {
        let mut choices = Bytes(data);
        let scopes = [Scope::global(), Scope::local()];
        let docs: Vec<DocumentId> = (0..2)
            .map(|k| DocumentId::new(format!("r{input}-{k}")).expect("valid"))
            .collect();
        let mut last = ConsistencyToken(crate::model::Ordinal(0));
        for doc in &docs {
            last = last.max(harness::create_counter(reactor, doc));
        }
        let mut model: BTreeMap<(usize, Scope), Counter> = BTreeMap::new();
        let mut next = 0u64;
        while !choices.0.is_empty() {
            let d = choices.below(2) as usize;
            let scope = scopes[choices.below(2) as usize].clone();
            match choices.below(10) {
                0..=5 => {
                    let queued = rare(&mut choices, 30);
                    let bad = rare(&mut choices, 8);
                    let mut actions = Vec::new();
                    let mut planned = Vec::new();
                    for _ in 0..=choices.below(3) {
                        let scope = scopes[choices.below(2) as usize].clone();
                        let amount = choices.below(11) as i64 - 5;
                        next += 1;
                        actions.push(increment(format!("a{next}"), &scope, &amount.to_string()));
                        planned.push((scope, (next, amount)));
                    }
                    if bad {
                        next += 1;
                        actions.push(increment(format!("a{next}"), &scope, "not a number"));
                    }
                    let result = if queued {
                        written(reactor.execute(docs[d].clone(), harness::main(), actions))
                    } else {
                        reactor.execute_and_wait(docs[d].clone(), harness::main(), actions, WAIT)
                    };
                    match result {
                        Ok(token) if !bad => {
                            last = last.max(token);
                            for (scope, op) in planned {
                                model.entry((d, scope)).or_default().applied.push(op);
                            }
                        }
                        Err(e) if bad && matches!(cause(&e), Error::InvalidAction { .. }) => {}
                        other => panic!("job (bad input: {bad}): {other:?}"),
                    }
                }
                6..=8 => {
                    let redo = rare(&mut choices, 35);
                    let counter = model.entry((d, scope.clone())).or_default();
                    let job = if redo {
                        reactor.redo(docs[d].clone(), harness::main(), scope.clone())
                    } else {
                        reactor.undo(docs[d].clone(), harness::main(), scope.clone())
                    };
                    match written(job) {
                        Ok(token) if counter.undo(redo) => last = last.max(token),
                        Err(e)
                            if matches!(cause(&e), Error::NothingToUndo { .. })
                                && !counter.undo(redo) => {}
                        other => panic!("undo (redo: {redo}): {other:?}"),
                    }
                }
                _ => check(reactor, &docs, d, &model, last),
            }
        }
        for d in 0..docs.len() {
            check(reactor, &docs, d, &model, last);
            harness::assert_document_sound(reactor.store(), &docs[d]);
        }
    });
}

/// Panics unless the view's values of document `d` are the model's.
fn check(
    reactor: &crate::reactor::Reactor,
    docs: &[DocumentId],
    d: usize,
    model: &BTreeMap<(usize, Scope), Counter>,
    last: ConsistencyToken,
) {
    let read = harness::counters(reactor, &docs[d], last).expect("read");
    let want: BTreeMap<Scope, Option<i64>> = model
        .iter()
        .filter(|((doc, _), c)| *doc == d && !(c.applied.is_empty() && c.undone.is_empty()))
        .map(|((_, scope), c)| (scope.clone(), Some(c.value())))
        .collect();
    assert_eq!(read, want, "document {}", docs[d]);
}

/// Each line of `data` through the export-line parser; what parses must
/// serialise back to a line that parses to the same thing, and is applied
/// to the process's store, which must accept it or refuse it with a typed
/// error and leave the stream verifying.
pub fn fuzz_import_line(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    harness::with_store(|store| {
        for line in text.lines() {
            let Ok(entry) = ExportLine::parse(line) else {
                continue;
            };
            let again = ExportLine::parse(&entry.to_json()).expect("a written line parses");
            assert_eq!(again, entry, "export line round trip");
            let unit = crate::model::SyncUnit::new(
                entry.document_id.clone(),
                entry.scope.clone(),
                entry.branch.clone(),
            );
            match entry.apply_to(store) {
                Ok(()) => {}
                Err(Error::Storage(e)) => panic!("storage failed on an import: {e}"),
                Err(Error::Corrupt { cf, what }) => {
                    panic!("import read back corrupt {what} in {cf}")
                }
                Err(Error::Poisoned) => panic!("an import poisoned the store"),
                Err(_) => {}
            }
            let report = store.verify(&unit).expect("verify");
            assert!(report.is_clean(), "{unit}: {report:?}");
        }
    });
}
