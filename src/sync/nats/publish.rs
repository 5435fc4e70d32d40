//! The publishing loop: every envelope of our feed the remote's filter
//! passes goes to the stream, and the outbox cursor moves past it once the
//! stream acknowledged all of it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;

use super::relay::Relay;
use super::{subject, transport_error, ORIGIN, PUBLISHER, SIGNATURE};
use crate::bus::FeedBuffer;
use crate::error::Result;
use crate::sync::outbox;
use crate::sync::state;
use crate::sync::wire::{Signature, SyncedOperation, WireOperation};

/// Operations the publisher keeps from the bus past a gap.
const ANNOUNCED: usize = 4_096;

pub(super) fn run(relay: &Relay) -> Result<()> {
    let (generation, _) = relay.open_stream()?;
    let shared = &relay.shared;
    let (mut after, _) = shared.state.cursors(&relay.remote)?;
    let mut epoch = shared.state.outbox_epoch(&relay.remote)?;
    shared.update(&relay.remote, |l| l.acked = after);
    let bus = shared.reactor.bus().subscribe(ANNOUNCED);
    let mut feed = FeedBuffer::new(ANNOUNCED);
    let mut options_seen = u64::MAX;
    let mut filter = Default::default();
    while !relay.ending() {
        relay.check_generation(generation)?;
        let now = shared.options_generation.load(Ordering::Acquire);
        if now != options_seen {
            options_seen = now;
            filter = shared
                .state
                .remote(&relay.remote)?
                .map(|r| r.options.filter)
                .unwrap_or_default();
            // A changed filter starts a new outbox epoch with the cursor
            // at 0: what the old filter held back goes now.
            let current = shared.state.outbox_epoch(&relay.remote)?;
            if current != epoch {
                epoch = current;
                after = shared.state.cursors(&relay.remote)?.0;
                feed = FeedBuffer::new(ANNOUNCED);
                shared.update(&relay.remote, |l| l.acked = after);
            }
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
        let count = relay.block_on(publish_all(relay, out.operations))?;
        shared.state.set_outbox_cursor(&relay.remote, out.last)?;
        after = out.last;
        shared.update(&relay.remote, |l| {
            l.acked = after;
            l.sent += count;
        });
    }
    Ok(())
}

/// Publishes `operations` and waits for every acknowledgement; returns how
/// many went. One larger than the servers take cannot go at all: it is
/// skipped with an error in the remote's status (retrying it would stop
/// everything behind it for good).
async fn publish_all(relay: &Relay, operations: Vec<WireOperation>) -> Result<u64> {
    let failed = |e: &dyn std::fmt::Display| transport_error("publishing", e);
    let max_payload = relay.client.server_info().max_payload;
    let mut acks = Vec::with_capacity(operations.len());
    for op in operations {
        let synced = SyncedOperation::decode(&op.bytes).map_err(|e| failed(&e))?;
        if max_payload > 0 && op.bytes.len() + 1024 > max_payload {
            let reason = format!(
                "operation {} of {} is {} bytes, more than the servers take ({max_payload}): \
                 not published",
                synced.id,
                synced.document_id,
                op.bytes.len()
            );
            tracing::error!(remote = %relay.remote, %reason);
            relay
                .shared
                .update(&relay.remote, |l| l.last_error = Some(reason));
            continue;
        }
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
        headers.insert(ORIGIN, state::hex(&op.origin).as_str());
        headers.insert(PUBLISHER, relay.node_hex.as_str());
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
    let count = acks.len() as u64;
    for ack in acks {
        ack.await.map_err(|e| failed(&e))?;
    }
    Ok(count)
}

fn encode_signature(signature: &Signature) -> String {
    let mut bytes = signature.key.to_vec();
    bytes.extend_from_slice(&signature.signature);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The signature in a message's header (`None` when it does not decode:
/// the inbox then treats the operation as unsigned).
pub(super) fn decode_signature(text: &str) -> Option<Signature> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    Some(Signature {
        key: bytes.get(..32)?.try_into().ok()?,
        signature: bytes.get(32..)?.try_into().ok()?,
    })
}
