//! Following the ordinal feed through the bus. Concurrent commits announce
//! in the order they finish, not in ordinal order, so an announcement can
//! arrive just before the one that precedes it. A follower (the view, a
//! sync session's outbox) keeps announced operations here, takes the run
//! that continues where it is, and reads the store only when a gap
//! outlasts [`GAP_WAIT`] (an announcement it missed, or a write that went
//! around the bus), instead of reading the store at every reordering.
//!
//! Only the engine's own announcements are kept: anyone else's are not
//! trusted as they are (see [`super::Delivery`]). This owns no state of
//! the store and decides nothing about what is committed: whatever it
//! holds is a copy of what the store already has.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Delivery, Event};
use crate::model::OperationWithContext;

/// How long a gap before the announced operations may last before the
/// follower reads the store: a commit announces a few microseconds after
/// the one before it, unless its thread was descheduled in between.
pub(crate) const GAP_WAIT: Duration = Duration::from_millis(2);

/// An announced operation, and whether a local execute originated it
/// ([`Delivery::originated`]).
pub(crate) struct AnnouncedOp {
    pub(crate) item: OperationWithContext,
    pub(crate) originated: bool,
}

/// A follower's next step (see [`FeedBuffer::next`]).
pub(crate) enum FeedStep {
    /// Operations that continue where the follower is, in ordinal order.
    Run(Vec<AnnouncedOp>),
    /// Nothing to take now: caught up, or the next is about to be
    /// announced.
    Wait,
    /// The next committed operation was not announced in time: read it.
    ReadStore,
}

/// One operation of an announcement as the buffer holds it: the
/// announcement's own array (shared with the bus and every other
/// subscriber, not copied) and the operation's place in it.
struct Held {
    operations: Arc<[OperationWithContext]>,
    at: usize,
    originated: bool,
}

/// Announced operations past a follower's position, by ordinal, at most
/// `max` of them (past that, the highest are left to the store). It holds
/// the announcements' arrays, as a subscription's queue does, so a bound
/// of a subscription's capacity in operations holds no more than a full
/// queue would.
pub(crate) struct FeedBuffer {
    pending: BTreeMap<u64, Held>,
    max: usize,
    /// Since when the follower has waited for the operation after its
    /// position (committed or announced past it, not here).
    gap_since: Option<Instant>,
}

impl FeedBuffer {
    /// An empty buffer of at most `max` operations.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            pending: BTreeMap::new(),
            max,
            gap_since: None,
        }
    }

    /// Keeps the operations an engine delivery announces past `after`.
    /// Returns `false` for anyone else's delivery (it only says "read the
    /// store").
    pub(crate) fn offer(&mut self, delivery: &Delivery, after: u64) -> bool {
        if !delivery.from_engine {
            return false;
        }
        let Event::OperationsWritten { operations } = &delivery.event;
        for (at, op) in operations.iter().enumerate() {
            let ordinal = op.context.ordinal.get();
            if ordinal <= after {
                continue;
            }
            if self.pending.len() >= self.max {
                // Full: keep the lowest, which are handed out first.
                match self.pending.last_key_value() {
                    Some((&highest, _)) if highest > ordinal => {
                        self.pending.pop_last();
                    }
                    _ => continue,
                }
            }
            let held = Held {
                operations: Arc::clone(operations),
                at,
                originated: delivery.originated,
            };
            self.pending.insert(ordinal, held);
        }
        true
    }

    /// What a follower that has everything through `after` does next,
    /// with the store committed through `committed`: take the announced
    /// run that continues (at most `max` operations, removed from the
    /// buffer), wait a little for the next to be announced, or read the
    /// store because it was not within [`GAP_WAIT`].
    pub(crate) fn next(&mut self, after: u64, committed: u64, max: usize) -> FeedStep {
        self.drop_through(after);
        let mut run = Vec::new();
        let mut next = after + 1;
        while run.len() < max {
            let Some(held) = self.pending.remove(&next) else {
                break;
            };
            run.push(AnnouncedOp {
                item: held.operations[held.at].clone(),
                originated: held.originated,
            });
            next += 1;
        }
        let end = after + run.len() as u64;
        // Anything past `end` committed or announced is not here yet.
        let waiting = end < committed.max(self.pending.last_key_value().map_or(0, |(&k, _)| k));
        if !run.is_empty() {
            self.gap_since = waiting.then(Instant::now);
            return FeedStep::Run(run);
        }
        if !waiting {
            self.gap_since = None;
            return FeedStep::Wait;
        }
        match self.gap_since {
            Some(since) if since.elapsed() >= GAP_WAIT => FeedStep::ReadStore,
            Some(_) => FeedStep::Wait,
            None => {
                self.gap_since = Some(Instant::now());
                FeedStep::Wait
            }
        }
    }

    /// Whether the follower is waiting for an operation to be announced
    /// (it should look again within [`GAP_WAIT`]).
    pub(crate) fn is_waiting(&self) -> bool {
        self.gap_since.is_some()
    }

    /// The follower read everything through `through` from the store,
    /// which was committed through `committed`: drops what it holds up to
    /// there. Caught up, the next gap is waited for again; still behind,
    /// the next read follows at once.
    pub(crate) fn read_from_store(&mut self, through: u64, committed: u64) {
        self.drop_through(through);
        if through >= committed {
            self.gap_since = None;
        }
    }

    fn drop_through(&mut self, ordinal: u64) {
        while self
            .pending
            .first_key_value()
            .is_some_and(|(&first, _)| first <= ordinal)
        {
            self.pending.pop_first();
        }
    }

    /// Whether it holds announced operations (past a gap).
    pub(crate) fn has_announced(&self) -> bool {
        !self.pending.is_empty()
    }

    /// How many operations it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}
