//! The store's clock: whole seconds since the clock was made, plus an offset tests can move.
//!
//! Tests cannot rely on tokio's paused time (it does not reach actix workers, which run their
//! own runtimes), so the store is handed a [`Clock`] and tests call [`Clock::advance`] to expire
//! peers without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A monotonic second counter shared by every clone.
#[derive(Clone, Debug)]
pub struct Clock {
    start: Instant,
    offset: Arc<AtomicU64>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock starting at zero now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            offset: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Seconds since the clock started, plus every [`Clock::advance`].
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_secs() + self.offset.load(Ordering::Relaxed)
    }

    /// Moves this clock and all its clones forward.
    pub fn advance(&self, secs: u64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}
