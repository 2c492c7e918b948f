//! Prometheus metrics, encoded by `prometheus-client` in the OpenMetrics text format. Every
//! label is bounded (pair states, write kinds, error reasons, watched kinds); no label carries
//! an object name, so the series count does not grow with the cluster.

use std::{collections::BTreeMap, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

/// What `Metrics::encode` produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Most reconciles are CPU-only and finish in well under a millisecond; the slow tail is API
/// round trips.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// The kind of write whose failure `Metrics::write_failed` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteKind {
    /// A status server-side apply.
    Status,
    /// A Role/RoleBinding apply.
    Grant,
    /// A Role/RoleBinding delete.
    Prune,
    /// A Kubernetes Event.
    Event,
    /// A Lease create/update.
    Lease,
    /// An ImageQuota create or delete (its status writes count as `Status`).
    Quota,
    /// An ImageOffer write or delete.
    Offer,
}

impl WriteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteKind::Status => "status",
            WriteKind::Grant => "grant",
            WriteKind::Prune => "prune",
            WriteKind::Event => "event",
            WriteKind::Lease => "lease",
            WriteKind::Quota => "quota",
            WriteKind::Offer => "offer",
        }
    }
}

/// A bounded label for a failed API call: the status code's meaning, never the message.
pub fn error_reason(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) => match s.code {
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            422 => "Invalid",
            429 => "TooManyRequests",
            500..=599 => "ServerError",
            _ => "OtherApi",
        },
        _ => "Transport",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteErrorLabels {
    kind: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// The operator's metrics. The handles share their values with `registry`, which only the
/// encoder reads.
pub struct Metrics {
    registry: Registry,
    pairs: Family<StateLabel, Gauge>,
    reconciles: Counter,
    reconcile_errors: Family<ReasonLabel, Counter>,
    reconcile_duration: Histogram,
    status_patches: Counter,
    grant_applies: Counter,
    grant_deletes: Counter,
    events: Counter,
    write_errors: Family<WriteErrorLabels, Counter>,
    unreadable: Family<KindLabel, Gauge>,
    watch_restarts: Family<KindLabel, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let pairs = Family::<StateLabel, Gauge>::default();
        registry.register(
            "ims_pairs",
            "Offered (image, recipient) pairs by share state",
            pairs.clone(),
        );
        let reconciles = Counter::default();
        registry.register(
            "ims_reconciles",
            "Tenant reconciles that evaluated and wrote, whether or not they succeeded",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "ims_reconcile_errors",
            "Failed tenant reconciles by reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(BUCKETS);
        registry.register_with_unit(
            "ims_reconcile_duration",
            "Time to evaluate and write one tenant",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let status_patches = Counter::default();
        registry.register(
            "ims_status_patches",
            "Status server-side applies sent",
            status_patches.clone(),
        );
        let grant_applies = Counter::default();
        registry.register(
            "ims_grant_applies",
            "Role/RoleBinding applies sent",
            grant_applies.clone(),
        );
        let grant_deletes = Counter::default();
        registry.register(
            "ims_grant_deletes",
            "Role/RoleBinding deletes sent",
            grant_deletes.clone(),
        );
        let events = Counter::default();
        registry.register("ims_events", "Kubernetes Events published", events.clone());
        let write_errors = Family::<WriteErrorLabels, Counter>::default();
        registry.register(
            "ims_write_errors",
            "Failed writes by kind (status, grant, prune, event, lease) and reason",
            write_errors.clone(),
        );
        let unreadable = Family::<KindLabel, Gauge>::default();
        registry.register(
            "ims_unreadable_objects",
            "Objects the API server holds that the operator cannot decode, by kind",
            unreadable.clone(),
        );
        let watch_restarts = Family::<KindLabel, Counter>::default();
        registry.register(
            "ims_watch_restarts",
            "Watch errors after which the watch restarts, by kind",
            watch_restarts.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "ims_leader",
            "1 while this replica holds the lease or runs without leader election",
            leader.clone(),
        );
        Metrics {
            registry,
            pairs,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            status_patches,
            grant_applies,
            grant_deletes,
            events,
            write_errors,
            unreadable,
            watch_restarts,
            leader,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub fn reconcile_failed(&self, reason: &str) {
        self.reconciles.inc();
        self.reconcile_errors
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn status_patched(&self) {
        self.status_patches.inc();
    }

    pub fn grant_applied(&self) {
        self.grant_applies.inc();
    }

    pub fn grant_deleted(&self) {
        self.grant_deletes.inc();
    }

    pub fn event_published(&self) {
        self.events.inc();
    }

    /// `reason` should come from `error_reason` (or another bounded set).
    pub fn write_failed(&self, kind: WriteKind, reason: &str) {
        self.write_errors
            .get_or_create(&WriteErrorLabels {
                kind: kind.as_str(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn set_unreadable(&self, kind: &'static str, count: usize) {
        self.unreadable
            .get_or_create(&KindLabel { kind })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn watch_error(&self, kind: &'static str) {
        self.watch_restarts.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn status_patches(&self) -> u64 {
        self.status_patches.get()
    }

    pub fn write_errors(&self, kind: WriteKind, reason: &str) -> u64 {
        // `get`, not `get_or_create`: reading must not add a zero series to the output.
        self.write_errors
            .get(&WriteErrorLabels {
                kind: kind.as_str(),
                reason: reason.to_string(),
            })
            .map_or(0, |c| c.get())
    }

    /// The exposition text (`CONTENT_TYPE`), with `pairs` as the current pair counts by state.
    pub fn encode(&self, pairs: &BTreeMap<&'static str, usize>) -> String {
        for (&state, &n) in pairs {
            self.pairs
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            ..Default::default()
        }))
    }

    #[test]
    fn error_reasons_are_bounded() {
        for (code, reason) in [
            (403, "Forbidden"),
            (404, "NotFound"),
            (409, "Conflict"),
            (422, "Invalid"),
            (429, "TooManyRequests"),
            (500, "ServerError"),
            (503, "ServerError"),
            (400, "OtherApi"),
            (410, "OtherApi"),
        ] {
            assert_eq!(error_reason(&api_error(code)), reason, "{code}");
        }
        let transport = kube::Error::LinesCodecMaxLineLengthExceeded;
        assert_eq!(error_reason(&transport), "Transport");
    }

    #[test]
    fn reading_write_errors_adds_no_series() {
        let m = Metrics::default();
        assert_eq!(m.write_errors(WriteKind::Grant, "Forbidden"), 0);
        assert!(!m.encode(&BTreeMap::new()).contains("ims_write_errors_total{"));
    }
}
