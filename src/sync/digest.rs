//! Anti-entropy: per stream, a digest of the set of operations held (their
//! count and the XOR of their content hashes, which are per id and
//! content). Peers exchange digests on connect and periodically; where
//! they differ, each side sends the other its whole set of the stream, and
//! loading (idempotent) fills whatever either lacks. This repairs what
//! cursors cannot see: a bug, or a peer restored from a backup.

use std::collections::HashMap;

use super::filter::RemoteFilter;
use super::outbox::{originators, wire_operation};
use super::wire::{StreamDigest, WireOperation};
use super::Shared;
use crate::error::Result;
use crate::model::{Digest, OperationContext, OperationWithContext, Ordinal, SyncUnit};
use crate::store::StreamInfo;

/// The streams `filter` passes, with their documents' types.
fn streams(shared: &Shared, filter: &RemoteFilter) -> Result<Vec<StreamInfo>> {
    Ok(shared
        .reactor
        .store()
        .all_streams()?
        .into_iter()
        .filter(|s| filter.passes(&context(s)))
        .collect())
}

fn context(stream: &StreamInfo) -> OperationContext {
    OperationContext {
        document_id: stream.unit.document_id.clone(),
        document_type: stream.document_type.clone(),
        scope: stream.unit.scope.clone(),
        branch: stream.unit.branch.clone(),
        ordinal: Ordinal(0),
    }
}

fn digest_of(ops: &[crate::model::Operation]) -> Digest {
    let mut digest = [0u8; 32];
    for op in ops {
        for (d, b) in digest.iter_mut().zip(op.content_hash.as_bytes()) {
            *d ^= b;
        }
    }
    Digest(digest)
}

/// Our digests of every stream `filter` passes.
pub(crate) fn digests(shared: &Shared, filter: &RemoteFilter) -> Result<Vec<StreamDigest>> {
    let store = shared.reactor.store();
    let mut out = Vec::new();
    for stream in streams(shared, filter)? {
        let set = store.stream_set(&stream.unit)?;
        out.push(StreamDigest {
            count: set.len() as u64,
            digest: digest_of(&set),
            unit: stream.unit,
        });
    }
    Ok(out)
}

/// What to send a peer whose digests are `theirs`: our whole set of every
/// stream (that `filter` passes) where theirs differs or is missing, in
/// chunks of at most `chunk` operations.
pub(crate) fn repairs(
    shared: &Shared,
    filter: &RemoteFilter,
    theirs: &[StreamDigest],
    chunk: usize,
) -> Result<Vec<Vec<WireOperation>>> {
    let theirs: HashMap<&SyncUnit, (u64, Digest)> = theirs
        .iter()
        .map(|d| (&d.unit, (d.count, d.digest)))
        .collect();
    let store = shared.reactor.store();
    let mut out: Vec<Vec<WireOperation>> = Vec::new();
    for stream in streams(shared, filter)? {
        let set = store.stream_set(&stream.unit)?;
        if theirs.get(&stream.unit) == Some(&(set.len() as u64, digest_of(&set))) {
            continue;
        }
        let context = context(&stream);
        let items: Vec<OperationWithContext> = set
            .into_iter()
            .map(|operation| OperationWithContext {
                operation,
                context: context.clone(),
            })
            .collect();
        let refs: Vec<&OperationWithContext> = items.iter().collect();
        for (item, originator) in items.iter().zip(originators(shared, &refs)?) {
            if out.last().is_none_or(|c| c.len() >= chunk) {
                out.push(Vec::new());
            }
            let wire = wire_operation(shared, item, 0, false, originator)?;
            out.last_mut().expect("pushed above").push(wire);
        }
    }
    Ok(out)
}
