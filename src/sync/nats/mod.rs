//! The JetStream relay (feature `nats`): reactors on many machines sync
//! through one replicated NATS JetStream stream rather than with each
//! other. Each reactor publishes the operations its feed holds for the
//! stream (the same filter, `local` rule, echo rule and first-copy rule as
//! any remote's outbox) and loads what the others published through a
//! durable consumer (the same checks as any remote's inbox).
//!
//! To the sync manager the stream is one remote, named
//! `nats:{stream}`: its outbox cursor is the last ordinal of ours the
//! stream acknowledged, its inbox cursor the last stream sequence we
//! loaded, both in the sync store, so a restart resumes exactly where it
//! was. The op id is the message id, so what a crash makes us publish
//! again inside the stream's duplicate window is stored once (and a copy
//! past it is a replay the merge ignores). Replicas publish concurrently:
//! there is no expected-sequence guard; order comes from the merge.
//!
//! Each relay also publishes its replica's audit record of every stream it
//! relays to a key-value bucket beside the stream (`audit`), and
//! [`NatsTransport::audit`] compares a replica with everyone's.
//!
//! The tokio runtime lives here, inside the transport; the API stays
//! synchronous.

mod audit;
mod bootstrap;
mod consume;
mod partitions;
mod publish;
mod relay;
mod subject;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use audit::{AuditEntry, AuditReport, PublishedRecord, RelayMark};
pub use relay::NatsRelay;

use super::SyncManager;
use crate::error::{Error, Result};

/// The header naming the node that originated a message's operation (its
/// id in hex; the publisher's own, or the one a peer recorded for it).
const ORIGIN: &str = "Reactordb-Origin";
/// The header naming the node that published a message (its id in hex).
const PUBLISHER: &str = "Reactordb-Publisher";

/// A node id from its hex (`None` if it is not 32 hex digits).
fn parse_node(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut node = [0u8; 16];
    for (i, byte) in node.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(node)
}
/// The header carrying the originator's signature (base64 of key and
/// signature).
const SIGNATURE: &str = "Reactordb-Signature";

fn transport_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Transport {
        reason: format!("NATS: {what}: {e}"),
    }
}

/// How the relay proves who it is to NATS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A server token.
    Token(String),
    /// A user and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
}

/// Where the relay publishes and what it reads.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NatsOptions {
    /// Server URLs (`nats://host:port`, or `tls://` with
    /// [`NatsOptions::ca_file`]); the client fails over between them.
    pub urls: Vec<String>,
    /// Credentials.
    pub auth: NatsAuth,
    /// PEM file of the authority that signed the servers' certificates:
    /// TLS is required when set.
    pub ca_file: Option<PathBuf>,
    /// The JetStream stream (default `REACTORDB`); created when missing.
    pub stream: String,
    /// The first token of every subject (default `reactordb`).
    pub subject_prefix: String,
    /// Copies of the stream the cluster keeps when it creates it (default
    /// 3).
    pub replicas: usize,
    /// How long the stream keeps a message when it creates it (`None`:
    /// for ever). A reactor offline longer must bootstrap from a peer.
    pub max_age: Option<Duration>,
    /// The durable consumer's name (default: this node's name, made a
    /// valid consumer name, and its id).
    pub consumer: Option<String>,
    /// Messages per fetch and per load (default 256).
    pub batch: usize,
    /// This replica was just bootstrapped from a peer (point-to-point
    /// sync, or a backup) after the relay ended with
    /// [`Error::SyncBehindRetention`]: it holds what the stream no longer
    /// does, so the relay reads on from the stream's first message. Used
    /// once, at the relay's start (default false).
    pub bootstrapped: bool,
    /// Bootstrap by itself past the retention from this point-to-point
    /// remote of the same sync manager (whose session the application
    /// keeps running, and whose own relay on this stream publishes audit
    /// records): instead of ending with [`Error::SyncBehindRetention`],
    /// the consumer waits until that peer's relay mark shows it loaded the
    /// stream past the gap and none of its audit records (of the streams
    /// our filter passes) shows us behind, then reads on from the stream's
    /// first message. What the peer's filter leaves out is not covered:
    /// it must relay at least what this relay does (default: none).
    pub bootstrap_from: Option<String>,
    /// How often the relay publishes the audit records of the streams
    /// that changed to the bucket `{stream}_AUDIT` (default 5 s; `None`:
    /// never). A round reads each of those streams whole: after a round
    /// that spent more than a ninth of this reading, the relay waits nine
    /// times that instead, so reading takes at most a tenth of its audit
    /// loop's time. See [`NatsTransport::audit`].
    pub audit_interval: Option<Duration>,
    /// The partitions this relay loads (`None`, the default: the whole
    /// stream). A reactor that serves some documents only loads their
    /// partitions ([`NatsOptions::partition_of`]) through a consumer each,
    /// on the partition's wildcard subject, with a cursor each; what the
    /// other partitions carry never reaches it. What it publishes is still
    /// what its remote's filter passes. Its audit records and mark say it
    /// does not relay everything, so it cannot vouch for a peer's
    /// bootstrap, and its own bootstrap and audit look at its partitions'
    /// streams only.
    pub partitions: Option<BTreeSet<u8>>,
}

impl NatsOptions {
    /// Defaults, at these server URLs.
    pub fn new<S: Into<String>>(urls: impl IntoIterator<Item = S>) -> Self {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            auth: NatsAuth::None,
            ca_file: None,
            stream: "REACTORDB".into(),
            subject_prefix: "reactordb".into(),
            replicas: 3,
            max_age: None,
            consumer: None,
            batch: 256,
            bootstrapped: false,
            bootstrap_from: None,
            audit_interval: Some(Duration::from_secs(5)),
            partitions: None,
        }
    }
    /// The partition of a document (0 to 255): the one a relay must load,
    /// through [`NatsOptions::partitions`], to receive its operations.
    pub fn partition_of(document: &crate::DocumentId) -> u8 {
        subject::partition(document)
    }
    /// Loads these partitions only (see the field).
    pub fn partitions(mut self, partitions: impl IntoIterator<Item = u8>) -> Self {
        self.partitions = Some(partitions.into_iter().collect());
        self
    }
    /// Whether the relay loads the document's operations.
    fn serves(&self, document: &crate::DocumentId) -> bool {
        self.partitions
            .as_ref()
            .is_none_or(|served| served.contains(&subject::partition(document)))
    }
    /// Authenticates with this token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth = NatsAuth::Token(token.into());
        self
    }
    /// Authenticates with this user and password.
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = NatsAuth::UserPassword {
            user: user.into(),
            password: password.into(),
        };
        self
    }
    /// Requires TLS, trusting the authority in this PEM file.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }
    /// Names the stream.
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = stream.into();
        self
    }
    /// Sets the first token of every subject.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }
    /// Sets how many copies the cluster keeps of a stream it creates.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }
    /// Sets how long a stream it creates keeps a message.
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }
    /// Says the replica was just bootstrapped (see the field).
    pub fn bootstrapped(mut self, bootstrapped: bool) -> Self {
        self.bootstrapped = bootstrapped;
        self
    }
    /// Bootstraps past the retention from this point-to-point remote (see
    /// the field).
    pub fn bootstrap_from(mut self, remote: impl Into<String>) -> Self {
        self.bootstrap_from = Some(remote.into());
        self
    }
    /// Sets how often audit records are published (`None`: never).
    pub fn audit_interval(mut self, interval: Option<Duration>) -> Self {
        self.audit_interval = interval;
        self
    }
    /// Names the durable consumer.
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    fn validate(&self) -> Result<()> {
        let invalid = |option, reason| Err(Error::InvalidOptions { option, reason });
        if self.urls.is_empty() {
            return invalid("urls", "at least one server");
        }
        if !subject::is_name(&self.stream) {
            return invalid("stream", "1 to 64 of A-Z a-z 0-9 - _");
        }
        if !subject::is_token(&self.subject_prefix) {
            return invalid("subject_prefix", "one subject token (no . * > or space)");
        }
        if self
            .consumer
            .as_deref()
            .is_some_and(|c| !subject::is_name(c))
        {
            return invalid("consumer", "1 to 64 of A-Z a-z 0-9 - _");
        }
        if self.partitions.as_ref().is_some_and(BTreeSet::is_empty) {
            return invalid("partitions", "at least one partition (None loads them all)");
        }
        if self.partitions.is_some() && self.consumer.as_deref().is_some_and(|c| c.len() > 61) {
            return invalid(
                "consumer",
                "at most 61 characters with partitions (`-pp` is added)",
            );
        }
        if self.replicas == 0 || self.replicas > 5 {
            return invalid("replicas", "1 to 5");
        }
        if self
            .bootstrap_from
            .as_deref()
            .is_some_and(|r| r.starts_with(super::RELAY_REMOTE_PREFIX))
        {
            return invalid("bootstrap_from", "a point-to-point remote, not a relay's");
        }
        if self.audit_interval.is_some_and(|i| i.is_zero()) {
            return invalid("audit_interval", "more than zero");
        }
        if self.batch == 0 || self.batch > crate::limits::MAX_LOAD_OPERATIONS {
            return invalid("batch", "1 to MAX_LOAD_OPERATIONS");
        }
        Ok(())
    }

    /// The sync manager's remote for this stream.
    pub fn remote_name(&self) -> String {
        format!("{}{}", super::RELAY_REMOTE_PREFIX, self.stream)
    }
}

/// The NATS transport: owns the runtime its connections run on. Dropping
/// it stops its relays' connections.
pub struct NatsTransport {
    runtime: tokio::runtime::Runtime,
}

impl NatsTransport {
    /// A transport with a small runtime of its own.
    pub fn new() -> Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("reactordb-nats")
            .enable_all()
            .build()
            .map_err(|e| transport_error("starting its runtime", e))?;
        Ok(Arc::new(Self { runtime }))
    }

    /// Connects `manager` to the stream: creates the stream and the
    /// remote [`NatsOptions::remote_name`] when missing, then publishes and
    /// consumes until the relay is stopped. A reactor whose inbox cursor
    /// is older than the stream's first message (it was away longer than
    /// the retention) does not consume: with
    /// [`NatsOptions::bootstrap_from`] it waits until that peer has given
    /// it the history the stream dropped; without, the relay ends with
    /// [`Error::SyncBehindRetention`], and the reactor must bootstrap from
    /// a peer first, then relay again with [`NatsOptions::bootstrapped`].
    pub fn relay(
        self: &Arc<Self>,
        manager: Arc<SyncManager>,
        options: NatsOptions,
    ) -> Result<NatsRelay> {
        options.validate()?;
        relay::start(self.clone(), manager, options)
    }

    /// Compares `manager`'s replica with the audit records every other
    /// node's relay published on this stream's bucket: per peer and
    /// stream, whether we are in sync, behind, ahead, each behind the
    /// other, or diverged ([`StreamRecord::standing`](crate::StreamRecord::standing)).
    /// A stream only we hold is not listed (a peer's filter may leave it
    /// out); one only a peer holds is, as behind. Records are as fresh as
    /// the peers' pauses between rounds ([`NatsOptions::audit_interval`],
    /// or longer while their rounds read long).
    pub fn audit(&self, manager: &SyncManager, options: &NatsOptions) -> Result<AuditReport> {
        options.validate()?;
        audit::compare(self, manager, options)
    }
}
