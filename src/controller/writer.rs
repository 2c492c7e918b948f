//! Writes a [`TenantOutcome`]: statuses by server-side apply on `/status`, grants by
//! server-side apply, stale grants deleted. Nothing is sent for what is already as desired.

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch, PatchParams},
};
use serde::Serialize;
use serde_json::json;

use crate::{
    api::{ImageShare, PrivateImage, ShareAcceptance},
    core::{Grant, TenantOutcome, grants::MANAGED_BY_LABEL},
};

use super::cache::ExistingGrants;

/// Field manager of the status writer.
pub const STATUS_MANAGER: &str = "ims-operator-status";
/// Field manager of the grant writer.
pub const GRANT_MANAGER: &str = "ims-operator-grants";

/// What one write pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub status_patches: usize,
    pub grant_applies: usize,
    pub grant_deletes: usize,
}

/// Writes everything the outcome asks for.
pub async fn write_outcome(
    client: &Client,
    outcome: &TenantOutcome,
    existing: &ExistingGrants,
) -> Result<WriteStats, kube::Error> {
    write_outcome_tracked(client, outcome, existing, &mut Vec::new()).await
}

/// [`write_outcome`], also collecting the resourceVersions the status writes produced, so that
/// the caller can wait until its cache has seen them.
pub async fn write_outcome_tracked(
    client: &Client,
    outcome: &TenantOutcome,
    existing: &ExistingGrants,
    written: &mut Vec<String>,
) -> Result<WriteStats, kube::Error> {
    let ns = &outcome.namespace;
    let mut stats = WriteStats::default();
    // Revocations first: a RoleBinding that must go is deleted before anything else is written.
    stats.grant_deletes += prune(client, ns, outcome, existing).await?;
    for grant in outcome.grants.iter() {
        stats.grant_applies += apply_grant(client, ns, grant, existing).await?;
    }
    for u in outcome.images.iter().filter(|u| u.changed) {
        stats.status_patches += patch_status::<PrivateImage, _>(client, ns, &u.name, &u.status, written).await?;
    }
    for u in outcome.shares.iter().filter(|u| u.changed) {
        stats.status_patches += patch_status::<ImageShare, _>(client, ns, &u.name, &u.status, written).await?;
    }
    for u in outcome.acceptances.iter().filter(|u| u.changed) {
        stats.status_patches += patch_status::<ShareAcceptance, _>(client, ns, &u.name, &u.status, written).await?;
    }
    Ok(stats)
}

/// Server-side applies a status. An object deleted in the meantime needs none.
async fn patch_status<K, S>(
    client: &Client,
    ns: &str,
    name: &str,
    status: &S,
    written: &mut Vec<String>,
) -> Result<usize, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    match api
        .patch_status(name, &PatchParams::apply(STATUS_MANAGER).force(), &Patch::Apply(body))
        .await
    {
        Ok(patched) => {
            written.extend(patched.meta().resource_version.clone());
            Ok(1)
        }
        Err(e) if is_not_found(&e) => Ok(0),
        Err(e) => Err(e),
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

fn metadata_matches(
    existing: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    desired: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    let labels_ok = desired
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| existing.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
    labels_ok && existing.owner_references == desired.owner_references
}

async fn apply_grant(
    client: &Client,
    ns: &str,
    grant: &Grant,
    existing: &ExistingGrants,
) -> Result<usize, kube::Error> {
    let name = grant.role.metadata.name.clone().unwrap_or_default();
    let params = PatchParams::apply(GRANT_MANAGER).force();
    let mut writes = 0;
    if !existing.roles.get(&name).is_some_and(|r| role_matches(r, &grant.role)) {
        let api: Api<Role> = Api::namespaced(client.clone(), ns);
        api.patch(&name, &params, &Patch::Apply(&grant.role)).await?;
        writes += 1;
    }
    if !existing
        .bindings
        .get(&name)
        .is_some_and(|b| binding_matches(b, &grant.binding))
    {
        let api: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
        api.patch(&name, &params, &Patch::Apply(&grant.binding)).await?;
        writes += 1;
    }
    Ok(writes)
}

/// Deletes managed grants that are no longer desired: RoleBindings first, so access ends
/// before anything else happens.
async fn prune(
    client: &Client,
    ns: &str,
    outcome: &TenantOutcome,
    existing: &ExistingGrants,
) -> Result<usize, kube::Error> {
    let wanted: std::collections::BTreeSet<String> = outcome
        .grants
        .iter()
        .filter_map(|g| g.role.metadata.name.clone())
        .collect();
    let mut deletes = 0;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    for (name, binding) in &existing.bindings {
        if !wanted.contains(name) && is_managed(&binding.metadata) {
            deletes += delete(&bindings, name).await?;
        }
    }
    let roles: Api<Role> = Api::namespaced(client.clone(), ns);
    for (name, role) in &existing.roles {
        if !wanted.contains(name) && is_managed(&role.metadata) {
            deletes += delete(&roles, name).await?;
        }
    }
    Ok(deletes)
}

fn is_managed(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(crate::core::grants::MANAGED_BY)
}

async fn delete<K>(api: &Api<K>, name: &str) -> Result<usize, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(1),
        Err(e) if is_not_found(&e) => Ok(0),
        Err(e) => Err(e),
    }
}
