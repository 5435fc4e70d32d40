//! The hash chain: the one function that links an operation to its
//! predecessor. Nothing else in the crate computes a chain hash.

use crate::model::Digest;

static CHAIN_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();

/// The chain hash of an operation: blake3 over the previous operation's hash
/// in the same stream (zero for the first), the stream's key, and the
/// operation's encoded content (id, index, skip, timestamp, state hash,
/// action, error). Any edit to stored history changes every later link.
pub(crate) fn link(previous: &Digest, unit_key: &[u8], content: &[u8]) -> Digest {
    let mut hasher =
        blake3::Hasher::new_keyed(crate::model::domain_key(&CHAIN_KEY, "reactordb chain v1"));
    hasher.update(&previous.0);
    hasher.update(&(unit_key.len() as u64).to_be_bytes());
    hasher.update(unit_key);
    hasher.update(content);
    Digest(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_link() {
        let base = link(&Digest::default(), b"unit", b"content");
        assert_ne!(base, link(&Digest([1; 32]), b"unit", b"content"));
        assert_ne!(base, link(&Digest::default(), b"unix", b"content"));
        assert_ne!(base, link(&Digest::default(), b"unit", b"contenT"));
        // The unit key is length-prefixed: moving a byte across the boundary
        // between key and content changes the hash.
        assert_ne!(base, link(&Digest::default(), b"unitc", b"ontent"));
        assert_eq!(base, link(&Digest::default(), b"unit", b"content"));
    }
}
