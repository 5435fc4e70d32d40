//! The key and value decoders on a fuzzer's bytes. A decoder must refuse
//! bad bytes with an error (never a panic, never an unbounded
//! allocation), and what it accepts must encode back: keys to the very
//! bytes (keys are compared and range-scanned as bytes, so two encodings
//! of one key would be two keys), values to bytes that decode to the same
//! thing.

use crate::codec::{self, HeadValue, OrdinalValue};
use crate::fold::Snapshot;
use crate::keys;

/// Every key decoder on `data`; each accepted key must re-encode to
/// exactly `data`.
pub fn fuzz_keys(data: &[u8]) {
    if let Some((unit, rest)) = keys::decode_unit_key(data) {
        let mut again = keys::unit_key(&unit);
        again.extend_from_slice(rest);
        assert_eq!(again, data, "unit key");
    }
    if let Some((unit, index)) = keys::decode_op_key(data) {
        assert_eq!(keys::op_key(&unit, index), data, "operation key");
        assert_eq!(keys::op_key_index(data), Some(index));
    }
    if let Some(ordinal) = keys::decode_ordinal_key(data) {
        assert_eq!(keys::ordinal_key(ordinal), data, "ordinal key");
    }
    if let Some((id, index, skip)) = keys::decode_op_id_key(data) {
        assert_eq!(keys::op_id_key(&id, index, skip), data, "op-id key");
    }
    if let (Some(&tag), Some(fields)) = (data.first(), keys::view_key_fields(data)) {
        assert_eq!(keys::view_key(tag, &fields), data, "view key");
    }
}

/// One value decoder, picked by the first byte, on the rest.
pub fn fuzz_values(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 8 {
        0 => operation(bytes),
        1 => head(bytes),
        2 => ordinal(bytes),
        3 => {
            let _ = codec::decode_op_id(bytes);
            let _ = codec::decode_format_version(bytes);
        }
        4 => snapshot(bytes),
        5 => header_record(bytes),
        _ => crate::sync::fuzz_decode(selector / 8, bytes),
    }
}

fn operation(bytes: &[u8]) {
    let Ok((op, ordinal)) = codec::decode_operation(bytes) else {
        return;
    };
    assert!(op.skip <= op.index, "a decoded skip reaches before index 0");
    let mut again = Vec::new();
    let range = codec::encode_operation(
        &mut again,
        &op.id,
        op.index,
        op.skip,
        op.timestamp_utc_ms,
        &op.state_hash,
        &op.content_hash,
        &op.action,
        &op.error,
    );
    codec::set_operation_hash(&mut again[range.clone()], &op.hash);
    codec::set_operation_ordinal(&mut again[range], ordinal);
    let decoded = codec::decode_operation(&again).expect("an encoded operation decodes");
    assert_eq!(decoded, (op, ordinal), "operation value");
}

fn head(bytes: &[u8]) {
    let Ok((head, state)) = codec::decode_head_with_state(bytes) else {
        return;
    };
    let _ = state.as_ref().map(|s| s.intact());
    let again = codec::encode_head(&head, state.as_ref());
    let decoded: (HeadValue, _) = codec::decode_head_with_state(&again).expect("decodes");
    assert_eq!(decoded, (head, state), "head value");
}

fn ordinal(bytes: &[u8]) {
    let Ok(value) = codec::decode_ordinal(bytes) else {
        return;
    };
    let (document_type, op_key) = (value.document_type.to_owned(), value.op_key.to_vec());
    let mut again = Vec::new();
    codec::encode_ordinal_into(&mut again, &value);
    let decoded: OrdinalValue<'_> = codec::decode_ordinal(&again).expect("decodes");
    assert_eq!(decoded.document_type, document_type, "ordinal value");
    assert_eq!(decoded.op_key, op_key, "ordinal value");
    // A decoded op key names a stream or is refused; never a panic.
    let _ = keys::decode_op_key(&op_key);
}

fn snapshot(bytes: &[u8]) {
    // The self hash is checked first, so bytes that pass it are a
    // snapshot this process encoded; a fuzzer meets the hash check.
    if let Some((snapshot, hash)) = Snapshot::decode(bytes) {
        let (again, again_hash) = snapshot.encode();
        assert_eq!(again_hash, hash);
        assert_eq!(Snapshot::decode(&again), Some((snapshot, hash)));
    }
}

fn header_record(bytes: &[u8]) {
    if let Ok(record) = crate::view::decode_header_record(bytes) {
        let _ = record.header();
        let again = crate::view::encode_header_record(&record);
        assert_eq!(crate::view::decode_header_record(&again).ok(), Some(record));
    }
}
