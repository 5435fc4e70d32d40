//! Planning a write that keeps the raw log's encoding true: which
//! operations to append, and with what skip.

use std::collections::HashSet;

use super::{collect, content_digest, order};
use crate::model::Operation;

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

/// Plans adding `incoming` to the stream whose raw log is `raw` (every
/// operation, index order). `None` when nothing changes: every incoming
/// operation is already held and the log already collects to its history.
pub(crate) fn plan(raw: &[Operation], incoming: &[Operation]) -> Option<Plan> {
    let head = raw.len() as u64;
    let kept = collect(raw.len(), |k| (raw[k].index, raw[k].skip));
    let ordered = order(raw.iter().chain(incoming));
    // Each digest once: the raw log's here, the set's in its sort keys.
    let raw_digests: Vec<[u8; 32]> = raw.iter().map(content_digest).collect();
    let held: HashSet<_> = raw
        .iter()
        .zip(&raw_digests)
        .map(|(op, d)| (op.id, *d))
        .collect();
    let target: Vec<(&Operation, &[u8; 32])> = ordered
        .ops
        .iter()
        .zip(&ordered.digests)
        .zip(&ordered.cancelled)
        .filter(|(_, cancelled)| !**cancelled)
        .map(|((op, digest), _)| (*op, digest))
        .collect();
    // Cancelled operations this log does not hold yet. (A version that
    // lost to another of its id is not stored: it can never win again.)
    let hidden: Vec<Operation> = ordered
        .ops
        .iter()
        .zip(&ordered.digests)
        .zip(&ordered.cancelled)
        .filter(|((op, digest), cancelled)| **cancelled && !held.contains(&(op.id, **digest)))
        .map(|((op, _), _)| (*op).clone())
        .collect();
    let mut p = kept
        .iter()
        .zip(&target)
        .take_while(|(k, (t, digest))| raw[**k].id == t.id && raw_digests[**k] == **digest)
        .count();
    if p == kept.len() && p == target.len() && hidden.is_empty() {
        return None;
    }
    if p == target.len() {
        // Nothing new takes effect, yet something must be appended after
        // the hidden operations (or after a raw history that runs past
        // the target, in a log that broke the invariant) to hide them: the
        // last common operation is appended again. A non-empty set has a
        // non-empty history (the last operation in order is never
        // cancelled), so `p > 0` here.
        p = p.checked_sub(1)?;
    }
    let keep = match p {
        0 => 0,
        _ => raw[kept[p - 1]].index + 1,
    };
    Some(Plan {
        keep,
        skip: head + hidden.len() as u64 - keep,
        hidden,
        ops: target[p..].iter().map(|(op, _)| (*op).clone()).collect(),
    })
}
