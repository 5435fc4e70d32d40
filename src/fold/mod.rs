//! Folding a stream's operations into state: from the nearest valid
//! snapshot, over the raw log collected by skips, up to exactly the ordinal
//! asked for. Below both the executor (heads, merges) and the view (reads,
//! snapshots): one fold for both sides. Owns the snapshot format; the view
//! decides when snapshots are written. Knows nothing of the merge rule: the
//! raw log already encodes its result.

use rocksdb::{WriteBatch, DB};
use serde::Deserialize;

use crate::codec::HeadState;
use crate::error::Result;
use crate::keys;
use crate::model::{Branch, Digest, DocumentId, DocumentType, Operation, Ordinal, Scope};
use crate::models::{reduce_system, ModelRegistry, ReduceError, ACTION_NOOP};
use crate::store::OperationStore;

mod snapshot;

pub(crate) use snapshot::Snapshot;
pub use snapshot::{verify_snapshots, SnapshotReport};

/// Action type that moves a scope's state to a newer model version.
const ACTION_UPGRADE: &str = "UPGRADE_DOCUMENT";

/// How one stream is reduced.
pub(crate) enum Reducer<'a> {
    /// The `document` scope: the engine's system reducer.
    System {
        document_id: &'a DocumentId,
        branch: &'a Branch,
    },
    /// Any other scope: the registered model of the document type.
    Model {
        registry: &'a ModelRegistry,
        document_type: &'a DocumentType,
        scope: &'a Scope,
    },
}

#[derive(Deserialize)]
struct UpgradeInput {
    from_version: u32,
    to_version: u32,
}

impl Reducer<'_> {
    /// The state before the first operation.
    pub(crate) fn initial(&self, version: u32) -> Result<Vec<u8>> {
        match self {
            Reducer::System { .. } => Ok(crate::models::initial_system_state()),
            Reducer::Model {
                registry,
                document_type,
                scope,
            } => {
                let model = registry.require(document_type, version)?;
                caught(document_type, None, || model.initial_state(scope))
            }
        }
    }

    /// Applies one operation as the view folds it: a failed operation
    /// (with `error`), an undo marker and an action its reducer refuses
    /// leave the state unchanged, so every replica folds the same bytes.
    pub(crate) fn apply(
        &self,
        version: &mut u32,
        state: Vec<u8>,
        op: &Operation,
    ) -> Result<Vec<u8>> {
        if op.error.is_some() {
            return Ok(state);
        }
        Ok(match self.try_apply(version, &state, op)? {
            Ok(next) => next,
            Err(_) => state,
        })
    }

    /// Applies one operation, reporting a reducer's refusal (inner `Err`)
    /// apart from a failure to reduce at all (outer `Err`, e.g. no model).
    pub(crate) fn try_apply(
        &self,
        version: &mut u32,
        state: &[u8],
        op: &Operation,
    ) -> Result<std::result::Result<Vec<u8>, ReduceError>> {
        let action_type = op.action.action_type.as_str();
        if action_type == ACTION_NOOP || crate::merge::is_marker(action_type) {
            // Markers change no state: what they cancel is already left
            // out of the history being folded.
            return Ok(Ok(state.to_vec()));
        }
        match self {
            Reducer::System {
                document_id,
                branch,
            } => Ok(reduce_system(document_id, branch, state, op)),
            Reducer::Model {
                registry,
                document_type,
                scope,
            } => {
                if op.action.action_type.as_str() == ACTION_UPGRADE {
                    let input = match serde_json::from_slice::<UpgradeInput>(&op.action.input) {
                        Ok(input) => input,
                        Err(e) => {
                            return Ok(Err(ReduceError::new(format!("undecodable upgrade: {e}"))))
                        }
                    };
                    if input.from_version != *version {
                        return Ok(Err(ReduceError::new(format!(
                            "upgrade from {} but the scope is at version {}",
                            input.from_version, *version
                        ))));
                    }
                    let model = registry.require(document_type, input.to_version)?;
                    let upgraded = guarded(document_type, op, || {
                        model.upgrade(input.from_version, scope, state)
                    })?;
                    if upgraded.is_ok() {
                        *version = input.to_version;
                    }
                    return Ok(upgraded);
                }
                let model = registry.require(document_type, *version)?;
                guarded(document_type, op, || model.reduce(scope, state, &op.action))
            }
        }
    }
}

/// Runs a model's code, turning a panic into [`Error::ReducerPanicked`]:
/// a model is user code, and one bad operation must fail its document's
/// reads and its job, not the thread (the view's worker, a reader, a
/// reactor worker) that folds it.
fn guarded<T>(document_type: &DocumentType, op: &Operation, run: impl FnOnce() -> T) -> Result<T> {
    caught(document_type, Some(op), run)
}

/// [`guarded`] for model code that may run on no operation (`None`: the
/// initial state).
fn caught<T>(
    document_type: &DocumentType,
    op: Option<&Operation>,
    run: impl FnOnce() -> T,
) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).map_err(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        crate::error::Error::ReducerPanicked {
            document_type: document_type.clone(),
            action_id: op.map(|op| op.action.id.clone()),
            reason,
        }
    })
}

/// A folded stream.
#[derive(Clone, Debug)]
pub(crate) struct Folded {
    /// Operations folded (the stream's revision at the cutoff).
    pub(crate) revision: u64,
    pub(crate) state: Vec<u8>,
    pub(crate) model_version: u32,
    /// Hash and ordinal of the operation at `revision - 1`.
    pub(crate) last: Option<(Digest, Ordinal)>,
    /// Snapshots found damaged or stale (by revision), to be replaced.
    pub(crate) bad_snapshots: Vec<u64>,
}

/// The effective history of a run of operations: the raw log after skips
/// (the rule lives in [`merge::collect`](crate::merge)).
pub(crate) fn effective(ops: &[(Operation, Ordinal)]) -> Vec<&Operation> {
    crate::merge::collect(ops.len(), |k| (ops[k].0.index, ops[k].0.skip))
        .into_iter()
        .map(|k| &ops[k].0)
        .collect()
}

/// The newest snapshot of a stream with revision ≤ `max_revision`.
fn newest_snapshot(db: &DB, unit_key: &[u8], max_revision: u64) -> Option<(u64, Vec<u8>)> {
    let cf = db.cf_handle(keys::CF_SNAPSHOTS)?;
    let mut iter = db.raw_iterator_cf(cf);
    iter.seek_for_prev(keys::snapshot_key(unit_key, max_revision));
    let key = iter.key()?;
    if key.len() != unit_key.len() + 8 || !key.starts_with(unit_key) {
        return None;
    }
    let revision = keys::op_key_index(key)?;
    Some((revision, iter.value()?.to_vec()))
}

/// The stream `unit_key` as the state its head keeps (`revision`, the
/// stream's next index, and `head_hash`, its last operation's hash, are
/// the head's), when that state can stand for a fold up to `cutoff`: the
/// head's last operation is committed at or before `cutoff` (then so is
/// every operation of the stream: within a stream ordinals grow with the
/// index), it is the operation the head names, and it hashed exactly this
/// state. One read instead of a fold; `None` sends the caller to [`fold`].
pub(crate) fn kept(
    store: &OperationStore,
    unit_key: &[u8],
    (revision, head_hash): (u64, Digest),
    kept: &HeadState,
    cutoff: Ordinal,
) -> Result<Option<Folded>> {
    let Some(last) = revision.checked_sub(1) else {
        return Ok(None);
    };
    let Some((op, ordinal)) = store.get_with_ordinal(unit_key, last)? else {
        return Ok(None);
    };
    Ok(kept_by(&op, ordinal, (revision, head_hash), kept, cutoff))
}

/// [`kept`] when the caller holds the head's last operation (`op`, at
/// `ordinal`) already: the same rule, no read.
pub(crate) fn kept_by(
    op: &Operation,
    ordinal: Ordinal,
    (revision, head_hash): (u64, Digest),
    kept: &HeadState,
    cutoff: Ordinal,
) -> Option<Folded> {
    let holds = revision > 0
        && ordinal <= cutoff
        && op.hash == head_hash
        && op.state_hash == kept.digest
        && kept.intact();
    holds.then(|| Folded {
        revision,
        state: kept.state.clone(),
        model_version: kept.model_version,
        last: Some((op.hash, ordinal)),
        bad_snapshots: Vec::new(),
    })
}

/// [`kept`] when every ordinal the store has assigned is at or before
/// `cutoff` (the caller read the head first, then found the store's
/// [`last_assigned`](OperationStore::last_assigned) within `cutoff`): the
/// head's last operation is then committed within `cutoff` too, and the
/// head names it (they are written in one batch, and a v4 head's checksum
/// holds what it says). What this skips is the operation's read: the
/// check of its hash and state hash against the head, which
/// `OperationStore::verify` makes for every stream. A cold read of an
/// idle document costs its heads' scan alone. The fold has no `last`
/// (nothing read it), so it is never written as a snapshot.
pub(crate) fn kept_settled(revision: u64, kept: &HeadState) -> Option<Folded> {
    (revision > 0 && kept.intact()).then(|| Folded {
        revision,
        state: kept.state.clone(),
        model_version: kept.model_version,
        last: None,
        bad_snapshots: Vec::new(),
    })
}

/// Folds the stream `unit_key` up to `cutoff` (and below index `end`).
pub(crate) fn fold(
    store: &OperationStore,
    unit_key: &[u8],
    reducer: &Reducer<'_>,
    start_version: u32,
    cutoff: Ordinal,
    end: Option<u64>,
) -> Result<Folded> {
    let db = store.db();
    let mut max_revision = end.unwrap_or(u64::MAX);
    let mut bad = Vec::new();
    loop {
        let base = match newest_snapshot(db, unit_key, max_revision) {
            None => None,
            Some((0, _)) => {
                // No snapshot is ever written at revision 0 (it would be
                // the initial state): a bad key, skipped, and nothing
                // lies below it.
                bad.push(0);
                None
            }
            Some((revision, bytes)) => {
                let anchor = store.get_with_ordinal(unit_key, revision - 1)?;
                match (Snapshot::decode(&bytes), anchor) {
                    (Some((snap, _)), Some((op, ordinal)))
                        if snap.revision == revision && snap.op_hash == op.hash =>
                    {
                        if ordinal > cutoff {
                            // Written after the point being folded to.
                            max_revision = revision - 1;
                            continue;
                        }
                        Some(snap)
                    }
                    _ => {
                        bad.push(revision);
                        max_revision = revision - 1;
                        continue;
                    }
                }
            }
        };
        let (base_revision, state, version, base_last) = match base {
            Some(s) => (
                s.revision,
                s.state,
                s.model_version,
                Some((s.op_hash, s.op_ordinal)),
            ),
            None => (0, reducer.initial(start_version)?, start_version, None),
        };
        // Fast path: most tails hold no skip at all, and then the effective
        // history is the tail itself, folded as it streams by.
        let mut streamed = StreamedFold {
            state: Some(state),
            version,
            count: 0,
            last: None,
            skip_seen: false,
        };
        store.visit_until(unit_key, base_revision, end, cutoff, |op, ordinal| {
            if op.skip > 0 {
                streamed.skip_seen = true;
                return Ok(false);
            }
            let current = streamed.state.take().unwrap_or_default();
            streamed.state = Some(reducer.apply(&mut streamed.version, current, &op)?);
            streamed.count += 1;
            streamed.last = Some((op.hash, ordinal));
            Ok(true)
        })?;
        if !streamed.skip_seen {
            return Ok(Folded {
                revision: base_revision + streamed.count,
                state: streamed.state.unwrap_or_default(),
                model_version: streamed.version,
                last: streamed.last.or(base_last),
                bad_snapshots: bad,
            });
        }
        // A skip: fold the effective history of the whole tail instead.
        let (mut state, mut version) =
            match base_state_again(store, unit_key, reducer, start_version, base_revision)? {
                Some(s) => s,
                None => {
                    max_revision = base_revision.saturating_sub(1);
                    continue;
                }
            };
        let tail = store.scan_until(unit_key, base_revision, end, cutoff)?;
        let reach = tail.iter().map(|(op, _)| op.index - op.skip).min();
        if let Some(reach) = reach.filter(|r| *r < base_revision) {
            // A later skip reaches into the snapshot: start further back.
            max_revision = reach;
            continue;
        }
        for op in effective(&tail) {
            state = reducer.apply(&mut version, state, op)?;
        }
        return Ok(Folded {
            revision: base_revision + tail.len() as u64,
            state,
            model_version: version,
            last: tail
                .last()
                .map(|(op, ordinal)| (op.hash, *ordinal))
                .or(base_last),
            bad_snapshots: bad,
        });
    }
}

/// Snapshots added to a batch that is not written yet: stream key →
/// (revision, hash), so the next one in the same batch chains to them.
#[derive(Default)]
pub(crate) struct PendingSnapshots {
    /// Stream key → (revision, hash) of its newest snapshot in the batch.
    written: std::collections::HashMap<Vec<u8>, (u64, Digest)>,
    /// Key prefixes whose snapshots the batch deletes (a document whose
    /// winning creation changed): a snapshot written after that chains to
    /// nothing before it.
    dropped: Vec<Vec<u8>>,
}

impl PendingSnapshots {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The batch deletes every snapshot under `prefix` (before what it
    /// writes next).
    pub(crate) fn drop_prefix(&mut self, prefix: Vec<u8>) {
        self.written.retain(|key, _| !key.starts_with(&prefix));
        self.dropped.push(prefix);
    }
}

/// The hash of the newest intact snapshot below `revision`.
fn previous_snapshot_hash(
    db: &DB,
    unit_key: &[u8],
    revision: u64,
    pending: &PendingSnapshots,
) -> Digest {
    if let Some((rev, hash)) = pending.written.get(unit_key) {
        if *rev < revision {
            return *hash;
        }
    }
    if pending.dropped.iter().any(|p| unit_key.starts_with(p)) {
        return Digest::default();
    }
    let mut below = revision;
    while let Some((rev, bytes)) = below
        .checked_sub(1)
        .and_then(|max| newest_snapshot(db, unit_key, max))
    {
        if let Some((_, hash)) = Snapshot::decode(&bytes) {
            return hash;
        }
        below = rev;
    }
    Digest::default()
}

struct StreamedFold {
    state: Option<Vec<u8>>,
    version: u32,
    count: u64,
    last: Option<(Digest, Ordinal)>,
    skip_seen: bool,
}

/// The base state again after the streaming pass consumed it: the snapshot
/// at `base_revision` (already verified) or the initial state.
fn base_state_again(
    store: &OperationStore,
    unit_key: &[u8],
    reducer: &Reducer<'_>,
    start_version: u32,
    base_revision: u64,
) -> Result<Option<(Vec<u8>, u32)>> {
    if base_revision == 0 {
        return Ok(Some((reducer.initial(start_version)?, start_version)));
    }
    Ok(newest_snapshot(store.db(), unit_key, base_revision)
        .filter(|(revision, _)| *revision == base_revision)
        .and_then(|(_, bytes)| Snapshot::decode(&bytes))
        .map(|(snapshot, _)| (snapshot.state, snapshot.model_version)))
}

/// Adds a snapshot of `folded` to `batch`, chained to the stream's previous
/// intact snapshot (including one pending in the same batch).
/// Deletes the snapshot of a stream at `revision` (in `batch`).
pub(crate) fn delete_snapshot(db: &DB, batch: &mut WriteBatch, unit_key: &[u8], revision: u64) {
    if let Some(cf) = db.cf_handle(keys::CF_SNAPSHOTS) {
        batch.delete_cf(cf, keys::snapshot_key(unit_key, revision));
    }
}

pub(crate) fn put_snapshot(
    db: &DB,
    batch: &mut WriteBatch,
    unit_key: &[u8],
    folded: &Folded,
    pending: &mut PendingSnapshots,
) {
    let (Some((op_hash, op_ordinal)), Some(cf)) = (folded.last, db.cf_handle(keys::CF_SNAPSHOTS))
    else {
        return;
    };
    let snapshot = Snapshot {
        revision: folded.revision,
        op_hash,
        op_ordinal,
        previous: previous_snapshot_hash(db, unit_key, folded.revision, pending),
        model_version: folded.model_version,
        state: folded.state.clone(),
    };
    let (bytes, hash) = snapshot.encode();
    batch.put_cf(cf, keys::snapshot_key(unit_key, folded.revision), bytes);
    pending
        .written
        .insert(unit_key.to_vec(), (folded.revision, hash));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, ActionId, ActionType, OperationId};

    fn op(index: u64, skip: u64) -> (Operation, Ordinal) {
        let action = Action::new(
            ActionId::new(format!("a{index}")).expect("valid"),
            ActionType::new("T").expect("valid"),
            Scope::global(),
            index,
            Vec::new(),
        );
        let operation = Operation {
            id: OperationId([index as u8; 16]),
            index,
            skip,
            timestamp_utc_ms: index,
            hash: Digest::default(),
            state_hash: Digest::default(),
            content_hash: Digest::default(),
            action,
            error: None,
        };
        (operation, Ordinal(index + 1))
    }

    fn indexes(ops: &[(Operation, Ordinal)]) -> Vec<u64> {
        effective(ops).iter().map(|o| o.index).collect()
    }

    #[test]
    fn undo_cancels_the_previous_operation() {
        // 0 1 2, then 3 = undo (skip 1) cancels 2.
        assert_eq!(
            indexes(&[op(0, 0), op(1, 0), op(2, 0), op(3, 1)]),
            vec![0, 1, 3]
        );
    }

    #[test]
    fn a_second_undo_reaches_over_the_first() {
        // 4 undoes 3 (the first undo) and 2 again, plus 1: skip 3 keeps 0.
        assert_eq!(
            indexes(&[op(0, 0), op(1, 0), op(2, 0), op(3, 1), op(4, 3)]),
            vec![0, 4]
        );
    }

    #[test]
    fn redo_is_a_new_operation_after_the_undo() {
        // 3 undoes 2; 4 redoes it (a new op, skip 0).
        assert_eq!(
            indexes(&[op(0, 0), op(1, 0), op(2, 0), op(3, 1), op(4, 0)]),
            vec![0, 1, 3, 4]
        );
    }

    #[test]
    fn undoing_an_undo_brings_the_operation_back() {
        // 3 undoes 2; 4 undoes the undo (skip 1 covers only 3), so 2 is back.
        assert_eq!(
            indexes(&[op(0, 0), op(1, 0), op(2, 0), op(3, 1), op(4, 1)]),
            vec![0, 1, 2, 4]
        );
    }

    #[test]
    fn reshuffle_skip_drops_the_moved_operations() {
        // The reference example: A's log 0:a1 1:a2 2:a3 3:(skip 2)b1 4:a2 5:b2 6:a3 7:b3.
        let ops = [
            op(0, 0),
            op(1, 0),
            op(2, 0),
            op(3, 2),
            op(4, 0),
            op(5, 0),
            op(6, 0),
            op(7, 0),
        ];
        assert_eq!(indexes(&ops), vec![0, 3, 4, 5, 6, 7]);
    }
}
