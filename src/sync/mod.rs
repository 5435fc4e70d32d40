//! Sync between reactors: a [`SyncManager`] on a [`Reactor`] keeps, per
//! remote, a filter, durable cursors and dead letters, and runs sessions
//! over [`Channel`]s that move the *set* of operations both ways until
//! both replicas hold the same set. Owns the `sync` column family (through
//! `state`); writes the log only through `Reactor::load`.
//!
//! - `wire`: frames, messages, an operation as it travels.
//! - `state`: the sync store (remotes, cursors, buffers, dead letters,
//!   origins, signatures).
//! - `outbox` / `inbox`: what a remote is sent, and loading what it sent.
//! - `digest`: the anti-entropy pass.
//! - `audit`: a stream's record (set size, per-originator counts, history
//!   digest) and how two records stand.
//! - `session`: one connection's protocol loop.
//! - `channel`: the transports.
//! - `nats`: the JetStream relay (feature `nats`): a shared stream as one
//!   remote, published to from our feed and loaded through the inbox.
//!
//! The rules (DESIGN.md, "Sync"): an operation goes to each remote once,
//! as its first stored copy, identified by its op id and carrying its
//! content hash; never in the `local` scope; never back to the remote it
//! came from. An envelope covers a range of the sender's ordinals
//! (filtered ones included); the receiver's inbox cursor is the highest
//! contiguous ordinal durably loaded, and only it is acked. A later
//! envelope waits in a bounded buffer; the sender resends from the acked
//! cursor, so nothing is lost to a dropped, repeated or reordered frame.

mod audit;
mod channel;
mod digest;
mod filter;
mod inbox;
#[cfg(feature = "nats")]
mod nats;
mod outbox;
mod session;
mod sign;
mod state;
#[cfg(test)]
mod tests;
mod wire;

/// The sync decoders on a fuzzer's bytes (the `values` target): stored
/// sync values, whole frames, a payload inside a valid frame (past the
/// checksum, which a fuzzer cannot forge), and one operation's bytes.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_decode(selector: u8, bytes: &[u8]) {
    match selector % 4 {
        0 => state::fuzz_decode(bytes),
        1 => {
            if let Ok(message) = wire::decode_frame(bytes) {
                assert_eq!(
                    wire::decode_frame(&wire::encode_frame(&message)).ok(),
                    Some(message)
                );
            }
        }
        2 => {
            let frame = wire::frame_with(wire::PROTOCOL_VERSION, bytes);
            if let Ok(message) = wire::decode_frame(&frame) {
                assert_eq!(
                    wire::decode_frame(&wire::encode_frame(&message)).ok(),
                    Some(message)
                );
            }
        }
        _ => {
            if let Ok(op) = wire::SyncedOperation::decode(bytes) {
                if op.check().is_ok() {
                    let _ = op.signed_digest();
                }
                assert_eq!(wire::SyncedOperation::decode(&op.encode()), Ok(op));
            }
        }
    }
}

/// Valid inputs for [`fuzz_decode`], one per selector (`0..4`): what the
/// `values` seed corpus starts from.
#[cfg(test)]
pub(crate) fn fuzz_seeds(operation: &crate::model::OperationWithContext) -> Vec<(u8, Vec<u8>)> {
    let synced = wire::SyncedOperation::of(operation);
    let op = wire::WireOperation {
        ordinal: 7,
        bytes: synced.encode(),
        origin: [7; 16],
        signature: None,
    };
    let envelope = wire::Message::Envelope {
        epoch: 1,
        first: 1,
        last: 7,
        witness: operation.operation.hash,
        operations: vec![op],
    };
    let payload =
        bincode::serde::encode_to_vec(&envelope, bincode::config::standard()).expect("encodes");
    vec![
        (0, state::fuzz_seed()),
        (1, wire::encode_frame(&envelope)),
        (2, payload),
        (3, synced.encode()),
    ]
}

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::model::{DocumentId, Scope};
use crate::reactor::Reactor;
use crate::view::ConsistencyToken;

pub use audit::{Standing, StreamRecord};
#[cfg(feature = "grpc")]
pub use channel::grpc::{
    DialOptions, GrpcChannel, GrpcServer, GrpcTransport, Reconnecting, ServeOptions,
};
pub use channel::{
    in_process_pair, Channel, ChannelClosed, FaultPlan, FaultyChannel, InProcessChannel,
};
pub use filter::{RemoteFilter, RemoteOptions};
#[cfg(feature = "nats")]
pub use nats::{
    AuditEntry, AuditReport, NatsAuth, NatsOptions, NatsRelay, NatsTransport, PublishedRecord,
    RelayMark,
};
pub use sign::SigningKey;
pub use state::DeadLetter;
pub(crate) use wire::MAX_PAYLOAD;
pub use wire::{Signature, PROTOCOL_VERSION};

use state::{RemoteRecord, SyncState};

/// How a sync manager runs its sessions.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SyncOptions {
    /// This node's name, which peers know it by (default: its node id in
    /// hex). Stored at first open; a later name replaces it.
    pub name: Option<String>,
    /// Signs the operations this node originates.
    pub signing_key: Option<SigningKey>,
    /// At most this many of our ordinals sent and not yet acked, per
    /// remote: the bound on a remote's outbound queue (default 512). It
    /// is also what may queue in the peer's reactor at once: a wider
    /// window lets that queue, and the delay, grow without more
    /// throughput (README, the sync benchmark).
    pub window_ordinals: u64,
    /// At most this many ordinals per envelope (default 256).
    pub envelope_ordinals: usize,
    /// Resend from the acked cursor when no ack came for this long.
    pub resend_after: Duration,
    /// Exchange set digests this often, and on connect (`None`: never; the
    /// cursors alone then carry sync, as in tests of them).
    pub anti_entropy_every: Option<Duration>,
    /// At most this many out-of-order envelopes wait per remote; more are
    /// not acked and come again with the resend.
    pub buffered_envelopes: usize,
    /// How long a load job may take before the session gives up (and
    /// resends later).
    pub load_timeout: Duration,
    /// Whether `accept` takes a peer whose name is not a known remote
    /// (adding it with default options), as a server does.
    pub accept_new_remotes: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            name: None,
            signing_key: None,
            window_ordinals: 512,
            envelope_ordinals: 256,
            resend_after: Duration::from_millis(500),
            anti_entropy_every: Some(Duration::from_secs(300)),
            buffered_envelopes: 64,
            load_timeout: Duration::from_secs(60),
            accept_new_remotes: false,
        }
    }
}

impl SyncOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Names this node.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Signs what this node originates.
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }
    /// Resend after this long without an ack.
    pub fn resend_after(mut self, after: Duration) -> Self {
        self.resend_after = after;
        self
    }
    /// Exchange digests this often (`None`: never).
    pub fn anti_entropy_every(mut self, every: Option<Duration>) -> Self {
        self.anti_entropy_every = every;
        self
    }
    /// Accept peers that are not known remotes.
    pub fn accept_new_remotes(mut self, accept: bool) -> Self {
        self.accept_new_remotes = accept;
        self
    }
    /// At most this many ordinals per envelope.
    pub fn envelope_ordinals(mut self, ordinals: usize) -> Self {
        self.envelope_ordinals = ordinals;
        self
    }
    /// At most this many ordinals sent and not yet acked, per remote.
    pub fn window_ordinals(mut self, ordinals: u64) -> Self {
        self.window_ordinals = ordinals;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.envelope_ordinals == 0 || self.window_ordinals == 0 {
            return Err(Error::InvalidOptions {
                option: "envelope_ordinals / window_ordinals",
                reason: "must be at least 1",
            });
        }
        if let Some(name) = &self.name {
            check_name(name)?;
        }
        Ok(())
    }
}

/// The names of relay remotes (`nats:{stream}`): a shared log, never a
/// session's peer. A session under such a name (a peer's hello, or
/// `attach`) is refused, since it would move the relay's cursors.
pub(crate) const RELAY_REMOTE_PREFIX: &str = "nats:";

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(Error::InvalidOptions {
            option: "remote name",
            reason: "1 to 128 bytes, no control characters",
        });
    }
    Ok(())
}

/// A remote and where its sync stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteStatus {
    /// The remote's name.
    pub name: String,
    /// Its options.
    pub options: RemoteOptions,
    /// Whether a session with it runs now.
    pub connected: bool,
    /// Our ordinals it has acked (outbox cursor).
    pub outbox_cursor: u64,
    /// Its ordinals we have loaded (inbox cursor).
    pub inbox_cursor: u64,
    /// Our ordinals it has not acked yet.
    pub lag: u64,
    /// Operations sent to it since this manager opened (resends not
    /// counted again).
    pub sent_operations: u64,
    /// Operations loaded from it since this manager opened.
    pub received_operations: u64,
    /// Operations of it refused for good.
    pub dead_letters: u64,
    /// Why its last session ended, if with an error.
    pub last_error: Option<String>,
}

/// Where one document stands with one remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DocumentSyncStatus {
    /// Some of its operations are not acked by the remote yet.
    Pending,
    /// The remote has acked every operation of it we hold.
    Synced,
    /// Some operation of it from the remote was refused (a dead letter).
    Error(String),
}

/// What a session does to the manager's live view of a remote.
#[derive(Clone, Debug, Default)]
struct Live {
    connected: bool,
    acked: u64,
    inbox: u64,
    sent: u64,
    received: u64,
    dead_letters: u64,
    last_error: Option<String>,
}

/// State every session of a manager shares.
pub(crate) struct Shared {
    reactor: Arc<Reactor>,
    state: SyncState,
    node: state::NodeRecord,
    options: SyncOptions,
    live: Mutex<HashMap<String, Live>>,
    /// Sessions bound to each remote (`remove_remote` waits for none).
    bound: Mutex<HashMap<String, usize>>,
    /// The newest session bound to each remote, which alone runs: an
    /// older one (a connection not yet seen dead) ends at its next turn.
    owner: Mutex<HashMap<String, u64>>,
    next_session: std::sync::atomic::AtomicU64,
    changed: Condvar,
    stopping: AtomicBool,
    /// Held around every read-modify-write of a remote's record and
    /// outbox epoch (`add_remote` and sessions).
    record_lock: Mutex<()>,
    /// Bumped by every `add_remote`: sessions then read their remote's
    /// options again.
    options_generation: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Changes a known remote's live status (a removed one stays removed).
    fn update(&self, remote: &str, f: impl FnOnce(&mut Live)) {
        let mut live = self.live.lock();
        if let Some(l) = live.get_mut(remote) {
            f(l);
        }
        drop(live);
        self.changed.notify_all();
    }

    fn insert_remote(&self, remote: &str) {
        self.live.lock().entry(remote.to_owned()).or_default();
        self.changed.notify_all();
    }
}

/// Sync for one reactor: its remotes and their sessions. `Send + Sync`;
/// dropping it stops every session.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use reactordb::*;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let open = |dir: &std::path::Path| {
///     Reactor::builder(dir)
///         .durability(Durability::Buffered)
///         .registry(ModelRegistry::with_examples())
///         .open()
///         .map(Arc::new)
/// };
/// let (a_dir, b_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
/// let (a, b) = (open(a_dir.path())?, open(b_dir.path())?);
/// let a_sync = SyncManager::open(a.clone(), SyncOptions::new().name("a"))?;
/// let b_sync = SyncManager::open(b.clone(), SyncOptions::new().name("b"))?;
/// a_sync.add_remote("b", RemoteOptions::new())?;
/// b_sync.add_remote("a", RemoteOptions::new())?;
/// let (a_end, b_end) = in_process_pair();
/// let _a_session = a_sync.attach("b", a_end)?;
/// let _b_session = b_sync.attach("a", b_end)?;
///
/// let doc = DocumentId::new("counter-1")?;
/// let create = CreateDocumentInput::new(CounterModel::document_type(), 1, "shared");
/// let token = a.create(doc.clone(), create)?.written(Duration::from_secs(5))?;
/// a_sync.wait_synced("b", token, Duration::from_secs(10))?;
/// assert!(b.store().head(&SyncUnit::new(doc, Scope::document(), Branch::main()))?.is_some());
/// # Ok(())
/// # }
/// ```
pub struct SyncManager {
    shared: Arc<Shared>,
}

impl SyncManager {
    /// Opens sync on `reactor`: its node identity and remotes come from the
    /// database's sync store.
    pub fn open(reactor: Arc<Reactor>, options: SyncOptions) -> Result<Self> {
        options.validate()?;
        let state = SyncState::new(reactor.store().clone());
        let mut node = state.node(options.name.as_deref())?;
        if let Some(name) = &options.name {
            if *name != node.name {
                node.name = name.clone();
                state.rename_node(&node)?;
            }
        }
        let mut live = HashMap::new();
        for (name, _) in state.remotes()? {
            let (acked, inbox) = state.cursors(&name)?;
            let dead_letters = state.dead_letters(&name)?.len() as u64;
            live.insert(
                name,
                Live {
                    acked,
                    inbox,
                    dead_letters,
                    ..Live::default()
                },
            );
        }
        Ok(Self {
            shared: Arc::new(Shared {
                reactor,
                state,
                node,
                options,
                live: Mutex::new(live),
                bound: Mutex::new(HashMap::new()),
                owner: Mutex::new(HashMap::new()),
                next_session: std::sync::atomic::AtomicU64::new(1),
                changed: Condvar::new(),
                stopping: AtomicBool::new(false),
                options_generation: std::sync::atomic::AtomicU64::new(0),
                record_lock: Mutex::new(()),
            }),
        })
    }

    /// This node's name (what peers call it).
    pub fn name(&self) -> &str {
        &self.shared.node.name
    }

    /// The reactor this manager syncs.
    pub fn reactor(&self) -> &Arc<Reactor> {
        &self.shared.reactor
    }

    /// Adds a remote, or replaces its options (keeping its cursors). A
    /// running session takes new options at once; a changed filter sends
    /// again from the start, so what it filtered out before goes now.
    pub fn add_remote(&self, name: &str, options: RemoteOptions) -> Result<()> {
        check_name(name)?;
        let _record = self.shared.record_lock.lock();
        let old = self.shared.state.remote(name)?;
        let refiltered = old
            .as_ref()
            .is_some_and(|r| r.options.filter != options.filter);
        let record = RemoteRecord {
            options,
            peer_node: old.and_then(|r| r.peer_node),
        };
        // What the old filter held back lies under the acked cursor: a new
        // epoch makes the peer take everything anew.
        let epoch = if refiltered {
            Some(state::next_epoch(self.shared.state.outbox_epoch(name)?))
        } else {
            None
        };
        self.shared
            .state
            .put_remote_with_epoch(name, &record, epoch)?;
        self.shared
            .options_generation
            .fetch_add(1, Ordering::AcqRel);
        self.shared.insert_remote(name);
        if epoch.is_some() {
            // Nothing counts as synced until the peer acks it anew.
            self.shared.update(name, |l| l.acked = 0);
        }
        Ok(())
    }

    /// `Ok` when `name` is a known remote, else [`Error::RemoteUnknown`].
    pub(crate) fn remote_exists(&self, name: &str) -> Result<()> {
        match self.shared.state.remote(name)? {
            Some(_) => Ok(()),
            None => Err(Error::RemoteUnknown { name: name.into() }),
        }
    }

    /// Forgets a remote: its options, cursors, buffered envelopes, dead
    /// letters and which operations it sent. First its running sessions
    /// end (it waits for them, up to the load timeout).
    pub fn remove_remote(&self, name: &str) -> Result<()> {
        self.remote_exists(name)?;
        // Its sessions see it gone at their next turn and end; only then
        // is its state deleted, so none writes any of it back.
        self.shared.live.lock().remove(name);
        self.shared.changed.notify_all();
        let deadline = Instant::now() + self.shared.options.load_timeout + Duration::from_secs(5);
        while self.shared.bound.lock().get(name).is_some_and(|n| *n > 0) {
            if Instant::now() > deadline {
                return Err(Error::SyncTimeout {
                    remote: name.into(),
                    token: 0,
                    acked: 0,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.shared.state.remove_remote(name)?;
        Ok(())
    }

    /// This node's id in hex: the originator under which the audit counts
    /// what this node executed.
    pub fn node_id(&self) -> String {
        state::hex(&self.shared.node.node)
    }

    /// The audit record of every stream this replica holds (the `local`
    /// scope aside), each read whole: a cost in proportion to the
    /// database. Equal on two replicas holding the same operations; see
    /// [`StreamRecord::standing`].
    pub fn audit(&self) -> Result<Vec<StreamRecord>> {
        let mut out = Vec::new();
        for stream in self.shared.reactor.store().all_streams()? {
            if stream.unit.scope != Scope::local() {
                out.push(audit::record(
                    &self.shared,
                    &stream.unit,
                    &stream.document_type,
                )?);
            }
        }
        Ok(out)
    }

    /// Every remote with its status, by name.
    pub fn remotes(&self) -> Result<Vec<RemoteStatus>> {
        let last = self.shared.reactor.store().last_ordinal().get();
        let live = self.shared.live.lock().clone();
        Ok(self
            .shared
            .state
            .remotes()?
            .into_iter()
            .map(|(name, record)| {
                let l = live.get(&name).cloned().unwrap_or_default();
                RemoteStatus {
                    options: record.options,
                    connected: l.connected,
                    outbox_cursor: l.acked,
                    inbox_cursor: l.inbox,
                    lag: last.saturating_sub(l.acked),
                    sent_operations: l.sent,
                    received_operations: l.received,
                    dead_letters: l.dead_letters,
                    last_error: l.last_error,
                    name,
                }
            })
            .collect())
    }

    /// The operations of a remote refused for good, with their reasons.
    pub fn dead_letters(&self, remote: &str) -> Result<Vec<DeadLetter>> {
        self.shared.state.dead_letters(remote)
    }

    /// Runs a session with the known remote `name` over `channel` on a
    /// thread of its own, until the channel closes, the peer refuses, or
    /// the handle or manager is dropped.
    pub fn attach(&self, name: &str, channel: impl Channel + 'static) -> Result<SessionHandle> {
        self.remote_exists(name)?;
        if name.starts_with(RELAY_REMOTE_PREFIX) {
            return Err(Error::SyncRefused {
                reason: format!("{name} is a relay's shared log, not a peer"),
            });
        }
        Ok(self.spawn(Some(name.to_owned()), Box::new(channel)))
    }

    /// Runs a session with whichever peer is on `channel`: the remote is
    /// the one its hello names (a server's side of a connection).
    pub fn accept(&self, channel: impl Channel + 'static) -> SessionHandle {
        self.spawn(None, Box::new(channel))
    }

    fn spawn(&self, remote: Option<String>, channel: Box<dyn Channel>) -> SessionHandle {
        let shared = self.shared.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_session = stop.clone();
        let thread = std::thread::Builder::new()
            .name("reactordb-sync".into())
            .spawn(move || session::run(&shared, remote, channel, &stop_session))
            .expect("spawning a sync session thread");
        SessionHandle {
            stop,
            thread: Some(thread),
        }
    }

    /// Where `document` stands with `remote`: refused operations first,
    /// then whether every operation of it we hold is acked.
    pub fn document_status(
        &self,
        remote: &str,
        document: &DocumentId,
    ) -> Result<DocumentSyncStatus> {
        self.remote_exists(remote)?;
        if let Some(letter) = self
            .shared
            .state
            .dead_letters(remote)?
            .into_iter()
            .find(|l| l.document_id.as_deref() == Some(document.as_str()))
        {
            return Ok(DocumentSyncStatus::Error(letter.reason));
        }
        let acked = self.shared.live.lock().get(remote).map_or(0, |l| l.acked);
        let store = self.shared.reactor.store();
        for stream in store.streams(document)? {
            if stream.unit.scope == Scope::local() || stream.revision.get() == 0 {
                continue;
            }
            if store.last_ordinal_of(&stream.unit)?.get() > acked {
                return Ok(DocumentSyncStatus::Pending);
            }
        }
        Ok(DocumentSyncStatus::Synced)
    }

    /// Waits until `remote` has acked everything up to `token` (a job's
    /// consistency token): it has durably loaded those operations, or
    /// refused them for good (its dead letters say why). Filtered-out
    /// operations count as acked.
    pub fn wait_synced(
        &self,
        remote: &str,
        token: ConsistencyToken,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut live = self.shared.live.lock();
        loop {
            let acked = match live.get(remote) {
                None => {
                    return Err(Error::RemoteUnknown {
                        name: remote.into(),
                    })
                }
                Some(l) if l.acked >= token.0.get() => return Ok(()),
                Some(l) => l.acked,
            };
            if self
                .shared
                .changed
                .wait_until(&mut live, deadline)
                .timed_out()
            {
                return Err(Error::SyncTimeout {
                    remote: remote.into(),
                    token: token.0.get(),
                    acked,
                });
            }
        }
    }
}

impl Drop for SyncManager {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
    }
}

/// A running session. Dropping it stops the session (and waits for it).
pub struct SessionHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl SessionHandle {
    /// Whether the session has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the session and returns how it ended.
    pub fn stop(mut self) -> Result<()> {
        self.finish()
    }

    /// Waits for the session to end by itself (the channel closed, the
    /// peer refused) and returns how it ended.
    pub fn join(mut self) -> Result<()> {
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(Error::WorkerPanicked)),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(Error::WorkerPanicked)),
            None => Ok(()),
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
