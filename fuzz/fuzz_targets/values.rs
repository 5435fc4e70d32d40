//! Every value decoder (operation, head, ordinal, op id, snapshot, header record, sync values and frames): no panic, no unbounded allocation, round trips.
//! Run: `cargo +nightly fuzz run values fuzz/seeds/values`; `cargo test`
//! replays the seeds (`reactordb::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reactordb::fuzzing::fuzz_values(data);
});
