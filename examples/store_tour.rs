//! A tour of the Operation Store on its own: opens (or creates) a database
//! in `./reactordb-data` (or the directory given as the first argument),
//! appends a batch of operations to a few documents, shows a replay, a
//! conflict, the ordinal feed and a verification, and times a burst of
//! appends.
//!
//! Run: `cargo run --release --example store_tour [DIR]`

use std::time::Instant;

use reactordb::{
    Action, ActionId, ActionType, Branch, Digest, DocumentId, DocumentType, Durability,
    NewOperation, OperationStore, Ordinal, Paging, Revision, Scope, StoreOptions, SyncUnit,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "reactordb-data".to_owned());
    let store = OperationStore::open(&dir, StoreOptions::with_durability(Durability::Buffered))?;
    let doc_type = DocumentType::new("example/counter")?;
    let run = store.last_ordinal().get(); // distinct action ids on every run
    println!("opened {dir}: {} operations already stored", run);

    let make = |unit: &SyncUnit, index: u64, n: u64| -> Result<NewOperation, reactordb::IdError> {
        let action = Action::new(
            ActionId::new(format!("run{run}-{}-{n}", unit.document_id))?,
            ActionType::new("INCREMENT")?,
            unit.scope.clone(),
            1_700_000_000_000 + n,
            n.to_be_bytes().to_vec(),
        );
        Ok(NewOperation::new(
            index,
            action,
            Digest::of(&(n + 1).to_be_bytes()),
        ))
    };

    // 1. A few documents, ten operations each, one atomic apply per document.
    let units: Vec<SyncUnit> = (0..3)
        .map(|d| {
            Ok(SyncUnit::new(
                DocumentId::new(format!("counter-{d}"))?,
                Scope::global(),
                Branch::main(),
            ))
        })
        .collect::<Result<_, reactordb::IdError>>()?;
    for unit in &units {
        let revision = store.head(unit)?.map_or(0, |h| h.revision.get());
        let ops = (0..10)
            .map(|n| make(unit, revision + n, n))
            .collect::<Result<Vec<_>, _>>()?;
        let stored = store.apply(
            &unit.document_id,
            &doc_type,
            &unit.scope,
            &unit.branch,
            Revision(revision),
            |txn| {
                txn.add_operations(ops.clone());
            },
        )?;
        println!(
            "{unit}: appended indexes {}..={} (ordinals {}..={})",
            stored[0].operation.index,
            stored[9].operation.index,
            stored[0].context.ordinal,
            stored[9].context.ordinal
        );
        // 2. The same call again is an idempotent replay: same result, nothing written.
        let replay = store.apply(
            &unit.document_id,
            &doc_type,
            &unit.scope,
            &unit.branch,
            Revision(revision),
            |txn| {
                txn.add_operations(ops);
            },
        )?;
        assert_eq!(replay, stored);
    }

    // 3. A stale revision with new work is a conflict the caller retries.
    let unit = &units[0];
    let stale = store.apply(
        &unit.document_id,
        &doc_type,
        &unit.scope,
        &unit.branch,
        Revision(0),
        |txn| {
            txn.add_operation(make(unit, 0, 999).expect("valid ids"));
        },
    );
    match stale {
        Err(e) if e.is_retryable() => println!("stale append refused, retryable: {e}"),
        other => return Err(format!("expected a revision mismatch, got {other:?}").into()),
    }

    // 4. The ordinal feed, as the view and sync read it.
    let feed = store.get_since_ordinal(Ordinal(run + 1), Paging::first(3))?;
    for item in &feed.items {
        println!(
            "ordinal {}: {} index {} hash {}",
            item.context.ordinal,
            item.context.unit(),
            item.operation.index,
            &item.operation.hash.to_string()[..16]
        );
    }

    // 5. A burst of single-operation appends.
    let burst = SyncUnit::new(
        DocumentId::new(format!("burst-{run}"))?,
        Scope::global(),
        Branch::main(),
    );
    let n = 20_000u64;
    let start = Instant::now();
    for i in 0..n {
        let op = make(&burst, i, i)?;
        store.apply(
            &burst.document_id,
            &doc_type,
            &burst.scope,
            &burst.branch,
            Revision(i),
            |txn| {
                txn.add_operation(op);
            },
        )?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{n} single-operation appends (buffered) in {secs:.2}s: {:.0} ops/s",
        n as f64 / secs
    );

    // 6. Every hash chain re-checked.
    let report = store.verify_all()?;
    println!(
        "verify: {} streams, {} operations, {}",
        report.streams_checked,
        report.operations_checked,
        if report.is_clean() { "clean" } else { "BROKEN" }
    );
    if let Some(broken) = report.first_broken {
        return Err(format!(
            "broken chain at {} index {}: {:?}",
            broken.unit, broken.index, broken.fault
        )
        .into());
    }
    Ok(())
}
