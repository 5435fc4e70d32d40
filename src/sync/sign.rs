//! Signatures: a node with a key signs the operations it originates
//! (ed25519 over [`SyncedOperation::signed_digest`]); a remote whose options
//! name trusted keys must send every operation signed by one of them.

use ed25519_dalek::{Signer, Verifier};

use super::wire::{Signature, SyncedOperation};

/// An ed25519 signing key (its secret half). Keep its bytes secret; give
/// peers [`SigningKey::public_key`].
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKey(public {})",
            super::state::hex(&self.public_key())
        )
    }
}

impl SigningKey {
    /// The key with this 32-byte secret.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&secret))
    }

    /// A key derived from a seed phrase (for tests and examples; use
    /// `from_secret` with real randomness otherwise).
    pub fn from_seed_phrase(phrase: &str) -> Self {
        Self::from_secret(blake3::derive_key(
            "reactordb signing key seed v1",
            phrase.as_bytes(),
        ))
    }

    /// The public key peers trust.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    pub(crate) fn sign(&self, op: &SyncedOperation) -> Signature {
        Signature {
            key: self.public_key(),
            signature: self.0.sign(&op.signed_digest()).to_bytes(),
        }
    }
}

/// Whether `signature` is a valid signature of `op` by its key.
pub(crate) fn is_valid(op: &SyncedOperation, signature: &Signature) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&signature.key) else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(&signature.signature);
    key.verify(&op.signed_digest(), &sig).is_ok()
}

/// Why `op` with `signature` is refused from a remote that must send
/// signatures by `trusted` keys (`None`: accepted).
pub(crate) fn refusal(
    op: &SyncedOperation,
    signature: Option<&Signature>,
    trusted: &[[u8; 32]],
) -> Option<String> {
    if trusted.is_empty() {
        return None;
    }
    match signature {
        None => Some("forged: unsigned, and this remote must send signed operations".into()),
        Some(s) if !trusted.contains(&s.key) => {
            Some("forged: signed by a key this remote is not trusted with".into())
        }
        Some(s) if !is_valid(op, s) => Some("forged: its signature does not verify".into()),
        Some(_) => None,
    }
}
