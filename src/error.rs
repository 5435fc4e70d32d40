//! Every error the crate returns. Errors carry fields, never formatted
//! strings to match on; conflicts say they are retryable.

use crate::model::{ActionId, ActionType, DocumentId, DocumentType, OperationId, Scope, SyncUnit};

/// Why a text id or hex id was refused at construction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id was empty.
    #[error("{kind} is empty")]
    Empty {
        /// Which kind of id.
        kind: &'static str,
    },
    /// The id was longer than allowed.
    #[error("{kind} is {len} bytes long, the maximum is {max}")]
    TooLong {
        /// Which kind of id.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The id holds a control character (NUL terminates key fields).
    #[error("{kind} has a control character at byte {position}")]
    ForbiddenCharacter {
        /// Which kind of id.
        kind: &'static str,
        /// Byte offset of the first offending character.
        position: usize,
    },
    /// The id's bytes are not UTF-8.
    #[error("{kind} is not valid UTF-8")]
    NotUtf8 {
        /// Which kind of id.
        kind: &'static str,
    },
    /// A hex id had the wrong length or a non-hex digit.
    #[error("{kind} is not the expected lowercase hex string")]
    BadHex {
        /// Which kind of id.
        kind: &'static str,
    },
}

/// Why a transaction's operations were refused before anything was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidOperationReason {
    /// The operation's index is not `revision + position`.
    #[error("index {found}, expected {expected}")]
    NonConsecutiveIndex {
        /// The index the operation must have.
        expected: u64,
        /// The index it has.
        found: u64,
    },
    /// The action targets another scope than the transaction.
    #[error("action scope {found}, transaction scope {expected}")]
    ScopeMismatch {
        /// The transaction's scope.
        expected: Scope,
        /// The action's scope.
        found: Scope,
    },
    /// The skip reaches before the start of the stream.
    #[error("skip {skip} reaches before index 0 from index {index}")]
    SkipOutOfRange {
        /// The operation's index.
        index: u64,
        /// Its skip.
        skip: u64,
    },
    /// The same action id appears twice in one transaction.
    #[error("action id appears twice in one transaction")]
    DuplicateActionInTxn,
    /// The encoded operation is larger than a RocksDB value may be.
    #[error("the encoded operation takes {bytes} bytes, more than the {max} a value may hold")]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
        /// The most a value may hold.
        max: usize,
    },
}

/// The crate's error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream's next index is not the revision the caller passed.
    /// Retryable: re-read the head and try again.
    #[error(
        "revision mismatch on {unit}: the stream is at {expected}, the caller passed {actual}"
    )]
    RevisionMismatch {
        /// The stream.
        unit: SyncUnit,
        /// The store's next index.
        expected: u64,
        /// The revision the caller passed.
        actual: u64,
    },
    /// Some, but not all, of the operations of a stale append are already
    /// stored at those positions; names the first.
    #[error("duplicate operation {op_id} at index {index} skip {skip}")]
    DuplicateOperation {
        /// The stored operation's id.
        op_id: OperationId,
        /// Its index.
        index: u64,
        /// Its skip.
        skip: u64,
    },
    /// A stream in the transaction's read set moved. Retryable.
    #[error("append condition failed: {condition} is at {actual}, expected {expected}")]
    AppendConditionFailed {
        /// The stream whose revision moved.
        condition: SyncUnit,
        /// The revision the caller required.
        expected: u64,
        /// Its actual revision.
        actual: u64,
    },
    /// A transaction's operation breaks a rule; nothing was written.
    #[error("invalid operation at position {position}: {reason}")]
    InvalidOperation {
        /// Position of the operation in the transaction.
        position: usize,
        /// What is wrong.
        reason: InvalidOperationReason,
    },
    /// A stream was written with another document type than it holds.
    #[error("{unit} holds documents of type {stored}, not {given}")]
    DocumentTypeMismatch {
        /// The stream.
        unit: SyncUnit,
        /// The type stored in its head.
        stored: DocumentType,
        /// The type passed.
        given: DocumentType,
    },
    /// An id was refused.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// An option was out of its bounds.
    #[error("invalid option {option}: {reason}")]
    InvalidOptions {
        /// The option.
        option: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// An argument of a call was out of its bounds (a page's `limit`, a
    /// batch job's `depends_on`).
    #[error("invalid argument {argument}: {reason}")]
    InvalidArgument {
        /// The argument.
        argument: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// An input is larger than a limit of the engine (see the `limits`
    /// table in the crate docs); nothing was queued or written.
    #[error("too many {what}: {actual}, at most {max}")]
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// The limit.
        max: u64,
        /// What the input had.
        actual: u64,
    },
    /// Bytes on disk do not decode: corruption, or a bug.
    #[error("corrupt {what} in column family {cf}")]
    Corrupt {
        /// The column family.
        cf: &'static str,
        /// What failed to decode.
        what: &'static str,
    },
    /// The database was written by a format version this build cannot read.
    #[error("database format version {found} is not supported (this build reads {supported})")]
    IncompatibleFormat {
        /// The version found on disk.
        found: u32,
        /// The version this build writes.
        supported: u32,
    },
    /// An earlier write failed; the store refuses writes until reopened,
    /// since what reached disk is unknown.
    #[error("the store refused the write: an earlier commit failed; reopen it")]
    Poisoned,
    /// A write through a store opened read-only or as a secondary instance.
    #[error("the store is open read-only: it refuses writes")]
    ReadOnly,
    /// `close` found other handles of the store still alive: the database
    /// stays open for them (its write-ahead log was synced).
    #[error("the store is still open through {handles} other handle(s)")]
    StillOpen {
        /// Handles still alive.
        handles: usize,
    },
    /// The RocksDB this crate is linked against behaves in a way the store
    /// does not support (checked at open).
    #[error("unsupported RocksDB: {reason}")]
    UnsupportedRocksDb {
        /// What differs.
        reason: &'static str,
    },
    /// No document with this id (on this branch).
    #[error("document {id} not found")]
    DocumentNotFound {
        /// The id asked for.
        id: DocumentId,
    },
    /// No document has this slug.
    #[error("no document has the slug {slug:?}")]
    SlugNotFound {
        /// The slug asked for.
        slug: String,
    },
    /// The document exists but was deleted.
    #[error("document {id} is deleted")]
    DocumentDeleted {
        /// The document.
        id: DocumentId,
    },
    /// No model is registered for this document type and version.
    #[error("no model registered for {document_type} version {version}")]
    ModelNotFound {
        /// The document type.
        document_type: DocumentType,
        /// The version.
        version: u32,
    },
    /// A read waited for a consistency token longer than its timeout.
    /// Retryable.
    #[error("the view did not reach ordinal {token} in time (it is at {applied})")]
    ConsistencyTimeout {
        /// The ordinal the read waited for.
        token: u64,
        /// The ordinal the view had applied.
        applied: u64,
    },
    /// A reducer refused an action (or its input did not decode); the job
    /// wrote nothing.
    #[error("invalid action {action_id}: {reason}")]
    InvalidAction {
        /// The action.
        action_id: ActionId,
        /// The reducer's reason.
        reason: String,
    },
    /// An undo or redo found nothing to cancel in its stream.
    #[error("nothing to {kind} in {unit}")]
    NothingToUndo {
        /// The stream.
        unit: SyncUnit,
        /// `"undo"` or `"redo"`.
        kind: &'static str,
    },
    /// An undo's target is structural (`CREATE_DOCUMENT`, `DELETE_DOCUMENT`,
    /// `UPGRADE_DOCUMENT`, relationships): those are never undone.
    #[error("{action_type} in {unit} cannot be undone")]
    NotUndoable {
        /// The stream.
        unit: SyncUnit,
        /// The target's action type.
        action_type: ActionType,
    },
    /// An operation handed to `load` is malformed or does not belong where
    /// it claims; nothing of the load was written.
    #[error("refused operation {action_id}: {reason}")]
    InvalidLoad {
        /// The operation's action id.
        action_id: ActionId,
        /// Why.
        reason: String,
    },
    /// The job queue is full. Retryable, after a while.
    #[error("the job queue is full ({capacity} jobs)")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// A job did not finish within the wait's timeout (it may still).
    #[error("job {job} did not finish in time")]
    WaitTimeout {
        /// The job's number.
        job: u64,
    },
    /// The reactor does not know this job: never submitted here, or
    /// finished so long ago that its record was dropped (see
    /// `ReactorBuilder::retained_jobs`).
    #[error("job {job} is unknown (never submitted, or its record was dropped)")]
    JobUnknown {
        /// The job's number.
        job: u64,
    },
    /// A job failed where the caller needed it to land
    /// (`JobHandle::written` / `readable`, the benchmark workloads).
    #[error("job {job} failed: {error}")]
    JobFailed {
        /// The job's number.
        job: u64,
        /// Why.
        error: std::sync::Arc<Error>,
    },
    /// A job this one depended on failed; this one did not run.
    #[error("job {job}, a dependency, failed")]
    DependencyFailed {
        /// The failed job's number.
        job: u64,
    },
    /// A document model's reducer panicked on an operation: the document
    /// cannot be folded past it (reads of it answer this), everything else
    /// goes on.
    #[error("the {document_type} model panicked (action {action_id:?}): {reason}")]
    ReducerPanicked {
        /// The document type whose model panicked.
        document_type: DocumentType,
        /// The action it panicked on (`None`: making a scope's initial
        /// state).
        action_id: Option<crate::model::ActionId>,
        /// The panic's message.
        reason: String,
    },
    /// A reducer panicked while the job ran; nothing of the failing step
    /// was written.
    #[error("a reducer panicked")]
    WorkerPanicked,
    /// The component was shut down.
    #[error("shut down")]
    Shutdown,
    /// The storage engine (RocksDB) failed: an I/O error, a full disk,
    /// corruption it detected, a lock another process holds.
    #[error("storage: {0}")]
    Storage(StorageError),
    /// Sync: no remote by this name (see `SyncManager::add_remote`).
    #[error("no sync remote named {name:?}")]
    RemoteUnknown {
        /// The name asked for.
        name: String,
    },
    /// Sync: a session was refused, by the peer or by us; the reason says
    /// which and why (another protocol version, another node under a
    /// known remote's name, a wrong token, an unknown remote).
    #[error("sync refused: {reason}")]
    SyncRefused {
        /// Why, for a human.
        reason: String,
    },
    /// Sync: what a shared log (the NATS relay's stream) still holds starts
    /// after our inbox cursor, so operations we never loaded are gone. The
    /// replica must bootstrap from a peer (point-to-point sync) or a
    /// backup before it reads the log again.
    #[error(
        "remote {remote}: our cursor {cursor} is behind the log's first message {first_available}; \
         bootstrap from a peer first"
    )]
    SyncBehindRetention {
        /// The remote whose log it is.
        remote: String,
        /// The last message we loaded.
        cursor: u64,
        /// The first message the log still holds.
        first_available: u64,
    },
    /// Sync: a remote did not ack an ordinal within the wait's timeout.
    #[error("remote {remote} did not ack ordinal {token} in time (it acked {acked})")]
    SyncTimeout {
        /// The remote.
        remote: String,
        /// The ordinal waited for.
        token: u64,
        /// The ordinal it had acked.
        acked: u64,
    },
    /// Sync: a transport could not be set up or failed (address, TLS,
    /// connection).
    #[error("sync transport: {reason}")]
    Transport {
        /// Why, for a human.
        reason: String,
    },
    /// A write failed because a test asked it to (the `fault-injection`
    /// feature); it poisons the store like a failed RocksDB write.
    #[error("an injected write failure")]
    InjectedFault,
}

impl Error {
    /// Whether the caller should re-read and retry: the outcome is a
    /// conflict with a concurrent writer, not a failure.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::RevisionMismatch { .. }
                | Error::AppendConditionFailed { .. }
                | Error::ConsistencyTimeout { .. }
                | Error::QueueFull { .. }
        )
    }
}

/// What the storage engine reported, without its types: the kind of
/// failure and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError {
    kind: StorageErrorKind,
    message: String,
}

/// The kind of a [`StorageError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// Reading or writing a file failed (a full disk, a failed fsync, a
    /// lock another process holds).
    Io,
    /// The engine found damaged data.
    Corruption,
    /// The engine was busy or timed out; trying again may succeed.
    Busy,
    /// The engine does not support the call (e.g. a write through a
    /// read-only handle).
    NotSupported,
    /// Anything else.
    Other,
}

impl StorageError {
    /// The kind of failure.
    pub fn kind(&self) -> StorageErrorKind {
        self.kind
    }

    /// The engine's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StorageError {}

impl From<rocksdb::Error> for StorageError {
    fn from(e: rocksdb::Error) -> Self {
        use rocksdb::ErrorKind as K;
        let kind = match e.kind() {
            K::IOError => StorageErrorKind::Io,
            K::Corruption => StorageErrorKind::Corruption,
            K::Busy | K::TimedOut | K::TryAgain | K::Incomplete => StorageErrorKind::Busy,
            K::NotSupported => StorageErrorKind::NotSupported,
            _ => StorageErrorKind::Other,
        };
        Self {
            kind,
            message: e.into_string(),
        }
    }
}

// The engine's errors convert inside the crate (`?` on RocksDB calls);
// users see only `Error::Storage`.
#[doc(hidden)]
impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Storage(e.into())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
