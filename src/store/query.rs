//! Reads of the write side. Each page is one forward range scan.

use std::collections::BTreeMap;

use rocksdb::{Direction, IteratorMode, ReadOptions};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::keys;
use crate::model::{
    ActionType, Branch, Digest, DocumentId, DocumentType, Operation, OperationId,
    OperationWithContext, Ordinal, Revision, Scope, SyncUnit,
};

use super::apply::context_of;
use super::commit::cf_handles;
use super::OperationStore;

/// Where the next page starts: opaque to callers, pass it back in
/// [`Paging::cursor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor(pub u64);

/// A page request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Paging {
    /// Continue after a previous page; `None` starts at the query's start.
    pub cursor: Option<Cursor>,
    /// At most this many items (at least 1).
    pub limit: usize,
}

impl Paging {
    /// Everything, in one page.
    pub fn all() -> Self {
        Self {
            cursor: None,
            limit: usize::MAX,
        }
    }

    /// The first `limit` items.
    pub fn first(limit: usize) -> Self {
        Self {
            cursor: None,
            limit,
        }
    }

    /// The page after `cursor` when there is one, else the first: what a
    /// loop over pages passes with the last page's `next_cursor`.
    pub fn new(cursor: Option<Cursor>, limit: usize) -> Self {
        Self { cursor, limit }
    }

    /// The page after `cursor`.
    pub fn after(cursor: Cursor, limit: usize) -> Self {
        Self {
            cursor: Some(cursor),
            limit,
        }
    }

    fn check(&self) -> Result<()> {
        if self.limit == 0 {
            return Err(Error::InvalidArgument {
                argument: "limit",
                reason: "a page holds at least one item",
            });
        }
        Ok(())
    }
}

impl Default for Paging {
    fn default() -> Self {
        Self::all()
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Page<T> {
    /// The items, in key order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` when the scan reached the end.
    pub next_cursor: Option<Cursor>,
}

/// Which operations of a stream `get_since` returns. Empty = all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationFilter {
    /// Only these action types (any, when `None`).
    pub action_types: Option<Vec<ActionType>>,
    /// Only operations with `timestamp_utc_ms >= timestamp_from`.
    pub timestamp_from: Option<u64>,
    /// Only operations with `timestamp_utc_ms <= timestamp_to`.
    pub timestamp_to: Option<u64>,
}

impl OperationFilter {
    /// Only these action types.
    #[must_use]
    pub fn action_types(mut self, types: Vec<ActionType>) -> Self {
        self.action_types = Some(types);
        self
    }

    /// Only operations stamped at or after `from` (ms since the epoch).
    #[must_use]
    pub fn timestamp_from(mut self, from: u64) -> Self {
        self.timestamp_from = Some(from);
        self
    }

    /// Only operations stamped at or before `to` (ms since the epoch).
    #[must_use]
    pub fn timestamp_to(mut self, to: u64) -> Self {
        self.timestamp_to = Some(to);
        self
    }

    fn matches(&self, op: &Operation) -> bool {
        self.timestamp_from
            .is_none_or(|from| op.timestamp_utc_ms >= from)
            && self.timestamp_to.is_none_or(|to| op.timestamp_utc_ms <= to)
            && self
                .action_types
                .as_ref()
                .is_none_or(|types| types.contains(&op.action.action_type))
    }
}

/// The revision of every scope of a document on one branch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DocumentRevisions {
    /// Scope → its revision (next index).
    pub revisions: BTreeMap<Scope, Revision>,
    /// The latest operation timestamp over those scopes (0 when empty).
    pub latest_timestamp_utc_ms: u64,
}

/// A stream as the view's cold read takes it: its head, the state the
/// head keeps (see `HeadState`), and whether the head is checksummed (v4),
/// so that its fields hold without a read of its operations.
pub(crate) struct ColdStream {
    pub(crate) stream: StreamInfo,
    pub(crate) kept: Option<codec::HeadState>,
    pub(crate) checksummed: bool,
}

/// What the head of a stream says.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The stream.
    pub unit: SyncUnit,
    /// The document type it was written with.
    pub document_type: DocumentType,
    /// Its revision (next index).
    pub revision: Revision,
    /// Hash of its last operation: identifies this replica's raw history.
    pub head_hash: Digest,
    /// Its latest operation timestamp.
    pub latest_timestamp_utc_ms: u64,
    /// Whether its raw log is known to be in merge order: written only by
    /// the reactor since it was last. A write around the reactor
    /// ([`OperationStore::apply`], `import`) clears it, and the next merge
    /// into the stream plans from its whole log and sets it again.
    pub in_merge_order: bool,
}

/// Where a stored copy of an operation id lives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationLocation {
    /// The stream.
    pub unit: SyncUnit,
    /// The index of this copy.
    pub index: u64,
    /// Its skip.
    pub skip: u64,
}

/// What `Corrupt` names when operations' ordinals do not grow along their
/// stream.
const ORDINAL_OUT_OF_ORDER: &str = "operation ordinal (not past its predecessor's)";
/// What `Corrupt` names when a read meets an operation whose index is not
/// the next one of its stream (a gap, or a value under another key).
const INDEX_OUT_OF_PLACE: &str = "operation index (not the next of its stream)";
/// What `Corrupt` names when an operation's ordinal is not the one the
/// ordinal index gives it.
const ORDINAL_NOT_INDEXED: &str = "operation ordinal (not the ordinal index's)";
/// What `Corrupt` names when the ordinal feed skips an ordinal (a lost
/// entry) below the store's last.
const FEED_GAP: &str = "ordinal feed (an ordinal is missing)";
/// What `Corrupt` names when a stream holds operations but has no head:
/// read as empty, it would drop a scope from reads and let a writer
/// append at index 0 over its history.
const HEAD_LOST: &str = "stream head (lost: its stream holds operations)";

fn corrupt(cf: &'static str, what: &'static str) -> Error {
    Error::Corrupt { cf, what }
}

impl OperationStore {
    /// The operation at `index` of `unit`, if stored.
    pub fn get(&self, unit: &SyncUnit, index: u64) -> Result<Option<Operation>> {
        let cf = cf_handles(self.db()).operations;
        match self.db().get_pinned_cf(cf, keys::op_key(unit, index))? {
            Some(bytes) => Ok(Some(codec::decode_operation(&bytes)?.0)),
            None => Ok(None),
        }
    }

    /// Operations of `unit` with index ≥ `revision` that match `filter`, in
    /// index order. The cursor is the index to resume from.
    pub fn get_since(
        &self,
        unit: &SyncUnit,
        revision: Revision,
        filter: &OperationFilter,
        paging: Paging,
    ) -> Result<Page<Operation>> {
        let from = paging
            .cursor
            .map_or(revision.get(), |c| c.0.max(revision.get()));
        self.scan_stream(unit, from, paging, |op| filter.matches(op))
    }

    /// Operations of `unit` with `timestamp_utc_ms >= min_timestamp`: the
    /// local candidates a load of remote operations may conflict with.
    pub fn get_conflicting(
        &self,
        unit: &SyncUnit,
        min_timestamp_utc_ms: u64,
        paging: Paging,
    ) -> Result<Page<Operation>> {
        let from = paging.cursor.map_or(0, |c| c.0);
        self.scan_stream(unit, from, paging, |op| {
            op.timestamp_utc_ms >= min_timestamp_utc_ms
        })
    }

    fn scan_stream(
        &self,
        unit: &SyncUnit,
        from: u64,
        paging: Paging,
        keep: impl Fn(&Operation) -> bool,
    ) -> Result<Page<Operation>> {
        paging.check()?;
        let unit_key = keys::unit_key(unit);
        let mut read = ReadOptions::default();
        if let Some(upper) = keys::prefix_upper_bound(&unit_key) {
            read.set_iterate_upper_bound(upper);
        }
        let cf = cf_handles(self.db()).operations;
        let mut iter = self.db().raw_iterator_cf_opt(cf, read);
        iter.seek(keys::op_key_from_unit(&unit_key, from));
        let mut items = Vec::new();
        while let (Some(_), Some(value)) = (iter.key(), iter.value()) {
            if items.len() == paging.limit {
                let index = iter
                    .key()
                    .and_then(keys::op_key_index)
                    .ok_or_else(|| corrupt(keys::CF_OPERATIONS, "operation key"))?;
                return Ok(Page {
                    items,
                    next_cursor: Some(Cursor(index)),
                });
            }
            let (op, _) = codec::decode_operation(value)?;
            if keep(&op) {
                items.push(op);
            }
            iter.next();
        }
        iter.status()?;
        Ok(Page {
            items,
            next_cursor: None,
        })
    }

    /// Operations of every stream with ordinal ≥ `from`, in ordinal order,
    /// with their context. The catch-up feed of the view and of sync. The
    /// cursor is the ordinal to resume from.
    pub fn get_since_ordinal(
        &self,
        from: Ordinal,
        paging: Paging,
    ) -> Result<Page<OperationWithContext>> {
        paging.check()?;
        let from = paging
            .cursor
            .map_or(from.get(), |c| c.0.max(from.get()))
            .max(1);
        // Read before the iterator is made, so everything up to it is in
        // the iterator's view: the feed must reach it without a gap.
        let last = self.last_ordinal().get();
        let cfs = cf_handles(self.db());
        let mut iter = self.db().raw_iterator_cf(cfs.ordinals);
        iter.seek(keys::ordinal_key(Ordinal(from)));
        // First the feed entries, then one batched read of the operations.
        let mut entries = Vec::new();
        let mut next_cursor = None;
        let mut expected = from;
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let ordinal = keys::decode_ordinal_key(key)
                .ok_or_else(|| corrupt(keys::CF_ORDINALS, "ordinal key"))?;
            if entries.len() == paging.limit {
                // The next page starts where this one stopped, not at the
                // next key found: that one checks for a gap.
                next_cursor = Some(Cursor(expected));
                break;
            }
            // The feed is gapless: a lost entry would make the view and
            // sync skip an operation, silently.
            if ordinal.get() != expected {
                return Err(corrupt(keys::CF_ORDINALS, FEED_GAP));
            }
            expected = expected.saturating_add(1);
            let entry = codec::decode_ordinal(value)?;
            let document_type = DocumentType::new(entry.document_type)
                .map_err(|_| corrupt(keys::CF_ORDINALS, "ordinal value"))?;
            entries.push((ordinal, document_type, entry.op_key.to_vec()));
            iter.next();
        }
        iter.status()?;
        if next_cursor.is_none() && expected <= last {
            return Err(corrupt(keys::CF_ORDINALS, FEED_GAP));
        }
        let values =
            self.db()
                .batched_multi_get_cf(cfs.operations, entries.iter().map(|e| &e.2), false);
        let mut items = Vec::with_capacity(entries.len());
        // The document type an entry names is served as the operation's
        // context: it must be its stream's (one head read per stream per
        // page), or a flipped byte would serve another type.
        let mut stream_types: BTreeMap<Vec<u8>, DocumentType> = BTreeMap::new();
        for ((ordinal, document_type, op_key), value) in entries.into_iter().zip(values) {
            let value =
                value?.ok_or_else(|| corrupt(keys::CF_ORDINALS, "entry without operation"))?;
            let (operation, stored_at) = codec::decode_operation(&value)?;
            // The operation's own value records its ordinal: an entry
            // naming another operation would serve it in the wrong place.
            if stored_at != ordinal {
                return Err(corrupt(
                    keys::CF_ORDINALS,
                    "entry (names an operation of another ordinal)",
                ));
            }
            let (unit, _) = keys::decode_op_key(&op_key)
                .ok_or_else(|| corrupt(keys::CF_ORDINALS, "operation key"))?;
            let unit_key = &op_key[..op_key.len() - 8];
            if !stream_types.contains_key(unit_key) {
                // The head alone, not the state it may keep.
                let bytes = self
                    .db()
                    .get_pinned_cf(cfs.heads, unit_key)?
                    .ok_or_else(|| corrupt(keys::CF_HEADS, HEAD_LOST))?;
                let head = codec::decode_head(&bytes)?;
                stream_types.insert(unit_key.to_vec(), head.document_type);
            }
            if stream_types[unit_key] != document_type {
                return Err(corrupt(
                    keys::CF_ORDINALS,
                    "entry (names another document type than its stream's)",
                ));
            }
            items.push(OperationWithContext {
                operation,
                context: context_of(&unit, &document_type, ordinal),
            });
        }
        Ok(Page { items, next_cursor })
    }

    /// The head of one stream, `None` when it holds no operation.
    pub fn head(&self, unit: &SyncUnit) -> Result<Option<StreamInfo>> {
        let unit_key = keys::unit_key(unit);
        match self.head_with_state(&unit_key)? {
            Some((head, _)) => Ok(Some(stream_info(unit.clone(), head))),
            // No head: a new stream, or one whose head was lost. Read
            // again once operations are seen, since a writer may have
            // created the stream between the two reads.
            None if self.holds_operations(&unit_key)? => match self.head_with_state(&unit_key)? {
                Some((head, _)) => Ok(Some(stream_info(unit.clone(), head))),
                None => Err(corrupt(keys::CF_HEADS, HEAD_LOST)),
            },
            None => Ok(None),
        }
    }

    /// `Corrupt` when the stream `unit_key`, which has no head, holds an
    /// operation (one seek: paid only where a stream looks empty).
    pub(crate) fn check_no_operations(&self, unit_key: &[u8]) -> Result<()> {
        if self.holds_operations(unit_key)? {
            return Err(corrupt(keys::CF_HEADS, HEAD_LOST));
        }
        Ok(())
    }

    /// Whether the stream `unit_key` holds any operation (one seek, bounded
    /// to the stream so it reads no other stream's block).
    fn holds_operations(&self, unit_key: &[u8]) -> Result<bool> {
        let mut read = ReadOptions::default();
        if let Some(upper) = keys::prefix_upper_bound(unit_key) {
            read.set_iterate_upper_bound(upper);
        }
        let mut iter = self
            .db()
            .raw_iterator_cf_opt(cf_handles(self.db()).operations, read);
        iter.seek(unit_key);
        let holds = iter.valid();
        iter.status()?;
        Ok(holds)
    }

    /// The streams under `prefix` that hold operations (their unit keys,
    /// in key order): a skip scan of the operations family, one seek per
    /// stream.
    fn streams_holding_operations(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut read = ReadOptions::default();
        if let Some(upper) = keys::prefix_upper_bound(prefix) {
            read.set_iterate_upper_bound(upper);
        }
        let mut iter = self
            .db()
            .raw_iterator_cf_opt(cf_handles(self.db()).operations, read);
        iter.seek(prefix);
        let mut out = Vec::new();
        while let Some(key) = iter.key() {
            let unit_key = stream_of_operation_key(key)?.to_vec();
            // A unit key ends with its field terminator, so its upper
            // bound always exists: the next stream's first key.
            let next = keys::prefix_upper_bound(&unit_key);
            out.push(unit_key);
            match next {
                Some(next) => iter.seek(next),
                None => break,
            }
        }
        iter.status()?;
        Ok(out)
    }

    /// The head record of the stream `unit_key` and the state it keeps
    /// (for a writer that has not cached the stream).
    pub(crate) fn head_with_state(
        &self,
        unit_key: &[u8],
    ) -> Result<Option<(codec::HeadValue, Option<codec::HeadState>)>> {
        let cf = cf_handles(self.db()).heads;
        match self.db().get_pinned_cf(cf, unit_key)? {
            Some(bytes) => codec::decode_head_with_state(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every stream of a document (all scopes and branches), in key order.
    pub fn streams(&self, document_id: &DocumentId) -> Result<Vec<StreamInfo>> {
        self.heads_with_prefix(&keys::document_prefix(document_id))
    }

    /// The next index of every scope of a document on `branch`, and the
    /// latest timestamp among them.
    pub fn get_revisions(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
    ) -> Result<DocumentRevisions> {
        let mut out = DocumentRevisions::default();
        for info in self.heads_with_prefix(&keys::document_branch_prefix(document_id, branch))? {
            out.latest_timestamp_utc_ms = out
                .latest_timestamp_utc_ms
                .max(info.latest_timestamp_utc_ms);
            out.revisions.insert(info.unit.scope, info.revision);
        }
        Ok(out)
    }

    /// The latest operation timestamp of a stream, `None` when it is empty.
    pub fn get_stream_latest_timestamp(&self, unit: &SyncUnit) -> Result<Option<u64>> {
        Ok(self.head(unit)?.map(|h| h.latest_timestamp_utc_ms))
    }

    /// Every stream in the store, in key order (document, branch, scope).
    /// Holds them all in memory: to page through a large store, use
    /// [`visit_streams`](Self::visit_streams).
    pub fn all_streams(&self) -> Result<Vec<StreamInfo>> {
        self.heads_with_prefix(&[])
    }

    /// Hands every stream in the store to `visit`, in key order (document,
    /// branch, scope), one at a time, until `visit` answers `false`: memory
    /// stays flat however many streams there are. A stream whose head was
    /// lost is `Corrupt` when the visit reaches its place, as in
    /// [`all_streams`](Self::all_streams).
    pub fn visit_streams(&self, mut visit: impl FnMut(StreamInfo) -> bool) -> Result<()> {
        let cfs = cf_handles(self.db());
        // The operations first, as in `heads_with_prefix_as`: an iterator
        // reads as of its creation, and a stream's first operations and its
        // head are written in one batch, so every stream the operations
        // iterator holds has a head the later heads iterator sees.
        let mut with_operations = self.db().raw_iterator_cf(cfs.operations);
        with_operations.seek_to_first();
        let mut heads = self.db().raw_iterator_cf(cfs.heads);
        heads.seek_to_first();
        while let (Some(key), Some(value)) = (heads.key(), heads.value()) {
            pass_streams_up_to(&mut with_operations, Some(key))?;
            let (unit, _) = keys::decode_unit_key(key)
                .filter(|(_, rest)| rest.is_empty())
                .ok_or_else(|| corrupt(keys::CF_HEADS, "head key"))?;
            if !visit(stream_info(unit, codec::decode_head(value)?)) {
                return Ok(());
            }
            heads.next();
        }
        heads.status()?;
        pass_streams_up_to(&mut with_operations, None)
    }

    /// Every stream that has a head, without the lost-head check (for
    /// `verify_all`, which reports a lost head as a finding).
    pub(crate) fn all_heads(&self) -> Result<Vec<StreamInfo>> {
        self.heads_under(&[], |unit, value| {
            Ok(stream_info(unit, codec::decode_head(value)?))
        })
        .map(|(heads, _)| heads)
    }

    fn heads_with_prefix(&self, prefix: &[u8]) -> Result<Vec<StreamInfo>> {
        self.heads_with_prefix_as(prefix, |unit, value| {
            Ok(stream_info(unit, codec::decode_head(value)?))
        })
    }

    /// Every stream of a document on `branch` with the state its head
    /// keeps (see `HeadState`), in key order: the view's cold read.
    ///
    /// A lost head is looked for more cheaply than by the other listings'
    /// skip scan, which halved the rate of cold reads (20k against 46k
    /// documents/s, `reactordb bench --scale --scale-docs 20000`): each
    /// standard scope (`document`, `global`, `local`) listed without a head
    /// is probed at index 0 with a point read, which the files' bloom
    /// filters answer without reading a block. A custom scope's lost head
    /// goes unseen here; `streams`, the feed and `verify_all` see it.
    pub(crate) fn streams_with_state(
        &self,
        document_id: &DocumentId,
        branch: &Branch,
    ) -> Result<Vec<ColdStream>> {
        let prefix = keys::document_branch_prefix(document_id, branch);
        let (out, head_keys) = self.heads_under(&prefix, |unit, value| {
            let (head, kept) = codec::decode_head_with_state(value)?;
            Ok(ColdStream {
                stream: stream_info(unit, head),
                kept,
                checksummed: codec::head_is_checksummed(value),
            })
        })?;
        let operations = cf_handles(self.db()).operations;
        for scope in [Scope::document(), Scope::global(), Scope::local()] {
            let unit = SyncUnit::new(document_id.clone(), scope, branch.clone());
            let unit_key = keys::unit_key(&unit);
            if head_keys.binary_search(&unit_key).is_ok() {
                continue;
            }
            let first = keys::op_key_from_unit(&unit_key, 0);
            // Heads were read first: a stream created since has a head now
            // (written with its first operation) and is simply newer than
            // this listing.
            if self.db().get_pinned_cf(operations, first)?.is_some()
                && self.head_with_state(&unit_key)?.is_none()
            {
                return Err(corrupt(keys::CF_HEADS, HEAD_LOST));
            }
        }
        Ok(out)
    }

    fn heads_with_prefix_as<T>(
        &self,
        prefix: &[u8],
        decode: impl Fn(SyncUnit, &[u8]) -> Result<T>,
    ) -> Result<Vec<T>> {
        // Heads are what lists a document's streams: a stream whose head
        // was lost must not read as absent. The operations are read first:
        // a head is written in the same batch as its stream's first
        // operations, so every stream seen holding operations has a head
        // the later read sees, even while streams are being created.
        let with_operations = self.streams_holding_operations(prefix)?;
        let (out, head_keys) = self.heads_under(prefix, decode)?;
        for unit_key in &with_operations {
            if head_keys.binary_search(unit_key).is_err() {
                return Err(corrupt(keys::CF_HEADS, HEAD_LOST));
            }
        }
        Ok(out)
    }

    /// The heads under `prefix`, decoded, with their keys (in key order).
    fn heads_under<T>(
        &self,
        prefix: &[u8],
        decode: impl Fn(SyncUnit, &[u8]) -> Result<T>,
    ) -> Result<(Vec<T>, Vec<Vec<u8>>)> {
        let cf = cf_handles(self.db()).heads;
        let mut out = Vec::new();
        let mut head_keys = Vec::new();
        // Bounded, so the scan stops at the prefix's last head instead of
        // reading on to the next one.
        let mut read = ReadOptions::default();
        if let Some(upper) = keys::prefix_upper_bound(prefix) {
            read.set_iterate_upper_bound(upper);
        }
        // A raw iterator: the values are decoded in place, not copied out.
        let mut iter = self.db().raw_iterator_cf_opt(cf, read);
        iter.seek(prefix);
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if !key.starts_with(prefix) {
                break;
            }
            let (unit, _) = keys::decode_unit_key(key)
                .filter(|(_, rest)| rest.is_empty())
                .ok_or_else(|| corrupt(keys::CF_HEADS, "head key"))?;
            out.push(decode(unit, value)?);
            head_keys.push(key.to_vec());
            iter.next();
        }
        iter.status()?;
        Ok((out, head_keys))
    }

    /// Where an operation id was first stored, as its ordinal: `None` when
    /// it never was. The deduplication rule, in one place: an op-id entry
    /// naming an operation its stream does not hold is `Corrupt`, never a
    /// sign the action was applied.
    pub(crate) fn applied_at(&self, op_id: &OperationId) -> Result<Option<Ordinal>> {
        let Some(location) = self.locate(op_id)?.into_iter().next() else {
            return Ok(None);
        };
        match self.get_with_ordinal(&keys::unit_key(&location.unit), location.index)? {
            Some((op, ordinal)) if op.id == *op_id => Ok(Some(ordinal)),
            _ => Err(corrupt(
                keys::CF_OP_IDS,
                "op id entry (names no such operation)",
            )),
        }
    }

    /// Every stored copy of an operation id (a reshuffled operation has
    /// several, at different indexes).
    pub fn locate(&self, op_id: &OperationId) -> Result<Vec<OperationLocation>> {
        let cf = cf_handles(self.db()).op_ids;
        let prefix = op_id.as_bytes();
        let mut out = Vec::new();
        // Stay within the id's prefix, so the family's prefix bloom filter
        // answers an absent id without a walk.
        let mut read = rocksdb::ReadOptions::default();
        read.set_prefix_same_as_start(true);
        for entry in
            self.db()
                .iterator_cf_opt(cf, read, IteratorMode::From(prefix, Direction::Forward))
        {
            let (key, value) = entry?;
            if !key.starts_with(prefix) {
                break;
            }
            let (_, index, skip) = keys::decode_op_id_key(&key)
                .ok_or_else(|| corrupt(keys::CF_OP_IDS, "op id key"))?;
            let (unit, _) = keys::decode_unit_key(codec::decode_op_id(&value)?)
                .ok_or_else(|| corrupt(keys::CF_OP_IDS, "op id value"))?;
            out.push(OperationLocation { unit, index, skip });
        }
        Ok(out)
    }
}

/// The stream (unit key) of an operation key: the key without its index.
fn stream_of_operation_key(key: &[u8]) -> Result<&[u8]> {
    match keys::decode_unit_key(key) {
        Some((_, rest)) if rest.len() == 8 => Ok(&key[..key.len() - 8]),
        _ => Err(corrupt(keys::CF_OPERATIONS, "operation key")),
    }
}

/// Moves `operations` (an iterator over the operations family, at a
/// stream's first key) past the stream `head_key` names; a stream before
/// it holds operations but has no head (`head_key` `None`: past the last
/// head, so any stream left lost its head).
fn pass_streams_up_to(
    operations: &mut rocksdb::DBRawIteratorWithThreadMode<'_, rocksdb::DB>,
    head_key: Option<&[u8]>,
) -> Result<()> {
    // One step is enough: heads come in key order, so the next stream
    // holding operations is this head's, a later one's, or lost.
    let Some(key) = operations.key() else {
        operations.status()?;
        return Ok(());
    };
    let unit_key = stream_of_operation_key(key)?;
    match head_key.map(|head_key| unit_key.cmp(head_key)) {
        Some(std::cmp::Ordering::Greater) => Ok(()),
        Some(std::cmp::Ordering::Equal) => {
            // A unit key ends with its field terminator, so its upper bound
            // exists: the next stream's first key.
            if let Some(next) = keys::prefix_upper_bound(unit_key) {
                operations.seek(next);
            }
            Ok(())
        }
        _ => Err(corrupt(keys::CF_HEADS, HEAD_LOST)),
    }
}

fn stream_info(unit: SyncUnit, head: codec::HeadValue) -> StreamInfo {
    StreamInfo {
        in_merge_order: head.in_merge_order,
        unit,
        document_type: head.document_type,
        revision: Revision(head.next_index),
        head_hash: head.last_hash,
        latest_timestamp_utc_ms: head.latest_timestamp_utc_ms,
    }
}

impl OperationStore {
    /// Operations of the stream `unit_key` from index `from` (to `end`,
    /// exclusive), stopping at the first one committed after `cutoff`:
    /// within a stream, ordinals grow with the index. The read side folds
    /// exactly the history it has applied this way.
    pub(crate) fn scan_until(
        &self,
        unit_key: &[u8],
        from: u64,
        end: Option<u64>,
        cutoff: Ordinal,
    ) -> Result<Vec<(Operation, Ordinal)>> {
        let mut out = Vec::new();
        self.visit_until(unit_key, from, end, cutoff, |op, ordinal| {
            out.push((op, ordinal));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Visits the operations [`scan_until`](Self::scan_until) would return,
    /// one at a time, until `visit` answers `false`.
    pub(crate) fn visit_until(
        &self,
        unit_key: &[u8],
        from: u64,
        end: Option<u64>,
        cutoff: Ordinal,
        mut visit: impl FnMut(Operation, Ordinal) -> Result<bool>,
    ) -> Result<()> {
        let mut read = ReadOptions::default();
        let upper = match end {
            Some(end) => Some(keys::op_key_from_unit(unit_key, end)),
            None => keys::prefix_upper_bound(unit_key),
        };
        if let Some(upper) = upper {
            read.set_iterate_upper_bound(upper);
        }
        let mut iter = self
            .db()
            .raw_iterator_cf_opt(cf_handles(self.db()).operations, read);
        iter.seek(keys::op_key_from_unit(unit_key, from));
        let mut previous = Ordinal(0);
        let mut expected = from;
        while let Some(value) = iter.value() {
            let (op, ordinal) = codec::decode_operation(value)?;
            // Indexes run on without a gap: a lost or moved operation
            // would otherwise shift every revision after it.
            if op.index != expected {
                return Err(corrupt(keys::CF_OPERATIONS, INDEX_OUT_OF_PLACE));
            }
            expected += 1;
            // The ordinal is patched into the value after the chain hash
            // was taken, so the hash does not cover it: ordinals must grow
            // along the stream, and the one that ends the visit must be
            // the ordinal the ordinal index gives this operation. A flipped
            // ordinal would otherwise cut the history short, silently.
            if ordinal <= previous {
                return Err(corrupt(keys::CF_OPERATIONS, ORDINAL_OUT_OF_ORDER));
            }
            previous = ordinal;
            if ordinal > cutoff {
                self.check_ordinal(unit_key, op.index, ordinal)?;
                return Ok(());
            }
            if !visit(op, ordinal)? {
                return Ok(());
            }
            iter.next();
        }
        iter.status()?;
        Ok(())
    }

    /// Whether the ordinal index names the operation at `index` of
    /// `unit_key` at `ordinal`, as the operation's own value says:
    /// `Corrupt` when not.
    pub(crate) fn check_ordinal(
        &self,
        unit_key: &[u8],
        index: u64,
        ordinal: Ordinal,
    ) -> Result<()> {
        if self.ordinal_names(unit_key, index, ordinal, None)? {
            Ok(())
        } else {
            Err(corrupt(keys::CF_OPERATIONS, ORDINAL_NOT_INDEXED))
        }
    }

    /// The streams (with their document types) of the operations with
    /// ordinals in `(after, last]`, each once, in order of first touch:
    /// read from the ordinal index alone (no operation is decoded). At
    /// most `limit` streams: `None` when more were touched (the caller
    /// then takes every stream). (The relay's audit rounds.)
    #[cfg(feature = "nats")]
    pub(crate) fn streams_touched(
        &self,
        after: Ordinal,
        last: Ordinal,
        limit: usize,
    ) -> Result<Option<Vec<(SyncUnit, DocumentType)>>> {
        let cf = cf_handles(self.db()).ordinals;
        let mut iter = self.db().raw_iterator_cf(cf);
        iter.seek(keys::ordinal_key(Ordinal(after.get() + 1)));
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if keys::decode_ordinal_key(key).is_none_or(|o| o > last) {
                break;
            }
            let named = codec::decode_ordinal(value)?;
            let (unit, _) = keys::decode_op_key(named.op_key)
                .ok_or_else(|| corrupt(keys::CF_ORDINALS, "ordinal value"))?;
            if seen.insert(unit.clone()) {
                if out.len() == limit {
                    return Ok(None);
                }
                let document_type = DocumentType::new(named.document_type)
                    .map_err(|_| corrupt(keys::CF_ORDINALS, "ordinal value"))?;
                out.push((unit, document_type));
            }
            iter.next();
        }
        iter.status()?;
        Ok(Some(out))
    }

    /// Whether the ordinal index's entry at `ordinal` is the operation at
    /// `index` of `unit_key` (and, given the stream's document type, names
    /// that type: the ordinal feed serves it as the operation's context).
    pub(crate) fn ordinal_names(
        &self,
        unit_key: &[u8],
        index: u64,
        ordinal: Ordinal,
        document_type: Option<&str>,
    ) -> Result<bool> {
        let cf = cf_handles(self.db()).ordinals;
        let Some(bytes) = self.db().get_pinned_cf(cf, keys::ordinal_key(ordinal))? else {
            return Ok(false);
        };
        let named = codec::decode_ordinal(&bytes)?;
        Ok(
            named.op_key == keys::op_key_from_unit(unit_key, index).as_slice()
                && document_type.is_none_or(|t| t == named.document_type),
        )
    }

    /// The operation at `index` of the stream `unit_key`, with its ordinal.
    pub(crate) fn get_with_ordinal(
        &self,
        unit_key: &[u8],
        index: u64,
    ) -> Result<Option<(Operation, Ordinal)>> {
        let cf = cf_handles(self.db()).operations;
        match self
            .db()
            .get_pinned_cf(cf, keys::op_key_from_unit(unit_key, index))?
        {
            Some(bytes) => Ok(Some(codec::decode_operation(&bytes)?)),
            None => Ok(None),
        }
    }
}
