use std::time::{Duration, Instant};

use super::*;
use crate::model::{
    Action, ActionId, ActionType, Branch, Digest, DocumentId, DocumentType, Operation,
    OperationContext, OperationId, Scope,
};

fn event(ordinal: u64) -> Event {
    let action = Action::new(
        ActionId::new(format!("a{ordinal}")).expect("valid"),
        ActionType::new("T").expect("valid"),
        Scope::global(),
        ordinal,
        Vec::new(),
    );
    Event::written(vec![OperationWithContext {
        operation: Operation {
            id: OperationId([0; 16]),
            index: ordinal,
            skip: 0,
            timestamp_utc_ms: ordinal,
            hash: Digest::default(),
            state_hash: Digest::default(),
            content_hash: Digest::default(),
            action,
            error: None,
        },
        context: OperationContext {
            document_id: DocumentId::new("d").expect("valid"),
            document_type: DocumentType::new("t").expect("valid"),
            scope: Scope::global(),
            branch: Branch::main(),
            ordinal: Ordinal(ordinal),
        },
    }])
}

#[test]
fn delivers_in_emit_order_to_every_subscriber() {
    let bus = EventBus::new();
    let a = bus.subscribe(100);
    let b = bus.subscribe(100);
    for i in 1..=50 {
        assert_eq!(bus.emit(event(i)), 2);
    }
    for sub in [&a, &b] {
        let got: Vec<u64> = std::iter::from_fn(|| sub.try_recv())
            .filter_map(|e| e.last_ordinal())
            .map(Ordinal::get)
            .collect();
        assert_eq!(got, (1..=50).collect::<Vec<_>>());
    }
}

#[test]
fn a_slow_subscriber_never_blocks_the_writer() {
    let bus = EventBus::new();
    let slow = bus.subscribe(4); // never read during the emits
    let fast = bus.subscribe(10_000);
    let start = Instant::now();
    for i in 1..=1_000 {
        bus.emit(event(i));
    }
    assert!(start.elapsed() < Duration::from_secs(5), "emit blocked");
    assert_eq!(slow.missed(), 996, "overflow is dropped and counted");
    assert_eq!(fast.missed(), 0);
    // The slow subscriber keeps the first events, in order.
    let kept: Vec<u64> = std::iter::from_fn(|| slow.try_recv())
        .filter_map(|e| e.last_ordinal())
        .map(Ordinal::get)
        .collect();
    assert_eq!(kept, vec![1, 2, 3, 4]);
}

#[test]
fn dropping_a_subscription_unsubscribes_and_emit_still_works() {
    let bus = EventBus::new();
    let sub = bus.subscribe(1);
    assert_eq!(bus.subscriber_count(), 1);
    drop(sub);
    assert_eq!(bus.subscriber_count(), 0);
    assert_eq!(bus.emit(event(1)), 0);
}

#[test]
fn concurrent_emitters_are_seen_in_one_order_by_all() {
    let bus = EventBus::new();
    let a = bus.subscribe(10_000);
    let b = bus.subscribe(10_000);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let bus = bus.clone();
            s.spawn(move || {
                for i in 0..500 {
                    bus.emit(event(t * 1_000 + i));
                }
            });
        }
    });
    let drain = |s: &Subscription| -> Vec<u64> {
        std::iter::from_fn(|| s.try_recv())
            .filter_map(|e| e.last_ordinal())
            .map(Ordinal::get)
            .collect()
    };
    let (seen_a, seen_b) = (drain(&a), drain(&b));
    assert_eq!(seen_a.len(), 2_000);
    assert_eq!(seen_a, seen_b);
}

#[test]
fn a_subscription_outliving_its_bus_waits_instead_of_spinning() {
    let bus = EventBus::new();
    let sub = bus.subscribe(4);
    drop(bus);
    let start = Instant::now();
    assert!(sub.recv_timeout(Duration::from_millis(30)).is_none());
    assert!(
        start.elapsed() >= Duration::from_millis(30),
        "returned at once: a loop on it would spin"
    );
}

fn delivery(ordinals: &[u64], from_engine: bool) -> Delivery {
    let operations: Vec<OperationWithContext> = ordinals
        .iter()
        .flat_map(|&o| match event(o) {
            Event::OperationsWritten { operations } => operations.to_vec(),
        })
        .collect();
    Delivery {
        event: Event::written(operations),
        from_engine,
        originated: false,
    }
}

fn ordinals(step: FeedStep) -> Option<Vec<u64>> {
    match step {
        FeedStep::Run(run) => Some(run.iter().map(|a| a.item.context.ordinal.get()).collect()),
        _ => None,
    }
}

#[test]
fn the_feed_hands_out_runs_in_order_and_waits_at_a_gap() {
    let mut feed = FeedBuffer::new(100);
    assert!(feed.offer(&delivery(&[3, 4], true), 0));
    // 1 and 2 are committed but not announced yet: wait, then read.
    assert!(matches!(feed.next(0, 4, 10), FeedStep::Wait));
    assert!(feed.is_waiting());
    assert!(feed.offer(&delivery(&[1], true), 0));
    assert_eq!(ordinals(feed.next(0, 4, 10)), Some(vec![1]));
    std::thread::sleep(GAP_WAIT + Duration::from_millis(1));
    assert!(matches!(feed.next(1, 4, 10), FeedStep::ReadStore));
    // The follower read 2..=4 from the store: nothing is handed out twice.
    feed.read_from_store(4, 4);
    assert!(matches!(feed.next(4, 4, 10), FeedStep::Wait));
    assert!(!feed.is_waiting());
    assert_eq!(feed.len(), 0);
    // Anyone else's announcement is not kept.
    assert!(!feed.offer(&delivery(&[5], false), 4));
    assert_eq!(feed.len(), 0);
    // A run stops at `max`.
    feed.offer(&delivery(&[5, 6, 7], true), 4);
    assert_eq!(ordinals(feed.next(4, 7, 2)), Some(vec![5, 6]));
    assert_eq!(ordinals(feed.next(6, 7, 2)), Some(vec![7]));
}

#[test]
fn a_full_feed_keeps_the_lowest_ordinals() {
    let mut feed = FeedBuffer::new(3);
    feed.offer(&delivery(&[5, 6, 7], true), 0);
    feed.offer(&delivery(&[2], true), 0);
    feed.offer(&delivery(&[9], true), 0);
    assert_eq!(feed.len(), 3);
    feed.offer(&delivery(&[1, 3, 4], true), 0);
    assert_eq!(ordinals(feed.next(0, 9, 10)), Some(vec![1, 2, 3]));
}

/// xorshift: the tests' seeded randomness.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// A follower of a [`FeedBuffer`] in the naive model's terms: it holds the
/// ordinals it has seen, and "the store" holds every committed ordinal.
struct Follower {
    feed: FeedBuffer,
    seen: Vec<u64>,
    from_store: u64,
}

impl Follower {
    /// One step; `wait`: time passes first when it has to wait.
    fn step(&mut self, rng: &mut Rng, committed: u64, wait: bool) {
        let after = self.seen.last().copied().unwrap_or(0);
        match self.feed.next(after, committed, 1 + rng.below(8) as usize) {
            FeedStep::Run(run) => self
                .seen
                .extend(run.iter().map(|a| a.item.context.ordinal.get())),
            FeedStep::ReadStore => {
                let end = committed.min(after + 8);
                self.seen.extend(after + 1..=end);
                self.feed.read_from_store(end, committed);
                self.from_store += end - after;
            }
            FeedStep::Wait if wait => std::thread::sleep(GAP_WAIT),
            FeedStep::Wait => {}
        }
    }
}

/// A follower of the feed against a naive model: announcements arrive
/// shuffled, some are missed, some come from outside the engine, and the
/// follower reads "the store" (every ordinal, in order) when told to. It
/// must see every ordinal exactly once, in order, and mostly from the
/// bus.
#[test]
fn a_feed_follower_sees_every_ordinal_once_in_order() {
    for seed in 1..=200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let total = 200 + rng.below(300);
        // Announcements of 1–4 ordinals each, emitted out of order
        // within a small window, as concurrent commits do.
        let mut batches: Vec<Vec<u64>> = Vec::new();
        let mut at = 1;
        while at <= total {
            let len = (1 + rng.below(4)).min(total - at + 1);
            batches.push((at..at + len).collect());
            at += len;
        }
        for i in 0..batches.len() {
            let j = (i + rng.below(3) as usize).min(batches.len() - 1);
            batches.swap(i, j);
        }
        let mut follower = Follower {
            feed: FeedBuffer::new(64 + rng.below(256) as usize),
            seen: Vec::new(),
            from_store: 0,
        };
        let mut committed = 0;
        let mut stuck = 0;
        for batch in batches {
            committed = committed.max(*batch.iter().max().expect("not empty"));
            let after = follower.seen.last().copied().unwrap_or(0);
            match rng.below(50) {
                0 => {} // missed
                1 => {
                    follower.feed.offer(&delivery(&batch, false), after);
                }
                _ => {
                    follower.feed.offer(&delivery(&batch, true), after);
                }
            }
            // Stuck for a while (a missed announcement): let time pass.
            let before = follower.seen.len();
            follower.step(&mut rng, committed, stuck >= 4);
            stuck = if follower.seen.len() == before {
                stuck + 1
            } else {
                0
            };
        }
        while follower.seen.last().copied().unwrap_or(0) < total {
            follower.step(&mut rng, total, true);
        }
        let expected: Vec<u64> = (1..=total).collect();
        assert_eq!(follower.seen, expected, "seed {seed}");
        assert!(
            follower.from_store < total / 2,
            "seed {seed}: {} of {total} came from the store",
            follower.from_store
        );
    }
}
