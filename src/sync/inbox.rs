//! Loading what a remote sent: each operation checked (decodes, is what it
//! claims, is signed when it must be), refused ones kept as dead letters
//! with their reason, the rest handed to `Reactor::load`, one job per
//! document, and waited for until written.

use std::collections::BTreeMap;
use std::time::Duration;

use super::filter::RemoteOptions;
use super::sign;
use super::state::DeadLetter;
use super::wire::{SyncedOperation, WireOperation};
use super::Shared;
use crate::error::{Error, Result};
use crate::model::{Branch, DocumentId, OperationWithContext};
use crate::reactor::JobHandle;
use crate::store::SyncBatch;

/// What loading some operations came to.
#[derive(Default)]
pub(crate) struct Loaded {
    /// Operations handed to `load` and written.
    pub operations: u64,
    /// Operations refused for good.
    pub dead_letters: Vec<DeadLetter>,
}

/// An operation that passed the checks: its ordinal and bytes as they
/// came (for a dead letter, should its load refuse it), and what to load.
type Checked = (u64, Vec<u8>, OperationWithContext);

/// A load on its way: the checked operations by document, the jobs
/// loading them, and what was refused so far.
pub(crate) struct LoadInFlight {
    groups: Vec<((DocumentId, Branch), Vec<Checked>)>,
    handles: Vec<JobHandle>,
    loaded: Loaded,
}

/// Checks and loads `operations` from `remote`; returns once every load is
/// written. An error (not a refusal) means nothing may be acked: the
/// operations come again.
pub(crate) fn load(
    shared: &Shared,
    remote: &str,
    options: &RemoteOptions,
    operations: Vec<WireOperation>,
) -> Result<Loaded> {
    start(shared, remote, options, operations)?.finish(shared)
}

/// Checks `operations`, records their origin and submits their loads,
/// without waiting for them: a session checks the next envelope while the
/// reactor writes this one.
pub(crate) fn start(
    shared: &Shared,
    remote: &str,
    options: &RemoteOptions,
    operations: Vec<WireOperation>,
) -> Result<LoadInFlight> {
    let mut loaded = Loaded::default();
    let mut groups: BTreeMap<(DocumentId, Branch), Vec<Checked>> = BTreeMap::new();
    let mut origins = SyncBatch::default();
    let mut origin_keys = Vec::new();
    for wire in operations {
        let refuse = |reason: String, document_id: Option<String>| DeadLetter {
            ordinal: wire.ordinal,
            document_id,
            reason,
            bytes: wire.bytes.clone(),
        };
        let op = match SyncedOperation::decode(&wire.bytes) {
            Ok(op) => op,
            Err(reason) => {
                loaded.dead_letters.push(refuse(reason, None));
                continue;
            }
        };
        let document = Some(op.document_id.to_string());
        if let Err(reason) = op.check() {
            loaded.dead_letters.push(refuse(reason, document));
            continue;
        }
        if let Some(reason) = sign::refusal(&op, wire.signature.as_ref(), &options.trusted_keys) {
            loaded.dead_letters.push(refuse(reason, document));
            continue;
        }
        origin_keys.push(shared.state.put_origin(
            &mut origins,
            (&op.id, &op.content_hash),
            remote,
            &wire.origin,
        ));
        // The first valid signature stays: a later peer cannot replace the
        // originator's with its own. (Unsigned operations skip the lookup.)
        if let Some(signature) = wire.signature {
            let stored = shared.state.signature(&op.id, &op.content_hash)?;
            if stored.is_none() && sign::is_valid(&op, &signature) {
                shared
                    .state
                    .put_signature(&mut origins, &op.id, &op.content_hash, &signature);
            }
        }
        let key = (op.document_id.clone(), op.branch.clone());
        groups
            .entry(key)
            .or_default()
            .push((wire.ordinal, wire.bytes, op.into_loadable()));
    }
    // Origins first: once an operation is in the log, the outbox must
    // already know not to send it back.
    shared.state.write(origins)?;
    shared.state.remember_origins(origin_keys);
    let groups: Vec<_> = groups.into_iter().collect();
    let handles = submit_all(shared, &groups)?;
    Ok(LoadInFlight {
        groups,
        handles,
        loaded,
    })
}

fn submit_all(
    shared: &Shared,
    groups: &[((DocumentId, Branch), Vec<Checked>)],
) -> Result<Vec<JobHandle>> {
    let mut handles = Vec::with_capacity(groups.len());
    for ((document, branch), ops) in groups {
        let items: Vec<OperationWithContext> = ops.iter().map(|o| o.2.clone()).collect();
        handles.push(submit(shared, document, branch, items)?);
    }
    Ok(handles)
}

impl LoadInFlight {
    /// Whether every job of it has finished (written or failed).
    pub(crate) fn is_done(&self) -> bool {
        self.handles.iter().all(|h| {
            !matches!(
                h.status(),
                Ok(crate::reactor::JobStatus::Pending | crate::reactor::JobStatus::Running)
            )
        })
    }

    /// Waits for every job; a load the reactor refuses names the operation
    /// to dead-letter, and the rest of its document loads again.
    pub(crate) fn finish(self, shared: &Shared) -> Result<Loaded> {
        let LoadInFlight {
            groups,
            mut handles,
            mut loaded,
        } = self;
        let mut pending = groups;
        while !pending.is_empty() {
            let mut again = Vec::new();
            for (handle, ((document, branch), mut ops)) in handles.into_iter().zip(pending) {
                match handle.written(shared.options.load_timeout) {
                    Ok(_) => loaded.operations += ops.len() as u64,
                    Err(Error::JobFailed { job, error }) => {
                        let Some(action) = refused_action(&error) else {
                            return Err(Error::JobFailed { job, error });
                        };
                        let reason = error.to_string();
                        let (refused, rest): (Vec<_>, Vec<_>) = ops
                            .drain(..)
                            .partition(|o| o.2.operation.action.id == action);
                        if refused.is_empty() {
                            // The failure names an operation already stored
                            // (a merge reduces stored ones again): not this
                            // load's to refuse, and retrying would loop.
                            return Err(Error::JobFailed { job, error });
                        }
                        loaded.dead_letters.extend(refused.into_iter().map(
                            |(ordinal, bytes, _)| DeadLetter {
                                ordinal,
                                document_id: Some(document.to_string()),
                                reason: reason.clone(),
                                bytes,
                            },
                        ));
                        if !rest.is_empty() {
                            again.push(((document, branch), rest));
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            pending = again;
            handles = submit_all(shared, &pending)?;
        }
        Ok(loaded)
    }
}

/// The action a failed load names as the cause, when the failure is that
/// operation's for good (not the store's, not for now).
fn refused_action(error: &Error) -> Option<crate::model::ActionId> {
    match error {
        Error::InvalidLoad { action_id, .. } => Some(action_id.clone()),
        Error::ReducerPanicked {
            action_id: Some(action_id),
            ..
        } => Some(action_id.clone()),
        _ => None,
    }
}

/// Submits a load, waiting while the reactor's queue is full: a full
/// queue delays, never drops.
fn submit(
    shared: &Shared,
    document: &DocumentId,
    branch: &Branch,
    items: Vec<OperationWithContext>,
) -> Result<crate::reactor::JobHandle> {
    let mut wait = Duration::from_micros(200);
    loop {
        match shared
            .reactor
            .load(document.clone(), branch.clone(), items.clone())
        {
            Err(Error::QueueFull { .. }) => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}
