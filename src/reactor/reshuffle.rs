//! Merging incoming (remote) operations with local ones: the reference
//! "reshuffle by timestamp" rule. Pure logic over operations; it reads and
//! writes nothing.
//!
//! Local candidates come from the effective history: the first effective
//! operation with timestamp ≥ the earliest incoming timestamp, and every
//! effective operation after it (genesis operations never move). Candidates
//! and incoming operations (less those whose action id the stream already
//! holds) are sorted by one total order, the key
//! `(timestamp, rank, rank == 0 ? index - skip : 0, action id, op id)` with
//! rank 0 for structural actions and 1 for all others, and re-appended
//! after the head; the first carries `skip` = the distance back to the
//! earliest moved operation.

use std::cmp::Ordering;
use std::collections::HashSet;

use crate::model::{ActionId, Operation};

/// Action types whose operations sort before others at the same timestamp.
const STRUCTURAL: [&str; 6] = [
    "CREATE_DOCUMENT",
    "DELETE_DOCUMENT",
    "UPGRADE_DOCUMENT",
    "ADD_RELATIONSHIP",
    "REMOVE_RELATIONSHIP",
    "UPDATE_RELATIONSHIP",
];

fn rank(op: &Operation) -> u8 {
    u8::from(!STRUCTURAL.contains(&op.action.action_type.as_str()))
}

/// The total order of the merge. Every criterion is a plain field, so the
/// order is transitive and replicas agree (a comparator that switches
/// criteria by pair is not, and replicas then diverge).
pub(crate) fn merge_order(a: &Operation, b: &Operation) -> Ordering {
    let key = |op: &Operation| {
        let r = rank(op);
        let position = if r == 0 { op.index - op.skip } else { 0 };
        (op.timestamp_utc_ms, r, position)
    };
    key(a)
        .cmp(&key(b))
        .then_with(|| {
            a.action
                .id
                .as_str()
                .as_bytes()
                .cmp(b.action.id.as_str().as_bytes())
        })
        .then_with(|| a.id.cmp(&b.id))
}

/// Whether an operation is genesis and never moves: `CREATE_DOCUMENT`, and
/// the first `UPGRADE_DOCUMENT` of a stream.
fn is_genesis(op: &Operation, first_upgrade_seen: &mut bool) -> bool {
    match op.action.action_type.as_str() {
        "CREATE_DOCUMENT" => true,
        "UPGRADE_DOCUMENT" if !*first_upgrade_seen => {
            *first_upgrade_seen = true;
            true
        }
        _ => false,
    }
}

/// What a load appends to one stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Index of the first appended operation (the stream's head).
    pub(crate) start: u64,
    /// Skip of the first appended operation.
    pub(crate) skip: u64,
    /// Index of the earliest moved local operation (= `start` when none
    /// moved): the effective history before it is the merge's base.
    pub(crate) base: u64,
    /// The operations to append, in order (their `index`/`skip` are the
    /// original ones; the caller re-indexes them).
    pub(crate) ops: Vec<Operation>,
    /// How many local operations moved.
    pub(crate) moved: usize,
}

/// Plans the merge of `incoming` into a stream whose raw log has `head`
/// operations and whose effective history is `effective` (in order).
/// `known` holds every action id in the stream's raw log. `None` when
/// nothing is new.
pub(crate) fn plan(
    head: u64,
    effective: &[Operation],
    known: &HashSet<ActionId>,
    incoming: Vec<Operation>,
) -> Option<Plan> {
    let mut seen = HashSet::new();
    let mut incoming: Vec<Operation> = incoming
        .into_iter()
        .filter(|op| !known.contains(&op.action.id) && seen.insert(op.action.id.clone()))
        .collect();
    let earliest = incoming.iter().map(|op| op.timestamp_utc_ms).min()?;
    let mut upgrade_seen = false;
    let genesis: Vec<bool> = effective
        .iter()
        .map(|op| is_genesis(op, &mut upgrade_seen))
        .collect();
    let first_moved = effective
        .iter()
        .enumerate()
        .position(|(i, op)| !genesis[i] && op.timestamp_utc_ms >= earliest);
    let Some(first) = first_moved else {
        incoming.sort_by(merge_order);
        return Some(Plan {
            start: head,
            skip: 0,
            base: head,
            ops: incoming,
            moved: 0,
        });
    };
    // Genesis operations after the first moved one stay out of the merge;
    // they cannot follow a moved operation in practice (they come first).
    let moved: Vec<Operation> = effective[first..]
        .iter()
        .zip(&genesis[first..])
        .filter(|(_, g)| !**g)
        .map(|(op, _)| op.clone())
        .collect();
    let base = effective[first].index;
    let count = moved.len();
    let mut ops = moved;
    ops.extend(incoming);
    ops.sort_by(merge_order);
    Some(Plan {
        start: head,
        skip: head - base,
        base,
        ops,
        moved: count,
    })
}

#[cfg(test)]
mod tests;
