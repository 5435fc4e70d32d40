//! Two example models used by the tests, benches and the demo: a counter
//! (a byte-level model, the cheapest possible reducer) and a todo list (a
//! [`TypedModel`](super::TypedModel) on serde types).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DocumentModel, ReduceError, TypedModel};
use crate::model::{Action, ActionType, DocumentType, Scope};

/// A counter: the state of every scope is an `i64` (8 bytes, little
/// endian). Actions: `INCREMENT` and `DECREMENT` (input: an optional
/// decimal amount, default 1) and `RESET`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CounterModel;

impl CounterModel {
    /// The document type, `example/counter`.
    pub fn document_type() -> DocumentType {
        DocumentType::new("example/counter").expect("valid id")
    }

    /// Decodes a counter state.
    pub fn value(state: &[u8]) -> Option<i64> {
        Some(i64::from_le_bytes(state.try_into().ok()?))
    }
}

impl DocumentModel for CounterModel {
    fn document_type(&self) -> DocumentType {
        Self::document_type()
    }

    fn initial_state(&self, _scope: &Scope) -> Vec<u8> {
        0i64.to_le_bytes().to_vec()
    }

    fn reduce(
        &self,
        _scope: &Scope,
        state: &[u8],
        action: &Action,
    ) -> Result<Vec<u8>, ReduceError> {
        let value =
            Self::value(state).ok_or_else(|| ReduceError::new("counter state is not 8 bytes"))?;
        let amount = || -> Result<i64, ReduceError> {
            if action.input.is_empty() {
                return Ok(1);
            }
            std::str::from_utf8(&action.input)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ReduceError::new("amount is not a decimal integer"))
        };
        let next = match action.action_type.as_str() {
            "INCREMENT" => value.checked_add(amount()?),
            "DECREMENT" => value.checked_sub(amount()?),
            "RESET" => Some(0),
            other => return Err(ReduceError::new(format!("unknown counter action {other}"))),
        }
        .ok_or_else(|| ReduceError::new("counter overflow"))?;
        Ok(next.to_le_bytes().to_vec())
    }

    fn state_to_json(&self, state: &[u8]) -> Option<serde_json::Value> {
        Self::value(state).map(serde_json::Value::from)
    }
}

/// One entry of a todo list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoItem {
    /// What to do.
    pub title: String,
    /// Whether it is done.
    pub done: bool,
}

/// A todo list: items by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoState {
    /// The items.
    pub items: BTreeMap<String, TodoItem>,
}

/// Input of the todo model's actions (the action type names the variant).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TodoAction {
    /// `ADD_ITEM`: adds an item (refused if the id exists).
    Add {
        /// The item id.
        id: String,
        /// Its title.
        title: String,
    },
    /// `TOGGLE_ITEM`: flips `done`.
    Toggle {
        /// The item id.
        id: String,
    },
    /// `REMOVE_ITEM`: removes an item.
    Remove {
        /// The item id.
        id: String,
    },
}

impl TodoAction {
    /// The action type this input is submitted under.
    pub fn action_type(&self) -> ActionType {
        ActionType::new(match self {
            TodoAction::Add { .. } => "ADD_ITEM",
            TodoAction::Toggle { .. } => "TOGGLE_ITEM",
            TodoAction::Remove { .. } => "REMOVE_ITEM",
        })
        .expect("valid id")
    }
}

/// A todo list document (`example/todo`), written as a [`TypedModel`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TodoModel;

impl TodoModel {
    /// The document type, `example/todo`.
    pub fn document_type() -> DocumentType {
        DocumentType::new("example/todo").expect("valid id")
    }
}

impl TypedModel for TodoModel {
    type State = TodoState;
    type Input = TodoAction;

    fn document_type(&self) -> DocumentType {
        Self::document_type()
    }

    fn initial_state(&self, _scope: &Scope) -> TodoState {
        TodoState::default()
    }

    fn reduce(
        &self,
        _scope: &Scope,
        state: &mut TodoState,
        action_type: &ActionType,
        input: TodoAction,
    ) -> Result<(), ReduceError> {
        if input.action_type() != *action_type {
            return Err(ReduceError::new("input does not match the action type"));
        }
        match input {
            TodoAction::Add { id, title } => {
                if state.items.contains_key(&id) {
                    return Err(ReduceError::new(format!("item {id} exists")));
                }
                state.items.insert(id, TodoItem { title, done: false });
            }
            TodoAction::Toggle { id } => {
                let item = state
                    .items
                    .get_mut(&id)
                    .ok_or_else(|| ReduceError::new(format!("no item {id}")))?;
                item.done = !item.done;
            }
            TodoAction::Remove { id } => {
                state
                    .items
                    .remove(&id)
                    .ok_or_else(|| ReduceError::new(format!("no item {id}")))?;
            }
        }
        Ok(())
    }
}
