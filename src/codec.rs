//! Value encodings of the write side. Every value starts with a
//! format-version byte; older versions keep decoding (each version has a
//! test below). Keys live in `keys`; this module never builds a key.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Action, Digest, DocumentType, Operation, OperationId, Ordinal};

/// Version byte of every value but the operation's.
const V1: u8 = 1;
/// Version byte of the operation values this build writes: v1 plus the
/// operation's content hash (v1 values still decode; their content hash is
/// computed as they are read).
const OPERATION_V2: u8 = 2;

/// On-disk format version of the whole database, stored once in the default
/// column family and checked at open. Version 2 databases hold
/// operations with content hashes and undo markers; a version 1 database
/// opens (its values decode) and the reactor migrates its positional undos
/// (see `reactor::migrate`) before it records version 2.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The oldest database format this build opens.
pub(crate) const OLDEST_FORMAT_VERSION: u32 = 1;

mod content;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The most bytes a stored value may make a decoder allocate. Every
/// length inside a value is read from disk: without a bound, one flipped
/// byte in a length prefix asks for terabytes and aborts the process
/// (found by the `values` fuzz target). Writers stay far below it (an
/// action's input is bounded by `limits::MAX_ACTION_BYTES`); a claim past
/// it decodes as `Corrupt`.
pub(crate) const MAX_DECODED_VALUE: usize = 1 << 30;

/// The configuration every decoder of a stored value uses: `config()` with
/// [`MAX_DECODED_VALUE`] as its allocation bound.
pub(crate) fn decode_config() -> impl bincode::config::Config {
    config().with_limit::<MAX_DECODED_VALUE>()
}

fn encode_body<T: Serialize>(out: &mut Vec<u8>, body: &T) {
    // Encoding plain structs of integers, strings and bytes into a Vec
    // cannot fail; a failure here is a bug in a Serialize impl.
    bincode::serde::encode_into_std_write(body, out, config())
        .expect("encoding into a Vec cannot fail");
}

fn decode_body<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    cf: &'static str,
    what: &'static str,
) -> Result<T> {
    match bincode::serde::borrow_decode_from_slice(bytes, decode_config()) {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        _ => Err(Error::Corrupt { cf, what }),
    }
}

fn split_version<'a>(bytes: &'a [u8], cf: &'static str, what: &'static str) -> Result<&'a [u8]> {
    match bytes.split_first() {
        Some((&V1, rest)) => Ok(rest),
        _ => Err(Error::Corrupt { cf, what }),
    }
}

/// The hashed part of an operation, borrowed for encoding. Written by
/// `content::write`; the serde derive exists only for the test that holds
/// that writer to bincode's bytes.
#[cfg_attr(test, derive(Serialize))]
pub(crate) struct ContentRef<'a> {
    id: &'a OperationId,
    index: u64,
    skip: u64,
    timestamp_utc_ms: u64,
    state_hash: &'a Digest,
    content_hash: &'a Digest,
    action: &'a Action,
    error: &'a Option<String>,
}

/// The content of an operation value v2.
#[derive(Deserialize)]
struct Content {
    id: OperationId,
    index: u64,
    skip: u64,
    timestamp_utc_ms: u64,
    state_hash: Digest,
    content_hash: Digest,
    action: Action,
    error: Option<String>,
}

/// The content of an operation value v1: no content hash.
#[derive(Deserialize)]
struct ContentV1 {
    id: OperationId,
    index: u64,
    skip: u64,
    timestamp_utc_ms: u64,
    state_hash: Digest,
    action: Action,
    error: Option<String>,
}

/// Offsets inside an encoded operation value.
const OP_ORDINAL: std::ops::Range<usize> = 1..9;
const OP_HASH: std::ops::Range<usize> = 9..41;
const OP_CONTENT: usize = 41;

// Format (v2): {version: u8 = 2}{ordinal: u64 BE}{hash: 32 bytes}{content: bincode}
//   content = (id, index, skip, timestamp, state hash, content hash, action, error)
// Format (v1): the same with version 1 and no content hash in the content.
/// Appends an operation value to `out` (one buffer holds a whole append, so
/// an append allocates once, not per operation) and returns where it is.
/// The content is encoded once, before the commit; the hash is filled in
/// from those same bytes ([`set_operation_hash`]) and the ordinal is patched
/// in place by the commit step ([`set_operation_ordinal`]), so the serial
/// part of a commit never encodes anything.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_operation(
    out: &mut Vec<u8>,
    id: &OperationId,
    index: u64,
    skip: u64,
    timestamp_utc_ms: u64,
    state_hash: &Digest,
    content_hash: &Digest,
    action: &Action,
    error: &Option<String>,
) -> Range<usize> {
    let start = out.len();
    out.reserve(operation_size_hint(action, error));
    out.push(OPERATION_V2);
    out.resize(start + OP_CONTENT, 0);
    content::write(
        out,
        &ContentRef {
            id,
            index,
            skip,
            timestamp_utc_ms,
            state_hash,
            content_hash,
            action,
            error,
        },
    );
    start..out.len()
}

/// About how many bytes [`encode_operation`] appends (at least that many
/// for typical ids: the fixed fields take at most 160 bytes).
pub(crate) fn operation_size_hint(action: &Action, error: &Option<String>) -> usize {
    OP_CONTENT
        + 160
        + action.id.as_str().len()
        + action.action_type.as_str().len()
        + action.scope.as_str().len()
        + action.input.len()
        + action.context.as_ref().map_or(0, |c| c.len())
        + error.as_ref().map_or(0, String::len)
}

/// The bytes of an operation value that the chain hash commits to.
pub(crate) fn operation_content(value: &[u8]) -> &[u8] {
    &value[OP_CONTENT..]
}

/// Fills in the chain hash of an operation value.
pub(crate) fn set_operation_hash(value: &mut [u8], hash: &Digest) {
    value[OP_HASH].copy_from_slice(&hash.0);
}

/// Patches the ordinal of an operation value.
pub(crate) fn set_operation_ordinal(value: &mut [u8], ordinal: Ordinal) {
    value[OP_ORDINAL].copy_from_slice(&ordinal.get().to_be_bytes());
}

/// A stored operation value, split into its parts without decoding the
/// content (what `verify` needs).
pub(crate) struct OperationParts<'a> {
    version: u8,
    pub(crate) ordinal: Ordinal,
    pub(crate) hash: Digest,
    pub(crate) content: &'a [u8],
}

/// Splits a stored operation value.
pub(crate) fn split_operation(bytes: &[u8]) -> Result<OperationParts<'_>> {
    const WHAT: &str = "operation value";
    let corrupt = || Error::Corrupt {
        cf: crate::keys::CF_OPERATIONS,
        what: WHAT,
    };
    let version = match bytes.first() {
        Some(&v @ (V1 | OPERATION_V2)) => v,
        _ => return Err(corrupt()),
    };
    if bytes.len() < OP_CONTENT {
        return Err(Error::Corrupt {
            cf: crate::keys::CF_OPERATIONS,
            what: WHAT,
        });
    }
    let ordinal = Ordinal(u64::from_be_bytes(bytes[OP_ORDINAL].try_into().map_err(
        |_| Error::Corrupt {
            cf: crate::keys::CF_OPERATIONS,
            what: WHAT,
        },
    )?));
    let mut hash = Digest::default();
    hash.0.copy_from_slice(&bytes[OP_HASH]);
    Ok(OperationParts {
        version,
        ordinal,
        hash,
        content: &bytes[OP_CONTENT..],
    })
}

/// Decodes a stored operation value into the operation and its ordinal.
pub(crate) fn decode_operation(bytes: &[u8]) -> Result<(Operation, Ordinal)> {
    const CF: &str = crate::keys::CF_OPERATIONS;
    const WHAT: &str = "operation content";
    let parts = split_operation(bytes)?;
    let c: Content = if parts.version == V1 {
        let c: ContentV1 = decode_body(parts.content, CF, WHAT)?;
        Content {
            content_hash: Operation::content_hash_of(&c.id, c.timestamp_utc_ms, &c.action),
            id: c.id,
            index: c.index,
            skip: c.skip,
            timestamp_utc_ms: c.timestamp_utc_ms,
            state_hash: c.state_hash,
            action: c.action,
            error: c.error,
        }
    } else {
        decode_body(parts.content, CF, WHAT)?
    };
    if c.skip > c.index {
        // Every reader subtracts the skip from the index.
        return Err(Error::Corrupt {
            cf: CF,
            what: "operation skip past its stream's start",
        });
    }
    let op = Operation {
        id: c.id,
        index: c.index,
        skip: c.skip,
        timestamp_utc_ms: c.timestamp_utc_ms,
        hash: parts.hash,
        state_hash: c.state_hash,
        content_hash: c.content_hash,
        action: c.action,
        error: c.error,
    };
    Ok((op, parts.ordinal))
}

/// The head of a stream: what the revision guard and the chain need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeadValue {
    /// The stream's next index (its revision).
    pub(crate) next_index: u64,
    /// Hash of the last operation, or zero for an empty stream.
    pub(crate) last_hash: Digest,
    /// Largest operation timestamp in the stream.
    pub(crate) latest_timestamp_utc_ms: u64,
    /// The document type the stream was created with.
    pub(crate) document_type: DocumentType,
    /// Whether the raw log is known to collect to the merge order of what
    /// it holds (see `store::LogOrder`). Not in v1 heads: those read as
    /// `true`, since the format-1 migration checks every stream whole.
    pub(crate) in_merge_order: bool,
}

/// A head value v1: no merge-order flag.
#[derive(Deserialize)]
struct HeadValueV1 {
    next_index: u64,
    last_hash: Digest,
    latest_timestamp_utc_ms: u64,
    document_type: DocumentType,
}

/// A stream's folded state as of its head, kept in the head record so a
/// writer that has not cached the stream reads one key instead of folding
/// its log (the cold path of a service with many idle documents). A cache
/// of the fold, never the truth: the executor uses it only when its digest
/// holds, and `verify` checks it against the last operation's state hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeadState {
    /// The model version the state is at.
    pub(crate) model_version: u32,
    /// `Digest::of(state)`: the `state_hash` of the stream's last operation.
    pub(crate) digest: Digest,
    #[serde(with = "serde_bytes")]
    pub(crate) state: Vec<u8>,
}

/// States larger than this stay out of the head: every append rewrites its
/// stream's head, so a large state there would multiply the bytes each
/// write costs; such streams fold from their snapshots instead.
pub(crate) const HEAD_STATE_MAX: usize = 1024;

impl HeadState {
    /// The state of a stream after a write, when it is small enough to keep
    /// in the head (the one place that rule lives).
    pub(crate) fn keep(model_version: u32, state: &[u8]) -> Option<Self> {
        (state.len() <= HEAD_STATE_MAX).then(|| Self {
            model_version,
            digest: Digest::of(state),
            state: state.to_vec(),
        })
    }

    /// Whether the state bytes are the ones the digest was taken of.
    pub(crate) fn intact(&self) -> bool {
        Digest::of(&self.state) == self.digest
    }
}

/// Version byte of the head values this build writes: v3 with a checksum.
/// Every field of a head steers writes (the revision guard, the stamp of
/// the next timestamp, whether a merge may plan from the tail, the kept
/// state's model version), and not all of them can be recomputed cheaply
/// from the operations, so a flipped byte must fail to decode.
const HEAD_V4: u8 = 4;
/// Head values with the kept state, without a checksum.
const HEAD_V3: u8 = 3;
/// Head values before the kept state.
const HEAD_V2: u8 = 2;
/// Bytes of blake3 that close a v4 head (damage, not forgery, is the
/// threat: 64 bits are plenty).
const HEAD_CHECKSUM: usize = 8;

// Format (v4): {version: u8 = 4}{HeadValue: bincode}{Option<HeadState>: bincode}
//              {blake3 of everything before it: first 8 bytes}
// Format (v3): {version: u8 = 3}{HeadValue: bincode}{Option<HeadState>: bincode}
// Format (v2): {version: u8 = 2}{HeadValue: bincode}
// Format (v1): {version: u8 = 1}{HeadValue without in_merge_order: bincode}
pub(crate) fn encode_head(head: &HeadValue, state: Option<&HeadState>) -> Vec<u8> {
    let mut out = vec![HEAD_V4];
    encode_body(&mut out, &(head, state));
    let sum = blake3::hash(&out);
    out.extend_from_slice(&sum.as_bytes()[..HEAD_CHECKSUM]);
    out
}

/// Whether a stored head value is checksummed (v4): then every field it
/// decodes to is what was written, without a look at its operations.
pub(crate) fn head_is_checksummed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&HEAD_V4)
}

/// A head value without its kept state (what the revision guard needs).
pub(crate) fn decode_head(bytes: &[u8]) -> Result<HeadValue> {
    decode_head_with_state(bytes).map(|(head, _)| head)
}

/// A head value and the state kept with it (`None` in heads before v3, and
/// when the writer gave none).
pub(crate) fn decode_head_with_state(bytes: &[u8]) -> Result<(HeadValue, Option<HeadState>)> {
    const CF: &str = crate::keys::CF_HEADS;
    const WHAT: &str = "head value";
    match bytes.split_first() {
        Some((&HEAD_V4, _)) if bytes.len() > 1 + HEAD_CHECKSUM => {
            let (summed, sum) = bytes.split_at(bytes.len() - HEAD_CHECKSUM);
            if &blake3::hash(summed).as_bytes()[..HEAD_CHECKSUM] != sum {
                return Err(Error::Corrupt {
                    cf: CF,
                    what: "head value (checksum)",
                });
            }
            decode_body(&summed[1..], CF, WHAT)
        }
        Some((&HEAD_V3, body)) => decode_body(body, CF, WHAT),
        Some((&HEAD_V2, body)) => Ok((decode_body(body, CF, WHAT)?, None)),
        Some((&V1, body)) => {
            let v1: HeadValueV1 = decode_body(body, CF, WHAT)?;
            let head = HeadValue {
                next_index: v1.next_index,
                last_hash: v1.last_hash,
                latest_timestamp_utc_ms: v1.latest_timestamp_utc_ms,
                document_type: v1.document_type,
                in_merge_order: true,
            };
            Ok((head, None))
        }
        _ => Err(Error::Corrupt { cf: CF, what: WHAT }),
    }
}

/// Where the operation at an ordinal lives. Written by
/// `content::write_ordinal` (held to bincode by a test), read by bincode.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(crate) struct OrdinalValue<'a> {
    pub(crate) document_type: &'a str,
    #[serde(borrow, with = "serde_bytes")]
    pub(crate) op_key: &'a [u8],
}

// Format (v1): {version: u8 = 1}{OrdinalValue: bincode}
/// Appends an ordinal value to `out`; returns where it is.
pub(crate) fn encode_ordinal_into(out: &mut Vec<u8>, value: &OrdinalValue<'_>) -> Range<usize> {
    let start = out.len();
    out.push(V1);
    content::write_ordinal(out, value);
    start..out.len()
}

pub(crate) fn decode_ordinal(bytes: &[u8]) -> Result<OrdinalValue<'_>> {
    const CF: &str = crate::keys::CF_ORDINALS;
    decode_body(
        split_version(bytes, CF, "ordinal value")?,
        CF,
        "ordinal value",
    )
}

// Format (v1): {version: u8 = 1}{unit_key bytes}
/// The op-id index value: the stream's unit key (index and skip are in the
/// index key).
pub(crate) fn encode_op_id(unit_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + unit_key.len());
    out.push(V1);
    out.extend_from_slice(unit_key);
    out
}

pub(crate) fn decode_op_id(bytes: &[u8]) -> Result<&[u8]> {
    split_version(bytes, crate::keys::CF_OP_IDS, "op id value")
}

// Format: {version: u32 BE}
pub(crate) fn encode_format_version() -> [u8; 4] {
    FORMAT_VERSION.to_be_bytes()
}

pub(crate) fn decode_format_version(bytes: &[u8]) -> Result<u32> {
    let raw: [u8; 4] = bytes.try_into().map_err(|_| Error::Corrupt {
        cf: "default",
        what: "format version",
    })?;
    Ok(u32::from_be_bytes(raw))
}

#[cfg(test)]
mod tests;
