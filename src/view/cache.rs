//! The LRU of hot documents, bounded by count and by bytes.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use lru::LruCache;

use crate::model::{Branch, DocumentId, Scope};
use crate::models::DocumentHeader;

/// One scope of a cached document, folded exactly to the view's checkpoint.
#[derive(Clone, Debug)]
pub(crate) struct CachedScope {
    pub(crate) revision: u64,
    pub(crate) state: Vec<u8>,
    pub(crate) model_version: u32,
}

/// Every scope of a document on one branch.
#[derive(Clone, Debug, Default)]
pub(crate) struct CachedDoc {
    pub(crate) scopes: BTreeMap<Scope, CachedScope>,
    /// The `document` scope's state decoded (what a read returns as the
    /// header, decoded once rather than on every read); its document type
    /// is the model every other scope reduces by (a stream's stored type
    /// may differ, after two creations). Set wherever that scope's state
    /// is, by [`CachedDoc::set_document_scope`].
    pub(crate) header: Option<DocumentHeader>,
}

impl CachedDoc {
    /// Puts the `document` scope's state and the header decoded from it:
    /// the one place both change, so they never disagree.
    pub(crate) fn set_document_scope(&mut self, scope: CachedScope) {
        self.header = crate::models::decode_header(&scope.state);
        self.scopes.insert(Scope::document(), scope);
    }

    /// Approximate heap bytes held, for the byte bound.
    pub(crate) fn weight(&self) -> usize {
        self.scopes
            .iter()
            .map(|(scope, s)| scope.as_str().len() + s.state.len() + 64)
            .sum::<usize>()
            // The decoded header holds about the strings of its JSON.
            + self
                .scopes
                .get(&Scope::document())
                .filter(|_| self.header.is_some())
                .map_or(0, |s| s.state.len())
            + 64
    }
}

pub(crate) type DocKey = (DocumentId, Branch);

/// LRU of documents; never holds more than `max_documents` entries or
/// (beyond one document larger than the whole budget, which is not kept)
/// more than `max_bytes`.
pub(crate) struct DocCache {
    lru: LruCache<DocKey, CachedDoc>,
    bytes: usize,
    max_bytes: usize,
}

impl DocCache {
    pub(crate) fn new(max_documents: NonZeroUsize, max_bytes: usize) -> Self {
        Self {
            lru: LruCache::new(max_documents),
            bytes: 0,
            max_bytes,
        }
    }

    pub(crate) fn get(&mut self, key: &DocKey) -> Option<&CachedDoc> {
        self.lru.get(key)
    }

    /// Takes a document out (to update it); put it back with `insert`.
    pub(crate) fn take(&mut self, key: &DocKey) -> Option<CachedDoc> {
        let doc = self.lru.pop(key)?;
        self.bytes -= doc.weight();
        Some(doc)
    }

    pub(crate) fn insert(&mut self, key: DocKey, doc: CachedDoc) {
        let weight = doc.weight();
        if let Some(old) = self.lru.pop(&key) {
            self.bytes -= old.weight();
        }
        if weight > self.max_bytes {
            return;
        }
        while self.bytes + weight > self.max_bytes {
            match self.lru.pop_lru() {
                Some((_, evicted)) => self.bytes -= evicted.weight(),
                None => break,
            }
        }
        if let Some((_, evicted)) = self.lru.push(key, doc) {
            // `push` returns the evicted least-recently-used entry when full.
            self.bytes -= evicted.weight();
        }
        self.bytes += weight;
    }

    pub(crate) fn clear(&mut self) {
        self.lru.clear();
        self.bytes = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.lru.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(bytes: usize) -> CachedDoc {
        let mut d = CachedDoc::default();
        d.scopes.insert(
            Scope::global(),
            CachedScope {
                revision: 1,
                state: vec![0; bytes],
                model_version: 1,
            },
        );
        d
    }

    fn key(i: usize) -> DocKey {
        (
            DocumentId::new(format!("d{i}")).expect("valid"),
            Branch::main(),
        )
    }

    #[test]
    fn never_exceeds_its_bounds() {
        let mut cache = DocCache::new(NonZeroUsize::new(10).expect("nonzero"), 5_000);
        for i in 0..500 {
            cache.insert(key(i), doc((i * 37) % 1_200));
            assert!(cache.len() <= 10, "count bound");
            assert!(cache.bytes() <= 5_000, "byte bound: {}", cache.bytes());
            let real: usize = (0..=i)
                .filter_map(|j| cache.lru.peek(&key(j)))
                .map(CachedDoc::weight)
                .sum();
            assert_eq!(real, cache.bytes(), "byte accounting drifted");
        }
        // A document larger than the whole budget is not kept.
        cache.insert(key(9_999), doc(10_000));
        assert!(cache.get(&key(9_999)).is_none());
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut cache = DocCache::new(NonZeroUsize::new(2).expect("nonzero"), 1 << 20);
        cache.insert(key(1), doc(1));
        cache.insert(key(2), doc(1));
        assert!(cache.get(&key(1)).is_some()); // 1 is now the most recent
        cache.insert(key(3), doc(1));
        assert!(cache.get(&key(2)).is_none());
        assert!(cache.get(&key(1)).is_some() && cache.get(&key(3)).is_some());
    }
}
