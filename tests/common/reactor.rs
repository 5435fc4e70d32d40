//! Helpers for the reactor tests.

use std::time::Duration;

use reactordb::{
    Action, ActionId, ActionType, Branch, CounterModel, CreateDocumentInput, DocumentId,
    DocumentModel, DocumentType, Durability, JobHandle, JobStatus, ModelRegistry, Reactor,
    ReduceError, Scope,
};

pub const WAIT: Duration = Duration::from_secs(60);

/// An order-sensitive model: the state is the JSON list of action inputs.
pub struct LogModel;

impl LogModel {
    pub fn document_type() -> DocumentType {
        DocumentType::new("test/log").expect("valid")
    }
}

impl DocumentModel for LogModel {
    fn document_type(&self) -> DocumentType {
        Self::document_type()
    }
    fn initial_state(&self, _scope: &Scope) -> Vec<u8> {
        b"[]".to_vec()
    }
    fn reduce(
        &self,
        _scope: &Scope,
        state: &[u8],
        action: &Action,
    ) -> Result<Vec<u8>, ReduceError> {
        let mut items: Vec<String> =
            serde_json::from_slice(state).map_err(|e| ReduceError::new(e.to_string()))?;
        items.push(String::from_utf8_lossy(&action.input).into_owned());
        Ok(serde_json::to_vec(&items).expect("json"))
    }
}

pub fn registry() -> ModelRegistry {
    let mut r = ModelRegistry::with_examples();
    r.register(LogModel);
    r
}

pub fn open(dir: &std::path::Path, workers: usize) -> Reactor {
    Reactor::builder(dir)
        .durability(Durability::Buffered)
        .registry(registry())
        .workers(workers)
        .open()
        .expect("open reactor")
}

/// A reactor that runs jobs on the calling thread (`inline`), with the
/// example models and the store's default durability.
pub fn open_inline(dir: &std::path::Path) -> Reactor {
    Reactor::builder(dir)
        .registry(registry())
        .inline(true)
        .open()
        .expect("open reactor")
}

pub fn id(s: &str) -> DocumentId {
    DocumentId::new(s).expect("valid")
}

pub fn create_input(document_type: DocumentType) -> CreateDocumentInput {
    CreateDocumentInput::new(document_type, 1, "doc")
}

pub fn create_counter(reactor: &Reactor, doc: &str) {
    let job = reactor
        .create(id(doc), create_input(CounterModel::document_type()))
        .expect("submit");
    written(&job);
}

pub fn action(action_id: &str, action_type: &str, input: &str, ts: u64) -> Action {
    Action::new(
        ActionId::new(action_id).expect("valid"),
        ActionType::new(action_type).expect("valid"),
        Scope::global(),
        ts,
        input.as_bytes().to_vec(),
    )
}

/// A counter increment of `amount` in `scope`.
pub fn increment_by(action_id: &str, scope: Scope, amount: i64) -> Action {
    Action::new(
        ActionId::new(action_id).expect("valid"),
        ActionType::new("INCREMENT").expect("valid"),
        scope,
        1,
        amount.to_string().into_bytes(),
    )
}

pub fn increment(action_id: &str) -> Action {
    action(action_id, "INCREMENT", "1", 1)
}

/// Waits for a job to be written; panics if it failed.
pub fn written(job: &JobHandle) -> reactordb::ConsistencyToken {
    match job.wait_written(WAIT).expect("in time") {
        JobStatus::WriteReady { token } | JobStatus::ReadReady { token } => token,
        other => panic!("job {} did not land: {other:?}", job.id()),
    }
}

/// The failure of a job; panics if it landed.
pub fn failure(job: &JobHandle) -> std::sync::Arc<reactordb::Error> {
    match job.wait_written(WAIT).expect("in time") {
        JobStatus::Failed { error, .. } => error,
        other => panic!("job {} should have failed: {other:?}", job.id()),
    }
}

pub fn main() -> Branch {
    Branch::main()
}

/// What a peer sends: every operation of `doc` whose scope `keep` accepts,
/// in ordinal order, with context.
pub fn operations_of(
    reactor: &Reactor,
    doc: &str,
    keep: impl Fn(&Scope) -> bool,
) -> Vec<reactordb::OperationWithContext> {
    reactor
        .store()
        .get_since_ordinal(reactordb::Ordinal(1), reactordb::Paging::all())
        .expect("feed")
        .items
        .into_iter()
        .filter(|o| o.context.document_id == id(doc) && keep(&o.context.scope))
        .collect()
}
