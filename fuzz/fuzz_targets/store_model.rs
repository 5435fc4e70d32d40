//! Drives the Operation Store against the in-memory reference model shared
//! with `tests/store_model.rs`. Run: `cargo +nightly fuzz run store_model`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/model.rs"]
mod model;

fuzz_target!(|data: &[u8]| {
    // Each command takes 3 header bytes and up to 3 (action, skip) pairs.
    let mut commands = Vec::new();
    let mut rest = data;
    while rest.len() >= 3 && commands.len() < 64 {
        let (stream, shift, n) = (rest[0], (rest[1] % 6) as i8 - 3, (rest[2] % 4) as usize);
        rest = &rest[3..];
        let take = (n * 2).min(rest.len() / 2 * 2);
        let ops = rest[..take].chunks_exact(2).map(|c| (c[0], c[1] % 4)).collect();
        rest = &rest[take..];
        commands.push(model::Append { stream, shift, ops });
    }
    model::check(&commands);
});
