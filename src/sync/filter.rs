//! What a remote is sent, and what it must prove: per-remote options.

use serde::{Deserialize, Serialize};

use crate::model::{Branch, DocumentId, DocumentType, OperationContext, Scope};

/// Which operations go to a remote. Every field narrows: an operation goes
/// when it passes all of them. The `local` scope never goes, whatever the
/// filter says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RemoteFilter {
    /// Only these documents (`None`: all).
    pub documents: Option<Vec<DocumentId>>,
    /// Only documents of these types (`None`: all).
    pub document_types: Option<Vec<DocumentType>>,
    /// Only this branch (`None`: all).
    pub branch: Option<Branch>,
}

impl RemoteFilter {
    /// Everything (but the `local` scope).
    pub fn all() -> Self {
        Self::default()
    }

    /// Only these documents.
    pub fn documents(mut self, documents: impl IntoIterator<Item = DocumentId>) -> Self {
        self.documents = Some(documents.into_iter().collect());
        self
    }

    /// Only documents of these types.
    pub fn document_types(mut self, types: impl IntoIterator<Item = DocumentType>) -> Self {
        self.document_types = Some(types.into_iter().collect());
        self
    }

    /// Only this branch.
    pub fn branch(mut self, branch: Branch) -> Self {
        self.branch = Some(branch);
        self
    }

    /// Whether an operation in this context goes to the remote.
    pub fn passes(&self, context: &OperationContext) -> bool {
        context.scope != Scope::local()
            && self
                .documents
                .as_ref()
                .is_none_or(|ids| ids.contains(&context.document_id))
            && self
                .document_types
                .as_ref()
                .is_none_or(|types| types.contains(&context.document_type))
            && self.branch.as_ref().is_none_or(|b| *b == context.branch)
    }
}

/// A remote's options, stored with it (they survive a restart).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RemoteOptions {
    /// What it is sent.
    pub filter: RemoteFilter,
    /// With keys here, every operation it sends must carry a valid
    /// signature by one of them (its originator's), else it is a dead
    /// letter. Empty: signatures are not required.
    pub trusted_keys: Vec<[u8; 32]>,
}

impl RemoteOptions {
    /// Everything, no signatures required.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends what `filter` passes.
    pub fn filter(mut self, filter: RemoteFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Requires signatures by one of these public keys.
    pub fn trusted_keys(mut self, keys: impl IntoIterator<Item = [u8; 32]>) -> Self {
        self.trusted_keys = keys.into_iter().collect();
        self
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::Ordinal;

    fn context(doc: &str, ty: &str, scope: Scope, branch: &str) -> OperationContext {
        OperationContext {
            document_id: DocumentId::new(doc).unwrap(),
            document_type: DocumentType::new(ty).unwrap(),
            scope,
            branch: Branch::new(branch).unwrap(),
            ordinal: Ordinal(1),
        }
    }

    #[test]
    fn each_field_narrows_and_local_never_passes() {
        let all = RemoteFilter::all();
        assert!(all.passes(&context("a", "t", Scope::global(), "main")));
        assert!(all.passes(&context("a", "t", Scope::document(), "main")));
        assert!(!all.passes(&context("a", "t", Scope::local(), "main")));

        let docs = RemoteFilter::all().documents([DocumentId::new("a").unwrap()]);
        assert!(docs.passes(&context("a", "t", Scope::global(), "main")));
        assert!(!docs.passes(&context("b", "t", Scope::global(), "main")));

        let types = RemoteFilter::all().document_types([DocumentType::new("t").unwrap()]);
        assert!(!types.passes(&context("a", "u", Scope::global(), "main")));

        let branch = RemoteFilter::all().branch(Branch::new("dev").unwrap());
        assert!(branch.passes(&context("a", "t", Scope::global(), "dev")));
        assert!(!branch.passes(&context("a", "t", Scope::global(), "main")));
    }
}
