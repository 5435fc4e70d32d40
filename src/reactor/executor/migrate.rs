//! Migrating a format-1 database to format 2 at open: the one place that
//! knows what format 1 meant by an undo.
//!
//! Format 1 undid an operation by position: a `NOOP` whose skip hid the
//! operations before it in that replica's raw log (the old demo wrote
//! them by hand). Positions mean nothing on another replica, so such an
//! undo never reached a peer. Format 2 undoes by id (`UNDO` markers). The
//! migration keeps each old undo's meaning where it can travel: an
//! operation the merge rule would show but the stream's raw log hides
//! (what a positional undo did) becomes the target of an `UNDO` marker,
//! and the stream is rewritten to the encoding of its new set
//! ([`merge::plan_whole`]), which also mends the order of a log merged by
//! format 1's position-based rule. The marker is derived from its target
//! alone (action id `migrated-undo-<op id>`, timestamp one past the
//! target's), so two replicas migrating the same old operations write the
//! same marker and still converge. A hidden `UNDO` (an undo undone by
//! position) gets a `REDO` instead (`migrated-redo-<op id>`). Structural
//! operations and redos cannot be cancelled by a marker (nor a target
//! stamped at the timestamp bound): one hidden that way comes back, and is
//! counted.
//!
//! Each stream is rewritten in one atomic write and the format is recorded
//! only after every stream, so a crash midway re-runs the migration, which
//! finds the streams already done unchanged.

use std::collections::HashSet;

use super::stored_log::StoredLog;
use super::Executor;
use crate::error::Result;
use crate::merge::{self, ACTION_REDO, ACTION_UNDO};
use crate::model::{
    Action, ActionId, ActionType, Digest, Operation, OperationId, Ordinal, Scope, SyncUnit,
};

/// What a migration did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// Streams read.
    pub streams: u64,
    /// Streams rewritten (a positional undo, or an out-of-order log).
    pub rewritten: u64,
    /// Positional undos carried over as markers (`UNDO`, or `REDO` for an
    /// undo that was undone by position).
    pub undos: u64,
    /// Hidden operations no marker can take back (structural ones, redos):
    /// they are part of the history again.
    pub not_undoable: u64,
}

impl Executor {
    /// Rewrites every stream of a format-1 database into format 2's
    /// encoding (see the module docs). Streams of a document's `document`
    /// scope go first, since the header decides how the others reduce.
    pub(crate) fn migrate_positional_undos(&self) -> Result<MigrationReport> {
        let mut report = MigrationReport::default();
        let mut streams = self.store.all_streams()?;
        streams.sort_by(|a, b| {
            (
                &a.unit.document_id,
                &a.unit.branch,
                a.unit.scope != Scope::document(),
            )
                .cmp(&(
                    &b.unit.document_id,
                    &b.unit.branch,
                    b.unit.scope != Scope::document(),
                ))
        });
        for stream in streams {
            report.streams += 1;
            let unit = &stream.unit;
            let log = StoredLog::open(&self.store, unit)?;
            let raw: Vec<Operation> = self
                .store
                .scan_until(&log.unit_key, 0, None, Ordinal(u64::MAX))?
                .into_iter()
                .map(|(op, _)| op)
                .collect();
            let shown = merge::collect(raw.len(), |k| (raw[k].index, raw[k].skip));
            let shown: HashSet<OperationId> = shown.iter().map(|&k| raw[k].id).collect();
            let held: HashSet<OperationId> = raw.iter().map(|op| op.id).collect();
            let ordered = merge::order(&raw);
            let mut markers = Vec::new();
            for (op, cancelled) in ordered.ops.iter().zip(&ordered.cancelled) {
                if *cancelled || shown.contains(&op.id) {
                    continue;
                }
                let action_type = op.action.action_type.as_str();
                if action_type == crate::models::ACTION_NOOP {
                    continue; // no state of its own to take back
                }
                // A hidden undo (an undo undone by position) is cancelled by
                // a redo; a hidden redo or structural operation cannot be.
                let kind = match action_type {
                    // Its target hidden too: the undo's effect already
                    // matches (the target stays out), nothing to carry.
                    ACTION_UNDO
                        if merge::marker_target(op).is_some_and(|t| !shown.contains(&t)) =>
                    {
                        continue;
                    }
                    ACTION_UNDO => Some(ACTION_REDO),
                    t if merge::is_marker(t) || merge::is_structural(t) => None,
                    _ => Some(ACTION_UNDO),
                };
                let Some(marker) = kind.and_then(|kind| marker_for(unit, op, kind)) else {
                    report.not_undoable += 1;
                    continue;
                };
                if !held.contains(&marker.id) {
                    markers.push(marker);
                }
            }
            report.undos += markers.len() as u64;
            let Some(plan) = merge::plan_whole(&raw, markers)? else {
                continue;
            };
            let (_, header) = self.header(&unit.document_id, &unit.branch)?;
            let prepared =
                self.prepare_plan(header.as_deref(), &stream.document_type, plan, &log, true)?;
            self.write_prepared(vec![prepared], None)?;
            self.forget_document(&unit.document_id);
            report.rewritten += 1;
        }
        Ok(report)
    }
}

/// The marker (`UNDO`, or `REDO` for a hidden undo) that carries a
/// positional undo of `target`: a function of the target alone. `None` when
/// the target's timestamp leaves no room after it.
fn marker_for(unit: &SyncUnit, target: &Operation, kind: &str) -> Option<Operation> {
    let action_id =
        ActionId::new(format!("migrated-{}-{}", kind.to_lowercase(), target.id)).ok()?;
    let timestamp_utc_ms = target
        .timestamp_utc_ms
        .checked_add(1)
        .filter(|t| *t <= merge::MAX_TIMESTAMP_MS)?;
    let id = OperationId::derive(unit, &action_id);
    let action = Action::new(
        action_id,
        ActionType::new(kind).ok()?,
        target.action.scope.clone(),
        timestamp_utc_ms,
        merge::marker_input(&target.id),
    );
    Some(Operation {
        id,
        index: 0,
        skip: 0,
        timestamp_utc_ms,
        hash: Digest::default(),
        state_hash: Digest::default(),
        content_hash: Operation::content_hash_of(&id, timestamp_utc_ms, &action),
        action,
        error: None,
    })
}
