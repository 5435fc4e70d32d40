//! The job queue: one FIFO per document, documents in parallel. A document
//! never has two jobs running; a job whose dependencies are not done waits
//! at the head of its document's queue. Bounded: a full queue refuses (or
//! blocks, by option) instead of growing. A caller may also claim an idle
//! document and run its job itself (`claim_idle`, for
//! `Reactor::execute_and_wait`): the document counts as running until the
//! claim is dropped, so the one-job-at-a-time rule holds for both.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::job::Job;
use super::jobs::{JobId, JobStatus, JobTable};
use crate::error::{Error, Result};
use crate::model::{Branch, DocumentId};

pub(crate) type DocKey = (DocumentId, Branch);

#[derive(Default)]
struct DocQueue {
    jobs: VecDeque<(JobId, Job)>,
    running: bool,
}

#[derive(Default)]
struct State {
    docs: HashMap<DocKey, DocQueue>,
    /// Documents with queued jobs and none running, in arrival order.
    ready: VecDeque<DocKey>,
    queued: usize,
    /// Queued jobs that wait on other jobs: while there are any, every
    /// finished job wakes all workers to re-check them.
    dependent: usize,
    /// Documents claimed by callers running a job themselves
    /// ([`JobQueue::claim_idle`]): shutdown waits for them.
    claimed: usize,
    shutdown: bool,
}

/// Most jobs one take hands a worker: a run of a document's queued jobs.
const MAX_RUN_JOBS: usize = 64;
/// Most actions in one run.
const MAX_RUN_ACTIONS: usize = 1_024;

/// What a worker takes: a run of one document's jobs (executed in queue
/// order, written together), or a job that cannot run because a dependency
/// failed.
pub(crate) enum Taken {
    Run(DocKey, Vec<(JobId, Job)>),
    DependencyFailed(DocKey, JobId, JobId, std::time::Instant),
}

pub(crate) struct JobQueue {
    state: Mutex<State>,
    work: Condvar,
    space: Condvar,
    /// Signalled when the last claim is released.
    unclaimed: Condvar,
    capacity: usize,
    block_when_full: bool,
}

impl JobQueue {
    pub(crate) fn new(capacity: usize, block_when_full: bool) -> Self {
        Self {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            space: Condvar::new(),
            unclaimed: Condvar::new(),
            capacity,
            block_when_full,
        }
    }

    /// Queues jobs (all or none).
    pub(crate) fn push(&self, jobs: Vec<(DocKey, JobId, Job)>) -> Result<()> {
        let mut st = self.state.lock();
        loop {
            if st.shutdown {
                return Err(Error::Shutdown);
            }
            if st.queued + jobs.len() <= self.capacity {
                break;
            }
            if !self.block_when_full || jobs.len() > self.capacity {
                return Err(Error::QueueFull {
                    capacity: self.capacity,
                });
            }
            self.space.wait(&mut st);
        }
        let count = jobs.len();
        for (key, id, job) in jobs {
            st.queued += 1;
            if !job.dependencies().is_empty() {
                st.dependent += 1;
            }
            let doc = st.docs.entry(key.clone()).or_default();
            let was_idle = doc.jobs.is_empty() && !doc.running;
            doc.jobs.push_back((id, job));
            if was_idle {
                st.ready.push_back(key);
            }
        }
        drop(st);
        // Wake only as many workers as there are new jobs: waking them all
        // for every job costs more in context switches than the job itself.
        for _ in 0..count {
            if !self.work.notify_one() {
                break;
            }
        }
        Ok(())
    }

    /// The next runnable job; `None` once shut down and drained.
    pub(crate) fn take(&self, jobs: &JobTable) -> Option<Taken> {
        let mut st = self.state.lock();
        loop {
            if let Some(taken) = Self::take_runnable(&mut st, jobs) {
                let count = match &taken {
                    Taken::Run(_, run) => run.len(),
                    Taken::DependencyFailed(..) => 1,
                };
                st.queued -= count;
                drop(st);
                if count == 1 {
                    self.space.notify_one();
                } else {
                    self.space.notify_all();
                }
                return Some(taken);
            }
            if st.shutdown && st.queued == 0 {
                return None;
            }
            // Dependencies finishing elsewhere wake us through `done`; the
            // timeout is a safety net only.
            self.work.wait_for(&mut st, Duration::from_millis(100));
        }
    }

    /// The next runnable job, without waiting: `None` when nothing can run
    /// now (inline mode, where the caller's thread is the only worker).
    pub(crate) fn try_take(&self, jobs: &JobTable) -> Option<Taken> {
        let mut st = self.state.lock();
        let taken = Self::take_runnable(&mut st, jobs)?;
        st.queued -= match &taken {
            Taken::Run(_, run) => run.len(),
            Taken::DependencyFailed(..) => 1,
        };
        Some(taken)
    }

    fn take_runnable(st: &mut State, jobs: &JobTable) -> Option<Taken> {
        for i in 0..st.ready.len() {
            let key = st.ready[i].clone();
            let Some(doc) = st.docs.get_mut(&key) else {
                continue;
            };
            let Some((_, job)) = doc.jobs.front() else {
                continue;
            };
            let mut blocked = false;
            let mut failed = None;
            for dep in job.dependencies() {
                match jobs.get(*dep) {
                    Some(JobStatus::Failed { .. }) => failed = Some(*dep),
                    Some(s) if s.is_done() => {}
                    // Pinned while this job waits, so never dropped: an
                    // unknown dependency is a bug; refuse to run on it.
                    None => failed = Some(*dep),
                    Some(_) => blocked = true,
                }
            }
            if blocked && failed.is_none() {
                continue;
            }
            let (id, job) = doc.jobs.pop_front()?;
            jobs.unpin(job.dependencies());
            doc.running = true;
            let had_dependencies = !job.dependencies().is_empty();
            let taken = match failed {
                Some(dep) => Taken::DependencyFailed(key, id, dep, job.submitted()),
                None => {
                    let mut run = vec![(id, job)];
                    Self::extend_run(&mut doc.jobs, &mut run);
                    Taken::Run(key, run)
                }
            };
            if had_dependencies {
                st.dependent -= 1;
            }
            st.ready.remove(i);
            return Some(taken);
        }
        None
    }

    /// Adds the jobs queued behind the first of a run while they can share
    /// its write: executions without dependencies, up to the run limits.
    /// Group commit already merges concurrent writers; a run also saves
    /// the hand-offs between jobs of the same document, which on a busy
    /// document cost more than the jobs themselves.
    fn extend_run(queued: &mut VecDeque<(JobId, Job)>, run: &mut Vec<(JobId, Job)>) {
        let mut actions: usize = run.iter().map(|(_, job)| job.len()).sum();
        if !run.iter().all(|(_, job)| job.joins_runs()) {
            return;
        }
        while run.len() < MAX_RUN_JOBS {
            match queued.front() {
                Some((_, job)) if job.joins_runs() && actions + job.len() <= MAX_RUN_ACTIONS => {
                    actions += job.len();
                    run.extend(queued.pop_front());
                }
                _ => break,
            }
        }
    }

    /// Claims an idle document for a job its caller runs itself (see
    /// `Reactor::execute_and_wait`): `Some` when `key` had nothing queued
    /// or running, and is now marked running until the claim is dropped
    /// (jobs queued for it meanwhile wait until then, and shutdown waits
    /// for it); `None` when it is busy. Refused once shut down.
    pub(crate) fn claim_idle<'q>(&'q self, key: &DocKey) -> Result<Option<Claim<'q>>> {
        let mut st = self.state.lock();
        if st.shutdown {
            return Err(Error::Shutdown);
        }
        if st.docs.contains_key(key) {
            return Ok(None);
        }
        st.docs.insert(
            key.clone(),
            DocQueue {
                jobs: VecDeque::new(),
                running: true,
            },
        );
        st.claimed += 1;
        Ok(Some(Claim {
            queue: self,
            key: key.clone(),
        }))
    }

    /// Wakes every worker, to re-check the queued jobs that wait on
    /// others: after [`done`](Self::done) said some do and the finished
    /// jobs' outcomes, which they read, are recorded.
    pub(crate) fn wake_dependents(&self) {
        self.work.notify_all();
    }

    /// Marks the running job (or run) of `key` finished. Returns whether
    /// queued jobs wait on others (see [`wake_dependents`](Self::wake_dependents)).
    pub(crate) fn done(&self, key: &DocKey) -> bool {
        let mut st = self.state.lock();
        let mut remove = false;
        let mut ready = false;
        if let Some(doc) = st.docs.get_mut(key) {
            doc.running = false;
            if doc.jobs.is_empty() {
                remove = true;
            } else {
                ready = true;
            }
        }
        if remove {
            st.docs.remove(key);
        }
        if ready {
            st.ready.push_back(key.clone());
        }
        let dependent = st.dependent > 0;
        drop(st);
        if dependent {
            self.work.notify_all();
        } else if ready {
            self.work.notify_one();
        }
        dependent
    }

    /// Refuses new jobs and claims, wakes every worker and waits until
    /// no caller holds a claim (its write is done).
    pub(crate) fn shutdown(&self) {
        let mut st = self.state.lock();
        st.shutdown = true;
        self.work.notify_all();
        self.space.notify_all();
        while st.claimed > 0 {
            self.unclaimed.wait(&mut st);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.state.lock().queued
    }

    /// How many documents have a queue now (one with nothing queued or
    /// running has none).
    pub(crate) fn documents(&self) -> usize {
        self.state.lock().docs.len()
    }
}

/// A document claimed by a caller running its job itself
/// ([`JobQueue::claim_idle`]). Dropping it (also on a panic) marks the
/// document done: jobs queued behind it go to the workers.
pub(crate) struct Claim<'q> {
    queue: &'q JobQueue,
    key: DocKey,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // A caller's job is in no job table: nothing depends on it.
        self.queue.done(&self.key);
        let mut st = self.queue.state.lock();
        st.claimed -= 1;
        if st.claimed == 0 && st.shutdown {
            self.queue.unclaimed.notify_all();
        }
    }
}
