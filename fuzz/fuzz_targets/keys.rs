//! Every key decoder: bad bytes refused, accepted keys re-encode to the same bytes.
//! Run: `cargo +nightly fuzz run keys fuzz/seeds/keys`; `cargo test`
//! replays the seeds (`reactordb::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reactordb::fuzzing::fuzz_keys(data);
});
