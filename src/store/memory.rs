//! What RocksDB holds in memory for one store, as its own properties
//! estimate it: what an embedder watches to size the budgets of
//! [`StoreOptions`](super::StoreOptions). Reads properties only; changes
//! nothing.

use super::OperationStore;
use crate::keys;

/// Memory the store's RocksDB instance holds, in bytes, summed over every
/// column family, `default` included (a snapshot of RocksDB's estimates,
/// not an exact count). The block cache is shared by every family and
/// counted once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct StoreMemory {
    /// Memtables: the active ones, those waiting to be flushed and those
    /// still pinned by a reader (`rocksdb.size-all-mem-tables`). Flushes
    /// start as they near `memtable_budget_bytes`; writes go on while a
    /// flush runs, so the sum may pass it for a while.
    pub memtable_bytes: u64,
    /// Table readers' own memory outside the block cache, per open table
    /// file (`rocksdb.estimate-table-readers-mem`). Index and filter
    /// blocks are not in it: this store keeps them in the block cache (the
    /// pinned top level included), so they count in `block_cache_bytes`.
    /// Grows with the number of table files, not with a budget.
    pub table_reader_bytes: u64,
    /// The block cache's charge, pinned entries included
    /// (`rocksdb.block-cache-usage`). Entries pinned by readers or by the
    /// table readers may take it past `block_cache_bytes`.
    pub block_cache_bytes: u64,
    /// Of the block cache's charge, entries in use or pinned
    /// (`rocksdb.block-cache-pinned-usage`).
    pub block_cache_pinned_bytes: u64,
}

impl OperationStore {
    /// What RocksDB holds in memory for this store now (see
    /// [`StoreMemory`]); a property RocksDB cannot give counts as 0.
    pub fn memory(&self) -> StoreMemory {
        let db = self.db();
        let mut memory = StoreMemory::default();
        let int = |cf, name: &str| {
            db.property_int_value_cf(cf, name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        // The default family holds the last-ordinal record every group
        // commit rewrites.
        let families = std::iter::once(rocksdb::DEFAULT_COLUMN_FAMILY_NAME).chain(keys::ALL_CFS);
        for name in families {
            let Some(cf) = db.cf_handle(name) else {
                continue;
            };
            memory.memtable_bytes += int(cf, "rocksdb.size-all-mem-tables");
            memory.table_reader_bytes += int(cf, "rocksdb.estimate-table-readers-mem");
        }
        if let Some(cf) = db.cf_handle(keys::CF_OPERATIONS) {
            memory.block_cache_bytes = int(cf, "rocksdb.block-cache-usage");
            memory.block_cache_pinned_bytes = int(cf, "rocksdb.block-cache-pinned-usage");
        }
        memory
    }
}
