//! Writing documents straight through the Operation Store (and announcing
//! them on the bus), for the view tests, and a from-scratch reference fold.

use reactordb::{
    system_action, Action, ActionId, ActionType, Branch, ConsistencyToken, CounterModel,
    CreateDocumentInput, Digest, DocumentId, DocumentModel, DocumentType, DocumentView, Event,
    EventBus, ModelRegistry, NewOperation, Operation, OperationFilter, OperationStore, Paging,
    Revision, Scope, SyncUnit, SystemAction, ViewFilter, ViewOptions, ACTION_NOOP,
};

/// A `Buffered` store on `dir`, a bus, and a view over them with the
/// example models.
pub fn open_view(
    dir: &std::path::Path,
    options: ViewOptions,
) -> (OperationStore, EventBus, DocumentView) {
    let store = super::open(dir);
    let bus = EventBus::new();
    let view = DocumentView::open(store.clone(), &bus, ModelRegistry::with_examples(), options)
        .expect("view");
    (store, bus, view)
}

/// A counter document's `global` scope as the view serves it: its
/// revision and value.
pub fn global_counter(view: &DocumentView, doc: &str) -> (u64, i64) {
    let doc = view
        .get(
            &DocumentId::new(doc).expect("valid"),
            &ViewFilter::default(),
            None,
        )
        .expect("get");
    let scope = &doc.scopes[&Scope::global()];
    (
        scope.revision.get(),
        CounterModel::value(&scope.state).expect("8 bytes"),
    )
}

/// A writer that appends at each stream's head and emits what it wrote.
pub struct Writer {
    pub store: OperationStore,
    pub bus: EventBus,
    pub next_action: u64,
}

impl Writer {
    pub fn new(store: OperationStore, bus: EventBus) -> Self {
        Self {
            store,
            bus,
            next_action: 0,
        }
    }

    /// Appends one operation carrying `action` (with `skip`) at the head of
    /// its stream; returns the token of the write.
    pub fn write(
        &mut self,
        doc: &DocumentId,
        doc_type: &DocumentType,
        action: Action,
        skip: u64,
    ) -> ConsistencyToken {
        let unit = SyncUnit::new(doc.clone(), action.scope.clone(), Branch::main());
        let revision = self
            .store
            .head(&unit)
            .expect("head")
            .map_or(0, |h| h.revision.get());
        let mut op = NewOperation::new(revision, action, Digest::default());
        op.skip = skip;
        let stored = self
            .store
            .apply(
                doc,
                doc_type,
                &unit.scope,
                &unit.branch,
                Revision(revision),
                |txn| {
                    txn.add_operation(op);
                },
            )
            .expect("apply");
        let token = ConsistencyToken(stored.last().expect("one op").context.ordinal);
        self.bus.emit(Event::written(stored));
        token
    }

    pub fn action_id(&mut self) -> ActionId {
        self.next_action += 1;
        ActionId::new(format!("act-{}", self.next_action)).expect("valid")
    }

    pub fn create(
        &mut self,
        doc: &str,
        doc_type: &DocumentType,
        slug: Option<&str>,
    ) -> ConsistencyToken {
        let id = self.action_id();
        let action = system_action(
            id,
            self.next_action,
            &SystemAction::CreateDocument(match slug {
                Some(slug) => {
                    CreateDocumentInput::new(doc_type.clone(), 1, format!("name of {doc}"))
                        .slug(slug)
                }
                None => CreateDocumentInput::new(doc_type.clone(), 1, format!("name of {doc}")),
            }),
        );
        self.write(&DocumentId::new(doc).expect("valid"), doc_type, action, 0)
    }

    pub fn system(
        &mut self,
        doc: &str,
        doc_type: &DocumentType,
        action: SystemAction,
    ) -> ConsistencyToken {
        let id = self.action_id();
        let action = system_action(id, self.next_action, &action);
        self.write(&DocumentId::new(doc).expect("valid"), doc_type, action, 0)
    }

    /// A counter action (`INCREMENT` by `by`) in `scope`.
    pub fn increment(&mut self, doc: &str, scope: &Scope, by: i64) -> ConsistencyToken {
        let id = self.action_id();
        let action = Action::new(
            id,
            ActionType::new("INCREMENT").expect("valid"),
            scope.clone(),
            self.next_action,
            by.to_string().into_bytes(),
        );
        self.write(
            &DocumentId::new(doc).expect("valid"),
            &CounterModel::document_type(),
            action,
            0,
        )
    }

    /// An undo marker cancelling `skip` operations in `scope`.
    pub fn undo(
        &mut self,
        doc: &str,
        doc_type: &DocumentType,
        scope: &Scope,
        skip: u64,
    ) -> ConsistencyToken {
        let id = self.action_id();
        let action = Action::new(
            id,
            ActionType::new(ACTION_NOOP).expect("valid"),
            scope.clone(),
            self.next_action,
            Vec::new(),
        );
        self.write(
            &DocumentId::new(doc).expect("valid"),
            doc_type,
            action,
            skip,
        )
    }
}

/// The effective history, defined recursively (the last operation stays and
/// hides the ones its skip covers; repeat on what precedes them) — written
/// independently of the engine's iterative version.
pub fn effective(ops: &[Operation]) -> Vec<&Operation> {
    match ops.split_last() {
        None => Vec::new(),
        Some((last, rest)) => {
            let keep_below = last.index - last.skip;
            let cut = rest
                .iter()
                .position(|o| o.index >= keep_below)
                .unwrap_or(rest.len());
            let mut out = effective(&rest[..cut]);
            out.push(last);
            out
        }
    }
}

/// The raw log of one scope of a document on `main`.
pub fn stream_ops(store: &OperationStore, doc: &str, scope: &Scope) -> Vec<Operation> {
    let unit = SyncUnit::new(
        DocumentId::new(doc).expect("valid"),
        scope.clone(),
        Branch::main(),
    );
    store
        .get_since(
            &unit,
            Revision(0),
            &OperationFilter::default(),
            Paging::all(),
        )
        .expect("scan")
        .items
}

/// A counter scope folded from scratch out of the store.
pub fn reference_counter(store: &OperationStore, doc: &str, scope: &Scope) -> Option<(u64, i64)> {
    let ops = stream_ops(store, doc, scope);
    if ops.is_empty() {
        return None;
    }
    let model = CounterModel;
    let mut state = model.initial_state(scope);
    for op in effective(&ops) {
        if op.action.action_type.as_str() == ACTION_NOOP || op.error.is_some() {
            continue;
        }
        if let Ok(next) = model.reduce(scope, &state, &op.action) {
            state = next;
        }
    }
    Some((
        ops.len() as u64,
        CounterModel::value(&state).expect("8 bytes"),
    ))
}

/// Checks what every replica of a sync scenario must hold: its `local`
/// operations on `doc` are its own (ids `local-r{replica}-…`), and its
/// chains verify.
pub fn assert_local_home_and_chains(
    store: &OperationStore,
    docs: &[&str],
    replica: usize,
    seed: u64,
) {
    for doc in docs {
        for op in stream_ops(store, doc, &Scope::local()) {
            assert!(
                op.action
                    .id
                    .as_str()
                    .starts_with(&format!("local-r{replica}-")),
                "seed {seed}: replica {replica} holds another's local operation {}",
                op.action.id
            );
        }
    }
    assert!(
        store.verify_all().expect("verify").is_clean(),
        "seed {seed}: replica {replica} chain"
    );
}

/// The audit's property on converged replicas: every replica's record of
/// every synced stream is the same (the records are a function of the set
/// held, with each operation counted under the node that executed it);
/// each record's counts add up to its operation set; and each operation
/// whose executing replica the test knows (`origin_of`, by its action id;
/// `None` for undo and redo markers, whose ids the reactor makes) is
/// counted under that replica's node.
pub fn assert_audit_agrees(
    syncs: &[&reactordb::SyncManager],
    seed: u64,
    origin_of: impl Fn(&SyncUnit, &Operation) -> Option<usize>,
) {
    use std::collections::{BTreeMap, BTreeSet};
    let records: Vec<BTreeMap<SyncUnit, reactordb::StreamRecord>> = syncs
        .iter()
        .map(|s| {
            s.audit()
                .expect("audit")
                .into_iter()
                .map(|r| (r.unit.clone(), r))
                .collect()
        })
        .collect();
    for (i, replica) in records.iter().enumerate() {
        assert_eq!(
            replica, &records[0],
            "seed {seed}: replica {i}'s audit records differ from replica 0's"
        );
    }
    let nodes: Vec<String> = syncs.iter().map(|s| s.node_id()).collect();
    let store = syncs[0].reactor().store();
    for (unit, record) in &records[0] {
        let ops = store
            .get_since(
                unit,
                Revision(0),
                &OperationFilter::default(),
                Paging::all(),
            )
            .expect("scan")
            .items;
        let distinct: BTreeSet<(String, String)> = ops
            .iter()
            .map(|o| (o.id.to_string(), o.content_hash.to_string()))
            .collect();
        assert_eq!(
            record.operations,
            distinct.len() as u64,
            "seed {seed}: {unit:?}"
        );
        assert_eq!(
            record.origins.values().sum::<u64>(),
            record.operations,
            "seed {seed}: {unit:?} counts"
        );
        let mut known = vec![0u64; syncs.len()];
        let mut unknown = 0;
        let mut seen = BTreeSet::new();
        for op in &ops {
            if seen.insert((op.id, op.content_hash)) {
                match origin_of(unit, op) {
                    Some(r) => known[r] += 1,
                    None => unknown += 1,
                }
            }
        }
        for origin in record.origins.keys() {
            assert!(
                nodes.contains(origin),
                "seed {seed}: {unit:?} origin {origin}"
            );
        }
        for (r, node) in nodes.iter().enumerate() {
            let counted = record.origins.get(node).copied().unwrap_or(0);
            assert!(
                known[r] <= counted && counted <= known[r] + unknown,
                "seed {seed}: {unit:?}: replica {r} executed {} (+ up to {unknown} markers), counted {counted}",
                known[r]
            );
        }
    }
}
