//! # reactordb
//!
//! An embedded document reactor on RocksDB. Documents are event-sourced
//! from an append-only, hash-chained log of operations; the write side (the
//! [`OperationStore`]) and the read side are split, and reactors converge by
//! exchanging operations.
//!
//! The write side is the [`OperationStore`] (usable on its own), the read
//! side the [`DocumentView`]; between them the [`EventBus`]. The
//! [`Reactor`] puts a per-document job queue and an executor in front:
//! actions are reduced by registered [`DocumentModel`]s into operations,
//! and `load` merges operations from a peer by the reshuffle rule.
//!
//! ```
//! use std::time::Duration;
//! use reactordb::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let reactor = Reactor::builder(dir.path())
//!     .durability(Durability::Buffered)
//!     .registry(ModelRegistry::with_examples())
//!     .open()?;
//!
//! let doc = DocumentId::new("counter-1")?;
//! let create =
//!     CreateDocumentInput::new(CounterModel::document_type(), 1, "my counter").slug("my-counter");
//! reactor.create(doc.clone(), create)?.wait_written(Duration::from_secs(5))?;
//!
//! let add = Action::new(
//!     reactor.new_action_id(),
//!     ActionType::new("INCREMENT")?,
//!     Scope::global(),
//!     1_700_000_000_000,
//!     b"41".to_vec(),
//! );
//! let job = reactor.execute(doc.clone(), Branch::main(), vec![add])?;
//! let token = job.wait_written(Duration::from_secs(5))?.token().expect("written");
//!
//! // Read your own write through the view.
//! let read = reactor.view().get(&doc, &ViewFilter::default(), Some(token))?;
//! assert_eq!(CounterModel::value(read.state(&Scope::global()).unwrap()), Some(41));
//! assert_eq!(read.header.slug.as_deref(), Some("my-counter"));
//! # Ok(())
//! # }
//! ```
//!
//! The Operation Store alone:
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
//! on-disk format follows.
//!

#![doc = include_str!("../docs/format.md")]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

/// Builder-style setters for a `#[non_exhaustive]` struct's public fields
/// (outside the crate it cannot be built with a literal or `..default()`):
/// `StoreOptions::default().durability(Durability::Buffered)`.
macro_rules! setters {
    ($ty:ty { $($field:ident: $t:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets `", stringify!($field), "` (see the field).")]
                #[must_use]
                pub fn $field(mut self, value: $t) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

mod bus;
mod codec;
mod error;
mod fold;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod keys;
mod limits;
mod merge;
mod metrics;
mod model;
mod models;
mod reactor;
mod store;
mod sync;
mod view;

pub use bus::{Event, EventBus, Subscription};
pub use error::{Error, IdError, InvalidOperationReason, Result, StorageError, StorageErrorKind};
pub use limits::{
    MAX_ACTION_BYTES, MAX_ENVELOPE_BYTES, MAX_JOB_ACTIONS, MAX_LOAD_OPERATIONS, MAX_OPERATION_BYTES,
};
pub use merge::{verify_histories, HistoryReport, ACTION_REDO, ACTION_UNDO, MAX_TIMESTAMP_MS};
pub use metrics::{CacheStats, Latencies, Metrics};
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
pub use reactor::{
    default_workers, BatchJob, Clock, IdSource, JobHandle, JobId, JobStatus, MigrationReport,
    Reactor, ReactorBuilder,
};
pub use store::{
    AtomicTxn, BrokenLink, ChainFault, CommitStats, Cursor, DocumentRevisions, Durability,
    ExportLine, OperationFilter, OperationLocation, OperationStore, Page, Paging, StoreMemory,
    StoreOptions, StreamInfo, VerifyReport,
};
pub use sync::{
    in_process_pair, Channel, ChannelClosed, DeadLetter, DocumentSyncStatus, FaultPlan,
    FaultyChannel, InProcessChannel, RemoteFilter, RemoteOptions, RemoteStatus, SessionHandle,
    Signature, SigningKey, Standing, StreamRecord, SyncManager, SyncOptions, PROTOCOL_VERSION,
};
#[cfg(feature = "nats")]
pub use sync::{
    AuditEntry, AuditReport, NatsAuth, NatsOptions, NatsRelay, NatsTransport, PublishedRecord,
    RelayMark,
};
#[cfg(feature = "grpc")]
pub use sync::{DialOptions, GrpcChannel, GrpcServer, GrpcTransport, Reconnecting, ServeOptions};
pub use view::{
    rebuild_view, verify_snapshots, verify_view, ConsistencyToken, Document, DocumentView,
    ScopeState, SnapshotReport, ViewFault, ViewFilter, ViewOptions, ViewReport,
};
