//! Re-checking hash chains against what is on disk.

use std::collections::BTreeMap;

use rocksdb::ReadOptions;

use crate::codec;
use crate::error::Result;
use crate::keys;
use crate::model::{Digest, SyncUnit};

use super::commit::cf_handles;
use super::{chain, OperationStore};

/// What is wrong at a broken link.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainFault {
    /// The stored hash is not the hash of the predecessor and the content:
    /// the operation (or one before it) was edited.
    HashMismatch,
    /// An index is missing: the stream jumps from `expected` to this one.
    Gap {
        /// The index that should have come next.
        expected: u64,
    },
    /// The stored bytes do not decode.
    Undecodable,
    /// The head disagrees with the last operation (its hash, the count, or
    /// the state it keeps).
    HeadMismatch,
    /// The operation's ordinal (outside its hash: it is assigned at commit)
    /// is not past its predecessor's, or the ordinal index does not name
    /// this operation at it.
    OrdinalMismatch,
    /// The operation-id index has no entry for this operation (its id,
    /// index and skip, in this stream): deduplication would miss it, and a
    /// resubmitted action would be applied twice. Or (from `verify_all`)
    /// an entry names an operation the stream does not hold at that index:
    /// its action would be taken as applied when it never was.
    OpIdIndexMismatch,
}

/// The first broken place found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokenLink {
    /// The stream.
    pub unit: SyncUnit,
    /// The index of the first operation that fails (for a head mismatch,
    /// the head's revision).
    pub index: u64,
    /// What is wrong.
    pub fault: ChainFault,
}

/// The outcome of a verification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Streams checked (up to and including a broken one).
    pub streams_checked: u64,
    /// Operations whose link was recomputed.
    pub operations_checked: u64,
    /// The first broken link, `None` when every chain holds.
    pub first_broken: Option<BrokenLink>,
}

impl VerifyReport {
    /// Whether every checked chain holds.
    pub fn is_clean(&self) -> bool {
        self.first_broken.is_none()
    }
}

impl OperationStore {
    /// Whether the operation-id index holds `op` (id, index, skip) as an
    /// operation of the stream `unit_key`.
    fn op_id_indexed(&self, unit_key: &[u8], op: &crate::model::Operation) -> Result<bool> {
        let cf = cf_handles(self.db()).op_ids;
        let key = keys::op_id_key(&op.id, op.index, op.skip);
        Ok(match self.db().get_pinned_cf(cf, key)? {
            Some(value) => codec::decode_op_id(&value).is_ok_and(|unit| unit == unit_key),
            None => false,
        })
    }

    /// Recomputes the hash chain of one stream from its first operation and
    /// compares it with every stored hash and with the head.
    pub fn verify(&self, unit: &SyncUnit) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        self.verify_into(unit, &mut report)?;
        Ok(report)
    }

    /// [`verify`](Self::verify) for every stream, in key order: every
    /// stream with a head and every stream with operations (so a lost
    /// head is a `HeadMismatch`, not a stream nobody checks); stops at the
    /// first broken link.
    pub fn verify_all(&self) -> Result<VerifyReport> {
        let mut units: BTreeMap<Vec<u8>, SyncUnit> = self
            .all_heads()?
            .into_iter()
            .map(|s| (keys::unit_key(&s.unit), s.unit))
            .collect();
        for unit in self.streams_with_operations()? {
            units.entry(keys::unit_key(&unit)).or_insert(unit);
        }
        let mut report = VerifyReport::default();
        for unit in units.values() {
            self.verify_into(unit, &mut report)?;
            if report.first_broken.is_some() {
                return Ok(report);
            }
        }
        report.first_broken = self.dangling_op_id()?;
        Ok(report)
    }

    /// The first operation-id index entry that names no such operation
    /// (the stream holds no operation of that id and skip at that index):
    /// deduplication would take its action as applied when it never was.
    fn dangling_op_id(&self) -> Result<Option<BrokenLink>> {
        let cfs = cf_handles(self.db());
        let mut iter = self.db().raw_iterator_cf(cfs.op_ids);
        iter.seek_to_first();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let corrupt = |what| crate::Error::Corrupt {
                cf: keys::CF_OP_IDS,
                what,
            };
            let (op_id, index, skip) =
                keys::decode_op_id_key(key).ok_or_else(|| corrupt("op id key"))?;
            let unit_key = codec::decode_op_id(value)?;
            let (unit, _) =
                keys::decode_unit_key(unit_key).ok_or_else(|| corrupt("op id value"))?;
            let stored = self.get_with_ordinal(unit_key, index);
            let holds = matches!(&stored, Ok(Some((op, _))) if op.id == op_id && op.skip == skip);
            if !holds {
                return Ok(Some(BrokenLink {
                    unit,
                    index,
                    fault: ChainFault::OpIdIndexMismatch,
                }));
            }
            iter.next();
        }
        iter.status()?;
        Ok(None)
    }

    /// Every stream that holds operations, read from the operations
    /// themselves (one seek per stream), not from the heads.
    fn streams_with_operations(&self) -> Result<Vec<SyncUnit>> {
        let mut iter = self.db().raw_iterator_cf(cf_handles(self.db()).operations);
        iter.seek_to_first();
        let mut units = Vec::new();
        while let Some(key) = iter.key() {
            // A key whose stream does not decode names no stream to
            // report; the tamper checks of its neighbours still run.
            let unit_key = &key[..key.len().saturating_sub(8)];
            let next = keys::prefix_upper_bound(unit_key);
            if let Some((unit, [])) = keys::decode_unit_key(unit_key) {
                units.push(unit);
            }
            match next {
                Some(next) if !unit_key.is_empty() => iter.seek(next),
                _ => iter.next(),
            }
        }
        iter.status()?;
        Ok(units)
    }

    fn verify_into(&self, unit: &SyncUnit, report: &mut VerifyReport) -> Result<()> {
        report.streams_checked += 1;
        let broken = |index, fault| {
            Some(BrokenLink {
                unit: unit.clone(),
                index,
                fault,
            })
        };
        let unit_key = keys::unit_key(unit);
        let mut read = ReadOptions::default();
        if let Some(upper) = keys::prefix_upper_bound(&unit_key) {
            read.set_iterate_upper_bound(upper);
        }
        let mut iter = self
            .db()
            .raw_iterator_cf_opt(cf_handles(self.db()).operations, read);
        iter.seek(&unit_key);
        let mut expected = 0u64;
        let mut previous = Digest::default();
        let mut last_state_hash = None;
        let mut last_ordinal = crate::model::Ordinal(0);
        // A head that does not decode (its checksum fails) is reported
        // where the chain ends, once the chain itself has been checked.
        let (head, head_damaged) = match self.head_with_state(&unit_key) {
            Ok(head) => (head, false),
            Err(crate::Error::Corrupt { .. }) => (None, true),
            Err(e) => return Err(e),
        };
        let document_type = head.as_ref().map(|(h, _)| h.document_type.as_str());
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let Some(index) = keys::op_key_index(key).filter(|_| key.len() == unit_key.len() + 8)
            else {
                report.first_broken = broken(expected, ChainFault::Undecodable);
                return Ok(());
            };
            if index != expected {
                report.first_broken = broken(index, ChainFault::Gap { expected });
                return Ok(());
            }
            let decoded = codec::decode_operation(value);
            let parts = codec::split_operation(value);
            let (Ok((op, ordinal)), Ok(parts)) = (decoded, parts) else {
                report.first_broken = broken(index, ChainFault::Undecodable);
                return Ok(());
            };
            if op.index != index || chain::link(&previous, &unit_key, parts.content) != parts.hash {
                report.first_broken = broken(index, ChainFault::HashMismatch);
                return Ok(());
            }
            let indexed = match self.ordinal_names(&unit_key, index, ordinal, document_type) {
                Ok(named) => named,
                // A damaged ordinal-index value names nothing.
                Err(crate::Error::Corrupt { .. }) => false,
                Err(e) => return Err(e),
            };
            if ordinal <= last_ordinal || !indexed {
                report.first_broken = broken(index, ChainFault::OrdinalMismatch);
                return Ok(());
            }
            last_ordinal = ordinal;
            if !self.op_id_indexed(&unit_key, &op)? {
                report.first_broken = broken(index, ChainFault::OpIdIndexMismatch);
                return Ok(());
            }
            report.operations_checked += 1;
            previous = parts.hash;
            last_state_hash = Some(op.state_hash);
            expected += 1;
            iter.next();
        }
        iter.status()?;
        let head_ok = match &head {
            // A kept state must be the one the last operation hashed.
            Some((h, kept)) => {
                h.next_index == expected
                    && h.last_hash == previous
                    && kept
                        .as_ref()
                        .is_none_or(|k| k.intact() && Some(k.digest) == last_state_hash)
            }
            None => expected == 0 && !head_damaged,
        };
        if !head_ok {
            let at = head.map_or(expected, |(h, _)| h.next_index);
            report.first_broken = broken(at, ChainFault::HeadMismatch);
        }
        Ok(())
    }
}
