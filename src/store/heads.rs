//! In-memory stream heads, one lock per stream: the revision guard's
//! compare-and-swap happens under the stream's own mutex, so revision checks
//! of different streams never wait for each other. Owns no disk state; the
//! `heads` column family is written in the same batch as the operations.
//!
//! The table is bounded (`StoreOptions::cached_stream_heads`): past the
//! bound, idle streams are evicted and their heads are read again from the
//! `heads` column family when next used. A slot is idle when the table holds
//! the only reference to it: a caller that is checking or writing a stream
//! holds a clone from `slot` until it has written the new head, and clones
//! are taken under the read lock while eviction runs under the write lock,
//! so a slot is never evicted while anyone may lock it (two mutexes for one
//! stream would break the guard).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::codec::HeadValue;

/// A stream's cached head. `None` inside a loaded slot: the stream is empty.
#[derive(Default)]
pub(crate) struct HeadSlot {
    pub(crate) loaded: bool,
    pub(crate) head: Option<HeadValue>,
}

/// A slot and whether it was used since the last eviction sweep (a second
/// chance: recently used streams stay).
struct Entry {
    slot: Arc<Mutex<HeadSlot>>,
    used: AtomicBool,
}

/// Stream key → its lock and cached head, at most `bound` idle ones.
pub(crate) struct HeadTable {
    slots: RwLock<HashMap<Vec<u8>, Entry>>,
    bound: usize,
}

impl HeadTable {
    /// A table that keeps at most `bound` streams (more only while they
    /// are in use).
    pub(crate) fn new(bound: usize) -> Self {
        Self {
            slots: RwLock::new(HashMap::new()),
            bound: bound.max(1),
        }
    }

    /// The lock of a stream, created (and its head loaded later) on first
    /// use or after eviction.
    pub(crate) fn slot(&self, unit_key: &[u8]) -> Arc<Mutex<HeadSlot>> {
        if let Some(entry) = self.slots.read().get(unit_key) {
            entry.used.store(true, Ordering::Relaxed);
            return Arc::clone(&entry.slot);
        }
        let mut slots = self.slots.write();
        if !slots.contains_key(unit_key) && slots.len() >= self.bound {
            evict(&mut slots, self.bound);
        }
        let entry = slots.entry(unit_key.to_vec()).or_insert_with(|| Entry {
            slot: Arc::default(),
            used: AtomicBool::new(true),
        });
        Arc::clone(&entry.slot)
    }

    /// How many streams the table holds now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.read().len()
    }
}

/// Drops idle slots until the table is a tenth below `bound` (so a sweep
/// is paid once per many insertions): first those not used since the last
/// sweep, then, if that was not enough, any idle one. A slot in use (held
/// outside the table) is never dropped, so the table may stay above the
/// bound while more streams than that are in use at once.
fn evict(slots: &mut HashMap<Vec<u8>, Entry>, bound: usize) {
    let target = bound - bound / 10 - 1;
    let idle = |entry: &Entry| Arc::strong_count(&entry.slot) == 1;
    let mut over = slots.len().saturating_sub(target);
    slots.retain(|_, entry| {
        if over > 0 && idle(entry) && !entry.used.swap(false, Ordering::Relaxed) {
            over -= 1;
            return false;
        }
        true
    });
    if over > 0 {
        slots.retain(|_, entry| {
            if over > 0 && idle(entry) {
                over -= 1;
                return false;
            }
            true
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_bound_and_never_drops_a_slot_in_use() {
        let table = HeadTable::new(10);
        let held = table.slot(b"held");
        held.lock().loaded = true;
        for i in 0..1_000u32 {
            table.slot(&i.to_be_bytes());
            assert!(table.len() <= 10, "{} slots", table.len());
        }
        // The held slot is the same lock, with what it was given.
        let again = table.slot(b"held");
        assert!(Arc::ptr_eq(&held, &again));
        assert!(again.lock().loaded);
    }

    #[test]
    fn goes_above_the_bound_only_while_more_are_in_use() {
        let table = HeadTable::new(4);
        let in_use: Vec<_> = (0..8u32).map(|i| table.slot(&i.to_be_bytes())).collect();
        assert_eq!(table.len(), 8);
        drop(in_use);
        table.slot(b"next");
        assert!(table.len() <= 4, "{} slots", table.len());
    }
}
