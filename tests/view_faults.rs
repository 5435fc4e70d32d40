//! The view under failure: a model whose reducer panics (reachable through
//! operations written around the reactor, `apply` or `import`) fails the
//! reads of its document with a named error, while the view's worker and
//! every other document go on; a wait honours its deadline.

mod common;

use std::time::{Duration, Instant};

use common::reactor::*;
use reactordb::{
    Action, ConsistencyToken, Digest, DocumentModel, DocumentType, Error, NewOperation,
    ReduceError, Revision, Scope, ViewFilter,
};

/// A model that panics on `BOOM` and appends anything else: its input, or
/// a dot for an empty one. Its `local` scope panics making its initial
/// state.
struct Panicky;

impl Panicky {
    fn document_type() -> DocumentType {
        DocumentType::new("test/panicky").expect("valid")
    }
}

impl DocumentModel for Panicky {
    fn document_type(&self) -> DocumentType {
        Self::document_type()
    }
    fn initial_state(&self, scope: &Scope) -> Vec<u8> {
        assert_ne!(scope.as_str(), "local", "no local state here");
        Vec::new()
    }
    fn reduce(
        &self,
        _scope: &Scope,
        state: &[u8],
        action: &Action,
    ) -> Result<Vec<u8>, ReduceError> {
        if action.action_type.as_str() == "BOOM" {
            panic!("boom on {}", action.id);
        }
        let mut next = state.to_vec();
        if action.input.is_empty() {
            next.push(b'.');
        } else {
            next.extend_from_slice(&action.input);
        }
        Ok(next)
    }
}

fn open_panicky(dir: &std::path::Path) -> reactordb::Reactor {
    let mut registry = registry();
    registry.register(Panicky);
    reactordb::Reactor::builder(dir)
        .durability(reactordb::Durability::Buffered)
        .registry(registry)
        .workers(1)
        .open()
        .expect("open")
}

fn create_panicky(reactor: &reactordb::Reactor, doc: &str) {
    written(
        &reactor
            .create(id(doc), create_input(Panicky::document_type()))
            .expect("submit"),
    );
}

/// Waits until the view has applied everything stored.
fn caught_up(reactor: &reactordb::Reactor) {
    reactor
        .view()
        .wait_for(ConsistencyToken(reactor.store().last_ordinal()))
        .expect("caught up");
}

fn read(reactor: &reactordb::Reactor, doc: &str) -> reactordb::Result<reactordb::Document> {
    let token = ConsistencyToken(reactor.store().last_ordinal());
    reactor
        .view()
        .get(&id(doc), &ViewFilter::default(), Some(token))
}

#[test]
fn a_panicking_reducer_fails_its_document_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_panicky(dir.path());
    for doc in ["bad", "good"] {
        written(
            &reactor
                .create(id(doc), create_input(Panicky::document_type()))
                .expect("submit"),
        );
    }
    // Through the reactor, the panic fails the job and writes nothing.
    let job = reactor
        .execute(id("bad"), main(), vec![action("b0", "BOOM", "", 1)])
        .expect("submit");
    assert!(matches!(*failure(&job), Error::ReducerPanicked { .. }));
    // Around the reactor, it reaches the view.
    reactor
        .store()
        .apply(
            &id("bad"),
            &Panicky::document_type(),
            &Scope::global(),
            &main(),
            Revision(0),
            |txn| {
                txn.add_operation(NewOperation::new(
                    0,
                    action("b1", "BOOM", "", 2),
                    Digest::default(),
                ));
            },
        )
        .expect("apply");
    match read(&reactor, "bad") {
        Err(Error::ReducerPanicked {
            action_id, reason, ..
        }) => {
            assert_eq!(action_id.expect("an action").as_str(), "b1");
            assert!(reason.contains("boom on b1"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The worker lives on: later writes to other documents are applied and
    // read, within the wait's deadline.
    written(
        &reactor
            .execute(id("good"), main(), vec![action("g1", "ADD", "", 3)])
            .expect("submit"),
    );
    let good = read(&reactor, "good").expect("the other document reads");
    assert_eq!(good.state(&Scope::global()), Some(&b"."[..]));
    assert_eq!(reactor.view().applied(), reactor.store().last_ordinal());
    // Reading the bad one again still names the operation.
    assert!(matches!(
        read(&reactor, "bad"),
        Err(Error::ReducerPanicked { .. })
    ));
}

#[test]
fn a_wait_for_a_token_never_written_honours_its_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_panicky(dir.path());
    let far = ConsistencyToken(reactordb::Ordinal(
        reactor.store().last_ordinal().get() + 1_000,
    ));
    let started = Instant::now();
    let result = reactor
        .view()
        .wait_for_within(far, Duration::from_millis(200));
    let took = started.elapsed();
    assert!(
        matches!(result, Err(Error::ConsistencyTimeout { .. })),
        "{result:?}"
    );
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_wait_on_a_stalled_view_times_out_at_its_deadline_then_lands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_panicky(dir.path());
    create_panicky(&reactor, "d");
    reactor.view().stall_worker(true);
    let token = written(
        &reactor
            .execute(id("d"), main(), vec![action("a1", "ADD", "", 1)])
            .expect("submit"),
    );
    // The reader waits for the worker; it does not apply the backlog
    // itself, so the deadline holds.
    let started = Instant::now();
    let result = reactor
        .view()
        .wait_for_within(token, Duration::from_millis(200));
    let took = started.elapsed();
    assert!(
        matches!(result, Err(Error::ConsistencyTimeout { .. })),
        "{result:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    reactor.view().stall_worker(false);
    reactor
        .view()
        .wait_for_within(token, Duration::from_secs(10))
        .expect("applied once the worker resumes");
}

#[test]
fn a_forged_event_on_the_bus_is_not_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_panicky(dir.path());
    create_panicky(&reactor, "d");
    caught_up(&reactor);
    // A forged operation at the next ordinal: anyone can emit on the bus.
    let next = reactordb::Ordinal(reactor.store().last_ordinal().get() + 1);
    let mut forged = operations_of(&reactor, "d", |_| true)
        .pop()
        .expect("an operation");
    forged.operation.action = action("forged", "ADD", "", 9);
    forged.operation.index += 1;
    forged.context.ordinal = next;
    forged.context.scope = Scope::global();
    reactor.bus().emit(reactordb::Event::written(vec![forged]));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        reactor.view().applied() < next,
        "the forged event was applied"
    );
    // The real next operation lands as it should.
    written(
        &reactor
            .execute(id("d"), main(), vec![action("a1", "ADD", "", 1)])
            .expect("submit"),
    );
    let d = read(&reactor, "d").expect("read");
    assert_eq!(d.state(&Scope::global()), Some(&b"."[..]));
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_forged_operation_announced_before_a_true_one_is_not_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_panicky(dir.path());
    create_panicky(&reactor, "d");
    caught_up(&reactor);
    // Read once, so the view caches the document and would advance the
    // cached state by whatever it is told.
    read(&reactor, "d").expect("read");
    // Two true operations, unseen by the stalled view.
    reactor.view().stall_worker(true);
    for (aid, ts) in [("a1", 1), ("a2", 2)] {
        written(
            &reactor
                .execute(id("d"), main(), vec![action(aid, "ADD", "", ts)])
                .expect("submit"),
        );
    }
    // One announcement: a forged first operation, then the true second:
    // contiguous ordinals, and its last operation is the store's.
    std::thread::sleep(Duration::from_millis(50)); // their events are missed
    let global = operations_of(&reactor, "d", |s| *s == Scope::global());
    let mut forged = global[0].clone();
    // Its place, chain hash and ordinal are the true operation's: only
    // its content is forged.
    forged.operation.action = action("forged", "ADD", "X", 1);
    reactor.view().stall_worker(false);
    reactor
        .bus()
        .emit(reactordb::Event::written(vec![forged, global[1].clone()]));
    let token = ConsistencyToken(reactor.store().last_ordinal());
    reactor
        .view()
        .wait_for(token)
        .expect("applied from the store");
    // The forged operation would have put an X in the cached state.
    let d = read(&reactor, "d").expect("the true history reads");
    assert_eq!(d.state(&Scope::global()), Some(&b".."[..]));
}

#[cfg(feature = "fault-injection")]
#[test]
fn the_view_worker_survives_a_panic_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_panicky(dir.path());
    create_panicky(&reactor, "d");
    reactor.view().panic_worker_once();
    let token = reactor
        .execute(id("d"), main(), vec![action("a1", "ADD", "", 1)])
        .expect("submit")
        .readable(Duration::from_secs(10))
        .expect("applied after the worker's panic");
    assert!(reactor.view().applied() >= token.0);
}

#[cfg(feature = "fault-injection")]
#[test]
fn dropping_the_reactor_releases_a_handle_waiting_on_it_and_closes_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_panicky(dir.path());
    create_panicky(&reactor, "d");
    reactor.view().stall_worker(true);
    let job = reactor
        .execute(id("d"), main(), vec![action("a1", "ADD", "", 1)])
        .expect("submit");
    written(&job);
    // A thread waits for the job to be readable: the stalled view never
    // gets there, so the wait is in progress when the reactor goes.
    let waiter = std::thread::spawn(move || job.readable(Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    drop(reactor);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The database is closed when drop returns: the path reopens at once.
    let reopened = open_panicky(dir.path());
    let result = waiter.join().expect("the waiter returns");
    assert!(matches!(result, Err(Error::Shutdown)), "{result:?}");
    drop(reopened);
}

#[test]
fn a_model_panicking_on_an_initial_state_fails_the_job_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = open_panicky(dir.path());
    create_panicky(&reactor, "d");
    let mut local = action("l1", "ADD", "", 1);
    local.scope = Scope::local();
    let job = reactor
        .execute(id("d"), main(), vec![local])
        .expect("submit");
    match &*failure(&job) {
        Error::ReducerPanicked {
            action_id, reason, ..
        } => {
            assert!(action_id.is_none());
            assert!(reason.contains("no local state"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The reactor goes on.
    written(
        &reactor
            .execute(id("d"), main(), vec![action("g1", "ADD", "", 2)])
            .expect("submit"),
    );
}

/// A flipped high bit in the ordinal of a document's last operation (the
/// ordinal is outside the chain hash) would make a fold stop before that
/// operation and serve the revision before it as current. A view that has
/// applied everything reads the state the head keeps (it reads no
/// operation) and serves the true revision; a view behind the writer reads
/// the last operation, and then the read names the damage. `verify` names
/// it either way.
#[test]
fn a_flipped_ordinal_is_named_not_served_as_an_older_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let reactor = open(dir.path(), 1);
        create_counter(&reactor, "c");
        create_counter(&reactor, "other");
        for n in 0..5 {
            written(
                &reactor
                    .execute(id("c"), main(), vec![increment(&format!("i{n}"))])
                    .expect("submit"),
            );
        }
        // The view has applied everything, so reopening does not read the
        // feed (which would refuse the damage at open, also by name).
        caught_up(&reactor);
    }
    // The ordinal's high byte.
    common::edit_operation(dir.path(), "c", 4, |v| v[1] ^= 0x01);
    let reactor = open(dir.path(), 1);
    let doc = reactor
        .view()
        .get(&id("c"), &ViewFilter::default(), None)
        .expect("the head's kept state");
    assert_eq!(doc.scopes[&Scope::global()].revision.get(), 5);
    assert_eq!(
        reactordb::CounterModel::value(&doc.scopes[&Scope::global()].state),
        Some(5)
    );
    #[cfg(feature = "fault-injection")]
    {
        // (A worker past its stall check when the stall came may still
        // apply the write: then the view is not behind, and it tries again.)
        let mut behind_once = false;
        for n in 0..10 {
            reactor.view().stall_worker(true);
            let token = written(
                &reactor
                    .execute(id("other"), main(), vec![increment(&format!("o{n}"))])
                    .expect("submit"),
            );
            reactor.view().clear_cache();
            let read = reactor.view().get(&id("c"), &ViewFilter::default(), None);
            let behind = reactor.view().applied() < token.0;
            reactor.view().stall_worker(false);
            if !behind {
                continue;
            }
            match read {
                Err(Error::Corrupt { cf, .. }) => assert_eq!(cf, "operations"),
                Ok(doc) => panic!(
                    "served {:?} from damaged history",
                    doc.state(&Scope::global())
                ),
                Err(other) => panic!("expected Corrupt, got {other}"),
            }
            behind_once = true;
            break;
        }
        assert!(behind_once, "the stalled view applied every write");
    }
    let report = reactor.store().verify_all().expect("verify");
    assert_eq!(
        report.first_broken.map(|b| (b.index, b.fault)),
        Some((4, reactordb::ChainFault::OrdinalMismatch))
    );
}

/// A lost head is not a scope that reads as absent: a cold read of its
/// document answers `Corrupt { cf: "heads" }` for a lost `global` head and
/// for a lost `document` head (which would otherwise read as "no such
/// document"), though the view's checkpoint is past every write (the
/// feed, which also checks heads, is not read).
#[test]
fn a_lost_head_fails_a_cold_read_instead_of_dropping_its_scope() {
    for scope in ["global", "document"] {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let reactor = open(dir.path(), 1);
            create_counter(&reactor, "c");
            let token = reactor
                .execute_and_wait(id("c"), main(), vec![increment("i0")], WAIT)
                .expect("written");
            reactor.view().wait_for(token).expect("view caught up");
        }
        {
            let db = common::raw_db(dir.path());
            let cf = db.cf_handle("heads").expect("cf");
            db.delete_cf(cf, format!("c\0main\0{scope}\0"))
                .expect("delete");
        }
        let reactor = open(dir.path(), 1);
        match reactor.view().get(&id("c"), &ViewFilter::default(), None) {
            Err(Error::Corrupt { cf: "heads", .. }) => {}
            Ok(doc) => panic!(
                "{scope}: served {:?}",
                doc.scopes.keys().collect::<Vec<_>>()
            ),
            Err(other) => panic!("{scope}: expected Corrupt, got {other}"),
        }
    }
}

/// A `log` document of four operations whose states are too large for
/// its head to keep (see `HEAD_STATE_MAX`): cold reads fold its stream.
fn write_large_log(dir: &std::path::Path) {
    let reactor = open(dir, 1);
    written(
        &reactor
            .create(id("log"), create_input(LogModel::document_type()))
            .expect("submit"),
    );
    let big = "x".repeat(600);
    for n in 0..4 {
        written(
            &reactor
                .execute(
                    id("log"),
                    main(),
                    vec![action(&format!("l{n}"), "ADD", &big, 1)],
                )
                .expect("submit"),
        );
    }
    // Caught up before closing: the tests damage history, and a reopened
    // view that must catch up refuses the damage at open (by name) before
    // the read under test meets it.
    caught_up(&reactor);
}

/// An ordinal that does not grow along its stream (a copy of the one
/// before it) is named by a fold that reads past it. The document's states
/// are too large for its head to keep (see `HEAD_STATE_MAX`), so the read
/// folds the stream.
#[test]
fn an_ordinal_out_of_order_is_named_by_a_fold() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_large_log(dir.path());
    let db = common::raw_db(dir.path());
    let cf = db.cf_handle("operations").expect("cf");
    let key = |i: u64| {
        let mut key = b"log\0main\0global\0".to_vec();
        key.extend_from_slice(&i.to_be_bytes());
        key
    };
    let before = db.get_cf(cf, key(1)).expect("get").expect("stored");
    drop(db);
    common::edit_operation(dir.path(), "log", 2, |v| {
        v[1..9].copy_from_slice(&before[1..9])
    });
    let reactor = open(dir.path(), 1);
    match reactor.view().get(&id("log"), &ViewFilter::default(), None) {
        Err(Error::Corrupt { cf, .. }) => assert_eq!(cf, "operations"),
        Ok(doc) => panic!(
            "served {} bytes of state from damaged history",
            doc.state(&Scope::global()).map_or(0, <[u8]>::len)
        ),
        Err(other) => panic!("expected Corrupt, got {other}"),
    }
}

/// An operation lost from the middle of a stream (or a value moved under
/// another key): a fold meets an index that is not the next one and
/// answers `Corrupt`, instead of counting the rest one revision short.
#[test]
fn a_lost_middle_operation_is_named_by_a_fold_not_counted_short() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_large_log(dir.path());
    {
        let db = common::raw_db(dir.path());
        let cf = db.cf_handle("operations").expect("cf");
        let mut key = b"log\0main\0global\0".to_vec();
        key.extend_from_slice(&1u64.to_be_bytes());
        db.delete_cf(cf, key).expect("delete");
    }
    let reactor = open(dir.path(), 1);
    reactor.view().clear_cache();
    match reactor.view().get(&id("log"), &ViewFilter::default(), None) {
        Err(Error::Corrupt { cf, .. }) => assert_eq!(cf, "operations"),
        Ok(doc) => panic!(
            "served revision {:?} from a log with a hole",
            doc.scopes.get(&Scope::global()).map(|s| s.revision)
        ),
        Err(other) => panic!("expected Corrupt, got {other}"),
    }
}

/// A checkpoint past every write would make the view skip writes until
/// the store caught up with it: the view rebuilds its data from the
/// operations instead, and new writes are read as usual. A damaged header
/// record reads as `Corrupt` (never as a missing or other document), and
/// the next write to the document rewrites it from the operations.
#[test]
fn a_damaged_checkpoint_or_header_record_is_rebuilt_from_the_operations() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let reactor = open(dir.path(), 1);
        create_counter(&reactor, "doc");
        let token = written(
            &reactor
                .execute(id("doc"), main(), vec![increment("a")])
                .expect("submit"),
        );
        // The view's checkpoint and header record are on disk.
        reactor.view().wait_for(token).expect("caught up");
    }
    let set = |key: &[u8], edit: &dyn Fn(&mut Vec<u8>)| {
        let raw = common::raw_db(dir.path());
        let cf = raw.cf_handle("view_meta").expect("cf");
        let mut value = raw.get_cf(cf, key).expect("get").expect("present");
        edit(&mut value);
        raw.put_cf(cf, key, value).expect("put");
    };
    set(b"c", &|v| v[0] = 0x7f);
    {
        let reactor = open(dir.path(), 1);
        assert!(reactordb::verify_view(reactor.store())
            .expect("verify")
            .is_clean());
        let token = written(
            &reactor
                .execute(id("doc"), main(), vec![increment("b")])
                .expect("submit"),
        );
        let read = reactor
            .view()
            .get(&id("doc"), &ViewFilter::default(), Some(token))
            .expect("the new write is read");
        let value = reactordb::CounterModel::value(read.state(&Scope::global()).expect("global"));
        assert_eq!(value, Some(2));
    }
    set(b"hdoc\0main\0", &|v| v[3] ^= 0x10);
    let reactor = open(dir.path(), 1);
    let report = reactordb::verify_view(reactor.store()).expect("verify");
    assert!(
        matches!(
            report.first_fault,
            Some((reactordb::ViewFault::UndecodableHeader, _))
        ),
        "{report:?}"
    );
    reactor.view().clear_cache();
    // Reads never serve the damaged record: they fold the header from the
    // operations (or answer `Corrupt`).
    match reactor.view().get(&id("doc"), &ViewFilter::default(), None) {
        Err(Error::Corrupt {
            cf: "view_meta", ..
        }) => {}
        Ok(read) => {
            assert_eq!(read.header.name, "doc");
            let value =
                reactordb::CounterModel::value(read.state(&Scope::global()).expect("global"));
            assert_eq!(value, Some(2));
        }
        Err(other) => panic!("a damaged header record: {other:?}"),
    }
    // A write to the document scope rewrites the record from the
    // operations (the view folds it again: the damaged one reads as none).
    let token = written(
        &reactor
            .execute(
                id("doc"),
                main(),
                vec![reactordb::system_action(
                    reactor.new_action_id(),
                    1,
                    &reactordb::SystemAction::SetName {
                        name: "renamed".into(),
                    },
                )],
            )
            .expect("submit"),
    );
    let last = written(
        &reactor
            .execute(id("doc"), main(), vec![increment("c")])
            .expect("submit"),
    );
    reactor.view().wait_for(token.max(last)).expect("caught up");
    assert!(reactordb::verify_view(reactor.store())
        .expect("verify")
        .is_clean());
    reactor.view().clear_cache();
    let read = reactor
        .view()
        .get(&id("doc"), &ViewFilter::default(), None)
        .expect("read");
    assert_eq!(
        reactordb::CounterModel::value(read.state(&Scope::global()).expect("global")),
        Some(3)
    );
}
