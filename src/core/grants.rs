//! RBAC grants that make accepted images usable: one Role and one RoleBinding per image with
//! at least one Accepted pair, in the owner's namespace. The Role's rules come from
//! [`permissions::recipient_permissions`], the list the admission policy is generated from too.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::ResourceExt;

pub use crate::core::permissions::CDI_GROUP;
use crate::{
    api::{API_VERSION, PrivateImage},
    config::SubjectTemplate,
    core::{
        Snapshot,
        permissions::{self, SourceKind},
    },
};

/// Label every managed grant carries; grants are pruned by it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "ims-operator";
/// Label naming the image a grant is for.
pub const IMAGE_LABEL: &str = "ims.imageshare.io/image";

/// The Role and RoleBinding for one image, as the few facts they are made from: the engine
/// keeps a grant per image with accepted recipients (tens of thousands at scale), and the
/// full Kubernetes objects are several times larger than these facts. [`Grant::role`] and
/// [`Grant::binding`] build the objects when they are written or shown.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub image: String,
    namespace: Option<String>,
    uid: Option<String>,
    kind: SourceKind,
    /// The source's PVC or VirtualMachine name (none for a file source).
    source_object: Option<String>,
    /// The disk claims of a `server` source's VirtualMachine.
    claims: Vec<String>,
    /// The accepted recipients, sorted (names shared with the owner's evaluation).
    recipients: Vec<Arc<str>>,
    templates: Arc<[SubjectTemplate]>,
}

/// Whether the operator made a Role or RoleBinding: its label, an image label, and the grant
/// name of that image. Anything else, even with the label, is somebody else's and is never
/// written or deleted.
pub fn made_by_operator(meta: &ObjectMeta) -> bool {
    let labels = meta.labels.as_ref();
    let managed = labels.and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(MANAGED_BY);
    let image = labels.and_then(|l| l.get(IMAGE_LABEL));
    managed && image.is_some_and(|image| meta.name.as_deref() == Some(grant_name(image).as_str()))
}

/// Whether the operator made a Role or RoleBinding as the grant of this image.
pub fn made_for_image(meta: &ObjectMeta, image: &str) -> bool {
    made_by_operator(meta)
        && meta
            .labels
            .as_ref()
            .and_then(|l| l.get(IMAGE_LABEL))
            .map(String::as_str)
            == Some(image)
}

/// The name of the Role and RoleBinding of an image.
pub fn grant_name(image: &str) -> String {
    let mut name = String::with_capacity(GRANT_PREFIX.len() + image.len());
    push_grant_name(&mut name, image);
    name
}

const GRANT_PREFIX: &str = "ims-image-";

/// Writes [`grant_name`] into a message being built.
pub fn push_grant_name(out: &mut String, image: &str) {
    out.push_str(GRANT_PREFIX);
    out.push_str(image);
}

/// Builds the grant of one image for its accepted recipients (sorted namespace names), with
/// the disk claims the snapshot knows for a `server` source.
pub fn build_grant<R: Clone + Into<Arc<str>>>(snap: &Snapshot, image: &PrivateImage, accepted: &[R]) -> Grant {
    let claims = match &image.spec.source.server {
        Some(server) => snap.machine_claims(&image.namespace().unwrap_or_default(), &server.name),
        None => &[],
    };
    build_grant_with(image, claims, accepted, &snap.subjects)
}

/// The Role rules of an image's grant: every permission of its source kind, by resourceName.
/// `claims` are the disk claims of a `server` source's VirtualMachine (sorted, deduplicated).
pub fn grant_rules(image: &PrivateImage, claims: &[String]) -> Vec<PolicyRule> {
    // An image whose source breaks the schema's one-of rule is never Ready, so never granted;
    // should it be, it gets no more than a file source's image.
    let kind = SourceKind::of(&image.spec.source).unwrap_or(SourceKind::File);
    rules_for(
        kind,
        &image.name_any(),
        SourceKind::object_name(&image.spec.source),
        claims,
    )
}

fn rules_for(kind: SourceKind, image: &str, source_object: Option<&str>, claims: &[String]) -> Vec<PolicyRule> {
    permissions::recipient_permissions(kind)
        .iter()
        .filter_map(|p| {
            let names = permissions::target_names(p, image, source_object, claims);
            // No names would mean every object of the namespace.
            (!names.is_empty()).then(|| PolicyRule {
                api_groups: Some(vec![p.group.into()]),
                resources: Some(vec![p.resource.into()]),
                resource_names: Some(names),
                verbs: vec![p.verb.into()],
                ..Default::default()
            })
        })
        .collect()
}

/// Builds the grant of one image for its accepted recipients (sorted namespace names).
pub fn build_grant_with<R: Clone + Into<Arc<str>>>(
    image: &PrivateImage,
    claims: &[String],
    accepted: &[R],
    templates: &Arc<[SubjectTemplate]>,
) -> Grant {
    Grant {
        image: image.name_any(),
        namespace: image.namespace(),
        uid: image.uid(),
        kind: SourceKind::of(&image.spec.source).unwrap_or(SourceKind::File),
        source_object: SourceKind::object_name(&image.spec.source).map(str::to_string),
        claims: claims.to_vec(),
        recipients: accepted.iter().cloned().map(Into::into).collect(),
        templates: templates.clone(),
    }
}

impl Grant {
    /// The uid of the PrivateImage the grant is for (its owner), when known.
    pub fn image_uid(&self) -> Option<&str> {
        self.uid.as_deref()
    }

    fn metadata(&self) -> ObjectMeta {
        let labels = BTreeMap::from([
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            (IMAGE_LABEL.to_string(), self.image.clone()),
        ]);
        let owner_references = self.uid.as_ref().map(|uid| {
            vec![OwnerReference {
                api_version: API_VERSION.into(),
                kind: "PrivateImage".into(),
                name: self.image.clone(),
                uid: uid.clone(),
                ..Default::default()
            }]
        });
        ObjectMeta {
            name: Some(grant_name(&self.image)),
            namespace: self.namespace.clone(),
            labels: Some(labels),
            owner_references,
            ..Default::default()
        }
    }

    /// The Role: every permission of the image's source kind, by resourceName.
    pub fn role(&self) -> Role {
        Role {
            metadata: self.metadata(),
            rules: Some(rules_for(
                self.kind,
                &self.image,
                self.source_object.as_deref(),
                &self.claims,
            )),
        }
    }

    /// The RoleBinding of the Role to every accepted recipient's service accounts and the
    /// configured subjects.
    pub fn binding(&self) -> RoleBinding {
        let mut subjects = Vec::with_capacity(self.recipients.len() * (1 + self.templates.len()));
        for recipient in &self.recipients {
            subjects.push(Subject {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Group".into(),
                name: format!("system:serviceaccounts:{recipient}"),
                namespace: None,
            });
            for t in self.templates.iter() {
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
        RoleBinding {
            metadata: self.metadata(),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: grant_name(&self.image),
            },
            subjects: Some(subjects),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{ImageSource, PrivateImageSpec, ServerSource, VolumeSource},
        config::Config,
        core::{MachineInfo, World},
    };

    fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn only_objects_with_the_label_the_image_label_and_its_grant_name_are_the_operators() {
        let ours = meta("ims-image-web", &[(MANAGED_BY_LABEL, MANAGED_BY), (IMAGE_LABEL, "web")]);
        assert!(made_by_operator(&ours) && made_for_image(&ours, "web"));
        assert!(!made_for_image(&ours, "db"), "another image's grant");
        for foreign in [
            meta("ims-image-web", &[(IMAGE_LABEL, "web")]),
            meta("ims-image-web", &[(MANAGED_BY_LABEL, MANAGED_BY)]),
            meta(
                "ims-image-web",
                &[(MANAGED_BY_LABEL, "someone-else"), (IMAGE_LABEL, "web")],
            ),
            meta("team-role", &[(MANAGED_BY_LABEL, MANAGED_BY), (IMAGE_LABEL, "web")]),
            meta("ims-image-db", &[(MANAGED_BY_LABEL, MANAGED_BY), (IMAGE_LABEL, "web")]),
        ] {
            assert!(!made_by_operator(&foreign), "{foreign:?}");
        }
    }

    fn image(source: ImageSource) -> PrivateImage {
        let mut image = PrivateImage::new(
            "golden",
            PrivateImageSpec {
                display_name: None,
                description: None,
                image_type: Default::default(),
                os_type: None,
                os_version: None,
                architecture: Default::default(),
                disk_size_gib: 40,
                min_memory_mib: None,
                source,
                published: false,
            },
        );
        image.metadata.namespace = Some("tenant-a".into());
        image
    }

    fn server(vm: &str) -> PrivateImage {
        image(ImageSource {
            server: Some(ServerSource { name: vm.into() }),
            ..Default::default()
        })
    }

    /// (group, resource, verb, names) of each rule.
    fn rules(grant: &Grant) -> Vec<(String, String, String, Vec<String>)> {
        grant
            .role()
            .rules
            .iter()
            .flatten()
            .map(|r| {
                (
                    r.api_groups.clone().unwrap_or_default().join(","),
                    r.resources.clone().unwrap_or_default().join(","),
                    r.verbs.join(","),
                    r.resource_names.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    fn rule(group: &str, resource: &str, verb: &str, names: &[&str]) -> (String, String, String, Vec<String>) {
        (
            group.into(),
            resource.into(),
            verb.into(),
            names.iter().map(|n| n.to_string()).collect(),
        )
    }

    #[test]
    fn a_server_grant_reads_and_clones_every_disk_claim_of_the_machine() {
        let mut snap = Snapshot::new(Config::default(), World::Cluster { kubevirt: true }, Default::default()).unwrap();
        let vm = serde_json::json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "builder", "namespace": "tenant-a"},
            "spec": {"runStrategy": "Halted", "template": {"spec": {"volumes": [
                {"name": "root", "dataVolume": {"name": "builder-root"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "builder-data"}},
                {"name": "again", "persistentVolumeClaim": {"claimName": "builder-root"}},
                {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config"}},
                {"name": "scratch", "containerDisk": {"image": "quay.io/x/y"}}
            ]}}}
        });
        snap.set_machine("tenant-a", "builder", Some(MachineInfo::of_virtual_machine(&vm)));
        assert_eq!(
            snap.machine_claims("tenant-a", "builder"),
            ["builder-data", "builder-root"]
        );
        let grant = build_grant(&snap, &server("builder"), &["tenant-b"]);
        assert_eq!(
            rules(&grant),
            [
                rule(crate::api::GROUP, "privateimages", "get", &["golden"]),
                rule("kubevirt.io", "virtualmachines", "get", &["builder"]),
                rule("", "persistentvolumeclaims", "get", &["builder-data", "builder-root"]),
                rule(
                    CDI_GROUP,
                    "datavolumes/source",
                    "create",
                    &["builder-data", "builder-root"]
                ),
            ]
        );
        // The machine's disks changed: so does the grant.
        snap.set_machine(
            "tenant-a",
            "builder",
            Some(MachineInfo {
                state: crate::core::MachineState::Stopped,
                claims: vec!["builder-v2".into()],
            }),
        );
        let grant = build_grant(&snap, &server("builder"), &["tenant-b"]);
        assert_eq!(
            rules(&grant)[3],
            rule(CDI_GROUP, "datavolumes/source", "create", &["builder-v2"])
        );
    }

    #[test]
    fn a_machine_without_known_disks_grants_no_rule_without_names() {
        // Offline, a VirtualMachine referenced but not given is stopped with no known disks.
        let snap = Snapshot::new(Config::default(), World::Offline, Default::default()).unwrap();
        let grant = build_grant(&snap, &server("not-given"), &["tenant-b"]);
        assert_eq!(
            rules(&grant),
            [
                rule(crate::api::GROUP, "privateimages", "get", &["golden"]),
                rule("kubevirt.io", "virtualmachines", "get", &["not-given"]),
            ]
        );
        assert!(
            grant
                .role()
                .rules
                .iter()
                .flatten()
                .all(|r| r.resource_names.as_ref().is_some_and(|n| !n.is_empty())),
            "an empty resourceNames would cover every object of the namespace"
        );
    }

    #[test]
    fn a_volume_grant_reads_and_clones_the_pvc() {
        let snap = Snapshot::new(Config::default(), World::Offline, Default::default()).unwrap();
        let volume = image(ImageSource {
            volume: Some(VolumeSource {
                persistent_volume_claim: "disk".into(),
            }),
            ..Default::default()
        });
        let grant = build_grant(&snap, &volume, &["tenant-b"]);
        assert_eq!(
            rules(&grant),
            [
                rule(crate::api::GROUP, "privateimages", "get", &["golden"]),
                rule("", "persistentvolumeclaims", "get", &["disk"]),
                rule(CDI_GROUP, "datavolumes/source", "create", &["disk"]),
            ]
        );
    }
}
