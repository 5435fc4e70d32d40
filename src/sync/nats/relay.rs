//! A relay's life: starting it (one per stream and reactor), the loops
//! it runs (`publish`, `consume`, `audit`), restarting them after transport
//! failures, and the stream they share, checked against the one the
//! cursors count in.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use parking_lot::Mutex;

use super::{
    audit, consume, publish, subject, transport_error, NatsAuth, NatsOptions, NatsTransport,
};
use crate::error::{Error, Result};
use crate::model::Ordinal;
use crate::sync::filter::RemoteOptions;
use crate::sync::{state, Shared, SyncManager};

/// One of the relay's loops: runs until the relay ends or fails.
type Loop = fn(&Relay) -> Result<()>;

/// The relay's loops, a thread each: publishing our operations, loading
/// the others', publishing audit records.
const LOOPS: [(&str, Loop); 3] = [
    ("reactordb-nats-pub", publish::run),
    ("reactordb-nats-sub", consume::run),
    ("reactordb-nats-audit", audit::run),
];

/// How long the stream remembers a message id (NATS's default).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// A running relay. Dropping it stops it (without reporting how it ended:
/// see [`NatsRelay::stop`]).
pub struct NatsRelay {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<()>>>,
}

impl NatsRelay {
    /// Whether a loop has ended (an error, or a reactor behind retention).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().any(JoinHandle::is_finished)
    }

    /// Stops every loop and reports the first error one ended with.
    pub fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        let mut first = Ok(());
        for thread in self.threads.drain(..) {
            let ended = thread.join().unwrap_or_else(|_| {
                Err(Error::Transport {
                    reason: "NATS: a relay thread panicked".into(),
                })
            });
            if first.is_ok() {
                first = ended;
            }
        }
        first
    }
}

impl Drop for NatsRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Relay {
    /// Makes sure the stream exists with the relay's subjects, and that the
    /// cursors count in it: a stream other than the one they were written
    /// for (deleted and created again, another cluster), or one that holds
    /// fewer messages than the inbox cursor, resets both to 0 (loading is
    /// idempotent, and our history is published again). Returns the
    /// generation the caller's cursors belong to.
    pub(super) fn open_stream(&self) -> Result<(u64, stream::Info)> {
        let info = self.block_on(ensure_stream(&self.js, &self.options))?;
        if info.config.subjects != [subject::all(&self.options.subject_prefix)] {
            return Err(Error::InvalidOptions {
                option: "stream",
                reason: "it exists with subjects other than the relay's `{prefix}.ops.>`",
            });
        }
        let _one = self.checking.lock();
        // RFC 3339 of the creation time (the `time` crate's `Debug`): a
        // stream deleted and created again under its name is another.
        let log = format!("{}@{:?}", info.config.name, info.created);
        let state = &self.shared.state;
        let (outbox, inbox) = state.cursors(&self.remote)?;
        // A relay of some partitions keeps a cursor each.
        let inbox = state
            .partition_cursors(&self.remote)?
            .into_values()
            .fold(inbox, u64::max);
        let known = state.relay_log(&self.remote)?;
        let other_stream = known.as_deref().is_some_and(|k| k != log);
        let unrecorded = known.is_none() && (outbox, inbox) != (0, 0);
        if other_stream || unrecorded || inbox > info.state.last_sequence {
            tracing::warn!(remote = %self.remote, %log, "NATS relay: another stream, cursors reset");
            self.generation.fetch_add(1, Ordering::AcqRel);
            state.reset_relay_log(&self.remote, &log)?;
            self.shared.update(&self.remote, |l| {
                l.acked = 0;
                l.inbox = 0;
            });
        } else if known.is_none() {
            state.reset_relay_log(&self.remote, &log)?; // first use: both cursors are 0
        }
        Ok((self.generation.load(Ordering::Acquire), info))
    }

    /// Fails (to be restarted) when the cursors were reset since
    /// `generation`.
    pub(super) fn check_generation(&self, generation: u64) -> Result<()> {
        if self.generation.load(Ordering::Acquire) == generation {
            Ok(())
        } else {
            Err(transport_error(
                "the stream",
                "the cursors were reset to another stream; starting again from them",
            ))
        }
    }

    pub(super) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.transport.runtime.block_on(future)
    }

    /// Whether the loops should end: the relay was stopped, the manager is
    /// closing, or the remote was removed.
    pub(super) fn ending(&self) -> bool {
        self.stop.load(Ordering::Acquire)
            || self.shared.stopping.load(Ordering::Acquire)
            || !self.shared.live.lock().contains_key(&self.remote)
    }
}

/// What the loops share.
pub(super) struct Relay {
    pub(super) transport: Arc<NatsTransport>,
    pub(super) shared: Arc<Shared>,
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) options: NatsOptions,
    pub(super) remote: String,
    /// Our node id in hex (in the consumer's name).
    pub(super) node_hex: String,
    stop: Arc<AtomicBool>,
    /// Bumped whenever the cursors are reset to another stream: a loop
    /// that started before ends and starts again from them.
    generation: AtomicU64,
    /// Held while a loop checks the stream against the cursors.
    checking: Mutex<()>,
    /// `NatsOptions::bootstrapped`, until the consumer has used it once.
    pub(super) bootstrap_pending: AtomicBool,
    /// The last ordinal whose streams' audit records are published, and
    /// the options generation they were published under (`audit::run`).
    pub(super) audit_published_to: Mutex<Option<(Ordinal, u64)>>,
}

pub(super) fn start(
    transport: Arc<NatsTransport>,
    manager: Arc<SyncManager>,
    options: NatsOptions,
) -> Result<NatsRelay> {
    let remote = options.remote_name();
    if manager.shared.state.remote(&remote)?.is_none() {
        manager.add_remote(&remote, RemoteOptions::new())?;
    }
    // One relay per stream and reactor: two would move the same cursors.
    {
        let mut bound = manager.shared.bound.lock();
        let count = bound.entry(remote.clone()).or_default();
        if *count > 0 {
            return Err(Error::SyncRefused {
                reason: format!("a relay for {remote} already runs on this reactor"),
            });
        }
        // Held by the relay's threads from here; `remove_remote` waits for
        // all of them to end.
        *count += LOOPS.len();
    }
    let unbind = |shared: &Shared, remote: &str, threads: usize| {
        if let Some(count) = shared.bound.lock().get_mut(remote) {
            *count = count.saturating_sub(threads);
        }
        shared.changed.notify_all();
    };
    let client = match transport.runtime.block_on(connect(&options)) {
        Ok(client) => client,
        Err(e) => {
            unbind(&manager.shared, &remote, LOOPS.len());
            return Err(e);
        }
    };
    let options_bootstrapped = options.bootstrapped;
    let js = jetstream::new(client.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let relay = Arc::new(Relay {
        transport,
        shared: manager.shared.clone(),
        client,
        js,
        node_hex: state::hex(&manager.shared.node.node),
        options,
        remote,
        stop: stop.clone(),
        generation: AtomicU64::new(0),
        checking: Mutex::new(()),
        bootstrap_pending: AtomicBool::new(options_bootstrapped),
        audit_published_to: Mutex::new(None),
    });
    relay.shared.update(&relay.remote, |l| l.connected = true);
    let mut threads = Vec::new();
    for (name, run) in LOOPS {
        let running = relay.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let relay = running;
                let ended = retrying(&relay, run);
                if let Err(e) = &ended {
                    relay
                        .shared
                        .update(&relay.remote, |l| l.last_error = Some(e.to_string()));
                }
                relay.shared.update(&relay.remote, |l| l.connected = false);
                if let Some(count) = relay.shared.bound.lock().get_mut(&relay.remote) {
                    *count = count.saturating_sub(1);
                }
                relay.shared.changed.notify_all();
                ended
            });
        match thread {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                relay.stop.store(true, Ordering::Release);
                unbind(&relay.shared, &relay.remote, LOOPS.len() - threads.len());
                for thread in threads {
                    let _ = thread.join();
                }
                return Err(transport_error("spawning a relay thread", e));
            }
        }
    }
    Ok(NatsRelay { stop, threads })
}

/// Runs a loop again from its cursors after a transport failure (a node
/// down, a leader being elected, a connection lost), with backoff from
/// 100 ms doubling to 5 s; anything else ends the relay.
fn retrying(relay: &Relay, run: Loop) -> Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = std::time::Instant::now();
        match run(relay) {
            // A load that outlived its wait is tried again too: the
            // cursors did not move past it.
            Err(e @ (Error::Transport { .. } | Error::WaitTimeout { .. })) if !relay.ending() => {
                let reason = e.to_string();
                tracing::warn!(remote = %relay.remote, %reason, "NATS relay retrying");
                relay
                    .shared
                    .update(&relay.remote, |l| l.last_error = Some(reason));
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(100);
                }
                let mut slept = Duration::ZERO;
                while slept < backoff && !relay.ending() {
                    std::thread::sleep(Duration::from_millis(20));
                    slept += Duration::from_millis(20);
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            // Stopped mid-call: what the call was doing is abandoned, not
            // failed (the cursors say where the next relay starts).
            Err(Error::Transport { .. } | Error::WaitTimeout { .. }) => return Ok(()),
            ended => return ended,
        }
    }
}

pub(super) async fn connect(options: &NatsOptions) -> Result<async_nats::Client> {
    let mut connect = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None);
    connect = match &options.auth {
        NatsAuth::None => connect,
        NatsAuth::Token(token) => connect.token(token.clone()),
        NatsAuth::UserPassword { user, password } => {
            connect.user_and_password(user.clone(), password.clone())
        }
    };
    if let Some(ca) = &options.ca_file {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    }
    let urls: Vec<async_nats::ServerAddr> = options
        .urls
        .iter()
        .map(|url| url.parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| transport_error("a server URL", e))?;
    // The first connection tries each server once (a refused credential
    // or no server up is reported, not retried for ever); once connected,
    // the client reconnects by itself.
    tokio::time::timeout(Duration::from_secs(20), async {
        let client = connect
            .connect(urls.as_slice())
            .await
            .map_err(|e| match e.kind() {
                async_nats::ConnectErrorKind::AuthorizationViolation => Error::SyncRefused {
                    reason: format!("NATS refused our credentials: {e}"),
                },
                _ => transport_error("connecting", e),
            })?;
        client
            .flush()
            .await
            .map_err(|e| transport_error("connecting", e))?;
        Ok(client)
    })
    .await
    .map_err(|_| transport_error("connecting", "no server answered within 20 s"))?
}

async fn ensure_stream(js: &jetstream::Context, options: &NatsOptions) -> Result<stream::Info> {
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: options.stream.clone(),
            subjects: vec![subject::all(&options.subject_prefix)],
            num_replicas: options.replicas,
            max_age: options.max_age.unwrap_or_default(),
            // Republished after a crash within this window: stored once. (It
            // may not be longer than the retention.)
            duplicate_window: options
                .max_age
                .map_or(DUPLICATE_WINDOW, |age| age.min(DUPLICATE_WINDOW)),
            ..Default::default()
        })
        .await
        .map_err(|e| match e.kind() {
            // Another stream takes these subjects: a configuration error,
            // not one a retry mends.
            jetstream::context::CreateStreamErrorKind::JetStream(js)
                if js.error_code() == jetstream::ErrorCode::STREAM_SUBJECT_OVERLAP =>
            {
                Error::InvalidOptions {
                    option: "subject_prefix",
                    reason: "another stream already takes `{prefix}.ops.>`",
                }
            }
            _ => transport_error(&format!("creating the stream {}", options.stream), e),
        })?;
    stream
        .info()
        .await
        .cloned()
        .map_err(|e| transport_error("reading the stream", e))
}
