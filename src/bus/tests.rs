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
