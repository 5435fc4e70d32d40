//! How an action's input bytes look in a human-readable format (the JSON
//! of `reactordb export`, `inspect --scope`, `import`): as the JSON they
//! are when they are JSON, as `{"base64": "…"}` otherwise. Binary formats
//! (bincode on the wire) keep plain bytes. Owns only that mapping.
//!
//! The mapping must give back the exact bytes (the content hash and the
//! chain cover them), so JSON is written verbatim, never re-encoded, and
//! only when reading it back cannot be mistaken for another form:
//! - bytes that are not JSON, or hold a line break (an export is one
//!   operation per line), are base64;
//! - JSON that is itself an object of one `base64` string, or an array of
//!   integers 0–255 (how earlier builds wrote every input), is base64 too,
//!   so those two shapes always mean what they meant.
//!
//! Reading accepts all three: the base64 object, an array of byte values,
//! and any other JSON value (its text, verbatim, is the input).
//!
//! Byte-exact through serde_json's text (`to_string`, `from_str`), which
//! is what export and import use. Through `serde_json::Value` the JSON is
//! parsed and printed again (keys sorted, numbers normalised): an input
//! that went through a `Value` may come back as other bytes, and so with
//! another content hash. Keep export lines as text.

use base64::Engine;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The base64 form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Base64Form {
    base64: String,
}

/// Whether `bytes` can be written as the JSON they are: see the module
/// doc for the shapes that cannot.
fn shows_as_json(bytes: &[u8]) -> Option<&RawValue> {
    if bytes.contains(&b'\n') || bytes.contains(&b'\r') {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let raw: &RawValue = serde_json::from_str(text).ok()?;
    // RawValue trims surrounding whitespace; those bytes would be lost.
    if raw.get().len() != text.len() {
        return None;
    }
    if serde_json::from_str::<Base64Form>(text).is_ok() || byte_array(text).is_some() {
        return None;
    }
    Some(raw)
}

/// `text` as an array of byte values (the earlier builds' form).
fn byte_array(text: &str) -> Option<Vec<u8>> {
    serde_json::from_str::<Vec<u8>>(text).ok()
}

pub(crate) fn serialize<S: Serializer>(bytes: &Vec<u8>, s: S) -> Result<S::Ok, S::Error> {
    if !s.is_human_readable() {
        return serde_bytes::serialize(bytes, s);
    }
    match shows_as_json(bytes) {
        Some(raw) => raw.serialize(s),
        None => Base64Form {
            base64: BASE64.encode(bytes),
        }
        .serialize(s),
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    if !d.is_human_readable() {
        return serde_bytes::deserialize(d);
    }
    let raw = Box::<RawValue>::deserialize(d)?;
    let text = raw.get();
    if let Ok(form) = serde_json::from_str::<Base64Form>(text) {
        return BASE64
            .decode(form.base64)
            .map_err(|e| D::Error::custom(format!("input: bad base64: {e}")));
    }
    if let Some(bytes) = byte_array(text) {
        return Ok(bytes);
    }
    Ok(text.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Holder {
        #[serde(with = "super")]
        input: Vec<u8>,
    }

    fn json(bytes: &[u8]) -> String {
        serde_json::to_string(&Holder {
            input: bytes.to_vec(),
        })
        .expect("serialises")
    }

    fn back(text: &str) -> Vec<u8> {
        serde_json::from_str::<Holder>(text).expect("parses").input
    }

    #[test]
    fn json_inputs_show_as_json_and_come_back_exactly() {
        for input in [
            r#"{"by":1}"#,
            r#"{ "spaced" : [1, "two"] }"#,
            r#""a string""#,
            "42",
            "null",
            r#"[{"a":1}]"#,
            r#"[300]"#,
        ] {
            let text = json(input.as_bytes());
            assert_eq!(text, format!(r#"{{"input":{input}}}"#));
            assert_eq!(back(&text), input.as_bytes());
        }
    }

    #[test]
    fn other_bytes_and_ambiguous_json_are_base64() {
        for input in [
            &b"\xff\x00binary"[..],
            b"not json",
            b"{\"a\":\n1}",
            b" 1",
            br#"{"base64":"AAAA"}"#,
            b"[1,2,3]",
            b"[]",
            b"",
        ] {
            let text = json(input);
            assert!(text.starts_with(r#"{"input":{"base64":""#), "{text}");
            assert_eq!(back(&text), input);
        }
    }

    #[test]
    fn reads_the_byte_arrays_earlier_builds_wrote() {
        assert_eq!(back(r#"{"input":[123,125]}"#), b"{}");
        assert_eq!(back(r#"{"input":[]}"#), b"");
    }

    #[test]
    fn refuses_bad_base64() {
        assert!(serde_json::from_str::<Holder>(r#"{"input":{"base64":"!!"}}"#).is_err());
    }

    #[test]
    fn binary_formats_keep_plain_bytes() {
        let holder = Holder {
            input: br#"{"by":1}"#.to_vec(),
        };
        let config = bincode::config::standard();
        let encoded = bincode::serde::encode_to_vec(&holder, config).expect("encodes");
        let plain = bincode::serde::encode_to_vec(serde_bytes::Bytes::new(&holder.input), config)
            .expect("encodes");
        assert_eq!(encoded, plain);
        let (decoded, _): (Holder, _) =
            bincode::serde::decode_from_slice(&encoded, config).expect("decodes");
        assert_eq!(decoded, holder);
    }

    proptest! {
        #[test]
        fn any_bytes_come_back_exactly(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(back(&json(&input)), input);
        }

        #[test]
        fn any_json_text_comes_back_exactly(value in "[ -~]{0,40}") {
            // Printable ASCII: much of it JSON, much not.
            prop_assert_eq!(back(&json(value.as_bytes())), value.as_bytes());
        }
    }
}
