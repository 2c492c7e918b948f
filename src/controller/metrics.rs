//! Prometheus metrics in the text exposition format. Labels are bounded (states, error
//! reasons); there is no per-object label.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

#[derive(Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    duration_buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_micros: AtomicU64,
    status_patches: AtomicU64,
    grant_applies: AtomicU64,
    grant_deletes: AtomicU64,
    events: AtomicU64,
}

impl Metrics {
    pub fn reconciled(&self, took: Duration, stats: super::writer::WriteStats, events: usize) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.duration_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.status_patches
            .fetch_add(stats.status_patches as u64, Ordering::Relaxed);
        self.grant_applies
            .fetch_add(stats.grant_applies as u64, Ordering::Relaxed);
        self.grant_deletes
            .fetch_add(stats.grant_deletes as u64, Ordering::Relaxed);
        self.events.fetch_add(events as u64, Ordering::Relaxed);
    }

    pub fn failed(&self, reason: &str) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(reason.to_string()).or_default() += 1;
    }

    pub fn status_patches(&self) -> u64 {
        self.status_patches.load(Ordering::Relaxed)
    }

    /// The exposition text, with the current pair counts by state.
    pub fn render(&self, pairs: &BTreeMap<&'static str, usize>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP ims_pairs Offered (image, recipient) pairs by share state.");
        let _ = writeln!(out, "# TYPE ims_pairs gauge");
        for (state, n) in pairs {
            let _ = writeln!(out, "ims_pairs{{state=\"{state}\"}} {n}");
        }
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {v}");
        };
        counter(
            &mut out,
            "ims_reconciles_total",
            "Tenant reconciles.",
            self.reconciles.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP ims_reconcile_errors_total Failed tenant reconciles by reason."
        );
        let _ = writeln!(out, "# TYPE ims_reconcile_errors_total counter");
        for (reason, n) in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "ims_reconcile_errors_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP ims_reconcile_duration_seconds Time to evaluate and write one tenant."
        );
        let _ = writeln!(out, "# TYPE ims_reconcile_duration_seconds histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let n = self.duration_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "ims_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {n}");
        }
        let count = self.duration_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "ims_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.duration_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "ims_reconcile_duration_seconds_sum {sum}");
        let _ = writeln!(out, "ims_reconcile_duration_seconds_count {count}");
        counter(
            &mut out,
            "ims_status_patches_total",
            "Status server-side applies sent.",
            self.status_patches(),
        );
        counter(
            &mut out,
            "ims_grant_applies_total",
            "Role/RoleBinding applies sent.",
            self.grant_applies.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "ims_grant_deletes_total",
            "Role/RoleBinding deletes sent.",
            self.grant_deletes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "ims_events_total",
            "Kubernetes Events published.",
            self.events.load(Ordering::Relaxed),
        );
        out
    }
}
