//! What a remote is sent: the next envelope of our ordinal feed, with every
//! operation the remote should get and nothing it should not.

use super::filter::RemoteFilter;
use super::wire::{SyncedOperation, WireOperation};
use super::Shared;
use crate::bus::{AnnouncedOp, FeedBuffer, FeedStep};
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
///
/// The operations come from what the bus announced (`announced`) when it
/// holds the ones that follow `after`, and from the store's ordinal feed
/// when the next was not announced within the feed's wait (`None` until
/// then).
pub(crate) fn next_envelope(
    shared: &Shared,
    remote: &str,
    filter: &RemoteFilter,
    after: u64,
    announced: &mut FeedBuffer,
) -> Result<Option<Outgoing>> {
    let store = shared.reactor.store();
    let committed = store.last_ordinal().get();
    let want = committed
        .saturating_sub(after)
        .min(shared.options.envelope_ordinals as u64) as usize;
    let items = match announced.next(after, committed, want) {
        FeedStep::Run(run) => run,
        FeedStep::Wait => return Ok(None),
        FeedStep::ReadStore => {
            let page = store.get_since_ordinal(Ordinal(after + 1), Paging::first(want))?;
            if let Some(last) = page.items.last() {
                announced.read_from_store(last.context.ordinal.get(), committed);
            }
            let unknown = |item| AnnouncedOp {
                item,
                originated: false,
            };
            page.items.into_iter().map(unknown).collect()
        }
    };
    let items: Vec<AnnouncedOp> = items
        .into_iter()
        .take_while(|a| a.item.context.ordinal.get() <= committed)
        .collect();
    // What the filter passes and the remote did not send us, then of that
    // the first copies (one index read for the whole envelope). What a
    // local execute originated is a first copy; the remote may still have
    // sent it to us since (through a third node), so the echo check stays.
    let mut wanted = Vec::with_capacity(items.len());
    for a in &items {
        let op = &a.item.operation;
        wanted.push(
            filter.passes(&a.item.context)
                && !shared.state.came_from(&op.id, &op.content_hash, remote)?,
        );
    }
    let candidates: Vec<&OperationWithContext> = items
        .iter()
        .zip(&wanted)
        .filter_map(|(a, wanted)| (*wanted && !a.originated).then_some(&a.item))
        .collect();
    let mut first_copies = store.first_copies(&candidates)?.into_iter();
    let mut originators = originators(shared, &candidates)?.into_iter();
    let mut out = Outgoing {
        first: after + 1,
        last: after,
        witness: Digest::default(),
        operations: Vec::new(),
    };
    let mut bytes = 0;
    for (a, wanted) in items.iter().zip(wanted) {
        let ordinal = a.item.context.ordinal.get();
        out.last = ordinal;
        out.witness = a.item.operation.hash;
        if !wanted {
            continue;
        }
        // Each candidate takes its first-copy answer and its originator.
        let (first_copy, originator) = match a.originated {
            true => (true, None),
            false => (
                first_copies.next() == Some(true),
                originators.next().flatten(),
            ),
        };
        if first_copy {
            let op = wire_operation(shared, &a.item, ordinal, a.originated, originator)?;
            bytes += op.bytes.len();
            out.operations.push(op);
            if bytes > ENVELOPE_BYTES {
                break;
            }
        }
    }
    Ok((out.last >= out.first).then_some(out))
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

/// Who originated each of `items`, as the sync store recorded it (`None`:
/// no remote sent it, so this node did): one iterator for them all.
pub(crate) fn originators(
    shared: &Shared,
    items: &[&OperationWithContext],
) -> Result<Vec<Option<[u8; 16]>>> {
    let keys: Vec<_> = items
        .iter()
        .map(|i| (i.operation.id, i.operation.content_hash))
        .collect();
    shared.state.originators(&keys)
}

/// One operation as it travels, with its originator and its originator's
/// signature: the one it arrived with, or ours when we originated it and
/// have a key. `originated`: known to be a local execute's (nothing to look
/// up); else `originator` is what [`originators`] found for it.
pub(crate) fn wire_operation(
    shared: &Shared,
    item: &OperationWithContext,
    ordinal: u64,
    originated: bool,
    originator: Option<[u8; 16]>,
) -> Result<WireOperation> {
    let synced = SyncedOperation::of(item);
    let (id, content) = (&item.operation.id, &item.operation.content_hash);
    let ours = |synced: &SyncedOperation| {
        shared
            .options
            .signing_key
            .as_ref()
            .map(|key| key.sign(synced))
    };
    let originator = originator.filter(|_| !originated);
    let signature = match (originated, shared.state.signature(id, content)?) {
        (true, _) => ours(&synced),
        (false, Some(signature)) => Some(signature),
        (false, None) if originator.is_none() => ours(&synced),
        (false, None) => None,
    };
    Ok(WireOperation {
        ordinal,
        bytes: synced.encode(),
        origin: originator.unwrap_or(shared.node.node),
        signature,
    })
}
