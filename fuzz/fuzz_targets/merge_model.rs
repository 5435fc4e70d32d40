//! The merge property (a replica's history is a function of the set of
//! operations it holds) against the naive model, with the fuzzer choosing
//! every step. Run:
//! `cargo +nightly fuzz run merge_model fuzz/seeds/merge_model`; the seeds
//! are replayed by `cargo test` (`merge::tests`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reactordb::fuzz_merge(data);
});
