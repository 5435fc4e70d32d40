//! Document models: the reducers that turn actions into state, the registry
//! that finds them by document type and version, and the engine's own
//! reducer for the `document` scope (`system`). State and input cross this
//! boundary as bytes; [`TypedModel`] puts serde types on top.

mod examples;
mod system;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::{Action, ActionType, DocumentType, Scope};

pub use examples::{CounterModel, TodoAction, TodoItem, TodoModel, TodoState};
pub(crate) use system::{decode_header, initial_system_state, reduce_system};
pub use system::{
    system_action, CreateDocumentInput, DocumentHeader, Relationship, SystemAction, ACTION_NOOP,
};

/// Why a reducer refused an action.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ReduceError {
    /// The model's explanation.
    pub reason: String,
}

impl ReduceError {
    /// A refusal with a reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// A document model: deterministic reducers for one document type and
/// version. Every replica must produce the same state bytes from the same
/// operations, so a reducer may depend only on the state, the scope and the
/// action (never on clocks, randomness or I/O).
pub trait DocumentModel: Send + Sync + 'static {
    /// The document type this model reduces.
    fn document_type(&self) -> DocumentType;

    /// The model version (starts at 1).
    fn version(&self) -> u32 {
        1
    }

    /// The state of `scope` in a new document.
    fn initial_state(&self, scope: &Scope) -> Vec<u8>;

    /// The state after `action` is applied to `state` in `scope`.
    fn reduce(&self, scope: &Scope, state: &[u8], action: &Action) -> Result<Vec<u8>, ReduceError>;

    /// Converts a scope's state written by version `from_version` to this
    /// version. The default accepts only the same version.
    fn upgrade(
        &self,
        from_version: u32,
        scope: &Scope,
        state: &[u8],
    ) -> Result<Vec<u8>, ReduceError> {
        let _ = scope;
        if from_version == self.version() {
            Ok(state.to_vec())
        } else {
            Err(ReduceError::new(format!(
                "no upgrade from version {from_version} to {}",
                self.version()
            )))
        }
    }

    /// The state as JSON, for display. The default parses the bytes as JSON.
    fn state_to_json(&self, state: &[u8]) -> Option<serde_json::Value> {
        serde_json::from_slice(state).ok()
    }
}

/// A model written with serde types; wrap it in [`Typed`] to register it.
/// State and action input are encoded as JSON.
pub trait TypedModel: Send + Sync + 'static {
    /// The state of one scope.
    type State: Serialize + DeserializeOwned;
    /// The decoded action input.
    type Input: Serialize + DeserializeOwned;

    /// The document type.
    fn document_type(&self) -> DocumentType;
    /// The model version.
    fn version(&self) -> u32 {
        1
    }
    /// The state of `scope` in a new document.
    fn initial_state(&self, scope: &Scope) -> Self::State;
    /// Applies one action.
    fn reduce(
        &self,
        scope: &Scope,
        state: &mut Self::State,
        action_type: &ActionType,
        input: Self::Input,
    ) -> Result<(), ReduceError>;
}

/// Adapter from [`TypedModel`] to [`DocumentModel`].
#[derive(Clone, Debug, Default)]
pub struct Typed<M>(pub M);

impl<M: TypedModel> Typed<M> {
    /// Encodes an action input for this model.
    pub fn encode_input(input: &M::Input) -> Vec<u8> {
        serde_json::to_vec(input).expect("serde_json encodes plain data")
    }

    /// Decodes a state of this model.
    pub fn decode_state(bytes: &[u8]) -> Result<M::State, ReduceError> {
        serde_json::from_slice(bytes).map_err(|e| ReduceError::new(format!("bad state: {e}")))
    }
}

impl<M: TypedModel> DocumentModel for Typed<M> {
    fn document_type(&self) -> DocumentType {
        self.0.document_type()
    }

    fn version(&self) -> u32 {
        self.0.version()
    }

    fn initial_state(&self, scope: &Scope) -> Vec<u8> {
        serde_json::to_vec(&self.0.initial_state(scope)).expect("serde_json encodes plain data")
    }

    fn reduce(&self, scope: &Scope, state: &[u8], action: &Action) -> Result<Vec<u8>, ReduceError> {
        let mut state = Self::decode_state(state)?;
        let input: M::Input = serde_json::from_slice(&action.input)
            .map_err(|e| ReduceError::new(format!("undecodable input: {e}")))?;
        self.0
            .reduce(scope, &mut state, &action.action_type, input)?;
        Ok(serde_json::to_vec(&state).expect("serde_json encodes plain data"))
    }
}

/// Registered models, by document type and version. Cheap to clone.
#[derive(Clone, Default)]
pub struct ModelRegistry {
    models: BTreeMap<DocumentType, BTreeMap<u32, Arc<dyn DocumentModel>>>,
}

impl std::fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries: Vec<_> = self
            .models
            .iter()
            .flat_map(|(t, vs)| vs.keys().map(move |v| format!("{t}@{v}")))
            .collect();
        f.debug_struct("ModelRegistry")
            .field("models", &entries)
            .finish()
    }
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the example models ([`CounterModel`], [`TodoModel`]).
    pub fn with_examples() -> Self {
        let mut registry = Self::new();
        registry.register(CounterModel);
        registry.register(Typed(TodoModel));
        registry
    }

    /// Registers `model` under its type and version (replacing an earlier
    /// registration of the same pair).
    pub fn register(&mut self, model: impl DocumentModel) -> &mut Self {
        let model: Arc<dyn DocumentModel> = Arc::new(model);
        self.models
            .entry(model.document_type())
            .or_default()
            .insert(model.version(), model);
        self
    }

    /// The model of a type at a version.
    pub fn get(
        &self,
        document_type: &DocumentType,
        version: u32,
    ) -> Option<Arc<dyn DocumentModel>> {
        self.models.get(document_type)?.get(&version).cloned()
    }

    /// The model of a type at a version, borrowed (no reference count
    /// traffic on the fold's hot path).
    pub(crate) fn get_ref(
        &self,
        document_type: &DocumentType,
        version: u32,
    ) -> Option<&dyn DocumentModel> {
        self.models
            .get(document_type)?
            .get(&version)
            .map(|m| m.as_ref())
    }

    /// The model of a type at a version, or [`Error::ModelNotFound`]: the
    /// one rule every path (submission, execution, loads, folds) checks.
    pub(crate) fn require(
        &self,
        document_type: &DocumentType,
        version: u32,
    ) -> crate::error::Result<&dyn DocumentModel> {
        self.get_ref(document_type, version)
            .ok_or_else(|| crate::error::Error::ModelNotFound {
                document_type: document_type.clone(),
                version,
            })
    }

    /// The newest version of a type.
    pub fn latest(&self, document_type: &DocumentType) -> Option<Arc<dyn DocumentModel>> {
        self.models
            .get(document_type)?
            .values()
            .next_back()
            .cloned()
    }
}
