//! The export line: one stored operation with its place, as a line of JSON
//! (`reactordb export` writes them, `reactordb import` reads them). The
//! line format and its parsing live here so the parser can be fuzzed;
//! applying a line is an ordinary [`OperationStore::apply`] at the
//! operation's index, so every rule of `apply` guards an import.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{Branch, DocumentId, DocumentType, NewOperation, Operation, Revision, Scope};
use crate::store::OperationStore;

/// One line of an export: a stream's operation, with its place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportLine {
    /// The document.
    pub document_id: DocumentId,
    /// Its type (the stream's head records it).
    pub document_type: DocumentType,
    /// The operation's scope.
    pub scope: Scope,
    /// The operation's branch.
    pub branch: Branch,
    /// The operation, as stored.
    pub operation: Operation,
}

impl ExportLine {
    /// Parses one line. The error says what is wrong with it (ids are
    /// validated as they are read, so a line that parses names a real
    /// stream).
    pub fn parse(line: &str) -> std::result::Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// The line as JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an export line always serialises")
    }

    /// Appends the operation to its stream at its own index: the store's
    /// revision guard, replay and validation rules apply as to any append.
    pub fn apply_to(self, store: &OperationStore) -> Result<()> {
        let index = self.operation.index;
        store.apply(
            &self.document_id,
            &self.document_type,
            &self.scope,
            &self.branch,
            Revision(index),
            |txn| {
                txn.add_operation(NewOperation::from(self.operation));
            },
        )?;
        Ok(())
    }
}
