//! Faults a test can make the store suffer (the `fault-injection` feature):
//! a group write that fails as a failed RocksDB write would, or a commit
//! leader that panics before writing. Countdowns over group writes, so a
//! test picks the exact write.

use std::sync::atomic::{AtomicU64, Ordering};

use super::commit::Failure;
use super::OperationStore;

/// Pending faults: each counts down group writes (0: none pending).
#[derive(Debug, Default)]
pub(crate) struct Faults {
    fail: AtomicU64,
    panic: AtomicU64,
}

/// Counts one write down; true when this write is the one asked for.
fn tick(countdown: &AtomicU64) -> bool {
    countdown
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
            left.checked_sub(1)
        })
        .is_ok_and(|left| left == 1)
}

impl Faults {
    /// Called by the commit leader just before a group write.
    pub(crate) fn before_write(&self) -> Option<Failure> {
        if tick(&self.panic) {
            panic!("injected fault: the commit leader panics");
        }
        tick(&self.fail).then_some(Failure::Injected)
    }
}

impl OperationStore {
    /// Makes the `n`th group write from now (`n ≥ 1`; 0 cancels) fail as a
    /// failed RocksDB write would: nothing of it is written, its callers get
    /// [`Error::InjectedFault`](crate::Error::InjectedFault), and the store
    /// is poisoned. Only with the `fault-injection` feature.
    pub fn fail_nth_write(&self, n: u64) {
        self.inner.commit.faults.fail.store(n, Ordering::Release);
    }

    /// Makes the commit leader of the `n`th group write from now (`n ≥ 1`;
    /// 0 cancels) panic before it writes. Only with the `fault-injection`
    /// feature.
    pub fn panic_nth_write(&self, n: u64) {
        self.inner.commit.faults.panic.store(n, Ordering::Release);
    }
}
