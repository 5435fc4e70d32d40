//! Local writes that take the merge path, each a job of its own: an undo,
//! a redo (markers naming their target by operation id, resolved here), and
//! a creation whose stream already holds a peer's operations.

use super::merged::{creation_of, header_of};
use super::stored_log::StoredLog;
use super::{stamp, Executor};
use crate::error::{Error, Result};
use crate::merge::{self, ACTION_UNDO};
use crate::model::{
    Action, Branch, Digest, DocumentId, DocumentType, Operation, OperationId, Ordinal, Scope,
    SyncUnit,
};
use crate::models::SystemAction;
use crate::store::Durability;
use crate::view::ConsistencyToken;

/// Action type of a document's creation.
pub(super) const ACTION_CREATE: &str = "CREATE_DOCUMENT";

impl Executor {
    /// Whether executing `action` alone may re-order its stream's history,
    /// so it takes this path: an undo, a redo, or a creation whose document
    /// already holds operations (a peer's, which arrived first: in its
    /// stream, or parked in other scopes). Any other local operation sorts
    /// last and is a plain append.
    pub(super) fn needs_merge(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
        action: &Action,
    ) -> bool {
        let t = action.action_type.as_str();
        merge::is_marker(t)
            || (t == ACTION_CREATE
                && action.scope == Scope::document()
                && (self
                    .header(document_id, branch)
                    .map_or(true, |(head, _)| head.revision > 0)
                    || self.holds_parked_scopes(document_id, branch)))
    }

    /// Whether other scopes of the document hold operations (parked: they
    /// arrived before any creation), which a creation must reduce.
    fn holds_parked_scopes(&self, document_id: &DocumentId, branch: &Branch) -> bool {
        self.store.streams(document_id).map_or(true, |streams| {
            streams
                .iter()
                .any(|s| s.unit.branch == *branch && s.unit.scope != Scope::document())
        })
    }

    /// Executes an undo, a redo or a creation (a job of its own).
    pub(super) fn execute_merged(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
        action: &Action,
        durability: Option<Durability>,
    ) -> Result<ConsistencyToken> {
        let unit = SyncUnit::new(document_id.clone(), action.scope.clone(), branch.clone());
        let op_id = OperationId::derive(&unit, &action.id);
        if let Some(ordinal) = self.store.applied_at(&op_id)? {
            // A resubmission: applied once already (perhaps acknowledged
            // `Buffered`: a synced one syncs before answering).
            if durability.unwrap_or(self.store.durability()) == Durability::Synced {
                self.store.sync_wal()?;
            }
            return Ok(ConsistencyToken(ordinal));
        }
        let (_, header) = self.header(document_id, branch)?;
        let action_type = action.action_type.as_str();
        let document_type = if action_type == ACTION_CREATE {
            self.creation_type(action)?
        } else {
            match &header {
                None => {
                    return Err(Error::DocumentNotFound {
                        id: document_id.clone(),
                    })
                }
                Some(h) if h.deleted => {
                    return Err(Error::DocumentDeleted {
                        id: document_id.clone(),
                    })
                }
                Some(h) => h.document_type.clone(),
            }
        };
        let log = StoredLog::open(&self.store, &unit)?;
        let action_id = action.id.clone();
        let mut action = action.clone();
        if merge::is_marker(action_type) {
            let target = self.marker_target(&unit, &log, action_type == ACTION_UNDO)?;
            action.input = merge::marker_input(&target);
        }
        let timestamp_utc_ms = stamp(merge::RawLog::head(&log), log.latest, &action)?;
        let op = Operation {
            id: op_id,
            index: 0,
            skip: 0,
            timestamp_utc_ms,
            hash: Digest::default(),
            state_hash: Digest::default(),
            content_hash: Operation::content_hash_of(&op_id, timestamp_utc_ms, &action),
            action,
            error: None,
        };
        let Some(prepared) = self.prepare(header.as_deref(), &document_type, &[op], &log, false)?
        else {
            return Ok(ConsistencyToken(Ordinal(0)));
        };
        let mut others = Vec::new();
        if unit.scope == Scope::document() {
            let merged = header_of(&prepared);
            if creation_of(merged.as_deref()) != creation_of(header.as_deref()) {
                // A creation arriving behind parked scopes (or winning
                // over another): they reduce under it now.
                self.forget_document(document_id);
                let document_type = merged
                    .as_ref()
                    .map_or(document_type.clone(), |h| h.document_type.clone());
                others =
                    self.reduce_again(document_id, branch, merged.as_deref(), &document_type, &[])?;
            }
        }
        // A local action the reducer refuses fails its job and writes
        // nothing (a peer's is recorded with its error instead).
        if let Some(refused) = prepared
            .ops
            .iter()
            .find(|o| o.action.id == action_id)
            .and_then(|o| o.error.clone())
        {
            return Err(Error::InvalidAction {
                action_id,
                reason: refused,
            });
        }
        let mut all = vec![prepared];
        all.extend(others);
        let last = self.write_prepared(all, durability);
        if last.is_err() {
            self.forget_document(document_id);
        }
        Ok(ConsistencyToken(last?))
    }

    /// The document type a `CREATE_DOCUMENT` names, which must be
    /// registered.
    pub(super) fn creation_type(&self, action: &Action) -> Result<DocumentType> {
        let invalid = |reason: String| Error::InvalidAction {
            action_id: action.id.clone(),
            reason,
        };
        if action.scope != Scope::document() {
            return Err(invalid(
                "CREATE_DOCUMENT belongs to the document scope".into(),
            ));
        }
        match SystemAction::decode(action).map_err(|e| invalid(e.reason))? {
            SystemAction::CreateDocument(input) => {
                self.registry
                    .require(&input.document_type, input.model_version)?;
                Ok(input.document_type)
            }
            _ => Err(invalid("not a CREATE_DOCUMENT input".into())),
        }
    }

    /// What an undo (`undo`) or a redo cancels: the latest effective
    /// operation of the stream that is not a marker, or the latest
    /// effective undo.
    fn marker_target(
        &self,
        unit: &SyncUnit,
        log: &StoredLog<'_>,
        undo: bool,
    ) -> Result<OperationId> {
        let found = log.latest_effective(|op| {
            let t = op.action.action_type.as_str();
            if undo {
                !merge::is_marker(t)
            } else {
                t == ACTION_UNDO
            }
        })?;
        let Some(target) = found else {
            return Err(Error::NothingToUndo {
                unit: unit.clone(),
                kind: if undo { "undo" } else { "redo" },
            });
        };
        if undo && merge::is_structural(target.action.action_type.as_str()) {
            return Err(Error::NotUndoable {
                unit: unit.clone(),
                action_type: target.action.action_type.clone(),
            });
        }
        Ok(target.id)
    }
}
