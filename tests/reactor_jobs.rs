//! The reactor's queue and executor under load, retries, idempotency and
//! failure paths.

mod common;

use std::collections::BTreeMap;

use common::docs::{reference_counter, stream_ops};
use common::reactor::*;
use reactordb::{
    BatchJob, CounterModel, Digest, DocumentId, DocumentType, Error, JobStatus, NewOperation,
    Revision, Scope, SyncUnit, ViewFilter,
};

fn counter_value(
    reactor: &reactordb::Reactor,
    doc: &str,
    token: Option<reactordb::ConsistencyToken>,
) -> i64 {
    let d = reactor
        .view()
        .get(&id(doc), &ViewFilter::default(), token)
        .expect("get");
    CounterModel::value(d.state(&Scope::global()).expect("global")).expect("8 bytes")
}

fn global_action_ids(reactor: &reactordb::Reactor, doc: &str) -> Vec<String> {
    stream_ops(reactor.store(), doc, &Scope::global())
        .iter()
        .map(|o| o.action.id.to_string())
        .collect()
}

#[test]
fn a_thousand_documents_from_four_threads_land_in_submission_order() {
    const DOCS: usize = 1_000;
    const ACTIONS: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open(dir.path(), 2);
    let creates: Vec<_> = (0..DOCS)
        .map(|d| {
            reactor
                .create(
                    id(&format!("d{d}")),
                    create_input(CounterModel::document_type()),
                )
                .expect("submit")
        })
        .collect();
    creates.iter().for_each(|j| {
        written(j);
    });
    let handles = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let reactor = &reactor;
                s.spawn(move || {
                    let mut handles = Vec::new();
                    for a in 0..ACTIONS {
                        for d in (t..DOCS).step_by(4) {
                            let job = reactor
                                .execute(
                                    id(&format!("d{d}")),
                                    main(),
                                    vec![increment(&format!("d{d}-a{a:02}"))],
                                )
                                .expect("submit");
                            handles.push(job);
                        }
                    }
                    handles
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("thread"))
            .collect::<Vec<_>>()
    });
    let mut last = None;
    for job in &handles {
        last = last.max(Some(written(job)));
    }
    for d in 0..DOCS {
        let doc = format!("d{d}");
        let expected: Vec<String> = (0..ACTIONS).map(|a| format!("d{d}-a{a:02}")).collect();
        assert_eq!(global_action_ids(&reactor, &doc), expected, "{doc}");
        assert_eq!(counter_value(&reactor, &doc, last), ACTIONS as i64);
        assert_eq!(
            reference_counter(reactor.store(), &doc, &Scope::global()),
            Some((ACTIONS as u64, ACTIONS as i64))
        );
    }
}

#[test]
fn eight_submitters_on_one_document_land_a_thousand_operations_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open(dir.path(), 2);
    create_counter(&reactor, "hot");
    let handles: Vec<_> = std::thread::scope(|s| {
        let subs: Vec<_> = (0..8)
            .map(|t| {
                let reactor = &reactor;
                s.spawn(move || {
                    (0..125)
                        .map(|i| {
                            reactor
                                .execute(id("hot"), main(), vec![increment(&format!("t{t}-{i}"))])
                                .expect("submit")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        subs.into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut last = None;
    for job in &handles {
        last = last.max(Some(written(job)));
    }
    assert_eq!(counter_value(&reactor, "hot", last), 1_000);
    let ids = global_action_ids(&reactor, "hot");
    assert_eq!(ids.len(), 1_000);
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        1_000,
        "each once"
    );
    assert!(reactor.store().verify_all().expect("verify").is_clean());
}

#[test]
fn a_direct_store_append_between_jobs_makes_the_next_job_retry_and_land_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open(dir.path(), 1);
    create_counter(&reactor, "c");
    written(
        &reactor
            .execute(id("c"), main(), vec![increment("first")])
            .expect("submit"),
    );
    // Around the queue: the executor's cached head is now stale.
    let unit = SyncUnit::new(id("c"), Scope::global(), main());
    let injected = action("injected", "INCREMENT", "100", 2);
    reactor
        .store()
        .apply(
            &unit.document_id,
            &CounterModel::document_type(),
            &unit.scope,
            &unit.branch,
            Revision(1),
            |txn| {
                txn.add_operation(NewOperation::new(1, injected, Digest::default()));
            },
        )
        .expect("direct append");
    let job = reactor
        .execute(id("c"), main(), vec![increment("second")])
        .expect("submit");
    match job.wait_written(WAIT).expect("in time") {
        JobStatus::WriteReady { token } | JobStatus::ReadReady { token } => {
            assert_eq!(counter_value(&reactor, "c", Some(token)), 102);
        }
        other => panic!("{other:?}"),
    }
    match reactor.job_status(job.id()).expect("known") {
        JobStatus::WriteReady { .. } | JobStatus::ReadReady { .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        global_action_ids(&reactor, "c"),
        ["first", "injected", "second"]
    );
    // The retry is visible in the job's history when it failed first; here
    // it landed, and the stored chain verifies.
    assert!(reactor.store().verify_all().expect("verify").is_clean());
}

#[test]
fn resubmitting_an_action_id_applies_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open(dir.path(), 2);
    create_counter(&reactor, "c");
    let first = written(
        &reactor
            .execute(id("c"), main(), vec![increment("same")])
            .expect("submit"),
    );
    let again = written(
        &reactor
            .execute(id("c"), main(), vec![increment("same"), increment("new")])
            .expect("submit"),
    );
    let third = written(
        &reactor
            .execute(id("c"), main(), vec![increment("same")])
            .expect("submit"),
    );
    assert!(third >= first);
    assert_eq!(counter_value(&reactor, "c", Some(again)), 2);
    assert_eq!(global_action_ids(&reactor, "c"), ["same", "new"]);
}

#[test]
fn failure_paths_name_their_error_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open(dir.path(), 1);
    create_counter(&reactor, "c");
    create_counter(&reactor, "gone");
    written(&reactor.delete_document(id("gone"), main()).expect("submit"));
    // A document whose type this reactor has no model for, written around it.
    let stranger = DocumentType::new("nobody/knows").expect("valid");
    let create = reactordb::system_action(
        reactor.new_action_id(),
        1,
        &reactordb::SystemAction::CreateDocument(create_input(stranger.clone())),
    );
    reactor
        .store()
        .apply(
            &id("odd"),
            &stranger,
            &Scope::document(),
            &main(),
            Revision(0),
            |txn| {
                txn.add_operation(NewOperation::new(0, create, Digest::default()));
            },
        )
        .expect("direct create");
    let before = reactor.store().last_ordinal();

    let missing = failure(
        &reactor
            .execute(id("missing"), main(), vec![increment("x1")])
            .expect("submit"),
    );
    assert!(
        matches!(*missing, Error::DocumentNotFound { .. }),
        "{missing:?}"
    );
    let deleted = failure(
        &reactor
            .execute(id("gone"), main(), vec![increment("x2")])
            .expect("submit"),
    );
    assert!(
        matches!(*deleted, Error::DocumentDeleted { .. }),
        "{deleted:?}"
    );
    let deleted_again = failure(&reactor.delete_document(id("gone"), main()).expect("submit"));
    assert!(
        matches!(*deleted_again, Error::DocumentDeleted { .. }),
        "{deleted_again:?}"
    );
    let no_model = failure(
        &reactor
            .execute(id("odd"), main(), vec![increment("x3")])
            .expect("submit"),
    );
    assert!(
        matches!(*no_model, Error::ModelNotFound { .. }),
        "{no_model:?}"
    );
    let bad_input = failure(
        &reactor
            .execute(
                id("c"),
                main(),
                vec![
                    increment("ok"),
                    action("x4", "INCREMENT", "not a number", 1),
                ],
            )
            .expect("submit"),
    );
    assert!(
        matches!(&*bad_input, Error::InvalidAction { action_id, .. } if action_id.as_str() == "x4"),
        "{bad_input:?}"
    );
    let create_unknown = reactor.create(
        id("new"),
        create_input(DocumentType::new("nobody/else").expect("valid")),
    );
    assert!(matches!(create_unknown, Err(Error::ModelNotFound { .. })));

    assert_eq!(
        reactor.store().last_ordinal(),
        before,
        "nothing was written"
    );
    assert!(
        global_action_ids(&reactor, "c").is_empty(),
        "not even the valid first action"
    );
}

#[test]
fn batches_respect_dependencies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open(dir.path(), 2);
    create_counter(&reactor, "a");
    create_counter(&reactor, "b");
    let jobs = reactor
        .submit_batch(vec![
            BatchJob::new(id("a"), main(), vec![increment("a1")]),
            BatchJob::new(id("b"), main(), vec![increment("b1")]).depends_on(vec![0]),
            BatchJob::new(id("missing"), main(), vec![increment("m1")]),
            BatchJob::new(id("b"), main(), vec![increment("b2")]).depends_on(vec![2]),
        ])
        .expect("submit");
    let a = written(&jobs[0]);
    let b = written(&jobs[1]);
    assert!(b > a, "the dependent job was written after its dependency");
    assert!(matches!(*failure(&jobs[2]), Error::DocumentNotFound { .. }));
    assert!(matches!(*failure(&jobs[3]), Error::DependencyFailed { .. }));
    let err = reactor
        .submit_batch(vec![
            BatchJob::new(id("a"), main(), vec![]).depends_on(vec![0])
        ])
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            argument: "depends_on",
            ..
        }
    ));
}

#[test]
fn a_full_queue_answers_queue_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = reactordb::Reactor::builder(dir.path())
        .durability(reactordb::Durability::Buffered)
        .registry(registry())
        .queue_capacity(2)
        .open()
        .expect("open");
    let batch = (0..3)
        .map(|i| BatchJob::new(id("q"), main(), vec![increment(&format!("q{i}"))]))
        .collect();
    let err = reactor.submit_batch(batch).unwrap_err();
    assert!(matches!(err, Error::QueueFull { capacity: 2 }), "{err:?}");
    assert!(err.is_retryable());
}

#[test]
fn shutdown_drains_accepted_jobs_and_nothing_written_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected: BTreeMap<String, i64>;
    {
        let reactor = open(dir.path(), 2);
        for d in 0..10 {
            create_counter(&reactor, &format!("s{d}"));
        }
        let jobs: Vec<_> = (0..300)
            .map(|i| {
                reactor
                    .execute(
                        id(&format!("s{}", i % 10)),
                        main(),
                        vec![increment(&format!("i{i}"))],
                    )
                    .expect("submit")
            })
            .collect();
        reactor.shutdown();
        for job in &jobs {
            assert!(
                matches!(
                    job.status().expect("known"),
                    JobStatus::WriteReady { .. } | JobStatus::ReadReady { .. }
                ),
                "{:?}",
                job.status()
            );
        }
        let after = reactor.execute(id("s0"), main(), vec![increment("late")]);
        assert!(matches!(after, Err(Error::Shutdown)));
        expected = (0..10).map(|d| (format!("s{d}"), 30)).collect();
    }
    let reactor = open(dir.path(), 1);
    for (doc, value) in expected {
        assert_eq!(counter_value(&reactor, &doc, None), value);
    }
    let _ = DocumentId::new("unused");
}

fn open_retaining(dir: &std::path::Path, retained: usize) -> reactordb::Reactor {
    reactordb::Reactor::builder(dir)
        .durability(reactordb::Durability::Buffered)
        .registry(registry())
        .workers(1)
        .retained_jobs(retained)
        .open()
        .expect("open reactor")
}

/// A finished job's record is dropped once `retained_jobs` jobs finished
/// after it and its last handle is gone: its id then answers `JobUnknown`
/// at once (never "pending" until the deadline) and `None` to
/// `job_status`. While a handle lives, the record stays.
#[test]
fn a_dropped_job_record_answers_job_unknown_not_pending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_retaining(dir.path(), 2);
    create_counter(&reactor, "a");
    let lost = reactor
        .execute(id("missing"), main(), vec![increment("m")])
        .expect("submit");
    failure(&lost);
    let lost_id = lost.id();
    for i in 0..3 {
        written(
            &reactor
                .execute(id("a"), main(), vec![increment(&format!("a{i}"))])
                .expect("submit"),
        );
    }
    assert!(matches!(lost.status(), Ok(JobStatus::Failed { .. })));
    assert!(reactor.job_status(lost_id).is_some());
    drop(lost);
    assert!(reactor.job_status(lost_id).is_none());
    let started = std::time::Instant::now();
    for readable in [false, true] {
        assert!(matches!(
            reactor.wait(lost_id, readable, std::time::Duration::from_secs(5)),
            Err(Error::JobUnknown { .. })
        ));
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn dependencies_resolve_from_their_outcome_however_many_jobs_finish_meanwhile() {
    // One worker, a record kept for one finished job only: by the time the
    // dependents run, five other jobs have finished after their
    // dependencies. A dependency's record is kept until its dependents ran.
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_retaining(dir.path(), 1);
    for doc in ["a", "x", "y", "z"] {
        create_counter(&reactor, doc);
    }
    let job = |doc: &str, action: &str, depends_on: Vec<usize>| {
        BatchJob::new(id(doc), main(), vec![increment(action)]).depends_on(depends_on)
    };
    let mut batch = vec![job("a", "ok", vec![]), job("missing", "bad", vec![])];
    batch.extend((0..5).map(|i| job("x", &format!("f{i}"), vec![])));
    batch.push(job("y", "after-ok", vec![0]));
    batch.push(job("z", "after-bad", vec![1]));
    let jobs = reactor.submit_batch(batch).expect("submit");
    // The last job to finish keeps its record; the others are read from
    // the store.
    assert!(matches!(*failure(&jobs[8]), Error::DependencyFailed { .. }));
    let landed = |doc: &str| -> Vec<String> {
        stream_ops(reactor.store(), doc, &Scope::global())
            .iter()
            .map(|o| o.action.id.to_string())
            .collect()
    };
    assert!(
        landed("y").contains(&"after-ok".to_owned()),
        "{:?}",
        landed("y")
    );
    assert!(!landed("z").contains(&"after-bad".to_owned()));
}

#[test]
fn a_job_handle_does_not_keep_the_reactor_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open(dir.path(), 1);
    create_counter(&reactor, "a");
    let job = reactor
        .execute(id("a"), main(), vec![increment("a1")])
        .expect("submit");
    let token = job
        .readable(std::time::Duration::from_secs(10))
        .expect("readable");
    assert!(token.0.get() > 0);
    drop(reactor);
    // The database is closed: it reopens at once, the handle is stale.
    let reopened = open(dir.path(), 1);
    assert!(matches!(job.status(), Err(Error::Shutdown)));
    assert!(matches!(
        job.written(std::time::Duration::from_secs(1)),
        Err(Error::Shutdown)
    ));
    drop(reopened);
}

#[test]
fn written_and_readable_give_the_token_or_the_job_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open(dir.path(), 1);
    create_counter(&reactor, "a");
    let wait = std::time::Duration::from_secs(10);
    let ok = reactor
        .execute(id("a"), main(), vec![increment("a1")])
        .expect("submit");
    let token = ok.written(wait).expect("written");
    assert_eq!(ok.readable(wait).expect("readable"), token);
    let bad = reactor
        .execute(id("missing"), main(), vec![increment("m1")])
        .expect("submit");
    match bad.written(wait) {
        Err(Error::JobFailed { job, error }) => {
            assert_eq!(job, bad.id().0);
            assert!(
                matches!(*error, Error::DocumentNotFound { .. }),
                "{error:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_two_scope_job_refused_in_its_second_scope_writes_neither() {
    // The global half reduces, the local half is refused by the model: the
    // job fails and its global half is not stored either.
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open(dir.path(), 1);
    create_counter(&reactor, "d");
    let mut bogus = action("l1", "BOGUS", "", 1);
    bogus.scope = Scope::local();
    let job = reactor
        .execute(id("d"), main(), vec![increment("g1"), bogus])
        .expect("submit");
    assert!(matches!(*failure(&job), Error::InvalidAction { .. }));
    assert!(stream_ops(reactor.store(), "d", &Scope::global()).is_empty());
    assert!(stream_ops(reactor.store(), "d", &Scope::local()).is_empty());
}

#[test]
fn a_two_scope_job_on_a_stream_stored_with_another_type_lands_whole() {
    // The local stream was written with another document type (around the
    // reactor); streams keep their first writer's type and the header's
    // model reduces them, so the job lands, both halves.
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open(dir.path(), 1);
    create_counter(&reactor, "d");
    let mut local = increment("other-type");
    local.scope = Scope::local();
    reactor
        .store()
        .apply(
            &id("d"),
            &DocumentType::new("test/other").expect("valid"),
            &Scope::local(),
            &main(),
            Revision(0),
            |txn| {
                txn.add_operation(NewOperation::new(0, local, Digest::default()));
            },
        )
        .expect("apply");
    let mut job_local = increment("l1");
    job_local.scope = Scope::local();
    written(
        &reactor
            .execute(id("d"), main(), vec![increment("g1"), job_local])
            .expect("submit"),
    );
    assert_eq!(stream_ops(reactor.store(), "d", &Scope::global()).len(), 1);
    assert_eq!(stream_ops(reactor.store(), "d", &Scope::local()).len(), 2);
}
