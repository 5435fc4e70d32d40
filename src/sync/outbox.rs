//! What a remote is sent: the next envelope of our ordinal feed, with every
//! operation the remote should get and nothing it should not.

use super::filter::RemoteFilter;
use super::wire::{SyncedOperation, WireOperation};
use super::Shared;
use crate::error::Result;
use crate::model::{Digest, OperationWithContext, Ordinal};
use crate::store::Paging;

/// An envelope's worth of our ordinals.
pub(crate) struct Outgoing {
    pub first: u64,
    pub last: u64,
    /// The chain hash of our operation at `last`.
    pub witness: Digest,
    pub operations: Vec<WireOperation>,
}

/// Above this many bytes of operations an envelope ends early (its range
/// ends at the operation that crossed it).
const ENVELOPE_BYTES: usize = 4 << 20;

/// The envelope after ordinal `after` for `remote`, or `None` when every
/// committed ordinal is covered. An operation goes when the filter passes
/// it (never the `local` scope), the remote did not send it to us, and
/// it is the first stored copy of its content (a merge's re-appended copies
/// stay home).
pub(crate) fn next_envelope(
    shared: &Shared,
    remote: &str,
    filter: &RemoteFilter,
    after: u64,
) -> Result<Option<Outgoing>> {
    let store = shared.reactor.store();
    let committed = store.last_ordinal().get();
    if after >= committed {
        return Ok(None);
    }
    let want = (committed - after).min(shared.options.envelope_ordinals as u64) as usize;
    let page = store.get_since_ordinal(Ordinal(after + 1), Paging::first(want))?;
    let mut out = Outgoing {
        first: after + 1,
        last: after,
        witness: Digest::default(),
        operations: Vec::new(),
    };
    let mut bytes = 0;
    for item in page.items {
        let ordinal = item.context.ordinal.get();
        if ordinal > committed {
            break;
        }
        out.last = ordinal;
        out.witness = item.operation.hash;
        if goes_to(shared, remote, filter, &item)? {
            let op = wire_operation(shared, &item, ordinal)?;
            bytes += op.bytes.len();
            out.operations.push(op);
            if bytes > ENVELOPE_BYTES {
                break;
            }
        }
    }
    Ok((out.last >= out.first).then_some(out))
}

fn goes_to(
    shared: &Shared,
    remote: &str,
    filter: &RemoteFilter,
    item: &OperationWithContext,
) -> Result<bool> {
    let op = &item.operation;
    Ok(filter.passes(&item.context)
        && !shared.state.came_from(&op.id, &op.content_hash, remote)?
        && shared
            .reactor
            .store()
            .is_first_copy(&item.context.unit(), op)?)
}

/// The chain hash of our operation at `ordinal`, if we hold one there.
pub(crate) fn witness_at(shared: &Shared, ordinal: u64) -> Result<Option<Digest>> {
    let page = shared
        .reactor
        .store()
        .get_since_ordinal(Ordinal(ordinal), Paging::first(1))?;
    Ok(page
        .items
        .first()
        .filter(|item| item.context.ordinal.get() == ordinal)
        .map(|item| item.operation.hash))
}

/// One operation as it travels, with its originator's signature: the one
/// it arrived with, or ours when we originated it and have a key.
pub(crate) fn wire_operation(
    shared: &Shared,
    item: &OperationWithContext,
    ordinal: u64,
) -> Result<WireOperation> {
    let synced = SyncedOperation::of(item);
    let (id, content) = (&item.operation.id, &item.operation.content_hash);
    let signature = match shared.state.signature(id, content)? {
        Some(signature) => Some(signature),
        None => match &shared.options.signing_key {
            Some(key) if !shared.state.came_from_any(id, content)? => Some(key.sign(&synced)),
            _ => None,
        },
    };
    Ok(WireOperation {
        ordinal,
        bytes: synced.encode(),
        signature,
    })
}
