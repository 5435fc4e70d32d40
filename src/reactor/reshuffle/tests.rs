use std::collections::HashSet;

use super::*;
use crate::model::{Action, ActionType, Digest, OperationId, Scope};

fn op(id: &str, index: u64, skip: u64, ts: u64) -> Operation {
    op_typed(id, "SET", index, skip, ts)
}

fn op_typed(id: &str, action_type: &str, index: u64, skip: u64, ts: u64) -> Operation {
    Operation {
        id: OperationId([id.len() as u8; 16]),
        index,
        skip,
        timestamp_utc_ms: ts,
        hash: Digest::default(),
        state_hash: Digest::default(),
        action: Action::new(
            ActionId::new(id).expect("valid"),
            ActionType::new(action_type).expect("valid"),
            Scope::global(),
            ts,
            Vec::new(),
        ),
        error: None,
    }
}

fn ids(ops: &[Operation]) -> Vec<&str> {
    ops.iter().map(|o| o.action.id.as_str()).collect()
}

fn known(ops: &[Operation]) -> HashSet<ActionId> {
    ops.iter().map(|o| o.action.id.clone()).collect()
}

#[test]
fn reference_example_replica_a() {
    let local = vec![op("a1", 0, 0, 1), op("a2", 1, 0, 3), op("a3", 2, 0, 5)];
    let incoming = vec![op("b1", 0, 0, 2), op("b2", 1, 0, 4), op("b3", 2, 0, 6)];
    let plan = plan(3, &local, &known(&local), incoming).expect("something new");
    assert_eq!((plan.start, plan.skip, plan.base, plan.moved), (3, 2, 1, 2));
    assert_eq!(ids(&plan.ops), ["b1", "a2", "b2", "a3", "b3"]);
}

#[test]
fn reference_example_replica_b() {
    let local = vec![op("b1", 0, 0, 2), op("b2", 1, 0, 4), op("b3", 2, 0, 6)];
    let incoming = vec![op("a1", 0, 0, 1), op("a2", 1, 0, 3), op("a3", 2, 0, 5)];
    let plan = plan(3, &local, &known(&local), incoming).expect("something new");
    assert_eq!((plan.start, plan.skip, plan.base, plan.moved), (3, 3, 0, 3));
    assert_eq!(ids(&plan.ops), ["a1", "b1", "a2", "b2", "a3", "b3"]);
}

#[test]
fn the_same_set_in_any_input_order_gives_the_same_result() {
    let local = vec![op("l1", 0, 0, 10), op("l2", 1, 0, 20), op("l3", 2, 0, 20)];
    let incoming = vec![
        op("r3", 5, 0, 20),
        op("r1", 3, 0, 15),
        op("r2", 4, 0, 20),
        op("r0", 2, 0, 20),
    ];
    let reference = plan(3, &local, &known(&local), incoming.clone()).expect("plan");
    let mut rotated = incoming;
    for _ in 0..4 {
        rotated.rotate_left(1);
        let again = plan(3, &local, &known(&local), rotated.clone()).expect("plan");
        assert_eq!(ids(&again.ops), ids(&reference.ops));
        let mut reversed = rotated.clone();
        reversed.reverse();
        assert_eq!(
            ids(&plan(3, &local, &known(&local), reversed).expect("plan").ops),
            ids(&reference.ops)
        );
    }
    // Ties on timestamp are broken by action id, as bytes.
    assert_eq!(ids(&reference.ops), ["r1", "l2", "l3", "r0", "r2", "r3"]);
}

#[test]
fn structural_actions_sort_first_at_equal_timestamps() {
    let a = op_typed("z-delete", "DELETE_DOCUMENT", 4, 0, 7);
    let b = op("a-set", 3, 0, 7);
    assert_eq!(merge_order(&a, &b), Ordering::Less);
    assert_eq!(merge_order(&b, &a), Ordering::Greater);
    // Among structural ones, the position (index - skip) decides next.
    let c = op_typed("a-rel", "ADD_RELATIONSHIP", 9, 0, 7);
    assert_eq!(merge_order(&a, &c), Ordering::Less);
}

#[test]
fn merge_order_is_a_total_order() {
    // Every pair and triple of a varied set: antisymmetric and transitive.
    let set = vec![
        op("a", 0, 0, 1),
        op("b", 5, 2, 1),
        op_typed("c", "CREATE_DOCUMENT", 0, 0, 1),
        op_typed("d", "DELETE_DOCUMENT", 7, 3, 1),
        op_typed("e", "ADD_RELATIONSHIP", 2, 0, 1),
        op("f", 1, 0, 0),
        op("a", 9, 0, 1),
    ];
    for x in &set {
        for y in &set {
            assert_eq!(merge_order(x, y), merge_order(y, x).reverse());
            for z in &set {
                if merge_order(x, y) != Ordering::Greater && merge_order(y, z) != Ordering::Greater
                {
                    assert_ne!(merge_order(x, z), Ordering::Greater);
                }
            }
        }
    }
}

#[test]
fn candidates_come_from_the_effective_history_only() {
    // The raw log had x at 1, undone by the NOOP at 2; the effective history
    // passed in is [l0, noop]. x never moves.
    let effective = vec![op("l0", 0, 0, 1), op_typed("noop", "NOOP", 2, 1, 9)];
    let mut all_known = known(&effective);
    all_known.insert(ActionId::new("x").expect("valid"));
    let plan = plan(3, &effective, &all_known, vec![op("r", 0, 0, 5)]).expect("plan");
    assert_eq!(ids(&plan.ops), ["r", "noop"]);
    assert_eq!((plan.base, plan.skip, plan.moved), (2, 1, 1));
}

#[test]
fn genesis_never_moves_and_known_actions_are_dropped() {
    let local = vec![
        op_typed("create", "CREATE_DOCUMENT", 0, 0, 50),
        op("l1", 1, 0, 60),
    ];
    let incoming = vec![op("r1", 0, 0, 10), op("l1", 1, 0, 60), op("r1", 0, 0, 10)];
    let plan = plan(2, &local, &known(&local), incoming).expect("plan");
    assert_eq!(
        ids(&plan.ops),
        ["r1", "l1"],
        "create stays, l1 moves once, r1 once"
    );
    assert_eq!((plan.base, plan.skip), (1, 1));
    // Everything known: nothing to do.
    assert_eq!(plan_none(&local), None);
}

fn plan_none(local: &[Operation]) -> Option<Plan> {
    plan(2, local, &known(local), vec![op("l1", 1, 0, 60)])
}

#[test]
fn no_conflict_appends_without_skip() {
    let local = vec![op("l0", 0, 0, 1)];
    let plan = plan(
        1,
        &local,
        &known(&local),
        vec![op("r2", 0, 0, 9), op("r1", 1, 0, 5)],
    )
    .expect("plan");
    assert_eq!((plan.skip, plan.moved, plan.base), (0, 0, 1));
    assert_eq!(ids(&plan.ops), ["r1", "r2"]);
}
