//! Property test: for random actions over several documents and scopes
//! (increments and undos), every document the view returns equals a
//! from-scratch fold of the Operation Store, with and without snapshots,
//! before and after reopen.

mod common;

use common::docs::{open_view, reference_counter, Writer};
use proptest::prelude::*;
use reactordb::{
    CounterModel, DocumentId, DocumentView, OperationStore, Scope, ViewFilter, ViewOptions,
};

#[derive(Clone, Debug)]
enum Step {
    Increment { doc: u8, scope: u8, by: i8 },
    Undo { doc: u8, scope: u8, skip: u8 },
    ClearCache,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..3, 0u8..2, -5i8..10).prop_map(|(doc, scope, by)| Step::Increment { doc, scope, by }),
        2 => (0u8..3, 0u8..2, 1u8..5).prop_map(|(doc, scope, skip)| Step::Undo { doc, scope, skip }),
        1 => Just(Step::ClearCache),
    ]
}

fn scope(i: u8) -> Scope {
    if i == 0 {
        Scope::global()
    } else {
        Scope::local()
    }
}

fn check_all(
    view: &DocumentView,
    store: &OperationStore,
    token: Option<reactordb::ConsistencyToken>,
) {
    for d in 0..3 {
        let id = format!("doc{d}");
        let doc = view
            .get(
                &DocumentId::new(id.as_str()).expect("valid"),
                &ViewFilter::default(),
                token,
            )
            .expect("get");
        for s in 0..2 {
            let scope = scope(s);
            let expected = reference_counter(store, &id, &scope);
            let got = doc.scopes.get(&scope).map(|st| {
                (
                    st.revision.get(),
                    CounterModel::value(&st.state).expect("8 bytes"),
                )
            });
            assert_eq!(got, expected, "{id} {scope}");
        }
    }
}

fn run(steps: &[Step], snapshot_every: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ViewOptions::default().snapshot_every(snapshot_every);
    let open = || open_view(dir.path(), options.clone());
    let (store, bus, view) = open();
    let mut writer = Writer::new(store.clone(), bus);
    let mut token = None;
    for d in 0..3 {
        token = Some(writer.create(&format!("doc{d}"), &CounterModel::document_type(), None));
    }
    for (i, step) in steps.iter().enumerate() {
        match *step {
            Step::Increment { doc, scope: s, by } => {
                token = Some(writer.increment(&format!("doc{doc}"), &scope(s), i64::from(by)));
            }
            Step::Undo {
                doc,
                scope: s,
                skip,
            } => {
                let id = format!("doc{doc}");
                let len = reference_counter(&store, &id, &scope(s)).map_or(0, |(n, _)| n);
                let skip = u64::from(skip).min(len);
                if skip > 0 {
                    token = Some(writer.undo(&id, &CounterModel::document_type(), &scope(s), skip));
                }
            }
            Step::ClearCache => view.clear_cache(),
        }
        if i % 7 == 0 {
            check_all(&view, &store, token);
        }
    }
    check_all(&view, &store, token);
    drop(view);
    drop(writer);
    drop(store);
    let (store, _bus, view) = open();
    check_all(&view, &store, None);
    view.clear_cache();
    check_all(&view, &store, None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn view_equals_a_from_scratch_fold_with_snapshots(steps in proptest::collection::vec(step(), 1..80)) {
        run(&steps, 3);
    }

    #[test]
    fn view_equals_a_from_scratch_fold_without_snapshots(steps in proptest::collection::vec(step(), 1..80)) {
        run(&steps, u64::MAX);
    }
}
