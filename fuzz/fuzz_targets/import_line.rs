//! The export line parser, and applying what parses to a store.
//! Run: `cargo +nightly fuzz run import_line fuzz/seeds/import_line`; `cargo test`
//! replays the seeds (`reactordb::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reactordb::fuzzing::fuzz_import_line(data);
});
