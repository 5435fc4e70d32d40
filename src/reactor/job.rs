//! What a job does.

use std::time::Instant;

use super::jobs::JobId;
use crate::model::{Action, OperationWithContext};
use crate::store::Durability;

/// A unit of work on one document (and branch).
#[derive(Debug)]
pub(crate) enum Job {
    /// Reduce and append actions (system actions in the `document` scope,
    /// model actions elsewhere).
    Execute {
        actions: Vec<Action>,
        dependencies: Vec<JobId>,
        /// Overrides the store's durability for this job's write.
        durability: Option<Durability>,
        /// When it was made (its latency runs from here).
        submitted: Instant,
    },
    /// Merge operations from a peer.
    Load {
        operations: Vec<OperationWithContext>,
        dependencies: Vec<JobId>,
        submitted: Instant,
    },
}

impl Job {
    pub(crate) fn execute(actions: Vec<Action>) -> Self {
        Job::Execute {
            actions,
            dependencies: Vec::new(),
            durability: None,
            submitted: Instant::now(),
        }
    }

    /// An execution written with `durability` instead of the store's.
    pub(crate) fn execute_with(actions: Vec<Action>, durability: Durability) -> Self {
        Job::Execute {
            actions,
            dependencies: Vec::new(),
            durability: Some(durability),
            submitted: Instant::now(),
        }
    }

    pub(crate) fn load(operations: Vec<OperationWithContext>) -> Self {
        Job::Load {
            operations,
            dependencies: Vec::new(),
            submitted: Instant::now(),
        }
    }

    /// When the job was made.
    pub(crate) fn submitted(&self) -> Instant {
        match self {
            Job::Execute { submitted, .. } | Job::Load { submitted, .. } => *submitted,
        }
    }

    pub(crate) fn with_dependencies(mut self, ids: Vec<JobId>) -> Self {
        match &mut self {
            Job::Execute { dependencies, .. } | Job::Load { dependencies, .. } => {
                *dependencies = ids
            }
        }
        self
    }

    /// Actions or operations in the job.
    pub(crate) fn len(&self) -> usize {
        match self {
            Job::Execute { actions, .. } => actions.len(),
            Job::Load { operations, .. } => operations.len(),
        }
    }

    /// Whether the job may be written together with its neighbours in the
    /// document's queue: an execution that waits for nothing. Loads run on
    /// their own (a merge re-reads the whole stream), and so do undo and redo,
    /// which re-order history.
    pub(crate) fn joins_runs(&self) -> bool {
        matches!(self, Job::Execute { dependencies, actions, .. }
            if dependencies.is_empty()
                && !actions.iter().any(|a| crate::merge::is_marker(a.action_type.as_str())))
    }

    pub(crate) fn dependencies(&self) -> &[JobId] {
        match self {
            Job::Execute { dependencies, .. } | Job::Load { dependencies, .. } => dependencies,
        }
    }
}

/// The durability a run of jobs is written with: the strongest any job
/// asks for (a synced job's fsync covers its neighbours too); `None`, the
/// store's, when a job asks for nothing and none asks for `Synced`.
pub(crate) fn run_durability<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> Option<Durability> {
    let mut strongest = Some(Durability::Buffered);
    for job in jobs {
        match job {
            Job::Execute {
                durability: Some(Durability::Synced),
                ..
            } => return Some(Durability::Synced),
            Job::Execute {
                durability: Some(Durability::Buffered),
                ..
            } => {}
            _ => strongest = None,
        }
    }
    strongest
}
