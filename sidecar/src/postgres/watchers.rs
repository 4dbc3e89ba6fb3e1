//! What the background watchers remember between their ticks, held by [`super::Member`]: the
//! isolation lease's last contacts ([`super::isolation`]) and the synchronous replication
//! watcher's counters ([`super::sync`]). Kept apart so `member` needs neither watcher's code.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// When the primary last heard from the controller and from a streaming standby.
#[derive(Debug, Default)]
pub struct Contacts {
    pub(super) controller: Option<Instant>,
    pub(super) standby: Option<Instant>,
}

/// What the degrade watcher has done, for `/metrics`, and the policy generation it watches.
#[derive(Debug, Default)]
pub struct SyncCounters {
    pub(super) degrades: AtomicU64,
    pub(super) restores: AtomicU64,
    /// Bumped each time a policy is set, so the watcher starts its timeout afresh.
    pub(super) generation: AtomicU64,
}

impl SyncCounters {
    /// Times commits stopped waiting for standbys because too few streamed.
    pub fn degrades(&self) -> u64 {
        self.degrades.load(Ordering::Relaxed)
    }

    /// Times synchronous replication was restored after a degrade.
    pub fn restores(&self) -> u64 {
        self.restores.load(Ordering::Relaxed)
    }

    pub(super) fn policy_changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}
