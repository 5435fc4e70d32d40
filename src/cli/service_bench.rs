//! `bench --workload service` (W4): a closed-loop service. Each of N
//! client threads owns one document and submits one action at a time,
//! waiting until it is written (`WriteReady`) before the next, as a
//! request handler does. Beside it, in the same run, its anchor: the bare
//! `OperationStore` driven the same way (N threads, one single-operation
//! `apply` each, awaited), with the same durability. Both print appends
//! per RocksDB write, which shows whether group commit turns many waiting
//! clients into few writes (and fsyncs, under `Synced`). Only the public
//! API is used.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use reactordb::{
    Action, ActionId, ActionType, Branch, CommitStats, CounterModel, CreateDocumentInput, Digest,
    DocumentId, Durability, ModelRegistry, NewOperation, OperationStore, Reactor, Revision, Scope,
    StoreOptions,
};
use serde::Serialize;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const WAIT: Duration = Duration::from_secs(120);

/// One row: N clients in one durability mode, reactor beside store.
#[derive(Debug, Serialize)]
pub(crate) struct ServiceRow {
    pub clients: usize,
    pub durability: &'static str,
    /// Actions written per second through the reactor.
    pub reactor_per_s: f64,
    /// Single-operation appends per second through the bare store.
    pub store_per_s: f64,
    /// `reactor_per_s / store_per_s`.
    pub ratio: f64,
    /// Appends per RocksDB write (each write one fsync under `Synced`).
    pub reactor_appends_per_write: f64,
    pub store_appends_per_write: f64,
}

/// Runs every client count in both durability modes, each for `seconds`.
pub(crate) fn run(clients: &[usize], seconds: f64, json: bool) -> BenchResult<()> {
    if !json {
        println!(
            "{:>7} {:>9} {:>11} {:>11} {:>6} {:>15} {:>13}",
            "clients", "mode", "reactor/s", "store/s", "ratio", "reactor_app/wr", "store_app/wr"
        );
    }
    if clients.contains(&0) {
        return Err("--clients: each count must be at least 1".into());
    }
    let run_for = Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or("--service-secs must be a positive number of seconds")?;
    for durability in [Durability::Buffered, Durability::Synced] {
        for &n in clients {
            let (reactor_per_s, reactor_stats) = reactor_loop(n, durability, run_for)?;
            let (store_per_s, store_stats) = store_loop(n, durability, run_for)?;
            let row = ServiceRow {
                clients: n,
                durability: match durability {
                    Durability::Synced => "synced",
                    _ => "buffered",
                },
                reactor_per_s,
                store_per_s,
                ratio: reactor_per_s / store_per_s,
                reactor_appends_per_write: reactor_stats.appends_per_write(),
                store_appends_per_write: store_stats.appends_per_write(),
            };
            if json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                println!(
                    "{:>7} {:>9} {:>11.0} {:>11.0} {:>6.2} {:>15.1} {:>13.1}",
                    row.clients,
                    row.durability,
                    row.reactor_per_s,
                    row.store_per_s,
                    row.ratio,
                    row.reactor_appends_per_write,
                    row.store_appends_per_write
                );
            }
        }
    }
    Ok(())
}

fn doc(client: usize) -> BenchResult<DocumentId> {
    Ok(DocumentId::new(format!("client-{client:04}"))?)
}

/// Runs `clients` threads of `body(client, n)` until `run_for` has passed
/// (all start together); the total number of calls per second.
fn closed_loop<F>(clients: usize, run_for: Duration, body: F) -> BenchResult<f64>
where
    F: Fn(usize, u64) -> BenchResult<()> + Send + Sync + 'static,
{
    let body = Arc::new(body);
    let stop = Arc::new(AtomicBool::new(false));
    let start_line = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (body, stop, start_line) = (body.clone(), stop.clone(), start_line.clone());
            std::thread::spawn(move || -> Result<u64, String> {
                start_line.wait();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    body(client, n).map_err(|e| e.to_string())?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    start_line.wait();
    let start = Instant::now();
    std::thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for thread in threads {
        total += thread.join().map_err(|_| "client panicked")??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

fn reactor_loop(
    clients: usize,
    durability: Durability,
    run_for: Duration,
) -> BenchResult<(f64, CommitStats)> {
    let dir = tempfile::tempdir()?;
    let reactor = Arc::new(
        Reactor::builder(dir.path())
            .durability(durability)
            .registry(ModelRegistry::with_examples())
            .open()?,
    );
    for client in 0..clients {
        let input = CreateDocumentInput {
            document_type: CounterModel::document_type(),
            model_version: 1,
            name: format!("client {client}"),
            slug: None,
            meta: Default::default(),
        };
        reactor.create(doc(client)?, input)?.written(WAIT)?;
    }
    let before = reactor.store().commit_stats();
    let increment = ActionType::new("INCREMENT")?;
    let per_s = {
        let reactor = reactor.clone();
        closed_loop(clients, run_for, move |client, n| {
            let action = Action::new(
                ActionId::new(format!("c{client}-{n}"))?,
                increment.clone(),
                Scope::global(),
                1_700_000_000_000 + n,
                Vec::new(),
            );
            reactor
                .execute(doc(client)?, Branch::main(), vec![action])?
                .written(WAIT)?;
            Ok(())
        })?
    };
    Ok((per_s, reactor.store().commit_stats().since(&before)))
}

fn store_loop(
    clients: usize,
    durability: Durability,
    run_for: Duration,
) -> BenchResult<(f64, CommitStats)> {
    let dir = tempfile::tempdir()?;
    let store = OperationStore::open(dir.path(), StoreOptions::with_durability(durability))?;
    let before = store.commit_stats();
    let increment = ActionType::new("INCREMENT")?;
    let per_s = {
        let store = store.clone();
        let document_type = CounterModel::document_type();
        closed_loop(clients, run_for, move |client, n| {
            let action = Action::new(
                ActionId::new(format!("c{client}-{n}"))?,
                increment.clone(),
                Scope::global(),
                1_700_000_000_000 + n,
                Vec::new(),
            );
            store.apply(
                &doc(client)?,
                &document_type,
                &Scope::global(),
                &Branch::main(),
                Revision(n),
                |txn| {
                    txn.add_operation(NewOperation::new(n, action, Digest::default()));
                },
            )?;
            Ok(())
        })?
    };
    Ok((per_s, store.commit_stats().since(&before)))
}
