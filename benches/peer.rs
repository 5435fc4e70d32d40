//! W4 beside its peers, in the same run: the closed-loop service on the
//! reactor (`workloads::service_reactor`), on the bare Operation Store
//! (`workloads::service_store`), and on the embedded database a user would
//! pick instead, SQLite in WAL mode used as an event store: one stream per
//! client thread, each append `BEGIN IMMEDIATE`, read the stream's head,
//! insert at the next index, `COMMIT`. `Buffered` is set beside SQLite's
//! `synchronous=NORMAL` (no fsync per commit) and `Synced` beside `FULL`.
//!
//! Run: `cargo bench --bench peer` (each configuration runs
//! `PEER_SECS` seconds, default 3; `PEER_CLIENTS`, default `1,16,64`).

use std::time::Duration;

#[path = "../src/cli/workloads.rs"]
mod workloads;

use reactordb::Durability;
use rusqlite::{params, Connection, OptionalExtension};
use workloads::{closed_loop, ServiceError};

/// The SQLite event store: `clients` threads, each its own connection and
/// stream, appending one ~200-byte event per transaction for `run_for`.
fn sqlite_loop(
    dir: &std::path::Path,
    clients: usize,
    synchronous: &'static str,
    run_for: Duration,
) -> Result<f64, ServiceError> {
    let path = dir.join("events.db");
    {
        let setup = Connection::open(&path)?;
        setup.pragma_update(None, "journal_mode", "WAL")?;
        setup.execute_batch(
            "CREATE TABLE events (stream INTEGER NOT NULL, idx INTEGER NOT NULL,
             payload BLOB NOT NULL, PRIMARY KEY (stream, idx)) WITHOUT ROWID;",
        )?;
    }
    let connections = (0..clients)
        .map(|_| -> Result<_, ServiceError> {
            let connection = Connection::open(&path)?;
            connection.pragma_update(None, "synchronous", synchronous)?;
            connection.busy_timeout(Duration::from_secs(60))?;
            Ok(parking_lot::Mutex::new(connection))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let payload = vec![7u8; 200];
    closed_loop(clients, run_for, move |client, _| {
        let mut connection = connections[client].lock();
        let txn = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let head: Option<i64> = txn
            .query_row(
                "SELECT max(idx) FROM events WHERE stream = ?1",
                params![client as i64],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        let next = head.map_or(0, |h| h + 1);
        txn.execute(
            "INSERT INTO events (stream, idx, payload) VALUES (?1, ?2, ?3)",
            params![client as i64, next, payload],
        )?;
        txn.commit()?;
        Ok(())
    })
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), ServiceError> {
    let run_for = Duration::from_secs_f64(env_or("PEER_SECS", 3.0));
    let clients: Vec<usize> = std::env::var("PEER_CLIENTS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .map(|c| c.trim().parse())
        .collect::<Result<_, _>>()?;
    println!(
        "{:>7} {:>9} {:>11} {:>11} {:>11} {:>15} {:>13}",
        "clients", "mode", "reactor/s", "store/s", "sqlite/s", "reactor/sqlite", "reactor/store"
    );
    for (durability, synchronous) in [
        (Durability::Buffered, "NORMAL"),
        (Durability::Synced, "FULL"),
    ] {
        for &n in &clients {
            let dirs = [(); 3].map(|()| tempfile::tempdir());
            let [a, b, c] = dirs;
            let (reactor, _) = workloads::service_reactor(a?.path(), n, durability, run_for)?;
            let (store, _) = workloads::service_store(b?.path(), n, durability, run_for)?;
            let sqlite = sqlite_loop(c?.path(), n, synchronous, run_for)?;
            println!(
                "{:>7} {:>9} {:>11.0} {:>11.0} {:>11.0} {:>15.2} {:>13.2}",
                n,
                format!("{durability:?}").to_lowercase(),
                reactor,
                store,
                sqlite,
                reactor / sqlite,
                reactor / store
            );
        }
    }
    Ok(())
}
