//! Actions, operations and the derived operation id.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ids::{
    ActionId, ActionType, Branch, DocumentId, DocumentType, Ordinal, Scope, SyncUnit,
};
use crate::error::IdError;

/// A 32-byte blake3 digest: an operation's chain `hash` or a `state_hash`.
/// Shown and serialised to human-readable formats as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

/// The derived id of an operation: 16 bytes of blake3 over
/// `(document, scope, branch, action id)`, so a re-indexed (reshuffled) copy
/// of an operation keeps its id. Shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperationId(pub(crate) [u8; 16]);

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

fn parse_hex<const N: usize>(kind: &'static str, text: &str) -> Result<[u8; N], IdError> {
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return Err(IdError::BadHex { kind });
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16);
        let lo = (pair[1] as char).to_digit(16);
        match (hi, lo) {
            (Some(hi), Some(lo)) => out[i] = (hi * 16 + lo) as u8,
            _ => return Err(IdError::BadHex { kind }),
        }
    }
    Ok(out)
}

macro_rules! hex_bytes {
    ($name:ident, $n:literal, $kind:literal) => {
        impl $name {
            /// Parses the hex form.
            pub fn from_hex(text: &str) -> Result<Self, IdError> {
                parse_hex::<$n>($kind, text).map(Self)
            }
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $n] {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                write_hex(f, &self.0)?;
                f.write_str(")")
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    serde_bytes::Bytes::new(&self.0).serialize(s)
                }
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let text = String::deserialize(d)?;
                    Self::from_hex(&text).map_err(serde::de::Error::custom)
                } else {
                    let bytes: serde_bytes::ByteArray<$n> = Deserialize::deserialize(d)?;
                    Ok(Self(bytes.into_array()))
                }
            }
        }
    };
}

hex_bytes!(Digest, 32, "digest");
hex_bytes!(OperationId, 16, "operation id");

impl Digest {
    /// The blake3 digest of `bytes`; a convenient `state_hash` for callers
    /// that hash their encoded state.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

impl OperationId {
    /// Derives the id of the operation that carries `action_id` in `unit`.
    /// Every field is length-prefixed, so no two tuples share an id input.
    pub fn derive(unit: &SyncUnit, action_id: &ActionId) -> Self {
        static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        // One contiguous input hashed in one call: ids are derived on the
        // append path, and one-shot hashing of a short input is cheaper
        // than feeding a hasher eight small pieces (same bytes, same hash).
        const MAX_INPUT: usize = 4 * (8 + crate::model::MAX_ID_LEN);
        const USUAL_INPUT: usize = 256;
        let parts = [
            unit.document_id.as_str(),
            unit.scope.as_str(),
            unit.branch.as_str(),
            action_id.as_str(),
        ];
        let fill = |input: &mut [u8]| {
            let mut len = 0;
            for part in parts {
                input[len..len + 8].copy_from_slice(&(part.len() as u64).to_be_bytes());
                input[len + 8..len + 8 + part.len()].copy_from_slice(part.as_bytes());
                len += 8 + part.len();
            }
            len
        };
        let key = domain_key(&KEY, "reactordb operation id v1");
        let total: usize = parts.iter().map(|p| 8 + p.len()).sum();
        // Usual ids fit a small buffer; zeroing the largest possible one
        // on every call would cost more than the hash.
        let hash = if total <= USUAL_INPUT {
            let mut input = [0u8; USUAL_INPUT];
            let len = fill(&mut input);
            blake3::keyed_hash(key, &input[..len])
        } else {
            let mut input = [0u8; MAX_INPUT];
            let len = fill(&mut input);
            blake3::keyed_hash(key, &input[..len])
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash.as_bytes()[..16]);
        Self(id)
    }
}

/// The key of one hashing domain: `blake3::derive_key(context, "")`,
/// computed once. Keyed hashing with it separates domains like
/// `derive_key` mode does, without re-hashing the context on every call
/// (ids and chain links are on the append path).
pub(crate) fn domain_key(
    cell: &'static std::sync::OnceLock<[u8; 32]>,
    context: &str,
) -> &'static [u8; 32] {
    cell.get_or_init(|| blake3::derive_key(context, b""))
}

/// What a user asked for: one intent, reduced by a document model into one
/// operation.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Action {
    /// Author-chosen id, unique within its stream.
    pub id: ActionId,
    /// The action type, e.g. `INCREMENT`.
    pub action_type: ActionType,
    /// The scope the action targets.
    pub scope: Scope,
    /// When the author created the action (milliseconds since the Unix epoch).
    pub timestamp_utc_ms: u64,
    /// The model-specific input, encoded by the model. In JSON (export,
    /// import) it shows as the JSON it is, or as `{"base64": "…"}`.
    #[serde(with = "super::input_text")]
    pub input: Vec<u8>,
    /// Opaque signing/app context carried with the action, if any.
    #[serde(with = "serde_bytes", default)]
    pub context: Option<Vec<u8>>,
}

impl Action {
    /// An action with no context.
    pub fn new(
        id: ActionId,
        action_type: ActionType,
        scope: Scope,
        timestamp_utc_ms: u64,
        input: Vec<u8>,
    ) -> Self {
        Self {
            id,
            action_type,
            scope,
            timestamp_utc_ms,
            input,
            context: None,
        }
    }
}

/// An operation as stored: an action placed at an index of its stream.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Operation {
    /// Derived from `(document, scope, branch, action id)`.
    pub id: OperationId,
    /// Position in the stream, from 0, gapless.
    pub index: u64,
    /// How many preceding operations this one supersedes (UNDO, reshuffle).
    pub skip: u64,
    /// When the operation was made (milliseconds since the Unix epoch).
    pub timestamp_utc_ms: u64,
    /// Chain hash: commits to the previous operation's hash in the stream and
    /// to this operation's content. Computed by the store only.
    pub hash: Digest,
    /// Hash of the scope state after this operation, computed by the
    /// executor; replicas compare it to detect divergence.
    pub state_hash: Digest,
    /// What the operation *is*: [`Operation::content_hash_of`] its id,
    /// timestamp and action (not where some replica stored it). Derived by
    /// the store, carried to peers, checked when a peer's operation is
    /// loaded, and the last field of the merge order. (Absent from the
    /// JSON an older build exported: zero there; `import` derives it again.)
    #[serde(default)]
    pub content_hash: Digest,
    /// The action this operation carries.
    pub action: Action,
    /// The reducer's error, if the action failed but was still recorded.
    pub error: Option<String>,
}

impl Operation {
    /// The content hash of an operation with this id, timestamp and action:
    /// keyed blake3 over the id, the timestamp and every field of the
    /// action, each variable-length field length-prefixed. The index,
    /// skip, chain hash, state hash and error are where and how one replica
    /// stored the operation, so they are left out.
    pub fn content_hash_of(id: &OperationId, timestamp_utc_ms: u64, action: &Action) -> Digest {
        static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let mut h = blake3::Hasher::new_keyed(domain_key(&KEY, "reactordb operation content v1"));
        let field = |h: &mut blake3::Hasher, bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        h.update(id.as_bytes());
        h.update(&timestamp_utc_ms.to_be_bytes());
        field(&mut h, action.id.as_str().as_bytes());
        field(&mut h, action.action_type.as_str().as_bytes());
        field(&mut h, action.scope.as_str().as_bytes());
        h.update(&action.timestamp_utc_ms.to_be_bytes());
        field(&mut h, &action.input);
        match &action.context {
            None => h.update(&[0]),
            Some(context) => {
                h.update(&[1]);
                field(&mut h, context);
                &mut h
            }
        };
        Digest(*h.finalize().as_bytes())
    }

    /// Whether `content_hash` is the hash of this operation's content (an
    /// operation edited after it was hashed fails this).
    pub fn content_hash_matches(&self) -> bool {
        self.content_hash == Self::content_hash_of(&self.id, self.timestamp_utc_ms, &self.action)
    }
}

/// An operation handed to [`AtomicTxn::add_operation`](crate::AtomicTxn):
/// everything but the fields the store derives (`id`, `content_hash` and
/// `hash`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NewOperation {
    /// Must equal the transaction's revision plus this operation's position.
    pub index: u64,
    /// How many preceding operations this one supersedes.
    pub skip: u64,
    /// When the operation was made (milliseconds since the Unix epoch).
    pub timestamp_utc_ms: u64,
    /// Hash of the scope state after this operation.
    pub state_hash: Digest,
    /// The action; its scope must be the transaction's scope.
    pub action: Action,
    /// The reducer's error, if any.
    pub error: Option<String>,
}

impl NewOperation {
    /// A successful operation with skip 0, timestamped with its action.
    pub fn new(index: u64, action: Action, state_hash: Digest) -> Self {
        Self {
            index,
            skip: 0,
            timestamp_utc_ms: action.timestamp_utc_ms,
            state_hash,
            action,
            error: None,
        }
    }
}

impl From<Operation> for NewOperation {
    /// Re-appends a stored operation (import, replay): drops the fields the
    /// store derives again.
    fn from(op: Operation) -> Self {
        Self {
            index: op.index,
            skip: op.skip,
            timestamp_utc_ms: op.timestamp_utc_ms,
            state_hash: op.state_hash,
            action: op.action,
            error: op.error,
        }
    }
}

/// Where an operation lives and its place in the global sequence.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OperationContext {
    /// The document.
    pub document_id: DocumentId,
    /// The document's type.
    pub document_type: DocumentType,
    /// The scope.
    pub scope: Scope,
    /// The branch.
    pub branch: Branch,
    /// The global position assigned when the operation was committed.
    pub ordinal: Ordinal,
}

impl OperationContext {
    /// The stream this operation belongs to.
    pub fn unit(&self) -> SyncUnit {
        SyncUnit::new(
            self.document_id.clone(),
            self.scope.clone(),
            self.branch.clone(),
        )
    }
}

/// An operation together with its stream and ordinal, as the ordinal feed
/// and the event bus carry it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OperationWithContext {
    /// The operation.
    pub operation: Operation,
    /// Its stream, type and ordinal.
    pub context: OperationContext,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id's definition, hashed piece by piece: keyed blake3 over the
    /// length-prefixed document, scope, branch and action id.
    fn reference(unit: &SyncUnit, action_id: &ActionId) -> OperationId {
        static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let mut hasher = blake3::Hasher::new_keyed(domain_key(&KEY, "reactordb operation id v1"));
        for part in [
            unit.document_id.as_str(),
            unit.scope.as_str(),
            unit.branch.as_str(),
            action_id.as_str(),
        ] {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        OperationId(id)
    }

    #[test]
    fn derived_ids_follow_the_definition_for_short_and_long_ids() {
        let short = SyncUnit::new(
            DocumentId::new("doc").expect("valid"),
            Scope::global(),
            Branch::main(),
        );
        let long = SyncUnit::new(
            DocumentId::new("d".repeat(255)).expect("valid"),
            Scope::new("s".repeat(255)).expect("valid"),
            Branch::new("b".repeat(255)).expect("valid"),
        );
        for action in ["a", &"x".repeat(200), &"y".repeat(255)] {
            let action = ActionId::new(action).expect("valid");
            for unit in [&short, &long] {
                assert_eq!(OperationId::derive(unit, &action), reference(unit, &action));
            }
        }
        // Pinned: ids are stored, so the derivation may never change.
        let pinned = OperationId::derive(&short, &ActionId::new("a").expect("valid"));
        assert_eq!(pinned.to_string(), PINNED_SHORT);
    }

    const PINNED_SHORT: &str = "3d5f78d21061676ba35000923ec55762";
}
