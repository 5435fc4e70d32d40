//! Where a running benchmark's memory is: a thread that samples the
//! process's resident set, RocksDB's own estimates
//! ([`StoreMemory`](reactordb::StoreMemory)) and
//! malloc's arenas every few seconds and prints each sample as a JSON line
//! on stderr (`bench --scale-step N --trace-memory`). It told apart
//! memtables, the block cache and malloc's fragmentation at 1M documents
//! (DESIGN.md, "Memory"). Reads only; the reactor never waits for it.

use std::time::{Duration, Instant};

use reactordb::Reactor;

/// Time between samples.
const PERIOD: Duration = Duration::from_secs(5);

/// A running trace; dropping it stops the sampling thread.
pub(crate) struct MemoryTrace {
    /// Dropped to stop the thread: its wait between samples then ends.
    stop: Option<flume::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemoryTrace {
    /// Starts sampling `reactor` every [`PERIOD`].
    pub(crate) fn start(reactor: &Reactor) -> Self {
        let (stop, stopped) = flume::bounded::<()>(0);
        let store = reactor.store().clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            while let Err(flume::RecvTimeoutError::Timeout) = stopped.recv_timeout(PERIOD) {
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
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for MemoryTrace {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
