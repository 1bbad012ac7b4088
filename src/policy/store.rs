//! The policies serving now, replaceable while requests are in flight.
//!
//! A request takes the current [`Policies`] once, at its start, and decides
//! with that generation to the end even if a reload swaps in another
//! meanwhile. A swap is one atomic pointer store: no request ever sees half
//! of a generation.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Policies;

/// The active policy generation.
#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwap<Policies>,
}

impl PolicyStore {
    pub fn new(policies: Policies) -> Self {
        Self {
            current: ArcSwap::from_pointee(policies),
        }
    }

    /// The generation serving now.
    pub fn current(&self) -> Arc<Policies> {
        self.current.load_full()
    }

    /// Serves `policies` from now on; returns the generation it replaced.
    pub fn replace(&self, policies: Policies) -> Arc<Policies> {
        self.current.swap(Arc::new(policies))
    }
}
