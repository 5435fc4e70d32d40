//! Where a running benchmark's memory is: a thread that samples the
//! process's resident set, RocksDB's own estimates ([`StoreMemory`]) and
//! malloc's arenas every few seconds and prints each sample as a JSON line
//! on stderr (`bench --scale-step N --trace-memory`). It told apart
//! memtables, the block cache and malloc's fragmentation at 1M documents
//! (DESIGN.md, "Memory"). Reads only; the reactor never waits for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reactordb::Reactor;

/// Time between samples.
const PERIOD: Duration = Duration::from_secs(5);

/// A running trace; dropping it stops the sampling thread.
pub(crate) struct MemoryTrace {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemoryTrace {
    /// Starts sampling `reactor` every [`PERIOD`].
    pub(crate) fn start(reactor: &Reactor) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let store = reactor.store().clone();
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut next = start + PERIOD;
            while !stopped.load(Ordering::Relaxed) {
                // Short sleeps, so a drop does not wait a whole period.
                std::thread::sleep(Duration::from_millis(100));
                if Instant::now() < next {
                    continue;
                }
                next += PERIOD;
                let sample = serde_json::json!({
                    "secs": start.elapsed().as_secs(),
                    "rss_mb": super::workloads::rss_mb(),
                    "ordinal": store.last_ordinal().get(),
                    "store": store.memory(),
                    "malloc": super::malloc::malloc_stats(),
                });
                eprintln!("{sample}");
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for MemoryTrace {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
