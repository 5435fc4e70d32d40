//! The engine's `tracing` spans name its jobs, commits, loads and view
//! catch-ups. (A test binary of its own: a subscriber set for one thread
//! must not race other tests over the spans' cached interest.)

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::reactor::{action, id, open_inline};

use reactordb::{Action, Branch, CounterModel, CreateDocumentInput};

const WAIT: Duration = Duration::from_secs(10);

fn increment(n: usize, input: &str) -> Action {
    action(&format!("a{n}"), "INCREMENT", input, n as u64)
}

/// A writer the subscriber formats into, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn spans_name_jobs_commits_loads_and_catch_ups() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    tracing::subscriber::with_default(subscriber, || {
        let a = open_inline(a_dir.path());
        let input = CreateDocumentInput::new(CounterModel::document_type(), 1, "c");
        a.create(id("c"), input)
            .expect("submit")
            .written(WAIT)
            .expect("created");
        a.execute(id("c"), Branch::main(), vec![increment(1, "x")])
            .expect("submit")
            .written(WAIT)
            .expect_err("refused");
        let ops = a
            .store()
            .get_since_ordinal(reactordb::Ordinal(0), reactordb::Paging::all())
            .expect("feed")
            .items;
        // The view of a reactor opened here catches up on this thread.
        let b = open_inline(b_dir.path());
        b.load(id("c"), Branch::main(), ops)
            .expect("submit")
            .written(WAIT)
            .expect("loaded");
    });
    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
    for name in [
        "reactordb.run",
        "reactordb.commit",
        "reactordb.load",
        "reactordb.view.catch_up",
        "job failed",
    ] {
        assert!(text.contains(name), "no {name} in:\n{text}");
    }
    assert!(text.contains("document=c"), "{text}");
}
