//! Subjects of the relay's messages:
//! `{prefix}.ops.{partition}.{document}`, where the partition is two hex
//! digits of the document id's hash (256 partitions) and the document is
//! its id in unpadded URL-safe base64 (every byte of an id is allowed;
//! subject tokens may not hold `.`, `*`, `>` or white space). NATS 2.9
//! gives a consumer one filter subject, wildcards allowed: all of the
//! stream is `{prefix}.ops.>`, one partition `{prefix}.ops.{pp}.>`.

use base64::Engine;

use crate::model::DocumentId;

/// The partition of a document: the first byte of the hash of its id.
pub(crate) fn partition(document: &DocumentId) -> u8 {
    blake3::hash(document.as_str().as_bytes()).as_bytes()[0]
}

/// The subject a document's operations are published on.
pub(crate) fn of_document(prefix: &str, document: &DocumentId) -> String {
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(document.as_str());
    format!("{prefix}.ops.{:02x}.{id}", partition(document))
}

/// The subjects of every document: the stream's subjects and the
/// consumer's filter.
pub(crate) fn all(prefix: &str) -> String {
    format!("{prefix}.ops.>")
}

/// The subjects of one partition's documents: a partition's consumer's
/// filter.
pub(crate) fn of_partition(prefix: &str, partition: u8) -> String {
    format!("{prefix}.ops.{partition:02x}.>")
}

/// Whether `token` can be one subject token.
pub(crate) fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && !token
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control())
}

/// Whether `name` can name a stream or a consumer.
pub(crate) fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A consumer name made from a node's name and id (hex): what `is_name`
/// refuses becomes `_`; the id keeps two nodes of one name apart.
pub(crate) fn consumer_of(node: &str, id: &str) -> String {
    let clean: String = node
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{clean}_{}", &id[..id.len().min(16)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_id_makes_one_valid_subject_of_its_own() {
        let ids = ["a", "a.b", "a b*>", "ünï/cödé", "x".repeat(200).as_str()].map(String::from);
        let mut seen = std::collections::HashSet::new();
        for id in &ids {
            let document = DocumentId::new(id.clone()).expect("a valid id");
            let subject = of_document("reactordb", &document);
            let tokens: Vec<&str> = subject.split('.').collect();
            assert_eq!(tokens.len(), 4, "{subject}");
            assert!(tokens.iter().all(|t| !t.is_empty()), "{subject}");
            assert!(!subject.contains(['*', '>', ' ', '\t']), "{subject}");
            assert!(subject.is_ascii(), "{subject}");
            assert_eq!(tokens[2], format!("{:02x}", partition(&document)));
            assert!(seen.insert(subject));
        }
    }

    #[test]
    fn consumer_names_are_valid_and_keep_nodes_apart() {
        let (a, b) = (
            consumer_of("node a", "00112233445566778899"),
            consumer_of("node a", "99112233445566778800"),
        );
        assert!(is_name(&a) && is_name(&b));
        assert_ne!(a, b);
        assert!(is_name(&consumer_of(&"ü".repeat(100), "ab")));
    }
}
