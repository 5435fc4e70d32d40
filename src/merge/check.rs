//! The merge property against an independent, naive model, driven by a
//! seed (the unit tests) or by raw bytes (the `merge_model` fuzz target).
//!
//! Property: a stream's effective history is a function of the set of
//! operations its replica holds. Each scenario runs 3–5 replicas of one
//! stream: local writes (plain, structural, creations, renames, upgrades,
//! deletions, undo, redo; lagging clocks, equal timestamps, an action id
//! reused with different content), and partial exchanges of raw logs in
//! random order and groupings, with duplicates. After every step each
//! replica's collected raw log (what the view folds) must equal the naive
//! model's history of the set that replica holds; after a final full
//! exchange every replica must hold the same history. A divergence panics
//! with the scenario's seed.
//!
//! The naive model shares only the definition of an operation's content
//! hash with the code under test (it is part of the spec: it picks the
//! winner between two versions of one id); it sorts with its own
//! comparator and settles cancellation by iterating to a fixpoint instead
//! of one backward pass.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::plan::Plan;
use super::*;
use crate::model::{Action, ActionId, ActionType, Branch, Digest, DocumentId, Scope, SyncUnit};

/// Where a scenario's choices come from.
pub(crate) trait Choices {
    /// A number below `n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64;
    /// True with the given percentage.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// Whether the choices have run out (a fuzzer's input is spent): the
    /// scenario stops taking steps, so its length follows the input's
    /// and a short input is a short run. A seeded generator never runs out.
    fn exhausted(&self) -> bool {
        false
    }
    /// Whether the final exchange is all to all (every replica sends its
    /// log to every other, so each merges others' partial logs too), or a
    /// gather and scatter through replica 0 (the same union in 2(n-1)
    /// deliveries instead of n(n-1): a fuzzer's runs, where speed buys
    /// coverage).
    fn all_to_all(&self) -> bool {
        true
    }
    /// Shuffles in place.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Choices read from bytes (a fuzzer's input): one byte each, 0 once the
/// input is spent.
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl Choices for Bytes<'_> {
    fn below(&mut self, n: u64) -> u64 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                u64::from(*b) % n
            }
            None => 0,
        }
    }
    fn exhausted(&self) -> bool {
        self.0.is_empty()
    }
    fn all_to_all(&self) -> bool {
        false
    }
}

/// The document scope: the one where creations sort first.
fn unit() -> SyncUnit {
    SyncUnit::new(
        DocumentId::new("doc").expect("valid"),
        Scope::document(),
        Branch::main(),
    )
}

pub(crate) fn op(action_id: &str, action_type: &str, ts: u64, input: &[u8]) -> Operation {
    let action_id = ActionId::new(action_id).expect("valid");
    let id = OperationId::derive(&unit(), &action_id);
    let action = Action::new(
        action_id,
        ActionType::new(action_type).expect("valid"),
        Scope::document(),
        ts,
        input.to_vec(),
    );
    Operation {
        id,
        index: 0,
        skip: 0,
        timestamp_utc_ms: ts,
        hash: Digest::default(),
        state_hash: Digest::default(),
        content_hash: Operation::content_hash_of(&id, ts, &action),
        action,
        error: None,
    }
}

/// Applies a plan to a raw log as the executor does: the hidden operations,
/// then the effective suffix whose first carries the plan's skip, indexed
/// from the head.
pub(crate) fn write(raw: &mut Vec<Operation>, incoming: &[Operation]) -> Option<Plan> {
    let plan = plan(raw.as_slice(), incoming).expect("an in-memory log reads")?;
    Some(append(raw, plan))
}

/// Rewrites a log that may break the invariant, as the migration does.
#[cfg(test)]
pub(crate) fn mend(raw: &mut Vec<Operation>) -> Option<Plan> {
    let plan = plan_whole(raw, Vec::new()).expect("an in-memory log reads")?;
    Some(append(raw, plan))
}

fn append(raw: &mut Vec<Operation>, plan: Plan) -> Plan {
    for op in &plan.hidden {
        let mut op = op.clone();
        op.index = raw.len() as u64;
        op.skip = 0;
        raw.push(op);
    }
    for (i, op) in plan.ops.iter().enumerate() {
        let mut op = op.clone();
        op.index = raw.len() as u64;
        op.skip = if i == 0 { plan.skip } else { 0 };
        raw.push(op);
    }
    plan
}

/// The collected raw log, as (action id, content digest).
pub(crate) fn collected(raw: &[Operation]) -> Vec<(String, [u8; 32])> {
    collect(raw.len(), |k| (raw[k].index, raw[k].skip))
        .into_iter()
        .map(|k| (raw[k].action.id.to_string(), raw[k].content_hash.0))
        .collect()
}

// ---- the naive model -------------------------------------------------

const NAIVE_STRUCTURAL: [&str; 6] = [
    "ADD_RELATIONSHIP",
    "CREATE_DOCUMENT",
    "DELETE_DOCUMENT",
    "REMOVE_RELATIONSHIP",
    "UPDATE_RELATIONSHIP",
    "UPGRADE_DOCUMENT",
];

fn naive_target(op: &Operation) -> Option<[u8; 16]> {
    let t = op.action.action_type.as_str();
    if t != "UNDO" && t != "REDO" {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&op.action.input).ok()?;
    let hex = value.get("target")?.as_str()?;
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

type NaiveKey = (u8, u64, u8, Vec<u8>, [u8; 32]);

/// The content hash by its definition (the model recomputes it rather than
/// trusting the carried one).
fn naive_content(op: &Operation) -> [u8; 32] {
    Operation::content_hash_of(&op.id, op.timestamp_utc_ms, &op.action).0
}

fn naive_key(op: &Operation) -> NaiveKey {
    let t = op.action.action_type.as_str();
    (
        if t == "CREATE_DOCUMENT" && op.action.scope.as_str() == "document" {
            0
        } else {
            1
        },
        op.timestamp_utc_ms,
        if NAIVE_STRUCTURAL.contains(&t) { 0 } else { 1 },
        op.action.id.as_str().as_bytes().to_vec(),
        naive_content(op),
    )
}

/// Keys the model's maps by operation ids, which are already uniform
/// hashes (blake3): their first bytes are the hash. A fuzzer spends most
/// of its time in instrumented code, and SipHash was a seventh of it.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// An operation the model holds, with its sort key and marker target
/// computed once by the model's own definitions when it arrived (they
/// hash and parse; recomputing them every step is what made the check
/// slow, not what made it independent).
struct Held {
    op: Operation,
    key: NaiveKey,
    target: Option<[u8; 16]>,
}

impl Held {
    fn new(op: Operation) -> Self {
        Held {
            key: naive_key(&op),
            target: naive_target(&op),
            op,
        }
    }
}

/// The history of a set: winners per id, sorted, cancellation to a
/// fixpoint (markers point backwards, so Jacobi iteration settles).
fn naive_history(set: &[Held]) -> Vec<&Held> {
    // Maps instead of nested scans: a fuzzer instruments every comparison,
    // and quadratic scans were most of its time.
    let mut keyed: Vec<&Held> = Vec::new();
    let mut slot_of: IdMap<OperationId, usize> = IdMap::default();
    for candidate in set {
        match slot_of.get(&candidate.op.id) {
            None => {
                slot_of.insert(candidate.op.id, keyed.len());
                keyed.push(candidate);
            }
            Some(&i) => {
                if candidate.key < keyed[i].key {
                    keyed[i] = candidate;
                }
            }
        }
    }
    keyed.sort_by(|a, b| a.key.cmp(&b.key));
    // Each operation's markers: the positions of the winners naming it.
    let mut markers_of: IdMap<[u8; 16], Vec<usize>> = IdMap::default();
    for (m, held) in keyed.iter().enumerate() {
        if let Some(target) = held.target {
            markers_of.entry(target).or_default().push(m);
        }
    }
    let winners: Vec<&Operation> = keyed.iter().map(|h| &h.op).collect();
    let n = winners.len();
    let mut live = vec![true; n];
    loop {
        let mut next = vec![true; n];
        for (x, slot) in next.iter_mut().enumerate() {
            let Some(markers) = markers_of.get(&winners[x].id.0) else {
                continue;
            };
            let x_type = winners[x].action.action_type.as_str();
            for &m in markers {
                if m <= x || !live[m] {
                    continue;
                }
                let ok = match winners[m].action.action_type.as_str() {
                    "UNDO" => {
                        x_type != "UNDO" && x_type != "REDO" && !NAIVE_STRUCTURAL.contains(&x_type)
                    }
                    "REDO" => x_type == "UNDO",
                    _ => false,
                };
                if ok {
                    *slot = false;
                }
            }
        }
        if next == live {
            break;
        }
        live = next;
    }
    keyed
        .into_iter()
        .zip(live)
        .filter(|(_, l)| *l)
        .map(|(held, _)| held)
        .collect()
}

fn naive_ids(set: &[Held]) -> Vec<(String, [u8; 32])> {
    naive_history(set)
        .into_iter()
        .map(|held| (held.op.action.id.to_string(), held.key.4))
        .collect()
}

/// One line per operation, for a failure's message.
fn dump(ops: &[Operation]) -> String {
    ops.iter()
        .map(|o| {
            let target = marker_target(o).map(|t| {
                ops.iter()
                    .find(|x| x.id == t)
                    .map_or(t.to_string(), |x| x.action.id.to_string())
            });
            format!(
                "  {}:{} {} {} t={} {:?} {:02x?}",
                o.index,
                o.skip,
                o.action.id,
                o.action.action_type,
                o.timestamp_utc_ms,
                target,
                &o.content_hash.0[..3]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---- scenarios -------------------------------------------------------

struct Replica {
    raw: Vec<Operation>,
    /// How many raw operations `raw_smallest` has taken in (the raw log
    /// only grows).
    raw_seen: usize,
    /// Every operation version this replica received, as the model keeps it.
    set: Vec<Held>,
    /// Where each id's versions are in `set`.
    versions: IdMap<OperationId, Vec<usize>>,
    /// The smallest key the raw log holds per id.
    raw_smallest: IdMap<OperationId, NaiveKey>,
    skew: u64,
}

impl Replica {
    fn latest(&self) -> u64 {
        self.raw
            .iter()
            .map(|o| o.timestamp_utc_ms)
            .max()
            .unwrap_or(0)
    }
    fn receive(&mut self, ops: &[Operation]) {
        for op in ops {
            self.hold(op);
        }
        write(&mut self.raw, ops);
    }
    /// The version of `op` the set holds (same id, action and timestamp:
    /// the same content), if any.
    fn held(&self, op: &Operation) -> Option<&Held> {
        self.versions
            .get(&op.id)?
            .iter()
            .map(|&i| &self.set[i])
            .find(|h| h.op.action == op.action && h.op.timestamp_utc_ms == op.timestamp_utc_ms)
    }
    /// Adds a version to the set unless it holds that very one (the model
    /// keys a version once, when it first arrives).
    fn hold(&mut self, op: &Operation) {
        if self.held(op).is_none() {
            self.versions.entry(op.id).or_default().push(self.set.len());
            self.set.push(Held::new(op.clone()));
        }
    }
    fn holds_creation(&self) -> bool {
        self.set
            .iter()
            .any(|h| h.op.action.action_type.as_str() == "CREATE_DOCUMENT")
    }
    fn set_ops(&self) -> Vec<Operation> {
        self.set.iter().map(|h| h.op.clone()).collect()
    }
}

const TYPES: [&str; 8] = [
    "SET",
    "SET",
    "SET",
    "ADD_RELATIONSHIP",
    "REMOVE_RELATIONSHIP",
    "UPGRADE_DOCUMENT",
    "SET_NAME",
    "DELETE_DOCUMENT",
];

/// Statistics of a run, for the long mode's report.
#[derive(Default, Debug)]
pub(crate) struct Stats {
    pub(crate) scenarios: u64,
    pub(crate) checks: u64,
    pub(crate) raw_ops: u64,
    pub(crate) distinct_ops: u64,
}

/// Runs one scenario with choices from `rng`; `seed` names it in panics.
pub(crate) fn scenario(rng: &mut impl Choices, seed: u64, stats: &mut Stats) {
    let n = 3 + rng.below(3) as usize;
    let mut replicas: Vec<Replica> = (0..n)
        .map(|_| Replica {
            raw: Vec::new(),
            raw_seen: 0,
            set: Vec::new(),
            versions: IdMap::default(),
            raw_smallest: IdMap::default(),
            skew: rng.below(4) * 3,
        })
        .collect();
    let mut time = 10;
    let mut next_id = 0u64;
    let mut written: Vec<(String, String)> = Vec::new(); // (action id, type)
    let steps = 10 + rng.below(40);
    for _ in 0..steps {
        if rng.exhausted() {
            break;
        }
        // A coarse clock makes equal timestamps across replicas common.
        time += rng.below(3);
        let r = rng.below(n as u64) as usize;
        let mut touched = vec![r];
        let choice = rng.below(100);
        let clock = time.saturating_sub(replicas[r].skew);
        let ts = clock.max(replicas[r].latest() + 1);
        if choice < 45 {
            next_id += 1;
            let reuse = rng.chance(5) && !written.is_empty();
            let (action_id, action_type) = if reuse {
                // One action id, other content: two versions of one op.
                written[rng.below(written.len() as u64) as usize].clone()
            } else if !replicas[r].holds_creation() && rng.chance(15) {
                (format!("c{next_id}"), "CREATE_DOCUMENT".to_owned())
            } else {
                let t = TYPES[rng.below(TYPES.len() as u64) as usize];
                (format!("a{next_id}"), t.to_owned())
            };
            let input = if is_marker(&action_type) && !replicas[r].set.is_empty() {
                // A marker's id reused: another version naming another
                // target (any operation held; the rule decides if it counts).
                let set = &replicas[r].set;
                marker_input(&set[rng.below(set.len() as u64) as usize].op.id)
            } else {
                format!("{r}:{next_id}").into_bytes()
            };
            let new = op(&action_id, &action_type, ts, &input);
            written.push((action_id, action_type.clone()));
            let replica = &mut replicas[r];
            let plain = action_type != "CREATE_DOCUMENT"
                && !is_marker(&action_type)
                && !replica.set.iter().any(|h| h.op.id == new.id);
            replica.hold(&new);
            let head = replica.raw.len();
            let plan = write(&mut replica.raw, std::slice::from_ref(&new));
            if plain {
                // A local write stamped past everything held sorts last:
                // it is a plain append, no re-append.
                assert_eq!(
                    plan.map(|p| (p.skip, p.hidden.len(), p.ops.len())),
                    Some((0, 0, 1)),
                    "seed {seed}: a local write re-appended"
                );
                assert_eq!(replica.raw.len(), head + 1);
            }
        } else if choice < 65 {
            // Undo (< 57) or redo, resolved from what this replica holds.
            let undo = choice < 57;
            let history = naive_history(&replicas[r].set);
            let target = history.iter().rev().map(|h| &h.op).find(|o| {
                let t = o.action.action_type.as_str();
                if undo {
                    t != "UNDO" && t != "REDO"
                } else {
                    t == "UNDO"
                }
            });
            let Some(target) = target else { continue };
            let t = target.action.action_type.as_str();
            if undo && NAIVE_STRUCTURAL.contains(&t) {
                continue; // the executor refuses it
            }
            next_id += 1;
            let input = marker_input(&target.id);
            let marker = op(
                &format!("m{next_id}"),
                if undo { ACTION_UNDO } else { ACTION_REDO },
                ts,
                &input,
            );
            written.push((
                marker.action.id.to_string(),
                marker.action.action_type.to_string(),
            ));
            replicas[r].receive(&[marker]);
        } else {
            // An exchange: part of one raw log, shuffled, with repeats, in
            // one to three loads.
            let q = rng.below(n as u64) as usize;
            if q == r {
                continue;
            }
            let mut sent: Vec<Operation> = replicas[r]
                .raw
                .iter()
                .filter(|_| rng.chance(70))
                .cloned()
                .collect();
            let repeats: Vec<Operation> = sent.iter().filter(|_| rng.chance(10)).cloned().collect();
            sent.extend(repeats);
            rng.shuffle(&mut sent);
            let loads = 1 + rng.below(3) as usize;
            let size = sent.len().div_ceil(loads).max(1);
            for batch in sent.chunks(size) {
                replicas[q].receive(batch);
            }
            touched = vec![q];
        }
        // Only a replica that wrote or received can have changed.
        for (i, replica) in replicas.iter_mut().enumerate() {
            if !touched.contains(&i) {
                continue;
            }
            stats.checks += 1;
            // The log holds the set: for each id received, a version at
            // least as small as any received (losers need not be kept).
            for k in replica.raw_seen..replica.raw.len() {
                let op = &replica.raw[k];
                // A raw operation is a copy of a version received (its key
                // is known), or something the model never sent: keyed
                // from scratch.
                let key = match replica.held(op) {
                    Some(held) => held.key.clone(),
                    None => naive_key(op),
                };
                let smallest = replica.raw_smallest.entry(op.id).or_insert(key.clone());
                if key < *smallest {
                    *smallest = key;
                }
            }
            replica.raw_seen = replica.raw.len();
            let raw_smallest = &replica.raw_smallest;
            assert!(
                replica
                    .set
                    .iter()
                    .all(|h| raw_smallest.get(&h.op.id).is_some_and(|k| *k <= h.key)),
                "seed {seed}: replica {i}'s raw log lost an operation it received"
            );
            assert_eq!(
                collected(&replica.raw),
                naive_ids(&replica.set),
                "seed {seed}: replica {i} diverged from the model\nset:\n{}\nraw:\n{}",
                dump(&replica.set_ops()),
                dump(&replica.raw)
            );
        }
    }
    // Everything reaches everyone: equal sets, equal histories.
    if rng.all_to_all() {
        for r in 0..n {
            for q in 0..n {
                if r != q {
                    let all = replicas[r].raw.clone();
                    replicas[q].receive(&all);
                }
            }
        }
    } else {
        for r in 1..n {
            let all = replicas[r].raw.clone();
            replicas[0].receive(&all);
        }
        for q in 1..n {
            let all = replicas[0].raw.clone();
            replicas[q].receive(&all);
        }
    }
    let first = collected(&replicas[0].raw);
    assert_eq!(first, naive_ids(&replicas[0].set), "seed {seed}");
    for (i, replica) in replicas.iter().enumerate() {
        assert_eq!(
            collected(&replica.raw),
            first,
            "seed {seed}: replica {i} differs after a full exchange"
        );
        let distinct: HashSet<_> = replica.raw.iter().map(|o| (o.id, o.content_hash)).collect();
        stats.raw_ops += replica.raw.len() as u64;
        stats.distinct_ops += distinct.len() as u64;
    }
    stats.scenarios += 1;
}
