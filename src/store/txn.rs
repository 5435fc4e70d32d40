//! The transaction handed to `apply`'s closure, and the checks its
//! operations must pass before anything is locked or written.

use std::collections::HashSet;

use crate::error::{Error, InvalidOperationReason, Result};
use crate::model::{NewOperation, Revision, Scope, SyncUnit};

use super::Durability;

/// Collects what one `apply` writes to its stream, and the read set it
/// depends on. Built inside the closure passed to
/// [`OperationStore::apply`](crate::OperationStore::apply).
#[derive(Debug)]
pub struct AtomicTxn {
    unit: SyncUnit,
    revision: Revision,
    operations: Vec<NewOperation>,
    conditions: Vec<(SyncUnit, Revision)>,
    durability: Option<Durability>,
}

/// What a transaction asks for: its operations, its read set and its
/// durability override.
pub(crate) type TxnParts = (
    Vec<NewOperation>,
    Vec<(SyncUnit, Revision)>,
    Option<Durability>,
);

impl AtomicTxn {
    pub(crate) fn new(unit: SyncUnit, revision: Revision) -> Self {
        Self {
            unit,
            revision,
            operations: Vec::new(),
            conditions: Vec::new(),
            durability: None,
        }
    }

    /// The stream this transaction appends to.
    pub fn unit(&self) -> &SyncUnit {
        &self.unit
    }

    /// The index the first added operation must have.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The index the next added operation must have.
    pub fn next_index(&self) -> u64 {
        self.revision.get() + self.operations.len() as u64
    }

    /// Appends one operation. Its index must be [`next_index`](Self::next_index)
    /// and its action's scope the transaction's; `apply` refuses the whole
    /// transaction otherwise.
    pub fn add_operation(&mut self, operation: NewOperation) -> &mut Self {
        self.operations.push(operation);
        self
    }

    /// Appends several operations, in order.
    pub fn add_operations(
        &mut self,
        operations: impl IntoIterator<Item = NewOperation>,
    ) -> &mut Self {
        self.operations.extend(operations);
        self
    }

    /// Makes the append conditional on another stream being at `revision`
    /// (a multi-stream read set); if it moved, `apply` fails with
    /// [`Error::AppendConditionFailed`] and writes nothing.
    pub fn require_revision(&mut self, unit: SyncUnit, revision: Revision) -> &mut Self {
        self.conditions.push((unit, revision));
        self
    }

    /// Acknowledges this append with `durability` instead of the store's
    /// (per transaction, as in redb). A `Synced` append in a `Buffered`
    /// store shares its fsync with the group it commits in; a `Buffered`
    /// one in a `Synced` store does not wait to gather a group, and its
    /// write has no fsync unless it shares a group with a synced append
    /// (one group commits at a time, so it may still queue behind a
    /// group being synced).
    pub fn set_durability(&mut self, durability: Durability) -> &mut Self {
        self.durability = Some(durability);
        self
    }

    pub(crate) fn into_parts(self) -> TxnParts {
        (self.operations, self.conditions, self.durability)
    }
}

/// Checks that `operations` can be appended to a stream of `scope` at
/// `revision`: consecutive indexes from `revision`, the stream's scope, a
/// skip that stays inside the stream, distinct action ids.
pub(crate) fn validate(
    scope: &Scope,
    revision: Revision,
    operations: &[NewOperation],
) -> Result<()> {
    // A single operation cannot repeat an action id: no set to build.
    let mut seen = HashSet::with_capacity(if operations.len() > 1 {
        operations.len()
    } else {
        0
    });
    for (position, op) in operations.iter().enumerate() {
        let invalid = |reason| Error::InvalidOperation { position, reason };
        let expected = revision.get() + position as u64;
        if op.index != expected {
            return Err(invalid(InvalidOperationReason::NonConsecutiveIndex {
                expected,
                found: op.index,
            }));
        }
        if &op.action.scope != scope {
            return Err(invalid(InvalidOperationReason::ScopeMismatch {
                expected: scope.clone(),
                found: op.action.scope.clone(),
            }));
        }
        if op.skip > op.index {
            return Err(invalid(InvalidOperationReason::SkipOutOfRange {
                index: op.index,
                skip: op.skip,
            }));
        }
        if operations.len() > 1 && !seen.insert(&op.action.id) {
            return Err(invalid(InvalidOperationReason::DuplicateActionInTxn));
        }
    }
    Ok(())
}
