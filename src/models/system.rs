//! The engine's reducer for the `document` scope: system actions that
//! create, rename, upgrade, relate and delete documents. The header is the
//! state of this scope, so it is derived from operations, never mutated in
//! place.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ReduceError;
use crate::model::{
    Action, ActionId, ActionType, Branch, DocumentId, DocumentType, Operation, Scope,
};

/// Action type of a no-op operation, valid in every scope. Written straight
/// to the store with a `skip`, it hides the operations its skip covers from
/// the view's fold (the raw-log encoding). The reactor's merge does not
/// read a positional skip as an undo: a peer's log has other positions.
/// Undo through [`Reactor::undo`](crate::Reactor::undo), which names its
/// target by operation id ([`ACTION_UNDO`](crate::ACTION_UNDO)).
pub const ACTION_NOOP: &str = "NOOP";

/// Input of `CREATE_DOCUMENT`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CreateDocumentInput {
    /// The document's type.
    pub document_type: DocumentType,
    /// The model version it starts at.
    pub model_version: u32,
    /// Display name.
    pub name: String,
    /// Optional unique, human-readable handle.
    pub slug: Option<String>,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
}

impl CreateDocumentInput {
    /// A document of `document_type` at `model_version`, named `name`, with
    /// no slug and no metadata.
    pub fn new(document_type: DocumentType, model_version: u32, name: impl Into<String>) -> Self {
        Self {
            document_type,
            model_version,
            name: name.into(),
            slug: None,
            meta: BTreeMap::new(),
        }
    }

    /// With a unique handle (`get_by_slug`).
    #[must_use]
    pub fn slug(mut self, slug: impl Into<String>) -> Self {
        self.slug = Some(slug.into());
        self
    }

    /// With one metadata entry.
    #[must_use]
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }
}

/// A system action of the `document` scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SystemAction {
    /// Creates the document (its genesis operation).
    CreateDocument(CreateDocumentInput),
    /// Moves the document to another model version.
    UpgradeDocument {
        /// The version before.
        from_version: u32,
        /// The version after.
        to_version: u32,
    },
    /// Marks the document deleted; reads then report it as deleted.
    DeleteDocument,
    /// Renames the document.
    SetName {
        /// The new name.
        name: String,
    },
    /// Sets (or with `None` removes) one metadata entry.
    SetMeta {
        /// The key.
        key: String,
        /// The value; `None` removes the key.
        value: Option<String>,
    },
    /// Adds a typed relationship to another document.
    AddRelationship {
        /// The related document.
        target: DocumentId,
        /// The kind of relationship, e.g. `child`.
        relationship_type: String,
    },
    /// Removes a relationship.
    RemoveRelationship {
        /// The related document.
        target: DocumentId,
        /// The kind of relationship.
        relationship_type: String,
    },
}

impl SystemAction {
    /// The action type string this action is stored under.
    pub fn action_type(&self) -> &'static str {
        match self {
            SystemAction::CreateDocument(_) => "CREATE_DOCUMENT",
            SystemAction::UpgradeDocument { .. } => "UPGRADE_DOCUMENT",
            SystemAction::DeleteDocument => "DELETE_DOCUMENT",
            SystemAction::SetName { .. } => "SET_NAME",
            SystemAction::SetMeta { .. } => "SET_META",
            SystemAction::AddRelationship { .. } => "ADD_RELATIONSHIP",
            SystemAction::RemoveRelationship { .. } => "REMOVE_RELATIONSHIP",
        }
    }

    /// Decodes a stored system action.
    pub fn decode(action: &Action) -> Result<Self, ReduceError> {
        let parsed: SystemAction = serde_json::from_slice(&action.input)
            .map_err(|e| ReduceError::new(format!("undecodable system action: {e}")))?;
        if parsed.action_type() != action.action_type.as_str() {
            return Err(ReduceError::new(format!(
                "input is {} but the action type is {}",
                parsed.action_type(),
                action.action_type
            )));
        }
        Ok(parsed)
    }
}

/// Builds the action for a system action, in the `document` scope.
pub fn system_action(id: ActionId, timestamp_utc_ms: u64, action: &SystemAction) -> Action {
    Action::new(
        id,
        ActionType::new(action.action_type()).expect("system action types are valid ids"),
        Scope::document(),
        timestamp_utc_ms,
        serde_json::to_vec(action).expect("serde_json encodes plain data"),
    )
}

/// A typed link between two documents.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Relationship {
    /// The document the relationship starts at.
    pub source: DocumentId,
    /// The kind of relationship.
    pub relationship_type: String,
    /// The document it points to.
    pub target: DocumentId,
}

/// The header of a document: the state of its `document` scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DocumentHeader {
    /// The document.
    pub id: DocumentId,
    /// The branch this header belongs to.
    pub branch: Branch,
    /// Its type.
    pub document_type: DocumentType,
    /// Its current model version.
    pub model_version: u32,
    /// The model version it was created at (where every scope's fold
    /// starts; `UPGRADE_DOCUMENT` operations in a scope move it on).
    pub created_model_version: u32,
    /// Timestamp of `CREATE_DOCUMENT`.
    pub created_at_utc_ms: u64,
    /// Timestamp of the latest system operation.
    pub last_modified_utc_ms: u64,
    /// Display name.
    pub name: String,
    /// Optional unique handle.
    pub slug: Option<String>,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
    /// Outgoing relationships.
    pub relationships: BTreeSet<Relationship>,
    /// Whether `DELETE_DOCUMENT` was applied.
    pub deleted: bool,
}

/// The `document` scope's state before any operation: no header.
pub(crate) fn initial_system_state() -> Vec<u8> {
    b"null".to_vec()
}

/// Decodes the `document` scope's state.
pub(crate) fn decode_header(state: &[u8]) -> Option<DocumentHeader> {
    serde_json::from_slice::<Option<DocumentHeader>>(state)
        .ok()
        .flatten()
}

/// Applies one `document`-scope operation to the header state.
pub(crate) fn reduce_system(
    document_id: &DocumentId,
    branch: &Branch,
    state: &[u8],
    op: &Operation,
) -> Result<Vec<u8>, ReduceError> {
    let mut header = decode_header(state);
    match (SystemAction::decode(&op.action)?, header.as_mut()) {
        (SystemAction::CreateDocument(input), None) => {
            header = Some(DocumentHeader {
                id: document_id.clone(),
                branch: branch.clone(),
                document_type: input.document_type,
                model_version: input.model_version,
                created_model_version: input.model_version,
                created_at_utc_ms: op.timestamp_utc_ms,
                last_modified_utc_ms: op.timestamp_utc_ms,
                name: input.name,
                slug: input.slug,
                meta: input.meta,
                relationships: BTreeSet::new(),
                deleted: false,
            });
        }
        (_, None) => return Err(ReduceError::new("document does not exist")),
        (action, Some(h)) => apply_to_header(document_id, h, action, op.timestamp_utc_ms)?,
    }
    Ok(serde_json::to_vec(&header).expect("serde_json encodes plain data"))
}

fn apply_to_header(
    document_id: &DocumentId,
    h: &mut DocumentHeader,
    action: SystemAction,
    timestamp_utc_ms: u64,
) -> Result<(), ReduceError> {
    if h.deleted {
        return Err(ReduceError::new("document is deleted"));
    }
    h.last_modified_utc_ms = h.last_modified_utc_ms.max(timestamp_utc_ms);
    match action {
        SystemAction::CreateDocument(_) => return Err(ReduceError::new("document already exists")),
        SystemAction::UpgradeDocument {
            from_version,
            to_version,
        } => {
            if from_version != h.model_version || to_version <= from_version {
                return Err(ReduceError::new(format!(
                    "cannot upgrade from {from_version} to {to_version} at version {}",
                    h.model_version
                )));
            }
            h.model_version = to_version;
        }
        SystemAction::DeleteDocument => h.deleted = true,
        SystemAction::SetName { name } => h.name = name,
        SystemAction::SetMeta { key, value } => match value {
            Some(v) => {
                h.meta.insert(key, v);
            }
            None => {
                h.meta.remove(&key);
            }
        },
        SystemAction::AddRelationship {
            target,
            relationship_type,
        } => {
            h.relationships.insert(Relationship {
                source: document_id.clone(),
                relationship_type,
                target,
            });
        }
        SystemAction::RemoveRelationship {
            target,
            relationship_type,
        } => {
            h.relationships.remove(&Relationship {
                source: document_id.clone(),
                relationship_type,
                target,
            });
        }
    }
    Ok(())
}
