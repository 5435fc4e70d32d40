//! Checking the encoding's invariant on a whole store: each stream's
//! collected raw log equals the effective history of its set.

use crate::error::Result;
use crate::keys;
use crate::model::{Ordinal, SyncUnit};
use crate::store::OperationStore;

/// What [`verify_histories`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryReport {
    /// Streams checked.
    pub streams_checked: u64,
    /// The first stream whose raw log, collected by skips, is not the
    /// effective history of the operations it holds, if any.
    pub first_diverged: Option<SyncUnit>,
}

impl HistoryReport {
    /// Whether every stream holds the invariant.
    pub fn is_clean(&self) -> bool {
        self.first_diverged.is_none()
    }
}

/// Checks `collect(raw) == effective(set(raw))` for every stream: what the
/// view folds is what the merge rule says the operations held mean. A
/// stream written only through the reactor always holds it; one written
/// around it (`OperationStore::apply`, `import`) may not, and the next merge
/// into that stream mends it.
pub fn verify_histories(store: &OperationStore) -> Result<HistoryReport> {
    let mut report = HistoryReport::default();
    for stream in store.all_streams()? {
        report.streams_checked += 1;
        let raw: Vec<_> = store
            .scan_until(&keys::unit_key(&stream.unit), 0, None, Ordinal(u64::MAX))?
            .into_iter()
            .map(|(op, _)| op)
            .collect();
        if super::plan_whole(&raw, Vec::new())?.is_some() {
            report.first_diverged = Some(stream.unit);
            break;
        }
    }
    Ok(report)
}
