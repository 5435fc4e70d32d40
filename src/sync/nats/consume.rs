//! The consuming loop: a durable pull consumer from the message after the
//! inbox cursor; each batch is loaded through the inbox (its checks, dead
//! letters and origins), then the cursor is written, then the batch acked.
//! Also what the partitions' loop (`partitions`) shares with it: resuming
//! past the retention, fetching, what a message loads, loading a batch,
//! opening a consumer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use tokio_stream::StreamExt;

use super::publish::decode_signature;
use super::relay::Relay;
use super::{bootstrap, partitions};
use super::{parse_node, subject, transport_error, ORIGIN, PUBLISHER, SIGNATURE};
use crate::error::{Error, Result};
use crate::store::SyncBatch;
use crate::sync::inbox;
use crate::sync::wire::{SyncedOperation, WireOperation, UNKNOWN_ORIGIN};

/// How long a fetch waits for messages when the stream has none.
const FETCH_WAIT: Duration = Duration::from_millis(100);

/// Loads the stream from the message after the inbox cursor: fetches a
/// batch, loads what others published, then writes the cursor and
/// acknowledges the batch. A relay serving some partitions only loads
/// them through a consumer each (`partitions`).
pub(super) fn run(relay: &Relay) -> Result<()> {
    match relay.options.partitions.clone() {
        Some(served) => partitions::run(relay, &served),
        None => run_whole(relay),
    }
}

fn run_whole(relay: &Relay) -> Result<()> {
    let shared = &relay.shared;
    let inbox_cursor = || Ok(shared.state.cursors(&relay.remote)?.1);
    let cover = |writes: &mut SyncBatch, covered: u64| {
        let cursor = inbox_cursor()?;
        shared
            .state
            .put_inbox_cursor(writes, &relay.remote, covered.max(cursor), None, 0);
        Ok(())
    };
    let Some((generation, info)) = resume(relay, inbox_cursor, cover)? else {
        return Ok(()); // the relay is ending
    };
    let mut cursor = inbox_cursor()?;
    shared.update(&relay.remote, |l| l.inbox = cursor);
    let name = consumer_name(relay);
    let consumer = relay.block_on(open_consumer(
        relay,
        &name,
        subject::all(&relay.options.subject_prefix),
        cursor,
        &info,
    ))?;
    relay.block_on(retire_others(relay, &[name]));
    while !relay.ending() {
        relay.check_generation(generation)?;
        let batch = relay.block_on(fetch(relay, &consumer))?;
        // The stream holds only our subjects and the consumer takes all of
        // them, so the sequences after the cursor are contiguous. A message
        // lost on its way (a node failing over) leaves a gap: what follows
        // it waits, since acknowledging past the gap (`AckPolicy::All`)
        // would drop the lost one for good.
        let mut sequenced = Vec::with_capacity(batch.len());
        for message in batch {
            sequenced.push((sequence_of(&message)?.0, message));
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
            operations.extend(wire_operation(relay, *seq, message)?);
        }
        if let Some(last) = last {
            load(relay, operations, last, |writes| {
                shared
                    .state
                    .put_inbox_cursor(writes, &relay.remote, last_seq, None, 0);
            })?;
            cursor = last_seq;
            shared.update(&relay.remote, |l| l.inbox = cursor);
        }
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

/// Waits, when the stream no longer holds the message after the lowest
/// inbox cursor (`lowest`), until a bootstrap covers what it dropped, and
/// moves the cursors there (`cover`, given what the bootstrap covers);
/// returns the stream (`None`: the relay is ending). Bootstrapped by the
/// application, or from `bootstrap_from`'s peer; neither, the consumer's
/// opening says so ([`Error::SyncBehindRetention`]).
pub(super) fn resume(
    relay: &Relay,
    lowest: impl Fn() -> Result<u64>,
    cover: impl Fn(&mut SyncBatch, u64) -> Result<()>,
) -> Result<Option<(u64, stream::Info)>> {
    let shared = &relay.shared;
    loop {
        let (generation, info) = relay.open_stream()?;
        let first = info.state.first_sequence;
        if first <= lowest()? + 1 {
            return Ok(Some((generation, info)));
        }
        let covered = if relay.bootstrap_pending.swap(false, Ordering::AcqRel) {
            first - 1
        } else if let Some(peer) = &relay.options.bootstrap_from {
            match bootstrap::wait(relay, peer, first)? {
                Some(covered) => covered,
                None => return Ok(None),
            }
        } else {
            return Ok(Some((generation, info)));
        };
        // What the stream dropped is here already: read on after it, in
        // the stream the wait was for (its first message may have moved on
        // meanwhile: the loop reads it again).
        relay.check_generation(generation)?;
        shared.update(&relay.remote, |l| l.last_error = None);
        let mut writes = SyncBatch::default();
        cover(&mut writes, covered)?;
        shared.state.write(writes)?;
    }
}

/// One fetch of up to a batch of messages (none if the consumer has none
/// within [`FETCH_WAIT`]).
pub(super) async fn fetch(
    relay: &Relay,
    consumer: &jetstream::consumer::Consumer<pull::Config>,
) -> Result<Vec<jetstream::Message>> {
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
    Ok(batch)
}

/// A message's stream sequence and its delivery's sequence in its
/// consumer.
pub(super) fn sequence_of(message: &jetstream::Message) -> Result<(u64, u64)> {
    let info = message
        .info()
        .map_err(|e| transport_error("reading a message's sequence", e))?;
    Ok((info.stream_sequence, info.consumer_sequence))
}

/// What to load of the message at stream sequence `seq`: nothing if it is
/// ours (we published it, or made it and another relayed it) and still
/// here. A forwarded operation we published is not loaded back, so a
/// remote's `trusted_keys` never refuse what we ourselves relayed.
pub(super) fn wire_operation(
    relay: &Relay,
    seq: u64,
    message: &jetstream::Message,
) -> Result<Option<WireOperation>> {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let origin = header(ORIGIN).as_deref().and_then(parse_node);
    let publisher = header(PUBLISHER).as_deref().and_then(parse_node);
    let me = Some(relay.shared.node.node);
    if (origin == me || publisher == me) && held(relay, &message.payload)? {
        return Ok(None);
    }
    Ok(Some(WireOperation {
        ordinal: seq,
        bytes: message.payload.to_vec(),
        origin: origin.unwrap_or(UNKNOWN_ORIGIN),
        signature: header(SIGNATURE).as_deref().and_then(decode_signature),
    }))
}

/// Loads `operations` through the inbox, then writes the cursor
/// (`put_cursor`) with the dead letters in one sync write, then
/// acknowledges the batch up to `last` (`AckPolicy::All`).
pub(super) fn load(
    relay: &Relay,
    operations: Vec<WireOperation>,
    last: &jetstream::Message,
    put_cursor: impl FnOnce(&mut SyncBatch),
) -> Result<()> {
    let shared = &relay.shared;
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
    put_cursor(&mut writes);
    shared.state.write(writes)?;
    let letters = loaded.dead_letters.len() as u64;
    shared.update(&relay.remote, |l| {
        l.received += loaded.operations;
        l.dead_letters += letters;
    });
    // The cursor is written: acknowledging lets the server forget the
    // batch for this consumer (a lost ack only brings it again, and it is
    // skipped by its sequence).
    let _ = relay.block_on(last.ack());
    Ok(())
}

/// Deletes this relay's consumers other than `keep`: those left by a run
/// that loaded the whole stream, or other partitions (named `{name}` and
/// `{name}-{pp}`). Best effort: one left over only costs the server its
/// state.
pub(super) async fn retire_others(relay: &Relay, keep: &[String]) {
    let base = consumer_name(relay);
    let ours = |name: &str| {
        name == base
            || name
                .strip_prefix(base.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|pp| pp.len() == 2 && pp.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let Ok(stream) = relay.js.get_stream(&relay.options.stream).await else {
        return;
    };
    let mut names = stream.consumer_names();
    let mut retired = Vec::new();
    while let Some(Ok(name)) = names.next().await {
        if ours(&name) && !keep.contains(&name) {
            retired.push(name);
        }
    }
    for name in retired {
        if let Err(e) = stream.delete_consumer(&name).await {
            tracing::warn!(consumer = %name, error = %e, "NATS relay: a consumer of ours left over");
        }
    }
}

/// The durable consumer's name (the options', or this node's).
pub(super) fn consumer_name(relay: &Relay) -> String {
    relay
        .options
        .consumer
        .clone()
        .unwrap_or_else(|| subject::consumer_of(&relay.shared.node.name, &relay.node_hex))
}

/// Whether we hold the operation in `payload` (a message with our origin
/// is skipped only then: a database restored from a backup, or another
/// copied from ours, carries our node id without our later operations).
fn held(relay: &Relay, payload: &[u8]) -> Result<bool> {
    let Ok(op) = SyncedOperation::decode(payload) else {
        return Ok(false); // the inbox makes it a dead letter
    };
    Ok(!relay.shared.reactor.store().locate(&op.id)?.is_empty())
}

/// The durable consumer `name` of the subjects `filter`, starting after
/// `cursor`. Our cursor is the truth: a consumer left from before (its
/// position the server's) is replaced. When the stream no longer holds
/// the message after the cursor (older than its retention, or deleted),
/// history we never loaded is gone: [`Error::SyncBehindRetention`], and
/// the replica must bootstrap. (A consumer of one partition cannot tell a
/// deleted message of another partition from one of its own: it checks
/// only the stream's first message.)
pub(super) async fn open_consumer(
    relay: &Relay,
    name: &str,
    filter: String,
    cursor: u64,
    info: &stream::Info,
) -> Result<jetstream::consumer::Consumer<pull::Config>> {
    let whole = filter == subject::all(&relay.options.subject_prefix);
    let stream = relay
        .js
        .get_stream(&relay.options.stream)
        .await
        .map_err(|e| transport_error("opening the stream", e))?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    if last > cursor {
        let gone = first > cursor + 1
            || (whole
                && match stream.get_raw_message(cursor + 1).await {
                    Ok(_) => false,
                    Err(e)
                        if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound =>
                    {
                        true
                    }
                    Err(e) => return Err(transport_error("reading the stream", e)),
                });
        if gone {
            return Err(Error::SyncBehindRetention {
                remote: relay.remote.clone(),
                cursor,
                first_available: first.max(cursor + 2),
            });
        }
    }
    // A consumer the server cannot find is what we want; any other
    // failure to delete it is retried (creating over it would fail).
    if let Err(e) = stream.delete_consumer(name).await {
        if stream.consumer_info(name).await.is_ok() {
            return Err(transport_error(
                &format!("replacing the consumer {name}"),
                e,
            ));
        }
    }
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.to_owned()),
            filter_subject: filter,
            ack_policy: jetstream::consumer::AckPolicy::All,
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: cursor + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| transport_error(&format!("creating the consumer {name}"), e))
}
