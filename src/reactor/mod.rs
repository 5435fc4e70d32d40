//! The reactor: the queue, jobs and executor in front of the Operation
//! Store, with the event bus and Document View behind it. Owns no column
//! family of its own.
//!
//! - `queue`: one FIFO per document, documents in parallel, bounded;
//! - `jobs`: job ids, lifecycle, the status table;
//! - `executor`: reduce, append with the revision guard, retry; `load`;
//! - `executor/merged`: loads, undo, redo and creation, planned by the
//!   merge rule (`crate::merge`).

mod executor;
mod job;
mod jobs;
mod queue;
#[cfg(test)]
mod tests;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::bus::EventBus;
use crate::error::{Error, Result};
use crate::model::{Action, ActionId, ActionType, Branch, DocumentId, OperationWithContext, Scope};
use crate::models::{
    system_action, CreateDocumentInput, DocumentModel, ModelRegistry, SystemAction,
};
use crate::store::{Durability, OperationStore, StoreOptions};
use crate::view::{ConsistencyToken, DocumentView, ViewOptions};

use crate::metrics::Metrics;
pub use executor::MigrationReport;
use executor::{Executor, ExecutorLimits};
use job::Job;
use jobs::JobTable;
pub use jobs::{JobId, JobStatus};
use queue::{JobQueue, Taken};

/// Builds a [`Reactor`]; every option has a default.
pub struct ReactorBuilder {
    path: PathBuf,
    store: StoreOptions,
    view: ViewOptions,
    registry: ModelRegistry,
    workers: usize,
    queue_capacity: usize,
    block_when_full: bool,
    max_retries: usize,
    retained_jobs: usize,
    cached_stream_states: usize,
    clock: Clock,
    id_source: Option<IdSource>,
    inline: bool,
    /// The store lives in memory (`Reactor::ephemeral`); `path` is unused.
    ephemeral: bool,
}

impl std::fmt::Debug for ReactorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactorBuilder")
            .field("path", &self.path)
            .field("store", &self.store)
            .field("view", &self.view)
            .field("registry", &self.registry)
            .field("workers", &self.workers)
            .field("queue_capacity", &self.queue_capacity)
            .field("block_when_full", &self.block_when_full)
            .field("max_retries", &self.max_retries)
            .field("inline", &self.inline)
            .finish_non_exhaustive()
    }
}

/// The clock that stamps the actions the reactor makes itself (`create`,
/// `undo`, `redo`, deletions, relationships): milliseconds since the Unix
/// epoch. Inject one to make a run reproducible. Operations are stamped at
/// least one past the highest timestamp their stream holds, whatever the
/// clock says (a hybrid clock), so a clock that lags never re-orders
/// history.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Where the ids of the actions the reactor makes itself come from
/// (`create`, `undo`, `redo`, the header helpers, and
/// [`Reactor::new_action_id`]). Each call must give an id not given before
/// for the same stream: a repeated id is taken for a resubmission, and
/// its action is not applied again. Default: a blake3 hash of the wall
/// clock, a counter and the process id.
pub type IdSource = Arc<dyn Fn() -> ActionId + Send + Sync>;

impl ReactorBuilder {
    /// The clock for the reactor's own actions. Default: the wall clock.
    pub fn clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The source of the ids of the reactor's own actions (with
    /// [`clock`](Self::clock) and [`inline`](Self::inline), a run is
    /// reproducible). Default: see [`IdSource`].
    pub fn id_source(mut self, ids: impl Fn() -> ActionId + Send + Sync + 'static) -> Self {
        self.id_source = Some(Arc::new(ids));
        self
    }

    /// Runs jobs on the calling thread: no worker threads; each submission
    /// (`execute`, `create`, `submit_batch`, …) runs every runnable queued
    /// job, in queue order, before it returns. With one calling thread,
    /// the order of writes (and so every ordinal) is the order of the
    /// calls: with an injected [`clock`](Self::clock) and
    /// [`id_source`](Self::id_source), the same calls write the same keys
    /// and values, as a fuzz target or a model test needs. `workers` is
    /// then ignored. Default `false`.
    pub fn inline(mut self, inline: bool) -> Self {
        self.inline = inline;
        self
    }

    /// Store durability. Default [`Durability::Synced`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.store.durability = durability;
        self
    }

    /// All store options.
    pub fn store_options(mut self, options: StoreOptions) -> Self {
        self.store = options;
        self
    }

    /// View options (snapshot interval, cache bounds, timeouts).
    pub fn view_options(mut self, options: ViewOptions) -> Self {
        self.view = options;
        self
    }

    /// Registers a document model.
    pub fn register(mut self, model: impl DocumentModel) -> Self {
        self.registry.register(model);
        self
    }

    /// Replaces the model registry.
    pub fn registry(mut self, registry: ModelRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Worker threads executing jobs (documents run in parallel). Default:
    /// 8 per CPU, at least 8; 1 to 1,024. Workers spend much of a job
    /// waiting for the commit, and concurrent commits share one write
    /// (group commit), so more workers than CPUs raise throughput: W1 on 2
    /// cores measured ~64k actions/s with 2 workers and 100–130k with 16.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Jobs that may wait in the queue. Default 100,000; at least 1.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// When the queue is full: block the submitter (`true`) or answer
    /// [`Error::QueueFull`] (`false`, the default).
    pub fn block_when_full(mut self, block: bool) -> Self {
        self.block_when_full = block;
        self
    }

    /// Revision conflicts a job retries before it fails. Default 8.
    pub fn max_retries(mut self, retries: usize) -> Self {
        self.max_retries = retries;
        self
    }

    /// How many finished jobs the reactor remembers (default 50,000, about
    /// 6 MB): older ones answer `None` to [`Reactor::job_status`]. A job
    /// other queued jobs depend on is kept until they have run, and one
    /// whose [`JobHandle`] is alive until the handle is dropped.
    pub fn retained_jobs(mut self, jobs: usize) -> Self {
        self.retained_jobs = jobs;
        self
    }

    /// How many streams' folded states the executor keeps in memory
    /// (default 20,000, about 10 MB; at least 1): a job on a stream that is
    /// not among them folds its state from the newest snapshot first. Bounds the
    /// executor's memory by this many states; the store's own bound is
    /// [`StoreOptions::cached_stream_heads`].
    pub fn cached_stream_states(mut self, streams: usize) -> Self {
        self.cached_stream_states = streams;
        self
    }

    /// Opens the database (one RocksDB holding every column family), the
    /// view (catching up) and starts the workers.
    pub fn open(self) -> Result<Reactor> {
        if self.workers == 0 || self.workers > 1_024 {
            return Err(Error::InvalidOptions {
                option: "workers",
                reason: "must be between 1 and 1024",
            });
        }
        if self.queue_capacity == 0 {
            return Err(Error::InvalidOptions {
                option: "queue_capacity",
                reason: "must be at least 1",
            });
        }
        let cache_streams =
            NonZeroUsize::new(self.cached_stream_states).ok_or(Error::InvalidOptions {
                option: "cached_stream_states",
                reason: "must be at least 1",
            })?;
        // Every option is checked before the database opens: bad options
        // leave nothing on disk.
        self.view.validate()?;
        self.store.validate()?;
        let store = if self.ephemeral {
            OperationStore::open_ephemeral(self.store)?
        } else {
            OperationStore::open(&self.path, self.store)?
        };
        let bus = EventBus::new();
        let view = DocumentView::open(store.clone(), &bus, self.registry.clone(), self.view)?;
        let executor = Executor::new(
            store.clone(),
            bus.clone(),
            self.registry.clone(),
            ExecutorLimits {
                max_retries: self.max_retries,
                cache_streams,
            },
        );
        // A database of an older format is migrated before any job runs.
        let migration = if store.is_current_format() {
            None
        } else {
            let report = executor.migrate_positional_undos()?;
            store.record_current_format()?;
            tracing::info!(?report, "migrated the database to the current format");
            Some(report)
        };
        let inner = Arc::new(Inner {
            store,
            bus,
            view,
            registry: self.registry,
            executor,
            // Inline, nobody else would make room: a full queue refuses.
            queue: JobQueue::new(self.queue_capacity, self.block_when_full && !self.inline),
            jobs: JobTable::new(self.retained_jobs),
            next_action: AtomicU64::new(0),
            clock: self.clock,
            id_source: self.id_source,
            inline: self.inline,
            migration,
        });
        let threads = if self.inline { 0 } else { self.workers };
        let workers = (0..threads)
            .map(|i| {
                let inner = Arc::clone(&inner);
                std::thread::Builder::new()
                    .name(format!("reactordb-worker-{i}"))
                    .spawn(move || inner.work())
                    .map_err(|_| Error::Shutdown)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Reactor {
            inner,
            workers: Mutex::new(workers),
        })
    }
}

struct Inner {
    store: OperationStore,
    bus: EventBus,
    view: DocumentView,
    registry: ModelRegistry,
    executor: Executor,
    queue: JobQueue,
    jobs: JobTable,
    next_action: AtomicU64,
    clock: Clock,
    id_source: Option<IdSource>,
    /// No workers: submissions run the queue on the caller's thread.
    inline: bool,
    migration: Option<MigrationReport>,
}

/// One job of a batch; `depends_on` names earlier jobs of the same batch
/// (by position) that must be written first.
#[derive(Debug)]
#[non_exhaustive]
pub struct BatchJob {
    /// The document.
    pub document_id: DocumentId,
    /// The branch.
    pub branch: Branch,
    /// The actions to execute.
    pub actions: Vec<Action>,
    /// Positions of earlier jobs in the batch this one waits for.
    pub depends_on: Vec<usize>,
}

impl BatchJob {
    /// A job of `actions` on a document, depending on nothing.
    pub fn new(document_id: DocumentId, branch: Branch, actions: Vec<Action>) -> Self {
        Self {
            document_id,
            branch,
            actions,
            depends_on: Vec::new(),
        }
    }

    /// Waits for these earlier jobs of the batch (by position).
    #[must_use]
    pub fn depends_on(mut self, positions: Vec<usize>) -> Self {
        self.depends_on = positions;
        self
    }
}

/// The reactor. `Send + Sync`; share it in an `Arc`. Dropping it shuts it
/// down (draining accepted jobs).
pub struct Reactor {
    inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("store", &self.inner.store)
            .field("queued", &self.inner.queue.len())
            .finish_non_exhaustive()
    }
}

/// A submitted job. It does not keep the reactor alive: once the
/// [`Reactor`] is dropped (and its database closed), every method answers
/// [`Error::Shutdown`]. It keeps its job's record: however many jobs
/// finish meanwhile ([`ReactorBuilder::retained_jobs`]), a handle learns
/// how its own job ended; the record goes with the last handle (clones
/// included).
pub struct JobHandle {
    id: JobId,
    inner: std::sync::Weak<Inner>,
}

impl Clone for JobHandle {
    fn clone(&self) -> Self {
        if let Some(inner) = self.inner.upgrade() {
            inner.jobs.pin(&[self.id]);
        }
        Self {
            id: self.id,
            inner: self.inner.clone(),
        }
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.jobs.unpin(&[self.id]);
        }
    }
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JobHandle({})", self.id)
    }
}

impl JobHandle {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    fn inner(&self) -> Result<Arc<Inner>> {
        match self.inner.upgrade() {
            Some(inner) if !inner.jobs.is_closed() => Ok(inner),
            _ => Err(Error::Shutdown),
        }
    }

    /// The job's status now (its record lives as long as a handle to it).
    pub fn status(&self) -> Result<JobStatus> {
        self.inner()?
            .status(self.id)
            .ok_or(Error::JobUnknown { job: self.id.0 })
    }

    /// Waits until the job is written (or failed): its status then. A
    /// failed job is `Ok(JobStatus::Failed)`; see [`written`](Self::written)
    /// for a `Result` of the token.
    pub fn wait_written(&self, timeout: Duration) -> Result<JobStatus> {
        self.inner()?.wait(self.id, false, timeout)
    }

    /// Waits until the view shows the job's writes (or it failed).
    pub fn wait_readable(&self, timeout: Duration) -> Result<JobStatus> {
        self.inner()?.wait(self.id, true, timeout)
    }

    /// Waits until the job is written and returns its consistency token; a
    /// failed job is [`Error::JobFailed`] with its error.
    pub fn written(&self, timeout: Duration) -> Result<ConsistencyToken> {
        token_of(self.id, self.wait_written(timeout)?)
    }

    /// Waits until the view shows the job's writes and returns its token;
    /// a failed job is [`Error::JobFailed`] with its error.
    pub fn readable(&self, timeout: Duration) -> Result<ConsistencyToken> {
        token_of(self.id, self.wait_readable(timeout)?)
    }
}

/// The token of a finished job, or its failure as an error.
fn token_of(id: JobId, status: JobStatus) -> Result<ConsistencyToken> {
    match status {
        JobStatus::WriteReady { token } | JobStatus::ReadReady { token } => Ok(token),
        JobStatus::Failed { error, .. } => Err(Error::JobFailed { job: id.0, error }),
        JobStatus::Pending | JobStatus::Running => Err(Error::WaitTimeout { job: id.0 }),
    }
}

/// The default number of reactor workers; see [`ReactorBuilder::workers`].
pub fn default_workers() -> usize {
    (8 * std::thread::available_parallelism().map_or(2, |n| n.get())).clamp(8, 1_024)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Reactor {
    /// A builder for a reactor on the database directory `path`.
    pub fn builder(path: impl Into<PathBuf>) -> ReactorBuilder {
        ReactorBuilder {
            path: path.into(),
            store: StoreOptions::default(),
            view: ViewOptions::default(),
            registry: ModelRegistry::new(),
            workers: default_workers(),
            queue_capacity: 100_000,
            block_when_full: false,
            max_retries: 8,
            retained_jobs: jobs::RETAINED_FINISHED,
            cached_stream_states: 20_000,
            clock: Arc::new(now_ms),
            id_source: None,
            inline: false,
            ephemeral: false,
        }
    }

    /// A builder for a reactor whose database lives in memory only
    /// ([`OperationStore::open_ephemeral`]): nothing on disk, gone when the
    /// reactor drops. For tests and fuzz targets.
    pub fn ephemeral() -> ReactorBuilder {
        ReactorBuilder {
            ephemeral: true,
            ..Self::builder("reactordb-ephemeral")
        }
    }

    /// The Operation Store.
    pub fn store(&self) -> &OperationStore {
        &self.inner.store
    }

    /// What this open migrated, if the database was of an older format
    /// (see [`MigrationReport`]).
    pub fn migration(&self) -> Option<&MigrationReport> {
        self.inner.migration.as_ref()
    }

    /// The Document View.
    pub fn view(&self) -> &DocumentView {
        &self.inner.view
    }

    /// The event bus (subscribe to follow writes).
    pub fn bus(&self) -> &EventBus {
        &self.inner.bus
    }

    /// The model registry.
    pub fn registry(&self) -> &ModelRegistry {
        &self.inner.registry
    }

    /// A fresh action id (for callers that do not bring their own).
    pub fn new_action_id(&self) -> ActionId {
        self.inner.new_action_id()
    }

    /// Creates a document on `main`. Fails with [`Error::ModelNotFound`]
    /// (at submission) when no model of its type and version is registered.
    pub fn create(&self, document_id: DocumentId, input: CreateDocumentInput) -> Result<JobHandle> {
        self.create_on(document_id, Branch::main(), input)
    }

    /// Creates a document on `branch` (as [`create`](Self::create) does on
    /// `main`).
    pub fn create_on(
        &self,
        document_id: DocumentId,
        branch: Branch,
        input: CreateDocumentInput,
    ) -> Result<JobHandle> {
        self.execute_system(document_id, branch, SystemAction::CreateDocument(input))
    }

    /// Executes one header action (the `document` scope) on any branch, as
    /// a job: the general form of [`create_on`](Self::create_on),
    /// [`set_name`](Self::set_name), [`set_meta`](Self::set_meta),
    /// [`delete_document`](Self::delete_document) and the relationship
    /// helpers. A creation fails with [`Error::ModelNotFound`] at
    /// submission when its model is not registered.
    pub fn execute_system(
        &self,
        document_id: DocumentId,
        branch: Branch,
        action: SystemAction,
    ) -> Result<JobHandle> {
        if let SystemAction::CreateDocument(input) = &action {
            self.inner
                .registry
                .require(&input.document_type, input.model_version)?;
        }
        let action = system_action(self.new_action_id(), (self.inner.clock)(), &action);
        self.execute(document_id, branch, vec![action])
    }

    /// Renames a document (`SET_NAME`).
    pub fn set_name(
        &self,
        document_id: DocumentId,
        branch: Branch,
        name: impl Into<String>,
    ) -> Result<JobHandle> {
        let name = name.into();
        self.execute_system(document_id, branch, SystemAction::SetName { name })
    }

    /// Sets one metadata entry of a document's header, or removes it with
    /// `None` (`SET_META`).
    pub fn set_meta(
        &self,
        document_id: DocumentId,
        branch: Branch,
        key: impl Into<String>,
        value: Option<String>,
    ) -> Result<JobHandle> {
        let key = key.into();
        self.execute_system(document_id, branch, SystemAction::SetMeta { key, value })
    }

    /// Moves a document from model version `from_version` to `to_version`
    /// (`UPGRADE_DOCUMENT`), as one job: the header first, then each of
    /// `scopes`, whose states the new version's model upgrades. Each scope
    /// is upgraded by an operation of its own, so name every scope the
    /// document's model writes (a scope left out stays at the older
    /// version). The job fails with [`Error::ModelNotFound`] when the new
    /// version is not registered, and writes nothing.
    pub fn upgrade_document(
        &self,
        document_id: DocumentId,
        branch: Branch,
        from_version: u32,
        to_version: u32,
        scopes: &[Scope],
    ) -> Result<JobHandle> {
        let upgrade = SystemAction::UpgradeDocument {
            from_version,
            to_version,
        };
        let now = (self.inner.clock)();
        let mut actions = vec![system_action(self.new_action_id(), now, &upgrade)];
        // What a scope's fold reads from an upgrade (`fold`'s `UpgradeInput`).
        let input = serde_json::to_vec(&serde_json::json!({
            "from_version": from_version,
            "to_version": to_version,
        }))
        .expect("serde_json encodes plain data");
        for scope in scopes.iter().filter(|scope| **scope != Scope::document()) {
            actions.push(Action::new(
                self.new_action_id(),
                ActionType::new(upgrade.action_type())?,
                scope.clone(),
                now,
                input.clone(),
            ));
        }
        self.execute(document_id, branch, actions)
    }

    /// Executes actions on a document, in order, as one job.
    pub fn execute(
        &self,
        document_id: DocumentId,
        branch: Branch,
        actions: Vec<Action>,
    ) -> Result<JobHandle> {
        self.submit_job(document_id, branch, Job::execute(actions))
    }

    /// [`execute`](Self::execute), written with `durability` instead of the
    /// store's: a `Synced` job in a `Buffered` reactor is acknowledged
    /// (`WriteReady`) only once fsynced; a `Buffered` one in a `Synced`
    /// reactor is written without an fsync of its own (it may queue behind
    /// a group being synced). Jobs of one document written
    /// together take the strongest durability any of them asks for. A
    /// resubmission of actions already written, under `Synced` (its own or
    /// the reactor's), syncs the log before it is acknowledged (their
    /// first write may have been
    /// `Buffered`).
    pub fn execute_with(
        &self,
        document_id: DocumentId,
        branch: Branch,
        actions: Vec<Action>,
        durability: Durability,
    ) -> Result<JobHandle> {
        self.submit_job(document_id, branch, Job::execute_with(actions, durability))
    }

    fn submit_job(&self, document_id: DocumentId, branch: Branch, job: Job) -> Result<JobHandle> {
        if let Job::Execute { actions, .. } = &job {
            crate::limits::check_job(actions)?;
        }
        let ids = self
            .inner
            .submit(vec![((document_id, branch), job, Vec::new())])?;
        Ok(self.handles(ids).remove(0))
    }

    /// Executes actions on a document, in order, as one job, and waits
    /// until it is written: what a request handler does, in one call. Its
    /// consistency token, or [`Error::JobFailed`] with the job's error.
    ///
    /// When the document has nothing queued or running, the job runs on
    /// the calling thread: no hand-off to a worker and back, and callers
    /// on many threads share the store's group commit directly, so waiting
    /// clients batch into fewer writes (and fsyncs) as they grow in number,
    /// beyond the number of workers. Otherwise the job queues behind the
    /// document's jobs, in order, and this waits for it up to `timeout`
    /// ([`Error::WaitTimeout`]; the job still runs). `timeout` bounds only
    /// that wait: a job run on the calling thread runs to its end, as a
    /// write cannot be abandoned half-way (and with
    /// [`block_when_full`](ReactorBuilder::block_when_full), queueing may
    /// wait for room first). A job run on the calling thread takes no place
    /// in the queue (the queue bounds jobs waiting, and this one does not
    /// wait), so it is never refused with [`Error::QueueFull`], and it is
    /// not in the job table ([`job_status`](Self::job_status) does not know
    /// it). Otherwise the result is what [`execute`](Self::execute) and
    /// [`JobHandle::written`] give.
    pub fn execute_and_wait(
        &self,
        document_id: DocumentId,
        branch: Branch,
        actions: Vec<Action>,
        timeout: Duration,
    ) -> Result<ConsistencyToken> {
        self.run_and_wait(document_id, branch, Job::execute(actions), timeout)
    }

    /// [`execute_and_wait`](Self::execute_and_wait), written with
    /// `durability` instead of the store's (as
    /// [`execute_with`](Self::execute_with)).
    pub fn execute_and_wait_with(
        &self,
        document_id: DocumentId,
        branch: Branch,
        actions: Vec<Action>,
        durability: Durability,
        timeout: Duration,
    ) -> Result<ConsistencyToken> {
        let job = Job::execute_with(actions, durability);
        self.run_and_wait(document_id, branch, job, timeout)
    }

    fn run_and_wait(
        &self,
        document_id: DocumentId,
        branch: Branch,
        job: Job,
        timeout: Duration,
    ) -> Result<ConsistencyToken> {
        if let Job::Execute { actions, .. } = &job {
            crate::limits::check_job(actions)?;
        }
        let key = (document_id, branch);
        if self.inner.inline {
            // Inline, a submission runs the queue on this thread already;
            // a claim would hide the document from other callers' drains
            // and strand what they queue behind it.
            return self.submit_job(key.0, key.1, job)?.written(timeout);
        }
        let Some(claim) = self.inner.queue.claim_idle(&key)? else {
            return self.submit_job(key.0, key.1, job)?.written(timeout);
        };
        let submitted = job.submitted();
        let id = self.inner.jobs.allocate();
        let mut outcomes = self.inner.run(&key, &[(id, job)]);
        self.inner
            .jobs
            .record_outcome(submitted, outcomes.iter().all(Result::is_ok));
        // Jobs queued for the document meanwhile go to the workers.
        drop(claim);
        let outcome = outcomes.pop().expect("one outcome per job");
        outcome.map_err(|failure| Error::JobFailed {
            job: id.0,
            error: failure.error,
        })
    }

    /// Undoes the latest effective operation of `scope` that is not itself
    /// an undo or redo: appends an `UNDO` marker naming it by operation id,
    /// so the undo means the same on every replica it reaches. Fails with
    /// [`Error::NothingToUndo`] on an empty history and
    /// [`Error::NotUndoable`] when that operation is structural.
    pub fn undo(&self, document_id: DocumentId, branch: Branch, scope: Scope) -> Result<JobHandle> {
        self.marker(document_id, branch, scope, crate::merge::ACTION_UNDO)
    }

    /// Cancels the latest effective undo of `scope` (its target comes
    /// back). Fails with [`Error::NothingToUndo`] when there is none.
    pub fn redo(&self, document_id: DocumentId, branch: Branch, scope: Scope) -> Result<JobHandle> {
        self.marker(document_id, branch, scope, crate::merge::ACTION_REDO)
    }

    fn marker(
        &self,
        document_id: DocumentId,
        branch: Branch,
        scope: Scope,
        action_type: &str,
    ) -> Result<JobHandle> {
        // The target is resolved when the job runs, in queue order.
        let action = Action::new(
            self.new_action_id(),
            ActionType::new(action_type)?,
            scope,
            (self.inner.clock)(),
            Vec::new(),
        );
        self.execute(document_id, branch, vec![action])
    }

    /// Deletes a document (reads then report it deleted).
    pub fn delete_document(&self, document_id: DocumentId, branch: Branch) -> Result<JobHandle> {
        self.execute_system(document_id, branch, SystemAction::DeleteDocument)
    }

    /// Adds a typed relationship from `source` to `target`.
    pub fn add_relationship(
        &self,
        source: DocumentId,
        target: DocumentId,
        relationship_type: &str,
    ) -> Result<JobHandle> {
        self.execute_system(
            source,
            Branch::main(),
            SystemAction::AddRelationship {
                target,
                relationship_type: relationship_type.to_owned(),
            },
        )
    }

    /// Removes a relationship.
    pub fn remove_relationship(
        &self,
        source: DocumentId,
        target: DocumentId,
        relationship_type: &str,
    ) -> Result<JobHandle> {
        self.execute_system(
            source,
            Branch::main(),
            SystemAction::RemoveRelationship {
                target,
                relationship_type: relationship_type.to_owned(),
            },
        )
    }

    /// Loads operations from a peer into a document, merged by the rule in
    /// DESIGN.md ("Merge"): the effective history becomes that of the set
    /// of operations held, whatever their order or repetition; loading the
    /// same operations twice changes nothing. Every operation is checked
    /// before anything is written ([`Error::InvalidLoad`]).
    pub fn load(
        &self,
        document_id: DocumentId,
        branch: Branch,
        operations: Vec<OperationWithContext>,
    ) -> Result<JobHandle> {
        crate::limits::check(
            "operations in a load",
            operations.len(),
            crate::limits::MAX_LOAD_OPERATIONS,
        )?;
        let ids = self.inner.submit(vec![(
            (document_id, branch),
            Job::load(operations),
            Vec::new(),
        )])?;
        Ok(self.handles(ids).remove(0))
    }

    /// Submits several jobs at once (all or none), with dependencies
    /// between them.
    pub fn submit_batch(&self, batch: Vec<BatchJob>) -> Result<Vec<JobHandle>> {
        let mut jobs = Vec::with_capacity(batch.len());
        for job in &batch {
            crate::limits::check_job(&job.actions)?;
        }
        for (position, job) in batch.into_iter().enumerate() {
            let mut dependencies = Vec::with_capacity(job.depends_on.len());
            for dep in job.depends_on {
                if dep >= position {
                    return Err(Error::InvalidArgument {
                        argument: "depends_on",
                        reason: "a job may depend only on earlier jobs of its batch",
                    });
                }
                dependencies.push(dep);
            }
            jobs.push((
                (job.document_id, job.branch),
                Job::execute(job.actions),
                dependencies,
            ));
        }
        let ids = self.inner.submit(jobs)?;
        Ok(self.handles(ids))
    }

    /// Handles of jobs `submit` created (each takes over the pin `submit`
    /// put on its record).
    fn handles(&self, ids: Vec<JobId>) -> Vec<JobHandle> {
        ids.into_iter()
            .map(|id| JobHandle {
                id,
                inner: Arc::downgrade(&self.inner),
            })
            .collect()
    }

    /// A job's status (`None` for an unknown or long-forgotten job).
    pub fn job_status(&self, id: JobId) -> Option<JobStatus> {
        self.inner.status(id)
    }

    /// Waits for a job: until written (`readable == false`) or until the
    /// view shows it (`true`). Errors only on timeout
    /// ([`Error::WaitTimeout`]); a failed job is `Ok(JobStatus::Failed)`.
    pub fn wait(&self, id: JobId, readable: bool, timeout: Duration) -> Result<JobStatus> {
        self.inner.wait(id, readable, timeout)
    }

    /// What the reactor has done since it opened: queue depth, jobs
    /// written and failed with their latencies, the view's lag, the
    /// caches' hits and the store's commits (fsyncs, appends per fsync).
    /// Cheap: counters read one by one, nothing waits.
    pub fn metrics(&self) -> Metrics {
        let (jobs_written, jobs_failed, job_latency) = self.inner.jobs.outcomes();
        let inner = &self.inner;
        Metrics {
            queued_jobs: inner.queue.len(),
            queued_documents: inner.queue.documents(),
            jobs_written,
            jobs_failed,
            job_latency,
            view_lag: inner
                .store
                .last_ordinal()
                .get()
                .saturating_sub(inner.view.applied().get()),
            executor_cache: inner.executor.cache_stats(),
            view_cache: inner.view.cache_stats(),
            commit: inner.store.commit_stats(),
        }
    }

    /// Stops accepting jobs, drains the accepted ones (and waits for jobs
    /// running on callers' threads, see
    /// [`execute_and_wait`](Self::execute_and_wait)) and stops the
    /// workers. Idempotent.
    pub fn shutdown(&self) {
        self.inner.queue.shutdown();
        // Inline there are no workers: what is still queued (behind a job
        // another caller was running) runs here.
        self.inner.drain_inline();
        for worker in self.workers.lock().drain(..) {
            let _ = worker.join();
        }
    }

    /// Shuts down (as [`shutdown`](Self::shutdown)), fsyncs the
    /// write-ahead log, so every job acknowledged under `Buffered`
    /// survives power loss, then closes as dropping does. Unlike a drop,
    /// it reports a failed sync.
    pub fn close(self) -> Result<()> {
        self.shutdown();
        let synced = self.store().sync_wal();
        drop(self);
        synced
    }
}

impl Drop for Reactor {
    /// Shuts down, then closes: every wait on a job or token returns
    /// (`Shutdown`), and once the handles busy in one let go of the reactor
    /// (at once: their waits return), the database is closed before `drop`
    /// returns, so the path reopens right away.
    fn drop(&mut self) {
        self.shutdown();
        self.inner.jobs.close();
        self.inner.view.close();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.inner) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Inner {
    fn new_action_id(&self) -> ActionId {
        if let Some(ids) = &self.id_source {
            return ids();
        }
        let n = self.next_action.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut hasher = blake3::Hasher::new();
        hasher.update(&nanos.to_be_bytes());
        hasher.update(&n.to_be_bytes());
        hasher.update(&std::process::id().to_be_bytes());
        let hex = hasher.finalize().to_hex();
        ActionId::new(&hex.as_str()[..32]).expect("hex is a valid id")
    }

    /// Queues jobs, all or none. Each job's `depends_on` names earlier
    /// jobs of the same submission by position. Jobs the queue refuses are
    /// forgotten: they never existed for `job_status`.
    fn submit(&self, jobs: Vec<(queue::DocKey, Job, Vec<usize>)>) -> Result<Vec<JobId>> {
        let ids: Vec<JobId> = jobs.iter().map(|_| self.jobs.create()).collect();
        let queued: Vec<_> = jobs
            .into_iter()
            .zip(&ids)
            .map(|((key, job, depends_on), id)| {
                let job = job.with_dependencies(depends_on.into_iter().map(|d| ids[d]).collect());
                (key, *id, job)
            })
            .collect();
        // A dependency's record must outlive its dependents' wait, however
        // many jobs finish meanwhile; and each job's record outlives the
        // handle the caller gets (pinned before any worker can finish it;
        // the handle unpins it when dropped).
        let pinned: Vec<JobId> = queued
            .iter()
            .flat_map(|(_, _, job)| job.dependencies().to_vec())
            .chain(ids.iter().copied())
            .collect();
        self.jobs.pin(&pinned);
        if let Err(e) = self.queue.push(queued) {
            self.jobs.unpin(&pinned);
            self.jobs.forget(&ids);
            return Err(e);
        }
        self.drain_inline();
        Ok(ids)
    }

    fn status(&self, id: JobId) -> Option<JobStatus> {
        let status = self.jobs.get(id)?;
        Some(match status {
            JobStatus::WriteReady { token } if self.view.applied() >= token.0 => {
                JobStatus::ReadReady { token }
            }
            other => other,
        })
    }

    fn wait(&self, id: JobId, readable: bool, timeout: Duration) -> Result<JobStatus> {
        let deadline = Instant::now() + timeout;
        let status = self
            .jobs
            .wait_done(id, deadline)
            .ok_or(Error::JobUnknown { job: id.0 })?;
        match status {
            JobStatus::WriteReady { token } if readable => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                self.view
                    .wait_for_within(token, remaining)
                    .map_err(|e| match e {
                        Error::Shutdown => Error::Shutdown,
                        _ => Error::WaitTimeout { job: id.0 },
                    })?;
                Ok(JobStatus::ReadReady { token })
            }
            s if s.is_done() => Ok(self.status(id).unwrap_or(s)),
            _ if self.jobs.is_closed() => Err(Error::Shutdown),
            _ => Err(Error::WaitTimeout { job: id.0 }),
        }
    }

    /// A worker: take, run, record, repeat until shut down and drained.
    fn work(&self) {
        while let Some(taken) = self.queue.take(&self.jobs) {
            self.process(taken);
        }
    }

    /// Inline mode: runs every runnable queued job on this thread. A job
    /// whose dependency another caller is running stays queued; that
    /// caller runs it when it next looks, after its own job is done.
    fn drain_inline(&self) {
        if self.inline {
            while let Some(taken) = self.queue.try_take(&self.jobs) {
                self.process(taken);
            }
        }
    }

    /// Runs one taken run of jobs (or fails one whose dependency failed)
    /// and records the outcomes.
    fn process(&self, taken: Taken) {
        {
            match taken {
                Taken::Run(key, run) => {
                    self.jobs
                        .set_many(run.iter().map(|(id, _)| (*id, JobStatus::Running)));
                    let outcomes = self.run(&key, &run);
                    for ((_, job), outcome) in run.iter().zip(&outcomes) {
                        self.jobs.record_outcome(job.submitted(), outcome.is_ok());
                    }
                    // The document is free before its waiters wake: a
                    // caller that writes again at once finds it idle.
                    let dependents = self.queue.done(&key);
                    self.jobs.set_many(
                        run.iter()
                            .map(|(id, _)| *id)
                            .zip(outcomes.into_iter().map(status_of)),
                    );
                    if dependents {
                        self.queue.wake_dependents();
                    }
                }
                Taken::DependencyFailed(key, id, dependency, submitted) => {
                    let dependents = self.queue.done(&key);
                    self.jobs.record_outcome(submitted, false);
                    self.jobs.set(
                        id,
                        failed(
                            Arc::new(Error::DependencyFailed { job: dependency.0 }),
                            Vec::new(),
                        ),
                    );
                    if dependents {
                        self.queue.wake_dependents();
                    }
                }
            }
        }
    }

    /// Executes a run of one document's jobs. A panic (a model's reducer)
    /// fails only its own job: the run is retried job by job, each caught
    /// on its own; actions already written are found and not applied again.
    fn run(&self, key: &queue::DocKey, run: &[(JobId, Job)]) -> Vec<executor::Outcome> {
        let _span = tracing::debug_span!(
            "reactordb.run",
            document = %key.0,
            branch = %key.1,
            jobs = run.len()
        )
        .entered();
        let together = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let [(_, Job::Load { operations, .. })] = run {
                return vec![self.executor.load(&key.0, &key.1, operations)];
            }
            let actions: Vec<&[Action]> = run
                .iter()
                .map(|(_, job)| match job {
                    Job::Execute { actions, .. } => actions.as_slice(),
                    Job::Load { .. } => &[],
                })
                .collect();
            let durability = job::run_durability(run.iter().map(|(_, job)| job));
            self.executor
                .execute_run(&key.0, &key.1, &actions, durability)
        }));
        match together {
            Ok(outcomes) => outcomes,
            Err(_) if run.len() == 1 => vec![Err(executor::Failure {
                error: Arc::new(Error::WorkerPanicked),
                history: Vec::new(),
            })],
            Err(_) => run
                .iter()
                .flat_map(|job| self.run(key, std::slice::from_ref(job)))
                .collect(),
        }
    }
}

fn status_of(outcome: executor::Outcome) -> JobStatus {
    match outcome {
        Ok(token) => JobStatus::WriteReady { token },
        Err(failure) => {
            tracing::debug!(error = %failure.error, retried = failure.history.len(), "job failed");
            failed(failure.error, failure.history)
        }
    }
}

fn failed(error: Arc<Error>, error_history: Vec<Arc<Error>>) -> JobStatus {
    JobStatus::Failed {
        error,
        error_history,
    }
}
