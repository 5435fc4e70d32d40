//! `apply`: the revision guard and the idempotent-replay rules.

use std::sync::Arc;

use crate::codec::{self, HeadState, HeadValue, OrdinalValue};
use crate::error::{Error, InvalidOperationReason, Result};
use crate::keys;
use crate::model::{
    Branch, Digest, DocumentId, DocumentType, NewOperation, Operation, OperationContext,
    OperationId, OperationWithContext, Ordinal, Revision, Scope, SyncUnit,
};

use super::commit::{OrdinalSlots, PendingWrite};

/// One stream's part of an atomic write to several streams.
#[derive(Debug)]
pub(crate) struct StreamAppend {
    /// The stream.
    pub(crate) unit: SyncUnit,
    /// The document type it is written with.
    pub(crate) document_type: DocumentType,
    /// The index the part's first operation takes.
    pub(crate) revision: Revision,
    /// The operations, indexed from `revision`.
    pub(crate) operations: Vec<NewOperation>,
    /// What the part does to the stream's merge order (recorded in its
    /// head; the store never checks it).
    pub(crate) order: LogOrder,
    /// The stream's folded state once the whole write is applied, kept in
    /// its head for writers that have not cached it (`None`: not known;
    /// the head then keeps none). When several parts touch one stream, the
    /// last part's is kept. The store never checks it: only a writer that
    /// folded the stream can say.
    pub(crate) state: Option<HeadState>,
}

/// Whether a write leaves a stream's raw log collecting to the merge order
/// of the operations it holds (`merge`'s invariant). The head records it, so
/// a merge knows when it may trust the log and read only what it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogOrder {
    /// Appends that sort after everything held: the log stays as it was.
    Keeps,
    /// A merge's plan: the log is in merge order after it.
    Restores,
    /// Written around the reactor (`apply`, `import`): unknown.
    Unknown,
}

/// Where a part's operations sit in the write being built.
struct Span {
    unit: SyncUnit,
    unit_key: Vec<u8>,
    document_type: DocumentType,
    order: LogOrder,
    state: Option<HeadState>,
    revision: Revision,
    ops: std::ops::Range<usize>,
}
use super::heads::{lock_in_order, HeadSlot};
use super::txn::{self, AtomicTxn};
use super::{batch, chain, Durability, OperationStore};

impl OperationStore {
    /// Appends operations to the stream `(document_id, scope, branch)` at
    /// `revision` (the index the first new operation takes), atomically.
    ///
    /// The closure adds the operations (and optionally a read set) to the
    /// transaction. The store derives each operation's id, content hash and chain hash,
    /// assigns ordinals, and writes operations, head, ordinal feed and
    /// op-id index in one `WriteBatch`. It returns the stored operations
    /// with their context and ordinals.
    ///
    /// Outcomes for a `revision` that is not the stream's next index:
    /// - every operation is already stored at exactly its position with the
    ///   same `(op id, index, skip)`: an idempotent replay; the stored
    ///   operations are returned and nothing is written;
    /// - only some are: [`Error::DuplicateOperation`] naming the first;
    /// - none are: [`Error::RevisionMismatch`] (retryable).
    ///
    /// Invalid operations (see [`AtomicTxn::add_operation`]) fail with
    /// [`Error::InvalidOperation`] and nothing is written.
    pub fn apply<F>(
        &self,
        document_id: &DocumentId,
        document_type: &DocumentType,
        scope: &Scope,
        branch: &Branch,
        revision: Revision,
        build: F,
    ) -> Result<Vec<OperationWithContext>>
    where
        F: FnOnce(&mut AtomicTxn),
    {
        let unit = SyncUnit::new(document_id.clone(), scope.clone(), branch.clone());
        let mut txn = AtomicTxn::new(unit.clone(), revision);
        build(&mut txn);
        let (operations, conditions, durability) = txn.into_parts();
        self.append_parts(
            vec![StreamAppend {
                order: LogOrder::Unknown,
                state: None,
                unit,
                document_type: document_type.clone(),
                revision,
                operations,
            }],
            conditions,
            durability,
        )
    }

    /// Appends to several streams in one atomic write: every part is
    /// written or none is. Parts are appended in order (ordinals follow
    /// it); one stream may appear in several parts, each continuing where
    /// the one before left it. Streams are locked in key order, with the
    /// read set. The stale-revision rules of [`apply`](Self::apply) hold
    /// for a single part; with several, a stale part fails the whole write
    /// unless every part is an idempotent replay.
    ///
    /// `durability` overrides the store's for this write (`None`: the
    /// store's). A replay under `Synced` syncs the write-ahead log before it
    /// answers: the write it replays may have been acknowledged `Buffered`.
    pub(crate) fn append_parts(
        &self,
        parts: Vec<StreamAppend>,
        conditions: Vec<(SyncUnit, Revision)>,
        durability: Option<Durability>,
    ) -> Result<Vec<OperationWithContext>> {
        let sync = durability.unwrap_or(self.inner.durability) == Durability::Synced;
        self.check_writable()?;
        if self.inner.commit.is_poisoned() {
            return Err(Error::Poisoned);
        }
        for part in &parts {
            txn::validate(&part.unit.scope, part.revision, &part.operations)?;
        }

        // Everything but the chain hashes, the heads and the ordinals is
        // encoded before any lock, so concurrent appends to different
        // streams encode in parallel: the operations, their ordinal-feed and
        // op-id entries, laid out as write-batch records in one buffer
        // (`batch`), and the result, built once in place.
        let families = self.inner.families;
        let size: usize = parts
            .iter()
            .map(|part| {
                let unit_len = keys::unit_key(&part.unit).len();
                let type_len = part.document_type.as_str().len();
                let per_op =
                    3 * batch::PUT_OVERHEAD + 3 * (unit_len + 8) + 8 + type_len + 8 + 32 + 4;
                part.operations
                    .iter()
                    .map(|op| codec::operation_size_hint(&op.action, &op.error) + per_op)
                    .sum::<usize>()
                    + batch::PUT_OVERHEAD
                    + unit_len
                    + 96
                    + type_len
            })
            .sum();
        let mut records = batch::records(size);
        let total: usize = parts.iter().map(|p| p.operations.len()).sum();
        let mut stored: Vec<OperationWithContext> = Vec::with_capacity(total);
        let mut ordinals: Vec<OrdinalSlots> = Vec::with_capacity(total);
        let mut spans = Vec::with_capacity(parts.len());
        let (mut value, mut key, mut ordinal_value) = (Vec::new(), Vec::new(), Vec::new());
        for part in parts {
            let StreamAppend {
                unit,
                document_type,
                revision,
                operations,
                order,
                state,
            } = part;
            let unit_key = keys::unit_key(&unit);
            let op_id_value = codec::encode_op_id(&unit_key);
            let first = stored.len();
            for (position, operation) in operations.into_iter().enumerate() {
                let id = OperationId::derive(&unit, &operation.action.id);
                let content_hash =
                    Operation::content_hash_of(&id, operation.timestamp_utc_ms, &operation.action);
                value.clear();
                codec::encode_operation(
                    &mut value,
                    &id,
                    operation.index,
                    operation.skip,
                    operation.timestamp_utc_ms,
                    &operation.state_hash,
                    &content_hash,
                    &operation.action,
                    &operation.error,
                );
                if value.len() > crate::limits::MAX_OPERATION_BYTES {
                    return Err(Error::InvalidOperation {
                        position,
                        reason: InvalidOperationReason::TooLarge {
                            bytes: value.len(),
                            max: crate::limits::MAX_OPERATION_BYTES,
                        },
                    });
                }
                key.clear();
                keys::push_op_key(&mut key, &unit_key, operation.index);
                let (_, value_at) = batch::put(&mut records, families.operations, &key, &value);
                ordinal_value.clear();
                codec::encode_ordinal_into(
                    &mut ordinal_value,
                    &OrdinalValue {
                        document_type: document_type.as_str(),
                        op_key: &key,
                    },
                );
                // The ordinal key is a placeholder until the commit leader
                // assigns ordinals.
                let (ordinal_key, _) = batch::put(
                    &mut records,
                    families.ordinals,
                    &keys::ordinal_key(Ordinal(0)),
                    &ordinal_value,
                );
                batch::put(
                    &mut records,
                    families.op_ids,
                    &keys::op_id_key(&id, operation.index, operation.skip),
                    &op_id_value,
                );
                ordinals.push(OrdinalSlots {
                    value: value_at,
                    key: ordinal_key.start,
                });
                stored.push(OperationWithContext {
                    operation: Operation {
                        id,
                        index: operation.index,
                        skip: operation.skip,
                        timestamp_utc_ms: operation.timestamp_utc_ms,
                        hash: Digest::default(),
                        state_hash: operation.state_hash,
                        content_hash,
                        action: operation.action,
                        error: operation.error,
                    },
                    context: context_of(&unit, &document_type, Ordinal(0)),
                });
            }
            spans.push(Span {
                unit,
                unit_key,
                document_type,
                order,
                state,
                revision,
                ops: first..stored.len(),
            });
        }

        // Lock every target stream and the read set, in key order.
        let mut slots: Vec<(Vec<u8>, Arc<parking_lot::Mutex<HeadSlot>>)> = conditions
            .iter()
            .map(|(u, _)| keys::unit_key(u))
            .chain(spans.iter().map(|s| s.unit_key.clone()))
            .map(|k| {
                let slot = self.inner.heads.slot(&k);
                (k, slot)
            })
            .collect();
        slots.sort_by(|a, b| a.0.cmp(&b.0));
        slots.dedup_by(|a, b| a.0 == b.0);
        let mut guards = lock_in_order(&slots);
        for guard_index in 0..guards.len() {
            self.load_head(&slots[guard_index].0, &mut guards[guard_index])?;
        }
        let slot_of = |key: &[u8]| {
            slots
                .iter()
                .position(|(k, _)| k.as_slice() == key)
                .expect("every stream of the write is locked")
        };
        for (condition, expected) in &conditions {
            let actual = guards[slot_of(&keys::unit_key(condition))]
                .head
                .as_ref()
                .map_or(0, |h| h.next_index);
            if actual != expected.get() {
                return Err(Error::AppendConditionFailed {
                    condition: condition.clone(),
                    expected: expected.get(),
                    actual,
                });
            }
        }

        // Each part against its stream's head as the parts before it left
        // it: the document type, then the revision.
        let mut heads: Vec<Option<HeadValue>> = guards.iter().map(|g| g.head.clone()).collect();
        let mut expect: Vec<(u64, Option<DocumentType>)> = heads
            .iter()
            .map(|h| {
                h.as_ref()
                    .map_or((0, None), |h| (h.next_index, Some(h.document_type.clone())))
            })
            .collect();
        let mut first_stale = None;
        for (k, span) in spans.iter().enumerate() {
            let (next_index, document_type) = &mut expect[slot_of(&span.unit_key)];
            if let Some(stored) = document_type {
                if *stored != span.document_type {
                    return Err(Error::DocumentTypeMismatch {
                        unit: span.unit.clone(),
                        stored: stored.clone(),
                        given: span.document_type.clone(),
                    });
                }
            }
            if span.revision.get() != *next_index {
                first_stale.get_or_insert(k);
            }
            *next_index = span.revision.get() + span.ops.len() as u64;
            *document_type = Some(span.document_type.clone());
        }
        if let Some(first_stale) = first_stale {
            let replayed = self.stale_parts(&spans, first_stale, &heads, slot_of, &stored)?;
            if sync {
                self.sync_wal()?;
            }
            return Ok(replayed);
        }
        if stored.is_empty() {
            return Ok(Vec::new());
        }

        // Chain, finish the records with the new heads, commit.
        let mut touched = vec![false; heads.len()];
        let mut states: Vec<Option<&HeadState>> = vec![None; heads.len()];
        for span in &spans {
            let slot = slot_of(&span.unit_key);
            let head = heads[slot].as_ref();
            let mut previous = head.map_or(Digest::default(), |h| h.last_hash);
            let mut latest = head.map_or(0, |h| h.latest_timestamp_utc_ms);
            let next_index = head.map_or(0, |h| h.next_index);
            for (op, slots) in stored[span.ops.clone()]
                .iter_mut()
                .zip(&ordinals[span.ops.clone()])
            {
                let op = &mut op.operation;
                let encoded = &mut records[slots.value.clone()];
                op.hash = chain::link(&previous, &span.unit_key, codec::operation_content(encoded));
                codec::set_operation_hash(encoded, &op.hash);
                previous = op.hash;
                latest = latest.max(op.timestamp_utc_ms);
            }
            let in_merge_order = match span.order {
                LogOrder::Keeps => head.is_none_or(|h| h.in_merge_order),
                LogOrder::Restores => true,
                LogOrder::Unknown => false,
            };
            heads[slot] = Some(HeadValue {
                next_index: next_index + span.ops.len() as u64,
                last_hash: previous,
                latest_timestamp_utc_ms: latest,
                document_type: span.document_type.clone(),
                in_merge_order,
            });
            touched[slot] |= !span.ops.is_empty();
            states[slot] = span.state.as_ref();
        }
        let mut head_records = 0;
        for (slot, head) in heads.iter().enumerate() {
            if let (true, Some(head)) = (touched[slot], head) {
                batch::put(
                    &mut records,
                    families.heads,
                    &slots[slot].0,
                    &codec::encode_head(head, states[slot]),
                );
                head_records += 1;
            }
        }
        let write = PendingWrite {
            records,
            // Three records per operation and one per head. (The count
            // cannot overflow: that many operations would not fit in
            // memory.)
            count: (3 * stored.len() + head_records) as u32,
            ordinals,
            sync,
        };
        let first = self.inner.commit.commit(&self.inner.db, write)?;
        for (slot, head) in heads.into_iter().enumerate() {
            if touched[slot] {
                guards[slot].head = head;
            }
        }
        drop(guards);
        for (i, op) in stored.iter_mut().enumerate() {
            op.context.ordinal = Ordinal(first.get() + i as u64);
        }
        Ok(stored)
    }

    /// A write with a stale part. One part alone follows `apply`'s rules
    /// (replay, duplicate, mismatch). Of several, the write is a replay
    /// when every part is stored at exactly its positions (checked against
    /// the stream's real head, so one stream in two parts replays too);
    /// otherwise it fails with the first stale part's error, or, when that
    /// part alone is a replay, as a partial duplicate.
    fn stale_parts(
        &self,
        spans: &[Span],
        first_stale: usize,
        heads: &[Option<HeadValue>],
        slot_of: impl Fn(&[u8]) -> usize,
        appended: &[OperationWithContext],
    ) -> Result<Vec<OperationWithContext>> {
        let mut results: Vec<Result<Vec<OperationWithContext>>> = spans
            .iter()
            .map(|span| {
                let next_index = heads[slot_of(&span.unit_key)]
                    .as_ref()
                    .map_or(0, |h| h.next_index);
                self.stale_append(
                    &span.unit,
                    &span.unit_key,
                    &span.document_type,
                    span.revision,
                    next_index,
                    &appended[span.ops.clone()],
                )
            })
            .collect();
        if results.iter().all(Result::is_ok) {
            let parts = results.into_iter().collect::<Result<Vec<_>>>()?;
            return Ok(parts.into_iter().flatten().collect());
        }
        let span = &spans[first_stale];
        match results.swap_remove(first_stale)?.first() {
            Some(op) => Err(Error::DuplicateOperation {
                op_id: op.operation.id,
                index: op.operation.index,
                skip: op.operation.skip,
            }),
            None => Err(Error::RevisionMismatch {
                unit: span.unit.clone(),
                expected: heads[slot_of(&span.unit_key)]
                    .as_ref()
                    .map_or(0, |h| h.next_index),
                actual: span.revision.get(),
            }),
        }
    }

    /// Fills a stream's cached head from disk on first use.
    fn load_head(&self, unit_key: &[u8], slot: &mut HeadSlot) -> Result<()> {
        if !slot.loaded {
            let cf = super::commit::cf_handles(&self.inner.db).heads;
            slot.head = match self.inner.db.get_pinned_cf(cf, unit_key)? {
                Some(bytes) => Some(codec::decode_head(&bytes)?),
                // A stream without a head is new, unless its head was
                // lost: appending at index 0 would overwrite its history.
                None => {
                    self.check_no_operations(unit_key)?;
                    None
                }
            };
            slot.loaded = true;
        }
        Ok(())
    }

    /// An append whose revision is not the stream's next index: a replay,
    /// a partial duplicate, or a conflict.
    fn stale_append(
        &self,
        unit: &SyncUnit,
        unit_key: &[u8],
        document_type: &DocumentType,
        revision: Revision,
        next_index: u64,
        appended: &[OperationWithContext],
    ) -> Result<Vec<OperationWithContext>> {
        let mismatch = || Error::RevisionMismatch {
            unit: unit.clone(),
            expected: next_index,
            actual: revision.get(),
        };
        if revision.get() > next_index || appended.is_empty() {
            return Err(mismatch());
        }
        let stored = self.stored_at(unit_key, appended.iter().map(|p| p.operation.index))?;
        let mut replayed = Vec::with_capacity(appended.len());
        let mut first_duplicate = None;
        for (p, stored) in appended.iter().map(|p| &p.operation).zip(stored) {
            match stored {
                Some((op, ordinal)) if op.id == p.id && op.skip == p.skip => {
                    first_duplicate.get_or_insert((op.id, op.index, op.skip));
                    replayed.push(OperationWithContext {
                        operation: op,
                        context: context_of(unit, document_type, ordinal),
                    });
                }
                _ => {}
            }
        }
        if replayed.len() == appended.len() {
            return Ok(replayed);
        }
        match first_duplicate {
            Some((op_id, index, skip)) => Err(Error::DuplicateOperation { op_id, index, skip }),
            None => Err(mismatch()),
        }
    }

    /// The stored operations at `indexes` of a stream (`None` past its end).
    fn stored_at(
        &self,
        unit_key: &[u8],
        indexes: impl Iterator<Item = u64>,
    ) -> Result<Vec<Option<(Operation, Ordinal)>>> {
        let cf = super::commit::cf_handles(&self.inner.db).operations;
        let keys: Vec<Vec<u8>> = indexes
            .map(|i| keys::op_key_from_unit(unit_key, i))
            .collect();
        self.inner
            .db
            .batched_multi_get_cf(cf, &keys, false)
            .into_iter()
            .map(|value| match value? {
                Some(bytes) => codec::decode_operation(&bytes).map(Some),
                None => Ok(None),
            })
            .collect()
    }
}

pub(super) fn context_of(
    unit: &SyncUnit,
    document_type: &DocumentType,
    ordinal: Ordinal,
) -> OperationContext {
    OperationContext {
        document_id: unit.document_id.clone(),
        document_type: document_type.clone(),
        scope: unit.scope.clone(),
        branch: unit.branch.clone(),
        ordinal,
    }
}
