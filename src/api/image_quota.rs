use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The name of the one ImageQuota of a namespace.
pub const IMAGE_QUOTA_NAME: &str = "ims";

/// A tenant's image quota and how much of it is used, like a ResourceQuota: kept by the
/// operator in every namespace that holds a PrivateImage or ImageShare or carries a limit
/// annotation, always named "ims". Tenants read it; only the operator writes it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ims.imageshare.io",
    version = "v1alpha1",
    kind = "ImageQuota",
    plural = "imagequotas",
    shortname = "iquota",
    category = "ims",
    namespaced,
    status = "ImageQuotaStatus",
    printcolumn = r#"{"name":"Private","type":"string","jsonPath":".status.summary.privateImages","description":"Private images used/hard"}"#,
    printcolumn = r#"{"name":"Shared","type":"string","jsonPath":".status.summary.sharedImages","description":"Shared images used/hard"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct ImageQuotaSpec {}

impl ImageQuota {
    /// The ImageQuota of a namespace with the given status, as the operator keeps it.
    pub fn of(namespace: &str, status: ImageQuotaStatus) -> Self {
        let mut quota = ImageQuota::new(IMAGE_QUOTA_NAME, ImageQuotaSpec {});
        quota.metadata.namespace = Some(namespace.to_string());
        quota.status = Some(status);
        quota
    }
}

/// The limits in force for this namespace and what uses them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageQuotaStatus {
    /// The limits in force: the operator's defaults, replaced by this namespace's limit
    /// annotations. -1 means unlimited.
    pub hard: QuotaHard,
    /// What counts against them. Recipients per image are counted on each PrivateImage
    /// (status.recipients).
    pub used: QuotaUsed,
    /// used/hard as text, for the printer columns ("unlimited" for -1).
    pub summary: QuotaSummary,
}

/// Limits of one tenant; -1 means unlimited.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QuotaHard {
    /// PrivateImages this namespace may hold.
    pub private_images: i64,
    /// Distinct images of this namespace that may be offered to at least one recipient.
    pub shared_images: i64,
    /// Distinct recipient namespaces each image may be offered to, in any share state.
    pub recipients_per_image: i64,
}

/// Usage of one tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsed {
    /// PrivateImages admitted under the limit (not QuotaExceeded).
    pub private_images: i64,
    /// Images offered to at least one recipient.
    pub shared_images: i64,
}

/// Usage as used/hard text.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSummary {
    /// Private images, e.g. "2/10".
    pub private_images: String,
    /// Shared images, e.g. "0/30".
    pub shared_images: String,
}
