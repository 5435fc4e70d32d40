//! Model versions: `UPGRADE_DOCUMENT` moves the header to the new version
//! and, in each scope, converts the state with the new model's `upgrade`;
//! later operations are reduced by the new version, cold or cached.

mod common;

use common::docs::Writer;
use reactordb::{
    Action, ActionType, CounterModel, DocumentId, DocumentModel, DocumentType, DocumentView,
    EventBus, ModelRegistry, ReduceError, Scope, SystemAction, ViewFilter, ViewOptions,
};

/// Version 2 of the counter: counts in tenths, so upgrading multiplies by 10
/// and `INCREMENT` adds ten tenths.
struct CounterV2;

impl DocumentModel for CounterV2 {
    fn document_type(&self) -> DocumentType {
        CounterModel::document_type()
    }
    fn version(&self) -> u32 {
        2
    }
    fn initial_state(&self, scope: &Scope) -> Vec<u8> {
        CounterModel.initial_state(scope)
    }
    fn reduce(&self, scope: &Scope, state: &[u8], action: &Action) -> Result<Vec<u8>, ReduceError> {
        let once = CounterModel.reduce(scope, state, action)?;
        let (before, after) = (
            CounterModel::value(state).unwrap_or(0),
            CounterModel::value(&once).unwrap_or(0),
        );
        Ok((before + (after - before) * 10).to_le_bytes().to_vec())
    }
    fn upgrade(
        &self,
        from_version: u32,
        _scope: &Scope,
        state: &[u8],
    ) -> Result<Vec<u8>, ReduceError> {
        if from_version != 1 {
            return Err(ReduceError::new("only from 1"));
        }
        let v = CounterModel::value(state).ok_or_else(|| ReduceError::new("bad state"))?;
        Ok((v * 10).to_le_bytes().to_vec())
    }
}

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
