//! The process's allocator policy, which belongs to the program, not to the
//! engine: an embedder's service chooses its own (README.md, "Memory").
//!
//! glibc's malloc serves a block of at least its mmap threshold (128 KiB
//! at start) with a mapping of its own, returned to the system when freed;
//! but each time it frees such a block it raises the threshold to that
//! block's size (up to 32 MiB). RocksDB's memtables grow in 1 MiB blocks:
//! after the first memtable is flushed and freed, later blocks come from
//! malloc's per-thread arenas instead, and a flushed memtable's blocks stay
//! resident there, fragmented between live allocations. Fixing the
//! threshold keeps the blocks mapped and returned: peak RSS of
//! `bench --scale-step 100000` (with 128 MiB of memtables) fell from 383 MB
//! to 263 MB (DESIGN.md, "Memory").

/// Fixes glibc's mmap threshold at its starting value, unless the user set
/// it (`MALLOC_MMAP_THRESHOLD_`, or `mmap_threshold` in `GLIBC_TUNABLES`):
/// theirs wins.
pub(crate) fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set_by_user = std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var("GLIBC_TUNABLES")
                .is_ok_and(|tunables| tunables.contains("mmap_threshold"));
        if !set_by_user {
            // SAFETY: mallopt only changes malloc's parameters, under
            // malloc's own lock (safe with other threads running).
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
            }
        }
    }
}
