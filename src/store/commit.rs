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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use rocksdb::{WriteBatch, WriteOptions, DB};

use crate::codec::EncodedOperation;
use crate::error::{Error, Result};
use crate::keys;
use crate::model::Ordinal;

/// One operation of a pending write, encoded up front; the leader only
/// patches its ordinal in.
pub(crate) struct PendingOperation {
    pub(crate) key: Vec<u8>,
    pub(crate) value: EncodedOperation,
    pub(crate) op_id_key: [u8; 32],
    pub(crate) op_id_value: Vec<u8>,
    pub(crate) ordinal_value: Vec<u8>,
}

/// Everything one `apply` writes.
pub(crate) struct PendingWrite {
    pub(crate) operations: Vec<PendingOperation>,
    pub(crate) head_key: Vec<u8>,
    pub(crate) head_value: Vec<u8>,
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
    wake: Condvar,
}

impl Ticket {
    fn set(&self, status: Status) {
        *self.status.lock() = status;
        self.wake.notify_one();
    }
}

struct Queue {
    waiting: VecDeque<(Arc<Ticket>, PendingWrite)>,
    leader_active: bool,
    next_ordinal: Ordinal,
}

/// The shared commit step of a store.
pub(crate) struct CommitGroup {
    queue: Mutex<Queue>,
    poisoned: AtomicBool,
    write_options: WriteOptions,
}

impl CommitGroup {
    pub(crate) fn new(next_ordinal: Ordinal, sync: bool) -> Self {
        let mut write_options = WriteOptions::default();
        write_options.set_sync(sync);
        Self {
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                leader_active: false,
                next_ordinal,
            }),
            poisoned: AtomicBool::new(false),
            write_options,
        }
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// The ordinal the next committed operation will get.
    pub(crate) fn next_ordinal(&self) -> Ordinal {
        self.queue.lock().next_ordinal
    }

    /// Commits `write` (with every write queued beside it) and returns the
    /// ordinal of its first operation.
    pub(crate) fn commit(&self, db: &DB, write: PendingWrite) -> Result<Ordinal> {
        let ticket = Arc::new(Ticket {
            status: Mutex::new(Status::Waiting),
            wake: Condvar::new(),
        });
        let mut queue = self.queue.lock();
        queue.waiting.push_back((Arc::clone(&ticket), write));
        if queue.leader_active {
            drop(queue);
            let mut status = ticket.status.lock();
            loop {
                match std::mem::replace(&mut *status, Status::Waiting) {
                    Status::Waiting => ticket.wake.wait(&mut status),
                    Status::Lead => break,
                    Status::Done(result) => return result.map_err(Error::from),
                }
            }
            drop(status);
            queue = self.queue.lock();
        }
        queue.leader_active = true;
        let group: Vec<_> = queue.waiting.drain(..).collect();
        let first = queue.next_ordinal;
        let count: u64 = group.iter().map(|(_, w)| w.operations.len() as u64).sum();
        queue.next_ordinal = Ordinal(first.get() + count);
        drop(queue);

        let (own, followers) = self.write_group(db, &ticket, group, first);

        // Hand leadership on before waking this group's followers: the next
        // group's write is the critical path, the wake-ups are not.
        let mut queue = self.queue.lock();
        match queue.waiting.front() {
            Some((next, _)) => next.set(Status::Lead),
            None => queue.leader_active = false,
        }
        drop(queue);
        for (follower, result) in followers {
            follower.set(Status::Done(result));
        }
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
            let mut batch = WriteBatch::default();
            let mut ordinal = first;
            let cfs = cf_handles(db);
            for (_, write) in &mut group {
                firsts.push(ordinal);
                for op in &mut write.operations {
                    op.value.set_ordinal(ordinal);
                    batch.put_cf(cfs.operations, &op.key, op.value.as_bytes());
                    batch.put_cf(cfs.ordinals, keys::ordinal_key(ordinal), &op.ordinal_value);
                    batch.put_cf(cfs.op_ids, op.op_id_key, &op.op_id_value);
                    ordinal = ordinal.next();
                }
                batch.put_cf(cfs.heads, &write.head_key, &write.head_value);
            }
            db.write_opt(batch, &self.write_options)
                .map_err(Failure::Rocks)
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

/// Why a commit failed.
#[derive(Clone)]
pub(crate) enum Failure {
    /// The write itself failed.
    Rocks(rocksdb::Error),
    /// An earlier write failed; nothing was attempted.
    Poisoned,
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Rocks(e) => Error::Rocks(e),
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
