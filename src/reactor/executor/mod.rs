//! The executor: turns a job into operations. It reads head state from its
//! write cache (folding from the store on a miss), reduces each action with
//! the registered model, derives indexes, timestamps and state hashes, and
//! appends with the expected revision. A `RevisionMismatch` (possible only
//! when something wrote around the queue) refreshes the head and retries,
//! bounded. Operations are stamped by the stream's hybrid clock, so a
//! plain local write sorts after everything its stream holds and is a
//! plain append. Writes that must re-order history (loads, undo, redo, a
//! creation arriving after other operations) go through `merged` (from
//! `load` and `local`).

mod load;
mod local;
mod merged;
mod migrate;
mod stored_log;

pub use migrate::MigrationReport;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::bus::{Event, EventBus};
use crate::codec::HeadState;
use crate::error::{Error, Result};
use crate::fold::{self, Reducer};
use crate::keys;
use crate::metrics::{CacheCounters, CacheStats};
use crate::model::{
    Action, Branch, Digest, DocumentId, DocumentType, NewOperation, Operation, OperationId,
    OperationWithContext, Ordinal, Revision, Scope, SyncUnit,
};
use crate::models::{decode_header, DocumentHeader, ModelRegistry};
use crate::store::{Durability, LogOrder, OperationStore, StreamAppend};
use crate::view::ConsistencyToken;

/// A stream's head as the executor knows it.
#[derive(Clone, Debug)]
struct Head {
    revision: u64,
    state: Vec<u8>,
    model_version: u32,
    /// The highest operation timestamp the stream holds: the next local
    /// operation is stamped past it.
    latest: u64,
    /// The type the stream is stored with (`None`: empty). It may differ
    /// from the header's when two creations of the document named
    /// different types; the store keeps each stream's first.
    stored_type: Option<DocumentType>,
    /// For the `document` scope: the decoded header, once decoded (the
    /// outer `None`: not yet). Decoding JSON per job was a measurable cost.
    header: Option<Option<Arc<DocumentHeader>>>,
}

impl Head {
    fn header(&mut self) -> Option<Arc<DocumentHeader>> {
        self.header
            .get_or_insert_with(|| decode_header(&self.state).map(Arc::new))
            .clone()
    }
}

/// Limits of the executor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExecutorLimits {
    pub(crate) max_retries: usize,
    pub(crate) cache_streams: NonZeroUsize,
}

pub(crate) struct Executor {
    store: OperationStore,
    bus: EventBus,
    registry: ModelRegistry,
    heads: Mutex<LruCache<Vec<u8>, Head>>,
    limits: ExecutorLimits,
    cache: CacheCounters,
}

/// A failed job: its final error and the ones it retried past.
pub(crate) struct Failure {
    pub(crate) error: Arc<Error>,
    pub(crate) history: Vec<Arc<Error>>,
}

/// What one job came to.
pub(crate) type Outcome = std::result::Result<ConsistencyToken, Failure>;

/// Why a run's attempt stopped: one job was refused (it alone fails), or
/// something failed the whole attempt (a retryable conflict, a store error).
enum RunError {
    Job(usize, Box<Error>),
    Run(Box<Error>),
}

/// Where a job's consistency token comes from: an operation stored before
/// (a resubmitted action) or one the run writes.
enum TokenSource {
    Stored(Ordinal),
    Planned(OperationId),
}

/// A stream head as a run's planning has advanced it.
struct PlannedHead {
    unit_key: Vec<u8>,
    head: Head,
}

/// A run being planned: the heads it advanced, the operations to write in
/// order (consecutive stretches of one scope), and the operation ids
/// already planned.
#[derive(Default)]
struct RunPlan {
    heads: BTreeMap<Scope, PlannedHead>,
    segments: Vec<(Scope, Vec<NewOperation>)>,
    seen: HashSet<OperationId>,
}

impl Executor {
    pub(crate) fn new(
        store: OperationStore,
        bus: EventBus,
        registry: ModelRegistry,
        limits: ExecutorLimits,
    ) -> Self {
        Self {
            store,
            bus,
            registry,
            heads: Mutex::new(LruCache::new(limits.cache_streams)),
            limits,
            cache: CacheCounters::default(),
        }
    }

    /// Hits and misses of the stream-state cache.
    pub(crate) fn cache_stats(&self) -> CacheStats {
        self.cache.snapshot()
    }

    /// How many streams' states the executor holds in memory now.
    #[cfg(test)]
    pub(crate) fn cached_states(&self) -> usize {
        self.heads.lock().len()
    }

    /// Runs `attempt` until it succeeds, fails for good, or has retried
    /// `max_retries` revision conflicts.
    fn with_retries(
        &self,
        document_id: &DocumentId,
        mut attempt: impl FnMut() -> Result<ConsistencyToken>,
    ) -> Outcome {
        let mut history = Vec::new();
        loop {
            match attempt() {
                Ok(token) => return Ok(token),
                Err(error) => {
                    if let Err(error) = self.retry(document_id, Arc::new(error), &mut history) {
                        return Err(Failure { error, history });
                    }
                }
            }
        }
    }

    /// The retry rule, in one place: a retryable error with retries left
    /// joins the history, the document's cached heads are dropped (they
    /// may be stale), and the caller tries again (`Ok`). Any other error
    /// comes back as final.
    fn retry(
        &self,
        document_id: &DocumentId,
        error: Arc<Error>,
        history: &mut Vec<Arc<Error>>,
    ) -> std::result::Result<(), Arc<Error>> {
        if !error.is_retryable() || history.len() >= self.limits.max_retries {
            return Err(error);
        }
        self.forget_document(document_id);
        history.push(error);
        Ok(())
    }

    fn forget_document(&self, document_id: &DocumentId) {
        let prefix = keys::document_prefix(document_id);
        let mut heads = self.heads.lock();
        let stale: Vec<Vec<u8>> = heads
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            heads.pop(&key);
        }
    }

    /// A stream's head: from the cache, from the state its head record
    /// keeps, or folded from the store.
    fn head(&self, unit: &SyncUnit, reducer: &Reducer<'_>, start_version: u32) -> Result<Head> {
        let unit_key = &keys::unit_key(unit);
        if let Some(head) = self.heads.lock().get(unit_key) {
            self.cache.hit();
            return Ok(head.clone());
        }
        self.cache.miss();
        let stored = self.store.head_with_state(unit_key)?;
        let latest = stored
            .as_ref()
            .map_or(0, |(h, _)| h.latest_timestamp_utc_ms);
        let stored_type = stored.as_ref().map(|(h, _)| h.document_type.clone());
        if let Some((head, Some(kept))) = &stored {
            // A damaged kept state is passed over: the fold below is the
            // truth it caches, and the next write replaces it.
            if kept.intact() {
                return Ok(Head {
                    revision: head.next_index,
                    state: kept.state.clone(),
                    model_version: kept.model_version,
                    latest,
                    stored_type,
                    header: None,
                });
            }
        }
        let folded = fold::fold(
            &self.store,
            unit_key,
            reducer,
            start_version,
            Ordinal(u64::MAX),
            None,
        )?;
        Ok(Head {
            revision: folded.revision,
            state: folded.state,
            model_version: folded.model_version,
            latest,
            stored_type,
            header: None,
        })
    }

    fn header(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
    ) -> Result<(Head, Option<Arc<DocumentHeader>>)> {
        let unit = SyncUnit::new(document_id.clone(), Scope::document(), branch.clone());
        let reducer = Reducer::System {
            document_id,
            branch,
        };
        let mut head = self.head(&unit, &reducer, 0)?;
        let header = head.header();
        Ok((head, header))
    }

    /// How `scope` of a document is reduced, and the model version its fold
    /// starts at: the engine's reducer for the `document` scope, the
    /// registered model of the document's type elsewhere.
    fn reducer_for<'a>(
        &'a self,
        document_id: &'a DocumentId,
        branch: &'a Branch,
        scope: &'a Scope,
        header: Option<&'a DocumentHeader>,
    ) -> Result<(Reducer<'a>, u32)> {
        if *scope == Scope::document() {
            return Ok((
                Reducer::System {
                    document_id,
                    branch,
                },
                0,
            ));
        }
        let header = header.ok_or_else(|| Error::DocumentNotFound {
            id: document_id.clone(),
        })?;
        let reducer = Reducer::Model {
            registry: &self.registry,
            document_type: &header.document_type,
            scope,
        };
        Ok((reducer, header.created_model_version))
    }

    /// Executes a run of one document's jobs, in queue order. Each job's
    /// outcome is what executing the jobs one after another would give; the
    /// difference is that their operations are written together, in one
    /// atomic write across the scopes they touch, instead of one per job.
    pub(crate) fn execute_run(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
        jobs: &[&[Action]],
        durability: Option<Durability>,
    ) -> Vec<Outcome> {
        // A job that must take the merge path (an undo, a redo, a creation
        // behind operations that arrived first) runs alone, in its place.
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut start = 0;
        for (k, job) in jobs.iter().enumerate() {
            if let [action] = job {
                if self.needs_merge(document_id, branch, action) {
                    outcomes.extend(self.execute_batched(
                        document_id,
                        branch,
                        &jobs[start..k],
                        durability,
                    ));
                    outcomes.push(self.with_retries(document_id, || {
                        self.execute_merged(document_id, branch, action, durability)
                    }));
                    start = k + 1;
                }
            }
        }
        outcomes.extend(self.execute_batched(document_id, branch, &jobs[start..], durability));
        outcomes
    }

    /// Executes jobs that all take the plain path, planned together.
    fn execute_batched(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
        jobs: &[&[Action]],
        durability: Option<Durability>,
    ) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = jobs.iter().map(|_| None).collect();
        let mut history: Vec<Arc<Error>> = Vec::new();
        loop {
            let live: Vec<usize> = (0..jobs.len()).filter(|&i| outcomes[i].is_none()).collect();
            if live.is_empty() {
                break;
            }
            let live_jobs: Vec<&[Action]> = live.iter().map(|&i| jobs[i]).collect();
            match self.try_run(document_id, branch, &live_jobs, durability) {
                Ok(tokens) => {
                    for (i, token) in live.into_iter().zip(tokens) {
                        outcomes[i] = Some(Ok(token));
                    }
                }
                // A job refused while planning fails alone and has written
                // nothing; the others are planned again without it, as if
                // it had run (and failed) on its own. Failures are rare, so
                // replanning beats keeping an undo copy of every job's state.
                Err(RunError::Job(k, error)) => {
                    outcomes[live[k]] = Some(Err(Failure {
                        error: Arc::from(error),
                        history: history.clone(),
                    }));
                }
                Err(RunError::Run(error)) => {
                    if let Err(error) = self.retry(document_id, Arc::from(error), &mut history) {
                        // The cached heads may be ahead of the store
                        // (nothing of the run was written) or stale.
                        self.forget_document(document_id);
                        for i in live {
                            outcomes[i] = Some(Err(Failure {
                                error: Arc::clone(&error),
                                history: history.clone(),
                            }));
                        }
                    }
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every job of the run has an outcome"))
            .collect()
    }

    /// Plans every job of the run against the cached heads, then writes.
    fn try_run(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
        jobs: &[&[Action]],
        durability: Option<Durability>,
    ) -> std::result::Result<Vec<ConsistencyToken>, RunError> {
        let mut plan = RunPlan::default();
        let (doc_head, _) = self
            .header(document_id, branch)
            .map_err(|e| RunError::Run(Box::new(e)))?;
        plan.heads.insert(
            Scope::document(),
            PlannedHead {
                unit_key: keys::unit_key(&SyncUnit::new(
                    document_id.clone(),
                    Scope::document(),
                    branch.clone(),
                )),
                head: doc_head,
            },
        );
        let mut sources = Vec::with_capacity(jobs.len());
        for (k, actions) in jobs.iter().enumerate() {
            let job = self
                .plan_job(&mut plan, document_id, branch, actions)
                .map_err(|e| {
                    if e.is_retryable() {
                        RunError::Run(Box::new(e))
                    } else {
                        RunError::Job(k, Box::new(e))
                    }
                })?;
            sources.push(job);
        }
        let written = self
            .write_plan(document_id, branch, plan, durability)
            .map_err(|e| RunError::Run(Box::new(e)))?;
        let replayed = sources
            .iter()
            .flatten()
            .any(|source| matches!(source, TokenSource::Stored(_)));
        if replayed && durability.unwrap_or(self.store.durability()) == Durability::Synced {
            // A resubmitted action writes nothing, and its first write may
            // have been acknowledged `Buffered`: sync before answering.
            self.store
                .sync_wal()
                .map_err(|e| RunError::Run(Box::new(e)))?;
        }
        Ok(sources
            .into_iter()
            .map(|job| {
                let token = job
                    .into_iter()
                    .filter_map(|source| match source {
                        TokenSource::Stored(ordinal) => Some(ordinal),
                        TokenSource::Planned(op_id) => written.get(&op_id).copied(),
                    })
                    .max()
                    .unwrap_or(Ordinal(0));
                ConsistencyToken(token)
            })
            .collect())
    }

    /// Reduces one job's actions onto the plan's heads and adds its
    /// operations to the plan, grouped by scope in the order the job first
    /// touches each. Returns where the job's token will come from.
    fn plan_job(
        &self,
        plan: &mut RunPlan,
        document_id: &DocumentId,
        branch: &Branch,
        actions: &[Action],
    ) -> Result<Vec<TokenSource>> {
        let mut sources = Vec::with_capacity(actions.len());
        let mut groups: Vec<(Scope, Vec<NewOperation>)> = Vec::new();
        for action in actions {
            let unit = SyncUnit::new(document_id.clone(), action.scope.clone(), branch.clone());
            let op_id = OperationId::derive(&unit, &action.id);
            if !plan.seen.insert(op_id) {
                // The same action earlier in this run: written once.
                sources.push(TokenSource::Planned(op_id));
                continue;
            }
            if let Some(ordinal) = self.store.applied_at(&op_id)? {
                // Already applied (a resubmission): nothing to do but
                // report where it is.
                sources.push(TokenSource::Stored(ordinal));
                continue;
            }
            let header = plan
                .heads
                .get_mut(&Scope::document())
                .and_then(|p| p.head.header());
            match &header {
                None if action.scope != Scope::document()
                    || action.action_type.as_str() != "CREATE_DOCUMENT" =>
                {
                    return Err(Error::DocumentNotFound {
                        id: document_id.clone(),
                    });
                }
                None => {
                    // A creation names a registered model (ModelNotFound).
                    self.creation_type(action)?;
                }
                Some(h) if h.deleted => {
                    return Err(Error::DocumentDeleted {
                        id: document_id.clone(),
                    });
                }
                Some(h) if action.scope != Scope::document() => {
                    // Fails early with ModelNotFound when the type is unknown.
                    self.registry.require(&h.document_type, h.model_version)?;
                }
                _ => {}
            }
            let (reducer, start_version) =
                self.reducer_for(document_id, branch, &action.scope, header.as_deref())?;
            let reducer = &reducer;
            if !plan.heads.contains_key(&action.scope) {
                let unit_key = keys::unit_key(&unit);
                let head = self.head(&unit, reducer, start_version)?;
                plan.heads
                    .insert(action.scope.clone(), PlannedHead { unit_key, head });
            }
            let planned = &mut plan
                .heads
                .get_mut(&action.scope)
                .expect("inserted above")
                .head;
            if crate::merge::is_marker(action.action_type.as_str())
                || (header.is_none() && planned.revision > 0)
            {
                // Undo and redo, and a creation behind operations that
                // arrived before it, re-order history: they take the merge
                // path, as a job of their own (`Reactor::undo`, `redo`,
                // `create`).
                return Err(Error::InvalidAction {
                    action_id: action.id.clone(),
                    reason: format!("{} must be a job of its own", action.action_type),
                });
            }
            let mut operation =
                NewOperation::new(planned.revision, action.clone(), Digest::default());
            operation.timestamp_utc_ms = stamp(planned.revision, planned.latest, action)?;
            let probe = Operation {
                id: op_id,
                index: operation.index,
                skip: 0,
                timestamp_utc_ms: operation.timestamp_utc_ms,
                hash: Digest::default(),
                state_hash: Digest::default(),
                // Reducers read only the action; the store derives the
                // content hash when it writes.
                content_hash: Digest::default(),
                action: action.clone(),
                error: None,
            };
            planned.latest = planned.latest.max(operation.timestamp_utc_ms);
            let next = reducer
                .try_apply(&mut planned.model_version, &planned.state, &probe)?
                .map_err(|e| Error::InvalidAction {
                    action_id: action.id.clone(),
                    reason: e.reason,
                })?;
            operation.state_hash = Digest::of(&next);
            planned.state = next;
            planned.header = None; // re-decoded when next asked
            planned.revision += 1;
            match groups.iter_mut().find(|(scope, _)| *scope == action.scope) {
                Some((_, ops)) => ops.push(operation),
                None => groups.push((action.scope.clone(), vec![operation])),
            }
            sources.push(TokenSource::Planned(op_id));
        }
        for (scope, ops) in groups {
            match plan.segments.last_mut() {
                Some((last, planned)) if *last == scope => planned.extend(ops),
                _ => plan.segments.push((scope, ops)),
            }
        }
        Ok(sources)
    }

    /// Appends the plan's segments in order and caches the heads they lead
    /// to; returns the ordinal of every operation written.
    fn write_plan(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
        mut plan: RunPlan,
        durability: Option<Durability>,
    ) -> Result<HashMap<OperationId, Ordinal>> {
        let mut written = HashMap::new();
        let mut as_planned = true;
        if !plan.segments.is_empty() {
            let document_type = plan
                .heads
                .get_mut(&Scope::document())
                .and_then(|p| p.head.header())
                .map(|h| h.document_type.clone())
                .ok_or_else(|| Error::DocumentNotFound {
                    id: document_id.clone(),
                })?;
            // What each planned operation is, in write order (the store
            // answers in that order): a replay answers with what was stored
            // before, which may differ.
            let planned_ops: Vec<(Digest, u64)> = plan
                .segments
                .iter()
                .flat_map(|(_, ops)| ops.iter().map(|op| (op.state_hash, op.timestamp_utc_ms)))
                .collect();
            // Every scope of the run in one atomic write: all or nothing.
            let parts: Vec<StreamAppend> = plan
                .segments
                .into_iter()
                .map(|(scope, ops)| {
                    let planned = plan.heads.get(&scope).map(|p| &p.head);
                    StreamAppend {
                        document_type: planned
                            .and_then(|h| h.stored_type.clone())
                            .unwrap_or_else(|| document_type.clone()),
                        // The run's last state of the stream (the store keeps
                        // the last part's when a stream has several).
                        state: planned.and_then(|h| HeadState::keep(h.model_version, &h.state)),
                        unit: SyncUnit::new(document_id.clone(), scope, branch.clone()),
                        revision: Revision(ops.first().map_or(0, |op| op.index)),
                        operations: ops,
                        order: LogOrder::Keeps,
                    }
                })
                .collect();
            // Ordinals past this one are this write's; a replay answers
            // with stored operations below it.
            let before = self.store.last_ordinal();
            let stored = self.write(parts, durability)?;
            as_planned = stored.len() == planned_ops.len()
                && stored.iter().zip(&planned_ops).all(|(op, planned)| {
                    (op.operation.state_hash, op.operation.timestamp_utc_ms) == *planned
                });
            let fresh = stored.iter().all(|op| op.context.ordinal > before);
            self.announce(&stored, as_planned && fresh);
            written.extend(
                stored
                    .iter()
                    .map(|op| (op.operation.id, op.context.ordinal)),
            );
        }
        if !as_planned {
            // The store answered with operations written around the queue
            // (an idempotent replay of the same ids): the planned heads are
            // not what the log folds to, and the next plain append would
            // keep their state in its head. Fold again next time.
            self.forget_document(document_id);
            return Ok(written);
        }
        let mut cache = self.heads.lock();
        for planned in plan.heads.into_values() {
            cache.put(planned.unit_key, planned.head);
        }
        Ok(written)
    }

    /// Appends to one or more streams in one atomic write and announces
    /// it (as not originated here: see [`Delivery::originated`]); returns
    /// what was stored. `durability` overrides the store's.
    ///
    /// [`Delivery::originated`]: crate::bus::Delivery
    fn append(
        &self,
        parts: Vec<StreamAppend>,
        durability: Option<Durability>,
    ) -> Result<Arc<[OperationWithContext]>> {
        let stored = self.write(parts, durability)?;
        self.announce(&stored, false);
        Ok(stored)
    }

    /// Appends to one or more streams in one atomic write, unannounced.
    fn write(
        &self,
        parts: Vec<StreamAppend>,
        durability: Option<Durability>,
    ) -> Result<Arc<[OperationWithContext]>> {
        Ok(self
            .store
            .append_parts(parts, Vec::new(), durability)?
            .into())
    }

    /// Announces stored operations on the bus; `originated`: a local
    /// execute wrote them as it planned them.
    fn announce(&self, stored: &Arc<[OperationWithContext]>, originated: bool) {
        let event = Event::OperationsWritten {
            operations: Arc::clone(stored),
        };
        self.bus.emit_from_engine(event, originated);
    }
}

/// The timestamp of a local operation: the caller's action timestamp (the
/// hybrid clock's physical reading), raised past the highest timestamp the
/// stream holds, so it sorts after everything already there. Refused past
/// [`MAX_TIMESTAMP_MS`](crate::merge::MAX_TIMESTAMP_MS), which peers refuse
/// too (and which keeps the stamp from saturating into a tie).
fn stamp(revision: u64, latest: u64, action: &Action) -> Result<u64> {
    let stamped = if revision == 0 {
        action.timestamp_utc_ms
    } else {
        action.timestamp_utc_ms.max(latest.saturating_add(1))
    };
    if stamped > crate::merge::MAX_TIMESTAMP_MS {
        return Err(Error::InvalidAction {
            action_id: action.id.clone(),
            reason: format!(
                "its timestamp {stamped} (the action's, or one past its stream's latest) is past {}",
                crate::merge::MAX_TIMESTAMP_MS
            ),
        });
    }
    Ok(stamped)
}
