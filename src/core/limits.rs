//! Per-tenant limits and regions (see README.md).

use crate::config::{Limit, UNLIMITED};

use super::snapshot::{Snapshot, World};

pub use super::vocabulary::{
    LIMIT_ANNOTATIONS, LIMIT_PRIVATE_IMAGES, LIMIT_RECIPIENTS_PER_IMAGE, LIMIT_SHARED_IMAGES, REGION_LABEL,
};

/// The limits in force for one tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantLimits {
    pub private_images: Limit,
    pub shared_images: Limit,
    pub recipients_per_image: Limit,
    /// Annotations that could not be used (the default applies), as messages.
    pub invalid_annotations: Vec<String>,
}

/// Whether `used` items leave room for one more under `limit`.
pub fn has_room(limit: Limit, used: usize) -> bool {
    limit == UNLIMITED || (used as i64) < limit
}

/// Human form of a limit.
pub fn describe(limit: Limit) -> String {
    if limit == UNLIMITED {
        "unlimited".into()
    } else {
        limit.to_string()
    }
}

/// The limits of a tenant: the config defaults, replaced by valid namespace annotations.
pub fn tenant_limits(snap: &Snapshot, namespace: &str) -> TenantLimits {
    let defaults = snap.config.limits;
    let mut limits = TenantLimits {
        private_images: defaults.private_images_per_tenant,
        shared_images: defaults.shared_images_per_tenant,
        recipients_per_image: defaults.recipients_per_image,
        invalid_annotations: Vec::new(),
    };
    let Some(info) = snap.namespace(namespace) else {
        return limits;
    };
    for (key, slot) in [
        (LIMIT_PRIVATE_IMAGES, &mut limits.private_images),
        (LIMIT_SHARED_IMAGES, &mut limits.shared_images),
        (LIMIT_RECIPIENTS_PER_IMAGE, &mut limits.recipients_per_image),
    ] {
        let Some(value) = info.annotations.get(key) else {
            continue;
        };
        match value.trim().parse::<i64>() {
            Ok(n) if n >= UNLIMITED => *slot = n,
            _ => limits.invalid_annotations.push(format!(
                "annotation {key}={value:?} is not an integer >= -1; the default {} applies",
                describe(*slot)
            )),
        }
    }
    limits
}

/// The region of an existing namespace: its label, or the operator's region. A namespace
/// being deleted has none: it is leaving, and nothing is offered to it or by it.
pub fn region_of<'a>(snap: &'a Snapshot, namespace: &str) -> Option<&'a str> {
    match snap.namespaces.get(namespace) {
        Some(info) if info.leaving => None,
        Some(info) => Some(
            info.labels
                .get(REGION_LABEL)
                .map(String::as_str)
                .unwrap_or(&snap.config.region),
        ),
        None if snap.world == World::Offline => Some(&snap.config.region),
        None => None,
    }
}
