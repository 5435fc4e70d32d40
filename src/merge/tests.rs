//! The merge rule's own cases, and the property check (`check`) run over
//! many seeds (the fuzz target's seed corpus is replayed by
//! `fuzzing::tests`).
//!
//! `REACTORDB_MERGE_SCENARIOS=100000 cargo test --lib merge::tests -- --nocapture`
//! runs the long mode.

use super::check::{collected, mend, op, scenario, write, Choices, Stats};
use super::*;

/// splitmix64: a seeded generator with no dependency.
struct Rng(u64);

impl Choices for Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

fn scenario_count() -> u64 {
    std::env::var("REACTORDB_MERGE_SCENARIOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

#[test]
fn every_replica_history_is_a_function_of_its_set() {
    let mut stats = Stats::default();
    for seed in 0..scenario_count() {
        scenario(&mut Rng(seed), seed, &mut stats);
    }
    assert!(stats.checks > stats.scenarios);
    println!(
        "merge model: {} scenarios, {} checks, 0 divergences; raw/distinct operations {:.2}",
        stats.scenarios,
        stats.checks,
        stats.raw_ops as f64 / stats.distinct_ops.max(1) as f64
    );
}

// ---- the rule's own cases -------------------------------------------

fn ids(raw: &[Operation]) -> Vec<String> {
    collected(raw).into_iter().map(|(id, _)| id).collect()
}

fn raw_log(raw: &[Operation]) -> Vec<String> {
    raw.iter()
        .map(|o| format!("{}:{}:{}", o.index, o.skip, o.action.id))
        .collect()
}

#[test]
fn the_reference_example_keeps_the_reference_logs() {
    let a_ops: Vec<Operation> = [("a1", 1), ("a2", 3), ("a3", 5)]
        .iter()
        .map(|(id, ts)| op(id, "SET", *ts, b""))
        .collect();
    let b_ops: Vec<Operation> = [("b1", 2), ("b2", 4), ("b3", 6)]
        .iter()
        .map(|(id, ts)| op(id, "SET", *ts, b""))
        .collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for o in &a_ops {
        write(&mut a, std::slice::from_ref(o));
    }
    for o in &b_ops {
        write(&mut b, std::slice::from_ref(o));
    }
    let (from_a, from_b) = (a.clone(), b.clone());
    write(&mut a, &from_b);
    write(&mut b, &from_a);
    assert_eq!(
        raw_log(&a),
        ["0:0:a1", "1:0:a2", "2:0:a3", "3:2:b1", "4:0:a2", "5:0:b2", "6:0:a3", "7:0:b3"]
    );
    assert_eq!(
        raw_log(&b),
        [
            "0:0:b1", "1:0:b2", "2:0:b3", "3:3:a1", "4:0:b1", "5:0:a2", "6:0:b2", "7:0:a3",
            "8:0:b3"
        ]
    );
    assert_eq!(ids(&a), ["a1", "b1", "a2", "b2", "a3", "b3"]);
    assert_eq!(ids(&b), ids(&a));
}

#[test]
fn an_undo_travels_by_target_and_a_redo_brings_it_back() {
    let mut a = Vec::new();
    write(&mut a, &[op("x1", "SET", 1, b"")]);
    let undo = op("u1", ACTION_UNDO, 2, &marker_input(&a[0].id));
    write(&mut a, std::slice::from_ref(&undo));
    assert_eq!(ids(&a), ["u1"]);
    // A peer that receives both, in either order, agrees.
    for order in [
        vec![a[0].clone(), undo.clone()],
        vec![undo.clone(), a[0].clone()],
    ] {
        let mut b = Vec::new();
        for o in order {
            write(&mut b, &[o]);
        }
        assert_eq!(ids(&b), ["u1"]);
    }
    let redo = op("r1", ACTION_REDO, 3, &marker_input(&undo.id));
    write(&mut a, &[redo]);
    assert_eq!(ids(&a), ["x1", "r1"]);
}

#[test]
fn markers_do_not_cancel_structure_or_later_operations() {
    let create = op("c", "CREATE_DOCUMENT", 1, b"");
    let later = op("x", "SET", 9, b"");
    let mut raw = Vec::new();
    write(
        &mut raw,
        &[
            create.clone(),
            op("u1", ACTION_UNDO, 2, &marker_input(&create.id)),
            op("u2", ACTION_UNDO, 3, &marker_input(&later.id)),
            later,
        ],
    );
    assert_eq!(ids(&raw), ["c", "u1", "u2", "x"]);
}

#[test]
fn two_versions_of_one_action_pick_the_same_winner_everywhere() {
    let v1 = op("x", "SET", 5, b"one");
    let v2 = op("x", "SET", 5, b"two");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    write(&mut a, std::slice::from_ref(&v1));
    write(&mut a, std::slice::from_ref(&v2));
    write(&mut b, std::slice::from_ref(&v2));
    write(&mut b, std::slice::from_ref(&v1));
    assert_eq!(collected(&a), collected(&b));
    assert_eq!(collected(&a).len(), 1);
}

#[test]
fn a_create_goes_first_whatever_its_timestamp() {
    let mut raw = Vec::new();
    write(&mut raw, &[op("x", "SET", 1, b"")]);
    write(&mut raw, &[op("c", "CREATE_DOCUMENT", 50, b"")]);
    assert_eq!(ids(&raw), ["c", "x"]);
    assert_eq!(raw_log(&raw), ["0:0:x", "1:1:c", "2:0:x"]);
}

#[test]
fn a_log_whose_history_runs_past_its_set_is_mended() {
    // Written around the reactor: one action id twice in the collected
    // history. Its set holds one winner, so the history is shorter than
    // the log's, and a plan must still hide the rest.
    let (v1, v2) = (op("x", "SET", 1, b"one"), op("x", "SET", 1, b"two"));
    let (winner, loser) = if sort_key(&v1) < sort_key(&v2) {
        (v1, v2)
    } else {
        (v2, v1)
    };
    let mut raw = vec![winner.clone(), op("a", "SET", 2, b""), loser];
    for (i, o) in raw.iter_mut().enumerate() {
        o.index = i as u64;
    }
    // An incremental plan trusts the invariant; the whole-log one mends.
    assert_eq!(write(&mut raw, &[]), None);
    assert!(mend(&mut raw).is_some());
    assert_eq!(
        collected(&raw),
        vec![
            ("x".to_owned(), winner.content_hash.0),
            ("a".to_owned(), op("a", "SET", 2, b"").content_hash.0),
        ]
    );
    assert_eq!(mend(&mut raw), None, "mended: nothing left to do");
}

// ---- cost: a plan reads what it changes ------------------------------

/// A log that counts the operations a plan reads from it.
struct Counting<'a> {
    raw: &'a [Operation],
    reads: std::cell::Cell<u64>,
}

impl RawLog for Counting<'_> {
    fn head(&self) -> u64 {
        self.raw.len() as u64
    }
    fn get(&self, index: u64) -> crate::error::Result<Operation> {
        self.reads.set(self.reads.get() + 1);
        RawLog::get(self.raw, index)
    }
    fn copies(&self, id: &OperationId) -> crate::error::Result<Vec<u64>> {
        // The store answers this from its op-id index: not a read of the log.
        self.raw.copies(id)
    }
    fn latest_timestamp(&self) -> Option<u64> {
        // The store's head keeps it: not a read of the log.
        self.raw.latest_timestamp()
    }
}

fn reads_of(raw: &[Operation], incoming: &[Operation]) -> (u64, Plan) {
    let log = Counting {
        raw,
        reads: std::cell::Cell::new(0),
    };
    let plan = plan(&log, incoming).expect("reads").expect("a change");
    (log.reads.get(), plan)
}

#[test]
fn a_plan_reads_what_it_changes_not_the_stream() {
    const N: u64 = 5_000;
    let mut raw = Vec::new();
    for i in 0..N {
        write(&mut raw, &[op(&format!("x{i}"), "SET", 10 * (i + 1), b"")]);
    }
    assert_eq!(raw.len() as u64, N);
    // An operation later than every held timestamp: nothing read (the
    // log's latest timestamp places it after the head).
    let (reads, plan) = reads_of(&raw, &[op("late", "SET", 10 * N + 5, b"")]);
    assert_eq!((reads, plan.skip, plan.ops.len()), (0, 0, 1));
    // At the latest timestamp itself the keys must be compared: one read
    // (the head, to place it).
    let (reads, plan) = reads_of(&raw, &[op("z-tie", "SET", 10 * N, b"")]);
    assert_eq!((reads, plan.skip, plan.ops.len()), (1, 0, 1));
    // One that lands 3 operations before the head: those 3 are re-appended
    // and read, plus the one it lands after.
    let (reads, plan) = reads_of(&raw, &[op("mid", "SET", 10 * (N - 3) + 5, b"")]);
    assert_eq!((reads, plan.ops.len()), (4, 4));
    // An undo of the operation 10 before the head: reads from its target on.
    let target = raw[(N - 10) as usize].clone();
    let undo = op("u", ACTION_UNDO, 10 * N + 1, &marker_input(&target.id));
    let (reads, plan) = reads_of(&raw, std::slice::from_ref(&undo));
    assert!(reads <= 12, "{reads} reads");
    assert_eq!(plan.ops.len(), 10, "9 after the target, then the undo");
    write(&mut raw, std::slice::from_ref(&undo));
    // A redo of that undo: the target comes back; still local to the tail.
    let redo_marker = op("r", ACTION_REDO, 10 * N + 2, &marker_input(&undo.id));
    let (reads, plan) = reads_of(&raw, &[redo_marker]);
    assert!(reads <= 16, "{reads} reads");
    assert_eq!(
        plan.ops.len(),
        11,
        "the target, 9 after it, the redo (the undo leaves)"
    );
    // Operations already held: nothing read beyond their copies.
    let log = Counting {
        raw: &raw,
        reads: std::cell::Cell::new(0),
    };
    let held: Vec<Operation> = raw[..100].to_vec();
    assert!(plan_of(&log, &held).is_none());
    assert_eq!(
        log.reads.get(),
        100,
        "one read per copy, to compare versions"
    );
}

fn plan_of(log: &Counting<'_>, incoming: &[Operation]) -> Option<Plan> {
    plan(log, incoming).expect("reads")
}
