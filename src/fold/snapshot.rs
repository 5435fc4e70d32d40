//! Snapshots of a stream's folded state, in the `snapshots` column family.
//! Each references the hash of the operation at its revision and the
//! previous snapshot's hash (a chain), and is verified before use.

use serde::{Deserialize, Serialize};

use crate::model::{Digest, Ordinal};

const V1: u8 = 1;

/// A snapshot: the state of one stream after operations `0..revision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub(crate) revision: u64,
    /// Chain hash of the operation at `revision - 1`.
    pub(crate) op_hash: Digest,
    /// Ordinal of that operation.
    pub(crate) op_ordinal: Ordinal,
    /// Hash of the previous snapshot of the stream (zero for the first).
    pub(crate) previous: Digest,
    /// The model version the state is in.
    pub(crate) model_version: u32,
    #[serde(with = "serde_bytes")]
    pub(crate) state: Vec<u8>,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

// Format (v1): {version: u8 = 1}{Snapshot: bincode}{self hash: 32 bytes = blake3 of the body}
impl Snapshot {
    pub(crate) fn encode(&self) -> (Vec<u8>, Digest) {
        let mut out = vec![V1];
        bincode::serde::encode_into_std_write(self, &mut out, config())
            .expect("encoding into a Vec cannot fail");
        let hash = Digest::of(&out[1..]);
        out.extend_from_slice(&hash.0);
        (out, hash)
    }

    /// Decodes and checks the self hash; `None` for any damage.
    pub(crate) fn decode(bytes: &[u8]) -> Option<(Snapshot, Digest)> {
        let (&version, rest) = bytes.split_first()?;
        if version != V1 || rest.len() < 32 {
            return None;
        }
        let (body, hash) = rest.split_at(rest.len() - 32);
        let expected = Digest::of(body);
        if expected.0 != hash {
            return None;
        }
        let (snapshot, used): (Snapshot, usize) =
            bincode::serde::decode_from_slice(body, crate::codec::decode_config()).ok()?;
        (used == body.len()).then_some((snapshot, expected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_any_flipped_byte() {
        let snapshot = Snapshot {
            revision: 1000,
            op_hash: Digest([3; 32]),
            op_ordinal: Ordinal(77),
            previous: Digest([4; 32]),
            model_version: 2,
            state: b"state".to_vec(),
        };
        let (bytes, hash) = snapshot.encode();
        assert_eq!(Snapshot::decode(&bytes), Some((snapshot, hash)));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert_eq!(Snapshot::decode(&bad), None, "flip at {i} went unnoticed");
        }
        assert_eq!(Snapshot::decode(&bytes[..10]), None);
    }
}

/// The outcome of [`verify_snapshots`](crate::verify_snapshots).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotReport {
    /// Snapshots checked.
    pub snapshots_checked: u64,
    /// The first snapshot that fails: its stream and revision.
    pub first_broken: Option<(crate::model::SyncUnit, u64)>,
}

/// Checks every view snapshot: it must decode with an intact self hash,
/// reference the hash of the operation stored at its revision, and name the
/// stream's snapshot before it (zero for the first): a snapshot removed or
/// swapped breaks the chain. (A broken snapshot is never served; the view
/// rebuilds it when it meets it.)
pub fn verify_snapshots(
    store: &crate::store::OperationStore,
) -> crate::error::Result<SnapshotReport> {
    let db = store.db();
    let mut report = SnapshotReport::default();
    let Some(cf) = db.cf_handle(crate::keys::CF_SNAPSHOTS) else {
        return Ok(report);
    };
    let mut iter = db.raw_iterator_cf(cf);
    iter.seek_to_first();
    // The stream being read, and the hashes of its snapshots so far.
    let mut stream: Option<(Vec<u8>, std::collections::HashSet<Digest>)> = None;
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        report.snapshots_checked += 1;
        let Some((unit, rest)) = crate::keys::decode_unit_key(key) else {
            return Err(crate::error::Error::Corrupt {
                cf: crate::keys::CF_SNAPSHOTS,
                what: "snapshot key",
            });
        };
        let revision = u64::from_be_bytes(rest.try_into().unwrap_or([0; 8]));
        let unit_key = crate::keys::unit_key(&unit);
        let anchor = match revision.checked_sub(1) {
            Some(index) => store.get_with_ordinal(&unit_key, index)?,
            None => None,
        };
        if stream.as_ref().is_none_or(|(key, _)| *key != unit_key) {
            stream = Some((unit_key.clone(), std::collections::HashSet::new()));
        }
        let earlier = stream.as_mut().map(|(_, seen)| seen);
        let decoded = Snapshot::decode(value);
        let intact = match (&decoded, anchor, earlier) {
            (Some((snapshot, hash)), Some((op, _)), Some(earlier)) => {
                // The first snapshot names none; a later one names one
                // before it (the newest intact one when it was written:
                // a removed snapshot leaves a name nothing answers to).
                let chained = if earlier.is_empty() {
                    snapshot.previous == Digest::default()
                } else {
                    earlier.contains(&snapshot.previous)
                };
                earlier.insert(*hash);
                snapshot.revision == revision && snapshot.op_hash == op.hash && chained
            }
            _ => false,
        };
        if !intact {
            report.first_broken = Some((unit, revision));
            return Ok(report);
        }
        iter.next();
    }
    iter.status()?;
    Ok(report)
}
