//! `bench --workload sync`: two reactors, actions written on one, synced to
//! the other over (a) the in-process channel and (b) gRPC on loopback.
//! Reports operations/s until the other side's view holds them all, and
//! the delay from written on one side to readable on the other (p50, p99).
//! Times come from a sampler of each side's last written ordinal and the
//! receiver's view checkpoint (readable), matched to operations by their
//! ordinals on each side after the run; only the public API is used.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reactordb::{
    in_process_pair, Action, ActionId, ActionType, Branch, CounterModel, CreateDocumentInput,
    DialOptions, DocumentId, Durability, GrpcTransport, ModelRegistry, Ordinal, Paging, Reactor,
    RemoteOptions, Scope, ServeOptions, StoreOptions, SyncManager, SyncOptions,
};
use serde::Serialize;

/// One channel's run.
#[derive(Serialize)]
pub(crate) struct SyncBenchReport {
    pub channel: &'static str,
    /// The writer's pace (actions/s; 0: as fast as it can).
    pub rate: u64,
    pub ops: usize,
    pub wall_ms: f64,
    /// When the writer's last job was written (the rest is sync catching
    /// up).
    pub write_ms: f64,
    pub ops_per_s: f64,
    pub p50_delay_ms: f64,
    pub p99_delay_ms: f64,
    /// The same delays to written (not yet readable) on the other side.
    pub p99_written_delay_ms: f64,
    /// Operations whose delay could not be timed (an action id the run
    /// wrote twice); they still had to arrive.
    pub untimed: usize,
}

/// How a sync benchmark opens its reactors.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Setup {
    pub durability: Durability,
    pub workers: usize,
    /// [`StoreOptions::low_priority_background`].
    pub low_priority_background: bool,
}

/// A reactor for a sync benchmark, on `dir`.
pub(crate) fn open(dir: &Path, setup: Setup) -> reactordb::Result<Arc<Reactor>> {
    Ok(Arc::new(
        Reactor::builder(dir)
            .store_options(
                StoreOptions::with_durability(setup.durability)
                    .low_priority_background(setup.low_priority_background),
            )
            .workers(setup.workers)
            .registry(ModelRegistry::with_examples())
            .open()?,
    ))
}

/// One look at both sides: when, the writer's last written ordinal, the
/// receiver's last written ordinal, and the receiver's view's.
type Sample = (Instant, u64, u64, u64);

/// Samples both sides every half millisecond until `stop`. Timing from
/// samples rather than from a bus subscriber per side keeps the harness
/// off the engine's path: a subscriber is woken by every commit and keyed
/// every operation by its action id while the run was on (a quarter of all
/// context switches in a `perf` trace of this benchmark). The cost is up
/// to one sample period on each time.
fn sample(
    a: Arc<Reactor>,
    b: Arc<Reactor>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Sample>> {
    sample_every_half_ms(stop, move || {
        (
            Instant::now(),
            a.store().last_ordinal().get(),
            b.store().last_ordinal().get(),
            b.view().applied().get(),
        )
    })
}

/// Takes `look` every half millisecond on a thread of its own until
/// `stop`, and once more after (so the last operations are timed too).
pub(crate) fn sample_every_half_ms<T: Send + 'static>(
    stop: Arc<AtomicBool>,
    look: impl Fn() -> T + Send + 'static,
) -> std::thread::JoinHandle<Vec<T>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !stop.load(Ordering::Acquire) {
            samples.push(look());
            std::thread::sleep(Duration::from_micros(500));
        }
        samples.push(look());
        samples
    })
}

/// Where each operation is: `action id → (document, ordinal)`.
pub(crate) type Ordinals = HashMap<ActionId, (DocumentId, u64)>;

/// `action id → (document, ordinal of its first copy)` of every operation
/// a store holds, read after the run.
pub(crate) fn ordinals(reactor: &Reactor) -> reactordb::Result<Ordinals> {
    let mut out = HashMap::new();
    let mut paging = Paging::first(4096);
    loop {
        let page = reactor.store().get_since_ordinal(Ordinal(1), paging)?;
        for op in page.items {
            let at = (op.context.document_id, op.context.ordinal.get());
            // The first copy: a merge may append the operation again later.
            out.entry(op.operation.action.id).or_insert(at);
        }
        match page.next_cursor {
            Some(cursor) => paging = Paging::after(cursor, 4096),
            None => return Ok(out),
        }
    }
}

/// Runs both channels. `rate`: the writer's actions per second (0: as
/// fast as it can, which measures throughput; a rate below it measures the
/// delay at that load rather than the length of a queue).
pub(crate) fn run(
    docs: usize,
    actions: usize,
    rate: u64,
    setup: Setup,
) -> Result<Vec<SyncBenchReport>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for channel in ["in-process", "grpc"] {
        out.push(run_one(channel, docs, actions, rate, setup)?);
    }
    Ok(out)
}

fn run_one(
    channel: &'static str,
    docs: usize,
    actions: usize,
    rate: u64,
    setup: Setup,
) -> Result<SyncBenchReport, Box<dyn std::error::Error>> {
    let (da, db) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = open(da.path(), setup)?;
    let b = open(db.path(), setup)?;
    let sa = Arc::new(SyncManager::open(
        a.clone(),
        SyncOptions::new().name("a").accept_new_remotes(true),
    )?);
    let sb = Arc::new(SyncManager::open(b.clone(), SyncOptions::new().name("b"))?);
    sb.add_remote("a", RemoteOptions::new())?;
    let transport = GrpcTransport::new()?;
    let mut _sessions = Vec::new();
    let mut _grpc = None;
    if channel == "grpc" {
        let server = transport.serve(
            sa.clone(),
            "127.0.0.1:0".parse()?,
            ServeOptions::token("bench"),
        )?;
        let url = format!("http://{}", server.local_addr());
        _grpc = Some((
            server,
            transport.keep_synced(sb.clone(), "a", &url, DialOptions::token("bench"))?,
        ));
    } else {
        sa.add_remote("b", RemoteOptions::new())?;
        let (x, y) = in_process_pair();
        _sessions.push(sa.attach("b", x)?);
        _sessions.push(sb.attach("a", y)?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let samples = sample(a.clone(), b.clone(), stop.clone());
    let start = Instant::now();
    let ids: Vec<DocumentId> = (0..docs)
        .map(|d| DocumentId::new(format!("sync-{d}")))
        .collect::<Result<_, _>>()?;
    for doc in &ids {
        let create = CreateDocumentInput::new(CounterModel::document_type(), 1, doc.to_string());
        a.create(doc.clone(), create)?;
    }
    write_rounds(&ids, actions, rate, start, |_| &a)?;
    let write_ms = start.elapsed().as_secs_f64() * 1e3;
    let total = docs * (actions + 1);
    let token = reactordb::ConsistencyToken(a.store().last_ordinal());
    sa.wait_synced("b", token, Duration::from_secs(600))?;
    let last_b = b.store().last_ordinal();
    b.view().wait_for_within(
        reactordb::ConsistencyToken(last_b),
        Duration::from_secs(600),
    )?;
    let wall = start.elapsed();
    stop.store(true, Ordering::Release);
    let samples = samples.join().map_err(|_| "sampler panicked")?;
    let (ordinals_a, ordinals_b) = (ordinals(&a)?, ordinals(&b)?);
    // The first sample at which a column reached `ordinal` (each column
    // only grows).
    let seen = |column: fn(&Sample) -> u64, ordinal: u64| {
        let first = samples.partition_point(|s| column(s) < ordinal);
        samples.get(first).map(|s| s.0)
    };
    let mut delays = Vec::with_capacity(total);
    let mut written_delays = Vec::with_capacity(total);
    for (id, (_, ordinal_a)) in &ordinals_a {
        let Some(&(_, ordinal_b)) = ordinals_b.get(id) else {
            continue;
        };
        let Some(at_a) = seen(|s| s.1, *ordinal_a) else {
            continue;
        };
        if let Some(at_b) = seen(|s| s.2, ordinal_b) {
            written_delays.push(at_b.saturating_duration_since(at_a).as_secs_f64() * 1e3);
        }
        if let Some(readable) = seen(|s| s.3, ordinal_b) {
            delays.push(readable.saturating_duration_since(at_a).as_secs_f64() * 1e3);
        }
    }
    delays.sort_by(f64::total_cmp);
    written_delays.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&delays, p);
    Ok(SyncBenchReport {
        channel,
        rate,
        ops: total,
        wall_ms: wall.as_secs_f64() * 1e3,
        write_ms,
        ops_per_s: total as f64 / wall.as_secs_f64(),
        p50_delay_ms: pct(0.5),
        p99_delay_ms: pct(0.99),
        p99_written_delay_ms: percentile(&written_delays, 0.99),
        untimed: total - delays.len(),
    })
}

/// The `p` quantile of sorted delays (NaN when there are none).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

/// The writers of a sync benchmark: `actions` rounds of one increment per
/// document, each on `writer_of(document's index)`, a round waiting until
/// all of its jobs are written. Paced (`rate` > 0): round r starts at
/// r × documents / rate seconds after `start`.
pub(crate) fn write_rounds<'a>(
    ids: &[DocumentId],
    actions: usize,
    rate: u64,
    start: Instant,
    writer_of: impl Fn(usize) -> &'a Reactor,
) -> Result<(), Box<dyn std::error::Error>> {
    let docs = ids.len();
    let increment = ActionType::new("INCREMENT")?;
    for round in 0..actions {
        if rate > 0 {
            let due = start + Duration::from_secs_f64((round * docs) as f64 / rate as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let mut jobs = Vec::with_capacity(docs);
        for (d, doc) in ids.iter().enumerate() {
            let action = Action::new(
                ActionId::new(format!("{doc}-{round}"))?,
                increment.clone(),
                Scope::global(),
                1_700_000_000_000 + round as u64,
                b"1".to_vec(),
            );
            jobs.push(writer_of(d).execute(doc.clone(), Branch::main(), vec![action])?);
        }
        for job in jobs {
            job.written(Duration::from_secs(120))?;
        }
    }
    Ok(())
}
