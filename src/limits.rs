//! The engine's size limits, in one place. Each is enforced where input
//! enters (before anything is queued or written) with a named error, so a
//! caller learns which limit and by how much; and each bounds what a
//! damaged or hostile byte string can make the engine allocate.
//!
//! | limit | bounds | refused with |
//! | --- | --- | --- |
//! | [`MAX_ID_LEN`](crate::MAX_ID_LEN) | document, scope, branch, action and type ids | [`IdError::TooLong`](crate::IdError) |
//! | [`MAX_ACTION_BYTES`] | an action's input plus context | [`Error::LimitExceeded`] (`execute`); [`Error::InvalidLoad`] (`load`, so sync dead-letters that one operation) |
//! | [`MAX_OPERATION_BYTES`] | one encoded operation (`OperationStore::apply`) | [`InvalidOperationReason::TooLarge`](crate::InvalidOperationReason) |
//! | [`MAX_JOB_ACTIONS`] | actions in one job (`execute`, `execute_and_wait`, `submit_batch`) | [`Error::LimitExceeded`] |
//! | [`MAX_LOAD_OPERATIONS`] | operations in one `load` | [`Error::LimitExceeded`] |
//! | [`MAX_ENVELOPE_BYTES`] | one sync frame | the session ends (`"its length is wrong"`) |
//!
//! Page sizes have no upper bound: `Paging::all()` is one page by design,
//! and the caller chooses its memory; a limit of 0 is `InvalidOptions`.

use crate::error::{Error, Result};
use crate::model::Action;

/// The most bytes an action's input and context may hold together (16 MiB).
pub const MAX_ACTION_BYTES: usize = 16 << 20;
/// The most bytes one stored operation may take, encoded: an action at
/// [`MAX_ACTION_BYTES`] plus room for its ids and an error message.
pub const MAX_OPERATION_BYTES: usize = MAX_ACTION_BYTES + (1 << 20);
/// The most actions one job may carry.
pub const MAX_JOB_ACTIONS: usize = 10_000;
/// The most operations one `load` may carry.
pub const MAX_LOAD_OPERATIONS: usize = 100_000;
/// The most bytes one sync frame's payload may hold.
pub const MAX_ENVELOPE_BYTES: usize = crate::sync::MAX_PAYLOAD;

/// Bytes an action counts against [`MAX_ACTION_BYTES`].
pub(crate) fn action_bytes(action: &Action) -> usize {
    action.input.len() + action.context.as_ref().map_or(0, |c| c.len())
}

/// `Err(LimitExceeded)` when `actual` is past `max`.
pub(crate) fn check(what: &'static str, actual: usize, max: usize) -> Result<()> {
    if actual > max {
        return Err(Error::LimitExceeded {
            what,
            max: max as u64,
            actual: actual as u64,
        });
    }
    Ok(())
}

/// The limits of one job's actions: their number, and each one's size.
pub(crate) fn check_job(actions: &[Action]) -> Result<()> {
    check("actions in a job", actions.len(), MAX_JOB_ACTIONS)?;
    for action in actions {
        check(
            "bytes of an action's input and context",
            action_bytes(action),
            MAX_ACTION_BYTES,
        )?;
    }
    Ok(())
}
