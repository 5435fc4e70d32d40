//! The write side: the Operation Store on RocksDB. Owns the `operations`,
//! `heads`, `ordinals` and `op_ids` column families; never touches the
//! view's or sync's column families (they follow the ordinal feed and keep
//! their own checkpoints).
//!
//! - `apply`: validation, the revision guard (compare-and-swap on the head
//!   under the stream's own lock), the idempotent-replay rules, and
//!   atomic writes to several streams (`append_parts`);
//! - `commit`: group commit and ordinal assignment;
//! - `chain`: the hash chain; `verify`: re-checking it;
//! - `query`: range-scan reads.

mod apply;
mod batch;
mod chain;
mod commit;
mod export;
#[cfg(feature = "fault-injection")]
mod fault;
mod heads;
mod memory;
mod query;
mod sync_cf;
mod txn;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, IteratorMode, Options, DB};

use crate::codec;
use crate::error::{Error, Result};
use crate::keys;
use crate::model::Ordinal;

pub(crate) use apply::{LogOrder, StreamAppend};
pub use commit::CommitStats;
pub use export::ExportLine;
pub use memory::StoreMemory;
pub(crate) use query::ColdStream;
pub use query::{
    Cursor, DocumentRevisions, OperationFilter, OperationLocation, Page, Paging, StreamInfo,
};
pub(crate) use sync_cf::SyncBatch;
pub use txn::AtomicTxn;
pub use verify::{BrokenLink, ChainFault, VerifyReport};

/// When an acknowledged write is safe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// The write is in the RocksDB write-ahead log but not fsynced: it
    /// survives a crash of the process, not a power loss or kernel crash.
    Buffered,
    /// The write-ahead log is fsynced before `apply` returns: the write
    /// survives power loss. Group commit shares one fsync among concurrent
    /// callers. The default.
    #[default]
    Synced,
}

/// Options of [`OperationStore::open`]: `StoreOptions::default()` and the
/// setters (`.durability(…)`, `.block_cache_bytes(…)`, …).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// When `apply` acknowledges. Default [`Durability::Synced`].
    pub durability: Durability,
    /// Shared RocksDB block cache, in bytes. Default 32 MiB; at least 1 MiB.
    /// With the memtable budget, most of the engine's memory (README.md,
    /// "Memory"); a service with memory to spare raises both for
    /// throughput.
    pub block_cache_bytes: usize,
    /// Memory all column families' memtables may take together, in bytes;
    /// past it RocksDB flushes. Default 64 MiB; at least 1 MiB. (Without a
    /// budget each family may hold two 64 MiB memtables, and a write-heavy
    /// process grows to hundreds of MiB.)
    pub memtable_budget_bytes: usize,
    /// Create the database when the directory holds none. Default `true`.
    pub create_if_missing: bool,
    /// How many streams' heads (and revision-guard locks) stay in memory.
    /// Past it, idle streams are dropped and read again from disk when
    /// next written; streams in use are never dropped. Default 50,000
    /// (about 12 MB); at least 1.
    pub cached_stream_heads: usize,
    /// Threads RocksDB runs flushes and compactions on. Default 2 (what
    /// the benchmarks in README.md ran with, on 2 cores); 1 to 64. More
    /// lets compactions keep up with a write-heavy service on more cores.
    pub background_threads: usize,
    /// Run RocksDB's flushes and compactions at the lowest CPU priority
    /// (`nice` 19 on Linux), so a service's own threads go first. Default
    /// `false`. A flush takes a burst of CPU; on a machine that is nearly
    /// busy it queues the foreground threads behind it, and a sync's delay
    /// has its 99th percentile there (DESIGN.md, "The delay goal"). Under
    /// it, the flush takes what the foreground leaves; a writer that
    /// leaves nothing fills the memtables and waits for the flush instead
    /// (memtables then hold up to twice `memtable_budget_bytes`). The
    /// thread pools are the process's (RocksDB's default environment):
    /// once set, every RocksDB database in the process runs its background
    /// work at that priority, until the process ends.
    pub low_priority_background: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Synced,
            block_cache_bytes: 32 << 20,
            memtable_budget_bytes: 64 << 20,
            create_if_missing: true,
            cached_stream_heads: 50_000,
            background_threads: 2,
            low_priority_background: false,
        }
    }
}

setters!(StoreOptions {
    durability: Durability,
    block_cache_bytes: usize,
    memtable_budget_bytes: usize,
    create_if_missing: bool,
    cached_stream_heads: usize,
    background_threads: usize,
    low_priority_background: bool,
});

impl StoreOptions {
    /// Options with the given durability and defaults otherwise.
    pub fn with_durability(durability: Durability) -> Self {
        Self {
            durability,
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.block_cache_bytes < (1 << 20) {
            return Err(Error::InvalidOptions {
                option: "block_cache_bytes",
                reason: "must be at least 1 MiB",
            });
        }
        if self.memtable_budget_bytes < (1 << 20) {
            return Err(Error::InvalidOptions {
                option: "memtable_budget_bytes",
                reason: "must be at least 1 MiB",
            });
        }
        if !(1..=64).contains(&self.background_threads) {
            return Err(Error::InvalidOptions {
                option: "background_threads",
                reason: "must be between 1 and 64",
            });
        }
        if self.cached_stream_heads == 0 {
            return Err(Error::InvalidOptions {
                option: "cached_stream_heads",
                reason: "must be at least 1",
            });
        }
        Ok(())
    }
}

/// How a store's database was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// The one writer: RocksDB's directory lock is held.
    ReadWrite,
    /// A static view of the database as it was at open; no lock taken.
    ReadOnly,
    /// A RocksDB secondary instance: follows a live writer through its
    /// manifest and log ([`OperationStore::catch_up`]).
    Secondary,
}

struct Inner {
    db: DB,
    path: PathBuf,
    access: Access,
    /// Opened with `open_ephemeral`: the files live in memory.
    in_memory: bool,
    heads: heads::HeadTable,
    commit: commit::CommitGroup,
    durability: Durability,
    /// Column family ids inside write batches.
    families: batch::FamilyIds,
    /// The database's format version (older than this build's until the
    /// reactor migrates it).
    format_version: std::sync::atomic::AtomicU32,
}

/// The append-only, hash-chained operation log. Cheap to clone; every clone
/// is the same store. `Send + Sync`.
#[derive(Clone)]
pub struct OperationStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OperationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationStore")
            .field("path", &self.inner.path)
            .field("durability", &self.inner.durability)
            .finish_non_exhaustive()
    }
}

/// RocksDB options shared by the whole database.
fn db_options(options: &StoreOptions, cache: &Cache) -> Options {
    let mut db = Options::default();
    db.create_if_missing(options.create_if_missing);
    db.create_missing_column_families(true);
    // One `apply` writes several column families in one batch; with atomic
    // flush their memtables are flushed together, so the families on disk
    // never disagree even if the WAL is gone (e.g. after `backup`).
    db.set_atomic_flush(true);
    // A crash under `Buffered` may leave a torn record at the WAL's tail:
    // recover every complete batch before it instead of refusing to open.
    db.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
    db.increase_parallelism(options.background_threads as i32);
    db.set_compression_type(rocksdb::DBCompressionType::Lz4);
    db.set_block_based_table_factory(&table_options(cache));
    db.set_db_write_buffer_size(options.memtable_budget_bytes);
    db
}

/// Options of one column family: the database's, with no memtable larger
/// than the whole memtable budget, plus memtable bloom filters where most
/// lookups are for keys that are not there: the op-id index (each new
/// operation is checked for a replay; the filter is on the 16-byte id, in
/// memtables and files) and the sync family (whether an operation came from
/// a remote, its signature). The filter answers those without walking the
/// memtable's skiplist. Its size is a fiftieth of the memtable's, so it
/// stays inside the budget's slack.
fn family_options(name: &str, db: &Options, budget: usize) -> Options {
    let mut options = db.clone();
    options.set_write_buffer_size(budget);
    if name == keys::CF_OP_IDS {
        // A seek in this family must stay within one id (`locate` sets
        // `prefix_same_as_start`); a scan across ids starts from the first
        // key or sets `total_order_seek`, or files may be skipped.
        options.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(
            keys::OP_ID_PREFIX_LEN,
        ));
        options.set_memtable_prefix_bloom_ratio(0.02);
    }
    if name == keys::CF_SYNC {
        options.set_memtable_prefix_bloom_ratio(0.02);
        options.set_memtable_whole_key_filtering(true);
    }
    options
}

fn table_options(cache: &Cache) -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Point reads (ordinal feed → operation, replay checks) skip files that
    // cannot hold the key.
    table.set_bloom_filter(10.0, false);
    // Index and filter blocks live in the block cache (bounded memory), in
    // 4 KiB partitions under a small pinned top level. Whole-file index
    // and filter blocks grow with the file (hundreds of KiB at a million
    // documents); once data blocks evicted them, every lookup read one
    // back, decompressed and checksummed it: the 1M-document scale step
    // spent nine tenths of its time there.
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_metadata_block_size(4096);
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_top_level_index_and_filter(true);
    table
}

impl OperationStore {
    /// Opens (or creates) the database at `path` with every column family
    /// of the crate, and checks its format version.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        Self::open_as(path.as_ref(), options, Access::ReadWrite, None, false)
    }

    /// Opens a new, empty store that lives in memory only (RocksDB's
    /// in-memory environment): nothing touches the disk, and everything is
    /// gone when the last handle drops. For tests, fuzz targets and
    /// benchmarks of the engine alone. Every other behaviour (revision
    /// guard, group commit, durability accounting) is the on-disk store's;
    /// `backup` writes into the same memory, so it is refused.
    pub fn open_ephemeral(options: StoreOptions) -> Result<Self> {
        // The files live in the in-memory environment, but the RocksDB
        // binding creates the directory on the real disk before opening: a
        // unique, temporary one, removed (empty) right after.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("reactordb-ephemeral-{}-{n}", std::process::id()));
        let opened = Self::open_as(&path, options, Access::ReadWrite, None, true);
        let _ = std::fs::remove_dir(&path);
        opened
    }

    /// Opens an existing database to read it, as it was at this moment:
    /// every write answers [`Error::ReadOnly`], and nothing on disk is
    /// changed (no lock is taken, no log replayed into files). Meant for a
    /// database no process writes; to read one a live process holds, use
    /// [`open_secondary`](Self::open_secondary), which is safe against the
    /// writer's compactions deleting files. `options.durability` and
    /// `create_if_missing` are ignored.
    pub fn open_read_only(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        Self::open_as(path.as_ref(), options, Access::ReadOnly, None, false)
    }

    /// Opens a RocksDB secondary instance of the database at `path`, which
    /// another process may be writing: it reads what the writer had
    /// written at open, and more after each [`catch_up`](Self::catch_up).
    /// `secondary_path` is a directory of its own for the instance's info
    /// log (created if missing). Every write answers [`Error::ReadOnly`].
    pub fn open_secondary(
        path: impl AsRef<Path>,
        secondary_path: impl AsRef<Path>,
        options: StoreOptions,
    ) -> Result<Self> {
        Self::open_as(
            path.as_ref(),
            options,
            Access::Secondary,
            Some(secondary_path.as_ref()),
            false,
        )
    }

    fn open_as(
        path: &Path,
        options: StoreOptions,
        access: Access,
        secondary_path: Option<&Path>,
        in_memory: bool,
    ) -> Result<Self> {
        options.validate()?;
        let path = path.to_path_buf();
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let mut db_opts = db_options(&options, &cache);
        if options.low_priority_background {
            // The default environment's pools serve every database of the
            // process; its threads take the priority at their next job.
            let mut env = rocksdb::Env::new()?;
            env.lower_high_priority_thread_pool_cpu_priority();
            env.lower_thread_pool_cpu_priority();
        }
        if in_memory {
            // A fresh environment per store: its files are its own. The
            // options keep it alive as long as the database.
            db_opts.set_env(&rocksdb::Env::mem_env()?);
            db_opts.create_if_missing(true);
        }
        if access != Access::ReadWrite {
            db_opts.create_if_missing(false);
            db_opts.create_missing_column_families(false);
            // A secondary keeps every table file open, so a file the writer
            // deletes after a compaction stays readable until it catches up.
            db_opts.set_max_open_files(-1);
        }
        let descriptors = keys::ALL_CFS.iter().map(|name| {
            ColumnFamilyDescriptor::new(
                *name,
                family_options(name, &db_opts, options.memtable_budget_bytes),
            )
        });
        let db = match (access, secondary_path) {
            (Access::ReadWrite, _) => DB::open_cf_descriptors(&db_opts, &path, descriptors)?,
            (Access::ReadOnly, _) => {
                DB::open_cf_descriptors_read_only(&db_opts, &path, descriptors, false)?
            }
            (Access::Secondary, secondary) => {
                let secondary = secondary.map_or_else(|| path.clone(), Path::to_path_buf);
                DB::open_cf_descriptors_as_secondary(&db_opts, &path, &secondary, descriptors)?
            }
        };
        let last = last_ordinal(&db)?;
        let format_version = check_format(&db, last, access == Access::ReadWrite)?;
        let next_ordinal = last.next();
        let families = batch::FamilyIds::learn(&db)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path,
                access,
                in_memory,
                heads: heads::HeadTable::new(options.cached_stream_heads),
                commit: commit::CommitGroup::new(
                    next_ordinal,
                    options.durability == Durability::Synced,
                ),
                durability: options.durability,
                families,
                format_version: format_version.into(),
            }),
        })
    }

    /// How many streams' heads the store holds in memory now.
    #[cfg(test)]
    pub(crate) fn cached_heads(&self) -> usize {
        self.inner.heads.len()
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The durability `apply` runs with.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// The highest ordinal committed so far (0 for an empty store).
    pub fn last_ordinal(&self) -> Ordinal {
        self.inner.commit.committed()
    }

    /// The last ordinal assigned to a write, committed or still in flight
    /// (0 for an empty store): every operation read from the database
    /// before this call has an ordinal at or before it. Meaningless on a
    /// secondary instance, which writes nothing.
    pub(crate) fn last_assigned(&self) -> Ordinal {
        self.inner.commit.assigned()
    }

    /// What the group commit has done since the store opened: writes
    /// (fsyncs under [`Durability::Synced`]), the appends and operations
    /// they carried and the time they took.
    ///
    /// ```
    /// # use reactordb::{OperationStore, StoreOptions};
    /// # let dir = tempfile::tempdir()?;
    /// let store = OperationStore::open(dir.path(), StoreOptions::default())?;
    /// let before = store.commit_stats();
    /// // ... appends ...
    /// let stretch = store.commit_stats().since(&before);
    /// println!("{:.1} appends per fsync", stretch.appends_per_write());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit_stats(&self) -> CommitStats {
        self.inner.commit.stats()
    }

    /// Whether an earlier commit failed: the store then refuses writes with
    /// [`Error::Poisoned`] until it is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.inner.commit.is_poisoned()
    }

    /// Writes a consistent online copy of the whole database (a RocksDB
    /// checkpoint: hard links where possible) to `path`, which must not
    /// exist. The copy opens as a database of its own.
    pub fn backup(&self, path: impl AsRef<Path>) -> Result<()> {
        // A checkpoint flushes the memtables: only the writer can.
        self.check_writable()?;
        if self.inner.in_memory {
            return Err(Error::InvalidArgument {
                argument: "backup of an ephemeral store",
                reason: "its files live in memory; a checkpoint would too",
            });
        }
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.inner.db)?;
        checkpoint.create_checkpoint(path)?;
        Ok(())
    }

    pub(crate) fn db(&self) -> &DB {
        &self.inner.db
    }

    /// Whether this handle refuses writes (opened with
    /// [`open_read_only`](Self::open_read_only) or
    /// [`open_secondary`](Self::open_secondary)).
    pub fn is_read_only(&self) -> bool {
        self.inner.access != Access::ReadWrite
    }

    /// Fails with [`Error::ReadOnly`] on a read-only or secondary handle:
    /// every write path asks first, so none reaches RocksDB's own refusal.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.is_read_only() {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    /// A secondary instance: reads what the writer has written since open
    /// or the last catch-up (RocksDB's `TryCatchUpWithPrimary`), and returns
    /// the last ordinal now visible. On any other handle it only returns
    /// [`last_ordinal`](Self::last_ordinal).
    pub fn catch_up(&self) -> Result<Ordinal> {
        if self.inner.access == Access::Secondary {
            self.inner.db.try_catch_up_with_primary()?;
            let last = last_ordinal(&self.inner.db)?;
            self.inner.commit.follow(last);
            let format = check_format(&self.inner.db, last, false)?;
            self.inner
                .format_version
                .store(format, std::sync::atomic::Ordering::Release);
        }
        Ok(self.last_ordinal())
    }

    /// Fsyncs the write-ahead log: every write acknowledged before the
    /// call (`Buffered` ones included) then survives power loss. One fsync,
    /// whatever the number of writes it covers.
    pub fn sync_wal(&self) -> Result<()> {
        self.check_writable()?;
        if self.inner.in_memory {
            // Nothing to make durable (and RocksDB's in-memory log cannot
            // sync on request).
            return Ok(());
        }
        self.inner.db.flush_wal(true)?;
        self.inner.commit.count_sync();
        Ok(())
    }

    /// Writes every column family's memtables to table files and fsyncs
    /// the write-ahead log: afterwards, reopening replays no log. (What a
    /// service does before a planned stop, or before copying the
    /// directory with the process stopped.)
    pub fn flush(&self) -> Result<()> {
        self.sync_wal()?;
        // `default` too: every group commit writes the last ordinal there,
        // and a family left unflushed keeps the log alive.
        let families: Vec<_> = std::iter::once("default")
            .chain(keys::ALL_CFS.iter().copied())
            .filter_map(|name| self.inner.db.cf_handle(name))
            .collect();
        let mut options = rocksdb::FlushOptions::default();
        options.set_wait(true);
        self.inner.db.flush_cfs_opt(&families, &options)?;
        Ok(())
    }

    /// Closes this handle: syncs the write-ahead log, then drops it.
    /// RocksDB closes the database (and releases its directory lock) when
    /// the last handle goes; if other clones of this store are still
    /// alive, the database stays open for them and this fails with
    /// [`Error::StillOpen`] naming how many (the sync happened either
    /// way: nothing acknowledged is lost).
    pub fn close(self) -> Result<()> {
        if !self.is_read_only() {
            self.sync_wal()?;
        }
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => {
                drop(inner);
                Ok(())
            }
            Err(shared) => Err(Error::StillOpen {
                handles: Arc::strong_count(&shared) - 1,
            }),
        }
    }

    /// The database's format version: this build's, or an older one this
    /// build reads and the reactor migrates at open.
    pub fn format_version(&self) -> u32 {
        self.inner
            .format_version
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the database is in this build's format (else the reactor
    /// migrates it at open).
    pub fn is_current_format(&self) -> bool {
        self.format_version() == codec::FORMAT_VERSION
    }

    /// Records that the database is now in this build's format (after a
    /// migration), durably.
    pub(crate) fn record_current_format(&self) -> Result<()> {
        write_format(self.db())?;
        self.inner
            .format_version
            .store(codec::FORMAT_VERSION, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

/// Writes the format version into a new database, or refuses one written by
/// a version this build cannot read, or one that holds operations but no
/// format version (it was lost: which format its values are in is
/// unknown). Returns the version found.
fn check_format(db: &DB, last: Ordinal, writable: bool) -> Result<u32> {
    match db.get(keys::META_FORMAT_KEY)? {
        Some(bytes) => {
            let found = codec::decode_format_version(&bytes)?;
            if !(codec::OLDEST_FORMAT_VERSION..=codec::FORMAT_VERSION).contains(&found) {
                return Err(Error::IncompatibleFormat {
                    found,
                    supported: codec::FORMAT_VERSION,
                });
            }
            Ok(found)
        }
        None if last > Ordinal(0) => Err(Error::Corrupt {
            cf: "default",
            what: "format version (missing in a database that holds operations)",
        }),
        None => {
            // An empty database: a writer stamps it; a reader reads it as
            // this build's (it holds nothing to misread).
            if writable {
                write_format(db)?;
            }
            Ok(codec::FORMAT_VERSION)
        }
    }
}

fn write_format(db: &DB) -> Result<()> {
    let mut write = rocksdb::WriteOptions::default();
    write.set_sync(true);
    db.put_opt(
        keys::META_FORMAT_KEY,
        codec::encode_format_version(),
        &write,
    )?;
    Ok(())
}

/// The last ordinal on disk: the last key of the ordinal feed, or the one
/// the last group commit recorded beside it, whichever is later (so a lost
/// last feed entry is never handed out again; `verify` reports the
/// operation that lost it).
fn last_ordinal(db: &DB) -> Result<Ordinal> {
    let cf = commit::cf_handles(db).ordinals;
    let in_feed = match db.iterator_cf(cf, IteratorMode::End).next() {
        Some(entry) => {
            let (key, _) = entry?;
            keys::decode_ordinal_key(&key).ok_or(Error::Corrupt {
                cf: keys::CF_ORDINALS,
                what: "ordinal key",
            })?
        }
        None => Ordinal(0),
    };
    let recorded = match db.get(keys::META_LAST_ORDINAL_KEY)? {
        Some(bytes) => Ordinal(u64::from_be_bytes(bytes.as_slice().try_into().map_err(
            |_| Error::Corrupt {
                cf: "default",
                what: "last ordinal",
            },
        )?)),
        // Databases written before this record, and new ones.
        None => Ordinal(0),
    };
    Ok(in_feed.max(recorded))
}

#[cfg(test)]
mod parts_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Action, ActionId, ActionType, Branch, Digest, DocumentId, DocumentType, NewOperation, Scope,
    };

    /// Memory of every memtable, mutable and immutable, of every family.
    fn memtable_bytes(store: &OperationStore) -> u64 {
        keys::ALL_CFS
            .iter()
            .map(|name| {
                let cf = store.db().cf_handle(name).expect("family");
                store
                    .db()
                    .property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables")
                    .expect("property")
                    .unwrap_or(0)
            })
            .sum()
    }

    #[test]
    fn memtables_stay_within_their_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let budget = 1 << 20;
        let store = OperationStore::open(
            dir.path(),
            StoreOptions {
                memtable_budget_bytes: budget,
                ..StoreOptions::with_durability(Durability::Buffered)
            },
        )
        .expect("open");
        let doc = DocumentId::new("big").expect("valid");
        let document_type = DocumentType::new("t/x").expect("valid");
        let mut peak = 0;
        // 16 MiB of operations: 16 times the budget.
        for call in 0..64u64 {
            let ops = (0..64u64).map(|i| {
                let index = call * 64 + i;
                let action = Action::new(
                    ActionId::new(format!("a{index}")).expect("valid"),
                    ActionType::new("PUT").expect("valid"),
                    Scope::global(),
                    index,
                    vec![index as u8; 4 << 10],
                );
                NewOperation::new(index, action, Digest::default())
            });
            store
                .apply(
                    &doc,
                    &document_type,
                    &Scope::global(),
                    &Branch::main(),
                    crate::model::Revision(call * 64),
                    |txn| {
                        txn.add_operations(ops);
                    },
                )
                .expect("apply");
            peak = peak.max(memtable_bytes(&store));
        }
        // Flushes run in the background: allow what is being flushed and
        // a memtable's arena block of slack, far below the 16 MiB written.
        assert!(peak < 6 * budget as u64, "memtables peaked at {peak} bytes");
        assert_eq!(store.verify_all().expect("verify").first_broken, None);
        // What was flushed has partitioned index blocks (a cache miss reads
        // one 4 KiB partition, not a whole file's index).
        let cf = store.db().cf_handle(keys::CF_OPERATIONS).expect("cf");
        let properties = store
            .db()
            .property_value_cf(cf, "rocksdb.aggregated-table-properties")
            .expect("property")
            .expect("tables written");
        let partitions: u64 = properties
            .split(';')
            .find_map(|p| p.trim().strip_prefix("# index partitions="))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(partitions > 0, "{properties}");
    }
}
