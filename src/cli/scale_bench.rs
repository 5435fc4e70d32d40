//! `bench --scale`: W1 at growing document counts. Every document gets the
//! same actions (one job each), so each step does the same work per
//! document and only the number of documents grows. Each step runs in a
//! child process of its own (`bench --scale-step DOCS`), so its peak
//! resident memory is its own and not what earlier steps left in the
//! allocator. Only the public API is used.
//!
//! Per step: actions/s (submit of the first action until the view shows
//! the last), job latency p50/p99 (submitted until written, in a bounded
//! histogram), cold reads/s (the view's cache cleared, RocksDB's block
//! cache left as it is), peak RSS, and bytes on disk per stored operation.
//! Beside them, the step's anchor: the bare `OperationStore` driven the
//! same way (the same documents in the same round-robin order, one
//! single-operation `apply` per action, on a fresh database after the
//! reactor's), so each step shows how much of the slope is the store's
//! own and how much is the reactor's work above it.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use reactordb::{
    Action, ActionId, ActionType, Branch, ConsistencyToken, CounterModel, CreateDocumentInput,
    Digest, DocumentId, Durability, JobHandle, ModelRegistry, NewOperation, OperationStore,
    Reactor, Revision, Scope, StoreOptions, ViewFilter,
};
use serde::{Deserialize, Serialize};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Jobs submitted and not yet written, at most: the harness's own memory
/// stays flat however many documents a step has. Fewer than the smallest
/// step's documents, so no step has two jobs of one document queued at
/// once: a worker writes queued jobs of a document as one run, and a base
/// step that did so (4,096 in flight over 1,000 documents) measured that
/// batching, which larger steps cannot have, instead of an action's cost.
const IN_FLIGHT: usize = 512;
/// Cold reads per step, at most (spread over all documents).
const COLD_READS: usize = 100_000;
const WAIT: Duration = Duration::from_secs(600);
/// A step with fewer actions than this runs again (each run a fresh
/// process and database) until its runs reach it, at most `MAX_RUNS`
/// times, and reports its median run: a 5,000-action step lasts a tenth
/// of a second, and one run of it is mostly noise on a busy machine, yet
/// it is every ratio's base.
const STEP_ACTIONS: usize = 100_000;
const MAX_RUNS: usize = 9;

/// One step's figures (one JSON line from the child).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ScaleStep {
    pub docs: usize,
    /// Actions per document (each its own job).
    pub actions_per_doc: usize,
    /// Actions executed (creations not included).
    pub actions: usize,
    pub actions_per_s: f64,
    /// Creations per second (the step's first phase).
    pub creates_per_s: f64,
    /// Job latency, submitted until written.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time of the process per action (all threads: the reactor's
    /// workers, its view, and the submitting and waiting threads), in µs:
    /// the cost of an action, steadier than its rate on a shared host.
    pub cpu_us_per_action: f64,
    /// Reads of documents not in the view's cache.
    pub cold_reads_per_s: f64,
    /// Peak resident memory of the step's process.
    pub peak_rss_mb: f64,
    /// Bytes of the database directory per stored operation (creations
    /// included), after the step.
    pub disk_bytes_per_op: f64,
    /// The anchor: single-operation appends per second through the bare
    /// store, same documents, same order, same durability.
    pub store_actions_per_s: f64,
    /// The anchor's CPU time per append, µs.
    pub store_cpu_us_per_action: f64,
}

/// Runs each step in a child process and prints one table (or JSON lines)
/// with each step's ratio to the first.
pub(crate) fn run(
    steps: &[usize],
    actions_per_doc: usize,
    durability: Durability,
    json: bool,
) -> BenchResult<()> {
    if steps.contains(&0) || actions_per_doc == 0 {
        return Err("--scale-docs and --scale-actions must each be at least 1".into());
    }
    let exe = std::env::current_exe()?;
    if !json {
        println!(
            "{:>9} {:>9} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>12} {:>8} {:>9} {:>10} {:>8} {:>8} {:>8}",
            "docs",
            "actions",
            "actions/s",
            "store/s",
            "cpu_us",
            "store_us",
            "p50_ms",
            "p99_ms",
            "cold_reads/s",
            "rss_mb",
            "disk_B/op",
            "×actions/s",
            "×reads/s",
            "×store/s",
            "×cpu_us"
        );
    }
    let mut first: Option<ScaleStep> = None;
    for &docs in steps {
        let runs = STEP_ACTIONS
            .div_ceil(docs.saturating_mul(actions_per_doc))
            .clamp(1, MAX_RUNS);
        let mut results = Vec::with_capacity(runs);
        for _ in 0..runs {
            results.push(run_child(&exe, docs, actions_per_doc, durability)?);
        }
        results.sort_by(|a, b| a.actions_per_s.total_cmp(&b.actions_per_s));
        let step = results.swap_remove(results.len() / 2);
        let base = first.get_or_insert_with(|| step.clone());
        let (ratio_writes, ratio_reads, ratio_store, ratio_cpu) = (
            step.actions_per_s / base.actions_per_s,
            step.cold_reads_per_s / base.cold_reads_per_s,
            step.store_actions_per_s / base.store_actions_per_s,
            // A cost, so inverted: like the others, below 1 is slower.
            base.cpu_us_per_action / step.cpu_us_per_action,
        );
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "step": step,
                    "runs": runs,
                    "actions_per_s_ratio": ratio_writes,
                    "cold_reads_ratio": ratio_reads,
                    "store_actions_per_s_ratio": ratio_store,
                    "cpu_per_action_ratio": ratio_cpu,
                })
            );
        } else {
            println!(
                "{:>9} {:>9} {:>10.0} {:>10.0} {:>8.1} {:>8.1} {:>8.2} {:>8.2} {:>12.0} {:>8.1} {:>9.0} {:>10.2} {:>8.2} {:>8.2} {:>8.2}",
                step.docs,
                step.actions,
                step.actions_per_s,
                step.store_actions_per_s,
                step.cpu_us_per_action,
                step.store_cpu_us_per_action,
                step.p50_ms,
                step.p99_ms,
                step.cold_reads_per_s,
                step.peak_rss_mb,
                step.disk_bytes_per_op,
                ratio_writes,
                ratio_reads,
                ratio_store,
                ratio_cpu
            );
        }
    }
    Ok(())
}

/// One run of a step in a child process, on a fresh database.
fn run_child(
    exe: &Path,
    docs: usize,
    actions_per_doc: usize,
    durability: Durability,
) -> BenchResult<ScaleStep> {
    let dir = tempfile::tempdir()?;
    let output = Command::new(exe)
        .args(["bench", "--scale-step", &docs.to_string()])
        .args(["--scale-actions", &actions_per_doc.to_string()])
        .args(["--durability", durability_arg(durability)])
        .arg("--db")
        .arg(dir.path())
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "scale step of {docs} documents failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn durability_arg(durability: Durability) -> &'static str {
    match durability {
        Durability::Synced => "synced",
        _ => "buffered",
    }
}

/// One step, in this process: prints its [`ScaleStep`] as JSON.
pub(crate) fn run_step(
    dir: &Path,
    docs: usize,
    actions_per_doc: usize,
    durability: Durability,
    trace_memory: bool,
) -> BenchResult<()> {
    // Default options throughout: the memory bound measured is the one a
    // user gets. A full queue makes submission wait rather than fail.
    let reactor = Arc::new(
        Reactor::builder(dir)
            .durability(durability)
            .registry(ModelRegistry::with_examples())
            .block_when_full(true)
            .open()?,
    );
    let trace = trace_memory.then(|| super::memory_trace::MemoryTrace::start(&reactor));
    let ids = |d: usize| DocumentId::new(format!("doc-{d:07}"));

    let start = Instant::now();
    let mut creates = Pipeline::start();
    for d in 0..docs {
        let input =
            CreateDocumentInput::new(CounterModel::document_type(), 1, format!("scale {d}"));
        creates = creates.push(reactor.create(ids(d)?, input)?)?;
    }
    creates.finish()?;
    let creates_per_s = docs as f64 / start.elapsed().as_secs_f64();

    let increment = ActionType::new("INCREMENT")?;
    let start = Instant::now();
    let cpu_start = super::workloads::process_cpu_secs();
    let mut jobs = Pipeline::start();
    for n in 0..actions_per_doc {
        for d in 0..docs {
            let action = Action::new(
                ActionId::new(format!("d{d}-a{n}"))?,
                increment.clone(),
                Scope::global(),
                1_700_000_000_000 + n as u64,
                Vec::new(),
            );
            jobs = jobs.push(reactor.execute(ids(d)?, Branch::main(), vec![action])?)?;
        }
    }
    let latencies = jobs.finish()?;
    let token = ConsistencyToken(reactor.store().last_ordinal());
    reactor.view().wait_for_within(token, WAIT)?;
    let actions = docs * actions_per_doc;
    let actions_per_s = actions as f64 / start.elapsed().as_secs_f64();
    let cpu_us_per_action =
        (super::workloads::process_cpu_secs() - cpu_start) * 1e6 / actions as f64;

    reactor.view().clear_cache();
    let reads = docs.min(COLD_READS);
    let stride = docs / reads.max(1);
    let filter = ViewFilter::default();
    let start = Instant::now();
    for r in 0..reads {
        let document = reactor.view().get(&ids(r * stride)?, &filter, None)?;
        let value = document
            .scopes
            .get(&Scope::global())
            .and_then(|scope| CounterModel::value(&scope.state));
        if value != Some(actions_per_doc as i64) {
            return Err(format!("document {} reads {value:?}", r * stride).into());
        }
    }
    let cold_reads_per_s = reads as f64 / start.elapsed().as_secs_f64();
    let ops = reactor.store().last_ordinal().get();
    drop(trace); // it holds the store open
    drop(reactor);
    // Taken before the anchor runs: they are the reactor's.
    let peak_rss_mb = super::workloads::peak_rss_mb();
    let disk_bytes_per_op = dir_bytes(dir)? as f64 / ops.max(1) as f64;
    let (store_actions_per_s, store_cpu_us_per_action) =
        store_anchor(&dir.join("store-anchor"), docs, actions_per_doc, durability)?;

    let step = ScaleStep {
        docs,
        actions_per_doc,
        actions,
        actions_per_s,
        creates_per_s,
        p50_ms: latencies.value_at_quantile(0.5) as f64 / 1e3,
        p99_ms: latencies.value_at_quantile(0.99) as f64 / 1e3,
        cold_reads_per_s,
        peak_rss_mb,
        disk_bytes_per_op,
        store_actions_per_s,
        cpu_us_per_action,
        store_cpu_us_per_action,
    };
    println!("{}", serde_json::to_string(&step)?);
    Ok(())
}

/// Threads driving the bare store: more appends in flight than cores, so
/// the store's group commit shares writes as the reactor's workers do.
const ANCHOR_THREADS: usize = 16;

/// The step's anchor on a fresh store in `dir`: every document gets one
/// `document`-scope operation (untimed, the reactor's creation), then
/// `actions_per_doc` rounds over all documents in order, one
/// single-operation `apply` to its `global` stream each, split over
/// [`ANCHOR_THREADS`] threads by document. Appends per second of the
/// rounds, and their CPU time per append in µs.
fn store_anchor(
    dir: &Path,
    docs: usize,
    actions_per_doc: usize,
    durability: Durability,
) -> BenchResult<(f64, f64)> {
    let store = OperationStore::open(dir, StoreOptions::with_durability(durability))?;
    let document_type = CounterModel::document_type();
    let increment = ActionType::new("INCREMENT")?;
    let create = ActionType::new("CREATE_DOCUMENT")?;
    let append = |d: usize, scope: &Scope, n: usize, action_type: &ActionType| -> BenchResult<()> {
        let id = DocumentId::new(format!("doc-{d:07}"))?;
        let action = Action::new(
            ActionId::new(format!("d{d}-{scope}-a{n}"))?,
            action_type.clone(),
            scope.clone(),
            1_700_000_000_000 + n as u64,
            Vec::new(),
        );
        store.apply(
            &id,
            &document_type,
            scope,
            &Branch::main(),
            Revision(n as u64),
            |txn| {
                txn.add_operation(NewOperation::new(n as u64, action, Digest::default()));
            },
        )?;
        Ok(())
    };
    let rounds = |from: usize, to: usize, scope: &Scope, action_type: &ActionType| {
        std::thread::scope(|threads| -> BenchResult<()> {
            let workers: Vec<_> = (0..ANCHOR_THREADS)
                .map(|t| {
                    threads.spawn(move || -> Result<(), String> {
                        for n in from..to {
                            for d in (t..docs).step_by(ANCHOR_THREADS) {
                                append(d, scope, n, action_type).map_err(|e| e.to_string())?;
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for worker in workers {
                worker
                    .join()
                    .map_err(|_| "a store anchor thread panicked")??;
            }
            Ok(())
        })
    };
    rounds(0, 1, &Scope::document(), &create)?;
    let start = Instant::now();
    let cpu_start = super::workloads::process_cpu_secs();
    rounds(0, actions_per_doc, &Scope::global(), &increment)?;
    let appends = (docs * actions_per_doc) as f64;
    let cpu_us = (super::workloads::process_cpu_secs() - cpu_start) * 1e6 / appends;
    Ok((appends / start.elapsed().as_secs_f64(), cpu_us))
}

/// Jobs in flight: a waiter thread takes each handle in submission order,
/// waits until it is written and records the latency; the bounded channel
/// between them stops the submitter when `IN_FLIGHT` are outstanding.
/// A job written before an older one is timed when the older one is
/// (jobs of different documents finish nearly in order). The latency runs
/// from `execute`'s return, and with `IN_FLIGHT` jobs queued it is mostly
/// queueing (about `IN_FLIGHT` ÷ throughput): compare it between steps, not
/// with a single job's cost.
struct Pipeline {
    sender: flume::Sender<(Instant, JobHandle)>,
    waiter: std::thread::JoinHandle<Result<Histogram<u64>, String>>,
}

impl Pipeline {
    fn start() -> Self {
        let (sender, receiver) = flume::bounded::<(Instant, JobHandle)>(IN_FLIGHT);
        let waiter = std::thread::spawn(move || {
            // Microseconds, 1 µs to 10 min, three significant figures: a
            // fixed size whatever the run's length.
            let mut histogram =
                Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?;
            for (submitted, job) in receiver {
                job.written(WAIT).map_err(|e| e.to_string())?;
                let micros = submitted.elapsed().as_micros() as u64;
                histogram.saturating_record(micros.max(1));
            }
            Ok(histogram)
        });
        Self { sender, waiter }
    }

    /// Hands a job to the waiter; if the waiter stopped (a job failed),
    /// that job's error.
    fn push(self, job: JobHandle) -> Result<Self, Box<dyn std::error::Error>> {
        match self.sender.send((Instant::now(), job)) {
            Ok(()) => Ok(self),
            Err(_) => Err(self
                .finish()
                .err()
                .unwrap_or_else(|| "the job waiter stopped".into())),
        }
    }

    fn finish(self) -> BenchResult<Histogram<u64>> {
        drop(self.sender);
        let histogram = self.waiter.join().map_err(|_| "job waiter panicked")??;
        Ok(histogram)
    }
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
