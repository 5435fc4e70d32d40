//! Group commit: the one shared step of every append. It assigns ordinals in
//! commit order and merges concurrent callers into one RocksDB write.
//!
//! Leader/follower, as RocksDB's own write group: the first caller to find
//! no commit in progress becomes the leader, takes every write queued so
//! far, assigns their ordinals, writes them as one `WriteBatch` (one fsync
//! under `Durability::Synced`), wakes the followers with their results and
//! hands leadership to the next queued caller, if any. An uncontended caller
//! is its own leader and pays no thread hand-off.
//!
//! Ordinal visibility: only one group is written at a time, and a group's
//! ordinals all follow the previous group's, so RocksDB makes ordinals
//! visible strictly in order: a reader of the ordinal feed can never see
//! n+1 before n. Ordinals are assigned only here, after every check passed,
//! so a refused append consumes none; after a failed write the store is
//! poisoned and writes nothing more, so no gap can become visible.
//! [`CommitGroup::committed`] is the last ordinal of the last group written:
//! never one still in flight or lost with a failed group.
//!
//! Failure: a failed write poisons the store, and every member of its group
//! and every caller queued behind it gets `Poisoned`. A leader that panics
//! between taking its group and delivering the results does the same
//! through [`LeaderGuard`] (fjall's poison dart): it poisons the store,
//! fails its followers and hands leadership on, so nobody waits forever.
//! A group carries at most [`MAX_GROUP_BYTES`] of records (one larger
//! write goes alone); the rest waits for the next group.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use rocksdb::{WriteOptions, DB};

use super::batch::{self, BatchBuilder};

use crate::codec;
use crate::error::{Error, Result};
use crate::keys;
use crate::model::Ordinal;

/// Where one operation's ordinal goes inside its write's records: the
/// operation value (patched through `codec`) and the 8-byte ordinal key.
pub(crate) struct OrdinalSlots {
    pub(crate) value: Range<usize>,
    pub(crate) key: usize,
}

/// Everything one `apply` writes: its puts laid out as write-batch records
/// (`batch::put`), complete but for the ordinals, which only the leader
/// knows.
pub(crate) struct PendingWrite {
    pub(crate) records: Vec<u8>,
    pub(crate) count: u32,
    /// One per operation, in order.
    pub(crate) ordinals: Vec<OrdinalSlots>,
    /// Acknowledged only once fsynced: the group it commits in syncs.
    pub(crate) sync: bool,
}

enum Status {
    Waiting,
    /// Promoted: this caller leads the next group.
    Lead,
    /// Committed (first ordinal of its operations) or failed.
    Done(std::result::Result<Ordinal, Failure>),
}

struct Ticket {
    status: Mutex<Status>,
}

struct Queue {
    waiting: VecDeque<(Arc<Ticket>, PendingWrite)>,
    leader_active: bool,
    next_ordinal: Ordinal,
    /// Callers the last group released (synced stores only, see
    /// [`CommitGroup::gather`]).
    released: usize,
    /// How many callers the gathering leader waits for.
    target: usize,
    /// A leader is waiting for the queue to reach `target`.
    gathering: bool,
}

/// The shared commit step of a store.
pub(crate) struct CommitGroup {
    queue: Mutex<Queue>,
    /// Wakes a gathering leader once the queue is full enough.
    gathered: Condvar,
    /// Wakes waiting callers when their status changes. std's `Condvar`
    /// on purpose: its `notify_all` wakes a whole group with one futex
    /// call, so the group's callers get back to work on every core at once.
    /// (parking_lot requeues them onto the mutex and wakes them one by one,
    /// and a ticket per caller made the leader wake each in turn: both left
    /// the next group waiting on one core's wake-ups.)
    signal_lock: std::sync::Mutex<()>,
    signal: std::sync::Condvar,
    poisoned: AtomicBool,
    /// The last ordinal of the last group written (0: none yet).
    committed: AtomicU64,
    /// The last ordinal handed to a group, written or not: stored before
    /// the group's write, so a reader that saw any of a group's records
    /// in the database and then loads this sees the group's ordinals.
    assigned: AtomicU64,
    /// Faults a test asked for.
    #[cfg(feature = "fault-injection")]
    pub(crate) faults: super::fault::Faults,
    /// For a group with a synced member, and for one without.
    synced: WriteOptions,
    buffered: WriteOptions,
    /// The store's durability: whether its leaders gather callers.
    sync: bool,
    /// Recent duration of one group's write, in nanoseconds (a moving
    /// average): how long a leader may wait to gather callers.
    write_nanos: AtomicU64,
    /// Totals behind [`CommitStats`]; only leaders add to them.
    totals: Totals,
}

#[derive(Default)]
struct Totals {
    writes: AtomicU64,
    syncs: AtomicU64,
    appends: AtomicU64,
    operations: AtomicU64,
    write_nanos: AtomicU64,
}

/// What a store's group commit has done since the store opened: how many
/// RocksDB writes (under [`Durability::Synced`](super::Durability), fsyncs)
/// its appends took. Read with
/// [`OperationStore::commit_stats`](super::OperationStore::commit_stats);
/// subtract two readings to measure a stretch of work.
///
/// Each counter is exact, but a reading taken while a group commits may
/// already count its write and not yet its appends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitStats {
    /// Successful RocksDB writes, each the commit of one group.
    pub writes: u64,
    /// Fsyncs of the write-ahead log: synced group writes, and
    /// [`sync_wal`](super::OperationStore::sync_wal) calls (explicit, or a
    /// synced replay's).
    pub syncs: u64,
    /// Appends they committed: each `apply` that wrote anything is one.
    pub appends: u64,
    /// Operations they committed.
    pub operations: u64,
    /// Time spent inside those writes (with their fsyncs), in total.
    pub write_time: Duration,
}

impl CommitStats {
    /// Appends per write: 1.0 when no write was shared, up to the number
    /// of concurrent writers; 0.0 before the first write.
    pub fn appends_per_write(&self) -> f64 {
        if self.writes == 0 {
            0.0
        } else {
            self.appends as f64 / self.writes as f64
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &CommitStats) -> CommitStats {
        CommitStats {
            writes: self.writes.saturating_sub(earlier.writes),
            syncs: self.syncs.saturating_sub(earlier.syncs),
            appends: self.appends.saturating_sub(earlier.appends),
            operations: self.operations.saturating_sub(earlier.operations),
            write_time: self.write_time.saturating_sub(earlier.write_time),
        }
    }
}

/// Longest a leader waits to gather callers, whatever the fsync costs.
const MAX_GATHER: Duration = Duration::from_millis(2);

/// Most record bytes one group writes (a single larger write goes alone):
/// bounds the batch a leader builds and the time its followers wait.
pub(crate) const MAX_GROUP_BYTES: usize = 32 << 20;

/// How many of the queued writes (front first) the next group takes: as
/// many as fit in `cap` bytes, and always at least one.
fn group_len(sizes: impl Iterator<Item = usize>, cap: usize) -> usize {
    let mut total = 0usize;
    let mut taken = 0;
    for size in sizes {
        total = total.saturating_add(size);
        if taken > 0 && total > cap {
            break;
        }
        taken += 1;
    }
    taken
}

/// Held by a leader from taking its group until every member has its
/// result. Dropped still armed (a panic in between), it poisons the store,
/// fails every member still waiting, hands leadership on and wakes
/// everyone: a panic never leaves a caller waiting forever.
struct LeaderGuard<'a> {
    group: &'a CommitGroup,
    members: Vec<Arc<Ticket>>,
    armed: bool,
    /// Leadership has passed to the next caller (or lapsed): a panic after
    /// that must not promote a second leader.
    handed_on: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let group = self.group;
        group.poisoned.store(true, Ordering::Release);
        for member in &self.members {
            let mut status = member.status.lock();
            if matches!(*status, Status::Waiting) {
                *status = Status::Done(Err(Failure::Poisoned));
            }
        }
        if !self.handed_on {
            let mut queue = group.queue.lock();
            match queue.waiting.front() {
                // The next leader finds the store poisoned, fails its group.
                Some((next, _)) => *next.status.lock() = Status::Lead,
                None => queue.leader_active = false,
            }
        }
        drop(group.signal_lock.lock());
        group.signal.notify_all();
    }
}

impl CommitGroup {
    pub(crate) fn new(next_ordinal: Ordinal, sync: bool) -> Self {
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        Self {
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                leader_active: false,
                next_ordinal,
                released: 0,
                target: 0,
                gathering: false,
            }),
            gathered: Condvar::new(),
            signal_lock: std::sync::Mutex::new(()),
            signal: std::sync::Condvar::new(),
            poisoned: AtomicBool::new(false),
            committed: AtomicU64::new(next_ordinal.get().saturating_sub(1)),
            assigned: AtomicU64::new(next_ordinal.get().saturating_sub(1)),
            #[cfg(feature = "fault-injection")]
            faults: super::fault::Faults::default(),
            synced,
            buffered: WriteOptions::default(),
            sync,
            write_nanos: AtomicU64::new(0),
            totals: Totals::default(),
        }
    }

    pub(crate) fn stats(&self) -> CommitStats {
        let totals = &self.totals;
        CommitStats {
            writes: totals.writes.load(Ordering::Relaxed),
            syncs: totals.syncs.load(Ordering::Relaxed),
            appends: totals.appends.load(Ordering::Relaxed),
            operations: totals.operations.load(Ordering::Relaxed),
            write_time: Duration::from_nanos(totals.write_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Synced stores: before writing, a new leader waits for the callers
    /// the last group released to queue again, for at most about one
    /// write's duration.
    ///
    /// Why: a caller that writes again right after its acknowledgement
    /// arrives just after the next group has started its fsync. Without
    /// waiting, closed-loop writers split into two groups that alternate
    /// (one fsyncing while the other queues), so each fsync carries only
    /// half of them. The target is the released callers plus, for a leader
    /// promoted from the queue, the callers queued with it (they wrote
    /// during the last fsync and are not among the released): two
    /// alternating groups thus merge into one at the next write. The wait
    /// is bounded by the fsync's own cost and adapts: a group that gathered
    /// fewer callers sets a lower target for the next. A lone writer never
    /// waits (it is the whole target).
    fn gather<'a>(
        &self,
        mut queue: MutexGuard<'a, Queue>,
        promoted: bool,
        own_sync: bool,
    ) -> MutexGuard<'a, Queue> {
        queue.target = queue.released + if promoted { queue.waiting.len() } else { 0 };
        // A buffered leader (a `Buffered` override in a synced store) does
        // not wait for others' fsync.
        if !self.sync || !own_sync || queue.waiting.len() >= queue.target {
            return queue;
        }
        let queued_bytes: usize = queue.waiting.iter().map(|(_, w)| w.records.len()).sum();
        if queued_bytes >= MAX_GROUP_BYTES {
            return queue; // a full group is queued already: no one to wait for
        }
        let budget = Duration::from_nanos(self.write_nanos.load(Ordering::Relaxed)).min(MAX_GATHER);
        let deadline = Instant::now() + budget;
        queue.gathering = true;
        while queue.waiting.len() < queue.target {
            if self.gathered.wait_until(&mut queue, deadline).timed_out() {
                break;
            }
        }
        queue.gathering = false;
        queue
    }

    fn record_write_time(&self, took: Duration) {
        let took = nanos(took);
        let old = self.write_nanos.load(Ordering::Relaxed);
        let average = if old == 0 { took } else { (old * 7 + took) / 8 };
        self.write_nanos.store(average, Ordering::Relaxed);
    }

    /// A secondary instance caught up to `last`: what it reads as written.
    pub(crate) fn follow(&self, last: Ordinal) {
        self.committed.store(last.get(), Ordering::Release);
    }

    /// Counts an fsync of the log made outside a group write.
    pub(crate) fn count_sync(&self) {
        self.totals.syncs.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// The last ordinal written (0 for an empty store): every ordinal up to
    /// it is on disk, none after it is.
    pub(crate) fn committed(&self) -> Ordinal {
        Ordinal(self.committed.load(Ordering::Acquire))
    }

    /// The last ordinal assigned to a group (0 for an empty store), at or
    /// past [`committed`](Self::committed): every operation a reader finds
    /// in the database before calling this has an ordinal at or before
    /// what it returns. A secondary instance assigns none.
    pub(crate) fn assigned(&self) -> Ordinal {
        Ordinal(self.assigned.load(Ordering::Acquire))
    }

    /// Commits `write` (with every write queued beside it) and returns the
    /// ordinal of its first operation.
    pub(crate) fn commit(&self, db: &DB, write: PendingWrite) -> Result<Ordinal> {
        let own_sync = write.sync;
        let ticket = Arc::new(Ticket {
            status: Mutex::new(Status::Waiting),
        });
        let mut promoted = false;
        let mut queue = self.queue.lock();
        queue.waiting.push_back((Arc::clone(&ticket), write));
        if queue.leader_active {
            if queue.gathering && queue.waiting.len() >= queue.target {
                self.gathered.notify_one();
            }
            drop(queue);
            let mut signal = self.signal_lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let status = std::mem::replace(&mut *ticket.status.lock(), Status::Waiting);
                match status {
                    Status::Waiting => {
                        signal = self.signal.wait(signal).unwrap_or_else(|e| e.into_inner())
                    }
                    Status::Lead => {
                        promoted = true;
                        break;
                    }
                    Status::Done(result) => return result.map_err(Error::from),
                }
            }
            drop(signal);
            queue = self.queue.lock();
        }
        queue.leader_active = true;
        let mut queue = self.gather(queue, promoted, own_sync);
        let take = group_len(
            queue.waiting.iter().map(|(_, w)| w.records.len()),
            MAX_GROUP_BYTES,
        );
        let group: Vec<_> = queue.waiting.drain(..take).collect();
        queue.released = group.len();
        let first = queue.next_ordinal;
        let count: u64 = group.iter().map(|(_, w)| w.ordinals.len() as u64).sum();
        queue.next_ordinal = Ordinal(first.get() + count);
        self.assigned.store(
            queue.next_ordinal.get().saturating_sub(1),
            Ordering::Release,
        );
        drop(queue);

        let mut guard = LeaderGuard {
            group: self,
            members: group.iter().map(|(t, _)| Arc::clone(t)).collect(),
            armed: true,
            handed_on: false,
        };
        let span = tracing::debug_span!(
            "reactordb.commit",
            appends = group.len(),
            first = first.get()
        );
        let (own, followers) = span.in_scope(|| self.write_group(db, &ticket, group, first));

        // Hand leadership on before waking this group's followers: the next
        // group's write is the critical path, the wake-ups are not.
        let mut queue = self.queue.lock();
        match queue.waiting.front() {
            Some((next, _)) => *next.status.lock() = Status::Lead,
            None => queue.leader_active = false,
        }
        guard.handed_on = true;
        drop(queue);
        for (follower, result) in followers {
            *follower.status.lock() = Status::Done(result);
        }
        // Taking the lock orders this wake-up after any caller that found
        // its status unset and is about to wait: no wake-up is lost.
        drop(self.signal_lock.lock());
        self.signal.notify_all();
        guard.armed = false;
        own.map_err(Error::from)
    }

    /// Writes one group; returns the leader's own result and each
    /// follower's, to be delivered once leadership has moved on.
    #[allow(clippy::type_complexity)]
    fn write_group(
        &self,
        db: &DB,
        own: &Arc<Ticket>,
        mut group: Vec<(Arc<Ticket>, PendingWrite)>,
        first: Ordinal,
    ) -> (
        std::result::Result<Ordinal, Failure>,
        Vec<(Arc<Ticket>, std::result::Result<Ordinal, Failure>)>,
    ) {
        let mut firsts = Vec::with_capacity(group.len());
        let written = if self.is_poisoned() {
            Err(Failure::Poisoned)
        } else {
            // The first write's buffer becomes the batch: committed alone,
            // an append's records are never copied before RocksDB's own copy.
            let more = group.iter().skip(1).map(|(_, w)| w.records.len()).sum();
            let mut batch: Option<BatchBuilder> = None;
            let mut ordinal = first;
            for (_, write) in &mut group {
                firsts.push(ordinal);
                let (batch, shift) = match &mut batch {
                    Some(batch) => {
                        let shift = batch.append(&write.records, write.count);
                        (batch, shift)
                    }
                    None => {
                        let records = std::mem::take(&mut write.records);
                        (
                            batch.insert(BatchBuilder::start(records, write.count, more)),
                            0,
                        )
                    }
                };
                let bytes = batch.bytes_mut();
                for slots in &write.ordinals {
                    let value = shift + slots.value.start..shift + slots.value.end;
                    codec::set_operation_ordinal(&mut bytes[value], ordinal);
                    let key = shift + slots.key;
                    bytes[key..key + 8].copy_from_slice(&keys::ordinal_key(ordinal));
                    ordinal = ordinal.next();
                }
            }
            if let Some(batch) = &mut batch {
                batch.append(&last_ordinal_record(ordinal), 1);
            }
            let batch = batch.map_or_else(rocksdb::WriteBatch::default, BatchBuilder::finish);
            let sync = group.iter().any(|(_, w)| w.sync);
            let options = if sync { &self.synced } else { &self.buffered };
            let started = Instant::now();
            #[cfg(feature = "fault-injection")]
            let injected = self.faults.before_write();
            #[cfg(not(feature = "fault-injection"))]
            let injected: Option<Failure> = None;
            let written = match injected {
                Some(failure) => Err(failure),
                None => db.write_opt(batch, options).map_err(Failure::Rocks),
            };
            let took = started.elapsed();
            if self.sync && sync {
                // Only a synced store gathers, so only it needs the average
                // (of synced writes: a buffered group's is no guide).
                self.record_write_time(took);
            }
            if written.is_ok() {
                let operations = ordinal.get() - first.get();
                self.totals
                    .count(group.len() as u64, operations, took, sync);
                // Groups are written one at a time, in ordinal order.
                self.committed
                    .store(ordinal.get().saturating_sub(1), Ordering::Release);
            }
            written
        };
        if written.is_err() {
            // What reached disk is unknown: refuse every later write.
            self.poisoned.store(true, Ordering::Release);
        }
        let mut own_result = Err(Failure::Poisoned);
        let mut followers = Vec::with_capacity(group.len());
        for (i, (ticket, _)) in group.into_iter().enumerate() {
            let member = written
                .clone()
                .map(|()| firsts.get(i).copied().unwrap_or(first));
            if Arc::ptr_eq(&ticket, own) {
                own_result = member;
            } else {
                followers.push((ticket, member));
            }
        }
        (own_result, followers)
    }
}

impl Totals {
    fn count(&self, appends: u64, operations: u64, took: Duration, synced: bool) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.syncs.fetch_add(u64::from(synced), Ordering::Relaxed);
        self.appends.fetch_add(appends, Ordering::Relaxed);
        self.operations.fetch_add(operations, Ordering::Relaxed);
        self.write_nanos.fetch_add(nanos(took), Ordering::Relaxed);
    }
}

/// A duration in whole nanoseconds, as the atomics above keep it.
fn nanos(duration: Duration) -> u64 {
    duration.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Why a commit failed.
#[derive(Clone)]
pub(crate) enum Failure {
    /// The write itself failed.
    Rocks(rocksdb::Error),
    /// A test made the write fail (`fault-injection`).
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    Injected,
    /// An earlier write failed; nothing was attempted.
    Poisoned,
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Rocks(e) => Error::from(e),
            Failure::Injected => Error::InjectedFault,
            Failure::Poisoned => Error::Poisoned,
        }
    }
}

/// The write side's column families.
pub(crate) struct StoreCfs<'a> {
    pub(crate) operations: &'a rocksdb::ColumnFamily,
    pub(crate) heads: &'a rocksdb::ColumnFamily,
    pub(crate) ordinals: &'a rocksdb::ColumnFamily,
    pub(crate) op_ids: &'a rocksdb::ColumnFamily,
}

/// Handles of the write side's column families; they are created at open,
/// so a missing one is a bug in `open`.
pub(crate) fn cf_handles(db: &DB) -> StoreCfs<'_> {
    let get = |name| {
        db.cf_handle(name)
            .expect("column families are created when the store opens")
    };
    StoreCfs {
        operations: get(keys::CF_OPERATIONS),
        heads: get(keys::CF_HEADS),
        ordinals: get(keys::CF_ORDINALS),
        op_ids: get(keys::CF_OP_IDS),
    }
}

/// The put of the group's last ordinal (`next` is one past it) into the
/// default column family, as write-batch records.
fn last_ordinal_record(next: Ordinal) -> Vec<u8> {
    let mut records = batch::records(32);
    let last = next.get().saturating_sub(1);
    batch::put(
        &mut records,
        batch::DEFAULT_FAMILY,
        keys::META_LAST_ORDINAL_KEY,
        &last.to_be_bytes(),
    );
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_takes_what_fits_in_its_cap_and_at_least_one_write() {
        assert_eq!(group_len([10, 10, 10].into_iter(), 25), 2);
        assert_eq!(group_len([10, 10, 10].into_iter(), 30), 3);
        assert_eq!(group_len([40, 1].into_iter(), 25), 1, "a large write alone");
        assert_eq!(group_len([1, 40].into_iter(), 25), 1);
        assert_eq!(group_len(std::iter::empty(), 25), 0);
        assert_eq!(group_len([usize::MAX, 1].into_iter(), 25), 1);
    }
}
