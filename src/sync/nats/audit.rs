//! The audit over JetStream: each relay publishes its replica's record of
//! every stream it relays (`sync::audit`) to a key-value bucket beside the
//! stream, and [`NatsTransport::audit`] compares the local replica with
//! every other node's published records. Owns the bucket's keys and
//! values; computes no record itself.
//!
//! Bucket `{stream}_AUDIT`, one key per node and stream:
//! `{node id hex}.{first 16 bytes of blake3(stream) in hex}`, value the
//! JSON of a [`PublishedRecord`] (readable with the `nats` tool).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;

use super::relay::Relay;
use super::{relay, transport_error, NatsOptions, NatsTransport};
use crate::error::Result;
use crate::model::{DocumentType, Ordinal, SyncUnit};
use crate::store::Paging;
use crate::sync::audit::{self, Standing, StreamRecord};
use crate::sync::filter::RemoteFilter;
use crate::sync::{state, SyncManager};

/// The version of [`PublishedRecord`] this build writes and reads.
const RECORD_VERSION: u32 = 1;
/// Operations read per page while collecting the streams that changed.
const PAGE: usize = 1_024;

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
}

impl AuditReport {
    /// Whether every compared stream is in sync with every peer.
    pub fn is_clean(&self) -> bool {
        self.unreadable.is_empty() && self.entries.iter().all(|e| e.standing == Standing::InSync)
    }

    /// The entries that are not in sync.
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn bucket(js: &jetstream::Context, options: &NatsOptions) -> Result<kv::Store> {
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
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| transport_error(&format!("creating the bucket {name}"), e))?;
    js.get_key_value(&name)
        .await
        .map_err(|e| transport_error(&format!("opening the bucket {name}"), e))
}

/// The publishing loop: every [`NatsOptions::audit_interval`], the records
/// of the streams that changed since the last round (every stream the
/// remote's filter passes, at the first) go to the bucket.
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
    let mut published_to: Option<Ordinal> = None;
    while !relay.ending() {
        let filter = shared
            .state
            .remote(&relay.remote)?
            .map(|r| r.options.filter)
            .unwrap_or_default();
        let last = store.last_ordinal();
        let changed = match published_to {
            None => store
                .all_streams()?
                .into_iter()
                .map(|s| (s.unit, s.document_type))
                .collect(),
            Some(after) => changed_since(relay, after, last)?,
        };
        for (unit, document_type) in changed {
            if relay.ending() {
                return Ok(());
            }
            if !passes(&filter, &unit, &document_type) {
                continue;
            }
            let published = PublishedRecord {
                version: RECORD_VERSION,
                node: node.clone(),
                name: shared.node.name.clone(),
                published_utc_ms: now_ms(),
                record: audit::record(shared, &unit, &document_type)?,
            };
            let value = serde_json::to_vec(&published).expect("a record encodes");
            relay
                .block_on(kv.put(key(&node, &unit), Bytes::from(value)))
                .map_err(|e| transport_error("publishing an audit record", e))?;
        }
        published_to = Some(last);
        let mut slept = Duration::ZERO;
        while slept < interval && !relay.ending() {
            std::thread::sleep(Duration::from_millis(20));
            slept += Duration::from_millis(20);
        }
    }
    Ok(())
}

fn passes(filter: &RemoteFilter, unit: &SyncUnit, document_type: &DocumentType) -> bool {
    filter.passes(&crate::model::OperationContext {
        document_id: unit.document_id.clone(),
        document_type: document_type.clone(),
        scope: unit.scope.clone(),
        branch: unit.branch.clone(),
        ordinal: Ordinal(0),
    })
}

/// The streams with an operation of ordinal in `(after, last]`.
fn changed_since(
    relay: &Relay,
    after: Ordinal,
    last: Ordinal,
) -> Result<Vec<(SyncUnit, DocumentType)>> {
    let store = relay.shared.reactor.store();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut paging = Paging::first(PAGE);
    loop {
        let page = store.get_since_ordinal(Ordinal(after.get() + 1), paging)?;
        let mut past = false;
        for item in page.items {
            if item.context.ordinal > last {
                past = true;
                break;
            }
            let unit = SyncUnit::new(
                item.context.document_id,
                item.context.scope,
                item.context.branch,
            );
            if seen.insert(unit.clone()) {
                out.push((unit, item.context.document_type));
            }
        }
        match page.next_cursor {
            Some(cursor) if !past && !relay.ending() => paging = Paging::after(cursor, PAGE),
            _ => return Ok(out),
        }
    }
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
    let published = transport.runtime.block_on(async {
        let client = relay::connect(options).await?;
        let js = jetstream::new(client);
        let kv = bucket(&js, options).await?;
        let mut keys = kv
            .keys()
            .await
            .map_err(|e| transport_error("listing audit records", e))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| transport_error("listing audit records", e))?;
            if key.starts_with(&format!("{ours}.")) {
                continue;
            }
            let value = kv
                .get(&key)
                .await
                .map_err(|e| transport_error("reading an audit record", e))?;
            if let Some(value) = value {
                out.push((key, value));
            }
        }
        Ok::<_, crate::error::Error>(out)
    })?;
    let mut report = AuditReport::default();
    let mut mine: BTreeMap<SyncUnit, StreamRecord> = BTreeMap::new();
    let now = now_ms();
    for (key, value) in published {
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
        let local = match mine.get(&theirs.unit) {
            Some(local) => local,
            None => {
                let held = shared.reactor.store().head(&theirs.unit)?.is_some();
                let local = match held {
                    true => audit::record(shared, &theirs.unit, &theirs.document_type)?,
                    false => StreamRecord::empty(theirs.unit.clone(), theirs.document_type.clone()),
                };
                mine.entry(theirs.unit.clone()).or_insert(local)
            }
        };
        report
            .peers
            .insert(record.node.clone(), record.name.clone());
        report.entries.push(AuditEntry {
            unit: theirs.unit.clone(),
            peer: (record.node, record.name),
            standing: local.standing(&theirs),
            operations: (local.operations, theirs.operations),
            age_ms: now.saturating_sub(record.published_utc_ms),
        });
    }
    Ok(report)
}
