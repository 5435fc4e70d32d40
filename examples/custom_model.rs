//! A document model of your own: a shopping list written as a
//! `TypedModel` on serde types, registered with a reactor, and driven
//! through it.
//!
//! Run: `cargo run --example custom_model`

use std::collections::BTreeMap;
use std::time::Duration;

use reactordb::{
    Action, ActionType, Branch, CreateDocumentInput, DocumentId, DocumentType, Reactor,
    ReduceError, Scope, Typed, TypedModel, ViewFilter,
};
use serde::{Deserialize, Serialize};

/// The state of the `global` scope: item → quantity.
#[derive(Default, Serialize, Deserialize)]
struct ShoppingList {
    items: BTreeMap<String, u32>,
}

/// The actions, as their input (the action type names the variant).
#[derive(Serialize, Deserialize)]
enum ListAction {
    Add { item: String, quantity: u32 },
    Remove { item: String },
}

struct ShoppingListModel;

impl TypedModel for ShoppingListModel {
    type State = ShoppingList;
    type Input = ListAction;

    fn document_type(&self) -> DocumentType {
        DocumentType::new("example/shopping-list").expect("a valid literal id")
    }

    fn initial_state(&self, _scope: &Scope) -> ShoppingList {
        ShoppingList::default()
    }

    // Deterministic: depends only on the state and the action.
    fn reduce(
        &self,
        _scope: &Scope,
        state: &mut ShoppingList,
        _action_type: &ActionType,
        input: ListAction,
    ) -> Result<(), ReduceError> {
        match input {
            ListAction::Add { item, quantity } => *state.items.entry(item).or_default() += quantity,
            ListAction::Remove { item } => {
                state
                    .items
                    .remove(&item)
                    .ok_or_else(|| ReduceError::new(format!("{item} is not on the list")))?;
            }
        }
        Ok(())
    }
}

fn action(
    reactor: &Reactor,
    kind: &str,
    input: &ListAction,
) -> Result<Action, Box<dyn std::error::Error>> {
    Ok(Action::new(
        reactor.new_action_id(),
        ActionType::new(kind)?,
        Scope::global(),
        1_700_000_000_000,
        Typed::<ShoppingListModel>::encode_input(input),
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let reactor = Reactor::builder(dir.path())
        .register(Typed(ShoppingListModel))
        .open()?;
    let wait = Duration::from_secs(10);
    let doc = DocumentId::new("groceries")?;
    let create = CreateDocumentInput::new(ShoppingListModel.document_type(), 1, "groceries")
        .slug("groceries");
    reactor.create(doc.clone(), create)?.wait_written(wait)?;

    let actions = vec![
        action(
            &reactor,
            "ADD",
            &ListAction::Add {
                item: "milk".into(),
                quantity: 2,
            },
        )?,
        action(
            &reactor,
            "ADD",
            &ListAction::Add {
                item: "eggs".into(),
                quantity: 12,
            },
        )?,
        action(
            &reactor,
            "REMOVE",
            &ListAction::Remove {
                item: "milk".into(),
            },
        )?,
    ];
    let token = reactor
        .execute(doc.clone(), Branch::main(), actions)?
        .written(wait)?;

    // A refused action fails its job with the reducer's reason; nothing is written.
    let refused = reactor
        .execute(
            doc.clone(),
            Branch::main(),
            vec![action(
                &reactor,
                "REMOVE",
                &ListAction::Remove { item: "tea".into() },
            )?],
        )?
        .wait_written(wait)?;
    println!("refused: {refused:?}");

    let read = reactor
        .view()
        .get_by_slug("groceries", &ViewFilter::default(), Some(token))?;
    let list =
        Typed::<ShoppingListModel>::decode_state(read.state(&Scope::global()).unwrap_or(b"{}"))?;
    for (item, quantity) in &list.items {
        println!("{quantity:>3} × {item}");
    }
    Ok(())
}
