//! The sync protocol's bytes: frames (versioned, checksummed), the messages
//! they carry, and one operation as it travels. Owns every byte that
//! crosses a channel; knows nothing of sessions or the store.
//!
//! A frame is `magic "RDBS" | protocol u16 | length u32 | payload |
//! blake3(everything before)[..16]`. The protocol number is outside the
//! payload so a peer of another version is recognised before anything of
//! its payload is decoded. An operation travels as its own byte string
//! inside an envelope, so one malformed operation is refused (a dead
//! letter) while the rest of its envelope is loaded.

use serde::{Deserialize, Serialize};

use crate::model::{
    Action, Branch, Digest, DocumentId, DocumentType, Operation, OperationContext, OperationId,
    OperationWithContext, Ordinal, Scope, SyncUnit,
};

/// The sync protocol this build speaks. Peers announce theirs in the frame
/// header and in `Hello`; a different one is refused.
pub const PROTOCOL_VERSION: u16 = 2;

const MAGIC: &[u8; 4] = b"RDBS";
const HEADER: usize = 4 + 2 + 4;
const CHECKSUM: usize = 16;
/// The largest payload a frame may carry (a peer cannot make us allocate
/// more than this for one frame).
pub(crate) const MAX_PAYLOAD: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_PAYLOAD>()
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Another protocol version; nothing else of the frame was read.
    Version(u16),
    /// Damaged or cut short in transit (bad magic, length or checksum).
    Damaged(&'static str),
    /// The checksum held but the payload is not a message of this version.
    Malformed(String),
}

/// A session's messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Message {
    /// Sent on connect, and again until the peer shows it was seen.
    Hello(Hello),
    /// The peer refuses the session; the reason is for a human.
    Refuse { reason: String },
    /// Operations of the sender's ordinals `first..=last`: every ordinal in
    /// the range was considered, so those filtered out are covered too.
    Envelope {
        /// The sender's outbox epoch toward the receiver (see `Rewind`):
        /// an envelope of another epoch than the receiver's is dropped.
        epoch: u64,
        first: u64,
        last: u64,
        /// The chain hash of the sender's operation at ordinal `last`:
        /// the receiver keeps it with its inbox cursor and shows it back in
        /// its hello, so a sender whose ordinals were reused (restored
        /// from a backup, then written) sees that the cursor is not its.
        witness: Digest,
        operations: Vec<WireOperation>,
    },
    /// Start your inbox for me again from 0, in this new epoch:
    /// everything comes anew (my ordinals were reused, or the filter
    /// changed). Sent until `Rewound` with the same epoch. A receiver
    /// rewinds once per epoch; an older epoch is stale and ignored.
    Rewind { epoch: u64 },
    /// The inbox is in this epoch (it was started again for it).
    Rewound { epoch: u64 },
    /// The receiver has durably loaded every ordinal of the sender up to
    /// `cursor`. `gap`: it holds a later envelope it cannot load yet.
    Ack { epoch: u64, cursor: u64, gap: bool },
    /// Anti-entropy: per stream, the digest of the operation set the sender
    /// holds and would send.
    Digests { streams: Vec<StreamDigest> },
    /// Anti-entropy: operations of streams whose digests differed, outside
    /// any cursor. At most a few are unacknowledged at a time, so repairs
    /// never fill a channel the peer is not reading.
    Repair {
        seq: u64,
        operations: Vec<WireOperation>,
    },
    /// The repair `seq` is loaded.
    RepairAck { seq: u64 },
}

/// The first message of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub protocol: u16,
    /// The sender's node id (fixed when its database was created).
    pub node: [u8; 16],
    /// The sender's name (the receiver's name for this remote).
    pub name: String,
    /// The sender's inbox cursor for the receiver: the receiver resends
    /// from just after it.
    pub inbox_cursor: u64,
    /// The witness of that cursor (see `Message::Envelope::witness`).
    pub inbox_witness: Option<Digest>,
    /// The epoch of that inbox (see `Message::Rewind`).
    pub inbox_epoch: u64,
    /// The sender's last ordinal: an inbox cursor past it means the sender
    /// went back (restored from a backup).
    pub last_ordinal: u64,
    /// Whether the sender has seen the receiver's hello.
    pub seen_yours: bool,
}

/// Per stream: how many operations, and the XOR of their content hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StreamDigest {
    pub unit: SyncUnit,
    pub count: u64,
    pub digest: Digest,
}

/// One operation in an envelope: its encoded [`SyncedOperation`], the node
/// that originated it, and its originator's signature, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireOperation {
    /// The sender's ordinal of the operation (0 in a repair).
    pub ordinal: u64,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// The node id of the reactor that executed it first (its originator;
    /// [`UNKNOWN_ORIGIN`] when the sender does not know it). Carried
    /// unchanged from replica to replica, so every replica counts an
    /// operation under the same origin (the audit's per-origin vector).
    /// Not signed: a count, not a proof.
    pub origin: [u8; 16],
    pub signature: Option<Signature>,
}

/// The origin of an operation whose originator is not known (recorded by a
/// build before protocol 2).
pub(crate) const UNKNOWN_ORIGIN: [u8; 16] = [0; 16];

/// An ed25519 signature over an operation's signed digest (`SyncedOperation::signed_digest`)
/// and the public key that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The signer's public key.
    pub key: [u8; 32],
    /// The signature.
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
}

/// What travels of an operation: its stream, type, id and content (not
/// where the sender stored it: each replica computes its own history).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SyncedOperation {
    pub document_id: DocumentId,
    pub document_type: DocumentType,
    pub scope: Scope,
    pub branch: Branch,
    pub id: OperationId,
    pub timestamp_utc_ms: u64,
    pub content_hash: Digest,
    pub action: Action,
}

impl SyncedOperation {
    pub(crate) fn of(item: &OperationWithContext) -> Self {
        let (op, context) = (&item.operation, &item.context);
        Self {
            document_id: context.document_id.clone(),
            document_type: context.document_type.clone(),
            scope: context.scope.clone(),
            branch: context.branch.clone(),
            id: op.id,
            timestamp_utc_ms: op.timestamp_utc_ms,
            content_hash: op.content_hash,
            action: op.action.clone(),
        }
    }

    pub(crate) fn unit(&self) -> SyncUnit {
        SyncUnit::new(
            self.document_id.clone(),
            self.scope.clone(),
            self.branch.clone(),
        )
    }

    /// Why this operation cannot be what it claims, if it cannot: its id
    /// must derive from its stream and action, its content must hash to
    /// the hash it carries, its scope must be its action's and not `local`.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.scope == Scope::local() {
            return Err("a local-scope operation never leaves its reactor".into());
        }
        if self.action.scope != self.scope {
            return Err(format!(
                "it is in scope {} but its action in {}",
                self.scope, self.action.scope
            ));
        }
        if self.id != OperationId::derive(&self.unit(), &self.action.id) {
            return Err("its id does not derive from its stream and action".into());
        }
        let hash = Operation::content_hash_of(&self.id, self.timestamp_utc_ms, &self.action);
        if hash != self.content_hash {
            return Err("tampered: its content does not match its content hash".into());
        }
        Ok(())
    }

    /// What a signature covers: the stream, the document type and the
    /// content hash (which covers the id, timestamp and action).
    pub(crate) fn signed_digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("reactordb signed operation v1");
        for field in [
            self.document_id.as_str(),
            self.scope.as_str(),
            self.branch.as_str(),
            self.document_type.as_str(),
        ] {
            h.update(&(field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
        h.update(self.content_hash.as_bytes());
        *h.finalize().as_bytes()
    }

    /// The operation to hand to `Reactor::load`: index, skip and hashes are
    /// the receiver's to compute.
    pub(crate) fn into_loadable(self) -> OperationWithContext {
        OperationWithContext {
            context: OperationContext {
                document_id: self.document_id,
                document_type: self.document_type,
                scope: self.scope,
                branch: self.branch,
                ordinal: Ordinal(0),
            },
            operation: Operation {
                id: self.id,
                index: 0,
                skip: 0,
                timestamp_utc_ms: self.timestamp_utc_ms,
                hash: Digest::default(),
                state_hash: Digest::default(),
                content_hash: self.content_hash,
                action: self.action,
                error: None,
            },
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, config()).expect("encoding into a Vec cannot fail")
    }

    /// Decodes one operation; the error names what was wrong.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bincode::serde::decode_from_slice::<Self, _>(bytes, config()) {
            Ok((op, used)) if used == bytes.len() => Ok(op),
            Ok((_, used)) => Err(format!(
                "malformed: {} bytes after the operation's {used}",
                bytes.len() - used
            )),
            Err(bincode::error::DecodeError::UnexpectedEnd { .. }) => {
                Err("truncated: the operation's bytes end early".into())
            }
            Err(e) => Err(format!("malformed: {e}")),
        }
    }
}

/// Encodes a message as a frame of this protocol.
pub(crate) fn encode_frame(message: &Message) -> Vec<u8> {
    let payload =
        bincode::serde::encode_to_vec(message, config()).expect("encoding into a Vec cannot fail");
    frame_with(PROTOCOL_VERSION, &payload)
}

/// A frame of any protocol number around any payload (tests speak other
/// versions with it).
pub(crate) fn frame_with(protocol: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len() + CHECKSUM);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&protocol.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    let sum = blake3::hash(&out);
    out.extend_from_slice(&sum.as_bytes()[..CHECKSUM]);
    out
}

/// Reads a frame: checks its magic, version, length and checksum, then
/// decodes its message.
pub(crate) fn decode_frame(bytes: &[u8]) -> Result<Message, FrameError> {
    if bytes.len() < HEADER + CHECKSUM || &bytes[..4] != MAGIC {
        return Err(FrameError::Damaged("not a sync frame"));
    }
    let protocol = u16::from_be_bytes([bytes[4], bytes[5]]);
    if protocol != PROTOCOL_VERSION {
        return Err(FrameError::Version(protocol));
    }
    let len = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
    if len > MAX_PAYLOAD || bytes.len() != HEADER + len + CHECKSUM {
        return Err(FrameError::Damaged("its length is wrong"));
    }
    let (body, sum) = bytes.split_at(HEADER + len);
    if &blake3::hash(body).as_bytes()[..CHECKSUM] != sum {
        return Err(FrameError::Damaged("its checksum does not match"));
    }
    match bincode::serde::decode_from_slice::<Message, _>(&body[HEADER..], config()) {
        Ok((message, used)) if used == len => Ok(message),
        Ok(_) => Err(FrameError::Malformed("bytes after the message".into())),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{ActionId, ActionType};

    fn op() -> SyncedOperation {
        let unit = SyncUnit::new(
            DocumentId::new("d").unwrap(),
            Scope::global(),
            Branch::main(),
        );
        let action = Action::new(
            ActionId::new("a").unwrap(),
            ActionType::new("INCREMENT").unwrap(),
            Scope::global(),
            5,
            b"1".to_vec(),
        );
        let id = OperationId::derive(&unit, &action.id);
        SyncedOperation {
            document_id: unit.document_id,
            document_type: DocumentType::new("example/counter").unwrap(),
            scope: unit.scope,
            branch: unit.branch,
            id,
            timestamp_utc_ms: 6,
            content_hash: Operation::content_hash_of(&id, 6, &action),
            action,
        }
    }

    #[test]
    fn a_frame_round_trips_and_every_flipped_byte_is_caught() {
        let message = Message::Envelope {
            epoch: 1,
            first: 3,
            last: 9,
            witness: Digest([5; 32]),
            operations: vec![WireOperation {
                ordinal: 4,
                bytes: op().encode(),
                origin: [7; 16],
                signature: None,
            }],
        };
        let frame = encode_frame(&message);
        assert_eq!(decode_frame(&frame), Ok(message));
        for at in 0..frame.len() {
            let mut bad = frame.clone();
            bad[at] ^= 0x20;
            assert!(decode_frame(&bad).is_err(), "flip at byte {at} went unseen");
        }
        for len in 0..frame.len() {
            assert!(decode_frame(&frame[..len]).is_err(), "cut at {len}");
        }
    }

    #[test]
    fn another_protocol_is_named_before_its_payload_is_read() {
        let frame = frame_with(PROTOCOL_VERSION + 1, b"anything at all");
        assert_eq!(
            decode_frame(&frame),
            Err(FrameError::Version(PROTOCOL_VERSION + 1))
        );
    }

    #[test]
    fn an_operation_is_checked_for_what_it_claims() {
        let good = op();
        assert_eq!(good.check(), Ok(()));
        assert_eq!(SyncedOperation::decode(&good.encode()), Ok(good.clone()));

        let mut tampered = good.clone();
        tampered.action.input = b"2".to_vec();
        assert!(tampered.check().unwrap_err().starts_with("tampered"));

        let mut moved = good.clone();
        moved.document_id = DocumentId::new("other").unwrap();
        assert!(moved.check().unwrap_err().contains("derive"));

        let bytes = good.encode();
        let cut = SyncedOperation::decode(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(cut.starts_with("truncated"), "{cut}");
        let mut long = bytes.clone();
        long.push(0);
        assert!(SyncedOperation::decode(&long)
            .unwrap_err()
            .starts_with("malformed"));
    }
}
