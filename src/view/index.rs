//! The view's metadata in `view_meta`: its checkpoint, each document's
//! header record, and the indexes derived from headers (slug, type,
//! relationships). All of it is written in the same batch as the
//! checkpoint, so a crash never leaves an index ahead of or behind it.

use std::collections::BTreeSet;

use rocksdb::{WriteBatch, DB};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::{self, view_tag};
use crate::model::{Branch, DocumentId, Ordinal};
use crate::models::DocumentHeader;

const V1: u8 = 1;

pub(crate) fn cf(db: &DB) -> &rocksdb::ColumnFamily {
    db.cf_handle(keys::CF_VIEW_META)
        .expect("column families are created when the store opens")
}

fn corrupt(what: &'static str) -> Error {
    Error::Corrupt {
        cf: keys::CF_VIEW_META,
        what,
    }
}

/// The `document` scope folded to the checkpoint: its revision and state
/// (the JSON header, or `null` before `CREATE_DOCUMENT`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeaderRecord {
    pub(crate) revision: u64,
    #[serde(with = "serde_bytes")]
    pub(crate) state: Vec<u8>,
}

impl HeaderRecord {
    pub(crate) fn header(&self) -> Option<DocumentHeader> {
        crate::models::decode_header(&self.state)
    }
}

pub(crate) fn header_key(document_id: &DocumentId, branch: &Branch) -> Vec<u8> {
    keys::view_key(view_tag::HEADER, &[document_id.as_str(), branch.as_str()])
}

/// Header records this build writes: v1 plus a checksum, so a flipped
/// bit is `Corrupt` (and found by `verify_view`) instead of a document
/// that reads as missing or as another header.
const V2: u8 = 2;
const CHECKSUM: usize = 32;

// Format (v2): {version: u8 = 2}{HeaderRecord: bincode}{blake3 of the bincode: 32 bytes}
// Format (v1): {version: u8 = 1}{HeaderRecord: bincode}
pub(crate) fn encode_header_record(record: &HeaderRecord) -> Vec<u8> {
    let mut out = vec![V2];
    bincode::serde::encode_into_std_write(record, &mut out, bincode::config::standard())
        .expect("encoding into a Vec cannot fail");
    let sum = blake3::hash(&out[1..]);
    out.extend_from_slice(sum.as_bytes());
    out
}

pub(crate) fn load_header_record(db: &DB, key: &[u8]) -> Result<Option<HeaderRecord>> {
    let Some(bytes) = db.get_pinned_cf(cf(db), key)? else {
        return Ok(None);
    };
    decode_header_record(&bytes).map(Some)
}

/// Decodes a header record value (the whole value: trailing bytes are
/// damage too).
pub(crate) fn decode_header_record(bytes: &[u8]) -> Result<HeaderRecord> {
    let body = match bytes.split_first() {
        Some((&V1, body)) => body,
        Some((&V2, rest)) if rest.len() >= CHECKSUM => {
            let (body, sum) = rest.split_at(rest.len() - CHECKSUM);
            if blake3::hash(body).as_bytes() != sum {
                return Err(corrupt("header record (checksum)"));
            }
            body
        }
        _ => return Err(corrupt("header record")),
    };
    match bincode::serde::decode_from_slice(body, crate::codec::decode_config()) {
        Ok((record, used)) if used == body.len() => Ok(record),
        _ => Err(corrupt("header record")),
    }
}

/// The version byte the checkpoint and index entries are written with.
const VALUE_V1: u8 = 1;

pub(crate) fn load_checkpoint(db: &DB) -> Result<Ordinal> {
    match db.get_pinned_cf(cf(db), [view_tag::CHECKPOINT])? {
        Some(bytes) => decode_checkpoint(&bytes),
        None => Ok(Ordinal(0)),
    }
}

// Format (v1): key {'c'}, value {version: u8 = 1}{ordinal: u64 BE}
// Format (before versions, still read): {ordinal: u64 BE}
pub(crate) fn put_checkpoint(db: &DB, batch: &mut WriteBatch, ordinal: Ordinal) {
    let mut value = [0u8; 9];
    value[0] = VALUE_V1;
    value[1..].copy_from_slice(&ordinal.get().to_be_bytes());
    batch.put_cf(cf(db), [view_tag::CHECKPOINT], value);
}

fn decode_checkpoint(bytes: &[u8]) -> Result<Ordinal> {
    let raw = match bytes {
        [VALUE_V1, rest @ ..] if rest.len() == 8 => rest,
        legacy if legacy.len() == 8 => legacy,
        _ => return Err(corrupt("checkpoint")),
    };
    let raw: [u8; 8] = raw.try_into().map_err(|_| corrupt("checkpoint"))?;
    Ok(Ordinal(u64::from_be_bytes(raw)))
}

/// Whether `value` is an index entry's: `{version: u8 = 1}`, or empty (as
/// written before versions).
pub(crate) fn is_index_value(value: &[u8]) -> bool {
    matches!(value, [] | [VALUE_V1])
}

pub(crate) fn put_header_record(
    db: &DB,
    batch: &mut WriteBatch,
    key: &[u8],
    record: &HeaderRecord,
) {
    batch.put_cf(cf(db), key, encode_header_record(record));
}

/// The index keys a header contributes (none when absent or deleted).
/// Indexes cover the `main` branch. Slugs and relationship types that could
/// not be key fields (empty, control characters) are not indexed.
pub(crate) fn index_entries(header: Option<&DocumentHeader>) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    let Some(h) = header.filter(|h| !h.deleted && h.branch == Branch::main()) else {
        return out;
    };
    let id = h.id.as_str();
    out.insert(keys::view_key(
        view_tag::TYPE,
        &[h.document_type.as_str(), id],
    ));
    if let Some(slug) = h.slug.as_deref().filter(|s| DocumentId::new(*s).is_ok()) {
        out.insert(keys::view_key(view_tag::SLUG, &[slug, id]));
    }
    for rel in &h.relationships {
        if DocumentId::new(rel.relationship_type.as_str()).is_err() {
            continue;
        }
        let (source, kind, target) = (
            rel.source.as_str(),
            rel.relationship_type.as_str(),
            rel.target.as_str(),
        );
        out.insert(keys::view_key(view_tag::OUTGOING, &[source, kind, target]));
        out.insert(keys::view_key(view_tag::INCOMING, &[target, kind, source]));
    }
    out
}

/// Adds to `batch` the index changes from `old` to `new`.
pub(crate) fn update_indexes(
    db: &DB,
    batch: &mut WriteBatch,
    old: Option<&DocumentHeader>,
    new: Option<&DocumentHeader>,
) {
    let (before, after) = (index_entries(old), index_entries(new));
    for key in before.difference(&after) {
        batch.delete_cf(cf(db), key);
    }
    for key in after.difference(&before) {
        batch.put_cf(cf(db), key, [VALUE_V1]);
    }
}

/// The field lists of every index key under `tag` + `prefix` fields,
/// skipping `offset` and returning at most `limit`.
pub(crate) fn scan_index(
    db: &DB,
    tag: u8,
    prefix: &[&str],
    offset: usize,
    limit: usize,
) -> Result<(Vec<Vec<String>>, bool)> {
    let start = keys::view_key(tag, prefix);
    let mut iter = db.raw_iterator_cf(cf(db));
    iter.seek(&start);
    let mut out = Vec::new();
    let mut skipped = 0;
    while let Some(key) = iter.key() {
        if !key.starts_with(&start) {
            break;
        }
        if skipped < offset {
            skipped += 1;
        } else if out.len() == limit {
            return Ok((out, true));
        } else {
            let fields = keys::view_key_fields(key).ok_or_else(|| corrupt("index key"))?;
            out.push(fields.into_iter().map(str::to_owned).collect());
        }
        iter.next();
    }
    iter.status()?;
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_read_in_both_forms_and_refuse_others() {
        let at = |n: u64| Ordinal(n);
        let mut v1 = vec![VALUE_V1];
        v1.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(decode_checkpoint(&v1).expect("v1"), at(42));
        assert_eq!(
            decode_checkpoint(&7u64.to_be_bytes()).expect("legacy"),
            at(7)
        );
        for bad in [&[][..], &[1, 2, 3], &[9; 9], &[1; 10]] {
            assert!(decode_checkpoint(bad).is_err(), "{bad:?}");
        }
        assert!(is_index_value(&[]) && is_index_value(&[VALUE_V1]));
        assert!(!is_index_value(&[2]) && !is_index_value(&[1, 0]));
    }
}
