//! The reactor's helpers for header actions, on any branch: each writes
//! what it names, on the branch it names, and nothing on another.

mod common;

use std::time::Duration;

use common::counter_v2::CounterV2;

use reactordb::{
    Action, ActionType, Branch, CounterModel, CreateDocumentInput, DocumentId, DocumentType, Error,
    ModelRegistry, Reactor, Relationship, Scope, SystemAction, ViewFilter,
};

const WAIT: Duration = Duration::from_secs(10);

fn id(s: &str) -> DocumentId {
    DocumentId::new(s).expect("valid")
}

fn on(branch: &Branch) -> ViewFilter {
    ViewFilter::on(branch.clone())
}

fn counter() -> CreateDocumentInput {
    CreateDocumentInput::new(CounterModel::document_type(), 1, "a counter")
}

fn increment(reactor: &Reactor, doc: &str, branch: &Branch) {
    let action = Action::new(
        reactor.new_action_id(),
        ActionType::new("INCREMENT").expect("valid"),
        Scope::global(),
        1,
        b"1".to_vec(),
    );
    reactor
        .execute(id(doc), branch.clone(), vec![action])
        .expect("submit")
        .readable(WAIT)
        .expect("written");
}

#[test]
fn header_helpers_write_on_the_branch_they_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = Reactor::builder(dir.path())
        .registry(ModelRegistry::with_examples())
        .open()
        .expect("open");
    let feature = Branch::new("feature").expect("valid");
    let done = |job: reactordb::Result<reactordb::JobHandle>| {
        job.expect("submit").readable(WAIT).expect("written")
    };
    done(reactor.create_on(id("doc"), feature.clone(), counter()));
    done(reactor.create(id("other"), counter()));
    done(reactor.set_name(id("doc"), feature.clone(), "renamed"));
    done(reactor.set_meta(id("doc"), feature.clone(), "owner", Some("ops".into())));
    done(reactor.set_meta(id("doc"), feature.clone(), "tmp", Some("x".into())));
    done(reactor.set_meta(id("doc"), feature.clone(), "tmp", None));
    done(reactor.execute_system(
        id("doc"),
        feature.clone(),
        SystemAction::AddRelationship {
            target: id("other"),
            relationship_type: "child".into(),
        },
    ));

    let header = reactor
        .view()
        .get(&id("doc"), &on(&feature), None)
        .expect("read")
        .header;
    assert_eq!(header.branch, feature);
    assert_eq!(header.name, "renamed");
    assert_eq!(
        header.meta.into_iter().collect::<Vec<_>>(),
        vec![("owner".to_owned(), "ops".to_owned())]
    );
    assert_eq!(
        header.relationships.into_iter().collect::<Vec<_>>(),
        vec![Relationship {
            source: id("doc"),
            relationship_type: "child".into(),
            target: id("other"),
        }]
    );
    // Nothing was written on main for `doc`.
    assert!(matches!(
        reactor.view().get(&id("doc"), &ViewFilter::default(), None),
        Err(Error::DocumentNotFound { .. })
    ));
    assert!(reactor
        .store()
        .get_revisions(&id("doc"), &Branch::main())
        .expect("revisions")
        .revisions
        .is_empty());
}

#[test]
fn a_creation_of_an_unregistered_model_is_refused_at_submission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reactor = Reactor::builder(dir.path())
        .registry(ModelRegistry::with_examples())
        .open()
        .expect("open");
    let input = CreateDocumentInput::new(DocumentType::new("no/such").expect("valid"), 1, "x");
    let refused = reactor.execute_system(
        id("doc"),
        Branch::main(),
        SystemAction::CreateDocument(input),
    );
    assert!(matches!(refused, Err(Error::ModelNotFound { .. })));
}

#[test]
fn upgrade_document_moves_the_header_and_every_named_scope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut registry = ModelRegistry::with_examples();
    registry.register(CounterV2);
    let reactor = Reactor::builder(dir.path())
        .registry(registry)
        .open()
        .expect("open");
    let feature = Branch::new("feature").expect("valid");
    reactor
        .create_on(id("c"), feature.clone(), counter())
        .expect("submit")
        .readable(WAIT)
        .expect("created");
    for _ in 0..3 {
        increment(&reactor, "c", &feature); // v1: +1 → 3
    }
    reactor
        .upgrade_document(id("c"), feature.clone(), 1, 2, &[Scope::global()])
        .expect("submit")
        .readable(WAIT)
        .expect("upgraded"); // 3 → 30
    increment(&reactor, "c", &feature); // v2: +10 → 40
    let read = reactor
        .view()
        .get(&id("c"), &on(&feature), None)
        .expect("read");
    assert_eq!(read.header.model_version, 2);
    assert_eq!(
        CounterModel::value(read.state(&Scope::global()).expect("scope")),
        Some(40)
    );

    // An upgrade to a version nobody registered fails and writes nothing.
    let before = reactor.store().last_ordinal();
    let failed = reactor
        .upgrade_document(id("c"), feature, 2, 3, &[Scope::global()])
        .expect("submit")
        .written(WAIT);
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(reactor.store().last_ordinal(), before);
}
