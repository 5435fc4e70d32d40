//! Checking and rebuilding the view's own data (`view_meta`: checkpoint,
//! header records, slug, type and relationship indexes; `snapshots`)
//! against the operations it is derived from. The view's data is never the
//! truth: whatever `verify_view` finds is repaired by [`rebuild_view`],
//! which drops it all and lets the view fold it again from the store.
//! Snapshots are checked by `verify_snapshots` (their own chain).

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::fold::{self, Reducer};
use crate::keys::{self, view_tag};
use crate::model::Scope;
use crate::store::OperationStore;

use super::index;

/// What is wrong with the view's data.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViewFault {
    /// The checkpoint does not decode, or is past the store's last
    /// ordinal: the view would skip the writes up to it.
    Checkpoint,
    /// A document's header record does not decode (its checksum fails).
    UndecodableHeader,
    /// A document's header record is not the fold of its `document` scope
    /// up to the checkpoint (missing, another revision, other content).
    HeaderMismatch,
    /// A header record names a document with no `document` scope.
    StrayHeader,
    /// An index entry (slug, type, relationship) the headers imply is
    /// missing: the document drops out of `find_by_type`, slugs or
    /// relationships.
    MissingIndexEntry,
    /// An index entry no header implies, or a key of no known kind.
    StrayIndexEntry,
    /// An index entry whose value is not an index entry's (`{1}`, or empty
    /// as written before the view's values had versions).
    IndexValue,
}

/// What [`verify_view`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ViewReport {
    /// Documents (per branch) whose header record was checked.
    pub headers_checked: u64,
    /// The first fault, with the key it is at (as text, NULs shown as `/`).
    pub first_fault: Option<(ViewFault, String)>,
}

impl ViewReport {
    /// Whether the view's data is what the operations say.
    pub fn is_clean(&self) -> bool {
        self.first_fault.is_none()
    }
}

fn place(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "/")
}

/// Checks the view's metadata against a fold of the store up to the
/// view's checkpoint (so a view that lags, closed or crashed, is not
/// reported: what it holds must be exactly the state at its checkpoint).
/// Works on a closed database's store; reads only.
pub fn verify_view(store: &OperationStore) -> Result<ViewReport> {
    let mut report = ViewReport::default();
    let db = store.db();
    let fault = |report: &mut ViewReport, fault: ViewFault, key: &[u8]| {
        report.first_fault = Some((fault, place(key)));
    };
    let checkpoint = match index::load_checkpoint(db) {
        Ok(c) if c <= store.last_ordinal() => c,
        _ => {
            fault(&mut report, ViewFault::Checkpoint, &[view_tag::CHECKPOINT]);
            return Ok(report);
        }
    };
    let mut headers = BTreeSet::new();
    let mut entries = BTreeSet::new();
    for stream in store.all_streams()? {
        if stream.unit.scope != Scope::document() {
            continue;
        }
        let (document_id, branch) = (&stream.unit.document_id, &stream.unit.branch);
        let key = index::header_key(document_id, branch);
        let reducer = Reducer::System {
            document_id,
            branch,
        };
        let unit_key = keys::unit_key(&stream.unit);
        let folded = fold::fold(store, &unit_key, &reducer, 0, checkpoint, None)?;
        report.headers_checked += 1;
        let stored = match index::load_header_record(db, &key) {
            Ok(stored) => stored,
            Err(Error::Corrupt { .. }) => {
                fault(&mut report, ViewFault::UndecodableHeader, &key);
                return Ok(report);
            }
            Err(e) => return Err(e),
        };
        let matches = match &stored {
            None => folded.revision == 0,
            Some(record) => record.revision == folded.revision && record.state == folded.state,
        };
        if !matches {
            fault(&mut report, ViewFault::HeaderMismatch, &key);
            return Ok(report);
        }
        let header = crate::models::decode_header(&folded.state);
        entries.extend(index::index_entries(header.as_ref()));
        headers.insert(key);
    }
    let mut iter = db.raw_iterator_cf(index::cf(db));
    iter.seek_to_first();
    let mut present = BTreeSet::new();
    while let Some(key) = iter.key() {
        match key.first().copied() {
            Some(view_tag::CHECKPOINT) if key.len() == 1 => {}
            Some(view_tag::HEADER) => {
                if !headers.contains(key) {
                    fault(&mut report, ViewFault::StrayHeader, key);
                    return Ok(report);
                }
            }
            _ => {
                if !entries.contains(key) {
                    fault(&mut report, ViewFault::StrayIndexEntry, key);
                    return Ok(report);
                }
                if !iter.value().is_some_and(index::is_index_value) {
                    fault(&mut report, ViewFault::IndexValue, key);
                    return Ok(report);
                }
                present.insert(key.to_vec());
            }
        }
        iter.next();
    }
    iter.status()?;
    if let Some(missing) = entries.difference(&present).next() {
        fault(&mut report, ViewFault::MissingIndexEntry, missing);
    }
    Ok(report)
}

/// Drops every piece of view data (checkpoint, header records, indexes,
/// snapshots): the next [`DocumentView::open`](super::DocumentView::open)
/// folds it all again from the operations, from ordinal 1. The database
/// must not be open in a view meanwhile. Operations are not touched.
pub fn rebuild_view(store: &OperationStore) -> Result<()> {
    store.check_writable()?;
    let db = store.db();
    // Keys of both families start with a text field or a tag letter,
    // never 0xFF (not a UTF-8 byte): one range covers each family.
    for name in [keys::CF_VIEW_META, keys::CF_SNAPSHOTS] {
        let cf = db
            .cf_handle(name)
            .expect("column families are created when the store opens");
        db.delete_range_cf(cf, [0u8].as_slice(), [0xffu8].as_slice())?;
        db.delete_cf(cf, [])?;
    }
    Ok(())
}
