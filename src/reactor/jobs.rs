//! Jobs: their ids, lifecycle and the table the reactor keeps them in.
//!
//! `Pending → Running → WriteReady → ReadReady`, or `Failed`. `ReadReady`
//! is not stored: a `WriteReady` job is read-ready once the view has applied
//! its consistency token, which the table asks the view.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::metrics::{Latencies, LatencyHistogram};

use crate::error::Error;
use crate::view::ConsistencyToken;

/// The id of a job, unique within a reactor.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job-{}", self.0)
    }
}

/// Where a job is.
#[derive(Clone, Debug)]
pub enum JobStatus {
    /// Queued.
    Pending,
    /// A worker is executing it.
    Running,
    /// Its operations are in the Operation Store (durably, per the store's
    /// durability); the view may not show them yet.
    WriteReady {
        /// Read with this token to see the job's writes.
        token: ConsistencyToken,
    },
    /// The view shows its writes.
    ReadReady {
        /// The job's consistency token.
        token: ConsistencyToken,
    },
    /// It failed; nothing of its failing step was written.
    Failed {
        /// The final error.
        error: Arc<Error>,
        /// Errors of earlier attempts (e.g. revision conflicts it retried).
        error_history: Vec<Arc<Error>>,
    },
}

impl JobStatus {
    /// Whether the job will not change any more (written or failed).
    pub fn is_done(&self) -> bool {
        !matches!(self, JobStatus::Pending | JobStatus::Running)
    }

    /// The consistency token, once written.
    pub fn token(&self) -> Option<ConsistencyToken> {
        match self {
            JobStatus::WriteReady { token } | JobStatus::ReadReady { token } => Some(*token),
            _ => None,
        }
    }
}

/// How many finished jobs a job table remembers by default.
pub(crate) const RETAINED_FINISHED: usize = 50_000;

#[derive(Default)]
struct Table {
    status: HashMap<JobId, JobStatus>,
    /// Jobs some thread waits on in `wait_done`: only their completion
    /// wakes anyone.
    awaited: HashMap<JobId, usize>,
    finished: VecDeque<JobId>,
    /// Jobs queued jobs depend on (how many): their records are kept past
    /// the retention until every dependent has been taken.
    pinned: HashMap<JobId, usize>,
    /// Pinned jobs the retention would have dropped: dropped when unpinned.
    overdue: std::collections::HashSet<JobId>,
}

/// Every job's status; waiters are woken on each change.
pub(crate) struct JobTable {
    table: Mutex<Table>,
    changed: Condvar,
    /// The reactor is closing: waits return at once.
    closed: std::sync::atomic::AtomicBool,
    /// How many finished jobs are remembered.
    retained: usize,
    /// The last id handed out.
    last_id: std::sync::atomic::AtomicU64,
    /// Outcomes and latencies of finished jobs.
    latency: LatencyHistogram,
    written: AtomicU64,
    failed: AtomicU64,
}

impl JobTable {
    pub(crate) fn new(retained: usize) -> Self {
        Self {
            table: Mutex::default(),
            changed: Condvar::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            retained,
            last_id: std::sync::atomic::AtomicU64::new(0),
            latency: LatencyHistogram::new(),
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Counts a finished job submitted at `submitted`.
    pub(crate) fn record_outcome(&self, submitted: Instant, written: bool) {
        self.latency.record(submitted.elapsed());
        let counter = if written { &self.written } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Jobs written, jobs failed, and their latencies, so far.
    pub(crate) fn outcomes(&self) -> (u64, u64, Latencies) {
        (
            self.written.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.latency.snapshot(),
        )
    }

    /// Keeps the records of `ids` until [`unpin`](Self::unpin): queued jobs
    /// depend on them.
    pub(crate) fn pin(&self, ids: &[JobId]) {
        let mut t = self.table.lock();
        for id in ids {
            *t.pinned.entry(*id).or_default() += 1;
        }
    }

    /// A dependent of `ids` was taken: they may be dropped again.
    pub(crate) fn unpin(&self, ids: &[JobId]) {
        let mut t = self.table.lock();
        for id in ids {
            if let Some(n) = t.pinned.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    t.pinned.remove(id);
                    if t.overdue.remove(id) {
                        t.status.remove(id);
                    }
                }
            }
        }
    }

    /// How many job records the table holds now.
    #[cfg(test)]
    pub(crate) fn records(&self) -> usize {
        self.table.lock().status.len()
    }

    /// A new job, recorded as pending.
    pub(crate) fn create(&self) -> JobId {
        let id = self.allocate();
        self.table.lock().status.insert(id, JobStatus::Pending);
        id
    }

    /// A new job id with no record: for a job its caller runs and waits
    /// for itself, which nobody else can ask about.
    pub(crate) fn allocate(&self) -> JobId {
        JobId(
            self.last_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1,
        )
    }

    pub(crate) fn set(&self, id: JobId, status: JobStatus) {
        self.set_many(std::iter::once((id, status)));
    }

    /// Sets several jobs' statuses under one lock, waking waiters once.
    pub(crate) fn set_many(&self, statuses: impl IntoIterator<Item = (JobId, JobStatus)>) {
        let mut t = self.table.lock();
        let mut awaited = false;
        for (id, status) in statuses {
            let done = status.is_done();
            t.status.insert(id, status);
            if done {
                awaited |= t.awaited.contains_key(&id);
                t.finished.push_back(id);
                while t.finished.len() > self.retained {
                    if let Some(old) = t.finished.pop_front() {
                        if t.pinned.contains_key(&old) {
                            t.overdue.insert(old);
                        } else {
                            t.status.remove(&old);
                        }
                    }
                }
            }
        }
        drop(t);
        if awaited {
            self.changed.notify_all();
        }
    }

    /// Removes jobs that were never accepted.
    pub(crate) fn forget(&self, ids: &[JobId]) {
        let mut t = self.table.lock();
        for id in ids {
            t.status.remove(id);
        }
    }

    pub(crate) fn get(&self, id: JobId) -> Option<JobStatus> {
        self.table.lock().status.get(&id).cloned()
    }

    /// Waits until the job is done (written or failed), up to `deadline`.
    /// Wakes every wait, which returns at once from now on.
    pub(crate) fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let _t = self.table.lock();
        self.changed.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn wait_done(&self, id: JobId, deadline: std::time::Instant) -> Option<JobStatus> {
        let mut t = self.table.lock();
        loop {
            match t.status.get(&id) {
                None => return None,
                Some(s) if s.is_done() || self.is_closed() => return Some(s.clone()),
                Some(_) => {
                    *t.awaited.entry(id).or_default() += 1;
                    let timed_out = self.changed.wait_until(&mut t, deadline).timed_out();
                    if let Some(n) = t.awaited.get_mut(&id) {
                        *n -= 1;
                        if *n == 0 {
                            t.awaited.remove(&id);
                        }
                    }
                    if timed_out {
                        return t.status.get(&id).cloned();
                    }
                }
            }
        }
    }
}
