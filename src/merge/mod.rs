//! The merge rule: how a stream's history follows from the *set* of
//! operations a replica holds. Pure logic over operations; it reads and
//! writes nothing. The executor (local writes, undo, redo, loads) is its
//! only caller; the view never needs it, because the raw log it folds
//! already encodes the rule's result (see [`plan`]).
//!
//! # The property
//!
//! A stream's *effective* history (and so its state and state hash) is a
//! function of the set of operations its replica holds, whatever the order,
//! grouping, repetition or origin in which they arrived.
//!
//! # The rule
//!
//! 1. **The set.** Every distinct operation the raw log holds, by operation
//!    id. Two versions of one id (one action id, different content) keep
//!    the one with the smaller [`SortKey`]: a choice made from the two
//!    operations alone.
//! 2. **The order.** The set sorted by [`SortKey`]:
//!    `(not a creation, timestamp, structural rank, action id, content
//!    hash)` ([`is_creation`]: genesis first, whatever its timestamp).
//!    Every field belongs to the operation, none to where it landed in
//!    some replica's log, and the last one separates any two distinct
//!    operations, so the order is total and the same everywhere. (The
//!    content hash is carried with the operation and checked against its
//!    content when a peer's operation is loaded.)
//! 3. **Cancellation.** `UNDO` and `REDO` are markers naming a target by
//!    operation id ([`marker_target`]). A marker counts only when its
//!    target is in the set and sorts before it (so cancellation cannot form
//!    a cycle), an `UNDO` only on an operation that is neither a marker nor
//!    structural, a `REDO` only on an `UNDO`. An operation is cancelled
//!    while an effective marker names it; a cancelled marker cancels
//!    nothing. Walking the order backwards decides each operation after
//!    every marker that could name it, so one pass settles the graph.
//! 4. **The effective history** is the order minus what is cancelled
//!    (markers stay listed; they do not change state).
//!
//! Each step reads only the set, so two replicas holding the same set
//! compute the same history. Local writes need no re-ordering: the
//! executor stamps each operation at least one past the highest timestamp
//! its stream holds (hybrid-clock style), so a new operation sorts after
//! everything present and an undo after its target.
//!
//! # The encoding
//!
//! The raw log stays append-only. [`plan`] compares the raw log's
//! skip-collected history ([`collect`]) with the effective history of the
//! new set; from the first position where they differ it re-appends the
//! effective suffix at the head, the first re-appended operation carrying
//! `skip = head − (raw index of the last kept operation + 1)`; cancelled
//! operations the log does not hold yet are appended just before that
//! suffix and hidden by the same skip, so the log always holds the whole
//! set (a redo that arrives later brings them back). Collecting
//! the new raw log then yields exactly the effective history: the
//! invariant `collect(raw) == effective(set(raw))` that the view relies on
//! and `verify` checks. A plan reads only what its write changes (the
//! argument is on [`plan`]), which needs the invariant: a log that may
//! have broken it (written around the reactor, which clears the flag its
//! head keeps; or by an older format) is planned from the whole log by
//! [`plan_whole`] instead, which restores it.

mod plan;
mod verify;

pub(crate) use plan::{plan, plan_again, plan_whole, Plan, RawLog};
pub use verify::{verify_histories, HistoryReport};

use std::collections::HashMap;

use crate::model::{Operation, OperationId};

/// Action type of an undo marker: its input names the cancelled operation.
pub const ACTION_UNDO: &str = "UNDO";
/// Action type of a redo marker: its input names the cancelled undo.
pub const ACTION_REDO: &str = "REDO";

/// The largest operation timestamp accepted (milliseconds; the end of the
/// year 9999). Local writes are stamped one past the highest timestamp
/// their stream holds; a bound far below `u64::MAX` keeps that stamp from
/// saturating, which would let a new operation tie with, and sort before,
/// one already held.
pub const MAX_TIMESTAMP_MS: u64 = 253_402_300_799_999;

/// Action types that sort before others at one timestamp and cannot be
/// undone.
const STRUCTURAL: [&str; 6] = [
    "CREATE_DOCUMENT",
    "DELETE_DOCUMENT",
    "UPGRADE_DOCUMENT",
    "ADD_RELATIONSHIP",
    "REMOVE_RELATIONSHIP",
    "UPDATE_RELATIONSHIP",
];

/// Whether an action type is structural (not undoable, sorts first at a tie).
pub(crate) fn is_structural(action_type: &str) -> bool {
    STRUCTURAL.contains(&action_type)
}

/// Whether an operation creates its document: `CREATE_DOCUMENT` in the
/// `document` scope (elsewhere the name means nothing to the engine).
pub(crate) fn is_creation(op: &Operation) -> bool {
    op.action.action_type.as_str() == "CREATE_DOCUMENT" && op.action.scope.as_str() == "document"
}

/// Whether an action type is an undo or redo marker.
pub(crate) fn is_marker(action_type: &str) -> bool {
    action_type == ACTION_UNDO || action_type == ACTION_REDO
}

/// The input of a marker naming `target`: `{"target":"<32 hex digits>"}`.
pub(crate) fn marker_input(target: &OperationId) -> Vec<u8> {
    format!("{{\"target\":\"{target}\"}}").into_bytes()
}

/// The operation a marker names, if `op` is a marker with a readable input.
pub(crate) fn marker_target(op: &Operation) -> Option<OperationId> {
    #[derive(serde::Deserialize)]
    struct Input {
        target: String,
    }
    if !is_marker(op.action.action_type.as_str()) {
        return None;
    }
    let input: Input = serde_json::from_slice(&op.action.input).ok()?;
    OperationId::from_hex(&input.target).ok()
}

/// The canonical position of an operation: built from its own fields only.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct SortKey {
    /// `false` for a creation ([`is_creation`]): genesis comes first
    /// whatever its time.
    not_create: bool,
    timestamp: u64,
    /// 0 for structural actions, 1 for the rest (the reference's rank).
    rank: u8,
    /// Compared as bytes.
    action_id: Vec<u8>,
    /// The operation's content hash (checked on load, derived by the store).
    content: [u8; 32],
}

/// The sort key of an operation.
pub(crate) fn sort_key(op: &Operation) -> SortKey {
    let action_type = op.action.action_type.as_str();
    SortKey {
        not_create: !is_creation(op),
        timestamp: op.timestamp_utc_ms,
        rank: u8::from(!is_structural(action_type)),
        action_id: op.action.id.as_str().as_bytes().to_vec(),
        content: op.content_hash.0,
    }
}

/// A set in merge order: one version per id (the smallest key), sorted,
/// with whether each is cancelled.
pub(crate) struct Ordered<'a> {
    pub(crate) ops: Vec<&'a Operation>,
    pub(crate) cancelled: Vec<bool>,
}

/// One version per operation id, the one with the smallest sort key (rule
/// step 1), in merge order, with their keys.
pub(crate) fn winners<'a>(
    ops: impl IntoIterator<Item = &'a Operation>,
) -> Vec<(SortKey, &'a Operation)> {
    let mut chosen: HashMap<OperationId, (SortKey, &Operation)> = HashMap::new();
    for op in ops {
        let key = sort_key(op);
        match chosen.get(&op.id) {
            Some((kept, _)) if *kept <= key => {}
            _ => {
                chosen.insert(op.id, (key, op));
            }
        }
    }
    let mut sorted: Vec<(SortKey, &Operation)> = chosen.into_values().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
}

/// Orders a set of operations (any order, repeats allowed) and settles
/// cancellation.
pub(crate) fn order<'a>(ops: impl IntoIterator<Item = &'a Operation>) -> Ordered<'a> {
    let ops: Vec<&Operation> = winners(ops).into_iter().map(|(_, op)| op).collect();
    let position: HashMap<OperationId, usize> =
        ops.iter().enumerate().map(|(i, op)| (op.id, i)).collect();
    let mut cancelled = vec![false; ops.len()];
    for i in (0..ops.len()).rev() {
        if cancelled[i] {
            continue;
        }
        let Some(target) = marker_target(ops[i]) else {
            continue;
        };
        let Some(&t) = position.get(&target) else {
            continue; // not arrived (yet): no effect
        };
        if t < i && cancels(ops[i], ops[t]) {
            cancelled[t] = true;
        }
    }
    Ordered { ops, cancelled }
}

/// Whether `marker` may cancel `target` (types only; order is checked by
/// the caller).
fn cancels(marker: &Operation, target: &Operation) -> bool {
    let target_type = target.action.action_type.as_str();
    match marker.action.action_type.as_str() {
        ACTION_UNDO => !is_marker(target_type) && !is_structural(target_type),
        ACTION_REDO => target_type == ACTION_UNDO,
        _ => false,
    }
}

/// The raw log's history after skips: going backwards, an operation at
/// index `i` with skip `s` hides the operations at indexes `i - s .. i`.
/// `index_skip(k)` gives the index and skip of the `k`-th raw operation;
/// returns the positions kept, in order.
pub(crate) fn collect(len: usize, index_skip: impl Fn(usize) -> (u64, u64)) -> Vec<usize> {
    let mut out = Vec::with_capacity(len);
    let mut i = len;
    while i > 0 {
        let (index, skip) = index_skip(i - 1);
        out.push(i - 1);
        let keep_below = index.saturating_sub(skip);
        i -= 1;
        while i > 0 && index_skip(i - 1).0 >= keep_below {
            i -= 1;
        }
    }
    out.reverse();
    out
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod check;
#[cfg(test)]
mod tests;
