//! The audit over JetStream: each relay publishes its replica's record of
//! every stream it relays (`sync::audit`) to a key-value bucket beside the
//! stream, and [`NatsTransport::audit`] compares the local replica with
//! every other node's published records. Owns the bucket's keys and
//! values; computes no record itself.
//!
//! Bucket `{stream}_AUDIT`, one key per node and stream:
//! `{node id hex}.{first 16 bytes of blake3(stream) in hex}`, value the
//! JSON of a [`PublishedRecord`] (readable with the `nats` tool); and one
//! per node, `{node id hex}.relay`, its [`RelayMark`], written after every
//! round: how far the node has loaded the stream, and that it is alive.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio_stream::StreamExt;

use super::relay::Relay;
use super::{partitions, relay, transport_error, NatsOptions, NatsTransport};
use crate::error::Result;
use crate::model::{DocumentType, Ordinal, SyncUnit};
use crate::sync::audit::{self, Standing, StreamRecord};
use crate::sync::filter::RemoteFilter;
use crate::sync::{state, Shared, SyncManager};

/// The version of [`PublishedRecord`] this build writes and reads.
const RECORD_VERSION: u32 = 1;
/// Past this many streams touched since the last round, a round
/// publishes every stream (the set of touched ones stays this small).
const CHANGED: usize = 65_536;
/// A round reads each stream it publishes whole, so the time it spends
/// reading grows with the history: the loop spends at most one part in
/// this many of its time reading, however short the interval
/// (`pause_after`).
const ROUND_SHARE: u32 = 10;

/// One node's record of one stream, as published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PublishedRecord {
    /// Format version (1).
    pub version: u32,
    /// The publishing node's id (hex).
    pub node: String,
    /// The publishing node's name.
    pub name: String,
    /// When it was published (milliseconds since the Unix epoch).
    pub published_utc_ms: u64,
    /// The record.
    pub record: StreamRecord,
}

/// A relay's mark, written at the end of every round of its audit loop:
/// its records then describe a set holding everything the stream had up
/// to `inbox_cursor` (read before the round's records were computed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RelayMark {
    /// Format version (1).
    pub version: u32,
    /// The node's id (hex).
    pub node: String,
    /// The node's name.
    pub name: String,
    /// The stream its cursors count in (its name and creation time).
    pub stream: String,
    /// The last stream sequence it had loaded (a relay of some
    /// partitions: the lowest of its partitions' cursors).
    pub inbox_cursor: u64,
    /// Its relay's filter passes every document and it loads every
    /// partition: its records cover every stream it loaded (else only
    /// those it relays).
    pub relays_everything: bool,
    /// The pause before its next round (milliseconds): its audit
    /// interval, or longer after a round that read long (reading the
    /// database takes at most a tenth of its audit loop's time).
    pub interval_ms: u64,
    /// When it was written (milliseconds since the Unix epoch).
    pub published_utc_ms: u64,
}

impl RelayMark {
    /// Whether the relay that wrote it has not written one for longer than
    /// three of its pauses (`interval_ms`) and 5 seconds: stopped, or cut
    /// off. (By the two machines' clocks: they must agree within those 5
    /// seconds.)
    pub fn is_silent(&self, now_utc_ms: u64) -> bool {
        let allowed = self.interval_ms.saturating_mul(3).saturating_add(5_000);
        now_utc_ms.saturating_sub(self.published_utc_ms) > allowed
    }
}

/// How the local replica stands against one peer's record of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditEntry {
    /// The stream.
    pub unit: SyncUnit,
    /// The peer's node id (hex) and name.
    pub peer: (String, String),
    /// How we stand against the peer.
    pub standing: Standing,
    /// Our operation count and theirs.
    pub operations: (u64, u64),
    /// How old the peer's record is (milliseconds; records are
    /// republished only when their stream changes).
    pub age_ms: u64,
    /// The peer's relay has written no mark for a while (see
    /// [`RelayMark::is_silent`]), or none: its records may be stale.
    pub peer_silent: bool,
}

/// What [`NatsTransport::audit`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditReport {
    /// Every comparison of one of our streams with one peer's record.
    pub entries: Vec<AuditEntry>,
    /// Peers (id, name) whose records were read.
    pub peers: BTreeMap<String, String>,
    /// Keys whose values did not decode (another version, or damage).
    pub unreadable: Vec<String>,
    /// Every other node's relay mark, by node id: how far it has loaded
    /// the stream, and when it last wrote.
    pub marks: BTreeMap<String, RelayMark>,
}

impl AuditReport {
    /// Whether every compared stream is in sync with every peer whose relay
    /// is not silent (a silent peer's records may be stale: a peer that
    /// left, or whose relay is down, does not fail the audit for ever).
    pub fn is_clean(&self) -> bool {
        self.unreadable.is_empty()
            && self
                .entries
                .iter()
                .all(|e| e.standing == Standing::InSync || e.peer_silent)
    }

    /// The entries that are not in sync, silent peers' included.
    pub fn findings(&self) -> impl Iterator<Item = &AuditEntry> {
        self.entries
            .iter()
            .filter(|e| e.standing != Standing::InSync)
    }
}

fn bucket_name(options: &NatsOptions) -> String {
    format!("{}_AUDIT", options.stream)
}

fn key(node: &str, unit: &SyncUnit) -> String {
    let hash = blake3::hash(&crate::keys::unit_key(unit));
    format!("{node}.{}", state::hex(&hash.as_bytes()[..16]))
}

fn mark_key(node: &str) -> String {
    format!("{node}.{MARK}")
}

/// The last token of a node's mark key (not 32 hex digits, so no record's).
const MARK: &str = "relay";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(super) async fn bucket(js: &jetstream::Context, options: &NatsOptions) -> Result<kv::Store> {
    let name = bucket_name(options);
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    // The bucket's stream as the client's `create_key_value` makes it,
    // made here: that call first asks for the account's limits, whose
    // answer from a 2.9 server it cannot read.
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        description: Some("reactordb audit records".into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        num_replicas: options.replicas,
        allow_rollup: true,
        deny_delete: true,
        // Reads through the stream's leader: a direct get may be answered
        // by a replica that lags, giving a mark with records older than
        // it, which the bootstrap's proof cannot have.
        allow_direct: false,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| transport_error(&format!("creating the bucket {name}"), e))?;
    // A stream just made may not be found at once through another server.
    let mut tries = 0;
    loop {
        match js.get_key_value(&name).await {
            Ok(store) => return Ok(store),
            Err(_) if tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(transport_error(&format!("opening the bucket {name}"), e)),
        }
    }
}

/// The publishing loop: every [`NatsOptions::audit_interval`], the records
/// of the streams that changed since the last round go to the bucket,
/// then the relay's mark. The first round (and the first after a filter
/// change) publishes every stream the remote's filter passes and deletes
/// our records of any other. Where it got to outlives a restart of the
/// loop (`Relay::audit_published_to`), so a transport error costs no
/// re-read of the database.
pub(super) fn run(relay: &Relay) -> Result<()> {
    let Some(interval) = relay.options.audit_interval else {
        while !relay.ending() {
            std::thread::sleep(Duration::from_millis(20));
        }
        return Ok(());
    };
    let shared = &relay.shared;
    let store = shared.reactor.store();
    let kv = relay.block_on(bucket(&relay.js, &relay.options))?;
    let node = state::hex(&shared.node.node);
    while !relay.ending() {
        let options_now = shared.options_generation.load(Ordering::Acquire);
        let filter = shared
            .state
            .remote(&relay.remote)?
            .map(|r| r.options.filter)
            .unwrap_or_default();
        // The mark's cursor is read before anything of the round: what was
        // loaded up to it is in the store at or before `last`. Its stream
        // is read with it (a mark is written only if that did not change).
        let stream = shared.state.relay_log(&relay.remote)?;
        let inbox_cursor = match &relay.options.partitions {
            Some(served) => partitions::cursors(relay, served)?
                .into_values()
                .min()
                .unwrap_or(0),
            None => shared.state.cursors(&relay.remote)?.1,
        };
        let last = store.last_ordinal();
        let since = *relay.audit_published_to.lock();
        let first_round = !matches!(since, Some((_, options)) if options == options_now);
        if first_round {
            // Until this round's records are out, our old mark would vouch
            // for records this round may replace with smaller ones (a
            // database restored from a backup).
            relay
                .block_on(kv.delete(mark_key(&node)))
                .map_err(|e| transport_error("deleting our relay mark", e))?;
        }
        // The streams touched since the last round, from the ordinal index
        // (more than `CHANGED` of them: every stream, which costs no more).
        let touched = match since {
            Some((after, _)) if !first_round => store.streams_touched(after, last, CHANGED)?,
            _ => None,
        };
        let changed = match touched {
            Some(touched) => touched,
            None => store
                .all_streams()?
                .into_iter()
                .map(|s| (s.unit, s.document_type))
                .collect(),
        };
        let mut published = HashSet::new();
        // Time spent reading the database for records (not waiting on the
        // bucket): what grows with the history, and what the pause bounds.
        let mut reading = Duration::ZERO;
        for (unit, document_type) in changed {
            if relay.ending() {
                return Ok(());
            }
            // A relay of some partitions does not load the others' streams:
            // its records of them would only show it behind.
            if !passes(&filter, &unit, &document_type) || !relay.options.serves(&unit.document_id) {
                continue;
            }
            let record = PublishedRecord {
                version: RECORD_VERSION,
                node: node.clone(),
                name: shared.node.name.clone(),
                published_utc_ms: now_ms(),
                record: {
                    let started = std::time::Instant::now();
                    let record = audit::record(shared, &unit, &document_type)?;
                    reading += started.elapsed();
                    record
                },
            };
            let key = key(&node, &unit);
            put_json(relay, &kv, &key, &record)?;
            published.insert(key);
        }
        if first_round {
            // Ours of streams no longer held or passed: gone.
            let ours = relay.block_on(keys_of(&kv, &node))?;
            for key in ours.into_iter().filter(|k| !published.contains(k)) {
                relay
                    .block_on(kv.delete(&key))
                    .map_err(|e| transport_error("deleting an audit record", e))?;
            }
        }
        *relay.audit_published_to.lock() = Some((last, options_now));
        // The mark announces the pause that follows; peers judge our
        // silence by it. A first round reads every stream once (after a
        // start or a filter change): it does not lengthen the pause, or a
        // relay over a large history would go quiet for ten times its
        // first read, and a peer would wait three times that to call it
        // silent.
        let pause = if first_round {
            interval
        } else {
            pause_after(interval, reading)
        };
        let same_stream = shared.state.relay_log(&relay.remote)? == stream;
        if let Some(stream) = stream.filter(|_| same_stream) {
            let mark = RelayMark {
                version: RECORD_VERSION,
                node: node.clone(),
                name: shared.node.name.clone(),
                stream,
                inbox_cursor,
                relays_everything: filter == RemoteFilter::all()
                    && relay.options.partitions.is_none(),
                interval_ms: pause.as_millis() as u64,
                published_utc_ms: now_ms(),
            };
            put_json(relay, &kv, &mark_key(&node), &mark)?;
        }
        let mut slept = Duration::ZERO;
        while slept < pause && !relay.ending() {
            std::thread::sleep(Duration::from_millis(20));
            slept += Duration::from_millis(20);
        }
    }
    Ok(())
}

/// How long the loop waits after a round that spent `took` reading the
/// database: the interval, or long enough that reading takes at most one
/// part in [`ROUND_SHARE`] of the loop's time.
fn pause_after(interval: Duration, took: Duration) -> Duration {
    interval.max(took * (ROUND_SHARE - 1))
}

fn put_json<T: Serialize>(relay: &Relay, kv: &kv::Store, key: &str, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value).expect("a record encodes");
    relay
        .block_on(kv.put(key, Bytes::from(bytes)))
        .map_err(|e| transport_error("publishing an audit record", e))?;
    Ok(())
}

/// Every key in the bucket.
async fn all_keys(kv: &kv::Store) -> Result<Vec<String>> {
    let what = "listing audit records";
    let failed = |e: &dyn std::fmt::Display| transport_error(what, e);
    let mut keys = answered(what, async { kv.keys().await.map_err(|e| failed(&e)) }).await?;
    let mut out = Vec::new();
    while let Some(key) = answered(what, async { Ok(keys.next().await) }).await? {
        out.push(key.map_err(|e| failed(&e))?);
    }
    Ok(out)
}

/// How long one request to the bucket may go unanswered before it counts
/// as a transport error (retried like any other): a cluster electing a
/// leader once left one unanswered for good, and `NatsTransport::audit`
/// hung (found in CI).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `request`, or a transport error saying `what` went unanswered for
/// [`REQUEST_TIMEOUT`].
async fn answered<T>(
    what: &str,
    request: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .unwrap_or_else(|_| {
            Err(transport_error(
                what,
                format!("no answer in {} s", REQUEST_TIMEOUT.as_secs()),
            ))
        })
}

/// The keys of `node`'s records in the bucket (not its mark).
async fn keys_of(kv: &kv::Store, node: &str) -> Result<Vec<String>> {
    let prefix = format!("{node}.");
    let mark = mark_key(node);
    let mut keys = all_keys(kv).await?;
    keys.retain(|k| k.starts_with(&prefix) && *k != mark);
    Ok(keys)
}

async fn get_json<T: DeserializeOwned>(kv: &kv::Store, key: &str) -> Result<Option<Option<T>>> {
    let value = kv
        .get(key)
        .await
        .map_err(|e| transport_error("reading an audit record", e))?;
    Ok(value.map(|v| serde_json::from_slice(&v).ok()))
}

/// What `node` published: its mark (read first, so every record read after
/// it is at least as new as the round that wrote it), and its records.
/// Values that do not decode are left out.
pub(super) async fn published_by(
    kv: &kv::Store,
    node: &str,
) -> Result<(Option<RelayMark>, Vec<StreamRecord>)> {
    let mark = get_json::<RelayMark>(kv, &mark_key(node))
        .await?
        .flatten()
        .filter(|m| m.version == RECORD_VERSION);
    let mut records = Vec::new();
    for key in keys_of(kv, node).await? {
        if let Some(Some(r)) = get_json::<PublishedRecord>(kv, &key).await? {
            if r.version == RECORD_VERSION {
                records.push(r.record);
            }
        }
    }
    Ok((mark, records))
}

/// Our record of the stream of `theirs` (empty when we do not hold it).
pub(super) fn local_record(shared: &Shared, theirs: &StreamRecord) -> Result<StreamRecord> {
    match shared.reactor.store().head(&theirs.unit)? {
        Some(_) => audit::record(shared, &theirs.unit, &theirs.document_type),
        None => Ok(StreamRecord::empty(
            theirs.unit.clone(),
            theirs.document_type.clone(),
        )),
    }
}

pub(super) fn passes(filter: &RemoteFilter, unit: &SyncUnit, document_type: &DocumentType) -> bool {
    filter.passes(&crate::model::OperationContext {
        document_id: unit.document_id.clone(),
        document_type: document_type.clone(),
        scope: unit.scope.clone(),
        branch: unit.branch.clone(),
        ordinal: Ordinal(0),
    })
}

/// How many times `compare` reads the bucket again after a transport error.
const COMPARE_TRIES: u32 = 4;

/// Every other node's published marks and records (keys and values), the
/// marks first: a record read after its node's mark is no older.
async fn read_published(options: &NatsOptions, ours: &str) -> Result<Vec<(String, Bytes)>> {
    let client = answered("connecting", relay::connect(options)).await?;
    let js = jetstream::new(client);
    let kv = answered("opening the audit bucket", bucket(&js, options)).await?;
    let mut all = all_keys(&kv).await?;
    all.retain(|k| !k.starts_with(&format!("{ours}.")));
    all.sort_by_key(|k| !k.ends_with(&format!(".{MARK}")));
    let mut out = Vec::new();
    let what = "reading an audit record";
    for key in all {
        let value = answered(what, async {
            kv.get(&key).await.map_err(|e| transport_error(what, e))
        })
        .await?;
        if let Some(value) = value {
            out.push((key, value));
        }
    }
    Ok(out)
}

/// Compares the local replica with every other node's published records
/// (see [`NatsTransport::audit`]).
pub(super) fn compare(
    transport: &NatsTransport,
    manager: &SyncManager,
    options: &NatsOptions,
) -> Result<AuditReport> {
    let shared = &manager.shared;
    let ours = state::hex(&shared.node.node);
    // A cluster electing a leader answers "temporarily unavailable" for a
    // moment: a few tries before the audit reports a transport error.
    let mut tries = 0;
    let published = loop {
        match transport.runtime.block_on(read_published(options, &ours)) {
            Err(crate::error::Error::Transport { .. }) if tries < COMPARE_TRIES => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(250) * tries);
            }
            read => break read?,
        }
    };
    let mut report = AuditReport::default();
    let mut mine: BTreeMap<SyncUnit, StreamRecord> = BTreeMap::new();
    let now = now_ms();
    for (key, value) in published {
        if key.ends_with(&format!(".{MARK}")) {
            match serde_json::from_slice::<RelayMark>(&value) {
                Ok(mark) if mark.version == RECORD_VERSION => {
                    report.marks.insert(mark.node.clone(), mark);
                }
                _ => report.unreadable.push(key),
            }
            continue;
        }
        let record: PublishedRecord = match serde_json::from_slice(&value) {
            Ok(
                r @ PublishedRecord {
                    version: RECORD_VERSION,
                    ..
                },
            ) => r,
            _ => {
                report.unreadable.push(key);
                continue;
            }
        };
        let theirs = record.record;
        if !options.serves(&theirs.unit.document_id) {
            continue; // a partition we do not load
        }
        if !mine.contains_key(&theirs.unit) {
            mine.insert(theirs.unit.clone(), local_record(shared, &theirs)?);
        }
        let local = &mine[&theirs.unit];
        report
            .peers
            .insert(record.node.clone(), record.name.clone());
        report.entries.push(AuditEntry {
            unit: theirs.unit.clone(),
            standing: local.standing(&theirs),
            operations: (local.operations, theirs.operations),
            age_ms: now.saturating_sub(record.published_utc_ms),
            peer_silent: report
                .marks
                .get(&record.node)
                .is_none_or(|m| m.is_silent(now)),
            peer: (record.node, record.name),
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_take_at_most_a_tenth_of_the_loop() {
        let interval = Duration::from_secs(5);
        for took_ms in [0u64, 1, 100, 555, 556, 2_000, 60_000] {
            let took = Duration::from_millis(took_ms);
            let pause = pause_after(interval, took);
            assert!(pause >= interval, "{took_ms} ms");
            assert!(took * 10 <= took + pause, "{took_ms} ms: {pause:?}");
            // No longer than it must be.
            assert!(
                pause == interval || pause == took * 9,
                "{took_ms} ms: {pause:?}"
            );
        }
        assert_eq!(
            pause_after(interval, Duration::from_secs(2)),
            Duration::from_secs(18)
        );
    }
}
