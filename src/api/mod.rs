//! The three custom resources of `ims.imageshare.io/v1alpha1` (see README.md).
//!
//! Types only: no I/O. Validation that the API server can do on its own (enums, ranges, sizes,
//! patterns, CEL rules) lives here in the schema, so `kubectl apply` rejects bad input.

mod condition;
mod image_offer;
mod image_quota;
mod image_share;
mod private_image;
mod share_acceptance;
pub mod validation;

pub use condition::Condition;
pub use image_offer::*;
pub use image_quota::*;
pub use image_share::*;
pub use private_image::*;
pub use share_acceptance::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every kind of this operator.
pub const GROUP: &str = "ims.imageshare.io";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "ims.imageshare.io/v1alpha1";

/// A Kubernetes DNS-1123 label: namespaces and the names an ImageShare refers to.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A Kubernetes DNS-1123 subdomain: PVC and VirtualMachine names.
pub const DNS_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// The condition type every kind reports.
pub const READY: &str = "Ready";

/// All CRDs of the operator, in the order `ims-operator crd` prints them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        PrivateImage::crd(),
        ImageShare::crd(),
        ShareAcceptance::crd(),
        ImageQuota::crd(),
        without_status_subresource(ImageOffer::crd()),
    ]
    .into_iter()
    .map(without_null_enum_values)
    .collect()
}

/// An ImageOffer is written only by the operator, whole, in one server-side apply: with a
/// status subresource every new offer would take two writes (object, then status).
fn without_status_subresource(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        version.subresources = None;
    }
    crd
}

/// schemars lists `null` among the values of an optional enum; the field is already
/// `nullable`, and the API server would otherwise print "supported values: …, \"null\"" in
/// every enum error, as if `null` were a choice.
fn without_null_enum_values(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(options)) = map.get_mut("enum") {
                    options.retain(|o| !o.is_null());
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    strip(&mut value);
    serde_json::from_value(value).expect("stripping enum values keeps a valid CRD")
}

/// The `Ready` condition of a status, if any.
pub fn ready_condition(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == READY)
}

/// Share state of an offered (image, recipient) pair (see README.md).
#[derive(
    serde::Serialize, serde::Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum ShareState {
    Pending,
    Accepted,
    Rejected,
    Removed,
}

impl ShareState {
    pub fn as_str(self) -> &'static str {
        match self {
            ShareState::Pending => "Pending",
            ShareState::Accepted => "Accepted",
            ShareState::Rejected => "Rejected",
            ShareState::Removed => "Removed",
        }
    }
}

impl std::fmt::Display for ShareState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
