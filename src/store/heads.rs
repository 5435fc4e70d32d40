//! In-memory stream heads, one lock per stream: the revision guard's
//! compare-and-swap happens under the stream's own mutex, so revision checks
//! of different streams never wait for each other. Owns no disk state; the
//! `heads` column family is written in the same batch as the operations.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::codec::HeadValue;

/// A stream's cached head. `None` inside a loaded slot: the stream is empty.
#[derive(Default)]
pub(crate) struct HeadSlot {
    pub(crate) loaded: bool,
    pub(crate) head: Option<HeadValue>,
}

/// Stream key → its lock and cached head.
#[derive(Default)]
pub(crate) struct HeadTable {
    slots: RwLock<HashMap<Vec<u8>, Arc<Mutex<HeadSlot>>>>,
}

impl HeadTable {
    /// The lock of a stream, created on first use.
    pub(crate) fn slot(&self, unit_key: &[u8]) -> Arc<Mutex<HeadSlot>> {
        if let Some(slot) = self.slots.read().get(unit_key) {
            return Arc::clone(slot);
        }
        Arc::clone(self.slots.write().entry(unit_key.to_vec()).or_default())
    }
}

/// Locks several streams in key order (the one global lock order, so two
/// transactions with overlapping read sets cannot deadlock).
pub(crate) fn lock_in_order<'a>(
    slots: &'a [(Vec<u8>, Arc<Mutex<HeadSlot>>)],
) -> Vec<MutexGuard<'a, HeadSlot>> {
    debug_assert!(slots.windows(2).all(|w| w[0].0 < w[1].0));
    slots.iter().map(|(_, slot)| slot.lock()).collect()
}
