//! RocksDB write batches, built by the store itself.
//!
//! Why: an append makes three puts per operation and one for the head.
//! Through `WriteBatch::put_cf` that is one FFI call and one copy per put,
//! made by the commit leader while every other writer waits. Instead each
//! caller lays out its puts in its own buffer before any lock
//! ([`put`]), the leader joins the buffers behind one header and patches
//! the ordinals in ([`BatchBuilder`]), and RocksDB takes the whole batch
//! in one copy (`WriteBatch::from_data`).
//!
//! The layout is RocksDB's write-batch format, which is also its WAL
//! record format: a 12-byte header (sequence number, then the count of
//! records, little-endian) and per put
//! `0x05 varint32(family id) varint32(key length) key varint32(value length) value`.
//! Column family ids are learned at open from a batch RocksDB builds
//! itself, and that probe also checks the layout byte for byte: a RocksDB
//! that lays batches out differently is refused at open, never handed a
//! batch it would misread.
//!
//! This module owns only that layout; what keys and values mean belongs to
//! `keys` and `codec`.

use std::ops::Range;

use rocksdb::{ColumnFamily, WriteBatch};

use crate::error::{Error, Result};

/// Sequence number (8 bytes) and record count (4 bytes).
const HEADER: usize = 12;
/// The record tag of a put into a column family other than the default.
const PUT_CF: u8 = 0x05;
/// Most bytes [`put`] adds besides the key and the value.
pub(crate) const PUT_OVERHEAD: usize = 1 + 5 + 5 + 5;
/// Longest key or value a record can carry (its length is a varint32).
pub(crate) const MAX_FIELD: usize = u32::MAX as usize;

/// RocksDB's id of the default column family.
pub(crate) const DEFAULT_FAMILY: u32 = 0;

/// Appends one put to `records`; returns where its key and its value are.
/// Key and value must each be at most [`MAX_FIELD`] bytes.
pub(crate) fn put(
    records: &mut Vec<u8>,
    family: u32,
    key: &[u8],
    value: &[u8],
) -> (Range<usize>, Range<usize>) {
    debug_assert!(key.len() <= MAX_FIELD && value.len() <= MAX_FIELD);
    records.push(PUT_CF);
    push_varint32(records, family);
    push_varint32(records, key.len() as u32);
    let key_at = records.len()..records.len() + key.len();
    records.extend_from_slice(key);
    push_varint32(records, value.len() as u32);
    let value_at = records.len()..records.len() + value.len();
    records.extend_from_slice(value);
    (key_at, value_at)
}

fn push_varint32(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value = 0u32;
    for (i, &byte) in bytes.iter().enumerate().take(5) {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// The id RocksDB gives a column family inside write batches, read from a
/// one-put batch RocksDB builds itself; fails unless our [`put`] lays out
/// that same put byte for byte.
pub(crate) fn family_id(family: &ColumnFamily) -> Result<u32> {
    let unsupported = || Error::UnsupportedRocksDb {
        reason: "its write batch layout differs from the one this build writes",
    };
    let mut probe = WriteBatch::default();
    probe.put_cf(family, b"key", b"value");
    let data = probe.data();
    let records = data.get(HEADER..).ok_or_else(unsupported)?;
    let id = match records.split_first() {
        Some((&PUT_CF, rest)) => read_varint32(rest).ok_or_else(unsupported)?.0,
        _ => return Err(unsupported()),
    };
    let mut ours = Vec::new();
    put(&mut ours, id, b"key", b"value");
    if ours != records || data[8..HEADER] != 1u32.to_le_bytes() {
        return Err(unsupported());
    }
    Ok(id)
}

/// The write side's column family ids, as write batches name them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FamilyIds {
    pub(crate) operations: u32,
    pub(crate) heads: u32,
    pub(crate) ordinals: u32,
    pub(crate) op_ids: u32,
}

impl FamilyIds {
    /// Learns the ids (and checks the layout) at open.
    pub(crate) fn learn(db: &rocksdb::DB) -> Result<Self> {
        let cfs = super::commit::cf_handles(db);
        Ok(Self {
            operations: family_id(cfs.operations)?,
            heads: family_id(cfs.heads)?,
            ordinals: family_id(cfs.ordinals)?,
            op_ids: family_id(cfs.op_ids)?,
        })
    }
}

/// An empty buffer for one append's records, with room for `capacity`
/// bytes of them. It starts with space for a batch header, so that an
/// append committed alone becomes the batch without being copied.
pub(crate) fn records(capacity: usize) -> Vec<u8> {
    let mut records = Vec::with_capacity(HEADER + capacity);
    records.resize(HEADER, 0);
    records
}

/// One batch: a header, then the records of one or more appends.
pub(crate) struct BatchBuilder {
    rep: Vec<u8>,
    count: u32,
}

impl BatchBuilder {
    /// Starts a batch from one append's [`records`] (`count` of them),
    /// taking its buffer as is, with room for `more` bytes of other
    /// appends' records. Offsets into `records` stay valid in the batch.
    pub(crate) fn start(mut records: Vec<u8>, count: u32, more: usize) -> Self {
        records.reserve(more);
        Self {
            rep: records,
            count,
        }
    }

    /// Adds another append's [`records`] (`count` of them). Returns the
    /// shift to add to an offset into `records` to find it in the batch.
    pub(crate) fn append(&mut self, records: &[u8], count: u32) -> usize {
        let shift = self.rep.len() - HEADER;
        self.rep.extend_from_slice(&records[HEADER..]);
        self.count += count;
        shift
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.rep
    }

    /// The RocksDB batch (the sequence number is RocksDB's to assign).
    pub(crate) fn finish(mut self) -> WriteBatch {
        self.rep[8..HEADER].copy_from_slice(&self.count.to_le_bytes());
        WriteBatch::from_data(&self.rep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_width() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            u32::MAX,
        ] {
            let mut out = Vec::new();
            push_varint32(&mut out, value);
            assert_eq!(read_varint32(&out), Some((value, &[][..])), "{value}");
        }
        assert_eq!(read_varint32(&[0x80, 0x80]), None, "unterminated");
    }

    #[test]
    fn our_batches_are_the_ones_rocksdb_builds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let db = rocksdb::DB::open_cf(&options, dir.path(), ["a", "b"]).expect("open");
        let (a, b) = (db.cf_handle("a").expect("a"), db.cf_handle("b").expect("b"));
        let (id_a, id_b) = (family_id(a).expect("a"), family_id(b).expect("b"));
        assert_ne!(id_a, id_b);

        let long = vec![7u8; 300]; // a two-byte length
        let mut theirs = WriteBatch::default();
        theirs.put_cf(a, b"k1", b"v1");
        theirs.put_cf(b, &long, b"");
        theirs.put_cf(a, b"", &long);
        // Two appends' records joined into one batch.
        let mut first = records(0);
        put(&mut first, id_a, b"k1", b"v1");
        let mut second = records(0);
        let (key, value) = put(&mut second, id_b, &long, b"");
        assert!(value.is_empty());
        put(&mut second, id_a, b"", &long);
        let mut ours = BatchBuilder::start(first, 1, second.len());
        let shift = ours.append(&second, 2);
        assert_eq!(
            &ours.bytes_mut()[shift + key.start..shift + key.end],
            &long[..]
        );
        let ours = ours.finish();
        assert_eq!(ours.data(), theirs.data());

        db.write(ours).expect("RocksDB takes the batch");
        assert_eq!(db.get_cf(b, &long).expect("read"), Some(Vec::new()));
        assert_eq!(db.get_cf(a, b"").expect("read"), Some(long));
    }
}
