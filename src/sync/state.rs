//! The sync store: every key and value sync keeps in the `sync` column
//! family. Owns that layout; writes nothing else.
//!
//! | key | value |
//! | --- | --- |
//! | `n` | this node's id and name |
//! | `r\0{remote}\0` | the remote's options and the peer node it is |
//! | `c\0{remote}\0out` | outbox cursor: our ordinals the remote has loaded |
//! | `c\0{remote}\0in` | inbox cursor: the remote's ordinals we have loaded |
//! | `c\0{remote}\0in-witness` | the chain hash of the remote's operation at it |
//! | `c\0{remote}\0in-epoch` | the epoch of the inbox (the remote's rewinds) |
//! | `c\0{remote}\0epoch` | our outbox epoch toward it (our rewinds) |
//! | `b\0{remote}\0{first ordinal}` | a buffered (out-of-order) envelope |
//! | `d\0{remote}\0{sequence}` | a dead letter |
//! | `x\0{remote}\0{blake3 of its bytes}` | that byte string is a dead letter already |
//! | `o\0{op id}{content hash}{remote}\0` | the remote sent us this operation; its originator's node id (empty before protocol 2: unknown). Remote `""`: one since removed |
//! | `s\0{op id}{content hash}` | the originator's signature of it |
//!
//! Each cursor is in the ordinal frame of the store that assigned the
//! ordinals: the outbox cursor in ours, the inbox cursor in the remote's.
//! Remote names are NUL-terminated in keys, so no name is a prefix of
//! another's keys. Values are bincode with a leading version byte and (v2) a checksum.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::filter::RemoteOptions;
use super::wire::{Signature, UNKNOWN_ORIGIN};
use crate::error::{Error, Result};
use crate::model::{Digest, OperationId};
use crate::store::{OperationStore, SyncBatch};

/// Values this build writes: v1 with a checksum, so a flipped cursor, epoch
/// or record is `Corrupt` rather than a cursor that silently skips or
/// repeats operations.
const VALUE_VERSION: u8 = 2;
/// Values without a checksum (still read).
const VALUE_V1: u8 = 1;
const CHECKSUM: usize = 8;
const CF: &str = crate::keys::CF_SYNC;

// Format (v2): {version: u8 = 2}{bincode}{blake3 of everything before it: first 8 bytes}
// Format (v1): {version: u8 = 1}{bincode}
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VALUE_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .expect("encoding into a Vec cannot fail");
    let sum = blake3::hash(&out);
    out.extend_from_slice(&sum.as_bytes()[..CHECKSUM]);
    out
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    let corrupt = Error::Corrupt { cf: CF, what };
    let body = match bytes.split_first() {
        Some((&VALUE_VERSION, _)) if bytes.len() > CHECKSUM => {
            let (summed, sum) = bytes.split_at(bytes.len() - CHECKSUM);
            if &blake3::hash(summed).as_bytes()[..CHECKSUM] != sum {
                return Err(corrupt);
            }
            &summed[1..]
        }
        Some((&VALUE_V1, body)) => body,
        _ => return Err(corrupt),
    };
    match bincode::serde::decode_from_slice(body, crate::codec::decode_config()) {
        Ok((value, used)) if used == body.len() => Ok(value),
        _ => Err(corrupt),
    }
}

/// Every value decoder of the sync family on one byte string (the
/// `values` fuzz target): each must refuse bad bytes without a panic, and
/// what decodes must encode back to the same bytes.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_decode(bytes: &[u8]) {
    fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8], what: &'static str) {
        if let Ok(value) = decode::<T>(bytes, what) {
            let again = encode(&value);
            assert!(
                decode::<T>(&again, what).is_ok(),
                "{what} does not decode again"
            );
        }
    }
    round_trip::<NodeRecord>(bytes, "node record");
    round_trip::<RemoteRecord>(bytes, "remote record");
    round_trip::<u64>(bytes, "cursor");
    round_trip::<Option<Digest>>(bytes, "cursor witness");
    round_trip::<DeadLetter>(bytes, "dead letter");
    round_trip::<Signature>(bytes, "signature");
}

/// A stored dead letter: a seed for the `values` fuzz target.
#[cfg(test)]
pub(crate) fn fuzz_seed() -> Vec<u8> {
    encode(&DeadLetter {
        ordinal: 3,
        document_id: Some("doc".into()),
        reason: "tampered".into(),
        bytes: vec![1, 2, 3],
    })
}

fn remote_key(tag: u8, remote: &str) -> Vec<u8> {
    let mut key = vec![tag, 0];
    key.extend_from_slice(remote.as_bytes());
    key.push(0);
    key
}

/// The cursor side under which a relay keeps one inbox cursor per
/// partition it loads (the partition's byte follows).
#[cfg(feature = "nats")]
const PARTITION_CURSOR: &[u8] = b"in-p";

fn cursor_key(remote: &str, side: &[u8]) -> Vec<u8> {
    let mut key = remote_key(b'c', remote);
    key.extend_from_slice(side);
    key
}

fn op_key(tag: u8, id: &OperationId, content: &Digest) -> Vec<u8> {
    let mut key = vec![tag, 0];
    key.extend_from_slice(id.as_bytes());
    key.extend_from_slice(content.as_bytes());
    key
}

fn origin_key(id: &OperationId, content: &Digest, remote: &str) -> Vec<u8> {
    let mut key = op_key(b'o', id, content);
    key.extend_from_slice(remote.as_bytes());
    key.push(0);
    key
}

/// This node's identity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct NodeRecord {
    pub node: [u8; 16],
    pub name: String,
}

/// A remote as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct RemoteRecord {
    pub options: RemoteOptions,
    /// The peer's node id, learned from its first hello.
    pub peer_node: Option<[u8; 16]>,
}

/// An operation refused for good, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The sender's ordinal of the operation (0 in a repair).
    pub ordinal: u64,
    /// Its document, when it could be decoded that far.
    pub document_id: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// The operation's bytes as they arrived.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// Origins remembered in memory, at most: enough for the outbox to find
/// what the inbox just loaded (it follows within a window of ordinals).
const RECENT_ORIGINS: usize = 16_384;

/// The sync store over one database.
#[derive(Clone)]
pub(crate) struct SyncState {
    store: OperationStore,
    /// Origin keys written lately: the echo check of an operation a remote
    /// just sent answers from memory instead of a point read. Only keys
    /// already written are here, and `remove_remote` (the one place that
    /// deletes origins) clears it, so an answer from it is the store's.
    recent_origins: Arc<Mutex<LruCache<Vec<u8>, ()>>>,
}

impl SyncState {
    pub(crate) fn new(store: OperationStore) -> Self {
        let capacity = NonZeroUsize::new(RECENT_ORIGINS).unwrap_or(NonZeroUsize::MIN);
        Self {
            store,
            recent_origins: Arc::new(Mutex::new(LruCache::new(capacity))),
        }
    }

    /// This node's id and name; made (random id, given or derived name) at
    /// first use.
    pub(crate) fn node(&self, name: Option<&str>) -> Result<NodeRecord> {
        if let Some(bytes) = self.store.sync_get(b"n")? {
            return decode(&bytes, "node record");
        }
        let mut node = [0u8; 16];
        let seed = format!(
            "{:?} {} {:?}",
            std::time::SystemTime::now(),
            std::process::id(),
            self.store.path()
        );
        node.copy_from_slice(&blake3::hash(seed.as_bytes()).as_bytes()[..16]);
        let record = NodeRecord {
            node,
            name: name.map_or_else(|| hex(&node), str::to_owned),
        };
        let mut batch = SyncBatch::default();
        batch.put(b"n".to_vec(), encode(&record));
        self.store.sync_write(batch)?;
        Ok(record)
    }

    pub(crate) fn rename_node(&self, record: &NodeRecord) -> Result<()> {
        let mut batch = SyncBatch::default();
        batch.put(b"n".to_vec(), encode(record));
        self.store.sync_write(batch)
    }

    pub(crate) fn remote(&self, remote: &str) -> Result<Option<RemoteRecord>> {
        self.store
            .sync_get(&remote_key(b'r', remote))?
            .map(|bytes| decode(&bytes, "remote record"))
            .transpose()
    }

    pub(crate) fn put_remote(&self, remote: &str, record: &RemoteRecord) -> Result<()> {
        let mut batch = SyncBatch::default();
        batch.put(remote_key(b'r', remote), encode(record));
        self.store.sync_write(batch)
    }

    /// Every remote, by name.
    pub(crate) fn remotes(&self) -> Result<Vec<(String, RemoteRecord)>> {
        let mut out = Vec::new();
        for (key, value) in self.store.sync_scan(b"r\0", usize::MAX)? {
            let name = std::str::from_utf8(&key[2..key.len() - 1])
                .map_err(|_| Error::Corrupt {
                    cf: CF,
                    what: "remote key",
                })?
                .to_owned();
            out.push((name, decode(&value, "remote record")?));
        }
        Ok(out)
    }

    /// Forgets a remote: its record, cursors, buffered envelopes, dead
    /// letters and which operations it sent (their originators stay, under
    /// the empty remote name).
    pub(crate) fn remove_remote(&self, remote: &str) -> Result<()> {
        let mut batch = SyncBatch::default();
        for tag in [b'r', b'c', b'b', b'd', b'x'] {
            batch.delete_prefix(remote_key(tag, remote));
        }
        // Origins are keyed by operation (the echo check is a point read
        // per operation), so forgetting a remote's scans them all.
        let suffix = {
            let mut s = remote.as_bytes().to_vec();
            s.push(0);
            s
        };
        for (key, originator) in self.store.sync_scan(b"o\0", usize::MAX)? {
            if key.len() == 2 + 16 + 32 + suffix.len() && key.ends_with(&suffix) {
                // Who originated it stays known (the audit counts by
                // originator), under the empty name no remote can have.
                let mut kept = key[..2 + 16 + 32].to_vec();
                kept.push(0);
                batch.put(kept, originator);
                batch.delete(key);
            }
        }
        let written = self.store.sync_write(batch);
        self.recent_origins.lock().clear();
        written
    }

    pub(crate) fn cursors(&self, remote: &str) -> Result<(u64, u64)> {
        let read = |side: &[u8]| -> Result<u64> {
            Ok(self
                .store
                .sync_get(&cursor_key(remote, side))?
                .map(|bytes| decode::<u64>(&bytes, "cursor"))
                .transpose()?
                .unwrap_or(0))
        };
        Ok((read(b"out")?, read(b"in")?))
    }

    pub(crate) fn set_outbox_cursor(&self, remote: &str, cursor: u64) -> Result<()> {
        let mut batch = SyncBatch::default();
        batch.put(cursor_key(remote, b"out"), encode(&cursor));
        self.store.sync_write(batch)
    }

    /// Adds the inbox cursor, its witness and its epoch to `batch`.
    pub(crate) fn put_inbox_cursor(
        &self,
        batch: &mut SyncBatch,
        remote: &str,
        cursor: u64,
        witness: Option<Digest>,
        epoch: u64,
    ) {
        batch.put(cursor_key(remote, b"in"), encode(&cursor));
        batch.put(cursor_key(remote, b"in-witness"), encode(&witness));
        batch.put(cursor_key(remote, b"in-epoch"), encode(&epoch));
    }

    /// The identity of the shared log a relay's cursors count in (the NATS
    /// relay's stream: its name and creation time), if one was recorded.
    #[cfg(feature = "nats")]
    pub(crate) fn relay_log(&self, remote: &str) -> Result<Option<String>> {
        self.store
            .sync_get(&cursor_key(remote, b"log"))?
            .map(|bytes| decode::<String>(&bytes, "relay log"))
            .transpose()
    }

    /// Records `log` as the relay's log with every cursor back at 0 (the
    /// partitions' too): what the cursors counted was another log's.
    #[cfg(feature = "nats")]
    pub(crate) fn reset_relay_log(&self, remote: &str, log: &str) -> Result<()> {
        let mut batch = SyncBatch::default();
        batch.put(cursor_key(remote, b"log"), encode(&log.to_owned()));
        batch.put(cursor_key(remote, b"out"), encode(&0u64));
        self.put_inbox_cursor(&mut batch, remote, 0, None, 0);
        batch.delete_prefix(cursor_key(remote, PARTITION_CURSOR));
        self.store.sync_write(batch)
    }

    /// The inbox cursors a relay that loads some partitions of its log
    /// only has stored, by partition: the last log sequence up to which
    /// every message of that partition is loaded.
    #[cfg(feature = "nats")]
    pub(crate) fn partition_cursors(
        &self,
        remote: &str,
    ) -> Result<std::collections::BTreeMap<u8, u64>> {
        let prefix = cursor_key(remote, PARTITION_CURSOR);
        let mut out = std::collections::BTreeMap::new();
        for (key, value) in self.store.sync_scan(&prefix, usize::MAX)? {
            match key.strip_prefix(prefix.as_slice()) {
                Some(&[partition]) => {
                    out.insert(partition, decode::<u64>(&value, "partition cursor")?);
                }
                _ => {
                    return Err(Error::Corrupt {
                        cf: CF,
                        what: "partition cursor key",
                    })
                }
            }
        }
        Ok(out)
    }

    /// Adds a partition's inbox cursor (see
    /// [`partition_cursors`](Self::partition_cursors)) to `batch`.
    #[cfg(feature = "nats")]
    pub(crate) fn put_partition_cursor(
        &self,
        batch: &mut SyncBatch,
        remote: &str,
        partition: u8,
        cursor: u64,
    ) {
        let mut key = cursor_key(remote, PARTITION_CURSOR);
        key.push(partition);
        batch.put(key, encode(&cursor));
    }

    /// The epoch of the inbox cursor (0: never rewound).
    pub(crate) fn inbox_epoch(&self, remote: &str) -> Result<u64> {
        self.read_u64(&cursor_key(remote, b"in-epoch"))
    }

    /// Our outbox epoch toward `remote` (0 until a rewind).
    pub(crate) fn outbox_epoch(&self, remote: &str) -> Result<u64> {
        self.read_u64(&cursor_key(remote, b"epoch"))
    }

    /// Adds a new outbox epoch toward `remote` to `batch`, with the outbox
    /// cursor back at 0 (a new epoch sends everything again, so nothing
    /// counts as acked before the peer acks it in that epoch).
    pub(crate) fn put_outbox_epoch(&self, batch: &mut SyncBatch, remote: &str, epoch: u64) {
        batch.put(cursor_key(remote, b"epoch"), encode(&epoch));
        batch.put(cursor_key(remote, b"out"), encode(&0u64));
    }

    /// Writes a remote's record and, when its filter changed, a new epoch,
    /// in one batch: a crash between them would keep the wider filter
    /// without the rewind that sends what the old one held back.
    pub(crate) fn put_remote_with_epoch(
        &self,
        remote: &str,
        record: &RemoteRecord,
        epoch: Option<u64>,
    ) -> Result<()> {
        let mut batch = SyncBatch::default();
        batch.put(remote_key(b'r', remote), encode(record));
        if let Some(epoch) = epoch {
            self.put_outbox_epoch(&mut batch, remote, epoch);
        }
        self.store.sync_write(batch)
    }

    fn read_u64(&self, key: &[u8]) -> Result<u64> {
        Ok(self
            .store
            .sync_get(key)?
            .map(|bytes| decode::<u64>(&bytes, "cursor"))
            .transpose()?
            .unwrap_or(0))
    }

    /// The witness of the inbox cursor (`None`: at 0, or never written).
    pub(crate) fn inbox_witness(&self, remote: &str) -> Result<Option<Digest>> {
        Ok(self
            .store
            .sync_get(&cursor_key(remote, b"in-witness"))?
            .map(|bytes| decode::<Option<Digest>>(&bytes, "cursor witness"))
            .transpose()?
            .flatten())
    }

    pub(crate) fn buffer_envelope(&self, remote: &str, first: u64, frame: Vec<u8>) -> Result<()> {
        let mut key = remote_key(b'b', remote);
        key.extend_from_slice(&first.to_be_bytes());
        let mut batch = SyncBatch::default();
        batch.put(key, frame);
        self.store.sync_write(batch)
    }

    /// How many envelopes of `remote` wait, counting at most `limit`.
    pub(crate) fn buffered_count(&self, remote: &str, limit: usize) -> Result<usize> {
        self.store.sync_count(&remote_key(b'b', remote), limit)
    }

    /// Buffered envelopes (first ordinal, frame), lowest first.
    pub(crate) fn buffered(&self, remote: &str, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let prefix = remote_key(b'b', remote);
        let mut out = Vec::new();
        for (key, value) in self.store.sync_scan(&prefix, limit)? {
            let first = key[prefix.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Corrupt {
                    cf: CF,
                    what: "buffered envelope key",
                })?;
            out.push((first, value));
        }
        Ok(out)
    }

    /// Adds the deletion of every buffered envelope of `remote` to `batch`.
    pub(crate) fn drop_buffered(&self, batch: &mut SyncBatch, remote: &str) {
        batch.delete_prefix(remote_key(b'b', remote));
    }

    pub(crate) fn unbuffer(&self, batch: &mut SyncBatch, remote: &str, first: u64) {
        let mut key = remote_key(b'b', remote);
        key.extend_from_slice(&first.to_be_bytes());
        batch.delete(key);
    }

    /// Adds dead letters to `batch`, numbered after the remote's last.
    pub(crate) fn put_dead_letters(
        &self,
        batch: &mut SyncBatch,
        remote: &str,
        letters: &[DeadLetter],
    ) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let prefix = remote_key(b'd', remote);
        let mut next = self
            .store
            .sync_last_key(&prefix)?
            .and_then(|key| key[prefix.len()..].try_into().ok())
            .map_or(0, |b: [u8; 8]| u64::from_be_bytes(b) + 1);
        for letter in letters {
            // One letter per refused byte string: a repair or a resend that
            // brings it again adds nothing.
            let mut seen = remote_key(b'x', remote);
            seen.extend_from_slice(blake3::hash(&letter.bytes).as_bytes());
            if self.store.sync_contains(&seen)? {
                continue;
            }
            batch.put(seen, Vec::new());
            let mut key = prefix.clone();
            key.extend_from_slice(&next.to_be_bytes());
            batch.put(key, encode(letter));
            next += 1;
        }
        Ok(())
    }

    pub(crate) fn dead_letters(&self, remote: &str) -> Result<Vec<DeadLetter>> {
        self.store
            .sync_scan(&remote_key(b'd', remote), usize::MAX)?
            .into_iter()
            .map(|(_, value)| decode(&value, "dead letter"))
            .collect()
    }

    /// Records that `remote` sent this operation (so it is not echoed),
    /// and the node that originated it (so it travels on with it).
    /// Returns the key, for [`remember_origins`](Self::remember_origins)
    /// once the batch is written.
    pub(crate) fn put_origin(
        &self,
        batch: &mut SyncBatch,
        (id, content): (&OperationId, &Digest),
        remote: &str,
        originator: &[u8; 16],
    ) -> Vec<u8> {
        let key = origin_key(id, content, remote);
        batch.put(key.clone(), encode(originator));
        key
    }

    /// Keeps origin keys that were just written in memory, for
    /// [`came_from`](Self::came_from).
    pub(crate) fn remember_origins(&self, keys: Vec<Vec<u8>>) {
        let mut recent = self.recent_origins.lock();
        for key in keys {
            recent.put(key, ());
        }
    }

    pub(crate) fn came_from(
        &self,
        id: &OperationId,
        content: &Digest,
        remote: &str,
    ) -> Result<bool> {
        let key = origin_key(id, content, remote);
        if self.recent_origins.lock().contains(&key) {
            return Ok(true);
        }
        self.store.sync_contains(&key)
    }

    /// Per operation, the node that originated it if a remote sent it to
    /// us, as the remotes that sent it said (a known one before
    /// [`UNKNOWN_ORIGIN`], which a remote sends when it does not know, and
    /// which a value recorded before protocol 2, or one that does not
    /// decode, reads as); `None` when no remote sent it (this node
    /// originated it, or a program loaded it outside sync). One iterator
    /// reads them all.
    pub(crate) fn originators(
        &self,
        ops: &[(OperationId, Digest)],
    ) -> Result<Vec<Option<[u8; 16]>>> {
        let prefixes: Vec<Vec<u8>> = ops.iter().map(|(id, c)| op_key(b'o', id, c)).collect();
        Ok(self
            .store
            .sync_scan_each(&prefixes)?
            .into_iter()
            .map(originator_of)
            .collect())
    }

    pub(crate) fn put_signature(
        &self,
        batch: &mut SyncBatch,
        id: &OperationId,
        content: &Digest,
        signature: &Signature,
    ) {
        batch.put(op_key(b's', id, content), encode(signature));
    }

    pub(crate) fn signature(
        &self,
        id: &OperationId,
        content: &Digest,
    ) -> Result<Option<Signature>> {
        self.store
            .sync_get(&op_key(b's', id, content))?
            .map(|bytes| decode(&bytes, "signature"))
            .transpose()
    }

    pub(crate) fn write(&self, batch: SyncBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.store.sync_write(batch)
    }
}

/// The originator the `o` values of one operation name: a known node
/// before [`UNKNOWN_ORIGIN`] (which an empty value from before protocol 2,
/// or one that does not decode, reads as: a damaged originator costs a
/// count in the audit, never the operation's sync); `None` without values.
fn originator_of(values: impl IntoIterator<Item = Vec<u8>>) -> Option<[u8; 16]> {
    let mut found = None;
    for value in values {
        let origin = decode(&value, "originator").unwrap_or(UNKNOWN_ORIGIN);
        if origin != UNKNOWN_ORIGIN {
            return Some(origin);
        }
        found = Some(UNKNOWN_ORIGIN);
    }
    found
}

/// Lowercase hex of some bytes.
/// The epoch after `current`: the next counter in the high 32 bits and
/// fresh random low bits, so two epochs started apart (one on a database
/// later restored from a backup, one after the restore) never share a
/// number, and an equal number means the same epoch.
pub(crate) fn next_epoch(current: u64) -> u64 {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seed = format!(
        "{:?} {} {current} {}",
        std::time::SystemTime::now(),
        std::process::id(),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let hash = blake3::hash(seed.as_bytes());
    let mut low = [0u8; 4];
    low.copy_from_slice(&hash.as_bytes()[..4]);
    (((current >> 32) + 1) << 32) | u64::from(u32::from_le_bytes(low))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
