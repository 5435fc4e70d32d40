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
//!
//! Smaller blocks fragment instead: over the 1M-document scale step the
//! arenas' free chunks grew from 2 to 60 MB while what was in use stayed
//! near 60 MB, each thread's arena keeping free pages no other thread's
//! allocations could use. A thread returns them to the system every second
//! (`malloc_trim`): the step's peak RSS fell from 209 to 180 MB.

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

/// The trimmer's period unless `REACTORDB_MALLOC_TRIM_MS` says otherwise.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const TRIM_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// The trimmer's period for a value of `REACTORDB_MALLOC_TRIM_MS`: unset or
/// not a number, the default; `0`, no trimmer.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn trim_period(setting: Option<&str>) -> Option<std::time::Duration> {
    match setting.map(|value| value.trim().parse::<u64>()) {
        Some(Ok(0)) => None,
        Some(Ok(ms)) => Some(std::time::Duration::from_millis(ms)),
        None | Some(Err(_)) => Some(TRIM_PERIOD),
    }
}

/// Starts a thread that hands the free pages inside malloc's arenas back
/// to the system every period (`malloc_trim(0)`, which releases whole free
/// pages anywhere in an arena, not only at its top). Each call holds an
/// arena's lock while it walks that arena: 8 ms median, 90 ms at most, at
/// 1M documents; about 1% of a core.
pub(crate) fn start_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let setting = std::env::var("REACTORDB_MALLOC_TRIM_MS").ok();
        let Some(period) = trim_period(setting.as_deref()) else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                // SAFETY: malloc_trim takes each arena's own lock; it is
                // safe with other threads allocating.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "no malloc trimmer: peak memory will be higher");
        }
    }
}

/// What malloc holds, in bytes, over every arena.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
pub(crate) struct MallocStats {
    /// Obtained for the arenas (not counting blocks mapped on their own).
    pub(crate) arena_bytes: u64,
    /// Of the arenas' bytes, allocated.
    pub(crate) in_use_bytes: u64,
    /// Of the arenas' bytes, free (resident unless trimmed).
    pub(crate) free_bytes: u64,
    /// Blocks mapped on their own (at least the mmap threshold).
    pub(crate) mapped_bytes: u64,
}

/// malloc's figures now; `None` off glibc.
pub(crate) fn malloc_stats() -> Option<MallocStats> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // `mallinfo`, not `mallinfo2`: a binary calling the latter does not
        // start on glibc before 2.33. Its `int` fields wrap past 4 GiB,
        // beyond what the trace watches.
        // SAFETY: mallinfo only reads malloc's counters, under its locks.
        let info = unsafe { libc::mallinfo() };
        let bytes = |field: libc::c_int| u64::from(field as u32);
        Some(MallocStats {
            arena_bytes: bytes(info.arena),
            in_use_bytes: bytes(info.uordblks),
            free_bytes: bytes(info.fordblks),
            mapped_bytes: bytes(info.hblkhd),
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_trim_period_is_the_default_unless_set_and_zero_turns_it_off() {
        assert_eq!(trim_period(None), Some(TRIM_PERIOD));
        assert_eq!(trim_period(Some("250")), Some(Duration::from_millis(250)));
        assert_eq!(trim_period(Some(" 5000 ")), Some(Duration::from_secs(5)));
        assert_eq!(trim_period(Some("0")), None);
        assert_eq!(trim_period(Some("soon")), Some(TRIM_PERIOD));
    }
}
