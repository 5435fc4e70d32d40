//! Planning a write that keeps the raw log's encoding true: which
//! operations to append, and with what skip. Reads the log only through
//! [`RawLog`], and only what the write changes (see [`plan`]).

use std::collections::{HashMap, HashSet};

use super::{marker_target, order, sort_key, winners, SortKey};
use crate::error::Result;
use crate::model::{Digest, Operation, OperationId};

/// A stream's raw log as the planner reads it: one operation by index, and
/// where the copies of an operation id are (the store's op-id index).
pub(crate) trait RawLog {
    /// How many operations the log holds (the next index).
    fn head(&self) -> u64;
    /// The operation at `index` (below [`head`](Self::head)).
    fn get(&self, index: u64) -> Result<Operation>;
    /// The indexes of every stored copy of `id` in this log.
    fn copies(&self, id: &OperationId) -> Result<Vec<u64>>;
    /// A timestamp no held operation's exceeds, when the log knows one
    /// without reading its operations (the store's head keeps it).
    fn latest_timestamp(&self) -> Option<u64> {
        None
    }
}

/// A log held in memory (tests, the model, `verify`): copies are found by a
/// linear search.
impl RawLog for [Operation] {
    fn head(&self) -> u64 {
        self.len() as u64
    }
    fn latest_timestamp(&self) -> Option<u64> {
        Some(self.iter().map(|op| op.timestamp_utc_ms).max().unwrap_or(0))
    }
    fn get(&self, index: u64) -> Result<Operation> {
        Ok(self[index as usize].clone())
    }
    fn copies(&self, id: &OperationId) -> Result<Vec<u64>> {
        Ok(self
            .iter()
            .enumerate()
            .filter(|(_, op)| op.id == *id)
            .map(|(k, _)| k as u64)
            .collect())
    }
}

/// What to append to one stream so that its raw log holds every operation
/// of its new set and collects to the set's effective history.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Raw index just past the last operation kept in place: the state the
    /// appended operations are reduced on is the raw log folded below it.
    pub(crate) keep: u64,
    /// Cancelled operations new to this log, in merge order: appended first
    /// and hidden by the skip of the first operation of `ops`, so the log
    /// still holds the whole set (a later redo brings one back).
    pub(crate) hidden: Vec<Operation>,
    /// Skip of the first operation of `ops`: `head + hidden.len() - keep`.
    /// Every other appended operation carries 0.
    pub(crate) skip: u64,
    /// The effective suffix to append after `hidden`, in order (never
    /// empty; their `index`, `skip`, state hash and error are the
    /// sender's: the caller sets its own).
    pub(crate) ops: Vec<Operation>,
}

/// The best version the log holds of each id asked about (the smallest sort
/// key among its copies), read once per id.
struct Held<'a, L: RawLog + ?Sized> {
    log: &'a L,
    best: HashMap<OperationId, Option<Operation>>,
}

/// What a log holds of an arriving operation's id.
enum HeldVersion {
    /// This very version (same content hash).
    Same,
    /// Not this version: the best one held, if any.
    Other(Option<Box<Operation>>),
}

impl<L: RawLog + ?Sized> Held<'_, L> {
    /// Whether the log holds `op` itself, else its best held version. Reads
    /// copies newest first and stops at an identical one: an operation
    /// re-appended many times costs one read, not one per copy.
    fn version_of(&mut self, op: &Operation) -> Result<HeldVersion> {
        let mut best: Option<(SortKey, Operation)> = None;
        for index in self.log.copies(&op.id)?.into_iter().rev() {
            let held = self.log.get(index)?;
            if held.content_hash == op.content_hash {
                return Ok(HeldVersion::Same);
            }
            let key = sort_key(&held);
            if best.as_ref().is_none_or(|(b, _)| key < *b) {
                best = Some((key, held));
            }
        }
        let best = best.map(|(_, held)| held);
        self.best.insert(op.id, best.clone());
        Ok(HeldVersion::Other(best.map(Box::new)))
    }

    fn best(&mut self, id: &OperationId) -> Result<Option<Operation>> {
        if let Some(found) = self.best.get(id) {
            return Ok(found.clone());
        }
        let mut best: Option<(SortKey, Operation)> = None;
        for index in self.log.copies(id)? {
            let op = self.log.get(index)?;
            let key = sort_key(&op);
            if best.as_ref().is_none_or(|(b, _)| key < *b) {
                best = Some((key, op));
            }
        }
        let best = best.map(|(_, op)| op);
        self.best.insert(*id, best.clone());
        Ok(best)
    }
}

/// Plans adding `incoming` to the stream whose raw log is `log`, which
/// holds the encoding's invariant. `None` when nothing changes: every
/// incoming operation is held already (or loses to a held version of its
/// id).
///
/// Reads only what the write changes. A new operation can change the
/// history only at or after the earliest of: its own sort key, the key of
/// the version it replaces, and the keys of what it cancels or un-cancels
/// (a marker's target; a redo's undo's target: cancellation is at most two
/// deep). Call the earliest `p`. Below `p` the set and every operation's
/// cancellation are unchanged, so the history below `p` stays; from `p` on
/// it is the effective history of the operations at or after `p` — the
/// log's effective suffix (read backwards from the head along the skips,
/// which the invariant keeps in order), the new operations, and the targets
/// just named (held but perhaps cancelled). A held cancelled operation
/// outside those keeps its canceller, so it stays cancelled and is left
/// where it is. So a load costs the operations it brings, their op-id
/// lookups, and the suffix it re-appends anyway; never the whole stream.
pub(crate) fn plan<L: RawLog + ?Sized>(log: &L, incoming: &[Operation]) -> Result<Option<Plan>> {
    let mut held = Held {
        log,
        best: HashMap::new(),
    };
    // One version per id: the smallest key among those arriving.
    let arriving = winners(incoming);
    let mut new: Vec<Operation> = Vec::new();
    let mut from: Option<SortKey> = None;
    // Markers among the new versions and the held versions they replace:
    // whatever they name may change. (A replaced version sorts after its
    // replacement, so it never lowers `from`.)
    let mut markers: Vec<Operation> = Vec::new();
    for (key, op) in arriving {
        match held.version_of(op)? {
            HeldVersion::Same => continue, // held already
            HeldVersion::Other(Some(kept)) => {
                if sort_key(&kept) <= key {
                    continue; // loses to the held version
                }
                if marker_target(&kept).is_some() {
                    markers.push(*kept);
                }
            }
            HeldVersion::Other(None) => {}
        }
        if marker_target(op).is_some() {
            markers.push(op.clone());
        }
        // Sorted: the first new version has the smallest key.
        from.get_or_insert(key);
        new.push(op.clone());
    }
    let Some(mut from) = from else {
        return Ok(None);
    };
    let new_at: HashMap<OperationId, usize> =
        new.iter().enumerate().map(|(i, op)| (op.id, i)).collect();
    let mut touched: Vec<Operation> = Vec::new();
    for marker in markers {
        let mut current = marker;
        // A marker's target; for a redo, also its undo's target.
        for _ in 0..2 {
            let Some(target) = marker_target(&current) else {
                break;
            };
            let found = match new_at.get(&target) {
                Some(&i) => Some(new[i].clone()),
                None => held.best(&target)?,
            };
            let Some(found) = found else { break };
            from = from.min(sort_key(&found));
            touched.push(found.clone());
            current = found;
        }
    }
    plan_from(log, new, touched, from)
}

/// Plans the rewrite of a whole log that may not hold the invariant (one
/// written by an older format, or around the reactor) with `new` added
/// (operations it does not hold): the effective history of everything.
/// `None` when the log already collects to it.
pub(crate) fn plan_whole(raw: &[Operation], new: Vec<Operation>) -> Result<Option<Plan>> {
    let Some(from) = raw.iter().chain(&new).map(sort_key).min() else {
        return Ok(None);
    };
    plan_from(raw, new, raw.to_vec(), from)
}

/// The plan once the earliest changed key `from` is known: `new` are the
/// operations the log does not hold, `touched` held ones at or after `from`
/// that must be reconsidered even if the log's history leaves them out.
fn plan_from<L: RawLog + ?Sized>(
    log: &L,
    new: Vec<Operation>,
    touched: Vec<Operation>,
    from: SortKey,
) -> Result<Option<Plan>> {
    let head = log.head();
    // The log's history at or after `from`, newest first, read backwards:
    // the operation at raw index `i` with skip `s` hides `i - s .. i`.
    let mut suffix: Vec<(u64, Operation)> = Vec::new();
    let mut below: Option<u64> = None;
    let mut at = head;
    // Nothing held can sort at or after `from` when `from` is no creation
    // and is later than every held timestamp: the walk would stop at the
    // newest operation, so it is not read (the common load: a peer's new
    // operations after everything here).
    if at > 0 && from.not_create && log.latest_timestamp().is_some_and(|t| from.timestamp > t) {
        below = Some(at - 1);
        at = 0;
    }
    while at > 0 {
        let op = log.get(at - 1)?;
        if sort_key(&op) < from {
            below = Some(at - 1);
            break;
        }
        let next = (at - 1).saturating_sub(op.skip);
        suffix.push((at - 1, op));
        at = next;
    }
    suffix.reverse();
    let ordered = order(suffix.iter().map(|(_, op)| op).chain(&touched).chain(&new));
    let new_versions: HashSet<(OperationId, Digest)> =
        new.iter().map(|op| (op.id, op.content_hash)).collect();
    let is_new = |op: &Operation| new_versions.contains(&(op.id, op.content_hash));
    let mut target: Vec<&Operation> = Vec::new();
    let mut hidden: Vec<Operation> = Vec::new();
    for (op, cancelled) in ordered.ops.iter().zip(&ordered.cancelled) {
        if !cancelled {
            target.push(op);
        } else if is_new(op) {
            // Cancelled and not held: stored hidden, so the log keeps the
            // whole set. (A version that lost to another of its id is not
            // stored: it can never win again.)
            hidden.push((*op).clone());
        }
    }
    let mut common = suffix
        .iter()
        .zip(&target)
        .take_while(|((_, s), t)| s.id == t.id && s.content_hash == t.content_hash)
        .count();
    if common == suffix.len() && common == target.len() && hidden.is_empty() {
        return Ok(None);
    }
    if common == target.len() {
        // Nothing new takes effect, yet something must be appended after
        // the hidden operations (or after a raw history that runs past the
        // target, in a log that broke the invariant) to hide them: the
        // last common operation is appended again. The last operation in
        // order is never cancelled, so `target` is not empty here.
        let Some(last_common) = common.checked_sub(1) else {
            return Ok(None);
        };
        common = last_common;
    }
    let keep = match common {
        0 => below.map_or(0, |b| b + 1),
        _ => suffix[common - 1].0 + 1,
    };
    Ok(Some(Plan {
        keep,
        skip: head + hidden.len() as u64 - keep,
        hidden,
        ops: target[common..].iter().map(|op| (*op).clone()).collect(),
    }))
}

/// Turns `plan` (or no change) into one that re-appends the stream's whole
/// effective history, so every operation is reduced again: for when the
/// document's winning creation changed (another type or model version
/// reduces the scope now, and an operation refused by one may be accepted
/// by the other). Reads the history below the plan's `keep`. `None` for an
/// empty stream with nothing to add.
pub(crate) fn plan_again<L: RawLog + ?Sized>(log: &L, plan: Option<Plan>) -> Result<Option<Plan>> {
    let head = log.head();
    let (end, hidden, tail) = match plan {
        Some(p) => (p.keep, p.hidden, p.ops),
        None => (head, Vec::new(), Vec::new()),
    };
    let mut history = Vec::new();
    let mut at = end;
    while at > 0 {
        let op = log.get(at - 1)?;
        at = (at - 1).saturating_sub(op.skip);
        history.push(op);
    }
    history.reverse();
    history.extend(tail);
    if history.is_empty() {
        return Ok(None);
    }
    Ok(Some(Plan {
        keep: 0,
        skip: head + hidden.len() as u64,
        hidden,
        ops: history,
    }))
}
