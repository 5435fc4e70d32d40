//! Writes that may re-order a stream's history: loads from peers, undo,
//! redo, and a creation. Each plans with the merge rule
//! ([`crate::merge`]) reading only what it changes from the stream's raw
//! log ([`StoredLog`]), reduces the suffix it re-appends on the state
//! before it, and only then writes. A
//! load validates every operation and plans every scope before it writes
//! anything, then writes every scope in one atomic store write.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::stored_log::StoredLog;
use super::{stamp, Executor, Head};
use crate::error::{Error, Result};
use crate::fold;
use crate::keys;
use crate::merge::{self, ACTION_UNDO};
use crate::model::{
    Action, Branch, Digest, DocumentId, DocumentType, NewOperation, Operation, OperationId,
    OperationWithContext, Ordinal, Revision, Scope, SyncUnit,
};
use crate::models::{decode_header, DocumentHeader, SystemAction};
use crate::store::{LogOrder, StreamAppend};
use crate::view::ConsistencyToken;

const ACTION_CREATE: &str = "CREATE_DOCUMENT";

/// A load's operations, by scope.
type ByScope = BTreeMap<Scope, Vec<Operation>>;

/// One stream's merge, planned and reduced, not yet written.
pub(super) struct Prepared {
    unit: SyncUnit,
    unit_key: Vec<u8>,
    /// The type the stream is stored with (its first writer's; two
    /// creations of one document may name different types, and the
    /// history's header follows the one that sorts first).
    document_type: DocumentType,
    /// Indexed from the stream's head.
    ops: Vec<NewOperation>,
    /// The head after the write; `None` for a parked scope: its model
    /// version is not registered here, or its document's creation has not
    /// arrived yet, so its operations are stored unreduced (no state hash)
    /// and reads of it answer `ModelNotFound` / `DocumentNotFound` until
    /// the model is registered (reopen with it) or the creation is loaded:
    /// then the fold reduces them like any others.
    head: Option<Head>,
}

/// The header a prepared `document`-scope merge leaves.
fn header_of(prepared: &Prepared) -> Option<Arc<DocumentHeader>> {
    let state = prepared
        .head
        .as_ref()
        .map_or(&[][..], |h| h.state.as_slice());
    decode_header(state).map(Arc::new)
}

/// What decides how a document's other scopes reduce: its winning
/// creation's type and model version.
fn creation_of(header: Option<&DocumentHeader>) -> Option<(&DocumentType, u32)> {
    header.map(|h| (&h.document_type, h.created_model_version))
}

impl Executor {
    /// Whether executing `action` alone may re-order its stream's history,
    /// so it takes this path: an undo, a redo, or a creation whose stream
    /// already holds operations (a peer's, which arrived first). Any other
    /// local operation sorts last and is a plain append.
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
                && self
                    .header(document_id, branch)
                    .map_or(true, |(head, _)| head.revision > 0))
    }

    /// Plans adding `incoming` to the stream `unit` (whose raw log is
    /// `log`) and reduces what it appends. `None`: nothing changes. With
    /// `park`, a scope whose model version is not registered here, or
    /// whose document is not created here yet, is not an error: its
    /// operations are stored unreduced (see [`Prepared`]).
    fn prepare(
        &self,
        header: Option<&DocumentHeader>,
        document_type: &DocumentType,
        incoming: &[Operation],
        log: &StoredLog<'_>,
        park: bool,
    ) -> Result<Option<Prepared>> {
        let Some(plan) = log.plan(incoming)? else {
            return Ok(None);
        };
        self.prepare_plan(header, document_type, plan, log, park)
            .map(Some)
    }

    /// Reduces what a plan appends to `log`'s stream (see [`prepare`]).
    pub(super) fn prepare_plan(
        &self,
        header: Option<&DocumentHeader>,
        document_type: &DocumentType,
        plan: merge::Plan,
        log: &StoredLog<'_>,
        park: bool,
    ) -> Result<Prepared> {
        let unit = log.unit;
        let unit_key = log.unit_key.clone();
        let start = merge::RawLog::head(log);
        let latest = plan
            .hidden
            .iter()
            .chain(&plan.ops)
            .map(|op| op.timestamp_utc_ms)
            .fold(log.latest, u64::max);
        // Operations the history leaves out are stored first (the set must
        // stay recoverable from the log) and hidden by the next one's skip.
        let mut ops: Vec<NewOperation> = plan
            .hidden
            .iter()
            .chain(&plan.ops)
            .enumerate()
            .map(|(k, op)| NewOperation {
                index: start + k as u64,
                skip: if k == plan.hidden.len() { plan.skip } else { 0 },
                timestamp_utc_ms: op.timestamp_utc_ms,
                state_hash: Digest::default(),
                action: op.action.clone(),
                error: None,
            })
            .collect();
        let head = match self.reduce_plan(unit, header, &unit_key, &plan, &mut ops) {
            Ok((state, model_version)) => Some(Head {
                revision: start + ops.len() as u64,
                state,
                model_version,
                latest,
                stored_type: None,
                header: None,
            }),
            Err(Error::ModelNotFound { .. } | Error::DocumentNotFound { .. })
                if park && unit.scope != Scope::document() =>
            {
                for op in &mut ops {
                    op.state_hash = Digest::default();
                    op.error = None;
                }
                None
            }
            Err(e) => return Err(e),
        };
        let document_type = log
            .stored_type
            .clone()
            .unwrap_or_else(|| document_type.clone());
        Ok(Prepared {
            unit: unit.clone(),
            unit_key,
            ops,
            head: head.map(|head| Head {
                stored_type: Some(document_type.clone()),
                ..head
            }),
            document_type,
        })
    }

    /// Reduces a plan's operations on the state before them, filling each
    /// one's state hash and (for a refusal) error; returns the final state
    /// and model version.
    fn reduce_plan(
        &self,
        unit: &SyncUnit,
        header: Option<&DocumentHeader>,
        unit_key: &[u8],
        plan: &merge::Plan,
        ops: &mut [NewOperation],
    ) -> Result<(Vec<u8>, u32)> {
        let (reducer, start_version) =
            self.reducer_for(&unit.document_id, &unit.branch, &unit.scope, header)?;
        // The common case keeps the whole log (an operation that sorts
        // last): the cached head already holds the state to reduce on.
        let cached = self
            .heads
            .lock()
            .peek(unit_key)
            .filter(|head| head.revision == plan.keep)
            .map(|head| (head.state.clone(), head.model_version));
        let (mut state, mut version) = match cached {
            Some(base) => base,
            None => {
                let base = fold::fold(
                    &self.store,
                    unit_key,
                    &reducer,
                    start_version,
                    Ordinal(u64::MAX),
                    Some(plan.keep),
                )?;
                (base.state, base.model_version)
            }
        };
        let (hidden, effective) = ops.split_at_mut(plan.hidden.len());
        for op in hidden {
            op.state_hash = Digest::of(&state);
        }
        for (op, planned) in effective.iter_mut().zip(&plan.ops) {
            // A refusal is recorded, not fatal: the operation stays in the
            // history (every replica refuses it at the same place).
            match reducer.try_apply(&mut version, &state, planned)? {
                Ok(next) => state = next,
                Err(refused) => op.error = Some(refused.reason),
            }
            op.state_hash = Digest::of(&state);
        }
        Ok((state, version))
    }

    /// Writes prepared merges (one per stream) in one atomic write: every
    /// scope or none. Returns the last ordinal written.
    pub(super) fn write_prepared(&self, prepared: Vec<Prepared>) -> Result<Ordinal> {
        let mut heads = Vec::with_capacity(prepared.len());
        let mut parts = Vec::with_capacity(prepared.len());
        for p in prepared {
            heads.push((p.unit_key, p.head));
            parts.push(StreamAppend {
                revision: Revision(p.ops.first().map_or(0, |op| op.index)),
                unit: p.unit,
                document_type: p.document_type,
                operations: p.ops,
                order: LogOrder::Restores,
            });
        }
        let stored = self.append(parts)?;
        let mut cache = self.heads.lock();
        for (unit_key, head) in heads {
            match head {
                Some(head) => cache.put(unit_key, head),
                None => cache.pop(&unit_key),
            };
        }
        Ok(stored.last().map_or(Ordinal(0), |o| o.context.ordinal))
    }

    /// Executes an undo, a redo or a creation (a job of its own).
    pub(super) fn execute_merged(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
        action: &Action,
    ) -> Result<ConsistencyToken> {
        let unit = SyncUnit::new(document_id.clone(), action.scope.clone(), branch.clone());
        let op_id = OperationId::derive(&unit, &action.id);
        if let Some(location) = self.store.locate(&op_id)?.first() {
            // A resubmission: applied once already.
            let stored = self
                .store
                .get_with_ordinal(&keys::unit_key(&location.unit), location.index)?;
            return Ok(ConsistencyToken(stored.map_or(Ordinal(0), |(_, o)| o)));
        }
        let (_, header) = self.header(document_id, branch)?;
        let action_type = action.action_type.as_str();
        let document_type = if action_type == ACTION_CREATE {
            self.creation_type(action)?
        } else {
            match &header {
                None => {
                    return Err(Error::DocumentNotFound {
                        id: document_id.to_string(),
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
        let last = self.write_prepared(all);
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

    /// Merges operations from a peer into a document: all validated, every
    /// scope planned, then written.
    pub(crate) fn load(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
        operations: &[OperationWithContext],
    ) -> super::Outcome {
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
        let (_, mut header) = self.header(document_id, branch)?;
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
        let last = self.write_prepared(prepared)?;
        if header_changed {
            self.forget_document(document_id);
        }
        Ok(ConsistencyToken(last))
    }

    /// Every scope of the document but `document` and `skip`, planned to be
    /// reduced again from its first operation under `header`: the winning
    /// creation changed (another type or model version), and an operation
    /// one model refused another may accept. Parked scopes are reduced
    /// here too once their creation has arrived.
    fn reduce_again(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
        header: Option<&DocumentHeader>,
        document_type: &DocumentType,
        skip: &[&Scope],
    ) -> Result<Vec<Prepared>> {
        let mut prepared = Vec::new();
        for stream in self.store.streams(document_id)? {
            let unit = &stream.unit;
            if unit.branch != *branch
                || unit.scope == Scope::document()
                || skip.contains(&&unit.scope)
            {
                continue;
            }
            let log = StoredLog::open(&self.store, unit)?;
            if let Some(plan) = merge::plan_again(&log, None)? {
                prepared.push(self.prepare_plan(header, document_type, plan, &log, true)?);
            }
        }
        Ok(prepared)
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
