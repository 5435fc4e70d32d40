//! # reactordb
//!
//! An embedded document reactor on RocksDB. Documents are event-sourced
//! from an append-only, hash-chained log of operations; the write side (the
//! [`OperationStore`]) and the read side are split, and reactors converge by
//! exchanging operations.
//!
//! This release ships the write side (the [`OperationStore`], usable on its
//! own), the [`EventBus`], document models ([`DocumentModel`],
//! [`TypedModel`], [`ModelRegistry`]) and the read side (the
//! [`DocumentView`]). The reactor (queue, executor, sync) comes next.
//!
//! ```
//! use reactordb::{
//!     Action, ActionId, ActionType, Branch, Digest, DocumentId, DocumentType, Durability,
//!     NewOperation, OperationStore, Revision, Scope, StoreOptions, SyncUnit,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = OperationStore::open(dir.path(), StoreOptions::with_durability(Durability::Buffered))?;
//!
//! let doc = DocumentId::new("doc-1")?;
//! let doc_type = DocumentType::new("example/counter")?;
//! let action = Action::new(
//!     ActionId::new("a-1")?,
//!     ActionType::new("INCREMENT")?,
//!     Scope::global(),
//!     1_700_000_000_000,
//!     b"1".to_vec(),
//! );
//! let stored = store.apply(&doc, &doc_type, &Scope::global(), &Branch::main(), Revision(0), |txn| {
//!     txn.add_operation(NewOperation::new(0, action, Digest::of(b"state after")));
//! })?;
//! assert_eq!(stored[0].context.ordinal.get(), 1);
//!
//! let unit = SyncUnit::new(doc, Scope::global(), Branch::main());
//! assert_eq!(store.head(&unit)?.map(|h| h.revision), Some(Revision(1)));
//! assert!(store.verify(&unit)?.is_clean());
//! # Ok(())
//! # }
//! ```
//!
//! Design: `DESIGN.md` in the repository describes the architecture; the
//! key layout is documented in the (private) `keys` module.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

mod bus;
mod codec;
mod error;
mod keys;
mod model;
mod models;
mod reactor;
mod store;
mod view;

pub use bus::{Event, EventBus, Subscription};
pub use error::{Error, IdError, InvalidOperationReason, Result};
pub use model::{
    Action, ActionId, ActionType, Branch, Digest, DocumentId, DocumentType, NewOperation,
    Operation, OperationContext, OperationId, OperationWithContext, Ordinal, Revision, Scope,
    SyncUnit, MAX_ID_LEN,
};
pub use models::{
    system_action, CounterModel, CreateDocumentInput, DocumentHeader, DocumentModel, ModelRegistry,
    ReduceError, Relationship, SystemAction, TodoAction, TodoItem, TodoModel, TodoState, Typed,
    TypedModel, ACTION_NOOP,
};
pub use reactor::{BatchJob, JobHandle, JobId, JobStatus, Reactor, ReactorBuilder};
pub use store::{
    AtomicTxn, BrokenLink, ChainFault, Cursor, DocumentRevisions, Durability, OperationFilter,
    OperationLocation, OperationStore, Page, Paging, StoreOptions, StreamInfo, VerifyReport,
};
pub use view::{ConsistencyToken, Document, DocumentView, ScopeState, ViewFilter, ViewOptions};
