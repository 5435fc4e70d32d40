//! The Operation Store's two speed ratios, measured in paired rounds.
//!
//! Criterion (`benches/store.rs`) measures each side for several seconds,
//! one after the other; on a shared machine whose speed drifts by tens of
//! percent from one minute to the next, the ratio of two such figures
//! moves with the drift. Here each round times both sides back to back
//! (alternating which goes first), and the ratio is taken per round, so
//! drift slower than a round cancels out. Printed: the median per-call
//! times and the median ratio with its 10th–90th percentile range.
//!
//! - `apply` of 1 and of 100 operations per call (`Buffered`) against a raw
//!   RocksDB `WriteBatch` of the same bytes (`common::RawBatches`);
//! - `Synced` single-operation appends from 16 threads (each on its own
//!   stream) against 1 thread.
//!
//! Run: `cargo bench --bench paired`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use reactordb::{CommitStats, Durability, OperationStore, StoreOptions};

mod common;
use common::{Appender, RawBatches, RawDb};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

fn median_of(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 0.5)
}

/// Median ratio and its 10th and 90th percentiles.
fn spread(ratios: &[f64]) -> (f64, f64, f64) {
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.1),
        percentile(&sorted, 0.9),
    )
}

fn apply_vs_raw(per_call: u64, calls_per_round: u64, rounds: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = OperationStore::open(
        dir.path(),
        StoreOptions::with_durability(Durability::Buffered),
    )
    .expect("open");
    let mut ours = Appender::new(store, &format!("paired{per_call}"));
    let raw = RawDb::new();
    let handles = raw.handles();
    let mut batches = RawBatches::new(per_call, (calls_per_round * 50).min(20_000));

    let mut run_ours = |calls: u64| ours.timed_calls(calls, per_call);
    let mut run_raw = |calls: u64| {
        let start = Instant::now();
        for _ in 0..calls {
            batches.write_next(&raw.db, &handles);
        }
        start.elapsed()
    };
    // Warm up both (memtables, caches, allocator).
    run_ours(calls_per_round * 5);
    run_raw(calls_per_round * 5);

    let (mut ours_us, mut raw_us, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (o, r) = if round % 2 == 0 {
            let o = run_ours(calls_per_round);
            (o, run_raw(calls_per_round))
        } else {
            let r = run_raw(calls_per_round);
            (run_ours(calls_per_round), r)
        };
        let per_call_us = |d: Duration| d.as_secs_f64() * 1e6 / calls_per_round as f64;
        ours_us.push(per_call_us(o));
        raw_us.push(per_call_us(r));
        ratios.push(r.as_secs_f64() / o.as_secs_f64());
    }
    let (ratio, p10, p90) = spread(&ratios);
    println!(
        "apply {per_call:>3} op/call: ours {:8.2} µs, raw WriteBatch {:8.2} µs per call; \
         raw/ours {ratio:.2} (p10 {p10:.2}, p90 {p90:.2}; {rounds} rounds of {calls_per_round} calls)",
        median_of(&ours_us),
        median_of(&raw_us),
    );
}

/// Durable appends: `threads` persistent threads, each appending single
/// operations to its own stream for as long as a round lasts. Rounds are
/// timed, not counted: with a fixed number of operations per thread, the
/// last threads of a round would write alone and the rate would measure
/// that tail.
struct SyncedWriters {
    store: OperationStore,
    start: Arc<Barrier>,
    end: Arc<Barrier>,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

/// Operations a writer prepares per round: more than it can write in one.
const PREPARED_PER_ROUND: u64 = 400;

impl SyncedWriters {
    fn new(store: &OperationStore, name: &str, threads: usize, rounds: usize) -> Self {
        let start = Arc::new(Barrier::new(threads + 1));
        let end = Arc::new(Barrier::new(threads + 1));
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let handles = (0..threads)
            .map(|t| {
                let mut app = Appender::new(store.clone(), &format!("{name}-t{t}"));
                let (start, end) = (start.clone(), end.clone());
                let (stop, written) = (stop.clone(), written.clone());
                std::thread::spawn(move || {
                    for _ in 0..rounds {
                        let ops: Vec<_> = (0..PREPARED_PER_ROUND)
                            .map(|_| {
                                let op = app.prepare(1);
                                app.next += 1;
                                op
                            })
                            .collect();
                        app.next -= PREPARED_PER_ROUND;
                        start.wait();
                        let mut done = 0;
                        for op in ops {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            drop(app.append_prepared(op));
                            done += 1;
                        }
                        // `append_prepared` moved `app.next` past what was
                        // written: the rest is prepared again next round.
                        written.fetch_add(done, Ordering::Relaxed);
                        end.wait();
                    }
                })
            })
            .collect();
        Self {
            store: store.clone(),
            start,
            end,
            stop,
            written,
            handles,
        }
    }

    /// One round of about `length`; returns operations/s and what the
    /// group commit did meanwhile.
    fn round(&self, length: Duration) -> (f64, Round) {
        self.stop.store(false, Ordering::Relaxed);
        self.written.store(0, Ordering::Relaxed);
        let before = self.store.commit_stats();
        self.start.wait();
        let began = Instant::now();
        std::thread::sleep(length);
        self.stop.store(true, Ordering::Relaxed);
        self.end.wait();
        let took = began.elapsed();
        let round = Round {
            commits: self.store.commit_stats().since(&before),
            took,
        };
        let rate = self.written.load(Ordering::Relaxed) as f64 / took.as_secs_f64();
        (rate, round)
    }

    fn finish(self) {
        for handle in self.handles {
            handle.join().expect("writer");
        }
    }
}

/// The group commit's work over rounds of one side.
#[derive(Default)]
struct Round {
    commits: CommitStats,
    took: Duration,
}

impl Round {
    fn add(&mut self, other: Round) {
        let (a, b) = (&mut self.commits, &other.commits);
        a.writes += b.writes;
        a.appends += b.appends;
        a.operations += b.operations;
        a.write_time += b.write_time;
        self.took += other.took;
    }

    /// Appends per fsync, µs per fsync'd write, and µs from one write's end
    /// to the next one's start (waking the callers, their next appends).
    fn describe(&self) -> String {
        let writes = self.commits.writes.max(1) as f64;
        let write_us = self.commits.write_time.as_secs_f64() * 1e6 / writes;
        let cycle_us = self.took.as_secs_f64() * 1e6 / writes;
        format!(
            "{:.1} appends per write, {write_us:.0} µs per write, {:.0} µs between writes",
            self.commits.appends_per_write(),
            cycle_us - write_us,
        )
    }
}

fn synced_16_vs_1(rounds: usize) {
    const ROUND: Duration = Duration::from_millis(40);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = OperationStore::open(
        dir.path(),
        StoreOptions::with_durability(Durability::Synced),
    )
    .expect("open");
    let many = SyncedWriters::new(&store, "many", 16, rounds + 1);
    let one = SyncedWriters::new(&store, "one", 1, rounds + 1);
    many.round(ROUND);
    one.round(ROUND);
    let (mut many_rates, mut one_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut many_work, mut one_work) = (Round::default(), Round::default());
    for round in 0..rounds {
        let ((m, m_work), (o, o_work)) = if round % 2 == 0 {
            let m = many.round(ROUND);
            (m, one.round(ROUND))
        } else {
            let o = one.round(ROUND);
            (many.round(ROUND), o)
        };
        many_rates.push(m);
        one_rates.push(o);
        ratios.push(m / o);
        many_work.add(m_work);
        one_work.add(o_work);
    }
    many.finish();
    one.finish();
    let (ratio, p10, p90) = spread(&ratios);
    println!(
        "synced single-op appends: 16 threads {:.0}/s, 1 thread {:.0}/s; \
         16/1 {ratio:.2}x (p10 {p10:.2}, p90 {p90:.2}; {rounds} rounds of {} ms a side)",
        median_of(&many_rates),
        median_of(&one_rates),
        ROUND.as_millis(),
    );
    println!("  16 threads: {}", many_work.describe());
    println!("  1 thread:   {}", one_work.describe());
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments select by name:
    // `apply` (both), `apply-1`, `apply-100`, `synced`.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| {
        filter.is_empty()
            || filter
                .iter()
                .any(|f| name == f || name.starts_with(&format!("{f}-")))
    };
    if wanted("apply-1") {
        apply_vs_raw(1, 200, 200);
    }
    if wanted("apply-100") {
        apply_vs_raw(100, 4, 200);
    }
    if wanted("synced") {
        synced_16_vs_1(40);
    }
}
