//! Process-wide state shared by the controller and the HTTP endpoints: readiness, liveness
//! and metrics.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use super::{cache::Cache, metrics};

/// Process-wide state shared with the HTTP endpoints.
#[derive(Default)]
pub struct State {
    pub(crate) crds_present: AtomicBool,
    pub(crate) standby: AtomicBool,
    pub(crate) cache: Mutex<Option<Arc<Cache>>>,
    pub metrics: metrics::Metrics,
}

impl State {
    /// Ready when the CRDs are served and either the caches are synced or this replica is a
    /// standby waiting for the lease.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.crds_present.load(Ordering::SeqCst) {
            return Err("waiting for the ims.imageshare.io CRDs to be installed");
        }
        if self.standby.load(Ordering::SeqCst) {
            return Ok(());
        }
        match &*self.cache.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(cache) if cache.is_synced() => Ok(()),
            _ => Err("watch caches are not synced yet"),
        }
    }

    pub fn metrics_text(&self) -> String {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let pairs = cache.map(|c| c.pair_counts()).unwrap_or_default();
        self.metrics.render(&pairs)
    }
}
