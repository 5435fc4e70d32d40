//! A tour of reactordb as it stands: the Operation Store (write side), the
//! event bus and the Document View (read side), on a database in
//! `./reactordb-tour` (or the directory given as the first argument): its
//! own, never the demo's `./reactordb-data`.
//!
//! It creates counter and todo documents, writes through the store, reads
//! its own writes through the view with consistency tokens, shows an undo,
//! a replay, a conflict and the ordinal feed, times a burst of appends and
//! verifies every hash chain.
//!
//! Run: `cargo run --release --example tour [DIR]`

use std::time::Instant;

use reactordb::{
    system_action, Action, ActionId, ActionType, Branch, ConsistencyToken, CounterModel,
    CreateDocumentInput, Digest, DocumentId, DocumentType, DocumentView, Durability, EventBus,
    ModelRegistry, NewOperation, OperationStore, Ordinal, Paging, Revision, Scope, StoreOptions,
    SyncUnit, SystemAction, TodoAction, TodoModel, TodoState, Typed, ViewFilter, ViewOptions,
    ACTION_NOOP,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Appends one action at the head of its stream and announces it on the bus.
struct Writer {
    store: OperationStore,
    bus: EventBus,
    run: u64,
    n: u64,
}

impl Writer {
    fn write(
        &mut self,
        doc: &DocumentId,
        doc_type: &DocumentType,
        action_type: &str,
        scope: Scope,
        input: Vec<u8>,
        skip: u64,
    ) -> Res<ConsistencyToken> {
        self.n += 1;
        let action = Action::new(
            ActionId::new(format!("run{}-{}", self.run, self.n))?,
            ActionType::new(action_type)?,
            scope.clone(),
            1_700_000_000_000 + self.n,
            input,
        );
        let unit = SyncUnit::new(doc.clone(), scope, Branch::main());
        let revision = self.store.head(&unit)?.map_or(0, |h| h.revision.get());
        let mut op = NewOperation::new(revision, action, Digest::default());
        op.skip = skip;
        let stored = self.store.apply(
            doc,
            doc_type,
            &unit.scope,
            &unit.branch,
            Revision(revision),
            |txn| {
                txn.add_operation(op);
            },
        )?;
        let token = ConsistencyToken(stored[0].context.ordinal);
        self.bus.emit(reactordb::Event::written(stored));
        Ok(token)
    }

    fn create(
        &mut self,
        doc: &DocumentId,
        doc_type: &DocumentType,
        name: &str,
    ) -> Res<ConsistencyToken> {
        let create =
            SystemAction::CreateDocument(CreateDocumentInput::new(doc_type.clone(), 1, name));
        let action = system_action(ActionId::new("unused")?, 0, &create);
        self.write(
            doc,
            doc_type,
            action.action_type.as_str(),
            Scope::document(),
            action.input,
            0,
        )
    }
}

fn main() -> Res<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "reactordb-tour".to_owned());
    let store = OperationStore::open(&dir, StoreOptions::with_durability(Durability::Buffered))?;
    let bus = EventBus::new();
    let view = DocumentView::open(
        store.clone(),
        &bus,
        ModelRegistry::with_examples(),
        ViewOptions::default(),
    )?;
    let run = store.last_ordinal().get();
    println!(
        "opened {dir}: {run} operations already stored, the view is at ordinal {}",
        view.applied()
    );
    let mut w = Writer {
        store: store.clone(),
        bus,
        run,
        n: 0,
    };

    // 1. A counter: create, increment, undo the last increment, read back.
    let counter = DocumentId::new(format!("counter-{run}"))?;
    let counter_type = CounterModel::document_type();
    w.create(&counter, &counter_type, "a counter")?;
    for by in [5, 7, 30] {
        w.write(
            &counter,
            &counter_type,
            "INCREMENT",
            Scope::global(),
            by.to_string().into_bytes(),
            0,
        )?;
    }
    let token = w.write(
        &counter,
        &counter_type,
        ACTION_NOOP,
        Scope::global(),
        Vec::new(),
        1,
    )?; // undo "+30"
    let doc = view.get(&counter, &ViewFilter::default(), Some(token))?;
    let global = &doc.scopes[&Scope::global()];
    println!(
        "{}: \"{}\" = {:?} after 3 increments and an undo (revision {}, state hash {})",
        counter,
        doc.header.name,
        CounterModel::value(&global.state),
        global.revision,
        &global.state_hash.to_string()[..16]
    );

    // 2. A todo list, a typed model on serde types.
    let todo = DocumentId::new(format!("todo-{run}"))?;
    let todo_type = TodoModel::document_type();
    w.create(&todo, &todo_type, "chores")?;
    let mut token = token;
    for action in [
        TodoAction::Add {
            id: "1".into(),
            title: "write the view".into(),
        },
        TodoAction::Add {
            id: "2".into(),
            title: "write the reactor".into(),
        },
        TodoAction::Toggle { id: "1".into() },
    ] {
        let input = Typed::<TodoModel>::encode_input(&action);
        token = w.write(
            &todo,
            &todo_type,
            action.action_type().as_str(),
            Scope::global(),
            input,
            0,
        )?;
    }
    let doc = view.get(&todo, &ViewFilter::default(), Some(token))?;
    let state: TodoState =
        Typed::<TodoModel>::decode_state(doc.state(&Scope::global()).unwrap_or(b"{}"))?;
    for (id, item) in &state.items {
        println!(
            "{todo}: [{}] {id} {}",
            if item.done { "x" } else { " " },
            item.title
        );
    }

    // 3. Replays are idempotent; a stale revision with new work is a retryable conflict.
    let unit = SyncUnit::new(counter.clone(), Scope::global(), Branch::main());
    let first = store.get(&unit, 0)?.ok_or("stored")?;
    let replay = store.apply(
        &counter,
        &counter_type,
        &Scope::global(),
        &Branch::main(),
        Revision(0),
        |txn| {
            txn.add_operation(first.clone().into());
        },
    )?;
    println!(
        "replaying index 0 returns the stored operation (ordinal {})",
        replay[0].context.ordinal
    );
    let stale = store.apply(
        &counter,
        &counter_type,
        &Scope::global(),
        &Branch::main(),
        Revision(0),
        |txn| {
            let action = Action::new(
                ActionId::new("late").expect("valid"),
                ActionType::new("INCREMENT").expect("valid"),
                Scope::global(),
                0,
                Vec::new(),
            );
            txn.add_operation(NewOperation::new(0, action, Digest::default()));
        },
    );
    if let Err(e) = stale {
        println!("a stale append: {e} (retryable: {})", e.is_retryable());
    }

    // 4. The ordinal feed, as the view and sync read it.
    for item in store
        .get_since_ordinal(Ordinal(run + 1), Paging::first(3))?
        .items
    {
        println!(
            "ordinal {}: {} index {} {}",
            item.context.ordinal,
            item.context.unit(),
            item.operation.index,
            item.operation.action.action_type
        );
    }

    // 5. A burst of single-operation appends, then read-your-writes.
    let burst = DocumentId::new(format!("burst-{run}"))?;
    w.create(&burst, &counter_type, "burst")?;
    let n = 20_000u64;
    let start = Instant::now();
    for _ in 0..n {
        token = w.write(
            &burst,
            &counter_type,
            "INCREMENT",
            Scope::global(),
            Vec::new(),
            0,
        )?;
    }
    let secs = start.elapsed().as_secs_f64();
    let doc = view.get(&burst, &ViewFilter::default(), Some(token))?;
    println!(
        "{n} single-operation appends (buffered) in {secs:.2}s: {:.0} ops/s; the view reads {:?}",
        n as f64 / secs,
        CounterModel::value(doc.state(&Scope::global()).unwrap_or_default())
    );

    // 6. Every hash chain re-checked.
    let report = store.verify_all()?;
    println!(
        "verify: {} streams, {} operations, {}",
        report.streams_checked,
        report.operations_checked,
        if report.is_clean() { "clean" } else { "BROKEN" }
    );
    if let Some(broken) = report.first_broken {
        return Err(format!(
            "broken chain at {} index {}: {:?}",
            broken.unit, broken.index, broken.fault
        )
        .into());
    }
    Ok(())
}
