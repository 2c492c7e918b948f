//! Leader election with a coordination.k8s.io Lease, so that of several replicas exactly one
//! writes, with client-go's timing: a lease not renewed for `LEASE_DURATION` may be taken by
//! another replica; the holder retries every `RETRY_PERIOD` and steps down when it has not
//! renewed within `RENEW_DEADLINE`.
//!
//! Writes are fenced by time: a [`Fence`] lets a write through only while this replica holds a
//! lease that is unexpired by its own clock (the last successful renewal plus the renew
//! deadline), and cancels writes in flight when that moment passes. Another replica takes over
//! no earlier than `LEASE_DURATION` after it saw the last renewal, so two replicas never write
//! in the same period.

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::{sync::watch, time::Instant};
use tracing::{info, warn};

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// The lease was lost (or given up): nothing more may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not the leader: the write was not sent")]
pub struct Fenced;

/// Lets writes through only while this replica may write.
#[derive(Clone, Debug)]
pub struct Fence(Option<watch::Receiver<Option<Instant>>>);

impl Fence {
    /// Without leader election: every write goes through.
    pub fn open() -> Self {
        Fence(None)
    }

    /// Whether a write may start now.
    pub fn is_open(&self) -> bool {
        match &self.0 {
            None => true,
            Some(rx) => rx.borrow().is_some_and(|until| Instant::now() < until),
        }
    }

    /// Runs a write while the lease holds; cancels it (dropping the request) the moment the
    /// lease is lost or its renew deadline passes.
    pub async fn guard<F: Future>(&self, write: F) -> Result<F::Output, Fenced> {
        let Some(rx) = &self.0 else {
            return Ok(write.await);
        };
        let mut rx = rx.clone();
        let mut write = std::pin::pin!(write);
        loop {
            let Some(until) = *rx.borrow_and_update() else {
                return Err(Fenced);
            };
            if Instant::now() >= until {
                return Err(Fenced);
            }
            tokio::select! {
                out = &mut write => return Ok(out),
                _ = tokio::time::sleep_until(until) => {}
                changed = rx.changed() => if changed.is_err() { return Err(Fenced) },
            }
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The other holder's record as last read, and when this replica saw it change: expiry is
    /// judged by the local clock from then (like client-go), not by comparing the holder's
    /// `renewTime` with a clock on another node.
    observed: std::sync::Mutex<Option<(String, Instant)>>,
    /// Until when this replica may write; `None` while it does not hold the lease.
    valid_until: watch::Sender<Option<Instant>>,
    /// Where failed lease writes are counted.
    metrics: Option<std::sync::Arc<super::State>>,
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            observed: std::sync::Mutex::new(None),
            valid_until: watch::Sender::new(None),
            metrics: None,
        }
    }

    /// Counts failed lease requests in `ims_write_errors_total{kind="lease"}`.
    pub fn with_metrics(mut self, state: std::sync::Arc<super::State>) -> Self {
        self.metrics = Some(state);
        self
    }

    fn failed(&self, e: &kube::Error) {
        if let Some(state) = &self.metrics {
            state
                .metrics
                .write_failed(super::metrics::WriteKind::Lease, super::metrics::error_reason(e));
        }
    }

    /// The fence of this replica's writes.
    pub fn fence(&self) -> Fence {
        Fence(Some(self.valid_until.subscribe()))
    }

    /// Stops every write at once (before giving the lease up, or after losing it).
    pub fn revoke(&self) {
        self.valid_until.send_replace(None);
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            let attempt = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    self.valid_until.send_replace(Some(attempt + RENEW_DEADLINE));
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    self.failed(&e);
                    warn!(error = %e, "leader election failed; retrying");
                }
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Renews every `RETRY_PERIOD` until the lease is lost or was not renewed within
    /// `RENEW_DEADLINE`; failed attempts in between are retried. Returns when leadership ends,
    /// with the fence already closed.
    pub async fn hold(&self) {
        loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            let Some(until) = *self.valid_until.borrow() else {
                return;
            };
            let attempt = Instant::now();
            // An attempt that hangs must not outlive the renew deadline.
            match tokio::time::timeout_at(until, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) if Instant::now() < until => {
                    self.valid_until.send_replace(Some(attempt + RENEW_DEADLINE));
                    continue;
                }
                // Renewed, but only after the fence had closed: writes in between were refused,
                // so this term ends and the next one starts from a fresh cache.
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    warn!(lease = %self.name, "lost the lease to another replica");
                    self.revoke();
                    return;
                }
                Ok(Err(e)) => {
                    self.failed(&e);
                    warn!(error = %e, "could not renew the lease; retrying");
                }
                Err(_) => {}
            }
            if Instant::now() >= until {
                warn!(lease = %self.name, "could not renew the lease within the renew deadline; stepping down");
                self.revoke();
                return;
            }
        }
    }

    /// Gives the lease up on shutdown, so a standby takes over at once instead of after
    /// `LEASE_DURATION`. Writes are fenced off first.
    pub async fn release(&self) {
        self.revoke();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => info!(lease = %self.name, "released the lease"),
            Err(e) => warn!(error = %e, "could not release the lease; it expires by itself"),
        }
    }

    /// Takes or renews the lease when free, expired or ours. Conflicts mean another replica won.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let duration_secs = LEASE_DURATION.as_secs() as i32;
        let existing = match self.api.get_opt(&self.name).await? {
            Some(lease) => lease,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(duration_secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let spec = existing.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = match (&spec.holder_identity, &spec.renew_time, spec.lease_duration_seconds) {
            (None, _, _) => true, // released
            (Some(holder), renewed, secs) if !ours => {
                let record = format!("{holder}/{:?}/{:?}", renewed.as_ref().map(|t| t.0), secs);
                let duration = secs.map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(0) as u64));
                let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
                match &*observed {
                    Some((seen, since)) if *seen == record => since.elapsed() > duration,
                    _ => {
                        *observed = Some((record, Instant::now()));
                        false
                    }
                }
            }
            _ => false,
        };
        if !ours && !expired {
            return Ok(false);
        }
        let mut lease = existing;
        let mut new_spec = spec.clone();
        if !ours {
            new_spec.holder_identity = Some(self.identity.clone());
            new_spec.acquire_time = Some(MicroTime(now));
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.renew_time = Some(MicroTime(now));
        new_spec.lease_duration_seconds = Some(duration_secs);
        lease.spec = Some(new_spec);
        // replace carries the resourceVersion we read: a concurrent writer makes it fail.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
