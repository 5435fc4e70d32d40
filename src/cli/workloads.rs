//! The standard benchmark workloads, shared by `reactordb bench` and the
//! criterion benches. Each runs on a fresh reactor in its own directory and
//! reports one [`WorkloadReport`].
//!
//! - W1 `many-docs`: `docs` documents × `actions` actions, every action one
//!   job, all documents in parallel; then reads every document back
//!   through the view;
//! - W2 `hot-doc`: one document, `actions` jobs, each awaited (readable)
//!   before the next;
//! - W3 `contention`: 8 submitters × `actions / 8` jobs on one document;
//! - W4 `service`: closed-loop clients, each owning one document and
//!   awaiting each action until written ([`service_reactor`]), beside the
//!   bare store driven the same way ([`service_store`]).
//!
//! Job latency runs from submission until the view shows the job's writes.
//!
//! Only the public API is used: the file is a module of the binary
//! (`cli::workloads`) and is included by the criterion benches by path,
//! so the library itself carries no benchmark code.

#![allow(dead_code)] // each including target uses its own part

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use reactordb::{
    Action, ActionId, ActionType, Branch, CommitStats, ConsistencyToken, CounterModel,
    CreateDocumentInput, DocumentId, Durability, Error, JobHandle, Metrics, ModelRegistry, Ordinal,
    Reactor, Result, Scope, ViewFilter,
};

/// How to run a workload.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Documents (W1).
    pub docs: usize,
    /// Actions per document (W1), or in total (W2, W3).
    pub actions: usize,
    /// Store durability.
    pub durability: Durability,
    /// Reactor worker threads.
    pub workers: usize,
}

/// One workload's figures (one JSON line).
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadReport {
    /// `many-docs`, `hot-doc` or `contention`.
    pub workload: &'static str,
    /// Documents written.
    pub docs: usize,
    /// Actions executed.
    pub ops: usize,
    /// Wall time of the write phase, ms.
    pub wall_ms: f64,
    /// Actions per second over the write phase.
    pub ops_per_s: f64,
    /// Median job latency (submit → readable), ms.
    pub p50_ms: f64,
    /// 99th percentile job latency, ms.
    pub p99_ms: f64,
    /// 99th percentile of the last [`TAIL_JOBS`] jobs, ms (W2: whether a
    /// long history, compaction included, slows a hot document; the other
    /// workloads report `p99_ms`).
    pub p99_tail_ms: f64,
    /// View reads per second (cached `get`s after the writes).
    pub reads_per_s: f64,
    /// Resident memory of the process after the run, MiB.
    pub rss_mb: f64,
    /// `buffered` or `synced`.
    pub durability: &'static str,
    /// From `Reactor::metrics` after the run (0 for the store-only
    /// workloads): appends per RocksDB write, the executor's and the
    /// view's cache hit rates, and failed jobs.
    pub appends_per_write: f64,
    pub executor_hit_rate: f64,
    pub view_hit_rate: f64,
    pub jobs_failed: u64,
    /// Also from `Reactor::metrics`: fsyncs, appends per fsync, the view's
    /// lag and the jobs still queued when the run ended, and the job
    /// latency's p99 as the metrics' histogram bounds it (ms).
    pub fsyncs: u64,
    pub appends_per_fsync: f64,
    pub view_lag: u64,
    pub queued_jobs: usize,
    pub metrics_p99_bound_ms: f64,
}

const WAIT: Duration = Duration::from_secs(600);

/// Jobs at the end of a W2 run whose latency `p99_tail_ms` reports.
pub const TAIL_JOBS: usize = 2_000;

fn open(dir: &Path, config: &WorkloadConfig) -> Result<Reactor> {
    Reactor::builder(dir)
        .durability(config.durability)
        .registry(ModelRegistry::with_examples())
        .workers(config.workers)
        .queue_capacity(1_000_000)
        .block_when_full(true)
        // The workloads wait on every handle after submitting them all:
        // the reactor must remember every job of the run (past the default
        // 50,000 a longer run would answer `JobUnknown`).
        .retained_jobs((config.docs + 1) * config.actions.max(1) + config.docs)
        .open()
}

fn doc_id(i: usize) -> Result<DocumentId> {
    Ok(DocumentId::new(format!("doc-{i:05}"))?)
}

fn increment(doc: usize, n: usize) -> Result<Action> {
    counter_increment(format!("d{doc}-a{n}"), n as u64)
}

/// An `INCREMENT` of a counter with the action id `id`.
fn counter_increment(id: String, timestamp_utc_ms: u64) -> Result<Action> {
    Ok(Action::new(
        ActionId::new(id)?,
        ActionType::new("INCREMENT")?,
        Scope::global(),
        timestamp_utc_ms,
        Vec::new(),
    ))
}

fn create_docs(reactor: &Reactor, docs: usize) -> Result<()> {
    let jobs = (0..docs)
        .map(|d| {
            reactor.create(
                doc_id(d)?,
                CreateDocumentInput::new(CounterModel::document_type(), 1, format!("bench {d}")),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    for job in jobs {
        written(&job)?;
    }
    Ok(())
}

/// A benchmark job's token once written; its failure as an error.
fn written(job: &JobHandle) -> Result<ConsistencyToken> {
    job.written(WAIT)
}

/// Records when the view reaches each ordinal, so a job's latency ends when
/// the view shows it, not when the benchmark gets round to asking.
struct ViewClock {
    marks: Arc<Mutex<Vec<(Ordinal, Instant)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ViewClock {
    fn start(reactor: &Arc<Reactor>) -> Self {
        let marks = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (reactor, marks, stop) =
                (Arc::clone(reactor), Arc::clone(&marks), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let now = reactor.view().applied();
                    let _ = reactor
                        .view()
                        .wait_for_within(ConsistencyToken(now.next()), Duration::from_millis(20));
                    let reached = reactor.view().applied();
                    if reached > now {
                        marks.lock().push((reached, Instant::now()));
                    }
                }
            })
        };
        Self {
            marks,
            stop,
            thread: Some(thread),
        }
    }

    /// When the view first reached `token`.
    fn reached(&self, token: ConsistencyToken) -> Option<Instant> {
        let marks = self.marks.lock();
        let i = marks.partition_point(|(o, _)| *o < token.0);
        marks.get(i).map(|(_, t)| *t)
    }
}

impl Drop for ViewClock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Resident set size of this process, MiB (0 where `/proc` is missing).
pub fn rss_mb() -> f64 {
    proc_status_mb("VmRSS:")
}

/// Peak resident set size of this process, MiB (`VmHWM`; 0 where `/proc`
/// is missing).
pub fn peak_rss_mb() -> f64 {
    proc_status_mb("VmHWM:")
}

/// CPU time this process has used so far (all its threads, user and
/// system), in seconds; 0 where `/proc` is missing. On a shared host, CPU
/// per action is steadier than actions per second: time other tenants
/// take from this process is not in it. Read from `/proc/self/stat` in
/// clock ticks, which Linux reports at `USER_HZ`, 100 per second on x86
/// and ARM, so its resolution is 10 ms (a short step's CPU per action is
/// coarse: 10 ms in 5,000 actions is 2 µs each).
pub fn process_cpu_secs() -> f64 {
    const USER_HZ: f64 = 100.0;
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command (which may hold spaces) in
            // parentheses: utime and stime are the 12th and 13th.
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut fields = rest.split_whitespace().skip(11);
            let user: f64 = fields.next()?.parse().ok()?;
            let system: f64 = fields.next()?.parse().ok()?;
            Some((user + system) / USER_HZ)
        })
        .unwrap_or(0.0)
}

/// A kB figure of `/proc/self/status`, in MiB.
fn proc_status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::Buffered => "buffered",
        Durability::Synced => "synced",
    }
}

/// Latencies (ms) of jobs submitted at `submitted`, ending when the view
/// reached each job's token.
fn latencies(clock: &ViewClock, jobs: &[(Instant, JobHandle)]) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(jobs.len());
    for (submitted, job) in jobs {
        let token = written(job)?;
        let end = clock.reached(token).unwrap_or_else(Instant::now);
        out.push(end.saturating_duration_since(*submitted).as_secs_f64() * 1e3);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// Waits until every job is written and the view shows the last one; the
/// wall time of the run and the sorted job latencies.
fn settle(
    reactor: &Reactor,
    clock: ViewClock,
    jobs: &[(Instant, JobHandle)],
    start: Instant,
) -> Result<(Duration, Vec<f64>)> {
    let tokens = jobs
        .iter()
        .map(|(_, j)| written(j))
        .collect::<Result<Vec<_>>>()?;
    if let Some(token) = tokens.into_iter().max() {
        reactor.view().wait_for_within(token, WAIT)?;
    }
    let wall = start.elapsed();
    let lat = latencies(&clock, jobs)?;
    Ok((wall, lat))
}

/// Cached view reads per second over `docs` documents.
fn reads_per_s(reactor: &Reactor, docs: usize) -> Result<f64> {
    let ids = (0..docs).map(doc_id).collect::<Result<Vec<_>>>()?;
    let filter = ViewFilter::default();
    for id in &ids {
        reactor.view().get(id, &filter, None)?; // warm
    }
    let rounds = (20_000 / docs.max(1)).max(1);
    let start = Instant::now();
    for _ in 0..rounds {
        for id in &ids {
            reactor.view().get(id, &filter, None)?;
        }
    }
    Ok((rounds * ids.len()) as f64 / start.elapsed().as_secs_f64())
}

fn report(
    workload: &'static str,
    config: &WorkloadConfig,
    docs: usize,
    ops: usize,
    wall: Duration,
    lat: &[f64],
    reads: f64,
) -> WorkloadReport {
    WorkloadReport {
        workload,
        docs,
        ops,
        wall_ms: wall.as_secs_f64() * 1e3,
        ops_per_s: ops as f64 / wall.as_secs_f64(),
        p50_ms: percentile(lat, 0.5),
        p99_ms: percentile(lat, 0.99),
        p99_tail_ms: percentile(lat, 0.99),
        reads_per_s: reads,
        rss_mb: rss_mb(),
        durability: durability_name(config.durability),
        appends_per_write: 0.0,
        executor_hit_rate: 0.0,
        view_hit_rate: 0.0,
        jobs_failed: 0,
        fsyncs: 0,
        appends_per_fsync: 0.0,
        view_lag: 0,
        queued_jobs: 0,
        metrics_p99_bound_ms: 0.0,
    }
}

impl WorkloadReport {
    /// With the reactor's figures after the run.
    fn with_metrics(mut self, metrics: &Metrics) -> Self {
        self.appends_per_write = metrics.commit.appends_per_write();
        self.executor_hit_rate = metrics.executor_cache.hit_rate();
        self.view_hit_rate = metrics.view_cache.hit_rate();
        self.jobs_failed = metrics.jobs_failed;
        self.fsyncs = metrics.commit.syncs;
        self.appends_per_fsync = metrics.appends_per_fsync();
        self.view_lag = metrics.view_lag;
        self.queued_jobs = metrics.queued_jobs;
        self.metrics_p99_bound_ms =
            metrics.job_latency.quantile_upper_bound(0.99).as_secs_f64() * 1e3;
        self
    }
}

/// W1: many documents in parallel.
pub fn many_docs(dir: &Path, config: &WorkloadConfig) -> Result<WorkloadReport> {
    let reactor = Arc::new(open(dir, config)?);
    create_docs(&reactor, config.docs)?;
    let clock = ViewClock::start(&reactor);
    let start = Instant::now();
    let mut jobs = Vec::with_capacity(config.docs * config.actions);
    for n in 0..config.actions {
        for d in 0..config.docs {
            let submitted = Instant::now();
            let job = reactor.execute(doc_id(d)?, Branch::main(), vec![increment(d, n)?])?;
            jobs.push((submitted, job));
        }
    }
    let (wall, lat) = settle(&reactor, clock, &jobs, start)?;
    let reads = reads_per_s(&reactor, config.docs)?;
    Ok(report(
        "many-docs",
        config,
        config.docs,
        jobs.len(),
        wall,
        &lat,
        reads,
    )
    .with_metrics(&reactor.metrics()))
}

/// W2: one hot document, each job awaited before the next.
pub fn hot_doc(dir: &Path, config: &WorkloadConfig) -> Result<WorkloadReport> {
    let reactor = open(dir, config)?;
    create_docs(&reactor, 1)?;
    let mut lat = Vec::with_capacity(config.actions);
    let start = Instant::now();
    for n in 0..config.actions {
        let submitted = Instant::now();
        let job = reactor.execute(doc_id(0)?, Branch::main(), vec![increment(0, n)?])?;
        job.readable(WAIT)?;
        lat.push(submitted.elapsed().as_secs_f64() * 1e3);
    }
    let wall = start.elapsed();
    let mut tail = lat[lat.len().saturating_sub(TAIL_JOBS)..].to_vec();
    tail.sort_by(f64::total_cmp);
    lat.sort_by(f64::total_cmp);
    let reads = reads_per_s(&reactor, 1)?;
    let metrics = reactor.metrics();
    let mut out =
        report("hot-doc", config, 1, config.actions, wall, &lat, reads).with_metrics(&metrics);
    out.p99_tail_ms = percentile(&tail, 0.99);
    Ok(out)
}

/// W3: 8 submitters on one document.
pub fn contention(dir: &Path, config: &WorkloadConfig) -> Result<WorkloadReport> {
    const SUBMITTERS: usize = 8;
    let reactor = Arc::new(open(dir, config)?);
    create_docs(&reactor, 1)?;
    let clock = ViewClock::start(&reactor);
    let per = config.actions / SUBMITTERS;
    let start = Instant::now();
    let jobs: Vec<(Instant, JobHandle)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..SUBMITTERS)
            .map(|t| {
                let reactor = &reactor;
                s.spawn(move || -> Result<Vec<(Instant, JobHandle)>> {
                    (0..per)
                        .map(|i| {
                            let action = increment(0, t * per + i)?;
                            let submitted = Instant::now();
                            let job = reactor.execute(doc_id(0)?, Branch::main(), vec![action])?;
                            Ok((submitted, job))
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| Error::WorkerPanicked)?)
            .collect::<Result<Vec<_>>>()
            .map(|v| v.into_iter().flatten().collect())
    })?;
    let (wall, lat) = settle(&reactor, clock, &jobs, start)?;
    let reads = reads_per_s(&reactor, 1)?;
    Ok(
        report("contention", config, 1, jobs.len(), wall, &lat, reads)
            .with_metrics(&reactor.metrics()),
    )
}

/// One key/value pair read back from a column family.
type Entry = (Box<[u8]>, Box<[u8]>);

/// The Operation Store against raw RocksDB on the same bytes: `ops`
/// single-operation `apply` calls, then the exact key/value puts those
/// calls made (read back from the store's column families) written as one
/// raw `WriteBatch` per operation into a fresh database with the same
/// column families. Two reports: `store-apply` and `raw-batch`.
pub fn store_vs_raw(
    dir: &Path,
    ops: usize,
    durability: Durability,
) -> Result<[WorkloadReport; 2], ServiceError> {
    use reactordb::{Digest, NewOperation, OperationStore, Revision, StoreOptions};
    let config = WorkloadConfig {
        docs: 1,
        actions: ops,
        durability,
        workers: 1,
    };
    let ours_dir = dir.join("store");
    let store = OperationStore::open(&ours_dir, StoreOptions::with_durability(durability))?;
    let doc = doc_id(0)?;
    let doc_type = CounterModel::document_type();
    let prepared = (0..ops)
        .map(|n| {
            Ok(NewOperation::new(
                n as u64,
                increment(0, n)?,
                Digest::default(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    for (n, op) in prepared.into_iter().enumerate() {
        store.apply(
            &doc,
            &doc_type,
            &Scope::global(),
            &Branch::main(),
            Revision(n as u64),
            |txn| {
                txn.add_operation(op);
            },
        )?;
    }
    let ours = start.elapsed();

    drop(store);

    // The same puts, per operation: its operation, ordinal and op-id
    // entries, and the stream head, read back from the store's column
    // families through a read-only raw handle.
    const NAMES: [&str; 4] = ["operations", "ordinals", "op_ids", "heads"];
    let options = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&options, &ours_dir)?;
    let ours_db = rocksdb::DB::open_cf_for_read_only(&options, &ours_dir, cfs, false)?;
    let read = |name: &str| -> Result<Vec<Entry>, ServiceError> {
        let cf = ours_db
            .cf_handle(name)
            .ok_or_else(|| format!("the store has no column family {name}"))?;
        Ok(ours_db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .collect::<Result<_, _>>()?)
    };
    let [operations, ordinals, op_ids, heads] = NAMES.map(read);
    let (operations, ordinals, op_ids, heads) = (operations?, ordinals?, op_ids?, heads?);
    drop(ours_db);
    let raw_dir = dir.join("raw");
    drop(OperationStore::open(
        &raw_dir,
        StoreOptions::with_durability(durability),
    )?);
    let cfs = rocksdb::DB::list_cf(&options, &raw_dir)?;
    let raw = rocksdb::DB::open_cf(&options, &raw_dir, cfs)?;
    let handles = NAMES.map(|n| raw.cf_handle(n));
    let [Some(h_ops), Some(h_ords), Some(h_ids), Some(h_heads)] = handles else {
        return Err("the raw database lacks the store's column families".into());
    };
    let mut write = rocksdb::WriteOptions::default();
    write.set_sync(durability == Durability::Synced);
    let head = heads.first().ok_or("the store wrote no head")?;
    let start = Instant::now();
    for i in 0..operations.len().min(ordinals.len()).min(op_ids.len()) {
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(h_ops, &operations[i].0, &operations[i].1);
        batch.put_cf(h_ords, &ordinals[i].0, &ordinals[i].1);
        batch.put_cf(h_ids, &op_ids[i].0, &op_ids[i].1);
        batch.put_cf(h_heads, &head.0, &head.1);
        raw.write_opt(batch, &write)?;
    }
    let raw_time = start.elapsed();
    Ok([
        report("store-apply", &config, 1, ops, ours, &[], 0.0),
        report("raw-batch", &config, 1, ops, raw_time, &[], 0.0),
    ])
}

/// An error of a closed-loop client (W4).
pub type ServiceError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `clients` threads of `body(client, n)` (n = 0, 1, …), all starting
/// together, until `run_for` has passed; the total calls per second.
pub fn closed_loop<F>(clients: usize, run_for: Duration, body: F) -> Result<f64, ServiceError>
where
    F: Fn(usize, u64) -> Result<(), ServiceError> + Send + Sync + 'static,
{
    let body = Arc::new(body);
    let stop = Arc::new(AtomicBool::new(false));
    let start_line = Arc::new(std::sync::Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (body, stop, start_line) = (body.clone(), stop.clone(), start_line.clone());
            std::thread::spawn(move || -> Result<u64, ServiceError> {
                start_line.wait();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    body(client, n)?;
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
        total += thread.join().map_err(|_| "a client panicked")??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

fn client_doc(client: usize) -> Result<DocumentId> {
    Ok(DocumentId::new(format!("client-{client:04}"))?)
}

fn client_action(client: usize, n: u64) -> Result<Action> {
    counter_increment(format!("c{client}-{n}"), 1_700_000_000_000 + n)
}

/// W4 on a fresh reactor (default options) in `dir`: `clients` threads,
/// each owning one counter document, each executing one action and
/// waiting until it is written before the next
/// ([`Reactor::execute_and_wait`]), for `run_for`. Actions
/// per second, and the commit figures of the run.
pub fn service_reactor(
    dir: &Path,
    clients: usize,
    durability: Durability,
    run_for: Duration,
) -> Result<(f64, CommitStats), ServiceError> {
    let reactor = Arc::new(
        Reactor::builder(dir)
            .durability(durability)
            .registry(ModelRegistry::with_examples())
            .open()?,
    );
    for client in 0..clients {
        let input =
            CreateDocumentInput::new(CounterModel::document_type(), 1, format!("client {client}"));
        written(&reactor.create(client_doc(client)?, input)?)?;
    }
    let before = reactor.store().commit_stats();
    let per_s = {
        let reactor = reactor.clone();
        closed_loop(clients, run_for, move |client, n| {
            reactor.execute_and_wait(
                client_doc(client)?,
                Branch::main(),
                vec![client_action(client, n)?],
                WAIT,
            )?;
            Ok(())
        })?
    };
    Ok((per_s, reactor.store().commit_stats().since(&before)))
}

/// W4's anchor on a fresh store in `dir`: the same clients, each appending
/// one operation per `apply` to its own stream and waiting for it.
pub fn service_store(
    dir: &Path,
    clients: usize,
    durability: Durability,
    run_for: Duration,
) -> Result<(f64, CommitStats), ServiceError> {
    use reactordb::{Digest, NewOperation, OperationStore, Revision, StoreOptions};
    let store = OperationStore::open(dir, StoreOptions::with_durability(durability))?;
    let before = store.commit_stats();
    let per_s = {
        let store = store.clone();
        let document_type = CounterModel::document_type();
        closed_loop(clients, run_for, move |client, n| {
            let action = client_action(client, n)?;
            store.apply(
                &client_doc(client)?,
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
