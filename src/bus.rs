//! The event bus between the write side and its readers, on `flume`.
//!
//! Backpressure rule: every subscriber has its own bounded queue. `emit`
//! never blocks: when a subscriber's queue is full the event is dropped *for
//! that subscriber only* and counted in [`Subscription::missed`]; a
//! subscriber that is gone is removed. This is safe for the crate's readers
//! because events only announce what the Operation Store already holds:
//! the Document View notices the gap in ordinals and reads the missed
//! operations from the store. Emits are serialised, so every subscriber
//! sees events in emit order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::model::{OperationWithContext, Ordinal};

/// Something that happened on the write side.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// Operations were committed to the Operation Store.
    OperationsWritten {
        /// The operations, with stream and ordinal.
        operations: Arc<[OperationWithContext]>,
    },
}

impl Event {
    /// An `OperationsWritten` event for what an `apply` returned.
    pub fn written(operations: Vec<OperationWithContext>) -> Self {
        Event::OperationsWritten {
            operations: operations.into(),
        }
    }

    /// The highest ordinal the event carries, if any.
    pub fn last_ordinal(&self) -> Option<Ordinal> {
        match self {
            Event::OperationsWritten { operations } => {
                operations.iter().map(|o| o.context.ordinal).max()
            }
        }
    }
}

/// An event as a subscriber's channel carries it: with whether the engine
/// emitted it (its executor, after its own write) or anyone else did
/// through the public [`EventBus::emit`]. Only the engine's are trusted as
/// they are; anyone else's only prompts the view to read the store.
#[derive(Clone)]
pub(crate) struct Delivery {
    pub(crate) event: Event,
    pub(crate) from_engine: bool,
    /// The engine wrote these operations as a local execute planned them:
    /// new here (no remote sent them) and each the first copy of its
    /// content. Not for loads, merges or replays of stored operations.
    pub(crate) originated: bool,
}

struct Subscriber {
    id: u64,
    sender: flume::Sender<Delivery>,
    missed: Arc<AtomicU64>,
}

#[derive(Default)]
struct BusInner {
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
}

/// Fan-out of write-side events to any number of subscribers. Cheap to
/// clone; `Send + Sync`.
#[derive(Clone, Default)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}

impl EventBus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes with a queue of `capacity` events (at least 1). The
    /// subscription ends when the handle is dropped.
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        let (sender, receiver) = flume::bounded(capacity.max(1));
        let missed = Arc::new(AtomicU64::new(0));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.subscribers.lock().push(Subscriber {
            id,
            sender,
            missed: Arc::clone(&missed),
        });
        Subscription {
            id,
            bus: Arc::downgrade(&self.inner),
            receiver,
            missed,
        }
    }

    /// Delivers `event` to every subscriber without blocking (see the module
    /// docs for what happens to a full queue). Returns how many subscribers
    /// received it.
    pub fn emit(&self, event: Event) -> usize {
        self.deliver(Delivery {
            event,
            from_engine: false,
            originated: false,
        })
    }

    /// Emits an event the engine made from its own committed write;
    /// `originated` as [`Delivery::originated`].
    pub(crate) fn emit_from_engine(&self, event: Event, originated: bool) -> usize {
        self.deliver(Delivery {
            event,
            from_engine: true,
            originated,
        })
    }

    fn deliver(&self, delivery: Delivery) -> usize {
        let mut subscribers = self.inner.subscribers.lock();
        let mut delivered = 0;
        subscribers.retain(|s| match s.sender.try_send(delivery.clone()) {
            Ok(()) => {
                delivered += 1;
                true
            }
            Err(flume::TrySendError::Full(_)) => {
                s.missed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(flume::TrySendError::Disconnected(_)) => false,
        });
        delivered
    }

    /// How many subscriptions are live.
    pub fn subscriber_count(&self) -> usize {
        self.inner.subscribers.lock().len()
    }
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    bus: Weak<BusInner>,
    receiver: flume::Receiver<Delivery>,
    missed: Arc<AtomicU64>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("missed", &self.missed())
            .finish()
    }
}

impl Subscription {
    /// The next event, waiting at most `timeout`; `None` on timeout. When
    /// the bus is gone it still waits out `timeout` before answering `None`,
    /// so a subscriber looping on it polls instead of spinning.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.recv_delivery(timeout).map(|d| d.event)
    }

    /// [`recv_timeout`](Self::recv_timeout), with where the event came from.
    pub(crate) fn recv_delivery(&self, timeout: Duration) -> Option<Delivery> {
        match self.receiver.recv_timeout(timeout) {
            Ok(delivery) => Some(delivery),
            Err(flume::RecvTimeoutError::Timeout) => None,
            Err(flume::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                None
            }
        }
    }

    /// The next event if one is queued.
    pub fn try_recv(&self) -> Option<Event> {
        self.try_recv_delivery().map(|d| d.event)
    }

    /// [`try_recv`](Self::try_recv), with where the event came from.
    pub(crate) fn try_recv_delivery(&self) -> Option<Delivery> {
        self.receiver.try_recv().ok()
    }

    /// Events dropped for this subscriber because its queue was full.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.subscribers.lock().retain(|s| s.id != self.id);
        }
    }
}

mod feed;
pub(crate) use feed::{AnnouncedOp, FeedBuffer, FeedStep, GAP_WAIT};

#[cfg(test)]
mod tests;
