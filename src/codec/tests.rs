//! One fixture per value format version: bytes written by v1 must keep
//! decoding to the same values in every later build.

use super::*;
use crate::model::{ActionId, ActionType, Scope};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex fixture"))
        .collect()
}

fn sample_operation() -> Operation {
    let id = OperationId([7; 16]);
    let action = Action {
        id: ActionId::new("act-1").expect("valid"),
        action_type: ActionType::new("SET").expect("valid"),
        scope: Scope::global(),
        timestamp_utc_ms: 1_700_000_000_100,
        input: b"{\"v\":1}".to_vec(),
        context: Some(vec![1, 2]),
    };
    Operation {
        id,
        index: 3,
        skip: 1,
        timestamp_utc_ms: 1_700_000_000_123,
        hash: Digest([0xAB; 32]),
        state_hash: Digest([0xCD; 32]),
        content_hash: Operation::content_hash_of(&id, 1_700_000_000_123, &action),
        action,
        error: Some("boom".to_owned()),
    }
}

/// An operation's value as the store writes it (hash and ordinal zero).
fn encode(op: &Operation) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_operation(
        &mut bytes,
        &op.id,
        op.index,
        op.skip,
        op.timestamp_utc_ms,
        &op.state_hash,
        &op.content_hash,
        &op.action,
        &op.error,
    );
    bytes
}

/// Operation value v1, as written by the first release (no content hash).
const OPERATION_V1: &str =
    "01000000000000002aabababababababababababababababababababababababababababababababab10070707070707070707070707070707070301fd7b68e5cf8b01000020cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd056163742d310353455406676c6f62616cfd6468e5cf8b010000077b2276223a317d010201020104626f6f6d";

/// Operation value v2: v1 plus the content hash after the state hash.
const OPERATION_V2: &str =
    "02000000000000002aabababababababababababababababababababababababababababababababab10070707070707070707070707070707070301fd7b68e5cf8b01000020cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd20716678ade20cf229a214558bd398b5d48f9e42d64cb32af7df605663458592a2056163742d310353455406676c6f62616cfd6468e5cf8b010000077b2276223a317d010201020104626f6f6d";

#[test]
fn operation_v1_fixture_decodes_with_its_content_hash_computed() {
    let (decoded, ordinal) = decode_operation(&unhex(OPERATION_V1)).expect("v1 decodes");
    assert_eq!(decoded, sample_operation());
    assert!(decoded.content_hash_matches());
    assert_eq!(ordinal, Ordinal(42));
}

#[test]
fn operation_v2_fixture_decodes() {
    let op = sample_operation();
    // Appended after other bytes, as an append's shared buffer does.
    let mut buffer = b"before".to_vec();
    let at = encode_operation(
        &mut buffer,
        &op.id,
        op.index,
        op.skip,
        op.timestamp_utc_ms,
        &op.state_hash,
        &op.content_hash,
        &op.action,
        &op.error,
    );
    assert_eq!(&buffer[..at.start], b"before");
    assert_eq!(at.end, buffer.len());
    let encoded = &mut buffer[at];
    set_operation_hash(encoded, &op.hash);
    set_operation_ordinal(encoded, Ordinal(42));
    assert_eq!(hex(encoded), OPERATION_V2, "the v2 encoding changed");
    let (decoded, ordinal) = decode_operation(&unhex(OPERATION_V2)).expect("v2 decodes");
    assert_eq!(decoded, op);
    assert_eq!(ordinal, Ordinal(42));
    // The stored content hash is read, not recomputed: a v2 value carries
    // whatever was written (the chain commits to it).
    let mut other = op.clone();
    other.content_hash = Digest([0x11; 32]);
    let (read, _) = decode_operation(&encode(&other)).expect("v2 decodes");
    assert_eq!(read.content_hash, Digest([0x11; 32]));
    assert!(!read.content_hash_matches());
}

/// Head value v1.
const HEAD_V1: &str =
    "01fb2c01200909090909090909090909090909090909090909090909090909090909090909fd0068e5cf8b01000003742f78";

/// Head value v2: v1 plus the merge-order flag.
const HEAD_V2: &str =
    "02fb2c01200909090909090909090909090909090909090909090909090909090909090909fd0068e5cf8b01000003742f7800";

fn sample_head(in_merge_order: bool) -> HeadValue {
    HeadValue {
        next_index: 300,
        last_hash: Digest([9; 32]),
        latest_timestamp_utc_ms: 1_700_000_000_000,
        document_type: DocumentType::new("t/x").expect("valid"),
        in_merge_order,
    }
}

#[test]
fn head_v1_fixture_decodes_as_in_merge_order() {
    assert_eq!(
        decode_head(&unhex(HEAD_V1)).expect("v1 decodes"),
        sample_head(true)
    );
}

#[test]
fn head_v2_fixture_decodes_without_a_kept_state() {
    let head = sample_head(false);
    assert_eq!(
        decode_head_with_state(&unhex(HEAD_V2)).expect("v2 decodes"),
        (head, None)
    );
}

/// Head value v3: v2 plus the kept state.
const HEAD_V3: &str = "03fb2c01200909090909090909090909090909090909090909090909090909090909090909fd0068e5cf8b01000003742f78010102206e46dd10defc9b56c29a6ec56b508c21f54c08192194e4df25bf36f0c9c3c279027b7d";

#[test]
fn head_v3_fixture_decodes_with_its_kept_state() {
    let head = sample_head(true);
    let kept = HeadState::keep(2, b"{}").expect("small");
    assert!(kept.intact());
    assert_eq!(
        decode_head_with_state(&unhex(HEAD_V3)).expect("v3 decodes"),
        (head, Some(kept))
    );
}

/// Head value v4: v3 plus a checksum.
const HEAD_V4: &str = "04fb2c01200909090909090909090909090909090909090909090909090909090909090909fd0068e5cf8b01000003742f78010102206e46dd10defc9b56c29a6ec56b508c21f54c08192194e4df25bf36f0c9c3c279027b7d";

#[test]
fn head_v4_fixture_decodes_and_any_flipped_byte_is_corrupt() {
    let head = sample_head(true);
    let kept = HeadState::keep(2, b"{}").expect("small");
    let encoded = encode_head(&head, Some(&kept));
    // The v4 body is the v3 one; a checksum follows.
    assert_eq!(
        hex(&encoded[..encoded.len() - 8]),
        HEAD_V4,
        "the v4 encoding changed"
    );
    assert_eq!(
        decode_head_with_state(&encoded).expect("v4 decodes"),
        (head.clone(), Some(kept))
    );
    for i in 0..encoded.len() {
        let mut bad = encoded.clone();
        bad[i] ^= 0x04;
        assert!(
            decode_head_with_state(&bad).is_err(),
            "a flip at {i} went unnoticed"
        );
    }
    let none = encode_head(&head, None);
    assert_eq!(decode_head_with_state(&none).expect("v4"), (head, None));
}

#[test]
fn a_kept_state_is_bounded_and_its_damage_shows() {
    assert!(HeadState::keep(1, &[7; HEAD_STATE_MAX]).is_some());
    assert!(HeadState::keep(1, &[7; HEAD_STATE_MAX + 1]).is_none());
    let mut kept = HeadState::keep(1, b"state").expect("small");
    kept.state[0] ^= 1;
    assert!(!kept.intact());
}

/// Ordinal value v1.
const ORDINAL_V1: &str = "0103742f781664006d61696e00676c6f62616c000000000000000005";

#[test]
fn ordinal_v1_fixture_decodes() {
    let value = OrdinalValue {
        document_type: "t/x",
        op_key: b"d\0main\0global\0\0\0\0\0\0\0\0\x05",
    };
    let mut encoded = Vec::new();
    let at = encode_ordinal_into(&mut encoded, &value);
    assert_eq!(at, 0..encoded.len());
    assert_eq!(hex(&encoded), ORDINAL_V1);
    let bytes = unhex(ORDINAL_V1);
    let decoded = decode_ordinal(&bytes).expect("v1 decodes");
    assert_eq!(
        (decoded.document_type, decoded.op_key),
        (value.document_type, value.op_key)
    );
}

#[test]
fn unknown_versions_and_garbage_are_corrupt_not_panics() {
    let mut op = unhex(OPERATION_V1);
    op[0] = 3;
    assert!(matches!(decode_operation(&op), Err(Error::Corrupt { .. })));
    // A v1 value relabelled v2 lacks the content hash: corrupt, no panic.
    op[0] = 2;
    assert!(matches!(decode_operation(&op), Err(Error::Corrupt { .. })));
    for len in 0..60 {
        let bytes = vec![1u8; len];
        assert!(decode_operation(&bytes).is_err());
        assert!(decode_head(&bytes).is_err());
    }
    // A trailing byte is not silently ignored.
    let mut head = encode_head(
        &HeadValue {
            next_index: 1,
            last_hash: Digest::default(),
            latest_timestamp_utc_ms: 0,
            document_type: DocumentType::new("t").expect("valid"),
            in_merge_order: true,
        },
        None,
    );
    head.push(0);
    assert!(decode_head(&head).is_err());
    assert_eq!(
        decode_op_id(&encode_op_id(b"unit\0")).expect("v1"),
        b"unit\0"
    );
    assert_eq!(
        decode_format_version(&encode_format_version()).expect("v"),
        FORMAT_VERSION
    );
}

#[test]
fn an_operation_whose_skip_reaches_before_its_stream_is_corrupt() {
    let mut op = sample_operation();
    for (index, skip, ok) in [(3, 3, true), (3, 4, false), (0, 1, false), (0, 0, true)] {
        op.index = index;
        op.skip = skip;
        match decode_operation(&encode(&op)) {
            Ok((decoded, _)) => assert!(ok && decoded.skip == skip),
            Err(e) => assert!(!ok && matches!(e, Error::Corrupt { .. }), "{e:?}"),
        }
    }
}
