//! The shared half of every write that may re-order a stream's history
//! (loads in `load`, undo, redo and a creation in `local`): planning with
//! the merge rule ([`crate::merge`]) from what the stream's raw log holds
//! ([`StoredLog`]), reducing the suffix a plan re-appends on the state
//! before it, and writing prepared streams in one atomic store write.

use std::sync::Arc;

use super::stored_log::StoredLog;
use super::{Executor, Head};
use crate::codec::HeadState;
use crate::error::{Error, Result};
use crate::fold;
use crate::merge;
use crate::model::{
    Branch, Digest, DocumentId, DocumentType, NewOperation, Operation, Ordinal, Revision, Scope,
    SyncUnit,
};
use crate::models::{decode_header, DocumentHeader};
use crate::store::{Durability, LogOrder, StreamAppend};

/// One stream's merge, planned and reduced, not yet written.
pub(super) struct Prepared {
    pub(super) unit: SyncUnit,
    unit_key: Vec<u8>,
    /// The type the stream is stored with (its first writer's; two
    /// creations of one document may name different types, and the
    /// history's header follows the one that sorts first).
    document_type: DocumentType,
    /// Indexed from the stream's head.
    pub(super) ops: Vec<NewOperation>,
    /// The head after the write; `None` for a parked scope: its model
    /// version is not registered here, or its document's creation has not
    /// arrived yet, so its operations are stored unreduced (no state hash)
    /// and reads of it answer `ModelNotFound` / `DocumentNotFound` until
    /// the model is registered (reopen with it) or the creation is loaded:
    /// then the fold reduces them like any others.
    head: Option<Head>,
}

/// The header a prepared `document`-scope merge leaves.
pub(super) fn header_of(prepared: &Prepared) -> Option<Arc<DocumentHeader>> {
    let state = prepared
        .head
        .as_ref()
        .map_or(&[][..], |h| h.state.as_slice());
    decode_header(state).map(Arc::new)
}

/// What decides how a document's other scopes reduce: its winning
/// creation's type and model version.
pub(super) fn creation_of(header: Option<&DocumentHeader>) -> Option<(&DocumentType, u32)> {
    header.map(|h| (&h.document_type, h.created_model_version))
}

impl Executor {
    /// Plans adding `incoming` to the stream `unit` (whose raw log is
    /// `log`) and reduces what it appends. `None`: nothing changes. With
    /// `park`, a scope whose model version is not registered here, or
    /// whose document is not created here yet, is not an error: its
    /// operations are stored unreduced (see [`Prepared`]).
    pub(super) fn prepare(
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
    pub(super) fn write_prepared(
        &self,
        prepared: Vec<Prepared>,
        durability: Option<Durability>,
    ) -> Result<Ordinal> {
        let mut heads = Vec::with_capacity(prepared.len());
        let mut parts = Vec::with_capacity(prepared.len());
        // What each planned operation is, in write order, to tell a replay
        // of operations written around the queue (see below).
        let planned: Vec<(Digest, u64)> = prepared
            .iter()
            .flat_map(|p| p.ops.iter())
            .map(|op| (op.state_hash, op.timestamp_utc_ms))
            .collect();
        let documents: Vec<DocumentId> = prepared
            .iter()
            .map(|p| p.unit.document_id.clone())
            .collect();
        for p in prepared {
            // The head keeps the state after the merge, as after a plain
            // append: on a replica most writes are merges (what sync
            // loads), and its cold reads, view snapshots and next writer
            // read that state instead of folding the stream. A parked
            // scope has none.
            let state = p
                .head
                .as_ref()
                .and_then(|h| HeadState::keep(h.model_version, &h.state));
            heads.push((p.unit_key, p.head));
            parts.push(StreamAppend {
                revision: Revision(p.ops.first().map_or(0, |op| op.index)),
                unit: p.unit,
                document_type: p.document_type,
                operations: p.ops,
                order: LogOrder::Restores,
                state,
            });
        }
        let stored = self.append(parts, durability)?;
        let as_planned = stored.len() == planned.len()
            && stored.iter().zip(&planned).all(|(op, planned)| {
                (op.operation.state_hash, op.operation.timestamp_utc_ms) == *planned
            });
        if !as_planned {
            // The store answered with operations written around the queue
            // (an idempotent replay of the same ids, possibly with other
            // content) and wrote nothing: the planned heads are not what
            // the log folds to, and the next merge or append reducing on
            // them would keep their state in its head. Fold again next
            // time, as the plain append does.
            for document in &documents {
                self.forget_document(document);
            }
            return Ok(stored.last().map_or(Ordinal(0), |o| o.context.ordinal));
        }
        let mut cache = self.heads.lock();
        for (unit_key, head) in heads {
            match head {
                Some(head) => cache.put(unit_key, head),
                None => cache.pop(&unit_key),
            };
        }
        Ok(stored.last().map_or(Ordinal(0), |o| o.context.ordinal))
    }

    /// Every scope of the document but `document` and `skip`, planned to be
    /// reduced again from its first operation under `header`: the winning
    /// creation changed (another type or model version), and an operation
    /// one model refused another may accept. Parked scopes are reduced
    /// here too once their creation has arrived.
    pub(super) fn reduce_again(
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
            // Through `plan`: a log out of merge order is put in order first.
            if let Some(plan) = merge::plan_again(&log, log.plan(&[])?)? {
                prepared.push(self.prepare_plan(header, document_type, plan, &log, true)?);
            }
        }
        Ok(prepared)
    }
}
