//! What a job does.

use super::jobs::JobId;
use crate::model::{Action, OperationWithContext};

/// A unit of work on one document (and branch).
#[derive(Debug)]
pub(crate) enum Job {
    /// Reduce and append actions (system actions in the `document` scope,
    /// model actions elsewhere).
    Execute {
        actions: Vec<Action>,
        dependencies: Vec<JobId>,
    },
    /// Merge operations from a peer.
    Load {
        operations: Vec<OperationWithContext>,
        dependencies: Vec<JobId>,
    },
}

impl Job {
    pub(crate) fn execute(actions: Vec<Action>) -> Self {
        Job::Execute {
            actions,
            dependencies: Vec::new(),
        }
    }

    pub(crate) fn load(operations: Vec<OperationWithContext>) -> Self {
        Job::Load {
            operations,
            dependencies: Vec::new(),
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
        matches!(self, Job::Execute { dependencies, actions }
            if dependencies.is_empty()
                && !actions.iter().any(|a| crate::merge::is_marker(a.action_type.as_str())))
    }

    pub(crate) fn dependencies(&self) -> &[JobId] {
        match self {
            Job::Execute { dependencies, .. } | Job::Load { dependencies, .. } => dependencies,
        }
    }
}
