use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{AcceptedSource, Architecture, ImageType, OsType, ShareState};

/// Label on every ImageOffer naming the owner namespace whose images it lists.
pub const OWNER_LABEL: &str = "ims.imageshare.io/owner";

/// A recipient's inbox: what one owner namespace offers to this namespace, and in which state.
/// One per owner that offers at least one image, named after the owner namespace; kept by the
/// operator, read-only for tenants. Decide on the images with a ShareAcceptance.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ims.imageshare.io",
    version = "v1alpha1",
    kind = "ImageOffer",
    plural = "imageoffers",
    shortname = "ioffer",
    category = "ims",
    namespaced,
    status = "ImageOfferStatus",
    printcolumn = r#"{"name":"Owner","type":"string","jsonPath":".spec.owner"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pending"}"#,
    printcolumn = r#"{"name":"Accepted","type":"integer","jsonPath":".status.accepted"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImageOfferSpec {
    /// The namespace of the tenant that offers the images (also the object's name).
    pub owner: String,
}

impl ImageOffer {
    /// The ImageOffer of `owner` in `recipient` with the given status, as the operator keeps it.
    pub fn of(recipient: &str, owner: &str, status: ImageOfferStatus) -> Self {
        let mut offer = ImageOffer::new(owner, ImageOfferSpec { owner: owner.into() });
        offer.metadata.namespace = Some(recipient.to_string());
        offer.metadata.labels = Some([(OWNER_LABEL.to_string(), owner.to_string())].into());
        offer.status = Some(status);
        offer
    }
}

/// What the owner offers to this namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageOfferStatus {
    /// Every image the owner offers to this namespace (at most 1000, by name), with its state.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub images: Vec<OfferedImage>,
    /// How many more offered images there are beyond the listed ones.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_images: i32,
    /// Offered images waiting for a decision.
    pub pending: i32,
    /// Offered images accepted (usable).
    pub accepted: i32,
    /// Offered images rejected.
    pub rejected: i32,
    /// Offered images removed after being accepted.
    pub removed: i32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

// Its strings are `Arc<str>`, shared with the engine's evaluation: the same image name and
// description are in the inbox of every recipient.
/// One image offered to this namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OfferedImage {
    /// The PrivateImage name in the owner's namespace.
    pub name: Arc<str>,
    /// Pending, Accepted, Rejected or Removed.
    pub state: ShareState,
    /// The ShareAcceptance of this namespace whose decision is in effect, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Arc<str>>,
    pub image_type: ImageType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<OsType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<Arc<str>>,
    pub architecture: Architecture,
    #[serde(rename = "diskSizeGiB")]
    pub disk_size_gib: i32,
    /// When the offer ends: the latest expiresAt of the ImageShares that offer the image to this
    /// namespace; absent when one of them does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// How to use the image; present only while Accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed: most offered images are not Accepted, and an inbox holds up to 1,000 entries.
    pub source: Option<Arc<AcceptedSource>>,
}

impl OfferedImage {
    /// The OS as tables show it: `Linux CentOS 7.6 64bit`, `Linux`, or `-`.
    pub fn os_label(&self) -> String {
        let os = [
            self.os_type.map(|t| format!("{t:?}")),
            self.os_version.as_deref().map(String::from),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        if os.is_empty() { "-".into() } else { os }
    }
}
