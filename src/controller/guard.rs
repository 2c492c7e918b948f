//! Decoding that never loses an object: an object of the operator's kinds that does not decode
//! still yields its metadata and, when that part decodes, its status.
//!
//! kube's `DeserializeGuard` keeps only the metadata. The status is the operator's own record
//! of what it admitted under the limits, and an unreadable object must keep holding its slots
//! (see "Unreadable objects fail closed" in `docs/security.md`), so it is salvaged too.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, de::DeserializeOwned};

use crate::api::{
    ImageShare, ImageShareStatus, PrivateImage, PrivateImageStatus, ShareAcceptance, ShareAcceptanceStatus,
};

/// A kind whose status can be salvaged from an object that does not decode as a whole.
pub trait Salvage:
    Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static
{
    type Status: DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static;
    /// What the engine keeps of an unreadable object of this kind.
    fn salvaged(status: Option<Self::Status>) -> Salvaged;
}

/// What the engine keeps of an object that was never decoded.
#[derive(Clone, Debug)]
pub enum Salvaged {
    Image(Option<PrivateImageStatus>),
    Share(Option<ImageShareStatus>),
    /// Nothing of an acceptance is used: that it exists is what matters.
    Acceptance,
}

impl Salvaged {
    /// The kind of the object it was salvaged from.
    pub fn kind(&self) -> crate::core::Kind {
        match self {
            Salvaged::Image(_) => crate::core::Kind::PrivateImage,
            Salvaged::Share(_) => crate::core::Kind::ImageShare,
            Salvaged::Acceptance => crate::core::Kind::ShareAcceptance,
        }
    }
}

impl Salvage for PrivateImage {
    type Status = PrivateImageStatus;
    fn salvaged(status: Option<Self::Status>) -> Salvaged {
        Salvaged::Image(status)
    }
}

impl Salvage for ImageShare {
    type Status = ImageShareStatus;
    fn salvaged(status: Option<Self::Status>) -> Salvaged {
        Salvaged::Share(status)
    }
}

impl Salvage for ShareAcceptance {
    type Status = ShareAcceptanceStatus;
    fn salvaged(_status: Option<Self::Status>) -> Salvaged {
        Salvaged::Acceptance
    }
}

/// An object the API server holds that does not decode.
#[derive(Clone, Debug)]
pub struct Unreadable<S> {
    pub error: String,
    pub metadata: ObjectMeta,
    /// The status, when that part still decodes on its own.
    pub status: Option<S>,
}

/// Either the decoded object or what could be salvaged of it.
#[derive(Clone, Debug)]
pub struct Guarded<K: Salvage>(pub Result<K, Unreadable<K::Status>>);

impl<'de, K: Salvage> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        match K::deserialize(&value) {
            Ok(object) => Ok(Guarded(Ok(object))),
            Err(error) => {
                // Without readable metadata the object can not even be named: that stays an
                // error of the whole list or watch event, as it is for kube's own guard.
                let metadata = match value.get("metadata") {
                    Some(m) => ObjectMeta::deserialize(m).map_err(serde::de::Error::custom)?,
                    None => return Err(serde::de::Error::custom(format!("object without metadata: {error}"))),
                };
                let status = value.get("status").and_then(|s| K::Status::deserialize(s).ok());
                Ok(Guarded(Err(Unreadable {
                    error: error.to_string(),
                    metadata,
                    status,
                })))
            }
        }
    }
}

impl<K: Salvage> Resource for Guarded<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(object) => object.meta(),
            Err(unreadable) => &unreadable.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(object) => object.meta_mut(),
            Err(unreadable) => &mut unreadable.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_readable_object_decodes() {
        let share: Guarded<ImageShare> = serde_json::from_value(json!({
            "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ImageShare",
            "metadata": {"name": "s", "namespace": "a"},
            "spec": {"images": ["x"], "recipients": ["b"]},
        }))
        .unwrap();
        assert_eq!(share.0.unwrap().spec.images, vec!["x".to_string()]);
    }

    #[test]
    fn an_unreadable_spec_keeps_metadata_and_the_status() {
        let share: Guarded<ImageShare> = serde_json::from_value(json!({
            "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ImageShare",
            "metadata": {"name": "s", "namespace": "a"},
            "spec": {"images": "not-a-list", "recipients": ["b"]},
            "status": {"images": [{"name": "x", "accepted": ["b"]}], "offered": 1, "accepted": 1},
        }))
        .unwrap();
        let unreadable = share.0.unwrap_err();
        assert_eq!(unreadable.metadata.name.as_deref(), Some("s"));
        assert!(unreadable.error.contains("invalid type"), "{}", unreadable.error);
        let status = unreadable.status.expect("the status decodes on its own");
        assert_eq!(status.images[0].accepted, vec![std::sync::Arc::<str>::from("b")]);
    }

    #[test]
    fn an_unreadable_status_is_none() {
        let image: Guarded<PrivateImage> = serde_json::from_value(json!({
            "metadata": {"name": "i", "namespace": "a"},
            "spec": {"osType": "Plan9"},
            "status": {"conditions": "garbage"},
        }))
        .unwrap();
        let unreadable = image.0.unwrap_err();
        assert!(unreadable.status.is_none());
    }
}
