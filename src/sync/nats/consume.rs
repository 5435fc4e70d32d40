//! The consuming loop: a durable pull consumer from the message after the
//! inbox cursor; each batch is loaded through the inbox (its checks, dead
//! letters and origins), then the cursor is written, then the batch acked.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use tokio_stream::StreamExt;

use super::bootstrap;
use super::publish::decode_signature;
use super::relay::Relay;
use super::{parse_node, subject, transport_error, ORIGIN, PUBLISHER, SIGNATURE};
use crate::error::{Error, Result};
use crate::store::SyncBatch;
use crate::sync::inbox;
use crate::sync::wire::{SyncedOperation, WireOperation, UNKNOWN_ORIGIN};

/// How long a fetch waits for messages when the stream has none.
const FETCH_WAIT: Duration = Duration::from_millis(100);

/// Loads the stream from the message after the inbox cursor: fetches a
/// batch, loads what others published, then writes the cursor and
/// acknowledges the batch.
pub(super) fn run(relay: &Relay) -> Result<()> {
    let shared = &relay.shared;
    // Behind the stream's first message: bootstrapped (by the application,
    // or from `bootstrap_from`'s peer), the cursor moves to what the
    // bootstrap covers, and the stream is read again (its first message
    // may have moved on meanwhile); not, `open_consumer` says so.
    let (generation, info, mut cursor) = loop {
        let (generation, info) = relay.open_stream()?;
        let (_, cursor) = shared.state.cursors(&relay.remote)?;
        let first = info.state.first_sequence;
        if first <= cursor + 1 {
            break (generation, info, cursor);
        }
        let covered = if relay.bootstrap_pending.swap(false, Ordering::AcqRel) {
            Some(first - 1)
        } else if let Some(peer) = &relay.options.bootstrap_from {
            match bootstrap::wait(relay, peer, first)? {
                Some(covered) => Some(covered),
                None => return Ok(()), // the relay is ending
            }
        } else {
            None
        };
        let Some(covered) = covered else {
            break (generation, info, cursor);
        };
        // What the stream dropped is here already: read on after it, in
        // the stream the wait was for.
        relay.check_generation(generation)?;
        shared.update(&relay.remote, |l| l.last_error = None);
        let mut writes = SyncBatch::default();
        shared
            .state
            .put_inbox_cursor(&mut writes, &relay.remote, covered.max(cursor), None, 0);
        shared.state.write(writes)?;
    };
    shared.update(&relay.remote, |l| l.inbox = cursor);
    let consumer = relay.block_on(open_consumer(relay, cursor, &info))?;
    while !relay.ending() {
        relay.check_generation(generation)?;
        let batch = relay.block_on(async {
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
            // Ours (we published it, or made it and another relayed it)
            // and still here: nothing to load. A forwarded operation we
            // published is not loaded back, so a remote's `trusted_keys`
            // never refuse what we ourselves relayed.
            let origin = header(ORIGIN).as_deref().and_then(parse_node);
            let publisher = header(PUBLISHER).as_deref().and_then(parse_node);
            let me = Some(relay.shared.node.node);
            if (origin == me || publisher == me) && held(relay, &message.payload)? {
                continue;
            }
            operations.push(WireOperation {
                ordinal: *seq,
                bytes: message.payload.to_vec(),
                origin: origin.unwrap_or(UNKNOWN_ORIGIN),
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
        let _ = relay.block_on(last.ack());
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

/// Whether we hold the operation in `payload` (a message with our origin
/// is skipped only then: a database restored from a backup, or another
/// copied from ours, carries our node id without our later operations).
fn held(relay: &Relay, payload: &[u8]) -> Result<bool> {
    let Ok(op) = SyncedOperation::decode(payload) else {
        return Ok(false); // the inbox makes it a dead letter
    };
    Ok(!relay.shared.reactor.store().locate(&op.id)?.is_empty())
}

/// The durable consumer, starting after `cursor`. Our cursor is the truth:
/// a consumer left from before (its position the server's) is replaced.
/// When the stream no longer holds the message after the cursor (older
/// than its retention, or deleted), history we never loaded is gone:
/// [`Error::SyncBehindRetention`], and the replica must bootstrap.
async fn open_consumer(
    relay: &Relay,
    cursor: u64,
    info: &stream::Info,
) -> Result<jetstream::consumer::Consumer<pull::Config>> {
    let name = relay
        .options
        .consumer
        .clone()
        .unwrap_or_else(|| subject::consumer_of(&relay.shared.node.name, &relay.node_hex));
    let stream = relay
        .js
        .get_stream(&relay.options.stream)
        .await
        .map_err(|e| transport_error("opening the stream", e))?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    if last > cursor {
        let gone = first > cursor + 1
            || match stream.get_raw_message(cursor + 1).await {
                Ok(_) => false,
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                    true
                }
                Err(e) => return Err(transport_error("reading the stream", e)),
            };
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
