//! Writes a [`TenantOutcome`]: statuses by server-side apply on `/status`, grants by
//! server-side apply, stale grants deleted. Nothing is sent for what is already as desired.
//!
//! Every write stands alone: one that the API server refuses (an admission policy, a quota, a
//! conflict) is counted and reported, and the others are still sent. Only losing the leader
//! lease stops the pass, since then no write may be sent at all.

use std::{collections::BTreeSet, sync::Arc};

use k8s_openapi::{
    api::rbac::v1::{Role, RoleBinding},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use serde::Serialize;
use serde_json::json;

use super::{
    leader::{Fence, Fenced},
    metrics::{Metrics, WriteKind, error_reason},
};
use crate::{
    api::{IMAGE_QUOTA_NAME, ImageOffer, ImageOfferStatus, ImageQuota, ImageShare, PrivateImage, ShareAcceptance},
    core::{
        AccessReason, Grant, GrantFault, Kind, QuotaUpdate, Regarding, TenantOutcome,
        grants::{MANAGED_BY, MANAGED_BY_LABEL, grant_name, made_by_operator, made_for_image},
    },
};

use super::cache::ExistingGrants;

/// Field manager of the status writer.
pub const STATUS_MANAGER: &str = "ims-operator-status";
/// Field manager of the grant writer.
pub const GRANT_MANAGER: &str = "ims-operator-grants";
/// Field manager of the ImageQuota writer.
pub const QUOTA_MANAGER: &str = "ims-operator-quota";
/// Field manager of the ImageOffer writer.
pub const OFFER_MANAGER: &str = "ims-operator-offers";

/// What one write pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub status_patches: usize,
    pub grant_applies: usize,
    pub grant_deletes: usize,
}

/// A write the API server refused.
#[derive(Clone, Debug)]
pub struct WriteFailure {
    pub kind: WriteKind,
    /// The object the failure is reported on.
    pub regarding: Regarding,
    /// A bounded reason (see [`error_reason`]).
    pub reason: &'static str,
    pub message: String,
}

/// The outcome of one write pass.
#[derive(Debug, Default)]
pub struct WriteReport {
    pub stats: WriteStats,
    pub failures: Vec<WriteFailure>,
    /// resourceVersions the status writes produced, to wait for their echo.
    pub written: Vec<String>,
    /// Per image with a desired grant: why it is not in place, or `None` when it is.
    pub grant_faults: Vec<(String, Option<GrantFault>)>,
    /// The lease was lost during the pass: the writes after that point were not sent.
    pub fenced: bool,
}

/// Which statuses to leave alone (objects whose current version does not decode).
pub type SkipStatus<'a> = &'a (dyn Fn(&'static str, &str) -> bool + Sync);

/// Writes everything the outcome asks for.
pub async fn write_outcome(
    client: &Client,
    outcome: &TenantOutcome,
    existing: &ExistingGrants,
    metrics: &Metrics,
    fence: &Fence,
    skip_status: SkipStatus<'_>,
) -> WriteReport {
    let mut report = WriteReport::default();
    let writer = Writer {
        client,
        ns: &outcome.namespace,
        metrics,
        fence,
    };
    if writer
        .write_all(outcome, existing, skip_status, &mut report)
        .await
        .is_err()
    {
        report.fenced = true;
    }
    report
}

struct Writer<'a> {
    client: &'a Client,
    ns: &'a str,
    metrics: &'a Metrics,
    fence: &'a Fence,
}

impl Writer<'_> {
    async fn write_all(
        &self,
        outcome: &TenantOutcome,
        existing: &ExistingGrants,
        skip_status: SkipStatus<'_>,
        report: &mut WriteReport,
    ) -> Result<(), Fenced> {
        // Revocations first: a RoleBinding that must go is deleted before anything else.
        self.prune(outcome, existing, report).await?;
        for grant in outcome.grants.iter() {
            let fault = self.apply_grant(grant, existing, report).await?;
            report.grant_faults.push((grant.image.clone(), fault));
        }
        for u in outcome.images.iter().filter(|u| u.changed) {
            if !skip_status("PrivateImage", &u.name) {
                self.patch_status::<PrivateImage, _>(&u.name, &u.status, report).await?;
            }
        }
        for u in outcome.shares.iter().filter(|u| u.changed) {
            if !skip_status("ImageShare", &u.name) {
                self.patch_status::<ImageShare, _>(&u.name, &u.status, report).await?;
            }
        }
        for u in outcome.acceptances.iter().filter(|u| u.changed) {
            if !skip_status("ShareAcceptance", &u.name) {
                self.patch_status::<ShareAcceptance, _>(&u.name, &u.status, report)
                    .await?;
            }
        }
        for u in outcome.offers.iter().filter(|u| u.changed) {
            self.apply_offer(&u.name, &u.status, report).await?;
        }
        for owner in &outcome.withdrawn_offers {
            self.delete_owned::<ImageOffer>(owner, WriteKind::Offer, report).await?;
        }
        match &outcome.quota {
            QuotaUpdate::Unchanged => {}
            QuotaUpdate::Apply { create, status } => {
                if !*create || self.create_quota(report).await? {
                    self.patch_status::<ImageQuota, _>(IMAGE_QUOTA_NAME, status, report)
                        .await?;
                }
            }
            QuotaUpdate::Delete => {
                self.delete_owned::<ImageQuota>(IMAGE_QUOTA_NAME, WriteKind::Quota, report)
                    .await?;
            }
        }
        Ok(())
    }

    /// Deletes one of the objects the operator keeps for tenants (an ImageOffer or ImageQuota
    /// no longer needed); one already gone needs nothing.
    async fn delete_owned<K>(&self, name: &str, kind: WriteKind, report: &mut WriteReport) -> Result<(), Fenced>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.ns);
        match self.fence.guard(api.delete(name, &DeleteParams::background())).await? {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                let regarding = self.regarding::<K>(name);
                self.fail(report, kind, regarding, format!("deleting {} {name}", K::kind(&())), &e);
            }
        }
        Ok(())
    }

    /// Writes the ImageOffer of `owner` whole, in one server-side apply (the kind has no status
    /// subresource: only the operator writes it).
    async fn apply_offer(
        &self,
        owner: &str,
        status: &ImageOfferStatus,
        report: &mut WriteReport,
    ) -> Result<(), Fenced> {
        let api: Api<ImageOffer> = Api::namespaced(self.client.clone(), self.ns);
        let mut offer = ImageOffer::of(self.ns, owner, status.clone());
        offer
            .metadata
            .labels
            .get_or_insert_default()
            .insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        offer.metadata.namespace = None;
        let params = PatchParams::apply(OFFER_MANAGER).force();
        match self
            .fence
            .guard(api.patch(owner, &params, &Patch::Apply(&offer)))
            .await?
        {
            Ok(written) => {
                self.metrics.status_patched();
                report.stats.status_patches += 1;
                report.written.extend(written.metadata.resource_version);
            }
            Err(e) => {
                let regarding = self.regarding::<ImageOffer>(owner);
                self.fail(
                    report,
                    WriteKind::Offer,
                    regarding,
                    format!("writing ImageOffer {owner}"),
                    &e,
                );
            }
        }
        Ok(())
    }

    /// Creates the namespace's ImageQuota (its status is written next). Returns whether it
    /// exists now.
    async fn create_quota(&self, report: &mut WriteReport) -> Result<bool, Fenced> {
        let api: Api<ImageQuota> = Api::namespaced(self.client.clone(), self.ns);
        let body = json!({
            "apiVersion": ImageQuota::api_version(&()),
            "kind": ImageQuota::kind(&()),
            "metadata": {
                "name": IMAGE_QUOTA_NAME,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            },
            "spec": {},
        });
        let params = PatchParams::apply(QUOTA_MANAGER).force();
        match self
            .fence
            .guard(api.patch(IMAGE_QUOTA_NAME, &params, &Patch::Apply(body)))
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let regarding = self.regarding::<ImageQuota>(IMAGE_QUOTA_NAME);
                self.fail(
                    report,
                    WriteKind::Quota,
                    regarding,
                    "creating ImageQuota ims".into(),
                    &e,
                );
                Ok(false)
            }
        }
    }

    fn fail(&self, report: &mut WriteReport, kind: WriteKind, regarding: Regarding, what: String, e: &kube::Error) {
        let reason = error_reason(e);
        self.metrics.write_failed(kind, reason);
        tracing::warn!(namespace = %self.ns, %what, error = %e, "write refused");
        report.failures.push(WriteFailure {
            kind,
            regarding,
            reason,
            message: format!("{what}: {}", describe(e)),
        });
    }

    /// An object of this namespace, to report a failure on.
    fn regarding<K: Resource<DynamicType = ()>>(&self, name: &str) -> Regarding {
        Regarding {
            kind: kind_of::<K>(),
            namespace: Some(self.ns.into()),
            name: name.into(),
            uid: None,
        }
    }

    /// Server-side applies a status. An object deleted in the meantime needs none.
    async fn patch_status<K, S>(&self, name: &str, status: &S, report: &mut WriteReport) -> Result<(), Fenced>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        S: Serialize,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.ns);
        let body = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        let params = PatchParams::apply(STATUS_MANAGER).force();
        match self
            .fence
            .guard(api.patch_status(name, &params, &Patch::Apply(body)))
            .await?
        {
            Ok(patched) => {
                self.metrics.status_patched();
                report.stats.status_patches += 1;
                report.written.extend(patched.meta().resource_version.clone());
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                let regarding = self.regarding::<K>(name);
                self.fail(
                    report,
                    WriteKind::Status,
                    regarding,
                    format!("writing the status of {name}"),
                    &e,
                );
            }
        }
        Ok(())
    }

    /// Applies one image's Role and RoleBinding unless they are in place, or a Role or
    /// RoleBinding of that name exists that the operator did not make.
    async fn apply_grant(
        &self,
        grant: &Grant,
        existing: &ExistingGrants,
        report: &mut WriteReport,
    ) -> Result<Option<GrantFault>, Fenced> {
        let name = grant_name(&grant.image);
        let regarding = Regarding {
            kind: Kind::PrivateImage,
            namespace: Some(self.ns.into()),
            name: grant.image.as_str().into(),
            uid: grant.image_uid().map(Arc::from),
        };
        let roles: Api<Role> = Api::namespaced(self.client.clone(), self.ns);
        let bindings: Api<RoleBinding> = Api::namespaced(self.client.clone(), self.ns);
        // The Role before the RoleBinding: a binding to a Role that someone else made would
        // hand out whatever that Role allows.
        let role = existing.roles.get(&name).map(|r| Role::clone(r));
        match self
            .place(
                &roles,
                &name,
                role,
                &grant.role(),
                &grant.image,
                role_matches,
                report,
                &regarding,
            )
            .await?
        {
            Placed::Ok => {}
            Placed::Fault(fault) => {
                // Someone else's Role of that name: a RoleBinding of ours to it would hand out
                // whatever that Role allows, so ours goes.
                if fault.reason == AccessReason::GrantNameTaken
                    && let Some(ours) = existing
                        .bindings
                        .get(&name)
                        .filter(|b| made_for_image(&b.metadata, &grant.image))
                {
                    self.delete(&bindings, &name, ours.metadata.uid.as_deref(), report)
                        .await?;
                }
                return Ok(Some(fault));
            }
        }
        let binding = existing.bindings.get(&name).map(|b| RoleBinding::clone(b));
        match self
            .place(
                &bindings,
                &name,
                binding,
                &grant.binding(),
                &grant.image,
                binding_matches,
                report,
                &regarding,
            )
            .await?
        {
            Placed::Ok => Ok(None),
            Placed::Fault(f) => Ok(Some(f)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn place<K>(
        &self,
        api: &Api<K>,
        name: &str,
        cached: Option<K>,
        desired: &K,
        image: &str,
        matches: fn(&K, &K) -> bool,
        report: &mut WriteReport,
        regarding: &Regarding,
    ) -> Result<Placed, Fenced>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let kind = K::kind(&()).to_string();
        // The watches see only labelled grants; a name they do not know may still be taken.
        let current = match cached {
            Some(c) => Some(c),
            None => match self.fence.guard(api.get_opt(name)).await? {
                Ok(found) => found,
                Err(e) => {
                    self.fail(
                        report,
                        WriteKind::Grant,
                        regarding.clone(),
                        format!("reading {kind} {name}"),
                        &e,
                    );
                    return Ok(Placed::Fault(write_fault(&kind, name, &e)));
                }
            },
        };
        if let Some(current) = &current {
            if !made_for_image(current.meta(), image) {
                let fault = GrantFault {
                    reason: AccessReason::GrantNameTaken,
                    message: format!(
                        "{kind} {name} exists and was not made by the operator; it is left as it is, so the accepted recipients can not use the image until it is renamed or deleted"
                    ),
                };
                return Ok(Placed::Fault(fault));
            }
            if matches(current, desired) {
                return Ok(Placed::Ok);
            }
        }
        let params = PatchParams::apply(GRANT_MANAGER).force();
        match self
            .fence
            .guard(api.patch(name, &params, &Patch::Apply(desired)))
            .await?
        {
            Ok(_) => {
                self.metrics.grant_applied();
                report.stats.grant_applies += 1;
                Ok(Placed::Ok)
            }
            Err(e) => {
                self.fail(
                    report,
                    WriteKind::Grant,
                    regarding.clone(),
                    format!("applying {kind} {name}"),
                    &e,
                );
                Ok(Placed::Fault(write_fault(&kind, name, &e)))
            }
        }
    }

    /// Deletes the operator's grants that are no longer desired: RoleBindings first, so access
    /// ends before anything else happens. Only objects the operator made are deleted.
    async fn prune(
        &self,
        outcome: &TenantOutcome,
        existing: &ExistingGrants,
        report: &mut WriteReport,
    ) -> Result<(), Fenced> {
        let wanted: BTreeSet<String> = outcome.grants.iter().map(|g| grant_name(&g.image)).collect();
        let bindings: Api<RoleBinding> = Api::namespaced(self.client.clone(), self.ns);
        for (name, binding) in &existing.bindings {
            if !wanted.contains(name) && made_by_operator(&binding.metadata) {
                self.delete(&bindings, name, binding.metadata.uid.as_deref(), report)
                    .await?;
            }
        }
        let roles: Api<Role> = Api::namespaced(self.client.clone(), self.ns);
        for (name, role) in &existing.roles {
            if !wanted.contains(name) && made_by_operator(&role.metadata) {
                self.delete(&roles, name, role.metadata.uid.as_deref(), report).await?;
            }
        }
        Ok(())
    }

    /// Deletes one of the operator's grant objects; `uid` (of the cached object) makes sure it
    /// is the object the operator made, not one that replaced it since.
    async fn delete<K>(
        &self,
        api: &Api<K>,
        name: &str,
        uid: Option<&str>,
        report: &mut WriteReport,
    ) -> Result<(), Fenced>
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let mut params = DeleteParams::background();
        params.preconditions = uid.map(|uid| Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        });
        match self.fence.guard(api.delete(name, &params)).await? {
            Ok(_) => {
                self.metrics.grant_deleted();
                report.stats.grant_deletes += 1;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                let regarding = self.regarding::<K>(name);
                self.fail(
                    report,
                    WriteKind::Prune,
                    regarding,
                    format!("deleting {} {name}", K::kind(&())),
                    &e,
                );
            }
        }
        Ok(())
    }
}

enum Placed {
    Ok,
    Fault(GrantFault),
}

fn write_fault(kind: &str, name: &str, e: &kube::Error) -> GrantFault {
    GrantFault {
        reason: AccessReason::GrantWriteFailed,
        message: format!("writing {kind} {name} failed: {}", describe(e)),
    }
}

fn kind_of<K: Resource<DynamicType = ()>>() -> Kind {
    Kind::named(&K::kind(&())).expect("the operator writes only kinds of its vocabulary")
}

/// The API server's own words where it gave some.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether a stored grant object already carries what we would apply.
fn role_matches(existing: &Role, desired: &Role) -> bool {
    existing.rules == desired.rules && metadata_matches(&existing.metadata, &desired.metadata)
}

fn binding_matches(existing: &RoleBinding, desired: &RoleBinding) -> bool {
    existing.subjects == desired.subjects
        && existing.role_ref == desired.role_ref
        && metadata_matches(&existing.metadata, &desired.metadata)
}

fn metadata_matches(existing: &ObjectMeta, desired: &ObjectMeta) -> bool {
    let labels_ok = desired
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| existing.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
    labels_ok && existing.owner_references == desired.owner_references
}
