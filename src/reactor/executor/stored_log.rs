//! A stream's raw log as the merge planner reads it from the store: one
//! operation by index, and the copies of an operation id through the
//! op-id index. Reads nothing up front, so a merge costs what it reads.

use crate::error::{Error, Result};
use crate::keys;
use std::collections::HashSet;

use crate::merge::{self, RawLog};
use crate::model::{Digest, DocumentType, Operation, OperationId, Ordinal, SyncUnit};
use crate::store::OperationStore;

/// One stream's raw log in the store, as of one read of its head.
pub(super) struct StoredLog<'a> {
    store: &'a OperationStore,
    pub(super) unit: &'a SyncUnit,
    pub(super) unit_key: Vec<u8>,
    head: u64,
    /// The highest operation timestamp the stream holds (0: empty).
    pub(super) latest: u64,
    /// The type the stream is stored with (`None`: empty).
    pub(super) stored_type: Option<DocumentType>,
    /// Whether the log is known to be in merge order (its head says so).
    in_merge_order: bool,
}

impl<'a> StoredLog<'a> {
    /// The stream `unit` as its head now stands.
    pub(super) fn open(store: &'a OperationStore, unit: &'a SyncUnit) -> Result<Self> {
        let info = store.head(unit)?;
        Ok(Self {
            store,
            unit,
            unit_key: keys::unit_key(unit),
            head: info.as_ref().map_or(0, |i| i.revision.0),
            latest: info.as_ref().map_or(0, |i| i.latest_timestamp_utc_ms),
            in_merge_order: info.as_ref().is_none_or(|i| i.in_merge_order),
            stored_type: info.map(|i| i.document_type),
        })
    }

    /// Plans adding `incoming`: reading only what changes when the log is
    /// in merge order, else (written around the reactor since its last
    /// merge) from the whole log, which the write then puts in order.
    pub(super) fn plan(&self, incoming: &[Operation]) -> Result<Option<merge::Plan>> {
        if self.in_merge_order {
            return merge::plan(self, incoming);
        }
        // Out of order: the whole log is read, but only when something
        // arrives that it does not hold (a repeated load costs its lookups).
        let mut any_new = false;
        for op in incoming {
            let mut held = false;
            for index in self.copies(&op.id)?.into_iter().rev() {
                if self.get(index)?.content_hash == op.content_hash {
                    held = true;
                    break;
                }
            }
            if !held {
                any_new = true;
                break;
            }
        }
        if !any_new && !incoming.is_empty() {
            return Ok(None);
        }
        let raw: Vec<Operation> = self
            .store
            .scan_until(&self.unit_key, 0, Some(self.head), Ordinal(u64::MAX))?
            .into_iter()
            .map(|(op, _)| op)
            .collect();
        let held: HashSet<(OperationId, Digest)> =
            raw.iter().map(|op| (op.id, op.content_hash)).collect();
        let new: Vec<Operation> = incoming
            .iter()
            .filter(|op| !held.contains(&(op.id, op.content_hash)))
            .cloned()
            .collect();
        merge::plan_whole(&raw, new)
    }

    /// The latest operation of the history (newest first, following the
    /// skips) that `wanted` accepts, read backwards from the head.
    pub(super) fn latest_effective(
        &self,
        wanted: impl Fn(&Operation) -> bool,
    ) -> Result<Option<Operation>> {
        let mut at = self.head;
        while at > 0 {
            let op = self.get(at - 1)?;
            if wanted(&op) {
                return Ok(Some(op));
            }
            at = (at - 1).saturating_sub(op.skip);
        }
        Ok(None)
    }
}

impl RawLog for StoredLog<'_> {
    fn head(&self) -> u64 {
        self.head
    }

    fn get(&self, index: u64) -> Result<Operation> {
        match self.store.get_with_ordinal(&self.unit_key, index)? {
            Some((op, _)) => Ok(op),
            None => Err(Error::Corrupt {
                cf: keys::CF_OPERATIONS,
                what: "operation below its stream's head",
            }),
        }
    }

    fn latest_timestamp(&self) -> Option<u64> {
        Some(self.latest)
    }

    fn copies(&self, id: &OperationId) -> Result<Vec<u64>> {
        Ok(self
            .store
            .locate(id)?
            .into_iter()
            .filter(|at| at.unit == *self.unit && at.index < self.head)
            .map(|at| at.index)
            .collect())
    }
}
