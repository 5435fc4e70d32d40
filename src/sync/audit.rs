//! The audit: per stream, a record of what a replica holds, small enough to
//! publish, from which another replica tells, without seeing the
//! operations, whether one of the two is behind or they diverged (the
//! seed's open question of a decentralised operation store). Owns the
//! record and the comparison; publishing records belongs to a transport
//! (`nats::audit`), and nothing here writes.
//!
//! A record holds the size of the stream's operation set, a vector of how
//! many of those operations each originator (the node that executed it
//! first, carried with the operation from replica to replica) made, and a
//! digest of the stream's effective history. Two replicas that hold the
//! same set have equal records: the set determines the history (the merge
//! rule), and each operation's originator is fixed where it was executed.
//! A record whose vector the other's dominates is behind; equal vectors
//! with different digests mean the replicas hold different operations (or
//! the same operations under different contents, or a broken merge) while
//! each has as many from each originator: they diverged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Shared;
use crate::error::Result;
use crate::keys;
use crate::model::{Digest, DocumentType, Ordinal, SyncUnit};

/// What a replica holds of one stream, as the audit compares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StreamRecord {
    /// The stream.
    pub unit: SyncUnit,
    /// Its document's type.
    pub document_type: DocumentType,
    /// How many distinct operations (op id and content) it holds.
    pub operations: u64,
    /// Per originator's node id (hex), how many of those operations it
    /// made, as this replica knows it: an operation no remote sent (a local
    /// execute, or a program's load or import) counts as this node's, one a
    /// remote sent without naming its originator (recorded before protocol
    /// 2) under the all-zero id. Two replicas may so count one operation
    /// under different nodes: [`StreamRecord::standing`] goes by the digest
    /// first.
    pub origins: BTreeMap<String, u64>,
    /// Digest of the set (its content hashes) and of the effective history
    /// (op ids and content hashes, in order).
    pub history: Digest,
}

/// How one replica's record of a stream stands against another's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Standing {
    /// The same operations and history.
    InSync,
    /// We lack operations they hold: our vector is dominated by theirs.
    Behind,
    /// They lack operations we hold: their vector is dominated by ours.
    Ahead,
    /// Each lacks operations of some originator that the other holds.
    EachBehind,
    /// The same count from every originator, but different operations or a
    /// different history.
    Diverged,
}

impl StreamRecord {
    /// The record of a stream this replica does not hold.
    pub fn empty(unit: SyncUnit, document_type: DocumentType) -> Self {
        Self {
            unit,
            document_type,
            operations: 0,
            origins: BTreeMap::new(),
            history: history_of(&Digest::default(), []),
        }
    }

    /// How `self` (ours) stands against `theirs`, of the same stream. Equal
    /// digests are in sync whatever the counts say (an operation recorded
    /// under different originators on two replicas, e.g. one loaded by a
    /// program on both, changes the counts, not the set); otherwise the
    /// counts say which side lacks operations.
    pub fn standing(&self, theirs: &StreamRecord) -> Standing {
        if self.history == theirs.history {
            return Standing::InSync;
        }
        let count = |r: &StreamRecord, origin: &str| r.origins.get(origin).copied().unwrap_or(0);
        let (mut less, mut more) = (false, false);
        for origin in self.origins.keys().chain(theirs.origins.keys()) {
            let (ours, their) = (count(self, origin), count(theirs, origin));
            less |= ours < their;
            more |= ours > their;
        }
        match (less, more) {
            (false, false) => Standing::Diverged,
            (true, false) => Standing::Behind,
            (false, true) => Standing::Ahead,
            (true, true) => Standing::EachBehind,
        }
    }
}

/// The record of one stream as this replica holds it now. Reads the
/// stream's whole log and looks up each operation's originator.
pub(crate) fn record(
    shared: &Shared,
    unit: &SyncUnit,
    document_type: &DocumentType,
) -> Result<StreamRecord> {
    let store = shared.reactor.store();
    let raw = store.scan_until(&keys::unit_key(unit), 0, None, Ordinal(u64::MAX))?;
    let ours = super::state::hex(&shared.node.node);
    let mut seen = std::collections::HashSet::new();
    let mut distinct = Vec::new();
    let mut set = [0u8; 32];
    for (op, _) in &raw {
        if !seen.insert((op.id, op.content_hash)) {
            continue; // a later copy (a merge moved it)
        }
        for (d, b) in set.iter_mut().zip(op.content_hash.as_bytes()) {
            *d ^= b;
        }
        distinct.push((op.id, op.content_hash));
    }
    let mut origins: BTreeMap<String, u64> = BTreeMap::new();
    for originator in shared.state.originators(&distinct)? {
        let origin = originator.map_or_else(|| ours.clone(), |node| super::state::hex(&node));
        *origins.entry(origin).or_default() += 1;
    }
    let effective = crate::fold::effective(&raw);
    Ok(StreamRecord {
        unit: unit.clone(),
        document_type: document_type.clone(),
        operations: seen.len() as u64,
        origins,
        history: history_of(
            &Digest(set),
            effective
                .iter()
                .map(|op| (op.id.as_bytes(), op.content_hash.as_bytes())),
        ),
    })
}

fn history_of<'a>(
    set: &Digest,
    effective: impl IntoIterator<Item = (&'a [u8; 16], &'a [u8; 32])>,
) -> Digest {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let mut h =
        blake3::Hasher::new_keyed(crate::model::domain_key(&KEY, "reactordb audit history v1"));
    h.update(set.as_bytes());
    for (id, content) in effective {
        h.update(id);
        h.update(content);
    }
    Digest(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DocumentId, Scope};

    fn record(origins: &[(&str, u64)], history: u8) -> StreamRecord {
        let unit = SyncUnit::new(
            DocumentId::new("d").expect("valid"),
            Scope::global(),
            crate::model::Branch::main(),
        );
        let mut r = StreamRecord::empty(unit, DocumentType::new("t").expect("valid"));
        r.origins = origins.iter().map(|(o, n)| (o.to_string(), *n)).collect();
        r.operations = r.origins.values().sum();
        r.history = Digest([history; 32]);
        r
    }

    #[test]
    fn standing_follows_vector_dominance_then_the_digest() {
        let a = record(&[("a", 2), ("b", 1)], 1);
        assert_eq!(a.standing(&a.clone()), Standing::InSync);
        assert_eq!(
            a.standing(&record(&[("a", 2), ("b", 1)], 2)),
            Standing::Diverged
        );
        assert_eq!(
            a.standing(&record(&[("a", 2), ("b", 2)], 2)),
            Standing::Behind
        );
        assert_eq!(
            a.standing(&record(&[("a", 3), ("b", 1), ("c", 1)], 2)),
            Standing::Behind
        );
        assert_eq!(a.standing(&record(&[("a", 2)], 2)), Standing::Ahead);
        assert_eq!(
            a.standing(&record(&[("a", 1), ("b", 2)], 2)),
            Standing::EachBehind
        );
        assert_eq!(record(&[], 0).standing(&a), Standing::Behind);
        // A zero count is no count.
        assert_eq!(
            a.standing(&record(&[("a", 2), ("b", 1), ("c", 0)], 1)),
            Standing::InSync
        );
    }
}
