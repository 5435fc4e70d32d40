//! Every key the store writes, in one place. Owns the byte layout of keys in
//! each column family; knows nothing about values (see `codec`).
//!
//! Text fields are written as their UTF-8 bytes followed by a NUL
//! terminator. Ids cannot contain NUL (see `model::ids`), so the first NUL
//! ends the field: keys are unambiguous (`"a"+"bc"` and `"ab"+"c"` differ)
//! and prefix-free per field, and since NUL sorts below every other byte,
//! byte order equals (field by field) string order. Integers are big-endian
//! so byte order is numeric order.

use crate::model::{Branch, DocumentId, OperationId, Ordinal, Scope, SyncUnit};

/// Column family of operations, keyed by [`op_key`].
pub(crate) const CF_OPERATIONS: &str = "operations";
/// Column family of stream heads, keyed by [`unit_key`].
pub(crate) const CF_HEADS: &str = "heads";
/// Column family of the global ordinal feed, keyed by [`ordinal_key`].
pub(crate) const CF_ORDINALS: &str = "ordinals";
/// Column family of the operation-id index, keyed by [`op_id_key`].
pub(crate) const CF_OP_IDS: &str = "op_ids";
/// Column family of the view's snapshots.
pub(crate) const CF_SNAPSHOTS: &str = "snapshots";
/// Column family of the view's checkpoint and indexes.
pub(crate) const CF_VIEW_META: &str = "view_meta";
/// Column family of sync state (remotes, cursors, dead letters).
pub(crate) const CF_SYNC: &str = "sync";
/// Every column family of the database, created at first open so later
/// layers never need a migration to add theirs.
pub(crate) const ALL_CFS: [&str; 7] = [
    CF_OPERATIONS,
    CF_HEADS,
    CF_ORDINALS,
    CF_OP_IDS,
    CF_SNAPSHOTS,
    CF_VIEW_META,
    CF_SYNC,
];

/// Key of the format-version record in the default column family.
pub(crate) const META_FORMAT_KEY: &[u8] = b"meta/format_version";

// Format: value {ordinal: u64 BE}
/// Key of the last committed ordinal in the default column family, written
/// by every group commit beside the ordinal feed: a lost last feed entry
/// must not let the store hand its ordinal out again.
pub(crate) const META_LAST_ORDINAL_KEY: &[u8] = b"meta/last_ordinal";

const FIELD_END: u8 = 0;

fn push_field(out: &mut Vec<u8>, field: &str) {
    out.extend_from_slice(field.as_bytes());
    out.push(FIELD_END);
}

/// Splits the next NUL-terminated field off `bytes`.
fn take_field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&b| b == FIELD_END)?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

// Format: {document_id}\0
/// Prefix of every stream of a document.
pub(crate) fn document_prefix(document_id: &DocumentId) -> Vec<u8> {
    let mut out = Vec::with_capacity(document_id.as_str().len() + 1);
    push_field(&mut out, document_id.as_str());
    out
}

// Format: {document_id}\0{branch}\0
/// Prefix of every stream of a document on one branch.
pub(crate) fn document_branch_prefix(document_id: &DocumentId, branch: &Branch) -> Vec<u8> {
    let mut out = document_prefix(document_id);
    push_field(&mut out, branch.as_str());
    out
}

// Format: {document_id}\0{branch}\0{scope}\0
/// Key of a stream: its head's key and the prefix of its operations. Branch
/// sorts before scope so one scan lists a branch's scopes (`get_revisions`).
pub(crate) fn unit_key(unit: &SyncUnit) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        unit.document_id.as_str().len()
            + unit.branch.as_str().len()
            + unit.scope.as_str().len()
            + 3
            + 8,
    );
    push_field(&mut out, unit.document_id.as_str());
    push_field(&mut out, unit.branch.as_str());
    push_field(&mut out, unit.scope.as_str());
    out
}

/// Decodes a [`unit_key`], returning the unit and the bytes after it.
pub(crate) fn decode_unit_key(bytes: &[u8]) -> Option<(SyncUnit, &[u8])> {
    let (document, rest) = take_field(bytes)?;
    let (branch, rest) = take_field(rest)?;
    let (scope, rest) = take_field(rest)?;
    let unit = SyncUnit::new(
        DocumentId::from_bytes(document).ok()?,
        Scope::from_bytes(scope).ok()?,
        Branch::from_bytes(branch).ok()?,
    );
    Some((unit, rest))
}

// Format: {unit_key}{index: u64 BE}
/// Key of the operation at `index` of a stream, from its encoded unit key.
pub(crate) fn op_key_from_unit(unit_key: &[u8], index: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(unit_key.len() + 8);
    push_op_key(&mut out, unit_key, index);
    out
}

/// Appends the key of the operation at `index` of a stream to `out`
/// (exactly `unit_key.len() + 8` bytes).
pub(crate) fn push_op_key(out: &mut Vec<u8>, unit_key: &[u8], index: u64) {
    out.extend_from_slice(unit_key);
    out.extend_from_slice(&index.to_be_bytes());
}

/// Key of the operation at `index` of `unit`.
pub(crate) fn op_key(unit: &SyncUnit, index: u64) -> Vec<u8> {
    op_key_from_unit(&unit_key(unit), index)
}

/// Decodes an [`op_key`] into its stream and index.
pub(crate) fn decode_op_key(bytes: &[u8]) -> Option<(SyncUnit, u64)> {
    let (unit, rest) = decode_unit_key(bytes)?;
    let index = u64::from_be_bytes(rest.try_into().ok()?);
    Some((unit, index))
}

/// The index part of an operation key whose stream is already known.
pub(crate) fn op_key_index(bytes: &[u8]) -> Option<u64> {
    let tail = bytes.len().checked_sub(8)?;
    Some(u64::from_be_bytes(bytes[tail..].try_into().ok()?))
}

// Format: {ordinal: u64 BE}
/// Key of an entry in the ordinal feed.
pub(crate) fn ordinal_key(ordinal: Ordinal) -> [u8; 8] {
    ordinal.get().to_be_bytes()
}

/// Decodes an [`ordinal_key`].
pub(crate) fn decode_ordinal_key(bytes: &[u8]) -> Option<Ordinal> {
    Some(Ordinal(u64::from_be_bytes(bytes.try_into().ok()?)))
}

/// Length of the operation id that starts every [`op_id_key`] (the
/// family's bloom filter is on it).
pub(crate) const OP_ID_PREFIX_LEN: usize = 16;

// Format: {op_id: 16 bytes}{index: u64 BE}{skip: u64 BE}
/// Key of the operation-id index: every stored copy of an operation id.
pub(crate) fn op_id_key(op_id: &OperationId, index: u64, skip: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(op_id.as_bytes());
    out[16..24].copy_from_slice(&index.to_be_bytes());
    out[24..].copy_from_slice(&skip.to_be_bytes());
    out
}

/// Decodes an [`op_id_key`].
pub(crate) fn decode_op_id_key(bytes: &[u8]) -> Option<(OperationId, u64, u64)> {
    if bytes.len() != 32 {
        return None;
    }
    let id = OperationId(bytes[..16].try_into().ok()?);
    let index = u64::from_be_bytes(bytes[16..24].try_into().ok()?);
    let skip = u64::from_be_bytes(bytes[24..].try_into().ok()?);
    Some((id, index, skip))
}

// Format: {unit_key}{revision: u64 BE}
/// Key of a view snapshot of a stream at `revision` (the state after the
/// operations `0..revision`).
pub(crate) fn snapshot_key(unit_key: &[u8], revision: u64) -> Vec<u8> {
    op_key_from_unit(unit_key, revision)
}

/// Tags of the kinds of keys in the `view_meta` column family.
pub(crate) mod view_tag {
    /// The view's checkpoint (last applied ordinal).
    pub(crate) const CHECKPOINT: u8 = b'c';
    /// A document's header record, per branch.
    pub(crate) const HEADER: u8 = b'h';
    /// Slug → document.
    pub(crate) const SLUG: u8 = b's';
    /// Document type → documents.
    pub(crate) const TYPE: u8 = b't';
    /// Outgoing relationships.
    pub(crate) const OUTGOING: u8 = b'o';
    /// Incoming relationships.
    pub(crate) const INCOMING: u8 = b'i';
}

// Format: {tag: u8}{field}\0{field}\0...
/// A `view_meta` key: a tag byte, then NUL-terminated text fields. Callers
/// pass only validated ids (no NUL), so these keys are unambiguous too.
pub(crate) fn view_key(tag: u8, fields: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + fields.iter().map(|f| f.len() + 1).sum::<usize>());
    out.push(tag);
    for field in fields {
        push_field(&mut out, field);
    }
    out
}

/// Splits the NUL-terminated fields of a `view_meta` key after its tag.
pub(crate) fn view_key_fields(key: &[u8]) -> Option<Vec<&str>> {
    let mut rest = key.get(1..)?;
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let (field, tail) = take_field(rest)?;
        fields.push(std::str::from_utf8(field).ok()?);
        rest = tail;
    }
    Some(fields)
}

/// The smallest key greater than every key that starts with `prefix`, or
/// `None` when no such key exists (a prefix of only 0xFF bytes).
pub(crate) fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut bound = prefix.to_vec();
    while let Some(last) = bound.pop() {
        if last != u8::MAX {
            bound.push(last + 1);
            return Some(bound);
        }
    }
    None
}

#[cfg(test)]
mod tests;
