//! Runs: jobs queued behind each other on one document are written
//! together, and each job still comes out as if it had run alone.
//!
//! One worker and `submit_batch` (which queues all its jobs at once) make
//! the run deterministic: the worker takes the whole batch as one run.

mod common;

use std::time::Duration;

use common::docs::stream_ops;
use common::reactor::*;
use reactordb::{
    Action, BatchJob, CounterModel, DocumentModel, DocumentType, Durability, Error, Event,
    JobHandle, ModelRegistry, OperationId, Ordinal, Reactor, ReduceError, Scope, SyncUnit,
    SystemAction,
};

fn batch(doc: &str, jobs: Vec<Vec<Action>>) -> Vec<BatchJob> {
    jobs.into_iter()
        .map(|actions| BatchJob::new(id(doc), main(), actions))
        .collect()
}

/// The ordinal the store gave an action of `doc` in `scope`.
fn ordinal_of(reactor: &Reactor, doc: &str, scope: Scope, action_id: &str) -> Ordinal {
    let unit = SyncUnit::new(id(doc), scope, main());
    let op_id = OperationId::derive(&unit, &action(action_id, "X", "", 0).id);
    let location = reactor.store().locate(&op_id).expect("locate");
    let index = location.first().expect("stored").index;
    let page = reactor
        .store()
        .get_since_ordinal(Ordinal(0), reactordb::Paging::all())
        .expect("feed");
    page.items
        .iter()
        .find(|o| o.context.scope == unit.scope && o.operation.index == index)
        .map(|o| o.context.ordinal)
        .expect("in the feed")
}

fn global_ids(reactor: &Reactor, doc: &str) -> Vec<String> {
    stream_ops(reactor.store(), doc, &Scope::global())
        .iter()
        .map(|o| o.action.id.to_string())
        .collect()
}

fn events(sub: &reactordb::Subscription) -> Vec<usize> {
    let mut sizes = Vec::new();
    while let Some(Event::OperationsWritten { operations }) =
        sub.recv_timeout(Duration::from_millis(200))
    {
        sizes.push(operations.len());
    }
    sizes
}

#[test]
fn a_run_fails_only_its_failing_jobs_and_gives_each_job_its_own_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open(dir.path(), 1);
    create_counter(&reactor, "c");
    let sub = reactor.bus().subscribe(1_024);
    let delete =
        reactordb::system_action(reactor.new_action_id(), 5, &SystemAction::DeleteDocument);
    let jobs = reactor
        .submit_batch(batch(
            "c",
            vec![
                vec![increment("a1")],
                // refused at its second action: its first is not written
                vec![increment("b1"), action("b2", "INCREMENT", "nine", 1)],
                vec![increment("a1")], // a resubmission inside the run
                vec![increment("a2"), increment("a3")],
                vec![delete],
                vec![increment("a4")], // after the delete
            ],
        ))
        .expect("submit");

    let tokens: Vec<_> = [0, 2, 3, 4].iter().map(|&j| written(&jobs[j])).collect();
    assert!(
        matches!(&*failure(&jobs[1]), Error::InvalidAction { action_id, .. } if action_id.as_str() == "b2")
    );
    assert!(matches!(*failure(&jobs[5]), Error::DocumentDeleted { .. }));

    assert_eq!(global_ids(&reactor, "c"), ["a1", "a2", "a3"]);
    let global = |a: &str| ordinal_of(&reactor, "c", Scope::global(), a);
    assert_eq!(tokens[0].0, global("a1"));
    assert_eq!(tokens[1].0, global("a1"), "the resubmission reports a1");
    assert_eq!(tokens[2].0, global("a3"), "a job's token is its last op");
    assert!(tokens[3].0 > global("a3"), "the delete comes after");
    // Written together: one atomic write over both scopes, so one event
    // for the three increments and the delete (one job at a time would
    // have made four).
    assert_eq!(events(&sub), [4]);
}

#[test]
fn a_run_over_several_scopes_keeps_the_order_of_its_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open(dir.path(), 1);
    create_counter(&reactor, "c");
    let local = |a: &str| {
        let mut act = increment(a);
        act.scope = Scope::local();
        act
    };
    let jobs = reactor
        .submit_batch(batch(
            "c",
            vec![
                vec![increment("g1")],
                vec![local("l1")],
                vec![increment("g2"), local("l2"), increment("g3")],
            ],
        ))
        .expect("submit");
    let tokens: Vec<_> = jobs.iter().map(written).collect();
    let at = |scope: Scope, a: &str| ordinal_of(&reactor, "c", scope, a);
    // Job by job, as if run alone: g1, then l1, then the last job's global
    // operations (one write per scope of a job) and its local one.
    assert!(at(Scope::global(), "g1") < at(Scope::local(), "l1"));
    assert!(at(Scope::local(), "l1") < at(Scope::global(), "g2"));
    assert_eq!(at(Scope::global(), "g3").0, at(Scope::global(), "g2").0 + 1);
    assert!(at(Scope::global(), "g3") < at(Scope::local(), "l2"));
    assert_eq!(tokens[2].0, at(Scope::local(), "l2"));
    let state = reactor
        .view()
        .get(&id("c"), &Default::default(), Some(tokens[2]))
        .expect("read");
    assert_eq!(
        CounterModel::value(state.state(&Scope::global()).expect("g")),
        Some(3)
    );
    assert_eq!(
        CounterModel::value(state.state(&Scope::local()).expect("l")),
        Some(2)
    );
}

/// A counter that panics on the input "boom".
struct Fragile;

impl DocumentModel for Fragile {
    fn document_type(&self) -> DocumentType {
        DocumentType::new("test/fragile").expect("valid")
    }
    fn initial_state(&self, scope: &Scope) -> Vec<u8> {
        CounterModel.initial_state(scope)
    }
    fn reduce(&self, scope: &Scope, state: &[u8], action: &Action) -> Result<Vec<u8>, ReduceError> {
        assert_ne!(action.input, b"boom", "the model panics");
        CounterModel.reduce(scope, state, action)
    }
}

#[test]
fn a_panicking_reducer_fails_only_its_own_job_of_a_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut registry = ModelRegistry::new();
    registry.register(Fragile);
    let reactor = Reactor::builder(dir.path())
        .durability(Durability::Buffered)
        .registry(registry)
        .workers(1)
        .open()
        .expect("open");
    written(
        &reactor
            .create(id("f"), create_input(Fragile.document_type()))
            .expect("submit"),
    );
    let jobs: Vec<JobHandle> = reactor
        .submit_batch(batch(
            "f",
            vec![
                vec![increment("ok1")],
                vec![action("bad", "INCREMENT", "boom", 1)],
                vec![increment("ok2")],
            ],
        ))
        .expect("submit");
    written(&jobs[0]);
    assert!(matches!(*failure(&jobs[1]), Error::ReducerPanicked { .. }));
    written(&jobs[2]);
    assert_eq!(global_ids(&reactor, "f"), ["ok1", "ok2"]);
    // The worker survived the panic.
    written(
        &reactor
            .execute(id("f"), main(), vec![increment("ok3")])
            .expect("submit"),
    );
}
