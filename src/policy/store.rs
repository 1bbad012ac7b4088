//! The policies serving now, replaceable while requests are in flight.
//!
//! A request takes the current [`Policies`] once, at its start, and decides
//! with that generation to the end even if a reload swaps in another
//! meanwhile. A swap is one atomic pointer store: no request ever sees half
//! of a generation. A reload that fails leaves the serving generation as it
//! is and is remembered here, for readiness and metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::{LoadErrors, Policies};

/// How many problems of one refused reload are logged and shown in
/// `/readyz`; the count says how many there were in all.
pub const REPORTED_PROBLEMS: usize = 20;

/// The active policy generation and how reloading it has gone.
#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwap<Policies>,
    reloads: AtomicU64,
    failures: AtomicU64,
    /// The problems of the last reload, while it is the latest attempt.
    last_failure: Mutex<Option<LoadErrors>>,
}

impl PolicyStore {
    pub fn new(policies: Policies) -> Self {
        Self {
            current: ArcSwap::from_pointee(policies),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_failure: Mutex::new(None),
        }
    }

    /// The generation serving now.
    pub fn current(&self) -> Arc<Policies> {
        self.current.load_full()
    }

    /// Serves `policies` from now on; returns the generation it replaced.
    pub fn replace(&self, policies: Policies) -> Arc<Policies> {
        self.reloads.fetch_add(1, Ordering::Relaxed);
        self.set_last_failure(None);
        self.current.swap(Arc::new(policies))
    }

    /// Records a reload that was refused; the serving generation stays.
    pub fn refuse(&self, errors: LoadErrors) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.set_last_failure(Some(errors));
    }

    /// The files hold the serving generation again: a refusal reported
    /// earlier no longer describes them.
    pub fn mended(&self) {
        self.set_last_failure(None);
    }

    /// Generations swapped in since start-up.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Reloads refused since start-up.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Why the latest reload was refused, unless a later one succeeded.
    pub fn last_failure(&self) -> Option<LoadErrors> {
        self.last_failure
            .lock()
            .map(|failure| failure.clone())
            .unwrap_or_default()
    }

    fn set_last_failure(&self, failure: Option<LoadErrors>) {
        if let Ok(mut last) = self.last_failure.lock() {
            *last = failure;
        }
    }
}
