//! The operation content and the ordinal value, written by hand in exactly
//! the bytes bincode 2 (standard configuration, through serde) gives
//! [`ContentRef`] and [`OrdinalValue`].
//!
//! Why by hand: the content is encoded on every append, and going through
//! serde's field-by-field calls cost more than the rest of the encoding.
//! Reading stays with bincode (`decode_operation`), so the format has one
//! definition; the tests below hold the two to the same bytes for arbitrary
//! operations.

use super::{ContentRef, OrdinalValue};

/// bincode's variable-length integer: one byte below 251, else a marker
/// and the value little-endian in 2, 4 or 8 bytes.
pub(super) fn varint(out: &mut Vec<u8>, value: u64) {
    if value < 251 {
        out.push(value as u8);
    } else if let Ok(v) = u16::try_from(value) {
        out.push(251);
        out.extend_from_slice(&v.to_le_bytes());
    } else if let Ok(v) = u32::try_from(value) {
        out.push(252);
        out.extend_from_slice(&v.to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// Strings and byte strings: length, then the bytes.
pub(super) fn bytes(out: &mut Vec<u8>, value: &[u8]) {
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

pub(super) fn write(out: &mut Vec<u8>, content: &ContentRef<'_>) {
    bytes(out, &content.id.0);
    varint(out, content.index);
    varint(out, content.skip);
    varint(out, content.timestamp_utc_ms);
    bytes(out, &content.state_hash.0);
    bytes(out, &content.content_hash.0);
    let action = content.action;
    bytes(out, action.id.as_str().as_bytes());
    bytes(out, action.action_type.as_str().as_bytes());
    bytes(out, action.scope.as_str().as_bytes());
    varint(out, action.timestamp_utc_ms);
    bytes(out, &action.input);
    match &action.context {
        None => out.push(0),
        Some(context) => {
            out.push(1);
            bytes(out, context);
        }
    }
    match content.error {
        None => out.push(0),
        Some(error) => {
            out.push(1);
            bytes(out, error.as_bytes());
        }
    }
}

pub(super) fn write_ordinal(out: &mut Vec<u8>, value: &OrdinalValue<'_>) {
    bytes(out, value.document_type.as_bytes());
    bytes(out, value.op_key);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{Action, ActionId, ActionType, Digest, OperationId, Scope};

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_./-]{1,255}"
    }

    proptest! {
        #[test]
        fn writes_what_bincode_writes(
            id in any::<[u8; 16]>(),
            numbers in proptest::collection::vec(
                prop_oneof![0u64..300, 60_000u64..70_000, 4_000_000_000u64..5_000_000_000, any::<u64>()],
                5,
            ),
            state in any::<[u8; 32]>(),
            content_hash in any::<[u8; 32]>(),
            names in proptest::collection::vec(text(), 3),
            input in proptest::collection::vec(any::<u8>(), 0..400),
            context in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            error in proptest::option::of(".{0,300}"),
        ) {
            let action = Action {
                id: ActionId::new(names[0].clone()).expect("valid"),
                action_type: ActionType::new(names[1].clone()).expect("valid"),
                scope: Scope::new(names[2].clone()).expect("valid"),
                timestamp_utc_ms: numbers[3],
                input,
                context,
            };
            let content = ContentRef {
                id: &OperationId(id),
                index: numbers[0],
                skip: numbers[1],
                timestamp_utc_ms: numbers[2],
                state_hash: &Digest(state),
                content_hash: &Digest(content_hash),
                action: &action,
                error: &error,
            };
            let mut ours = Vec::new();
            write(&mut ours, &content);
            let mut theirs = Vec::new();
            super::super::encode_body(&mut theirs, &content);
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn writes_ordinal_values_as_bincode_does(
            document_type in text(),
            op_key in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let value = OrdinalValue { document_type: &document_type, op_key: &op_key };
            let mut ours = Vec::new();
            write_ordinal(&mut ours, &value);
            let mut theirs = Vec::new();
            super::super::encode_body(&mut theirs, &value);
            prop_assert_eq!(ours, theirs);
        }
    }
}
