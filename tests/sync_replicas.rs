//! The sync property: reactors that keep writing while their sessions run
//! over bad channels (frames lost, repeated, reordered, delayed, damaged;
//! connections cut) and that are closed and reopened mid-sync end, once the
//! channels heal, holding the same set of operations per stream: every
//! operation any of them wrote, each under one content, none of another's
//! `local` scope. Each replica's effective history is then the naive
//! model's history of that set, states and state hashes agree, and every
//! chain verifies.
//!
//! CI runs a few seeds; `REACTORDB_SYNC_SCENARIOS=200 cargo test --test
//! sync_replicas -- --nocapture` runs the long mode.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::docs::{effective, stream_ops};
use common::history::naive_history;
use common::reactor::*;
use common::Rng;
use reactordb::{
    in_process_pair, Action, ActionId, ActionType, ConsistencyToken, FaultPlan, FaultyChannel,
    Reactor, RemoteFilter, RemoteOptions, Scope, SessionHandle, SyncManager, SyncOptions,
    SystemAction, ViewFilter,
};

const DOCS: [&str; 3] = ["doc0", "doc1", "doc2"];

fn synced_scopes() -> [Scope; 2] {
    [Scope::document(), Scope::global()]
}

struct Node {
    reactor: Arc<Reactor>,
    sync: SyncManager,
}

/// Odd seeds run without anti-entropy: the cursors alone must carry sync.
fn sync_options(name: &str, seed: u64) -> SyncOptions {
    SyncOptions::new()
        .name(name)
        .resend_after(Duration::from_millis(40))
        .anti_entropy_every(seed.is_multiple_of(2).then_some(Duration::from_millis(400)))
        .envelope_ordinals(16)
}

fn open_node(dir: &std::path::Path, me: usize, n: usize, seed: u64) -> Node {
    let reactor = Arc::new(open(dir, 2));
    let sync =
        SyncManager::open(reactor.clone(), sync_options(&format!("r{me}"), seed)).expect("sync");
    for other in (0..n).filter(|o| *o != me) {
        sync.add_remote(&format!("r{other}"), RemoteOptions::new())
            .expect("remote");
    }
    Node { reactor, sync }
}

/// The two sessions of one pair of replicas.
struct Link {
    sessions: Vec<SessionHandle>,
}

fn connect(nodes: &[Node], a: usize, b: usize, faults: Option<(&mut Rng, u64)>) -> Link {
    let (x, y) = in_process_pair();
    let sessions = match faults {
        Some((rng, seed)) => {
            let mut plan = |salt: u64| {
                FaultPlan::seeded(seed ^ salt)
                    .drop(rng.p(20))
                    .duplicate(rng.p(20))
                    .reorder(rng.p(30))
                    .delay(rng.p(20), Duration::from_millis(1 + rng.below(20)))
                    .corrupt(rng.p(5))
                    .disconnect(rng.p(2))
            };
            let (px, py) = (plan(1), plan(2));
            vec![
                nodes[a]
                    .sync
                    .attach(&format!("r{b}"), FaultyChannel::new(x, px))
                    .expect("attach"),
                nodes[b]
                    .sync
                    .attach(&format!("r{a}"), FaultyChannel::new(y, py))
                    .expect("attach"),
            ]
        }
        None => vec![
            nodes[a].sync.attach(&format!("r{b}"), x).expect("attach"),
            nodes[b].sync.attach(&format!("r{a}"), y).expect("attach"),
        ],
    };
    Link { sessions }
}

fn pairs(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
        .collect()
}

/// Per document and synced scope: op id → content hashes held.
type Sets = BTreeMap<(String, String), BTreeMap<String, BTreeSet<String>>>;

fn sets(reactor: &Reactor) -> Sets {
    let mut out = Sets::new();
    for doc in DOCS {
        for scope in synced_scopes() {
            let set = out.entry((doc.into(), scope.to_string())).or_default();
            for op in stream_ops(reactor.store(), doc, &scope) {
                set.entry(op.id.to_string())
                    .or_default()
                    .insert(op.content_hash.to_string());
            }
        }
    }
    out
}

fn has_creation(reactor: &Reactor, doc: &str) -> bool {
    stream_ops(reactor.store(), doc, &Scope::document())
        .iter()
        .any(|o| o.action.action_type.as_str() == "CREATE_DOCUMENT")
}

fn acceptable(job: reactordb::Result<reactordb::JobHandle>) -> bool {
    match job.expect("submit").wait_written(WAIT).expect("in time") {
        reactordb::JobStatus::Failed { error, .. } => {
            assert!(
                matches!(
                    *error,
                    reactordb::Error::NothingToUndo { .. }
                        | reactordb::Error::NotUndoable { .. }
                        | reactordb::Error::DocumentDeleted { .. }
                        | reactordb::Error::DocumentNotFound { .. }
                ),
                "{error:?}"
            );
            false
        }
        _ => true,
    }
}

fn in_scope(aid: &str, scope: Scope, ts: u64) -> Action {
    Action::new(
        ActionId::new(aid).expect("valid"),
        ActionType::new("APPEND").expect("valid"),
        scope,
        ts,
        aid.as_bytes().to_vec(),
    )
}

/// Waits until every session is connected and acked up to date and every
/// replica holds the same sets.
fn wait_converged(nodes: &[Node], seed: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let quiet = nodes.iter().all(|node| {
            let last = node.reactor.store().last_ordinal().get();
            node.sync
                .remotes()
                .expect("remotes")
                .iter()
                .all(|r| r.connected && r.outbox_cursor >= last)
        });
        let first = sets(&nodes[0].reactor);
        if quiet && nodes[1..].iter().all(|n| sets(&n.reactor) == first) {
            return;
        }
        if Instant::now() > deadline {
            for (i, node) in nodes.iter().enumerate() {
                eprintln!("replica {i}: {:?}", node.sync.remotes());
            }
            let all: Vec<Sets> = nodes.iter().map(|n| sets(&n.reactor)).collect();
            for (i, s) in all.iter().enumerate() {
                assert_eq!(*s, all[0], "seed {seed}: replica {i} never converged");
            }
            panic!("seed {seed}: sessions never went quiet");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn collected(reactor: &Reactor, doc: &str, scope: &Scope) -> Vec<String> {
    effective(&stream_ops(reactor.store(), doc, scope))
        .iter()
        .map(|o| o.action.id.to_string())
        .collect()
}

/// Per synced scope: its state and state hash, if it has any.
type States = Vec<Option<(Vec<u8>, reactordb::Digest)>>;

fn read(reactor: &Reactor, doc: &str) -> Option<States> {
    let token = ConsistencyToken(reactor.store().last_ordinal());
    let got = reactor
        .view()
        .get(&id(doc), &ViewFilter::default(), Some(token))
        .ok()?;
    Some(
        synced_scopes()
            .iter()
            .map(|s| {
                got.scopes
                    .get(s)
                    .map(|st| (st.state.clone(), st.state_hash))
            })
            .collect(),
    )
}

/// The replica that executed an operation, where its action id or type
/// says (appends and renames are `s{seed}-{step}-r{replica}`; document `k`
/// is created on replica `k % n`).
fn origin_of(unit: &reactordb::SyncUnit, op: &reactordb::Operation, n: usize) -> Option<usize> {
    if op.action.action_type.as_str() == "CREATE_DOCUMENT" {
        let doc = unit.document_id.as_str();
        return DOCS.iter().position(|d| *d == doc).map(|k| k % n);
    }
    let (_, replica) = op.action.id.as_str().rsplit_once("-r")?;
    replica.parse().ok()
}

fn scenario(seed: u64) {
    let mut rng = Rng::seeded(seed);
    let n = 2 + rng.below(2) as usize;
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| open_node(dirs[i].path(), i, n, seed))
        .collect();
    let mut links: BTreeMap<(usize, usize), Link> = BTreeMap::new();
    for (a, b) in pairs(n) {
        links.insert((a, b), connect(&nodes, a, b, Some((&mut rng, seed))));
    }
    // Each document is created on one replica, with sync already running:
    // the others hear of it (and maybe of its other scopes first) by sync.
    for (k, doc) in DOCS.iter().enumerate() {
        written(
            &nodes[k % n]
                .reactor
                .create(id(doc), create_input(LogModel::document_type()))
                .expect("submit"),
        );
    }
    let skews: Vec<u64> = (0..n).map(|_| rng.below(3) * 2).collect();
    let mut time = 100u64;
    let mut appended: Vec<(String, String)> = Vec::new();
    let steps = 20 + rng.below(20);
    for step in 0..steps {
        time += rng.below(2);
        let r = rng.below(n as u64) as usize;
        let doc = DOCS[rng.below(DOCS.len() as u64) as usize];
        let ts = time - skews[r];
        let aid = format!("s{seed}-{step}-r{r}");
        let reactor = nodes[r].reactor.clone();
        let choice = rng.below(100);
        if choice < 75 && !has_creation(&reactor, doc) {
            continue;
        }
        match choice {
            0..=39 => {
                let job =
                    reactor.execute(id(doc), main(), vec![in_scope(&aid, Scope::global(), ts)]);
                if acceptable(job) {
                    appended.push((doc.into(), aid));
                }
            }
            40..=49 => {
                acceptable(reactor.undo(id(doc), main(), Scope::global()));
            }
            50..=54 => {
                acceptable(reactor.redo(id(doc), main(), Scope::global()));
            }
            55..=62 => {
                let a = reactordb::system_action(
                    ActionId::new(&aid).expect("valid"),
                    ts,
                    &SystemAction::SetName { name: aid.clone() },
                );
                acceptable(reactor.execute(id(doc), main(), vec![a]));
            }
            63..=70 => {
                let local = format!("local-r{r}-{step}");
                acceptable(reactor.execute(
                    id(doc),
                    main(),
                    vec![in_scope(&local, Scope::local(), ts)],
                ));
            }
            71..=72 if doc == "doc2" => {
                acceptable(reactor.delete_document(id(doc), main()));
            }
            73..=74 => {
                // Narrow or widen a remote's filter on a running session
                // over its faulty channel: each change starts a new epoch
                // (Rewind until Rewound), and what a narrow filter held
                // back must go once it widens (here or at the heal).
                let other = (r + 1 + rng.below(n as u64 - 1) as usize) % n;
                let filter = if choice == 73 {
                    RemoteFilter::all().documents([id(doc)])
                } else {
                    RemoteFilter::all()
                };
                nodes[r]
                    .sync
                    .add_remote(&format!("r{other}"), RemoteOptions::new().filter(filter))
                    .expect("change the filter");
            }
            75..=81 => {
                // Close and reopen a replica mid-sync: its sessions end,
                // its cursors and buffers are what it wrote down.
                let q = rng.below(n as u64) as usize;
                drop(reactor);
                let keys: Vec<_> = links
                    .keys()
                    .copied()
                    .filter(|(a, b)| *a == q || *b == q)
                    .collect();
                for key in &keys {
                    links.remove(key);
                }
                let old = nodes.remove(q);
                drop(old.sync);
                assert_eq!(Arc::strong_count(&old.reactor), 1, "sessions released it");
                drop(old.reactor);
                nodes.insert(q, open_node(dirs[q].path(), q, n, seed));
                for (a, b) in keys {
                    links.insert((a, b), connect(&nodes, a, b, Some((&mut rng, seed ^ step))));
                }
            }
            _ => std::thread::sleep(Duration::from_millis(rng.below(30))),
        }
        // Cut connections come back (as a transport's reconnect would).
        for (a, b) in pairs(n) {
            if links[&(a, b)]
                .sessions
                .iter()
                .any(SessionHandle::is_finished)
            {
                links.remove(&(a, b));
                let link = connect(&nodes, a, b, Some((&mut rng, seed ^ (step << 8))));
                links.insert((a, b), link);
            }
        }
    }
    // Heal: clean channels, every filter wide again.
    links.clear();
    for (me, node) in nodes.iter().enumerate() {
        for other in (0..n).filter(|o| *o != me) {
            node.sync
                .add_remote(&format!("r{other}"), RemoteOptions::new())
                .expect("widen");
        }
    }
    for (a, b) in pairs(n) {
        links.insert((a, b), connect(&nodes, a, b, None));
    }
    wait_converged(&nodes, seed);

    let expected = sets(&nodes[0].reactor);
    for (doc, aid) in &appended {
        let set = &expected[&(doc.clone(), "global".to_string())];
        let held = stream_ops(nodes[0].reactor.store(), doc, &Scope::global());
        assert!(
            held.iter().any(|o| o.action.id.as_str() == aid),
            "seed {seed}: {aid} written on {doc} is missing ({} ops held)",
            set.len()
        );
    }
    for (key, set) in &expected {
        for (op, contents) in set {
            assert_eq!(
                contents.len(),
                1,
                "seed {seed}: {key:?} {op} under two contents"
            );
        }
    }
    let syncs: Vec<&SyncManager> = nodes.iter().map(|node| &node.sync).collect();
    common::docs::assert_audit_agrees(&syncs, seed, |unit, op| origin_of(unit, op, n));
    for (i, node) in nodes.iter().enumerate() {
        let reactor = &node.reactor;
        for doc in DOCS {
            for scope in synced_scopes() {
                let raw = stream_ops(reactor.store(), doc, &scope);
                assert_eq!(
                    collected(reactor, doc, &scope),
                    naive_history(&raw),
                    "seed {seed}: replica {i} {doc} {scope}: effective(raw) != history(set)"
                );
                assert_eq!(
                    collected(reactor, doc, &scope),
                    collected(&nodes[0].reactor, doc, &scope),
                    "seed {seed}: replica {i} {doc} {scope} history"
                );
            }
            assert_eq!(
                read(reactor, doc),
                read(&nodes[0].reactor, doc),
                "seed {seed}: replica {i} {doc} state"
            );
        }
        common::docs::assert_local_home_and_chains(reactor.store(), &DOCS, i, seed);
        for remote in node.sync.remotes().expect("remotes") {
            assert_eq!(
                remote.dead_letters, 0,
                "seed {seed}: replica {i} {remote:?}"
            );
        }
    }
}

#[test]
fn replicas_syncing_over_bad_channels_converge_on_one_set() {
    let count: u64 = common::env_or("REACTORDB_SYNC_SCENARIOS", 6);
    for seed in 1..=count {
        scenario(seed);
    }
    println!("sync: {count} scenarios, 0 divergences");
}
