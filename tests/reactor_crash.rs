//! The crash loop: a child process writes through a reactor (multi-action
//! jobs over two scopes and several documents, undos and redos, loads of a
//! peer's operations that the merge must sort into history, jobs on the
//! peer's documents too) and reports each job that reached `WriteReady`;
//! the parent SIGKILLs it at a random moment (after a random number of
//! acknowledgements, or a random time after start, before or during its
//! first writes), reopens the database and checks:
//!
//! - every acknowledged operation is stored (in its stream's set);
//! - every job is whole or absent (its actions in both scopes, all or
//!   none), acknowledged or not;
//! - the ordinal feed is gapless, every chain verifies, every snapshot
//!   chain verifies, and each stream's raw log is the effective history of
//!   the set it holds (`verify_histories`);
//! - the view, reopened, serves every scope at its head revision and
//!   equals an independent fold of the store.
//!
//! The first two and the view's revisions are checked for each cycle's
//! reports after every kill (point reads); the rest read the whole store,
//! and run after every kill unless `REACTORDB_CRASH_FULL_CHECK_EVERY=N`
//! spaces them out (the last cycle always runs them).
//!
//! Run in both durabilities: `Synced` (survives power loss) and `Buffered`
//! (survives a process crash, which is what a SIGKILL is; a machine crash
//! may lose its last acknowledged writes). CI runs 20 cycles of each; the
//! long mode: `REACTORDB_CRASH_CYCLES=500 REACTORDB_CRASH_FULL_CHECK_EVERY=25
//! cargo test --release --features fault-injection --test reactor_crash --
//! --nocapture --test-threads 1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use common::docs::{reference_counter, stream_ops};
use common::reactor::{create_input, id, increment_by, main, WAIT};
use common::Rng;
use reactordb::{
    ActionId, ConsistencyToken, CounterModel, Durability, JobHandle, ModelRegistry, OperationId,
    Ordinal, Paging, Reactor, Scope, SyncUnit, ViewFilter, ViewOptions,
};

const CHILD_DIR: &str = "REACTORDB_CRASH_CHILD_DIR";
const CHILD_MODE: &str = "REACTORDB_CRASH_CHILD_MODE";
/// Documents the reactor under test creates and writes.
const DOCS: usize = 4;
/// Documents the peer creates; their operations arrive by `load`.
const PEER_DOCS: usize = 2;
/// Jobs in flight at once.
const IN_FLIGHT: usize = 16;

/// Snapshots every few operations, so the child's view writes many and
/// the reopened view reads what the killed one left.
fn open(dir: &Path, durability: Durability) -> Reactor {
    Reactor::builder(dir)
        .durability(durability)
        .registry(ModelRegistry::with_examples())
        .view_options(ViewOptions::default().snapshot_every(7))
        .workers(2)
        .open()
        .expect("open reactor")
}

fn durability(mode: &str) -> Durability {
    match mode {
        "synced" => Durability::Synced,
        _ => Durability::Buffered,
    }
}

fn doc_name(d: usize) -> String {
    format!("doc-{d}")
}

fn peer_doc(d: usize) -> String {
    format!("peer-{d}")
}

/// What one submitted job will report when written.
enum Pending {
    Job(JobHandle, String),
    Undo(JobHandle, String),
    Load(JobHandle, String),
}

/// Loads every operation of `doc` the peer holds past `cursor` into the
/// reactor; returns the job and the action ids it carries (none: nothing
/// new).
fn load_from_peer(
    reactor: &Reactor,
    peer: &Reactor,
    doc: &str,
    cursor: &mut Ordinal,
) -> Option<(JobHandle, Vec<String>)> {
    let items: Vec<_> = peer
        .store()
        .get_since_ordinal(Ordinal(cursor.get() + 1), Paging::all())
        .expect("peer feed")
        .items
        .into_iter()
        .filter(|o| o.context.document_id == id(doc) && o.context.scope != Scope::local())
        .collect();
    *cursor = peer.store().last_ordinal();
    if items.is_empty() {
        return None;
    }
    let ids = items
        .iter()
        .filter(|o| o.context.scope == Scope::global())
        .map(|o| o.operation.action.id.to_string())
        .collect();
    let job = reactor.load(id(doc), main(), items).expect("submit load");
    Some((job, ids))
}

/// Creates the counter `doc` unless an earlier cycle did (its creation is
/// stored: the `document` scope has a head).
fn ensure_counter(reactor: &Reactor, doc: &str) {
    let creation = SyncUnit::new(id(doc), Scope::document(), main());
    if reactor.store().head(&creation).expect("head").is_none() {
        let job = reactor
            .create(id(doc), create_input(CounterModel::document_type()))
            .expect("submit");
        job.written(WAIT).expect("created");
    }
}

/// The child: writes until killed, printing `plan` before each job is
/// submitted and `ack` once it is written.
#[test]
fn reactor_crash_child() {
    let (Ok(dir), Ok(mode)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_MODE)) else {
        return; // run normally: nothing to do
    };
    let dir = Path::new(&dir);
    let durability = durability(&mode);
    let reactor = open(&dir.join("reactor"), durability);
    let peer = open(&dir.join("peer"), durability);
    let mut out = std::io::stdout().lock();
    for d in 0..DOCS {
        ensure_counter(&reactor, &doc_name(d));
    }
    for d in 0..PEER_DOCS {
        ensure_counter(&peer, &peer_doc(d));
    }
    // Everything the peer holds first (loads are idempotent), then what
    // it writes from here on.
    let mut cursors = [Ordinal(0); PEER_DOCS];
    for (d, cursor) in cursors.iter_mut().enumerate() {
        if let Some((job, ids)) = load_from_peer(&reactor, &peer, &peer_doc(d), cursor) {
            job.written(WAIT).expect("initial load");
            writeln!(out, "ack load {} {}", peer_doc(d), ids.join(" ")).expect("stdout");
        }
    }
    writeln!(out, "created").expect("stdout");
    out.flush().expect("flush");
    let mut rng = Rng::seeded(u64::from(std::process::id()));
    let prefix = std::process::id();
    let mut next = 0u64;
    loop {
        let mut pending = Vec::new();
        for _ in 0..IN_FLIGHT {
            next += 1;
            let roll = rng.below(100);
            if roll < 60 {
                // A job over both scopes of one of our documents, or of a
                // peer's document (merged with what the peer writes).
                let doc = if rng.below(4) == 0 {
                    peer_doc(rng.below(PEER_DOCS as u64) as usize)
                } else {
                    doc_name(rng.below(DOCS as u64) as usize)
                };
                let mut actions = Vec::new();
                let mut ids = Vec::new();
                for k in 0..=rng.below(3) {
                    let action = format!("p{prefix}-a{next}-{k}");
                    let amount = rng.below(9) as i64 - 4;
                    actions.push(increment_by(&action, Scope::global(), amount));
                    actions.push(increment_by(&format!("{action}-l"), Scope::local(), amount));
                    ids.push(action);
                }
                writeln!(out, "plan {doc} {}", ids.join(" ")).expect("stdout");
                out.flush().expect("flush");
                let line = format!("job {doc} {}", ids.join(" "));
                let job = reactor.execute(id(&doc), main(), actions).expect("submit");
                pending.push(Pending::Job(job, line));
            } else if roll < 75 {
                let doc = doc_name(rng.below(DOCS as u64) as usize);
                let scope = if rng.below(2) == 0 {
                    Scope::global()
                } else {
                    Scope::local()
                };
                let job = if rng.below(3) == 0 {
                    reactor.redo(id(&doc), main(), scope.clone())
                } else {
                    reactor.undo(id(&doc), main(), scope.clone())
                }
                .expect("submit");
                pending.push(Pending::Undo(job, format!("undo {doc} {scope}")));
            } else {
                // The peer writes, then its new operations are loaded.
                let d = rng.below(PEER_DOCS as u64) as usize;
                let action = format!("q{prefix}-a{next}");
                let amount = rng.below(9) as i64 - 4;
                peer.execute_and_wait(
                    id(&peer_doc(d)),
                    main(),
                    vec![increment_by(&action, Scope::global(), amount)],
                    WAIT,
                )
                .expect("peer writes");
                if let Some((job, ids)) =
                    load_from_peer(&reactor, &peer, &peer_doc(d), &mut cursors[d])
                {
                    pending.push(Pending::Load(
                        job,
                        format!("load {} {}", peer_doc(d), ids.join(" ")),
                    ));
                }
            }
        }
        for p in pending {
            let (job, line) = match &p {
                Pending::Job(job, line) | Pending::Undo(job, line) | Pending::Load(job, line) => {
                    (job, line)
                }
            };
            match job.written(WAIT) {
                Ok(_) => writeln!(out, "ack {line}").expect("stdout"),
                // Nothing to undo: not acknowledged, nothing written.
                Err(_) if matches!(p, Pending::Undo(..)) => {}
                Err(e) => panic!("{line}: {e}"),
            }
        }
        out.flush().expect("flush");
    }
}

/// What the parent knows from the child's reports, across cycles.
#[derive(Default)]
struct Reports {
    /// Per document: job action ids planned (each inner list one job).
    planned: BTreeMap<String, Vec<Vec<String>>>,
    /// Per document: global action ids acknowledged (jobs and loads).
    acked: BTreeMap<String, BTreeSet<String>>,
    /// Per (document, scope): undos and redos acknowledged.
    markers: BTreeMap<(String, String), usize>,
    /// What this cycle's child reported (planned jobs and acknowledged
    /// actions, per document): the cheap check looks these up alone.
    new_planned: Vec<(String, Vec<String>)>,
    new_acked: Vec<(String, String)>,
}

impl Reports {
    /// Reads one report line; returns whether it was an acknowledgement.
    fn read(&mut self, line: &str) -> bool {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("plan"), Some(doc)) => {
                let job: Vec<String> = words.map(str::to_owned).collect();
                self.new_planned.push((doc.to_owned(), job.clone()));
                self.planned.entry(doc.to_owned()).or_default().push(job);
                false
            }
            (Some("ack"), Some("job" | "load")) => {
                let doc = words.next().expect("doc");
                for action in words {
                    self.new_acked.push((doc.to_owned(), action.to_owned()));
                    self.acked
                        .entry(doc.to_owned())
                        .or_default()
                        .insert(action.to_owned());
                }
                true
            }
            (Some("ack"), Some("undo")) => {
                let (doc, scope) = (words.next().expect("doc"), words.next().expect("scope"));
                *self
                    .markers
                    .entry((doc.to_owned(), scope.to_owned()))
                    .or_default() += 1;
                true
            }
            _ => false,
        }
    }
}

fn ids_of(reactor: &Reactor, doc: &str, scope: &Scope) -> BTreeSet<String> {
    stream_ops(reactor.store(), doc, scope)
        .iter()
        .map(|o| o.action.id.to_string())
        .collect()
}

fn all_docs() -> Vec<String> {
    (0..DOCS)
        .map(doc_name)
        .chain((0..PEER_DOCS).map(peer_doc))
        .collect()
}

/// Whether the action `action` of `doc` is stored in `scope`: found by its
/// operation id (point reads, whatever the store's size), and read back
/// where the index says, so a surviving index entry alone does not pass.
fn stored(reactor: &Reactor, doc: &str, scope: Scope, action: &str) -> bool {
    let unit = SyncUnit::new(id(doc), scope, main());
    let op_id = OperationId::derive(&unit, &ActionId::new(action).expect("action id"));
    let store = reactor.store();
    store
        .locate(&op_id)
        .expect("locate")
        .iter()
        .any(|at| matches!(store.get(&at.unit, at.index), Ok(Some(op)) if op.id == op_id))
}

/// The checks whose cost does not grow with the store, after every kill:
/// this cycle's acknowledged actions are stored, its planned jobs whole or
/// absent, the feed past the last cycle's end gapless, and each scope the
/// view serves at the store's head revision. Returns the last ordinal.
fn check_cycle(
    reactor: &Reactor,
    mode: &str,
    reports: &mut Reports,
    cycle: usize,
    since: u64,
) -> u64 {
    let store = reactor.store();
    for (doc, action) in reports.new_acked.drain(..) {
        assert!(
            stored(reactor, &doc, Scope::global(), &action),
            "{mode} cycle {cycle}, {doc}: lost acknowledged {action}"
        );
    }
    for (doc, job) in reports.new_planned.drain(..) {
        let halves: BTreeSet<(bool, bool)> = job
            .iter()
            .map(|a| {
                let local = format!("{a}-l");
                (
                    stored(reactor, &doc, Scope::global(), a),
                    stored(reactor, &doc, Scope::local(), &local),
                )
            })
            .collect();
        assert!(
            halves == BTreeSet::from([(true, true)]) || halves == BTreeSet::from([(false, false)]),
            "{mode} cycle {cycle}, {doc}: job {job:?} is half-written: {halves:?}"
        );
    }
    let last = store.last_ordinal().get();
    assert!(
        last >= since,
        "{mode} cycle {cycle}: the feed went back from {since} to {last}"
    );
    let tail: Vec<u64> = store
        .get_since_ordinal(Ordinal(since + 1), Paging::all())
        .expect("feed")
        .items
        .iter()
        .map(|o| o.context.ordinal.get())
        .collect();
    assert_eq!(
        tail,
        (since + 1..=last).collect::<Vec<_>>(),
        "{mode} cycle {cycle}: feed"
    );
    let token = ConsistencyToken(store.last_ordinal());
    for doc in all_docs() {
        let read = reactor
            .view()
            .get(&id(&doc), &ViewFilter::default(), Some(token))
            .expect("read");
        for scope in [Scope::global(), Scope::local()] {
            let unit = SyncUnit::new(id(&doc), scope.clone(), main());
            let head = common::revision(store, &unit);
            let served = read.scopes.get(&scope).map_or(0, |s| s.revision.get());
            assert_eq!(
                served, head,
                "{mode} cycle {cycle}, {doc} {scope}: view revision"
            );
        }
    }
    last
}

/// The checks over the whole store, every few cycles in the long mode
/// (each reads everything written so far): every acknowledged operation
/// of every cycle stored, every job ever planned whole or absent, the feed
/// gapless from 1, every chain and snapshot chain intact, every raw log
/// its effective history, and the view equal to an independent fold.
fn check_all(reactor: &Reactor, mode: &str, reports: &Reports, cycle: usize) {
    let store = reactor.store();
    let ops = common::assert_gapless_and_intact(store);
    assert!(ops > 0, "cycle {cycle}: nothing stored");
    let histories = reactordb::verify_histories(store).expect("histories");
    assert!(histories.is_clean(), "cycle {cycle}: {histories:?}");
    let snapshots = reactordb::verify_snapshots(store).expect("snapshots");
    assert!(
        snapshots.first_broken.is_none(),
        "cycle {cycle}: {snapshots:?}"
    );
    let token = ConsistencyToken(store.last_ordinal());
    for doc in &all_docs() {
        let global = ids_of(reactor, doc, &Scope::global());
        let local = ids_of(reactor, doc, &Scope::local());
        if let Some(acked) = reports.acked.get(doc) {
            let lost: Vec<_> = acked.difference(&global).collect();
            assert!(
                lost.is_empty(),
                "{mode} cycle {cycle}, {doc}: lost {lost:?}"
            );
        }
        for job in reports.planned.get(doc).into_iter().flatten() {
            let halves: BTreeSet<(bool, bool)> = job
                .iter()
                .map(|a| (global.contains(a), local.contains(&format!("{a}-l"))))
                .collect();
            assert!(
                halves == BTreeSet::from([(true, true)])
                    || halves == BTreeSet::from([(false, false)]),
                "{mode} cycle {cycle}, {doc}: job {job:?} is half-written: {halves:?}"
            );
        }
        for scope in [Scope::global(), Scope::local()] {
            let markers = stream_ops(store, doc, &scope)
                .iter()
                .filter(|o| matches!(o.action.action_type.as_str(), "UNDO" | "REDO"))
                .count();
            let acked = reports
                .markers
                .get(&(doc.clone(), scope.to_string()))
                .copied()
                .unwrap_or(0);
            assert!(
                markers >= acked,
                "{mode} cycle {cycle}, {doc} {scope}: {markers} markers, {acked} acknowledged"
            );
            // The reopened view equals a fold of the store.
            let want = reference_counter(store, doc, &scope).map(|(_, v)| v);
            let read = reactor
                .view()
                .get(&id(doc), &ViewFilter::default(), Some(token))
                .expect("read");
            let got = read.state(&scope).and_then(CounterModel::value);
            assert_eq!(
                got, want,
                "{mode} cycle {cycle}, {doc} {scope}: view against fold"
            );
        }
    }
}

fn crash_loop(mode: &str) {
    let cycles: usize = common::env_or("REACTORDB_CRASH_CYCLES", 20);
    // The whole-store checks read everything written so far: every cycle
    // in CI, every few in a long run (which would otherwise spend its
    // time rereading early cycles).
    let full_every: usize = common::env_or::<usize>("REACTORDB_CRASH_FULL_CHECK_EVERY", 1).max(1);
    let mut fed = 0;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut reports = Reports::default();
    let mut rng = Rng::seeded(0xc4a5 + mode.len() as u64);
    let mut early = 0;
    for cycle in 0..cycles {
        let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "reactor_crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_MODE, mode)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped");
        if rng.below(5) == 0 {
            // A random moment from the start: while opening, creating,
            // loading or writing. Reports are read after the kill.
            early += 1;
            std::thread::sleep(Duration::from_millis(rng.below(400)));
            child.kill().expect("SIGKILL");
            for line in BufReader::new(stdout).lines() {
                reports.read(&line.expect("line"));
            }
        } else {
            let kill_after = 1 + rng.below(150) as usize;
            let mut acks = 0;
            for line in BufReader::new(stdout).lines() {
                if reports.read(&line.expect("line")) {
                    acks += 1;
                    if acks >= kill_after {
                        break;
                    }
                }
            }
            child.kill().expect("SIGKILL");
            assert!(
                acks >= kill_after,
                "{mode} cycle {cycle}: the child stopped after {acks} acks"
            );
        }
        child.wait().expect("reap");
        let reactor = open(&dir.path().join("reactor"), durability(mode));
        fed = check_cycle(&reactor, mode, &mut reports, cycle, fed);
        if (cycle + 1) % full_every == 0 || cycle + 1 == cycles {
            check_all(&reactor, mode, &reports, cycle);
        }
        drop(reactor);
        if (cycle + 1) % 50 == 0 {
            // Long runs show their progress (stderr: CI captures it).
            eprintln!("reactor crash ({mode}): {} cycles checked", cycle + 1);
        }
    }
    let acked: usize = reports.acked.values().map(BTreeSet::len).sum();
    let planned: usize = reports.planned.values().map(Vec::len).sum();
    println!(
        "reactor crash ({mode}): {cycles} SIGKILL cycles ({early} early), {acked} acknowledged actions and loads kept, {planned} jobs whole or absent"
    );
}

#[test]
fn synced_reactor_survives_sigkill_loops() {
    crash_loop("synced");
}

#[test]
fn buffered_reactor_survives_sigkill_loops() {
    crash_loop("buffered");
}
