//! The reactor (execute, undo, redo, reopen) against an in-memory model of counters.
//! Run: `cargo +nightly fuzz run reactor_model fuzz/seeds/reactor_model`; `cargo test`
//! replays the seeds (`reactordb::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reactordb::fuzzing::fuzz_reactor(data);
});
