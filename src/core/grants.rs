//! RBAC grants that make accepted images usable (SPEC §3): one Role and one RoleBinding per
//! image with at least one Accepted pair, in the owner's namespace.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::ResourceExt;

use crate::{
    api::{API_VERSION, PrivateImage},
    config::SubjectTemplate,
};

/// Label every managed grant carries; grants are pruned by it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "ims-operator";
/// Label naming the image a grant is for.
pub const IMAGE_LABEL: &str = "ims.imageshare.io/image";
/// API group of KubeVirt CDI, whose `datavolumes/source` permission allows cross-namespace clones.
pub const CDI_GROUP: &str = "cdi.kubevirt.io";

/// The Role and RoleBinding for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub image: String,
    pub role: Role,
    pub binding: RoleBinding,
}

/// The name of the Role and RoleBinding of an image.
pub fn grant_name(image: &str) -> String {
    format!("ims-image-{image}")
}

/// Builds the grant of one image for its accepted recipients (sorted namespace names).
pub fn build_grant(image: &PrivateImage, accepted: &[&str], templates: &[SubjectTemplate]) -> Grant {
    let name = grant_name(&image.name_any());
    let namespace = image.namespace();
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (IMAGE_LABEL.to_string(), image.name_any()),
    ]);
    let owner_references = image.uid().map(|uid| {
        vec![OwnerReference {
            api_version: API_VERSION.into(),
            kind: "PrivateImage".into(),
            name: image.name_any(),
            uid,
            ..Default::default()
        }]
    });
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace,
        labels: Some(labels),
        owner_references,
        ..Default::default()
    };
    let mut rules = vec![PolicyRule {
        api_groups: Some(vec![crate::api::GROUP.into()]),
        resources: Some(vec!["privateimages".into()]),
        resource_names: Some(vec![image.name_any()]),
        verbs: vec!["get".into()],
        ..Default::default()
    }];
    if let Some(volume) = &image.spec.source.volume {
        let pvc = volume.persistent_volume_claim.clone();
        rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["persistentvolumeclaims".into()]),
            resource_names: Some(vec![pvc.clone()]),
            verbs: vec!["get".into()],
            ..Default::default()
        });
        rules.push(PolicyRule {
            api_groups: Some(vec![CDI_GROUP.into()]),
            resources: Some(vec!["datavolumes/source".into()]),
            resource_names: Some(vec![pvc]),
            verbs: vec!["create".into()],
            ..Default::default()
        });
    }
    let mut subjects = Vec::new();
    for recipient in accepted {
        subjects.push(Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Group".into(),
            name: format!("system:serviceaccounts:{recipient}"),
            namespace: None,
        });
        for t in templates {
            subjects.push(match t.kind.as_str() {
                "ServiceAccount" => Subject {
                    api_group: None,
                    kind: "ServiceAccount".into(),
                    name: t.render(recipient),
                    namespace: Some(recipient.to_string()),
                },
                kind => Subject {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: kind.into(),
                    name: t.render(recipient),
                    namespace: None,
                },
            });
        }
    }
    Grant {
        image: image.name_any(),
        role: Role {
            metadata: metadata.clone(),
            rules: Some(rules),
        },
        binding: RoleBinding {
            metadata,
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name,
            },
            subjects: Some(subjects),
        },
    }
}
