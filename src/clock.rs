//! Wall-clock time, injectable so that token expiry and cache lifetimes are
//! tested exactly rather than with sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, from the system or from a test.
#[derive(Clone)]
pub struct Clock(Source);

#[derive(Clone)]
enum Source {
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// A clock that stands still at `unix_millis` until moved with
    /// [`Clock::advance`] or [`Clock::set`]. Clones share the same time.
    pub fn manual(unix_millis: i64) -> Self {
        Self(Source::Manual(Arc::new(AtomicI64::new(unix_millis))))
    }

    pub fn now_millis(&self) -> i64 {
        match &self.0 {
            Source::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            Source::Manual(millis) => millis.load(Ordering::SeqCst),
        }
    }

    /// Whole seconds since the epoch, the unit of Mithril's `expires_at`.
    pub fn now_secs(&self) -> i64 {
        self.now_millis().div_euclid(1000)
    }

    /// Moves a manual clock forward; a system clock ignores it.
    pub fn advance(&self, millis: i64) {
        if let Source::Manual(now) = &self.0 {
            now.fetch_add(millis, Ordering::SeqCst);
        }
    }

    /// Sets a manual clock; a system clock ignores it.
    pub fn set(&self, unix_millis: i64) {
        if let Source::Manual(now) = &self.0 {
            now.store(unix_millis, Ordering::SeqCst);
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Source::System => f.write_str("Clock::system"),
            Source::Manual(now) => write!(f, "Clock::manual({})", now.load(Ordering::SeqCst)),
        }
    }
}
