//! Runs and loads under injected write failures (`--features
//! fault-injection`): a job or a load that writes two scopes leaves both or
//! neither, whatever fails.
#![cfg(feature = "fault-injection")]

mod common;

use common::docs::stream_ops;
use common::reactor::*;
use reactordb::{Action, ActionId, ActionType, Error, Scope};

fn local_increment(action: &str) -> Action {
    Action::new(
        ActionId::new(action).expect("valid"),
        ActionType::new("INCREMENT").expect("valid"),
        Scope::local(),
        1,
        b"1".to_vec(),
    )
}

fn ids(reactor: &reactordb::Reactor, doc: &str, scope: &Scope) -> Vec<String> {
    stream_ops(reactor.store(), doc, scope)
        .iter()
        .map(|o| o.action.id.to_string())
        .collect()
}

#[test]
fn a_two_scope_job_leaves_both_scopes_or_neither_whichever_write_fails() {
    // The job's write is the first after the creation: failing the first
    // write fails it whole; failing the second (which a job split into one
    // write per scope would reach) must leave it whole too.
    for n in [1, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let acknowledged = {
            let reactor = open(dir.path(), 1);
            create_counter(&reactor, "d");
            reactor.store().fail_nth_write(n);
            let job = reactor
                .execute(
                    id("d"),
                    main(),
                    vec![increment("g1"), local_increment("l1")],
                )
                .expect("submit");
            match job.written(std::time::Duration::from_secs(10)) {
                Ok(_) => true,
                Err(Error::JobFailed { error, .. }) => {
                    assert!(matches!(*error, Error::InjectedFault), "{error:?}");
                    assert!(reactor.store().is_poisoned());
                    false
                }
                Err(other) => panic!("{other:?}"),
            }
        };
        let reactor = open(dir.path(), 1);
        let (global, local) = (
            ids(&reactor, "d", &Scope::global()),
            ids(&reactor, "d", &Scope::local()),
        );
        assert_eq!(global.len(), local.len(), "write {n}: half a job");
        assert_eq!(global.len(), usize::from(acknowledged), "write {n}");
        assert_eq!(acknowledged, n == 2, "write {n}");
        assert!(reactor.store().verify_all().expect("verify").is_clean());
    }
}

#[test]
fn a_two_scope_load_whose_write_fails_writes_neither_scope() {
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let source = open(dirs[0].path(), 1);
    create_counter(&source, "d");
    written(
        &source
            .execute(
                id("d"),
                main(),
                vec![increment("g1"), local_increment("l1")],
            )
            .expect("submit"),
    );
    let everything = operations_of(&source, "d", |_| true);
    {
        let target = open(dirs[1].path(), 1);
        target.store().fail_nth_write(1);
        let job = target.load(id("d"), main(), everything).expect("submit");
        assert!(matches!(
            job.written(std::time::Duration::from_secs(10)),
            Err(Error::JobFailed { .. })
        ));
    }
    let target = open(dirs[1].path(), 1);
    for scope in [Scope::document(), Scope::global(), Scope::local()] {
        assert!(ids(&target, "d", &scope).is_empty(), "{scope}");
    }
}
