//! Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature)
//! and for the unit tests that replay their seed corpora on every
//! `cargo test`. Not an API: the functions take a fuzzer's bytes, reach
//! the crate's private decoders and internals, and panic on a finding.
//!
//! - `keys`, `values`: every key and value decoder must refuse bad bytes
//!   with an error, never panic or allocate without bound, and what
//!   decodes must encode back to the same thing;
//! - `import_line`: the export line parser, then `apply` of what parses,
//!   into one store per process;
//! - `merge`: the convergence property against the naive model
//!   (`merge::check`);
//! - `reactor`: execute, undo, redo and reopen against an in-memory model
//!   of counters, one store per process, fresh documents per input;
//! - `load`: an adversarial peer's operations (forged ids, one id with two
//!   contents, undo cycles, huge indexes and skips) must be refused with a
//!   typed error or merged into a log that still verifies.
//!
//! This module only reads what it drives; it owns no state on disk but the
//! temporary directories of its process-wide stores.

mod decode;
mod harness;
mod load;
mod reactor;
#[cfg(test)]
mod tests;

pub use decode::{fuzz_keys, fuzz_values};
pub use load::fuzz_load;
pub use reactor::{fuzz_import_line, fuzz_reactor};

/// The merge property check on a fuzzer's bytes (the `merge_model`
/// target): panics when a replica's history departs from the naive
/// model's, or replicas holding one set disagree.
pub fn fuzz_merge(data: &[u8]) {
    let mut stats = crate::merge::check::Stats::default();
    crate::merge::check::scenario(&mut crate::merge::check::Bytes(data), 0, &mut stats);
}
