//! `Reactor::execute_and_wait`: a job on an idle document runs on the
//! calling thread; on a busy document it queues behind the document's jobs.
//! Either way a document runs one job at a time, in the order its jobs were
//! submitted, and every action lands once.
//!
//! The model here (`Watched`) keeps the list of its action inputs, like
//! `LogModel`, and while it reduces it records which thread ran the action
//! and whether another reduction of the same document was in progress: the
//! one-job-at-a-time rule is observed, not inferred from the result (two
//! concurrent jobs on one document would still land correctly, one of them
//! after a revision retry). An input `DOC/gate…` holds its reducer until
//! the test opens that gate; `DOC/boom` panics.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use common::docs::stream_ops;
use common::reactor::*;
use common::{env_or, Rng};
use reactordb::{
    Action, ActionId, ActionType, ConsistencyToken, DocumentModel, DocumentType, Durability, Error,
    ModelRegistry, Reactor, ReduceError, Scope, ViewFilter, ACTION_UNDO,
};

/// What the reducers saw, for every test of this binary (documents are
/// named per test, so tests running at once do not mix).
#[derive(Default)]
struct Seen {
    /// Reductions in progress per document.
    busy: HashMap<String, usize>,
    /// Documents on which two reductions overlapped.
    overlapped: Vec<String>,
    /// The thread that reduced each input (the last, if reduced again).
    thread: HashMap<String, (ThreadId, Option<String>)>,
    /// Gates opened.
    open: HashSet<String>,
}

static SEEN: Mutex<Option<Seen>> = Mutex::new(None);
static GATE: Condvar = Condvar::new();

fn seen<T>(f: impl FnOnce(&mut Seen) -> T) -> T {
    f(SEEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(Seen::default))
}

fn open_gate(input: &str) {
    seen(|s| s.open.insert(input.to_owned()));
    GATE.notify_all();
}

fn reduced_on(input: &str) -> Option<(ThreadId, Option<String>)> {
    seen(|s| s.thread.get(input).cloned())
}

struct Watched;

impl Watched {
    fn document_type() -> DocumentType {
        DocumentType::new("test/watched").expect("valid")
    }
}

impl DocumentModel for Watched {
    fn document_type(&self) -> DocumentType {
        Self::document_type()
    }
    fn initial_state(&self, scope: &Scope) -> Vec<u8> {
        LogModel.initial_state(scope)
    }
    fn reduce(&self, scope: &Scope, state: &[u8], action: &Action) -> Result<Vec<u8>, ReduceError> {
        let input = String::from_utf8_lossy(&action.input).into_owned();
        let doc = input.split('/').next().unwrap_or_default().to_owned();
        let current = std::thread::current();
        if current.name() == Some("reactordb-view") {
            // The view folds what was written: not a job running.
            return LogModel.reduce(scope, state, action);
        }
        seen(|s| {
            let busy = s.busy.entry(doc.clone()).or_default();
            *busy += 1;
            if *busy > 1 {
                s.overlapped.push(doc.clone());
            }
            // The first reduction is the job's (later ones are reads).
            s.thread
                .entry(input.clone())
                .or_insert_with(|| (current.id(), current.name().map(str::to_owned)));
        });
        if input.contains("/gate") {
            let deadline = Instant::now() + WAIT;
            let mut guard = SEEN.lock().unwrap_or_else(|e| e.into_inner());
            while !guard.as_ref().is_some_and(|s| s.open.contains(&input)) {
                assert!(Instant::now() < deadline, "gate {input} never opened");
                guard = GATE
                    .wait_timeout(guard, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        } else {
            // Long enough for an overlapping job on another thread to show.
            std::thread::yield_now();
        }
        seen(|s| *s.busy.entry(doc).or_default() -= 1);
        assert!(!input.ends_with("/boom"), "the model panics");
        // The state: the list of inputs so far.
        LogModel.reduce(scope, state, action)
    }
}

fn open_watched(dir: &std::path::Path, workers: usize) -> Reactor {
    let mut registry = ModelRegistry::with_examples();
    registry.register(Watched);
    Reactor::builder(dir)
        .durability(Durability::Buffered)
        .registry(registry)
        .workers(workers)
        .open()
        .expect("open")
}

fn create(reactor: &Reactor, doc: &str) {
    written(
        &reactor
            .create(id(doc), create_input(Watched::document_type()))
            .expect("submit"),
    );
}

/// An action of `doc` whose input (and id) is `doc/label`.
fn act(doc: &str, label: &str) -> Action {
    let input = format!("{doc}/{label}");
    action(&input.replace('/', "-"), "APPEND", &input, 1)
}

fn inline(reactor: &Reactor, doc: &str, label: &str) -> reactordb::Result<ConsistencyToken> {
    reactor.execute_and_wait(id(doc), main(), vec![act(doc, label)], WAIT)
}

/// The inputs of `doc`'s global stream, in stream order.
fn stored(reactor: &Reactor, doc: &str) -> Vec<String> {
    stream_ops(reactor.store(), doc, &Scope::global())
        .iter()
        .map(|o| String::from_utf8_lossy(&o.action.input).into_owned())
        .collect()
}

/// The view's state of `doc`'s global scope, as of `token`.
fn viewed(reactor: &Reactor, doc: &str, token: Option<ConsistencyToken>) -> Vec<String> {
    let document = reactor
        .view()
        .get(&id(doc), &ViewFilter::default(), token)
        .expect("read");
    serde_json::from_slice(document.state(&Scope::global()).expect("global")).expect("json")
}

fn on_a_worker(input: &str) -> bool {
    reduced_on(input)
        .and_then(|(_, name)| name)
        .is_some_and(|name| name.starts_with("reactordb-worker"))
}

fn assert_no_overlap(prefix: &str) {
    let overlapped: Vec<String> = seen(|s| s.overlapped.clone())
        .into_iter()
        .filter(|d| d.starts_with(prefix))
        .collect();
    assert!(
        overlapped.is_empty(),
        "two jobs ran at once on {overlapped:?}"
    );
}

#[test]
fn a_job_on_an_idle_document_runs_on_the_calling_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_watched(dir.path(), 2);
    create(&reactor, "idle");
    let token = inline(&reactor, "idle", "a").expect("written");
    let (thread, _) = reduced_on("idle/a").expect("reduced");
    assert_eq!(thread, std::thread::current().id(), "ran on the caller");
    // The same job through `execute` runs on a worker.
    written(
        &reactor
            .execute(id("idle"), main(), vec![act("idle", "b")])
            .expect("submit"),
    );
    assert!(on_a_worker("idle/b"));
    assert!(!on_a_worker("idle/a"));
    assert_eq!(viewed(&reactor, "idle", Some(token))[0], "idle/a");
    assert_eq!(stored(&reactor, "idle"), ["idle/a", "idle/b"]);
    // Resubmitting the action lands it once, with its first token.
    assert_eq!(inline(&reactor, "idle", "a").expect("replay"), token);
    assert_eq!(stored(&reactor, "idle"), ["idle/a", "idle/b"]);
    assert!(reactor.store().verify_all().expect("verify").is_clean());
}

#[test]
fn a_busy_document_queues_the_call_behind_its_jobs_and_holds_the_jobs_behind_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_watched(dir.path(), 1);
    create(&reactor, "busy");
    // A worker holds the document: the call queues behind it.
    let held = hold_on_a_worker(&reactor, "busy", "gate-1");
    std::thread::scope(|s| {
        let caller = s.spawn(|| inline(&reactor, "busy", "b"));
        std::thread::sleep(Duration::from_millis(200));
        assert!(reduced_on("busy/b").is_none(), "ran beside the held job");
        open_gate("busy/gate-1");
        caller.join().expect("caller").expect("written");
    });
    written(&held);
    assert!(on_a_worker("busy/b"), "a queued call runs on a worker");
    // A caller holds the document: a job submitted meanwhile waits for it.
    std::thread::scope(|s| {
        let caller = hold_on_a_caller(s, &reactor, "busy", "gate-2");
        let queued = reactor
            .execute(id("busy"), main(), vec![act("busy", "c")])
            .expect("submit");
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            reduced_on("busy/c").is_none(),
            "ran beside the caller's job"
        );
        open_gate("busy/gate-2");
        let token = caller.join().expect("caller").expect("written");
        let later = written(&queued);
        assert!(later > token);
    });
    assert!(!on_a_worker("busy/gate-2"));
    assert!(on_a_worker("busy/c"));
    assert_eq!(
        stored(&reactor, "busy"),
        ["busy/gate-1", "busy/b", "busy/gate-2", "busy/c"]
    );
    assert_no_overlap("busy");
}

#[test]
fn a_failing_or_panicking_call_names_its_error_and_releases_the_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_watched(dir.path(), 1);
    match inline(&reactor, "nowhere", "a") {
        Err(Error::JobFailed { error, .. }) => {
            assert!(matches!(*error, Error::DocumentNotFound { .. }), "{error}")
        }
        other => panic!("expected DocumentNotFound: {other:?}"),
    }
    create(&reactor, "fail");
    match inline(&reactor, "fail", "boom") {
        Err(Error::JobFailed { error, .. }) => {
            assert!(matches!(*error, Error::ReducerPanicked { .. }), "{error}")
        }
        other => panic!("expected ReducerPanicked: {other:?}"),
    }
    // The document is free again, for calls and for workers.
    inline(&reactor, "fail", "a").expect("written");
    written(
        &reactor
            .execute(id("fail"), main(), vec![act("fail", "b")])
            .expect("submit"),
    );
    assert_eq!(stored(&reactor, "fail"), ["fail/a", "fail/b"]);
    // An undo marker takes the merge path on the caller's thread too.
    let undo = Action::new(
        ActionId::new("fail-undo").expect("valid"),
        ActionType::new(ACTION_UNDO).expect("valid"),
        Scope::global(),
        1,
        Vec::new(),
    );
    let token = reactor
        .execute_and_wait(id("fail"), main(), vec![undo], WAIT)
        .expect("undo");
    assert_eq!(viewed(&reactor, "fail", Some(token)), ["fail/a"]);
    reactor.shutdown();
    assert!(matches!(
        inline(&reactor, "fail", "c"),
        Err(Error::Shutdown)
    ));
}

/// Holds `doc` on a worker (a gated job, queued); its handle.
fn hold_on_a_worker(reactor: &Reactor, doc: &str, gate: &str) -> reactordb::JobHandle {
    reactor
        .execute(id(doc), main(), vec![act(doc, gate)])
        .expect("submit")
}

/// Holds `doc` on a caller's thread (a gated job) inside `scope`; returns
/// the caller once its job is reducing.
fn hold_on_a_caller<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    reactor: &'s Reactor,
    doc: &'s str,
    gate: &'s str,
) -> std::thread::ScopedJoinHandle<'s, reactordb::Result<ConsistencyToken>> {
    let caller = scope.spawn(move || inline(reactor, doc, gate));
    wait_reduced(&format!("{doc}/{gate}"));
    caller
}

/// Waits until a job has begun reducing `input`.
fn wait_reduced(input: &str) {
    let deadline = Instant::now() + WAIT;
    while reduced_on(input).is_none() {
        assert!(Instant::now() < deadline, "{input} never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn shutdown_waits_for_a_job_running_on_a_callers_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_watched(dir.path(), 1);
    create(&reactor, "down");
    std::thread::scope(|s| {
        let caller = hold_on_a_caller(s, &reactor, "down", "gate");
        let stopper = s.spawn(|| reactor.shutdown());
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !stopper.is_finished(),
            "shutdown returned under a running job"
        );
        open_gate("down/gate");
        stopper.join().expect("shutdown");
        // The write is stored when shutdown returns (the caller's thread
        // may still be on its way out of the call).
        assert_eq!(
            stored(&reactor, "down"),
            ["down/gate"],
            "shutdown returned before the write"
        );
        caller.join().expect("caller").expect("written");
    });
}

#[test]
fn a_call_queued_on_a_busy_document_times_out_and_its_job_still_lands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_watched(dir.path(), 1);
    create(&reactor, "slow");
    let held = hold_on_a_worker(&reactor, "slow", "gate");
    let call = reactor.execute_and_wait(
        id("slow"),
        main(),
        vec![act("slow", "b")],
        Duration::from_millis(100),
    );
    assert!(matches!(call, Err(Error::WaitTimeout { .. })), "{call:?}");
    open_gate("slow/gate");
    written(&held);
    let deadline = Instant::now() + WAIT;
    while stored(&reactor, "slow").len() < 2 {
        assert!(Instant::now() < deadline, "the timed-out job never landed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(stored(&reactor, "slow"), ["slow/gate", "slow/b"]);
}

/// A commit leader that panics on the caller's thread fails the call with
/// `WorkerPanicked` and still releases the document: the next job on it
/// gets the poisoned store's error instead of waiting for ever.
#[cfg(feature = "fault-injection")]
#[test]
fn a_panic_on_the_callers_thread_fails_the_call_and_releases_the_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_watched(dir.path(), 1);
    create(&reactor, "leader");
    reactor.store().panic_nth_write(1);
    match inline(&reactor, "leader", "a") {
        Err(Error::JobFailed { error, .. }) => {
            assert!(matches!(*error, Error::WorkerPanicked), "{error}")
        }
        other => panic!("expected WorkerPanicked: {other:?}"),
    }
    let next = reactor
        .execute(id("leader"), main(), vec![act("leader", "b")])
        .expect("submit");
    assert!(
        matches!(*failure(&next), Error::Poisoned),
        "the store is poisoned"
    );
}

/// Callers on many threads, each mixing `execute_and_wait` and `execute`
/// on shared documents (seeded): every action lands exactly once, each
/// caller's actions on a document land in the order it submitted them, no
/// two jobs of a document ever ran at once, the view shows what the store
/// holds, and both paths ran (the scenario is not vacuous).
#[test]
fn callers_mixing_both_calls_land_every_action_once_in_each_callers_order() {
    let seeds: u64 = env_or("REACTORDB_CALLER_RUNS_SEEDS", 3);
    let first: u64 = env_or("REACTORDB_CALLER_RUNS_SEED", 1);
    for seed in first..first + seeds {
        mixed_callers(seed);
    }
}

fn mixed_callers(seed: u64) {
    const THREADS: usize = 6;
    const DOCS: usize = 3;
    const ACTIONS: usize = 120;
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_watched(dir.path(), 2);
    let doc = |d: usize| format!("mixed{seed}-{d}");
    for d in 0..DOCS {
        create(&reactor, &doc(d));
    }
    let tokens: Vec<ConsistencyToken> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (reactor, doc) = (&reactor, &doc);
                s.spawn(move || {
                    let mut rng = Rng::seeded(seed * 1_000 + t as u64);
                    let mut tokens = Vec::new();
                    let mut queued = Vec::new();
                    for n in 0..ACTIONS {
                        let d = doc(rng.below(DOCS as u64) as usize);
                        let label = format!("t{t}-{n:03}");
                        if rng.below(2) == 0 {
                            tokens.push(inline(reactor, &d, &label).expect("written"));
                        } else {
                            queued.push(
                                reactor
                                    .execute(id(&d), main(), vec![act(&d, &label)])
                                    .expect("submit"),
                            );
                        }
                        if rng.below(8) == 0 {
                            tokens.extend(queued.drain(..).map(|job| written(&job)));
                        }
                    }
                    tokens.extend(queued.iter().map(written));
                    tokens
                })
            })
            .collect();
        callers
            .into_iter()
            .flat_map(|c| c.join().expect("caller"))
            .collect()
    });
    let last = tokens.iter().max().copied();
    let mut landed = 0;
    let (mut inline_runs, mut worker_runs) = (0, 0);
    for d in 0..DOCS {
        let inputs = stored(&reactor, &doc(d));
        let unique: HashSet<&String> = inputs.iter().collect();
        assert_eq!(
            unique.len(),
            inputs.len(),
            "seed {seed}: an action landed twice"
        );
        for t in 0..THREADS {
            let prefix = format!("{}/t{t}-", doc(d));
            let mine: Vec<&String> = inputs.iter().filter(|i| i.starts_with(&prefix)).collect();
            let mut sorted = mine.clone();
            sorted.sort();
            assert_eq!(
                mine,
                sorted,
                "seed {seed}: caller {t} out of order on {}",
                doc(d)
            );
        }
        for input in &inputs {
            if on_a_worker(input) {
                worker_runs += 1;
            } else {
                inline_runs += 1;
            }
        }
        assert_eq!(
            viewed(&reactor, &doc(d), last),
            inputs,
            "seed {seed}: the view"
        );
        landed += inputs.len();
    }
    assert_eq!(landed, THREADS * ACTIONS, "seed {seed}: every action once");
    assert!(
        inline_runs > 0 && worker_runs > 0,
        "seed {seed}: both paths ran"
    );
    assert_no_overlap(&format!("mixed{seed}-"));
    assert!(reactor.store().verify_all().expect("verify").is_clean());
}

/// A job run on the caller's thread takes no place in the queue: with the
/// queue full, `execute` is refused and `execute_and_wait` on an idle
/// document still runs. Such a job is in no job table: the id its failure
/// names is unknown to `job_status`.
#[test]
fn a_call_on_an_idle_document_runs_while_the_queue_is_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut registry = ModelRegistry::with_examples();
    registry.register(Watched);
    let reactor = Reactor::builder(dir.path())
        .durability(Durability::Buffered)
        .registry(registry)
        .workers(1)
        .queue_capacity(1)
        .open()
        .expect("open");
    for doc in ["full", "free"] {
        create(&reactor, doc);
    }
    let held = hold_on_a_worker(&reactor, "full", "gate");
    wait_reduced("full/gate");
    let queued = reactor
        .execute(id("full"), main(), vec![act("full", "b")])
        .expect("the queue's one place");
    let refused = reactor.execute(id("free"), main(), vec![act("free", "x")]);
    assert!(
        matches!(refused, Err(Error::QueueFull { .. })),
        "{refused:?}"
    );
    inline(&reactor, "free", "y").expect("runs beside a full queue");
    match inline(&reactor, "free", "boom") {
        Err(Error::JobFailed { job, .. }) => {
            assert!(reactor.job_status(reactordb::JobId(job)).is_none())
        }
        other => panic!("expected a failure: {other:?}"),
    }
    open_gate("full/gate");
    written(&held);
    written(&queued);
    assert_eq!(stored(&reactor, "free"), ["free/y"]);
}
