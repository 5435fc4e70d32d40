//! Validated identifiers: every id that reaches the store went through one of
//! these constructors, so the key layout never sees a byte it cannot carry.

use std::fmt;

use std::sync::{Arc, LazyLock};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::IdError;

/// Longest id, in bytes, that any text identifier may have.
pub const MAX_ID_LEN: usize = 255;

/// Checks the rule shared by every text id: non-empty, at most
/// [`MAX_ID_LEN`] bytes, and no NUL byte (NUL terminates fields in keys) or
/// other control character.
fn validate_text(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
            max: MAX_ID_LEN,
        });
    }
    if let Some(position) = value.find(|c: char| c.is_control()) {
        return Err(IdError::ForbiddenCharacter { kind, position });
    }
    Ok(())
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// Cloning is cheap (a shared, immutable string): ids are copied into
        /// every operation's context.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps `value`: non-empty, at most
            /// [`MAX_ID_LEN`](crate::MAX_ID_LEN) bytes of UTF-8, no control
            /// characters.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate_text($kind, &value)?;
                Ok(Self(Arc::from(value)))
            }

            /// Validates a borrowed string (decoding): one allocation.
            fn checked(value: &str) -> Result<Self, IdError> {
                validate_text($kind, value)?;
                Ok(Self(Arc::from(value)))
            }

            /// Validates raw bytes (as read from a key or the wire).
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
                let text = std::str::from_utf8(bytes).map_err(|_| IdError::NotUtf8 { kind: $kind })?;
                Self::checked(text)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(value: &str) -> Result<Self, IdError> {
                Self::checked(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // A plain string on the wire, validated when read back. Written by
        // hand so encoding borrows the text instead of copying it.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Text;
                impl<'de> Visitor<'de> for Text {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($kind)
                    }
                    fn visit_str<E: de::Error>(self, value: &str) -> Result<$name, E> {
                        $name::checked(value).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Text)
            }
        }
    };
}

text_id!(
    /// The id of a document, unique within a store.
    DocumentId,
    "document id"
);
text_id!(
    /// The type of a document (which `DocumentModel` reduces it), e.g.
    /// `powerhouse/counter`.
    DocumentType,
    "document type"
);
text_id!(
    /// A scope of a document: `document` (system actions), `global`,
    /// `local`, or a custom one.
    Scope,
    "scope"
);
text_id!(
    /// A branch of a document; the default is `main`.
    Branch,
    "branch"
);
text_id!(
    /// The id of an action, chosen by its author (usually a UUID). Unique
    /// within a stream: resubmitting the same id does not apply it twice.
    ActionId,
    "action id"
);
text_id!(
    /// The type of an action, e.g. `INCREMENT` or `CREATE_DOCUMENT`.
    ActionType,
    "action type"
);

impl Scope {
    /// The `document` scope, holding the engine's system actions.
    pub fn document() -> Self {
        static DOCUMENT: LazyLock<Scope> = LazyLock::new(|| Scope(Arc::from("document")));
        DOCUMENT.clone()
    }
    /// The `global` scope, shared with every replica.
    pub fn global() -> Self {
        static GLOBAL: LazyLock<Scope> = LazyLock::new(|| Scope(Arc::from("global")));
        GLOBAL.clone()
    }
    /// The `local` scope, private to its reactor.
    pub fn local() -> Self {
        static LOCAL: LazyLock<Scope> = LazyLock::new(|| Scope(Arc::from("local")));
        LOCAL.clone()
    }
}

impl Branch {
    /// The default branch, `main`.
    pub fn main() -> Self {
        static MAIN: LazyLock<Branch> = LazyLock::new(|| Branch(Arc::from("main")));
        MAIN.clone()
    }
}

impl Default for Branch {
    fn default() -> Self {
        Self::main()
    }
}

/// A stream of operations: `(document, scope, branch)`. Each sync unit has
/// its own gapless index sequence and its own hash chain.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SyncUnit {
    /// The document.
    pub document_id: DocumentId,
    /// The scope within the document.
    pub scope: Scope,
    /// The branch.
    pub branch: Branch,
}

impl SyncUnit {
    /// Names a stream.
    pub fn new(document_id: DocumentId, scope: Scope, branch: Branch) -> Self {
        Self {
            document_id,
            scope,
            branch,
        }
    }
}

impl fmt::Display for SyncUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.document_id, self.scope, self.branch)
    }
}

impl fmt::Debug for SyncUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncUnit({self})")
    }
}

macro_rules! counter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw number.
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                Self(value)
            }
        }
    };
}

counter!(
    /// The revision of a stream: its next index, i.e. the number of
    /// operations in it. `apply(.., revision, ..)` passes the index the first
    /// new operation takes.
    Revision
);
counter!(
    /// A position in a store's global operation sequence: gapless, strictly
    /// increasing in commit order, starting at 1 (0 means "nothing yet").
    Ordinal
);

impl Ordinal {
    /// The ordinal after this one.
    pub fn next(self) -> Ordinal {
        Ordinal(self.0 + 1)
    }
}
