//! The read side: the Document View. Owns the `snapshots` and `view_meta`
//! column families and never writes the write side's. It follows the
//! ordinal feed (woken by the event bus, filling any gap from the store),
//! applies operations strictly in ordinal order and persists its checkpoint
//! in the same batch as everything it derives, so after a crash it resumes
//! exactly where it stopped.
//!
//! - `crate::fold` (shared with the executor): folding, snapshots as base,
//!   the snapshot format; `cache`: the LRU;
//! - `index`: checkpoint, header records, slug/type/relationship indexes;
//! - `read`: the public reads.

mod cache;
mod index;
mod read;
mod verify;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use rocksdb::WriteBatch;

use crate::bus::{Delivery, EventBus, FeedBuffer, FeedStep, Subscription, GAP_WAIT};
use crate::error::{Error, Result};
use crate::keys;
use crate::metrics::{CacheCounters, CacheStats};
use crate::model::{OperationWithContext, Ordinal, Scope};
use crate::models::ModelRegistry;
use crate::store::{OperationStore, Paging};

use crate::fold::{self, Folded, Reducer};
use cache::{CachedDoc, CachedScope, DocCache, DocKey};
#[cfg(not(any(test, feature = "fuzzing")))]
use index::HeaderRecord;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use index::{decode_header_record, encode_header_record, HeaderRecord};

pub use crate::fold::{verify_snapshots, SnapshotReport};
pub use read::{ConsistencyToken, Document, ScopeState, ViewFilter};
pub use verify::{rebuild_view, verify_view, ViewFault, ViewReport};

/// Bus events the worker takes in one step, at most.
const DRAIN_EVENTS: usize = 4_096;
/// Announced operations the worker applies in one batch, at most.
const APPLY_BATCH_OPS: usize = 4_096;

/// Options of [`DocumentView::open`]: `ViewOptions::default()` and the
/// setters (`.snapshot_every(…)`, …).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ViewOptions {
    /// A snapshot of a stream is written every this many operations.
    /// Default 1,000; at least 1.
    pub snapshot_every: u64,
    /// At most this many documents in the cache. Default 10,000; at least 1.
    pub cache_max_documents: usize,
    /// At most this many bytes in the cache: the states, plus an estimate
    /// of each decoded header and of the entries' own overhead. Default
    /// 64 MiB.
    pub cache_max_bytes: usize,
    /// Events the view's bus subscription buffers before it drops some (and
    /// reads them from the store instead). Default 4,096.
    pub bus_capacity: usize,
    /// How often the view checks the store when the bus is quiet (writes
    /// that bypass the bus still arrive). Default 10 ms.
    pub poll_interval: Duration,
    /// How long a read with a consistency token waits. Default 5 s.
    pub consistency_timeout: Duration,
}

setters!(ViewOptions {
    snapshot_every: u64,
    cache_max_documents: usize,
    cache_max_bytes: usize,
    bus_capacity: usize,
    poll_interval: Duration,
    consistency_timeout: Duration,
});

impl Default for ViewOptions {
    fn default() -> Self {
        Self {
            snapshot_every: 1_000,
            cache_max_documents: 10_000,
            cache_max_bytes: 64 << 20,
            bus_capacity: 4_096,
            poll_interval: Duration::from_millis(10),
            consistency_timeout: Duration::from_secs(5),
        }
    }
}

impl ViewOptions {
    /// Checks the options (the reactor's builder does, before it opens
    /// anything, so bad options leave nothing on disk).
    pub(crate) fn validate(&self) -> Result<NonZeroUsize> {
        if self.snapshot_every == 0 {
            return Err(Error::InvalidOptions {
                option: "snapshot_every",
                reason: "must be at least 1",
            });
        }
        NonZeroUsize::new(self.cache_max_documents).ok_or(Error::InvalidOptions {
            option: "cache_max_documents",
            reason: "must be at least 1",
        })
    }
}

pub(crate) struct ViewInner {
    store: OperationStore,
    /// Opened with [`DocumentView::open_read_only`]: no worker, no cache,
    /// no writes; reads fold the store's log as it is now.
    read_only: bool,
    registry: ModelRegistry,
    options: ViewOptions,
    /// The last applied ordinal, with a condvar for token waits.
    applied: Mutex<Ordinal>,
    applied_changed: Condvar,
    /// Held for writing while operations are applied, for reading while a
    /// read folds from the store: a fold then sees exactly the applied
    /// history and the cache stays exact.
    apply_lock: RwLock<()>,
    cache: Mutex<DocCache>,
    cache_counters: CacheCounters,
    stop: AtomicBool,
    /// A test stalls the worker (`fault-injection`).
    #[cfg(feature = "fault-injection")]
    stalled: AtomicBool,
    /// A test makes the worker panic once (`fault-injection`).
    #[cfg(feature = "fault-injection")]
    panic_once: AtomicBool,
}

/// The read side. Reads are `&self` and may run from many threads (share
/// it in an `Arc`); dropping the view stops its worker thread.
pub struct DocumentView {
    inner: Arc<ViewInner>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DocumentView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentView")
            .field("applied", &self.applied())
            .finish_non_exhaustive()
    }
}

impl DocumentView {
    /// How many documents the view's cache holds now.
    #[cfg(test)]
    pub(crate) fn cached_documents(&self) -> usize {
        self.inner.cache.lock().len()
    }

    /// Opens the view over `store`: catches up from its persisted
    /// checkpoint through the ordinal feed (so whatever it missed while
    /// closed or crashed is applied exactly once), then follows `bus`.
    pub fn open(
        store: OperationStore,
        bus: &EventBus,
        registry: ModelRegistry,
        options: ViewOptions,
    ) -> Result<Self> {
        // The view writes what it derives: a reader opens `open_read_only`.
        store.check_writable()?;
        let max_documents = options.validate()?;
        let checkpoint = match index::load_checkpoint(store.db()) {
            Ok(checkpoint) if checkpoint <= store.last_ordinal() => checkpoint,
            // A checkpoint that does not decode, or is past every write,
            // would make the view skip writes: its data is rebuilt from
            // the operations instead.
            Ok(_) | Err(Error::Corrupt { .. }) => {
                tracing::warn!("the view's checkpoint is damaged; rebuilding the view");
                verify::rebuild_view(&store)?;
                Ordinal(0)
            }
            Err(e) => return Err(e),
        };
        let subscription = bus.subscribe(options.bus_capacity);
        let inner = Arc::new(ViewInner {
            cache: Mutex::new(DocCache::new(max_documents, options.cache_max_bytes)),
            read_only: false,
            store,
            registry,
            options,
            applied: Mutex::new(checkpoint),
            applied_changed: Condvar::new(),
            apply_lock: RwLock::new(()),
            cache_counters: CacheCounters::default(),
            stop: AtomicBool::new(false),
            #[cfg(feature = "fault-injection")]
            stalled: AtomicBool::new(false),
            #[cfg(feature = "fault-injection")]
            panic_once: AtomicBool::new(false),
        });
        inner.catch_up(None)?;
        let worker = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("reactordb-view".into())
                .spawn(move || inner.run(subscription))
                .map_err(|_| Error::Shutdown)?
        };
        Ok(Self {
            inner,
            worker: Some(worker),
        })
    }

    /// Opens a view that only reads: it follows no bus, applies nothing,
    /// caches nothing and writes nothing, so it works on a store opened
    /// with [`OperationStore::open_read_only`] or
    /// [`open_secondary`](OperationStore::open_secondary) (what
    /// `reactordb inspect` uses on a database a service holds). Documents
    /// are folded from the store's operations as they are at each read
    /// (with the writer's snapshots where they hold), the header from the
    /// `document` scope; the indexes (`find_by_type`, slugs,
    /// relationships) are the writer's view's, as of its last checkpoint.
    pub fn open_read_only(
        store: OperationStore,
        registry: ModelRegistry,
        options: ViewOptions,
    ) -> Result<Self> {
        options.validate()?;
        let inner = Arc::new(ViewInner {
            cache: Mutex::new(DocCache::new(NonZeroUsize::MIN, 0)),
            read_only: true,
            store,
            registry,
            options,
            applied: Mutex::new(Ordinal(0)),
            applied_changed: Condvar::new(),
            apply_lock: RwLock::new(()),
            cache_counters: CacheCounters::default(),
            stop: AtomicBool::new(true),
            #[cfg(feature = "fault-injection")]
            stalled: AtomicBool::new(false),
            #[cfg(feature = "fault-injection")]
            panic_once: AtomicBool::new(false),
        });
        Ok(Self {
            inner,
            worker: None,
        })
    }

    /// The last ordinal the view has applied (a read-only view: the
    /// store's last ordinal, which it reads up to).
    pub fn applied(&self) -> Ordinal {
        self.inner.applied()
    }

    /// Waits until the view has applied `token` (or the configured timeout
    /// passes: [`Error::ConsistencyTimeout`]).
    pub fn wait_for(&self, token: ConsistencyToken) -> Result<()> {
        self.inner.wait_for(token)
    }

    /// Stops the worker and wakes every token wait (which answers
    /// [`Error::Shutdown`]); the owner drops the view next.
    pub(crate) fn close(&self) {
        self.inner.stop.store(true, Ordering::Release);
        let _applied = self.inner.applied.lock();
        self.inner.applied_changed.notify_all();
    }

    /// Makes the view's worker panic once, at its next step. Only with the
    /// `fault-injection` feature.
    #[cfg(feature = "fault-injection")]
    pub fn panic_worker_once(&self) {
        self.inner.panic_once.store(true, Ordering::Release);
    }

    /// Stalls (`true`) or resumes the view's worker: a stalled view applies
    /// nothing. Only with the `fault-injection` feature.
    #[cfg(feature = "fault-injection")]
    pub fn stall_worker(&self, stalled: bool) {
        self.inner.stalled.store(stalled, Ordering::Release);
    }

    /// [`wait_for`](Self::wait_for) with its own timeout.
    pub fn wait_for_within(&self, token: ConsistencyToken, timeout: Duration) -> Result<()> {
        self.inner.wait_for_within(token, timeout)
    }

    /// Drops every cached document (the next read of each is cold).
    pub fn clear_cache(&self) {
        self.inner.cache.lock().clear();
    }

    /// Hits and misses of the document cache.
    pub(crate) fn cache_stats(&self) -> CacheStats {
        self.inner.cache_counters.snapshot()
    }

    /// Documents and bytes held in the cache.
    pub fn cache_usage(&self) -> (usize, usize) {
        let cache = self.inner.cache.lock();
        (cache.len(), cache.bytes())
    }
}

impl Drop for DocumentView {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl ViewInner {
    fn applied(&self) -> Ordinal {
        if self.read_only {
            return self.store.last_ordinal();
        }
        *self.applied.lock()
    }

    /// The worker: apply what the bus announces; when it is quiet, look at
    /// the store for writes that bypassed it.
    fn run(&self, subscription: Subscription) {
        // Announced operations kept past a gap, at most (past that, it
        // reads the store): no more than its subscription's queue holds.
        let mut feed = FeedBuffer::new(self.options.bus_capacity);
        while !self.stop.load(Ordering::Acquire) {
            #[cfg(feature = "fault-injection")]
            if self.stalled.load(Ordering::Acquire) {
                // Stalled: announcements are missed (the store is read
                // once the worker resumes, as for any missed event).
                while subscription.try_recv().is_some() {}
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            // With announced operations waiting for one before them, wait
            // only as long as that one may take to be announced.
            let wait = if feed.is_waiting() {
                GAP_WAIT.min(self.options.poll_interval)
            } else {
                self.options.poll_interval
            };
            let event = subscription.recv_delivery(wait);
            // Stalled while it waited: the event is dropped (the store is
            // read once the worker resumes, as for any missed event).
            #[cfg(feature = "fault-injection")]
            if self.stalled.load(Ordering::Acquire) {
                continue;
            }
            // A panic while applying (a bug outside the models, whose panics
            // are caught where they reduce) must not end the worker: readers
            // only wait for it. The apply is idempotent from the checkpoint.
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                #[cfg(feature = "fault-injection")]
                if self.panic_once.swap(false, Ordering::AcqRel) {
                    panic!("injected fault: the view's worker panics");
                }
                self.apply_event(&subscription, event, &mut feed)
            }));
            let failed = match applied {
                Ok(result) => result.is_err(),
                Err(_) => {
                    tracing::error!("the view's worker panicked while applying; retrying");
                    true
                }
            };
            if failed {
                // Back off and retry from the checkpoint; readers waiting on
                // tokens time out meanwhile.
                std::thread::sleep(self.options.poll_interval);
            }
        }
    }

    /// One step of the worker: apply the announced operations that
    /// continue the checkpoint (with whatever else is queued: one RocksDB
    /// write for many events), keeping those past a gap for the next step;
    /// read the store instead when an announcement is not the engine's,
    /// when a gap outlasts [`GAP_WAIT`], or when the bus is quiet and the
    /// store holds more.
    fn apply_event(
        &self,
        subscription: &Subscription,
        event: Option<Delivery>,
        feed: &mut FeedBuffer,
    ) -> Result<()> {
        let applied = self.applied().get();
        let quiet = event.is_none();
        let mut trusted = true;
        if let Some(first) = event {
            trusted &= feed.offer(&first, applied);
            let mut taken = 1;
            while taken < DRAIN_EVENTS {
                let Some(next) = subscription.try_recv_delivery() else {
                    break;
                };
                trusted &= feed.offer(&next, applied);
                taken += 1;
            }
        }
        let committed = self.store.last_ordinal().get();
        let read_store = match feed.next(applied, committed, APPLY_BATCH_OPS) {
            FeedStep::Run(run) => {
                let ops: Vec<OperationWithContext> = run.into_iter().map(|a| a.item).collect();
                self.catch_up(Some(&ops))?;
                false
            }
            FeedStep::ReadStore => true,
            // A quiet bus with the store ahead: written around the bus.
            FeedStep::Wait => quiet && committed > applied && !feed.has_announced(),
        };
        if !trusted || read_store {
            self.catch_up(None)?;
            feed.read_from_store(self.applied().get(), committed);
        }
        Ok(())
    }

    pub(crate) fn wait_for(&self, token: ConsistencyToken) -> Result<()> {
        self.wait_for_within(token, self.options.consistency_timeout)
    }

    pub(crate) fn wait_for_within(&self, token: ConsistencyToken, timeout: Duration) -> Result<()> {
        if self.applied() >= token.0 {
            return Ok(());
        }
        if self.read_only {
            // Nothing here applies more: the store is as far as it reads
            // (a secondary moves on with `OperationStore::catch_up`).
            return Err(Error::ConsistencyTimeout {
                token: token.0.get(),
                applied: self.applied().get(),
            });
        }
        // Readers wait; only the worker applies (it is woken by the bus, and
        // polls the store every `poll_interval` for writes around it). A
        // reader that applied would run reducers and storage reads in its
        // own thread, past its deadline.
        let deadline = std::time::Instant::now() + timeout;
        let mut applied = self.applied.lock();
        while *applied < token.0 {
            if self.stop.load(Ordering::Acquire) {
                return Err(Error::Shutdown);
            }
            if self
                .applied_changed
                .wait_until(&mut applied, deadline)
                .timed_out()
            {
                return Err(Error::ConsistencyTimeout {
                    token: token.0.get(),
                    applied: applied.get(),
                });
            }
        }
        Ok(())
    }

    /// Applies, in ordinal order, `announced` operations (the engine's
    /// own: the feed buffer keeps no others) if they follow the
    /// checkpoint, and otherwise everything the store holds past it.
    fn catch_up(&self, announced: Option<&[OperationWithContext]>) -> Result<()> {
        let _apply = self.apply_lock.write();
        let mut next = self.applied().next();
        let _span = tracing::debug_span!(
            "reactordb.view.catch_up",
            from = next.get(),
            announced = announced.map_or(0, <[_]>::len)
        )
        .entered();
        if let Some(ops) = announced {
            let contiguous = ops
                .iter()
                .enumerate()
                .all(|(i, op)| op.context.ordinal.get() == next.get() + i as u64);
            if contiguous {
                return self.apply_batch(ops);
            }
        }
        let target = self.store.last_ordinal();
        while next <= target {
            let page = self.store.get_since_ordinal(next, Paging::first(1_024))?;
            if page.items.is_empty() {
                break;
            }
            self.apply_batch(&page.items)?;
            next = self.applied().next();
        }
        Ok(())
    }

    /// Applies consecutive operations and persists the checkpoint with
    /// everything derived from them, in one batch.
    fn apply_batch(&self, ops: &[OperationWithContext]) -> Result<()> {
        let Some(last) = ops.last() else {
            return Ok(());
        };
        let db = self.store.db();
        let mut batch = WriteBatch::default();
        let mut headers: HashMap<Vec<u8>, HeaderRecord> = HashMap::new();
        let mut snapshots = fold::PendingSnapshots::new();
        let mut advanced = HashMap::new();
        for op in ops {
            self.apply_one(op, &mut batch, &mut headers, &mut snapshots, &mut advanced)?;
        }
        for (key, record) in &headers {
            index::put_header_record(db, &mut batch, key, record);
        }
        index::put_checkpoint(db, &mut batch, last.context.ordinal);
        db.write(batch)?;
        *self.applied.lock() = last.context.ordinal;
        // Cached documents come back only now: a read that finds one in
        // the cache (it takes no lock) never sees an operation past the
        // checkpoint, and a batch that fails leaves none advanced.
        let mut cache = self.cache.lock();
        for (key, doc) in advanced {
            cache.insert(key, doc);
        }
        drop(cache);
        self.applied_changed.notify_all();
        Ok(())
    }

    fn header_record(
        &self,
        key: &[u8],
        pending: &HashMap<Vec<u8>, HeaderRecord>,
    ) -> Result<HeaderRecord> {
        if let Some(record) = pending.get(key) {
            return Ok(record.clone());
        }
        let initial = || HeaderRecord {
            revision: 0,
            state: crate::models::initial_system_state(),
        };
        match index::load_header_record(self.store.db(), key) {
            Ok(record) => Ok(record.unwrap_or_else(initial)),
            // A damaged record is folded again from the operations (its
            // revision 0 sends the caller to a fold) and rewritten.
            Err(Error::Corrupt { .. }) => {
                tracing::warn!("a damaged header record is rebuilt from the operations");
                Ok(initial())
            }
            Err(e) => Err(e),
        }
    }

    fn apply_one(
        &self,
        op: &OperationWithContext,
        batch: &mut WriteBatch,
        headers: &mut HashMap<Vec<u8>, HeaderRecord>,
        snapshots: &mut fold::PendingSnapshots,
        advanced: &mut HashMap<DocKey, CachedDoc>,
    ) -> Result<()> {
        let ctx = &op.context;
        let unit = ctx.unit();
        let unit_key = keys::unit_key(&unit);
        let doc_key = (ctx.document_id.clone(), ctx.branch.clone());
        let header_key = index::header_key(&ctx.document_id, &ctx.branch);
        let index = op.operation.index;

        // 1. The header, and the indexes derived from it.
        let mut reset = false;
        if ctx.scope == Scope::document() {
            let old = self.header_record(&header_key, headers)?;
            let reducer = Reducer::System {
                document_id: &ctx.document_id,
                branch: &ctx.branch,
            };
            let state = if old.revision == index && op.operation.skip == 0 {
                reducer.apply(&mut 0, old.state.clone(), &op.operation)?
            } else {
                fold::fold(&self.store, &unit_key, &reducer, 0, ctx.ordinal, None)?.state
            };
            let new = HeaderRecord {
                revision: index + 1,
                state,
            };
            let (before, after) = (old.header(), new.header());
            index::update_indexes(self.store.db(), batch, before.as_ref(), after.as_ref());
            let reduced_by = |h: &Option<crate::models::DocumentHeader>| {
                h.as_ref()
                    .map(|h| (h.document_type.clone(), h.created_model_version))
            };
            if before.is_some() && reduced_by(&before) != reduced_by(&after) {
                // Another creation won the merge: every scope now reduces
                // by another model, so what was folded by the old one (the
                // cached document, its snapshots) is dropped.
                reset = true;
                drop_snapshots(
                    self.store.db(),
                    batch,
                    snapshots,
                    &ctx.document_id,
                    &ctx.branch,
                );
            }
            headers.insert(header_key.clone(), new);
        }

        // 2. The cached document, if any: advance it or drop it.
        let cached = advanced
            .remove(&doc_key)
            .or_else(|| self.cache.lock().take(&doc_key))
            .filter(|_| !reset);
        let mut snapshot_source = None;
        if let Some(mut doc) = cached {
            let keep = self.advance_cached(&mut doc, op, &header_key, headers);
            if keep {
                if let Some(scope) = doc.scopes.get(&ctx.scope) {
                    snapshot_source = Some(scope.clone());
                }
                advanced.insert(doc_key, doc);
            }
        }

        // 3. A snapshot at every multiple of `snapshot_every`: of the
        // cached document, else of the state the stream's head keeps, else
        // folded.
        if (index + 1).is_multiple_of(self.options.snapshot_every) {
            let folded = match snapshot_source.filter(|s| s.revision == index + 1) {
                Some(s) => Some(Folded {
                    revision: s.revision,
                    state: s.state,
                    model_version: s.model_version,
                    last: Some((op.operation.hash, ctx.ordinal)),
                    bad_snapshots: Vec::new(),
                }),
                None => self.kept_at(&unit_key, op).or_else(|| {
                    self.fold_scope(
                        &unit_key,
                        &ctx.scope,
                        ctx,
                        &header_key,
                        headers,
                        ctx.ordinal,
                        None,
                    )
                }),
            };
            if let Some(folded) = folded {
                fold::put_snapshot(self.store.db(), batch, &unit_key, &folded, snapshots);
            }
        }
        Ok(())
    }

    /// The stream `unit_key` as of `op` from the state its head keeps, when
    /// the head is still at `op` (the view mostly applies an operation
    /// before its stream moves on) and that state holds (`fold::kept_by`,
    /// with `op` in hand: no read but the head's): a
    /// snapshot without folding the operations since the last one, which
    /// for a document nobody reads would otherwise be `snapshot_every`
    /// operations read and reduced on the applier's thread, holding up
    /// everything behind it. Anything else (a head moved on, no state
    /// kept, an error reading it) leaves the snapshot to a fold.
    fn kept_at(&self, unit_key: &[u8], op: &OperationWithContext) -> Option<Folded> {
        let (head, kept) = self.store.head_with_state(unit_key).ok()??;
        // The head names the operation being applied: it is in hand, and
        // at the cutoff.
        let ordinal = op.context.ordinal;
        let revision = op.operation.index + 1;
        fold::kept_by(
            &op.operation,
            ordinal,
            (head.next_index, head.last_hash),
            &kept?,
            ordinal,
        )
        .filter(|folded| folded.revision == revision)
    }

    /// Folds one scope for the applier; a scope that cannot be folded (no
    /// model registered, no header yet) gets no snapshot rather than
    /// stopping the view.
    #[allow(clippy::too_many_arguments)]
    fn fold_scope(
        &self,
        unit_key: &[u8],
        scope: &Scope,
        ctx: &crate::model::OperationContext,
        header_key: &[u8],
        headers: &HashMap<Vec<u8>, HeaderRecord>,
        cutoff: Ordinal,
        end: Option<u64>,
    ) -> Option<Folded> {
        if *scope == Scope::document() {
            let reducer = Reducer::System {
                document_id: &ctx.document_id,
                branch: &ctx.branch,
            };
            return fold::fold(&self.store, unit_key, &reducer, 0, cutoff, end).ok();
        }
        let header = self.header_record(header_key, headers).ok()?.header()?;
        let reducer = Reducer::Model {
            registry: &self.registry,
            document_type: &header.document_type,
            scope,
        };
        fold::fold(
            &self.store,
            unit_key,
            &reducer,
            header.created_model_version,
            cutoff,
            end,
        )
        .ok()
    }

    /// Advances a cached document by one operation; `false` when it must
    /// be dropped instead (a skip, a gap, a reducer that cannot run).
    fn advance_cached(
        &self,
        doc: &mut CachedDoc,
        op: &OperationWithContext,
        header_key: &[u8],
        headers: &HashMap<Vec<u8>, HeaderRecord>,
    ) -> bool {
        let ctx = &op.context;
        let index = op.operation.index;
        if ctx.scope == Scope::document() {
            // The header record was just brought up to date.
            let Ok(record) = self.header_record(header_key, headers) else {
                return false;
            };
            doc.set_document_scope(CachedScope {
                revision: record.revision,
                state: record.state,
                model_version: 0,
            });
            return true;
        }
        let scope = match doc.scopes.get_mut(&ctx.scope) {
            Some(s) if s.revision > index => return true, // already folded in
            Some(s) if s.revision == index && op.operation.skip == 0 => s,
            Some(_) => return false,
            None if index == 0 && op.operation.skip == 0 => {
                let Some(header) = self
                    .header_record(header_key, headers)
                    .ok()
                    .and_then(|r| r.header())
                else {
                    return false;
                };
                let reducer = Reducer::Model {
                    registry: &self.registry,
                    document_type: &header.document_type,
                    scope: &ctx.scope,
                };
                let Ok(state) = reducer.initial(header.created_model_version) else {
                    return false;
                };
                doc.scopes.entry(ctx.scope.clone()).or_insert(CachedScope {
                    revision: 0,
                    state,
                    model_version: header.created_model_version,
                })
            }
            None => return false,
        };
        let Some(header) = &doc.header else {
            return false;
        };
        let reducer = Reducer::Model {
            registry: &self.registry,
            document_type: &header.document_type,
            scope: &ctx.scope,
        };
        let state = std::mem::take(&mut scope.state);
        match reducer.apply(&mut scope.model_version, state, &op.operation) {
            Ok(next) => {
                scope.state = next;
                scope.revision = index + 1;
                true
            }
            Err(_) => false,
        }
    }
}

/// Deletes every snapshot of a document on a branch (all scopes).
fn drop_snapshots(
    db: &rocksdb::DB,
    batch: &mut WriteBatch,
    pending: &mut fold::PendingSnapshots,
    document_id: &crate::model::DocumentId,
    branch: &crate::model::Branch,
) {
    let Some(cf) = db.cf_handle(keys::CF_SNAPSHOTS) else {
        return;
    };
    let from = keys::document_branch_prefix(document_id, branch);
    pending.drop_prefix(from.clone());
    // The prefix ends with the branch's NUL terminator: raising it to 1
    // bounds exactly the keys that start with the prefix.
    let mut to = from.clone();
    if let Some(last) = to.last_mut() {
        *last = 1;
    }
    batch.delete_range_cf(cf, from, to);
}
