//! Model versions: `UPGRADE_DOCUMENT` moves the header to the new version
//! and, in each scope, converts the state with the new model's `upgrade`;
//! later operations are reduced by the new version, cold or cached.

mod common;

use common::counter_v2::CounterV2;
use common::docs::Writer;
use reactordb::{
    Action, ActionType, CounterModel, DocumentId, DocumentView, EventBus, ModelRegistry, Scope,
    SystemAction, ViewFilter, ViewOptions,
};

#[test]
fn upgrade_converts_state_and_switches_reducers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::open(dir.path());
    let bus = EventBus::new();
    let mut registry = ModelRegistry::with_examples();
    registry.register(CounterV2);
    assert_eq!(
        registry
            .latest(&CounterModel::document_type())
            .map(|m| m.version()),
        Some(2)
    );
    let options = ViewOptions::default().snapshot_every(3);
    let view = DocumentView::open(store.clone(), &bus, registry, options).expect("view");
    let mut w = Writer::new(store, bus);
    let ty = CounterModel::document_type();
    w.create("c", &ty, None);
    for _ in 0..4 {
        w.increment("c", &Scope::global(), 1); // v1: +1 each → 4
    }
    w.system(
        "c",
        &ty,
        SystemAction::UpgradeDocument {
            from_version: 1,
            to_version: 2,
        },
    );
    let aid = w.action_id();
    let upgrade = Action::new(
        aid,
        ActionType::new("UPGRADE_DOCUMENT").expect("valid"),
        Scope::global(),
        99,
        br#"{"from_version":1,"to_version":2}"#.to_vec(),
    );
    w.write(&DocumentId::new("c").expect("valid"), &ty, upgrade, 0); // 4 → 40
    let mut token = None;
    for _ in 0..3 {
        token = Some(w.increment("c", &Scope::global(), 1)); // v2: +10 each → 70
    }
    let read = |view: &DocumentView| {
        let doc = view
            .get(
                &DocumentId::new("c").expect("valid"),
                &ViewFilter::default(),
                token,
            )
            .expect("get");
        (
            doc.header.model_version,
            doc.header.created_model_version,
            CounterModel::value(doc.state(&Scope::global()).expect("scope")),
        )
    };
    assert_eq!(read(&view), (2, 1, Some(70)), "cached");
    view.clear_cache();
    assert_eq!(read(&view), (2, 1, Some(70)), "cold, through snapshots");
}
