//! The view's public reads.

use std::collections::BTreeMap;

use rocksdb::WriteBatch;

use crate::error::{Error, Result};
use crate::keys::{self, view_tag};
use crate::model::{
    Branch, Digest, DocumentId, DocumentType, Operation, Ordinal, Revision, Scope, SyncUnit,
};
use crate::models::{DocumentHeader, Relationship};
use crate::store::{ColdStream, Cursor, OperationFilter, Page, Paging};

use super::cache::{CachedDoc, CachedScope};
use super::index;
use super::{DocumentView, ViewInner};
use crate::fold::{self, Reducer};

/// The highest ordinal a write produced: a read given it waits until the
/// view has applied that ordinal (read-your-writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConsistencyToken(pub Ordinal);

/// Which part of a document a read returns. The default: branch `main`,
/// every scope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ViewFilter {
    /// The branch. Default `main`.
    pub branch: Branch,
    /// Only these scopes (`None`: every scope).
    pub scopes: Option<Vec<Scope>>,
}

impl ViewFilter {
    /// Every scope of the document on `branch`.
    pub fn on(branch: Branch) -> Self {
        Self {
            branch,
            scopes: None,
        }
    }

    /// Only `scopes` (of the filter's branch).
    #[must_use]
    pub fn scopes(mut self, scopes: Vec<Scope>) -> Self {
        self.scopes = Some(scopes);
        self
    }
}

/// The state of one scope.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScopeState {
    /// Operations folded (the scope's revision as of the view).
    pub revision: Revision,
    /// The model's state bytes.
    pub state: Vec<u8>,
    /// blake3 of `state`.
    pub state_hash: Digest,
}

/// A document as the view has it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Document {
    /// The header (derived from the `document` scope).
    pub header: DocumentHeader,
    /// The state of each scope the filter asked for (the `document` scope's
    /// state is the header as JSON).
    pub scopes: BTreeMap<Scope, ScopeState>,
}

impl Document {
    /// The state bytes of `scope`, if present.
    pub fn state(&self, scope: &Scope) -> Option<&[u8]> {
        self.scopes.get(scope).map(|s| s.state.as_slice())
    }
}

impl DocumentView {
    /// A document, after waiting for `token` if given. Errors:
    /// [`Error::DocumentNotFound`], [`Error::DocumentDeleted`],
    /// [`Error::ConsistencyTimeout`].
    pub fn get(
        &self,
        id: &DocumentId,
        filter: &ViewFilter,
        token: Option<ConsistencyToken>,
    ) -> Result<Document> {
        if let Some(token) = token {
            self.inner.wait_for(token)?;
        }
        self.inner.get(id, filter)
    }

    /// Several documents; each entry is that document's outcome.
    pub fn get_many(
        &self,
        ids: &[DocumentId],
        filter: &ViewFilter,
        token: Option<ConsistencyToken>,
    ) -> Result<Vec<Result<Document>>> {
        if let Some(token) = token {
            self.inner.wait_for(token)?;
        }
        Ok(ids.iter().map(|id| self.inner.get(id, filter)).collect())
    }

    /// Whether a document exists (created and not deleted) on `branch`.
    pub fn exists(&self, id: &DocumentId, branch: &Branch) -> Result<bool> {
        let record =
            index::load_header_record(self.inner.store.db(), &index::header_key(id, branch))?;
        Ok(record.and_then(|r| r.header()).is_some_and(|h| !h.deleted))
    }

    /// The document with this slug (on `main`).
    pub fn get_by_slug(
        &self,
        slug: &str,
        filter: &ViewFilter,
        token: Option<ConsistencyToken>,
    ) -> Result<Document> {
        if let Some(token) = token {
            self.inner.wait_for(token)?;
        }
        let id = self.inner.resolve_slug(slug)?;
        self.inner.get(&id, filter)
    }

    /// The document whose id, or else slug, is `id_or_slug`.
    pub fn get_by_id_or_slug(
        &self,
        id_or_slug: &str,
        filter: &ViewFilter,
        token: Option<ConsistencyToken>,
    ) -> Result<Document> {
        if let Some(token) = token {
            self.inner.wait_for(token)?;
        }
        if let Ok(id) = DocumentId::new(id_or_slug) {
            match self.inner.get(&id, filter) {
                Err(Error::DocumentNotFound { .. }) => {}
                other => return other,
            }
        }
        let id = self.inner.resolve_slug(id_or_slug)?;
        self.inner.get(&id, filter)
    }

    /// Ids of live documents of a type (on `main`), in id order. The cursor
    /// is an offset.
    pub fn find_by_type(
        &self,
        document_type: &DocumentType,
        paging: Paging,
    ) -> Result<Page<DocumentId>> {
        let offset = paging.cursor.map_or(0, |c| c.0 as usize);
        let (rows, more) = index::scan_index(
            self.inner.store.db(),
            view_tag::TYPE,
            &[document_type.as_str()],
            offset,
            paging.limit,
        )?;
        let items = rows
            .iter()
            .filter_map(|fields| {
                fields
                    .get(1)
                    .and_then(|id| DocumentId::new(id.as_str()).ok())
            })
            .collect::<Vec<_>>();
        let next_cursor = more.then(|| Cursor((offset + items.len()) as u64));
        Ok(Page { items, next_cursor })
    }

    /// Relationships from `id` to other documents.
    pub fn outgoing_relationships(&self, id: &DocumentId) -> Result<Vec<Relationship>> {
        self.relationships(view_tag::OUTGOING, id, |f| {
            (f[0].clone(), f[1].clone(), f[2].clone())
        })
    }

    /// Relationships from other documents to `id`.
    pub fn incoming_relationships(&self, id: &DocumentId) -> Result<Vec<Relationship>> {
        self.relationships(view_tag::INCOMING, id, |f| {
            (f[2].clone(), f[1].clone(), f[0].clone())
        })
    }

    fn relationships(
        &self,
        tag: u8,
        id: &DocumentId,
        order: impl Fn(&[String]) -> (String, String, String),
    ) -> Result<Vec<Relationship>> {
        let (rows, _) =
            index::scan_index(self.inner.store.db(), tag, &[id.as_str()], 0, usize::MAX)?;
        rows.iter()
            .filter(|f| f.len() == 3)
            .map(|f| {
                let (source, relationship_type, target) = order(f);
                Ok(Relationship {
                    source: DocumentId::new(source)?,
                    relationship_type,
                    target: DocumentId::new(target)?,
                })
            })
            .collect()
    }

    /// Operations of one scope of a document, from the store.
    pub fn get_operations(
        &self,
        id: &DocumentId,
        scope: &Scope,
        branch: &Branch,
        filter: &OperationFilter,
        paging: Paging,
    ) -> Result<Page<Operation>> {
        let unit = SyncUnit::new(id.clone(), scope.clone(), branch.clone());
        self.inner
            .store
            .get_since(&unit, Revision(0), filter, paging)
    }
}

impl ViewInner {
    fn resolve_slug(&self, slug: &str) -> Result<DocumentId> {
        let not_found = || Error::SlugNotFound {
            slug: slug.to_owned(),
        };
        if DocumentId::new(slug).is_err() {
            return Err(not_found());
        }
        let (rows, _) = index::scan_index(self.store.db(), view_tag::SLUG, &[slug], 0, 1)?;
        let id = rows.first().and_then(|f| f.get(1)).ok_or_else(not_found)?;
        Ok(DocumentId::new(id.as_str())?)
    }

    pub(crate) fn get(&self, id: &DocumentId, filter: &ViewFilter) -> Result<Document> {
        let key = (id.clone(), filter.branch.clone());
        let cached = self.cache.lock().get(&key).cloned();
        let doc = match cached {
            Some(doc) => {
                self.cache_counters.hit();
                doc
            }
            None => {
                self.cache_counters.miss();
                self.load(id, &filter.branch)?
            }
        };
        to_document(id, &doc, filter)
    }

    /// Folds every scope of a document to the view's checkpoint and caches it.
    fn load(&self, id: &DocumentId, branch: &Branch) -> Result<CachedDoc> {
        let _apply = self.apply_lock.read();
        // The applier holds a batch's documents out of the cache until the
        // batch is written: one it held when this read missed is back now.
        if let Some(doc) = self.cache.lock().get(&(id.clone(), branch.clone())) {
            return Ok(doc.clone());
        }
        let cutoff = self.applied();
        let db = self.store.db();
        let not_found = || Error::DocumentNotFound { id: id.clone() };
        // The header record is read only when a scope must be folded by its
        // model: a cold read of idle streams reads their kept states alone.
        let mut record: Option<Option<DocumentHeader>> = None;
        let mut doc = CachedDoc::default();
        let mut repairs = WriteBatch::default();
        let mut pending = fold::PendingSnapshots::new();
        if self.read_only {
            // The writer's header record may lag the log a read-only view
            // reads up to: the header is the `document` scope, folded now.
            let unit = SyncUnit::new(id.clone(), Scope::document(), branch.clone());
            let folded = self.fold_repairing(&unit, None, cutoff, &mut repairs, &mut pending)?;
            record = Some(crate::models::decode_header(&folded.state));
        }
        let streams = self.store.streams_with_state(id, branch)?;
        // Read after the heads: when the view has applied every ordinal
        // the store has handed out, each head's last operation is within
        // the cutoff, and its kept state needs no read of that operation.
        let settled = !self.read_only && self.store.last_assigned() <= cutoff;
        for ColdStream {
            stream,
            kept,
            checksummed,
        } in streams
        {
            let unit_key = keys::unit_key(&stream.unit);
            let scope = &stream.unit.scope;
            let kept = match &kept {
                // (A head before v4 has no checksum: a flipped revision
                // there would go unseen without the tip's read.)
                Some(kept) if settled && checksummed => {
                    fold::kept_settled(stream.revision.get(), kept)
                }
                Some(kept) => {
                    let head = (stream.revision.get(), stream.head_hash);
                    fold::kept(&self.store, &unit_key, head, kept, cutoff)?
                }
                None => None,
            };
            let folded = match kept {
                Some(folded) => folded,
                None => {
                    let header = if *scope == Scope::document() {
                        None
                    } else {
                        if record.is_none() {
                            let key = index::header_key(id, branch);
                            let loaded = index::load_header_record(db, &key)?;
                            record = Some(loaded.and_then(|r| r.header()));
                        }
                        Some(record.clone().flatten().ok_or_else(not_found)?)
                    };
                    self.fold_repairing(
                        &stream.unit,
                        header.as_ref(),
                        cutoff,
                        &mut repairs,
                        &mut pending,
                    )?
                }
            };
            if folded.revision == 0 {
                continue; // nothing in this scope as of the checkpoint
            }
            let folded = CachedScope {
                revision: folded.revision,
                state: folded.state,
                model_version: folded.model_version,
            };
            if *scope == Scope::document() {
                // Its state is the header, as of the checkpoint.
                doc.set_document_scope(folded);
            } else {
                doc.scopes.insert(scope.clone(), folded);
            }
        }
        if doc.header.is_none() {
            return Err(not_found());
        }
        if self.read_only {
            // Nothing is written or kept: the next read folds again, as
            // the store has moved on.
            return Ok(doc);
        }
        if !repairs.is_empty() {
            db.write(repairs)?;
        }
        self.cache
            .lock()
            .insert((id.clone(), branch.clone()), doc.clone());
        Ok(doc)
    }

    /// Folds one stream to `cutoff` (by the engine's reducer for the
    /// `document` scope, by the header's model elsewhere) and adds to
    /// `repairs` a fresh snapshot for each damaged one the fold passed
    /// over, oldest first so each chains to the one before.
    fn fold_repairing(
        &self,
        unit: &SyncUnit,
        header: Option<&DocumentHeader>,
        cutoff: Ordinal,
        repairs: &mut WriteBatch,
        pending: &mut fold::PendingSnapshots,
    ) -> Result<fold::Folded> {
        let db = self.store.db();
        let unit_key = keys::unit_key(unit);
        let (reducer, start) = match header {
            None => (
                Reducer::System {
                    document_id: &unit.document_id,
                    branch: &unit.branch,
                },
                0,
            ),
            Some(header) => (
                Reducer::Model {
                    registry: &self.registry,
                    document_type: &header.document_type,
                    scope: &unit.scope,
                },
                header.created_model_version,
            ),
        };
        let folded = fold::fold(&self.store, &unit_key, &reducer, start, cutoff, None)?;
        let mut bad_snapshots = folded.bad_snapshots.clone();
        bad_snapshots.sort_unstable();
        for bad in &bad_snapshots {
            if *bad == 0 {
                // Never a real snapshot: the key goes.
                fold::delete_snapshot(db, repairs, &unit_key, 0);
                continue;
            }
            let at = if *bad == folded.revision {
                folded.clone()
            } else {
                fold::fold(&self.store, &unit_key, &reducer, start, cutoff, Some(*bad))?
            };
            if at.revision == *bad {
                fold::put_snapshot(db, repairs, &unit_key, &at, pending);
            }
        }
        Ok(folded)
    }
}

fn to_document(id: &DocumentId, doc: &CachedDoc, filter: &ViewFilter) -> Result<Document> {
    let header = doc
        .header
        .clone()
        .ok_or_else(|| Error::DocumentNotFound { id: id.clone() })?;
    if header.deleted {
        return Err(Error::DocumentDeleted { id: id.clone() });
    }
    let scopes = doc
        .scopes
        .iter()
        .filter(|(scope, _)| {
            filter
                .scopes
                .as_ref()
                .is_none_or(|wanted| wanted.contains(scope))
        })
        .map(|(scope, s)| {
            (
                scope.clone(),
                ScopeState {
                    revision: Revision(s.revision),
                    state: s.state.clone(),
                    state_hash: Digest::of(&s.state),
                },
            )
        })
        .collect();
    Ok(Document { header, scopes })
}
