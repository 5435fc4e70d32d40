//! `bench --workload nats`: three reactors relaying through a 3-node NATS
//! JetStream cluster on loopback (Debian's `nats-server`, started here in
//! a temporary directory). The documents are spread over the reactors,
//! each writing its own; reports operations/s (from when the creations
//! went out) until every replica's view holds everything, and the delay from written on its reactor to readable
//! on each other replica (p50, p99). Times come from a sampler of each
//! reactor's last ordinal and view, matched to operations after the run,
//! as in `sync_bench`; only the public API is used. Unpaced, the anchor
//! (`nats_anchor`) follows on the same cluster.

#[path = "../../tests/common/nats_cluster.rs"]
#[allow(dead_code)]
mod nats_cluster;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reactordb::{
    CounterModel, CreateDocumentInput, DocumentId, NatsOptions, NatsTransport, Reactor,
    SyncManager, SyncOptions,
};
use serde::Serialize;

use super::sync_bench::{
    open, ordinals, percentile, sample_every_half_ms, write_rounds, Ordinals, Setup,
};

const REACTORS: usize = 3;

/// One run.
#[derive(Serialize)]
pub(crate) struct NatsBenchReport {
    /// The writers' pace (actions/s over all reactors; 0: as fast as they
    /// can).
    pub rate: u64,
    pub ops: usize,
    pub wall_ms: f64,
    pub ops_per_s: f64,
    pub p50_delay_ms: f64,
    pub p99_delay_ms: f64,
    /// (operation, other replica) pairs that could not be timed.
    pub untimed: usize,
    /// The anchor (`nats_anchor`): the same cluster moving as many
    /// messages of the relay's size with no reactor (messages/s; 0 when
    /// not run).
    pub anchor_msgs_per_s: f64,
}

/// Per reactor per look: (time, last written ordinal, view's ordinal).
type Look = (Instant, Vec<(u64, u64)>);

/// One run. `rate`: all writers' actions per second together (0: as fast
/// as they can, which measures throughput; below it, the delay).
/// `anchor`: then the anchor, on the same cluster.
pub(crate) fn run(
    docs: usize,
    actions: usize,
    rate: u64,
    setup: Setup,
    anchor: bool,
) -> Result<NatsBenchReport, Box<dyn std::error::Error>> {
    let cluster = nats_cluster::Cluster::start();
    let transport = NatsTransport::new()?;
    let dirs: Vec<_> = (0..REACTORS)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let mut reactors = Vec::new();
    let mut syncs = Vec::new();
    let mut relays = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let reactor = open(dir.path(), setup)?;
        let sync = Arc::new(SyncManager::open(
            reactor.clone(),
            SyncOptions::new().name(format!("r{i}")),
        )?);
        let options = NatsOptions::new(cluster.urls()).token(nats_cluster::TOKEN);
        relays.push(transport.relay(sync.clone(), options)?);
        reactors.push(reactor);
        syncs.push(sync);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let reactors = reactors.clone();
        sample_every_half_ms(stop.clone(), move || -> Look {
            let sides = reactors
                .iter()
                .map(|r| (r.store().last_ordinal().get(), r.view().applied().get()))
                .collect();
            (Instant::now(), sides)
        })
    };
    let ids: Vec<DocumentId> = (0..docs)
        .map(|d| DocumentId::new(format!("nats-{d}")))
        .collect::<Result<_, _>>()?;
    let owner = |d: usize| -> &Reactor { &reactors[d % REACTORS] };
    for (d, doc) in ids.iter().enumerate() {
        let create = CreateDocumentInput::new(CounterModel::document_type(), 1, doc.to_string());
        owner(d).create(doc.clone(), create)?;
    }
    // The clock starts once the creations went out: the stream exists and
    // every relay publishes (a relay that met the stream being created
    // waits a backoff first; that is start-up, not the steady state).
    let remote = NatsOptions::new(cluster.urls()).remote_name();
    for (reactor, sync) in reactors.iter().zip(&syncs) {
        let token = reactordb::ConsistencyToken(reactor.store().last_ordinal());
        sync.wait_synced(&remote, token, Duration::from_secs(120))?;
    }
    let start = Instant::now();
    write_rounds(&ids, actions, rate, start, owner)?;
    // Everything is everywhere when each reactor's relay has published
    // all it wrote and each has loaded everyone else's.
    for (reactor, sync) in reactors.iter().zip(&syncs) {
        let token = reactordb::ConsistencyToken(reactor.store().last_ordinal());
        sync.wait_synced(&remote, token, Duration::from_secs(600))?;
    }
    wait_loaded(&reactors, &syncs, &remote, docs * (actions + 1), start)?;
    let per_reactor = ordinals_everywhere(&reactors, &ids, actions, start)?;
    let wall = start.elapsed();
    stop.store(true, Ordering::Release);
    let looks = sampler.join().map_err(|_| "sampler panicked")?;
    for relay in relays {
        relay.stop()?;
    }
    drop(syncs);
    drop(reactors);
    let anchor_msgs_per_s = match anchor {
        true => {
            let urls = cluster.urls();
            let len =
                super::nats_anchor::sample_payload_len(&urls, nats_cluster::TOKEN, "REACTORDB")?;
            super::nats_anchor::run(&urls, nats_cluster::TOKEN, 3, docs * (actions + 1), len)?
        }
        false => 0.0,
    };
    // Delays: written on the owner to readable on each other replica.
    let seen = |reactor: usize, readable: bool, ordinal: u64| {
        let at = |l: &Look| {
            let (written, applied) = l.1[reactor];
            if readable {
                applied
            } else {
                written
            }
        };
        let first = looks.partition_point(|l| at(l) < ordinal);
        looks.get(first).map(|l| l.0)
    };
    let home_of: HashMap<&DocumentId, usize> = ids
        .iter()
        .enumerate()
        .map(|(d, id)| (id, d % REACTORS))
        .collect();
    let total = docs * (actions + 1);
    let mut delays = Vec::with_capacity(total * (REACTORS - 1));
    for (home, held) in per_reactor.iter().enumerate() {
        for (action, (doc, ordinal)) in held {
            if home_of.get(doc) != Some(&home) {
                continue; // loaded here, written elsewhere
            }
            let Some(written) = seen(home, false, *ordinal) else {
                continue;
            };
            for other in (0..REACTORS).filter(|r| *r != home) {
                let readable = per_reactor[other]
                    .get(action)
                    .and_then(|(_, there)| seen(other, true, *there));
                if let Some(readable) = readable {
                    delays.push(readable.saturating_duration_since(written).as_secs_f64() * 1e3);
                }
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&delays, p);
    Ok(NatsBenchReport {
        rate,
        ops: total,
        wall_ms: wall.as_secs_f64() * 1e3,
        ops_per_s: total as f64 / wall.as_secs_f64(),
        p50_delay_ms: pct(0.5),
        p99_delay_ms: pct(0.99),
        untimed: total * (REACTORS - 1) - delays.len(),
        anchor_msgs_per_s,
    })
}

/// Waits (cheaply: the relays' counters) until each replica has loaded
/// as many operations as the others wrote.
fn wait_loaded(
    reactors: &[Arc<Reactor>],
    syncs: &[Arc<SyncManager>],
    remote: &str,
    total: usize,
    start: Instant,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = start + Duration::from_secs(1800);
    for (reactor, sync) in reactors.iter().zip(syncs) {
        loop {
            let status = sync.remotes()?;
            let received = status
                .iter()
                .find(|r| r.name == remote)
                .map_or(0, |r| r.received_operations);
            let sent = status
                .iter()
                .find(|r| r.name == remote)
                .map_or(0, |r| r.sent_operations);
            // What this replica wrote went out (`sent`); the rest came in.
            if (received + sent) as usize >= total {
                let token = reactordb::ConsistencyToken(reactor.store().last_ordinal());
                reactor
                    .view()
                    .wait_for_within(token, Duration::from_secs(600))?;
                break;
            }
            if Instant::now() > deadline {
                return Err("the replicas did not converge in 30 minutes".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(())
}

/// Waits until every replica's view holds every operation of every
/// document (the creation and `actions` increments each), then returns,
/// per replica, `action id → (document, ordinal there)`.
fn ordinals_everywhere(
    reactors: &[Arc<Reactor>],
    ids: &[DocumentId],
    actions: usize,
    start: Instant,
) -> Result<Vec<Ordinals>, Box<dyn std::error::Error>> {
    let want = ids.len() * (actions + 1);
    let deadline = start + Duration::from_secs(1800);
    loop {
        let mut all = Vec::with_capacity(reactors.len());
        for reactor in reactors {
            let token = reactordb::ConsistencyToken(reactor.store().last_ordinal());
            reactor
                .view()
                .wait_for_within(token, Duration::from_secs(600))?;
            all.push(ordinals(reactor)?);
        }
        if all.iter().all(|m| m.len() >= want) {
            return Ok(all);
        }
        if Instant::now() > deadline {
            return Err("the replicas did not converge in 30 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
