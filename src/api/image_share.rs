use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Condition, ShareState};

/// Shares PrivateImages of this namespace with other tenants (namespaces). Each recipient then
/// accepts, rejects or removes the offer with a ShareAcceptance in its own namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ims.imageshare.io",
    version = "v1alpha1",
    kind = "ImageShare",
    plural = "imageshares",
    shortname = "ishare",
    category = "ims",
    namespaced,
    cel,
    status = "ImageShareStatus",
    printcolumn = r#"{"name":"Offered","type":"integer","jsonPath":".status.offered","description":"Offered (image, recipient) pairs"}"#,
    printcolumn = r#"{"name":"Accepted","type":"integer","jsonPath":".status.accepted","description":"Accepted (image, recipient) pairs"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Expires","type":"date","jsonPath":".spec.expiresAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("(has(self.recipients) && size(self.recipients) > 0) || has(self.recipientSelector)").message("set spec.recipients, spec.recipientSelector or both: a share needs recipients"))]
#[x_kube(validation = Rule::new("!has(self.recipientSelector) || has(self.recipientSelector.matchLabels) || has(self.recipientSelector.matchExpressions)").message("spec.recipientSelector must not be empty: an empty selector would share with every namespace"))]
#[x_kube(validation = Rule::new("!has(self.recipientSelector) || !has(self.recipientSelector.matchExpressions) || self.recipientSelector.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])").message("spec.recipientSelector.matchExpressions operators are In, NotIn, Exists or DoesNotExist"))]
#[serde(rename_all = "camelCase")]
pub struct ImageShareSpec {
    /// Names of PrivateImages in this namespace to share (1-30, no duplicates).
    #[schemars(
        length(min = 1, max = 30),
        inner(length(min = 1, max = 63), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub images: Vec<String>,

    /// Namespaces (tenants) to share the images with (at most 128, no duplicates). The
    /// per-image recipient limit counts across all ImageShares of an image.
    #[serde(default)]
    #[schemars(
        length(max = 128),
        inner(length(min = 1, max = 63), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub recipients: Vec<String>,

    /// Also share with every namespace whose labels match, except this namespace and
    /// namespaces of another region (skipped without a refusal). Selected namespaces come
    /// after the listed recipients, by name, under the same per-image limit; a share reaches
    /// at most 128 namespaces in all. A namespace that stops matching loses the offer and its
    /// access; one that starts matching is offered the images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_selector: Option<LabelSelector>,

    /// When set, the share offers nothing from this time on (RFC 3339) and access is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
}

/// Observed state of an ImageShare, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageShareStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready: True/AllOffered when every listed (image, recipient) pair is offered; otherwise
    /// the reason of the first failing rule and a message naming every pair not offered.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// One entry per listed image with the recipients it is offered to, by share state. A
    /// pair that is not offered is in none of the lists.
    #[serde(default)]
    #[schemars(length(max = 30))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub images: Vec<SharedImageStatus>,
    /// Number of offered (image, recipient) pairs.
    #[serde(default)]
    pub offered: i32,
    /// Number of accepted (image, recipient) pairs.
    #[serde(default)]
    pub accepted: i32,
}

// The names are `Arc<str>`, shared with the engine's evaluation (one per recipient).
/// Recipients of one image by share state (sorted namespace names).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SharedImageStatus {
    /// The PrivateImage name.
    pub name: String,
    /// Offered, not yet answered.
    #[serde(default)]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub pending: Vec<Arc<str>>,
    /// Accepted: these recipients may use the image.
    #[serde(default)]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub accepted: Vec<Arc<str>>,
    /// Rejected by the recipient.
    #[serde(default)]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub rejected: Vec<Arc<str>>,
    /// Removed by the recipient after accepting.
    #[serde(default)]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub removed: Vec<Arc<str>>,
    /// Recipients this share lists for the image that are not offered it, by reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub refused: Vec<RefusedRecipients>,
}

/// Listed recipients not offered an image, and why.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefusedRecipients {
    /// Why: Expired, ImageNotFound, ImageNotReady, ImagePublished, RecipientIsOwner,
    /// RecipientNotFound, RegionMismatch, SharedImageLimitExceeded or RecipientLimitExceeded.
    pub reason: String,
    /// The recipient namespaces (sorted).
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub recipients: Vec<String>,
}

impl SharedImageStatus {
    /// The four recipient lists, each with the state it holds.
    pub fn lists(&self) -> [(ShareState, &Vec<Arc<str>>); 4] {
        [
            (ShareState::Pending, &self.pending),
            (ShareState::Accepted, &self.accepted),
            (ShareState::Rejected, &self.rejected),
            (ShareState::Removed, &self.removed),
        ]
    }

    /// Every recipient the image is offered to, in any state.
    pub fn recipients(&self) -> impl Iterator<Item = &Arc<str>> {
        self.pending
            .iter()
            .chain(&self.accepted)
            .chain(&self.rejected)
            .chain(&self.removed)
    }

    /// The state of one recipient, if the image is offered to it.
    pub fn state_of(&self, recipient: &str) -> Option<ShareState> {
        self.lists()
            .into_iter()
            .find(|(_, list)| list.iter().any(|r| &**r == recipient))
            .map(|(state, _)| state)
    }
}
