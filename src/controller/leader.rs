//! Leader election with a coordination.k8s.io Lease, so that of several replicas exactly one
//! writes. The holder renews every `RENEW`; a lease not renewed for `DURATION` may be taken.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tracing::{info, warn};

pub const DURATION: Duration = Duration::from_secs(15);
pub const RENEW: Duration = Duration::from_secs(5);

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The other holder's record as last read, and when this replica saw it change: expiry is
    /// judged by the local clock from then (like client-go), not by comparing the holder's
    /// `renewTime` with a clock on another node.
    observed: std::sync::Mutex<Option<(String, tokio::time::Instant)>>,
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            observed: std::sync::Mutex::new(None),
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election failed; retrying"),
            }
            tokio::time::sleep(RENEW).await;
        }
    }

    /// Renews until the lease is lost or can not be renewed in time; then returns.
    pub async fn hold(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW).await;
            // A renewal that hangs must not outlive the lease: another replica may take it
            // once DURATION has passed, so give up before that.
            let deadline = (DURATION - RENEW).saturating_sub(last_renewal.elapsed());
            match tokio::time::timeout(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => last_renewal = tokio::time::Instant::now(),
                Ok(Ok(false)) => {
                    warn!(lease = %self.name, "lost the lease to another replica");
                    return;
                }
                Ok(Err(e)) => warn!(error = %e, "could not renew the lease"),
                Err(_) => warn!("renewing the lease timed out"),
            }
            if last_renewal.elapsed() >= DURATION - RENEW {
                warn!(lease = %self.name, "could not renew the lease in time; stepping down");
                return;
            }
        }
    }

    /// Gives the lease up on shutdown, so a standby takes over at once instead of after
    /// `DURATION`.
    pub async fn release(&self) {
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
        let duration_secs = DURATION.as_secs() as i32;
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
                let duration = secs.map_or(DURATION, |s| Duration::from_secs(s.max(0) as u64));
                let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
                match &*observed {
                    Some((seen, since)) if *seen == record => since.elapsed() > duration,
                    _ => {
                        *observed = Some((record, tokio::time::Instant::now()));
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
