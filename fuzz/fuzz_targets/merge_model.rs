//! The merge property (a replica's history is a function of the set of operations it holds) against the naive model.
//! Run: `cargo +nightly fuzz run merge_model fuzz/seeds/merge_model`; `cargo test`
//! replays the seeds (`reactordb::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reactordb::fuzzing::fuzz_merge(data);
});
