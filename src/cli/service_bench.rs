//! `bench --workload service` (W4): a closed-loop service. Each of N
//! client threads owns one document and submits one action at a time,
//! waiting until it is written (`WriteReady`) before the next, as a
//! request handler does. Beside it, in the same run, its anchor: the bare
//! `OperationStore` driven the same way (N threads, one single-operation
//! `apply` each, awaited), with the same durability. Both print appends
//! per RocksDB write, which shows whether group commit turns many waiting
//! clients into few writes (and fsyncs, under `Synced`). Only the public
//! API is used (the loops are `workloads::service_reactor` and
//! `service_store`, which the SQLite peer bench runs too).

use std::time::Duration;

use super::workloads;
use reactordb::Durability;
use serde::Serialize;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

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
    /// Mean time inside one RocksDB write (with its fsync), in µs: what
    /// of a group's cycle the write itself takes.
    pub reactor_write_us: f64,
    pub store_write_us: f64,
}

/// Runs every client count in both durability modes, each for `seconds`.
pub(crate) fn run(clients: &[usize], seconds: f64, json: bool) -> BenchResult<()> {
    if clients.contains(&0) {
        return Err("--clients: each count must be at least 1".into());
    }
    let run_for = Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or("--service-secs must be a positive number of seconds")?;
    if !json {
        println!(
            "{:>7} {:>9} {:>11} {:>11} {:>6} {:>15} {:>13} {:>11} {:>9}",
            "clients",
            "mode",
            "reactor/s",
            "store/s",
            "ratio",
            "reactor_app/wr",
            "store_app/wr",
            "reactor_us/wr",
            "store_us/wr"
        );
    }
    for durability in [Durability::Buffered, Durability::Synced] {
        for &n in clients {
            let (reactor_dir, store_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
            let (reactor_per_s, reactor_stats) =
                workloads::service_reactor(reactor_dir.path(), n, durability, run_for)
                    .map_err(|e| e.to_string())?;
            let (store_per_s, store_stats) =
                workloads::service_store(store_dir.path(), n, durability, run_for)
                    .map_err(|e| e.to_string())?;
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
                reactor_write_us: mean_write_us(&reactor_stats),
                store_write_us: mean_write_us(&store_stats),
            };
            if json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                println!(
                    "{:>7} {:>9} {:>11.0} {:>11.0} {:>6.2} {:>15.1} {:>13.1} {:>11.0} {:>9.0}",
                    row.clients,
                    row.durability,
                    row.reactor_per_s,
                    row.store_per_s,
                    row.ratio,
                    row.reactor_appends_per_write,
                    row.store_appends_per_write,
                    row.reactor_write_us,
                    row.store_write_us
                );
            }
        }
    }
    Ok(())
}

/// Mean duration of one write of `stats`, in µs (0 without writes).
fn mean_write_us(stats: &reactordb::CommitStats) -> f64 {
    if stats.writes == 0 {
        0.0
    } else {
        stats.write_time.as_secs_f64() * 1e6 / stats.writes as f64
    }
}
