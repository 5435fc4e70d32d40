//! The smallest useful embedding: open a reactor, create a document,
//! execute an action, read it back with read-your-writes.
//!
//! Run: `cargo run --example embed [DIR]` (default: a temporary directory)

use std::time::Duration;

use reactordb::{
    Action, ActionType, Branch, CounterModel, CreateDocumentInput, DocumentId, ModelRegistry,
    Reactor, Scope, ViewFilter,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let reactor = Reactor::builder(&dir)
        .registry(ModelRegistry::with_examples())
        .open()?; // Durability::Synced by default

    let doc = DocumentId::new(format!("counter-{}", reactor.store().last_ordinal()))?;
    let create = CreateDocumentInput::new(CounterModel::document_type(), 1, "visits");
    reactor
        .create(doc.clone(), create)?
        .wait_written(Duration::from_secs(10))?;

    let visit = Action::new(
        reactor.new_action_id(),
        ActionType::new("INCREMENT")?,
        Scope::global(),
        1_700_000_000_000,
        Vec::new(),
    );
    let token = reactor
        .execute(doc.clone(), Branch::main(), vec![visit])?
        .written(Duration::from_secs(10))?;

    let read = reactor
        .view()
        .get(&doc, &ViewFilter::default(), Some(token))?;
    let value = CounterModel::value(read.state(&Scope::global()).unwrap_or_default());
    println!("{} \"{}\" = {:?}", doc, read.header.name, value);
    reactor.shutdown();
    Ok(())
}
