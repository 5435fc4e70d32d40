//! Loads from an adversarial peer: refused with a typed error or merged into a log that verifies.
//! Run: `cargo +nightly fuzz run load_peer fuzz/seeds/load_peer`; `cargo test`
//! replays the seeds (`reactordb::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reactordb::fuzzing::fuzz_load(data);
});
