//! The relay's two loops, each on a thread of its own: publishing our feed
//! to the stream, and loading the stream through a durable consumer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use base64::Engine;
use bytes::Bytes;
use tokio_stream::StreamExt;

use super::{subject, transport_error, NatsAuth, NatsOptions, NatsTransport};
use crate::bus::FeedBuffer;
use crate::error::{Error, Result};
use crate::store::SyncBatch;
use crate::sync::filter::RemoteOptions;
use crate::sync::wire::{Signature, SyncedOperation, WireOperation};
use crate::sync::{inbox, outbox, state, Shared, SyncManager};

/// The header naming the node that published a message: a relay skips
/// its own.
const ORIGIN: &str = "Reactordb-Origin";
/// The header carrying the originator's signature (base64 of key and
/// signature).
const SIGNATURE: &str = "Reactordb-Signature";
/// Operations the publisher keeps from the bus past a gap.
const ANNOUNCED: usize = 4_096;
/// How long the stream remembers a message id (NATS's default).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a fetch waits for messages when the stream has none.
const FETCH_WAIT: Duration = Duration::from_millis(100);

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

    /// Stops both loops and reports the first error either ended with.
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
    /// Whether the loops should end: the relay was stopped, the manager is
    /// closing, or the remote was removed.
    fn ending(&self) -> bool {
        self.stop.load(Ordering::Acquire)
            || self.shared.stopping.load(Ordering::Acquire)
            || !self.shared.live.lock().contains_key(&self.remote)
    }
}

/// What both loops share.
struct Relay {
    transport: Arc<NatsTransport>,
    shared: Arc<Shared>,
    js: jetstream::Context,
    options: NatsOptions,
    remote: String,
    origin: String,
    stop: Arc<AtomicBool>,
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
        // Held by the relay's two threads from here; `remove_remote`
        // waits for both to end.
        *count += 2;
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
            unbind(&manager.shared, &remote, 2);
            return Err(e);
        }
    };
    let js = jetstream::new(client);
    let stop = Arc::new(AtomicBool::new(false));
    let relay = Arc::new(Relay {
        transport,
        shared: manager.shared.clone(),
        js,
        origin: state::hex(&manager.shared.node.node),
        options,
        remote,
        stop: stop.clone(),
    });
    let mut threads = Vec::new();
    for (name, run) in [
        ("reactordb-nats-pub", publish as fn(&Relay) -> Result<()>),
        ("reactordb-nats-sub", consume),
    ] {
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
                unbind(&relay.shared, &relay.remote, 2 - threads.len());
                for thread in threads {
                    let _ = thread.join();
                }
                return Err(transport_error("spawning a relay thread", e));
            }
        }
    }
    relay.shared.update(&relay.remote, |l| l.connected = true);
    Ok(NatsRelay { stop, threads })
}

/// Runs a loop again from its cursors after a transport failure (a node
/// down, a leader being elected, a connection lost), with backoff from
/// 100 ms doubling to 5 s; anything else ends the relay.
fn retrying(relay: &Relay, run: fn(&Relay) -> Result<()>) -> Result<()> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = std::time::Instant::now();
        match run(relay) {
            Err(Error::Transport { reason }) if !relay.ending() => {
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
            Err(Error::Transport { .. }) => return Ok(()),
            ended => return ended,
        }
    }
}

async fn connect(options: &NatsOptions) -> Result<async_nats::Client> {
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

async fn ensure_stream(js: &jetstream::Context, options: &NatsOptions) -> Result<()> {
    js.get_or_create_stream(stream::Config {
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
    .map_err(|e| transport_error(&format!("creating the stream {}", options.stream), e))?;
    Ok(())
}

/// Publishes every envelope of our feed the remote's filter passes, and
/// moves the outbox cursor past it once the stream acknowledged all of it.
fn publish(relay: &Relay) -> Result<()> {
    // Each (re)start makes sure the stream exists: the cluster may have
    // been electing a leader when the relay started.
    relay
        .transport
        .runtime
        .block_on(ensure_stream(&relay.js, &relay.options))?;
    let shared = &relay.shared;
    let (mut after, _) = shared.state.cursors(&relay.remote)?;
    shared.update(&relay.remote, |l| l.acked = after);
    let bus = shared.reactor.bus().subscribe(ANNOUNCED);
    let mut feed = FeedBuffer::new(ANNOUNCED);
    let mut generation = u64::MAX;
    let mut filter = Default::default();
    while !relay.ending() {
        let now = shared.options_generation.load(Ordering::Acquire);
        if now != generation {
            generation = now;
            filter = shared
                .state
                .remote(&relay.remote)?
                .map(|r| r.options.filter)
                .unwrap_or_default();
        }
        while let Some(delivery) = bus.try_recv_delivery() {
            feed.offer(&delivery, after);
        }
        let Some(out) = outbox::next_envelope(shared, &relay.remote, &filter, after, &mut feed)?
        else {
            if let Some(delivery) = bus.recv_delivery(Duration::from_millis(20)) {
                feed.offer(&delivery, after);
            }
            continue;
        };
        let count = out.operations.len() as u64;
        relay
            .transport
            .runtime
            .block_on(publish_all(relay, out.operations))?;
        shared.state.set_outbox_cursor(&relay.remote, out.last)?;
        after = out.last;
        shared.update(&relay.remote, |l| {
            l.acked = after;
            l.sent += count;
        });
    }
    Ok(())
}

async fn publish_all(relay: &Relay, operations: Vec<WireOperation>) -> Result<()> {
    let failed = |e: &dyn std::fmt::Display| transport_error("publishing", e);
    let mut acks = Vec::with_capacity(operations.len());
    for op in operations {
        let synced = SyncedOperation::decode(&op.bytes).map_err(|e| failed(&e))?;
        let mut headers = async_nats::HeaderMap::new();
        // The message id is the operation's id and content: a republish
        // is stored once, and an operation under another content (which
        // the receivers must see, to refuse it) is not taken for one.
        let msg_id = format!(
            "{}-{}",
            state::hex(synced.id.as_bytes()),
            state::hex(synced.content_hash.as_bytes())
        );
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        headers.insert(ORIGIN, relay.origin.as_str());
        if let Some(signature) = &op.signature {
            headers.insert(SIGNATURE, encode_signature(signature).as_str());
        }
        let subject = subject::of_document(&relay.options.subject_prefix, &synced.document_id);
        let ack = relay
            .js
            .publish_with_headers(subject, headers, Bytes::from(op.bytes))
            .await
            .map_err(|e| failed(&e))?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await.map_err(|e| failed(&e))?;
    }
    Ok(())
}

fn encode_signature(signature: &Signature) -> String {
    let mut bytes = signature.key.to_vec();
    bytes.extend_from_slice(&signature.signature);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_signature(text: &str) -> Option<Signature> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    Some(Signature {
        key: bytes.get(..32)?.try_into().ok()?,
        signature: bytes.get(32..)?.try_into().ok()?,
    })
}

/// Loads the stream from the message after the inbox cursor: fetches a
/// batch, loads what others published (the inbox's checks, dead letters
/// and origins), then writes the cursor and acknowledges the batch.
fn consume(relay: &Relay) -> Result<()> {
    let shared = &relay.shared;
    let runtime = &relay.transport.runtime;
    let (_, mut cursor) = shared.state.cursors(&relay.remote)?;
    shared.update(&relay.remote, |l| l.inbox = cursor);
    runtime.block_on(ensure_stream(&relay.js, &relay.options))?;
    let consumer = runtime.block_on(open_consumer(relay, cursor))?;
    while !relay.ending() {
        let batch = runtime.block_on(async {
            let mut messages = consumer
                .fetch()
                .max_messages(relay.options.batch)
                .expires(FETCH_WAIT)
                .messages()
                .await
                .map_err(|e| transport_error("fetching", e))?;
            let mut batch = Vec::new();
            while let Some(message) = messages.next().await {
                batch.push(message.map_err(|e| transport_error("fetching", e))?);
            }
            Ok::<_, Error>(batch)
        })?;
        // The stream holds only our subjects and the consumer takes all of
        // them, so the sequences after the cursor are contiguous. A message
        // lost on its way (a node failing over) leaves a gap: what follows
        // it waits, since acknowledging past the gap (`AckPolicy::All`)
        // would drop the lost one for good.
        let mut sequenced = Vec::with_capacity(batch.len());
        for message in batch {
            let seq = message
                .info()
                .map_err(|e| transport_error("reading a message's sequence", e))?
                .stream_sequence;
            sequenced.push((seq, message));
        }
        sequenced.sort_by_key(|(seq, _)| *seq);
        sequenced.dedup_by_key(|(seq, _)| *seq);
        let mut operations = Vec::with_capacity(sequenced.len());
        let mut last_seq = cursor;
        let mut last = None;
        let mut gap = false;
        for (seq, message) in &sequenced {
            if *seq <= cursor {
                continue; // loaded before a restart
            }
            if *seq != last_seq + 1 {
                gap = true;
                break;
            }
            last_seq = *seq;
            last = Some(message);
            let header = |name: &str| {
                message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            if header(ORIGIN).as_deref() == Some(relay.origin.as_str()) {
                continue; // ours
            }
            operations.push(WireOperation {
                ordinal: *seq,
                bytes: message.payload.to_vec(),
                signature: header(SIGNATURE).as_deref().and_then(decode_signature),
            });
        }
        let Some(last) = last else {
            if gap {
                return Err(transport_error(
                    "reading the stream",
                    format!("message {} did not come; reading again from it", cursor + 1),
                ));
            }
            continue;
        };
        let options = shared
            .state
            .remote(&relay.remote)?
            .map(|r| r.options)
            .unwrap_or_default();
        let loaded = inbox::load(shared, &relay.remote, &options, operations)?;
        let mut writes = SyncBatch::default();
        shared
            .state
            .put_dead_letters(&mut writes, &relay.remote, &loaded.dead_letters)?;
        shared
            .state
            .put_inbox_cursor(&mut writes, &relay.remote, last_seq, None, 0);
        shared.state.write(writes)?;
        cursor = last_seq;
        let letters = loaded.dead_letters.len() as u64;
        shared.update(&relay.remote, |l| {
            l.inbox = cursor;
            l.received += loaded.operations;
            l.dead_letters += letters;
        });
        // The cursor is written: acknowledging lets the server forget the
        // batch for this consumer (a lost ack only brings it again, and it
        // is skipped by its sequence).
        let _ = runtime.block_on(last.ack());
        if gap {
            // Read again from the message after the cursor (the retry
            // opens a new consumer there).
            return Err(transport_error(
                "reading the stream",
                format!("message {} did not come; reading again from it", cursor + 1),
            ));
        }
    }
    Ok(())
}

/// The durable consumer, starting after `cursor`. Our cursor is the truth:
/// a consumer left from before (its position the server's) is replaced.
/// A cursor older than the stream's first message means history we never
/// loaded is gone: [`Error::SyncBehindRetention`].
async fn open_consumer(
    relay: &Relay,
    cursor: u64,
) -> Result<jetstream::consumer::Consumer<pull::Config>> {
    let name = relay
        .options
        .consumer
        .clone()
        .unwrap_or_else(|| subject::consumer_of(&relay.shared.node.name));
    let mut stream = relay
        .js
        .get_stream(&relay.options.stream)
        .await
        .map_err(|e| transport_error("opening the stream", e))?;
    let info = stream
        .info()
        .await
        .map_err(|e| transport_error("reading the stream", e))?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    if last > cursor && first > cursor + 1 {
        return Err(Error::SyncBehindRetention {
            remote: relay.remote.clone(),
            cursor,
            first_available: first,
        });
    }
    // A consumer the server cannot find is what we want; any other
    // failure to delete it is retried (creating over it would fail).
    if let Err(e) = stream.delete_consumer(&name).await {
        if stream.consumer_info(&name).await.is_ok() {
            return Err(transport_error(
                &format!("replacing the consumer {name}"),
                e,
            ));
        }
    }
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subject::all(&relay.options.subject_prefix),
            ack_policy: jetstream::consumer::AckPolicy::All,
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: cursor + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| transport_error(&format!("creating the consumer {name}"), e))
}
