//! Process-wide state shared by the controller and the HTTP endpoints: readiness, liveness
//! and metrics.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use super::{cache::Cache, metrics};

/// Process-wide state shared with the HTTP endpoints.
#[derive(Default)]
pub struct State {
    pub(crate) crds_present: AtomicBool,
    pub(crate) standby: AtomicBool,
    pub(crate) cache: Mutex<Option<Arc<Cache>>>,
    /// Watches whose task ended, by kind, with why.
    dead_watches: Mutex<BTreeMap<&'static str, String>>,
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

    /// Records that the watch of `kind` is gone for good (its task ended or panicked). Nothing
    /// would update that part of the cache any more, so the process is no longer live: a
    /// restart is the only way back to fresh data.
    pub fn watch_died(&self, kind: &'static str, why: String) {
        tracing::error!(kind, %why, "watch ended; reporting not live");
        self.dead_watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind, why);
    }

    /// Live unless a watch died; the error names every dead watch and why.
    pub fn liveness(&self) -> Result<(), String> {
        let dead = self.dead_watches.lock().unwrap_or_else(|p| p.into_inner());
        if dead.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = dead
            .iter()
            .map(|(kind, why)| format!("watch of {kind} ended: {why}"))
            .collect();
        Err(list.join("; "))
    }

    /// The `/metrics` text (`metrics::CONTENT_TYPE`), with pair counts taken from the cache now.
    pub fn metrics_text(&self) -> String {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let pairs = cache.map(|c| c.pair_counts()).unwrap_or_default();
        self.metrics.encode(&pairs)
    }
}
