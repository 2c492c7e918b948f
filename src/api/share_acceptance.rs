use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Condition, FileFormat, FileSource, ShareState};

/// A recipient's answer to images another tenant shares with this namespace: accept, reject or
/// remove them, by name or all at once.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ims.imageshare.io",
    version = "v1alpha1",
    kind = "ShareAcceptance",
    plural = "shareacceptances",
    shortname = "sacc",
    category = "ims",
    namespaced,
    cel,
    status = "ShareAcceptanceStatus",
    printcolumn = r#"{"name":"Owner","type":"string","jsonPath":".spec.owner"}"#,
    printcolumn = r#"{"name":"Decision","type":"string","jsonPath":".spec.decision"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.owner) != has(self.ownerSelector)").message("set exactly one of spec.owner and spec.ownerSelector"))]
#[x_kube(validation = Rule::new("!has(self.ownerSelector) || !has(self.images) || size(self.images) == 0").message("spec.images must be empty with spec.ownerSelector: it decides on every image the selected owners offer"))]
#[x_kube(validation = Rule::new("!has(self.ownerSelector) || has(self.ownerSelector.matchLabels) || has(self.ownerSelector.matchExpressions)").message("spec.ownerSelector must not be empty: an empty selector would decide for every owner"))]
#[x_kube(validation = Rule::new("!has(self.ownerSelector) || !has(self.ownerSelector.matchExpressions) || self.ownerSelector.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])").message("spec.ownerSelector.matchExpressions operators are In, NotIn, Exists or DoesNotExist"))]
#[serde(rename_all = "camelCase")]
pub struct ShareAcceptanceSpec {
    /// The namespace of the tenant that shares the images. Immutable. Exactly one of owner and
    /// ownerSelector is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = 63), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("owner is immutable; create another ShareAcceptance instead"))]
    pub owner: String,

    /// Instead of owner: decide on every image offered by every owner namespace whose labels
    /// match (auto-accept, or reject or remove, by label). A ShareAcceptance that names the
    /// owner beats one that selects it, and one that names the image beats both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_selector: Option<LabelSelector>,

    /// Names of the owner's images this decision applies to. Empty: every image the owner
    /// offers to this namespace. A decision that names an image beats one that covers all.
    #[serde(default)]
    #[schemars(
        length(max = 1000),
        inner(length(min = 1, max = 63), regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub images: Vec<String>,

    /// Accept (the default), Reject or Remove. Between equally specific acceptances, Remove
    /// beats Reject beats Accept.
    #[serde(default)]
    pub decision: Decision,
}

/// A recipient's decision.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum Decision {
    #[default]
    Accept,
    Reject,
    Remove,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Accept => "Accept",
            Decision::Reject => "Reject",
            Decision::Remove => "Remove",
        }
    }
    /// The share state this decision produces.
    pub fn state(self) -> ShareState {
        match self {
            Decision::Accept => ShareState::Accepted,
            Decision::Reject => ShareState::Rejected,
            Decision::Remove => ShareState::Removed,
        }
    }
}

/// Observed state of a ShareAcceptance, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShareAcceptanceStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready: True/Applied when this acceptance decides at least one offered image;
    /// False/NothingOffered when the owner offers nothing it covers; False/Conflict when an
    /// equally specific acceptance with a stronger decision overrides it.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The offered images this acceptance covers (at most 1000, by name): its own decisions.
    /// Everything the owner offers to this namespace is in the ImageOffer named after the owner.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub images: Vec<ReceivedImage>,
    /// How many more covered images there are beyond the listed ones.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_images: i32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// One offered image this ShareAcceptance covers, and how it was decided. The image's
/// description and how to use it are in the namespace's ImageOffer of the owner.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedImage {
    /// The PrivateImage name in the owner's namespace.
    pub name: Arc<str>,
    /// The owner namespace, for an acceptance by ownerSelector (which covers several owners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Arc<str>>,
    /// Pending, Accepted, Rejected or Removed.
    pub state: ShareState,
    /// Whose decision is in effect.
    pub reason: DecisionReason,
    /// The other ShareAcceptance whose decision is in effect, when it is not this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Arc<str>>,
}

/// How the state of an image a ShareAcceptance covers was decided.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DecisionReason {
    /// This acceptance decides it.
    ThisAcceptance,
    /// A ShareAcceptance that names the image overrides this one, which covers all images.
    NamedAcceptance,
    /// A ShareAcceptance that names the owner overrides this one, which selects owners by
    /// label.
    OwnerAcceptance,
    /// An equally specific ShareAcceptance with a stronger decision (Remove > Reject > Accept)
    /// overrides this one.
    Conflict,
    /// It would be Accepted, but this namespace holds a ShareAcceptance the operator can not
    /// read, which might refuse it: the image keeps its state until that one is fixed.
    UnreadableAcceptance,
}

impl DecisionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionReason::ThisAcceptance => "ThisAcceptance",
            DecisionReason::NamedAcceptance => "NamedAcceptance",
            DecisionReason::OwnerAcceptance => "OwnerAcceptance",
            DecisionReason::Conflict => "Conflict",
            DecisionReason::UnreadableAcceptance => "UnreadableAcceptance",
        }
    }
}

/// Where an accepted image's content can be read from.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedSource {
    /// The owner's namespace.
    pub namespace: String,
    /// The image file, for a file source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<AcceptedFile>,
    /// The PersistentVolumeClaim to clone (e.g. as a CDI DataVolume source), for a volume
    /// source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<String>,
    /// The VirtualMachine, for a server source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine: Option<String>,
    /// The PersistentVolumeClaims and DataVolumes of the VirtualMachine's disks, to clone, for a
    /// server source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<String>,
}

/// The file of an accepted image. The operator copies it from the owner's validated spec, so
/// it carries no validation rule of its own: a rule here would be evaluated for every listed
/// image and cost the CRD its CEL budget.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedFile {
    /// s3://bucket/object or https://host/path.
    pub url: String,
    pub format: FileFormat,
}

impl From<&FileSource> for AcceptedFile {
    fn from(file: &FileSource) -> Self {
        AcceptedFile {
            url: file.url.clone(),
            format: file.format,
        }
    }
}
