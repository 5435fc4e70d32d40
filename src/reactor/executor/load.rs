//! Loading a peer's operations into a document: every operation validated,
//! every scope planned and reduced (the `document` scope first: its header
//! decides how the others reduce), then every scope written in one atomic
//! store write, or nothing.

use std::collections::BTreeMap;

use super::local::ACTION_CREATE;
use super::merged::{creation_of, header_of};
use super::stored_log::StoredLog;
use super::Executor;
use crate::error::{Error, Result};
use crate::keys;
use crate::merge;
use crate::model::{
    Branch, DocumentId, DocumentType, Operation, OperationId, OperationWithContext, Ordinal, Scope,
    SyncUnit,
};
use crate::view::ConsistencyToken;

/// A load's operations, by scope.
type ByScope = BTreeMap<Scope, Vec<Operation>>;

impl Executor {
    /// Merges operations from a peer into a document: all validated, every
    /// scope planned, then written.
    pub(crate) fn load(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
        operations: &[OperationWithContext],
    ) -> super::Outcome {
        let _span = tracing::debug_span!(
            "reactordb.load",
            document = %document_id,
            branch = %branch,
            operations = operations.len()
        )
        .entered();
        self.with_retries(document_id, || {
            let result = self.try_load(document_id, branch, operations);
            if result.is_err() {
                self.forget_document(document_id);
            }
            result
        })
    }

    fn try_load(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
        operations: &[OperationWithContext],
    ) -> Result<ConsistencyToken> {
        let (by_scope, incoming_type) = self.validate_load(document_id, branch, operations)?;
        let (doc_head, mut header) = self.header(document_id, branch)?;
        let Some(mut document_type) = header
            .as_ref()
            .map(|h| h.document_type.clone())
            .or(incoming_type)
        else {
            return Ok(ConsistencyToken(Ordinal(0))); // nothing to load
        };
        let mut prepared = Vec::new();
        // The document scope first: it may create the document, and its
        // header says how the other scopes reduce.
        let document = Scope::document();
        let mut scopes: Vec<(&Scope, &Vec<Operation>)> = by_scope.iter().collect();
        scopes.sort_by_key(|(scope, _)| **scope != document);
        let mut header_changed = false;
        for (scope, incoming) in &scopes {
            let unit = SyncUnit::new(document_id.clone(), (*scope).clone(), branch.clone());
            let log = StoredLog::open(&self.store, &unit)?;
            let mut plan = log.plan(incoming)?;
            if header_changed {
                plan = merge::plan_again(&log, plan)?;
            }
            let Some(plan) = plan else { continue };
            let p = self.prepare_plan(header.as_deref(), &document_type, plan, &log, true)?;
            if **scope == document {
                let merged = header_of(&p);
                header_changed = creation_of(merged.as_deref()) != creation_of(header.as_deref());
                header = merged;
                if let Some(h) = &header {
                    document_type = h.document_type.clone();
                }
                if header_changed {
                    // The other scopes reduce under the new creation: no
                    // cached head of theirs may serve as a base.
                    self.forget_document(document_id);
                }
            }
            prepared.push(p);
        }
        if header_changed {
            let loaded: Vec<&Scope> = scopes.iter().map(|(scope, _)| *scope).collect();
            prepared.extend(self.reduce_again(
                document_id,
                branch,
                header.as_deref(),
                &document_type,
                &loaded,
            )?);
        }
        let last = self.write_prepared(prepared, None)?;
        if header_changed {
            self.forget_document(document_id);
        } else if !by_scope.contains_key(&document) {
            // The document scope was read, not written: its head stays
            // true, and keeping it spares the next load of this document a
            // fold of its creation (this job holds the document, so no
            // other write to it can come between).
            let unit = SyncUnit::new(document_id.clone(), document, branch.clone());
            self.heads.lock().put(keys::unit_key(&unit), doc_head);
        }
        Ok(ConsistencyToken(last))
    }

    /// Checks every operation of a load before anything is planned: it
    /// belongs to this document and branch, its scope agrees with its
    /// action's, its id derives from its stream and action id, its content
    /// matches the content hash it carries, its skip
    /// stays inside its stream, its timestamp is within bounds, and a
    /// creation names a registered model. Groups the operations by scope.
    fn validate_load(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
        operations: &[OperationWithContext],
    ) -> Result<(ByScope, Option<DocumentType>)> {
        let mut by_scope = ByScope::new();
        let mut incoming_type: Option<DocumentType> = None;
        for item in operations {
            let (op, context) = (&item.operation, &item.context);
            let invalid = |reason: String| Error::InvalidLoad {
                action_id: op.action.id.clone(),
                reason,
            };
            if &context.document_id != document_id || &context.branch != branch {
                return Err(invalid(format!(
                    "it belongs to {} on {}",
                    context.document_id, context.branch
                )));
            }
            if context.scope != op.action.scope {
                return Err(invalid(format!(
                    "it is in scope {} but its action in {}",
                    context.scope, op.action.scope
                )));
            }
            let bytes = crate::limits::action_bytes(&op.action);
            if bytes > crate::limits::MAX_ACTION_BYTES {
                return Err(invalid(format!(
                    "its input and context take {bytes} bytes, more than {}",
                    crate::limits::MAX_ACTION_BYTES
                )));
            }
            if op.timestamp_utc_ms > merge::MAX_TIMESTAMP_MS {
                return Err(invalid(format!(
                    "timestamp {} is past {}",
                    op.timestamp_utc_ms,
                    merge::MAX_TIMESTAMP_MS
                )));
            }
            if op.skip > op.index {
                return Err(invalid(format!(
                    "skip {} reaches before the stream (index {})",
                    op.skip, op.index
                )));
            }
            if op.id != OperationId::derive(&context.unit(), &op.action.id) {
                return Err(invalid(
                    "its id does not derive from its stream and action".into(),
                ));
            }
            if !op.content_hash_matches() {
                return Err(invalid(
                    "its content does not match its content hash (edited after it was hashed)"
                        .into(),
                ));
            }
            // The context's type is where the sender stored the operation
            // (two creations may name different types): the header decides.
            incoming_type.get_or_insert_with(|| context.document_type.clone());
            if op.action.action_type.as_str() == ACTION_CREATE && context.scope == Scope::document()
            {
                self.creation_type(&op.action).map_err(|e| match e {
                    Error::InvalidAction { reason, .. } => invalid(reason),
                    other => other,
                })?;
            }
            by_scope
                .entry(context.scope.clone())
                .or_default()
                .push(op.clone());
        }
        Ok((by_scope, incoming_type))
    }
}
