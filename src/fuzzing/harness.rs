//! One store per process for the stateful targets: opening RocksDB per
//! input would cap a target at a handful of executions per second. Each
//! input works on fresh document ids; the reactor is reopened every
//! `REOPEN_EVERY` inputs, so restarts are part of what is fuzzed.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::model::{Branch, DocumentId, Scope, SyncUnit};
use crate::models::{CounterModel, CreateDocumentInput, ModelRegistry};
use crate::reactor::{JobHandle, Reactor};
use crate::store::{Durability, OperationStore, StoreOptions};
use crate::view::{ConsistencyToken, ViewFilter};

/// How often (in inputs) the process's reactor is closed and reopened.
const REOPEN_EVERY: u64 = 100;
/// A job that takes longer than this is a finding (a hang).
pub(super) const WAIT: Duration = Duration::from_secs(60);

struct Harness {
    dir: tempfile::TempDir,
    reactor: Option<Reactor>,
    inputs: u64,
}

fn open(dir: &std::path::Path) -> Reactor {
    Reactor::builder(dir)
        .durability(Durability::Buffered)
        .registry(ModelRegistry::with_examples())
        .workers(2)
        .open()
        .expect("the fuzzing reactor opens")
}

static REACTOR: Mutex<Option<Harness>> = Mutex::new(None);
static STORE: Mutex<Option<(tempfile::TempDir, OperationStore)>> = Mutex::new(None);

/// Runs `f` on the process's reactor with this input's number (unique in
/// the process: document ids built from it are fresh).
pub(super) fn with_reactor<R>(f: impl FnOnce(&Reactor, u64) -> R) -> R {
    let mut guard = REACTOR.lock();
    let harness = guard.get_or_insert_with(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let reactor = open(dir.path());
        Harness {
            dir,
            reactor: Some(reactor),
            inputs: 0,
        }
    });
    harness.inputs += 1;
    if harness.inputs.is_multiple_of(REOPEN_EVERY) {
        // The old reactor must be closed before the database opens again.
        harness.reactor = None;
        harness.reactor = Some(open(harness.dir.path()));
    }
    let reactor = harness.reactor.as_ref().expect("open between inputs");
    f(reactor, harness.inputs)
}

/// Runs `f` on the process's bare operation store.
pub(super) fn with_store<R>(f: impl FnOnce(&OperationStore) -> R) -> R {
    let mut guard = STORE.lock();
    let (_, store) = guard.get_or_insert_with(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = OperationStore::open(
            dir.path(),
            StoreOptions {
                durability: Durability::Buffered,
                ..StoreOptions::default()
            },
        )
        .expect("the fuzzing store opens");
        (dir, store)
    });
    f(store)
}

/// Creates a counter document and waits for it.
pub(super) fn create_counter(reactor: &Reactor, doc: &DocumentId) -> ConsistencyToken {
    let input = CreateDocumentInput {
        document_type: CounterModel::document_type(),
        model_version: 1,
        name: "fuzz".into(),
        slug: None,
        meta: Default::default(),
    };
    written(reactor.create(doc.clone(), input)).expect("a fresh document is created")
}

/// Waits for a submitted job to be written.
pub(super) fn written(job: Result<JobHandle>) -> Result<ConsistencyToken> {
    job?.written(WAIT)
}

/// The error a failed job reports, unwrapped from `JobFailed`.
pub(super) fn cause(error: &Error) -> &Error {
    match error {
        Error::JobFailed { error, .. } => cause(error),
        other => other,
    }
}

/// Every scope of `doc` the view holds, but `document`, with its counter
/// value, once the view has applied `token`.
pub(super) fn counters(
    reactor: &Reactor,
    doc: &DocumentId,
    token: ConsistencyToken,
) -> Result<BTreeMap<Scope, Option<i64>>> {
    let read = reactor
        .view()
        .get(doc, &ViewFilter::default(), Some(token))?;
    Ok(read
        .scopes
        .into_iter()
        .filter(|(scope, _)| *scope != Scope::document())
        .map(|(scope, s)| (scope, CounterModel::value(&s.state)))
        .collect())
}

/// Panics unless every stream of `doc` verifies (chain, ordinals, op-id
/// index) and its raw log is the effective history of what it holds.
pub(super) fn assert_document_sound(store: &OperationStore, doc: &DocumentId) {
    for stream in store.streams(doc).expect("streams") {
        let report = store.verify(&stream.unit).expect("verify");
        assert!(report.is_clean(), "{}: {report:?}", stream.unit);
        assert_history_holds(store, &stream.unit);
    }
}

fn assert_history_holds(store: &OperationStore, unit: &SyncUnit) {
    let raw: Vec<_> = store
        .scan_until(
            &crate::keys::unit_key(unit),
            0,
            None,
            crate::model::Ordinal(u64::MAX),
        )
        .expect("scan")
        .into_iter()
        .map(|(op, _)| op)
        .collect();
    let plan = crate::merge::plan_whole(&raw, Vec::new()).expect("plan");
    assert!(
        plan.is_none(),
        "{unit}: the raw log is not the effective history"
    );
}

/// True with `percent` chance; false once the input is spent (a spent
/// input reads as zeros, which must mean the ordinary case, not the
/// adversarial one).
pub(super) fn rare(choices: &mut impl crate::merge::check::Choices, percent: u64) -> bool {
    choices.below(100) >= 100 - percent
}

/// The default branch.
pub(super) fn main() -> Branch {
    Branch::main()
}
