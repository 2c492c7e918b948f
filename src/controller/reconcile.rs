//! One reconcile of one tenant namespace: evaluate it with the pure engine, write what differs,
//! publish the events; and the retry policy when a write was refused.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{api::core::v1::Namespace, jiff::Timestamp};
use kube::{
    Client, ResourceExt,
    runtime::{
        controller::Action,
        events::{Recorder, Reporter},
    },
};
use tracing::{info, warn};

use super::{
    CONTROLLER_NAME, State,
    cache::Cache,
    events::{NamespaceWarnings, UnreadableReports, publish, write_failure_event},
    leader::Fence,
    writer,
};
use crate::core::{AccessReason, Action as EventAction, EventSpec, EventType, Kind, Regarding};

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub cache: Arc<Cache>,
    pub recorder: Recorder,
    pub state: Arc<State>,
    /// Lets writes through only while this replica may write.
    pub fence: Fence,
    pub(crate) warnings: NamespaceWarnings,
    pub(crate) unreadable_reports: UnreadableReports,
    /// Consecutive failures per namespace, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The next share expiry of a namespace whose reconcile failed: a retry backing off must
    /// not keep an expired share's access past its `expiresAt`.
    expiries: Mutex<HashMap<String, Timestamp>>,
}

impl Context {
    pub fn new(client: Client, cache: Arc<Cache>, state: Arc<State>, fence: Fence, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            cache,
            state,
            fence,
            warnings: NamespaceWarnings::default(),
            unreadable_reports: UnreadableReports::default(),
            failures: Mutex::default(),
            expiries: Mutex::default(),
        }
    }

    /// Publishes one event unless its namespace is leaving (nothing is written into it).
    pub async fn publish(&self, e: &EventSpec) {
        if e.regarding
            .namespace
            .as_deref()
            .is_some_and(|ns| self.cache.is_leaving(ns))
        {
            return;
        }
        publish(&self.recorder, &self.state.metrics, &self.fence, e).await;
    }
}

/// A reconcile that could not finish; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{failed} write(s) refused; first: {first}")]
    Writes {
        failed: usize,
        first: String,
        reason: &'static str,
    },
}

impl Error {
    /// A bounded label for the error metric.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Writes { reason, .. } => reason,
        }
    }
}

/// Reconciles one tenant namespace.
pub async fn reconcile(namespace: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = namespace.name_any();
    if !ctx.fence.is_open() {
        // Not (or no longer) the leader: another replica writes.
        return Ok(Action::await_change());
    }
    if !ctx.cache.is_synced() {
        // Deciding on a partial cache could revoke grants that exist; wait for the lists.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if namespace.metadata.deletion_timestamp.is_some() || ctx.cache.is_leaving(&ns) {
        // A tenant that is leaving: its pairs are no longer offered (its partners' reconciles
        // say so), and nothing is written into it, so deleting it is not slowed down.
        return Ok(Action::await_change());
    }
    if ctx.cache.awaiting_writes(&ns) {
        // Our last status writes are not in the cache yet: deciding now would repeat them.
        tracing::debug!(namespace = %ns, "waiting for the watch to bring back our status writes");
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let started = Instant::now();
    let now = Timestamp::now();
    let (outcome, existing, next_expiry) = ctx.cache.evaluate(&ns, now);
    let skip_status = |kind: &'static str, name: &str| ctx.cache.is_unreadable(kind, &ns, name);
    let report = writer::write_outcome(
        &ctx.client,
        &outcome,
        &existing,
        &ctx.state.metrics,
        &ctx.fence,
        &skip_status,
    )
    .await;
    ctx.cache.expect_writes(&ns, report.written.clone());
    if report.fenced {
        return Ok(Action::await_change());
    }

    // A grant that could not be placed is reported on its image (condition and Event); the
    // image's status is then written again by a reconcile that sees the fault.
    let mut faults_changed = false;
    let mut events = ctx.warnings.fresh(&ns, outcome.events);
    let desired: BTreeSet<String> = report.grant_faults.iter().map(|(image, _)| image.clone()).collect();
    faults_changed |= ctx.cache.clear_grant_faults_except(&ns, &desired);
    for (image, fault) in &report.grant_faults {
        if !ctx.cache.set_grant_fault(&ns, image, fault.clone()) {
            continue;
        }
        faults_changed = true;
        if let Some(fault) = fault.as_ref().filter(|f| f.reason == AccessReason::GrantNameTaken) {
            let regarding = Regarding {
                kind: Kind::PrivateImage,
                namespace: Some(ns.as_str().into()),
                name: image.as_str().into(),
                uid: None,
            };
            events.push(EventSpec::new(
                &regarding,
                EventType::Warning,
                fault.reason.as_str(),
                EventAction::Grant,
                fault.message.clone(),
            ));
        }
    }
    events.extend(report.failures.iter().map(write_failure_event));
    if ctx.cache.is_leaving(&ns) {
        // The namespace began to be deleted while this reconcile ran: the API server refuses
        // new objects in it, and its Events would go with it anyway.
        events.clear();
    }
    // Events are independent of each other and of the order they are read in: a few go out at
    // once, so a tenant with many transitions (a cold start) is not held up by their round
    // trips.
    futures::stream::iter(&events)
        .for_each_concurrent(EVENTS_IN_FLIGHT, |e| ctx.publish(e))
        .await;
    ctx.state.metrics.reconciled(started.elapsed());
    let stats = report.stats;
    if stats != writer::WriteStats::default() {
        info!(namespace = %ns, status_patches = stats.status_patches, grant_applies = stats.grant_applies,
              grant_deletes = stats.grant_deletes, refused = report.failures.len(), "reconciled");
    }
    if let Some(first) = report.failures.first() {
        let mut expiries = ctx.expiries.lock().unwrap_or_else(|p| p.into_inner());
        match next_expiry {
            Some(at) => expiries.insert(ns.clone(), at),
            None => expiries.remove(&ns),
        };
        return Err(Error::Writes {
            failed: report.failures.len(),
            first: first.message.clone(),
            reason: first.reason,
        });
    }
    ctx.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&ns);
    ctx.expiries.lock().unwrap_or_else(|p| p.into_inner()).remove(&ns);
    if faults_changed {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    Ok(match next_expiry {
        // Requeue just after the next share expires, so access ends on time.
        Some(at) => {
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default() + Duration::from_millis(500);
            Action::requeue(wait)
        }
        None => Action::await_change(),
    })
}

/// Events of one reconcile published at the same time.
const EVENTS_IN_FLIGHT: usize = 8;

/// The longest wait between retries of one namespace.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Exponential backoff with jitter for the `failures`-th consecutive failure: 1 s, 2 s, 4 s …
/// up to 5 minutes, each wait drawn from its upper half (`unit` in [0, 1)), so namespaces that
/// failed together do not retry together.
pub fn backoff_with(failures: u32, unit: f64) -> Duration {
    let ceiling = Duration::from_secs(1u64 << failures.min(9)).min(MAX_BACKOFF);
    ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// [`backoff_with`] with a random draw.
pub fn backoff(failures: u32) -> Duration {
    backoff_with(failures, fastrand::f64())
}

pub fn error_policy(namespace: Arc<Namespace>, err: &Error, ctx: Arc<Context>) -> Action {
    let ns = namespace.name_any();
    ctx.state.metrics.reconcile_failed(err.metric_reason());
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let n = failures.entry(ns.clone()).or_default();
    let mut wait = backoff(*n);
    *n = n.saturating_add(1);
    if let Some(at) = ctx.expiries.lock().unwrap_or_else(|p| p.into_inner()).get(&ns) {
        let until = Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default();
        wait = wait.min(until + Duration::from_millis(500));
    }
    warn!(namespace = %ns, error = %err, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_reaches_the_cap() {
        assert_eq!(backoff_with(0, 0.0), Duration::from_millis(500));
        assert_eq!(backoff_with(0, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_with(3, 1.0), Duration::from_secs(8));
        assert_eq!(backoff_with(3, 0.0), Duration::from_secs(4));
        assert_eq!(backoff_with(9, 1.0), MAX_BACKOFF);
        assert_eq!(backoff_with(u32::MAX, 1.0), MAX_BACKOFF);
        assert_eq!(backoff_with(u32::MAX, 0.0), MAX_BACKOFF / 2);
    }
}
