//! What the sync layer needs of the store: raw reads and atomic writes of
//! the `sync` column family (whose keys and values the sync layer owns),
//! and two questions about the log: is a stored copy the first of its
//! content in its stream, and what set of operations does a stream hold.
//! Nothing here writes the log.

use std::collections::HashSet;

use rocksdb::{DBRawIterator, ReadOptions, WriteBatch, WriteOptions};

use crate::codec;
use crate::error::{Error, Result};
use crate::keys;
use crate::model::{Digest, Operation, OperationId, OperationWithContext, SyncUnit};

use super::commit::cf_handles;
use super::{Durability, OperationStore};

/// Puts and deletes in the `sync` column family, written atomically by
/// [`OperationStore::sync_write`].
#[derive(Default)]
pub(crate) struct SyncBatch {
    batch: Vec<SyncChange>,
}

enum SyncChange {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    DeletePrefix(Vec<u8>),
}

impl SyncBatch {
    pub(crate) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.batch.push(SyncChange::Put(key, value));
    }

    pub(crate) fn delete(&mut self, key: Vec<u8>) {
        self.batch.push(SyncChange::Delete(key));
    }

    /// Deletes every key that starts with `prefix`.
    pub(crate) fn delete_prefix(&mut self, prefix: Vec<u8>) {
        self.batch.push(SyncChange::DeletePrefix(prefix));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

impl OperationStore {
    fn sync_cf(&self) -> &rocksdb::ColumnFamily {
        self.db()
            .cf_handle(keys::CF_SYNC)
            .expect("column families are created when the store opens")
    }

    /// One value of the `sync` column family.
    pub(crate) fn sync_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db().get_cf(self.sync_cf(), key)?)
    }

    /// Whether the `sync` column family holds `key`.
    pub(crate) fn sync_contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.db().get_pinned_cf(self.sync_cf(), key)?.is_some())
    }

    /// Up to `limit` entries whose key starts with `prefix`, in key order.
    pub(crate) fn sync_scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut read = ReadOptions::default();
        if let Some(upper) = keys::prefix_upper_bound(prefix) {
            read.set_iterate_upper_bound(upper);
        }
        let mut iter = self.db().raw_iterator_cf_opt(self.sync_cf(), read);
        iter.seek(prefix);
        let mut out = Vec::new();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if out.len() == limit {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
            iter.next();
        }
        iter.status()?;
        Ok(out)
    }

    /// For each of `prefixes`, the values of the keys that start with it,
    /// in key order: one iterator for them all (a scan per prefix makes an
    /// iterator each, which costs more than the seek).
    pub(crate) fn sync_scan_each(&self, prefixes: &[Vec<u8>]) -> Result<Vec<Vec<Vec<u8>>>> {
        let mut order: Vec<usize> = (0..prefixes.len()).collect();
        order.sort_by(|a, b| prefixes[*a].cmp(&prefixes[*b]));
        let mut out = vec![Vec::new(); prefixes.len()];
        let mut iter = self.db().raw_iterator_cf(self.sync_cf());
        for i in order {
            let prefix = &prefixes[i];
            iter.seek(prefix);
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                if !key.starts_with(prefix) {
                    break;
                }
                out[i].push(value.to_vec());
                iter.next();
            }
        }
        iter.status()?;
        Ok(out)
    }

    /// How many keys start with `prefix`, counting at most `limit` (values
    /// are not read).
    pub(crate) fn sync_count(&self, prefix: &[u8], limit: usize) -> Result<usize> {
        let mut read = ReadOptions::default();
        if let Some(upper) = keys::prefix_upper_bound(prefix) {
            read.set_iterate_upper_bound(upper);
        }
        let mut iter = self.db().raw_iterator_cf_opt(self.sync_cf(), read);
        iter.seek(prefix);
        let mut count = 0;
        while iter.valid() && count < limit {
            count += 1;
            iter.next();
        }
        iter.status()?;
        Ok(count)
    }

    /// The last key that starts with `prefix`, if any.
    pub(crate) fn sync_last_key(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut iter = self.db().raw_iterator_cf(self.sync_cf());
        match keys::prefix_upper_bound(prefix) {
            Some(upper) => iter.seek_for_prev(upper),
            None => iter.seek_to_last(),
        }
        // seek_for_prev lands on the upper bound itself when it exists.
        while iter
            .key()
            .is_some_and(|k| !k.starts_with(prefix) && k > prefix)
        {
            iter.prev();
        }
        iter.status()?;
        Ok(iter
            .key()
            .filter(|k| k.starts_with(prefix))
            .map(<[u8]>::to_vec))
    }

    /// Writes `batch` atomically, with the store's durability. Written after
    /// the log writes it describes returned, it lands after them in the
    /// WAL: a crash never keeps it without them.
    pub(crate) fn sync_write(&self, batch: SyncBatch) -> Result<()> {
        self.check_writable()?;
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let cf = self.sync_cf();
        let mut write = WriteBatch::default();
        for change in batch.batch {
            match change {
                SyncChange::Put(key, value) => write.put_cf(cf, key, value),
                SyncChange::Delete(key) => write.delete_cf(cf, key),
                SyncChange::DeletePrefix(prefix) => match keys::prefix_upper_bound(&prefix) {
                    Some(upper) => write.delete_range_cf(cf, prefix, upper),
                    None => write.delete_range_cf(cf, prefix, vec![0xff; 64]),
                },
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(self.durability() == Durability::Synced);
        self.db().write_opt(write, &options)?;
        Ok(())
    }

    /// For each stored operation, whether it is the first copy of its
    /// content in its stream: no copy at a lower index has the same id and
    /// content hash. A merge that re-appends a suffix writes later copies;
    /// sync sends only first copies, so every operation travels once. One
    /// iterator of the op-id index serves them all.
    pub(crate) fn first_copies(&self, items: &[&OperationWithContext]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(items.len());
        if items.is_empty() {
            return Ok(out);
        }
        let cf = cf_handles(self.db()).op_ids;
        let mut read = ReadOptions::default();
        read.set_prefix_same_as_start(true);
        let mut iter = self.db().raw_iterator_cf_opt(cf, read);
        for item in items {
            let op = &item.operation;
            let mut first = true;
            for index in copies_below(&mut iter, &op.id, op.index)? {
                let copy = self.get(&item.context.unit(), index)?;
                if copy.is_some_and(|copy| copy.content_hash == op.content_hash) {
                    first = false;
                    break;
                }
            }
            out.push(first);
        }
        Ok(out)
    }

    /// The set of operations a stream holds: its first copies, one per
    /// distinct (id, content hash), in log order.
    pub(crate) fn stream_set(&self, unit: &SyncUnit) -> Result<Vec<Operation>> {
        let unit_key = keys::unit_key(unit);
        let mut read = ReadOptions::default();
        if let Some(upper) = keys::prefix_upper_bound(&unit_key) {
            read.set_iterate_upper_bound(upper);
        }
        let cf = cf_handles(self.db()).operations;
        let mut iter = self.db().raw_iterator_cf_opt(cf, read);
        iter.seek(&unit_key);
        let mut seen: HashSet<(OperationId, Digest)> = HashSet::new();
        let mut out = Vec::new();
        while let Some(value) = iter.value() {
            let (op, _) = codec::decode_operation(value)?;
            if seen.insert((op.id, op.content_hash)) {
                out.push(op);
            }
            iter.next();
        }
        iter.status()?;
        Ok(out)
    }
}

impl OperationStore {
    /// The ordinal of a stream's last stored operation (0 when empty).
    pub(crate) fn last_ordinal_of(&self, unit: &SyncUnit) -> Result<crate::model::Ordinal> {
        let Some(head) = self.head(unit)? else {
            return Ok(crate::model::Ordinal(0));
        };
        let Some(last) = head.revision.get().checked_sub(1) else {
            return Ok(crate::model::Ordinal(0));
        };
        let cf = cf_handles(self.db()).operations;
        match self.db().get_pinned_cf(cf, keys::op_key(unit, last))? {
            Some(value) => Ok(codec::decode_operation(&value)?.1),
            None => Err(Error::Corrupt {
                cf: keys::CF_OPERATIONS,
                what: "head without its last operation",
            }),
        }
    }
}

/// The indexes of the copies of `id` below `index`, from the op-id index
/// (ordered by index, so usually one seek finds none).
fn copies_below(iter: &mut DBRawIterator<'_>, id: &OperationId, index: u64) -> Result<Vec<u64>> {
    iter.seek(id.as_bytes());
    let mut out = Vec::new();
    while let Some(key) = iter.key() {
        if !key.starts_with(id.as_bytes()) {
            break;
        }
        let (_, at, _) = keys::decode_op_id_key(key).ok_or(Error::Corrupt {
            cf: keys::CF_OP_IDS,
            what: "op id key",
        })?;
        if at >= index {
            break;
        }
        out.push(at);
        iter.next();
    }
    iter.status()?;
    Ok(out)
}
