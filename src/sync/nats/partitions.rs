//! The consuming loop of a relay that serves some partitions only
//! ([`NatsOptions::partitions`]): one durable pull consumer per partition,
//! on its wildcard subject `{prefix}.ops.{pp}.>` (NATS 2.9 gives a consumer
//! one filter), each with its own cursor in the sync store, so what other
//! partitions carry never reaches this reactor.
//!
//! A partition's stream sequences are not contiguous (the other
//! partitions' messages lie between), so the whole stream's gap check does
//! not apply. Its deliveries are: the server numbers each delivery of a
//! consumer, so a delivery lost on its way (a node failing over) shows as
//! a skipped number, and the next one waits (acknowledging past it would
//! drop it, `AckPolicy::All`) while the consumer is opened again from the
//! partition's cursor. Anything else out of order does the same.
//!
//! An idle partition's cursor still moves, so that the stream's retention
//! passing over messages of other partitions is not taken for history we
//! lost: now and then the stream's leader is asked for the partition's
//! first message after the cursor; none up to the stream's last sequence
//! (read before asking) moves the cursor there.
//!
//! Owns the partitions' consumers and cursors; what a message loads and
//! how a batch is loaded are `consume`'s.
//!
//! [`NatsOptions::partitions`]: super::NatsOptions::partitions

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};

use super::consume;
use super::relay::Relay;
use super::{subject, transport_error};
use crate::error::Result;
use crate::store::SyncBatch;

/// How often an idle partition's cursor is moved up to the stream's end.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// One served partition's consumer and where it is.
struct Partition {
    partition: u8,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    /// The delivery number the consumer's next message must carry (1 for
    /// a consumer just created).
    next_delivery: u64,
    last_idle_check: Instant,
}

/// Loads the served partitions from their cursors until the relay ends.
pub(super) fn run(relay: &Relay, served: &BTreeSet<u8>) -> Result<()> {
    let shared = &relay.shared;
    let cursors_now = || cursors(relay, served);
    let lowest = || Ok(cursors_now()?.values().copied().min().unwrap_or(0));
    let cover = |writes: &mut SyncBatch, covered: u64| {
        for (partition, cursor) in cursors_now()? {
            shared.state.put_partition_cursor(
                writes,
                &relay.remote,
                partition,
                covered.max(cursor),
            );
        }
        Ok(())
    };
    let Some((generation, info)) = consume::resume(relay, lowest, cover)? else {
        return Ok(()); // the relay is ending
    };
    let mut cursors = cursors_now()?;
    show(relay, &cursors);
    let base = consume::consumer_name(relay);
    let prefix = &relay.options.subject_prefix;
    let mut partitions = Vec::with_capacity(cursors.len());
    let mut names = Vec::with_capacity(cursors.len());
    for (&partition, &cursor) in &cursors {
        let name = format!("{base}-{partition:02x}");
        let consumer = relay.block_on(consume::open_consumer(
            relay,
            &name,
            subject::of_partition(prefix, partition),
            cursor,
            &info,
        ))?;
        names.push(name);
        partitions.push(Partition {
            partition,
            consumer,
            next_delivery: 1,
            last_idle_check: Instant::now(),
        });
    }
    relay.block_on(consume::retire_others(relay, &names));
    while !relay.ending() {
        relay.check_generation(generation)?;
        let batches = relay.block_on(futures::future::join_all(
            partitions
                .iter()
                .map(|p| consume::fetch(relay, &p.consumer)),
        ));
        let batches = batches.into_iter().collect::<Result<Vec<_>>>()?;
        if batches.iter().any(|batch| !batch.is_empty()) {
            // Retention drops messages from the stream's front, delivered
            // or not, and a partition's deliveries stay in order when it
            // drops one: read after the fetch, a first message past the
            // message after a cursor means the partition may have lost
            // one. Read again from the cursors (`resume` then bootstraps,
            // or says the replica must).
            let (_, first, _) = relay.block_on(stream_now(relay))?;
            for (partition, batch) in partitions.iter().zip(&batches) {
                let cursor = cursors[&partition.partition];
                if !batch.is_empty() && first > cursor + 1 {
                    return Err(dropped(partition.partition, cursor, first));
                }
            }
        }
        let mut idle = Vec::new();
        for (partition, batch) in partitions.iter_mut().zip(batches) {
            let cursor = cursors[&partition.partition];
            if batch.is_empty() {
                if partition.last_idle_check.elapsed() >= IDLE_CHECK {
                    partition.last_idle_check = Instant::now();
                    idle.push((partition.partition, cursor));
                }
                continue;
            }
            let mut operations = Vec::with_capacity(batch.len());
            let mut last = None;
            let mut last_seq = cursor;
            let mut out_of_order = false;
            for message in &batch {
                let (seq, delivery) = consume::sequence_of(message)?;
                if delivery != partition.next_delivery || (last.is_some() && seq <= last_seq) {
                    out_of_order = true;
                    break;
                }
                partition.next_delivery += 1;
                if seq <= cursor {
                    continue; // loaded before a restart
                }
                operations.extend(consume::wire_operation(relay, seq, message)?);
                last_seq = seq;
                last = Some(message);
            }
            if let Some(last) = last {
                consume::load(relay, operations, last, |writes| {
                    shared.state.put_partition_cursor(
                        writes,
                        &relay.remote,
                        partition.partition,
                        last_seq,
                    );
                })?;
                cursors.insert(partition.partition, last_seq);
                show(relay, &cursors);
            }
            if out_of_order {
                return Err(transport_error(
                    "reading the stream",
                    format!(
                        "a delivery of partition {:02x} did not come in order; reading it again after {last_seq}",
                        partition.partition
                    ),
                ));
            }
        }
        if !idle.is_empty() {
            move_idle(relay, generation, &mut cursors, &idle)?;
            show(relay, &cursors);
        }
    }
    Ok(())
}

/// The served partitions' cursors: each at least the whole stream's, since
/// a relay that loaded everything up to it (before it served some
/// partitions, or between two such runs) has loaded each partition that
/// far.
pub(super) fn cursors(relay: &Relay, served: &BTreeSet<u8>) -> Result<BTreeMap<u8, u64>> {
    let stored = relay.shared.state.partition_cursors(&relay.remote)?;
    let (_, whole) = relay.shared.state.cursors(&relay.remote)?;
    Ok(served
        .iter()
        .map(|p| (*p, stored.get(p).map_or(whole, |&c| c.max(whole))))
        .collect())
}

/// Moves each idle partition's cursor (`idle`: partition and cursor) to
/// the stream's last sequence when the stream holds no message of the
/// partition after the cursor up to there.
fn move_idle(
    relay: &Relay,
    generation: u64,
    cursors: &mut BTreeMap<u8, u64>,
    idle: &[(u8, u64)],
) -> Result<()> {
    let prefix = &relay.options.subject_prefix;
    let moved = relay.block_on(async {
        // The end first: a message of the partition up to it is found
        // below, whatever is published meanwhile.
        let (stream, first, end) = stream_now(relay).await?;
        let mut moved = Vec::new();
        for &(partition, cursor) in idle {
            if first > cursor + 1 || end <= cursor {
                // (An error, or nothing to move: no need to ask.)
                idle_target(partition, cursor, (first, end), None)?;
                continue;
            }
            let filter = subject::of_partition(prefix, partition);
            let next = match stream
                .get_first_raw_message_by_subject(&filter, cursor + 1)
                .await
            {
                Ok(message) => Some(message.sequence),
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                    None
                }
                Err(e) => return Err(transport_error("reading the stream", e)),
            };
            if let Some(target) = idle_target(partition, cursor, (first, end), next)? {
                moved.push((partition, target));
            }
        }
        Ok(moved)
    })?;
    if moved.is_empty() {
        return Ok(());
    }
    // `end` counts in the stream our cursors count in only if they were
    // not reset meanwhile.
    relay.check_generation(generation)?;
    let mut writes = SyncBatch::default();
    for &(partition, end) in &moved {
        relay
            .shared
            .state
            .put_partition_cursor(&mut writes, &relay.remote, partition, end);
    }
    relay.shared.state.write(writes)?;
    cursors.extend(moved);
    Ok(())
}

/// Where an idle partition's cursor moves (`None`: it stays), given the
/// stream's first and last sequences (read first) and the partition's
/// first message after the cursor (`next`, read after them; `None`: there
/// is none). A message after the cursor may be gone undelivered (its
/// delivery lost, then its age past the retention): an error, to read
/// again from the cursors.
fn idle_target(
    partition: u8,
    cursor: u64,
    (first, end): (u64, u64),
    next: Option<u64>,
) -> Result<Option<u64>> {
    if first > cursor + 1 {
        return Err(dropped(partition, cursor, first));
    }
    Ok((end > cursor && next.is_none_or(|seq| seq > end)).then_some(end))
}

/// The stream, and its first and last sequences as its leader has them
/// now.
async fn stream_now(relay: &Relay) -> Result<(jetstream::stream::Stream, u64, u64)> {
    let stream = relay
        .js
        .get_stream(&relay.options.stream)
        .await
        .map_err(|e| transport_error("reading the stream", e))?;
    let state = &stream.cached_info().state;
    let (first, last) = (state.first_sequence, state.last_sequence);
    Ok((stream, first, last))
}

/// A partition whose messages after its cursor the stream may have
/// dropped undelivered: read again from the cursors.
fn dropped(partition: u8, cursor: u64, first: u64) -> crate::error::Error {
    transport_error(
        "reading the stream",
        format!(
            "its first message is {first}, past partition {partition:02x}'s cursor {cursor}: reading again from the cursors"
        ),
    )
}

/// The remote's live inbox: the lowest partition cursor (every served
/// message up to it is loaded).
fn show(relay: &Relay, cursors: &BTreeMap<u8, u64>) {
    let lowest = cursors.values().copied().min().unwrap_or(0);
    relay.shared.update(&relay.remote, |l| l.inbox = lowest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_cursor_moves_to_the_end_only_past_no_message_of_its_partition() {
        // Nothing of the partition after the cursor, or only past the end
        // read before: to the end.
        assert_eq!(idle_target(7, 10, (1, 20), None).ok(), Some(Some(20)));
        assert_eq!(idle_target(7, 10, (1, 20), Some(21)).ok(), Some(Some(20)));
        // A message of the partition waits at or before the end (not yet
        // delivered, or its delivery lost): the cursor stays.
        assert_eq!(idle_target(7, 10, (1, 20), Some(11)).ok(), Some(None));
        assert_eq!(idle_target(7, 10, (1, 20), Some(20)).ok(), Some(None));
        // Already at the end.
        assert_eq!(idle_target(7, 20, (1, 20), None).ok(), Some(None));
        // The stream's first message right after the cursor is fine; one
        // further on may have dropped one of ours.
        assert_eq!(idle_target(7, 10, (11, 20), None).ok(), Some(Some(20)));
        assert!(matches!(
            idle_target(7, 10, (12, 20), None),
            Err(crate::error::Error::Transport { .. })
        ));
    }
}
