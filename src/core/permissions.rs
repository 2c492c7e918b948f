//! What an accepted recipient may do with a shared image, per source kind: one list, from which
//! both the grant Role (`grants.rs`) and the chart's source-access admission checks are derived.
//!
//! RBAC's escalation rule, applied to sharing: nobody may share more than they can do
//! themselves. The admission policy makes the user who creates or changes a PrivateImage hold
//! what its grant would hand to recipients; deriving both from [`recipient_permissions`] keeps a
//! new grant right from slipping past the admission check.

use crate::api::{GROUP, ImageSource};

/// API group of KubeVirt CDI, whose `datavolumes/source` permission allows cross-namespace clones.
pub const CDI_GROUP: &str = "cdi.kubevirt.io";
/// API group of KubeVirt VirtualMachines.
pub const KUBEVIRT_GROUP: &str = "kubevirt.io";

/// Which of `spec.source`'s fields an image uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    File,
    Volume,
    Server,
}

impl SourceKind {
    pub const ALL: [SourceKind; 3] = [SourceKind::File, SourceKind::Volume, SourceKind::Server];

    /// The kind of a source with exactly one field set (the schema's rule).
    pub fn of(source: &ImageSource) -> Option<SourceKind> {
        match (&source.file, &source.volume, &source.server) {
            (Some(_), None, None) => Some(SourceKind::File),
            (None, Some(_), None) => Some(SourceKind::Volume),
            (None, None, Some(_)) => Some(SourceKind::Server),
            _ => None,
        }
    }

    /// The field of `spec.source`.
    pub fn field(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Volume => "volume",
            SourceKind::Server => "server",
        }
    }

    /// The field of the source that names an object in the image's namespace, if any.
    pub fn name_field(self) -> Option<&'static str> {
        match self {
            SourceKind::File => None,
            SourceKind::Volume => Some("persistentVolumeClaim"),
            SourceKind::Server => Some("name"),
        }
    }

    /// The kind of object the source names, for messages.
    pub fn object_kind(self) -> Option<&'static str> {
        match self {
            SourceKind::File => None,
            SourceKind::Volume => Some("PersistentVolumeClaim"),
            SourceKind::Server => Some("VirtualMachine"),
        }
    }

    /// The name of the object the source names.
    pub fn object_name(source: &ImageSource) -> Option<&str> {
        match SourceKind::of(source)? {
            SourceKind::File => None,
            SourceKind::Volume => source.volume.as_ref().map(|v| v.persistent_volume_claim.as_str()),
            SourceKind::Server => source.server.as_ref().map(|s| s.name.as_str()),
        }
    }
}

/// Which object a permission is on, all in the image's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The PrivateImage itself.
    Image,
    /// The object `spec.source` names: the PersistentVolumeClaim or the VirtualMachine.
    Source,
    /// Every PersistentVolumeClaim or DataVolume claim the VirtualMachine's disks use. Known
    /// from the VirtualMachine only, so not at the image's admission.
    EachDiskClaim,
}

/// One permission an accepted recipient gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Permission {
    pub group: &'static str,
    /// The resource, with `/subresource` when there is one (`datavolumes/source`).
    pub resource: &'static str,
    pub verb: &'static str,
    pub target: Target,
    /// What the permission is for, in words (messages and docs).
    pub purpose: &'static str,
}

impl Permission {
    /// The resource without and the subresource (if any) after the slash.
    pub fn split_resource(&self) -> (&'static str, Option<&'static str>) {
        match self.resource.split_once('/') {
            Some((resource, sub)) => (resource, Some(sub)),
            None => (self.resource, None),
        }
    }

    /// `verb group resource`, as RBAC spells it (the core group is left out).
    pub fn describe(&self) -> String {
        if self.group.is_empty() {
            format!("{} {}", self.verb, self.resource)
        } else {
            format!("{} {} {}", self.verb, self.group, self.resource)
        }
    }
}

const GET_IMAGE: Permission = Permission {
    group: GROUP,
    resource: "privateimages",
    verb: "get",
    target: Target::Image,
    purpose: "read the shared image",
};

const GET_SOURCE_PVC: Permission = Permission {
    group: "",
    resource: "persistentvolumeclaims",
    verb: "get",
    target: Target::Source,
    purpose: "read the disk of the image",
};

// CDI's clone check: a clone from another namespace is allowed when the cloning user may
// `create` `datavolumes/source` for the source PVC in the source namespace.
const CLONE_SOURCE_PVC: Permission = Permission {
    group: CDI_GROUP,
    resource: "datavolumes/source",
    verb: "create",
    target: Target::Source,
    purpose: "clone the disk of the image: the CDI clone permission",
};

const GET_SOURCE_VM: Permission = Permission {
    group: KUBEVIRT_GROUP,
    resource: "virtualmachines",
    verb: "get",
    target: Target::Source,
    purpose: "read the VirtualMachine the image is made from",
};

const GET_DISK_CLAIMS: Permission = Permission {
    group: "",
    resource: "persistentvolumeclaims",
    verb: "get",
    target: Target::EachDiskClaim,
    purpose: "read the disks of the VirtualMachine",
};

const CLONE_DISK_CLAIMS: Permission = Permission {
    group: CDI_GROUP,
    resource: "datavolumes/source",
    verb: "create",
    target: Target::EachDiskClaim,
    purpose: "clone the disks of the VirtualMachine: the CDI clone permission",
};

/// The permissions an accepted recipient of an image with this source gets (the grant Role).
pub fn recipient_permissions(kind: SourceKind) -> &'static [Permission] {
    match kind {
        SourceKind::File => &[GET_IMAGE],
        SourceKind::Volume => &[GET_IMAGE, GET_SOURCE_PVC, CLONE_SOURCE_PVC],
        SourceKind::Server => &[GET_IMAGE, GET_SOURCE_VM, GET_DISK_CLAIMS, CLONE_DISK_CLAIMS],
    }
}

/// The names a permission of an image's grant applies to: the image, the source object, or
/// each disk claim. Empty when the target is unknown (a VirtualMachine whose disks are not
/// known): the grant must then leave the rule out, since a rule without resourceNames would
/// cover every object of the namespace.
pub fn target_names(
    permission: &Permission,
    image: &str,
    source_object: Option<&str>,
    claims: &[String],
) -> Vec<String> {
    match permission.target {
        Target::Image => vec![image.to_string()],
        Target::Source => source_object.map(String::from).into_iter().collect(),
        Target::EachDiskClaim => claims.to_vec(),
    }
}

/// One question the source-access admission policy asks the authorizer about the requesting
/// user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AdmissionCheck {
    pub kind: SourceKind,
    pub permission: Permission,
    /// By the name `spec.source` gives (`true`), or namespace-wide.
    pub by_name: bool,
}

/// The admission checks of a source kind, derived from [`recipient_permissions`].
///
/// The image's own `get` is not checked: it is the object being written, which its writer
/// controls anyway, and who may read it is decided by ImageShares (the grant follows the
/// owner's offer and the recipient's acceptance), not by the image's source. Checking it would
/// also make the file source, which grants nothing else, the only kind left unchecked for no
/// gain.
///
/// A disk claim of a VirtualMachine is only known from the VirtualMachine, which the policy can
/// not read, so that permission is checked namespace-wide: holding it for every name covers
/// each claim the grant can name.
pub fn admission_checks(kind: SourceKind) -> Vec<AdmissionCheck> {
    recipient_permissions(kind)
        .iter()
        .filter_map(|p| match p.target {
            Target::Image => None,
            Target::Source => Some(AdmissionCheck {
                kind,
                permission: *p,
                by_name: true,
            }),
            Target::EachDiskClaim => Some(AdmissionCheck {
                kind,
                permission: *p,
                by_name: false,
            }),
        })
        .collect()
}

impl AdmissionCheck {
    /// The policy variable that holds this check's answer (a CEL identifier).
    pub fn variable(&self) -> String {
        let mut name = format!(
            "{}_{}_{}",
            self.kind.field(),
            self.permission.verb,
            self.permission.resource.replace('/', "_")
        );
        if !self.by_name {
            name.push_str("_any");
        }
        name
    }

    /// CEL of the source object's name in the admitted object.
    fn name_expression(&self) -> String {
        format!(
            "object.spec.source.{}.{}",
            self.kind.field(),
            self.kind.name_field().unwrap_or_default()
        )
    }

    /// CEL that is true when the check passes (or the image does not use this source kind).
    pub fn expression(&self) -> String {
        let (resource, sub) = self.permission.split_resource();
        let mut cel = format!(
            "!has(object.spec.source.{}) ||\nauthorizer.group('{}').resource('{}')",
            self.kind.field(),
            self.permission.group,
            resource
        );
        if let Some(sub) = sub {
            cel.push_str(&format!(".subresource('{sub}')"));
        }
        cel.push_str("\n  .namespace(request.namespace)");
        if self.by_name {
            cel.push_str(&format!("\n  .name({})", self.name_expression()));
        }
        cel.push_str(&format!("\n  .check('{}').allowed()", self.permission.verb));
        cel
    }

    /// The message when the expression can not be built into one (CEL `messageExpression`
    /// failed).
    pub fn message(&self) -> String {
        let object = self.kind.object_kind().unwrap_or_default();
        let scope = if self.by_name {
            format!("on the {object} that spec.source.{} names", self.kind.field())
        } else {
            format!("in the namespace (for the disks of the {object})")
        };
        format!(
            "the requesting user may not {} {scope}, which accepting recipients of the image would get \
             ({}); nobody may share more than they can do themselves",
            self.permission.describe(),
            self.permission.purpose
        )
    }

    /// CEL of the message naming the user, the object and the missing permission.
    pub fn message_expression(&self) -> String {
        let object = self.kind.object_kind().unwrap_or_default();
        let source = format!("request.namespace + '/' + {}", self.name_expression());
        let what = if self.by_name {
            format!("' ' + {source}")
        } else {
            cel_string(" in namespace ")
                + " + request.namespace + "
                + &cel_string(" (any name: the disks of a VirtualMachine are not known at admission)")
        };
        format!(
            "'user ' + request.userInfo.username + {perm} + {what} +\n\
             ', so PrivateImage ' + request.namespace + '/' + request.name +\n\
             {use_} + {source} + {as_} +\n\
             {why}",
            perm = cel_string(&format!(" may not {}", self.permission.describe())),
            use_ = cel_string(&format!(" can not use {object} ")),
            as_ = cel_string(&format!(" as spec.source.{}:", self.kind.field())),
            why = cel_string(&format!(
                " accepting recipients would get that permission ({}) through the grant of the image, \
                 and nobody may share more than they can do themselves",
                self.permission.purpose
            )),
        )
    }
}

/// A CEL string literal.
fn cel_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Path of the generated checks in the Helm chart (relative to the repository).
pub const CHART_CHECKS_FILE: &str = "charts/ims-operator/files/source-access-checks.yaml";

/// The `matchConditions`, `variables` and `validations` of the chart's source-access
/// ValidatingAdmissionPolicy, as the YAML the chart includes under the policy's `spec`.
pub fn source_access_checks_yaml() -> String {
    let checks: Vec<AdmissionCheck> = SourceKind::ALL.into_iter().flat_map(admission_checks).collect();
    let checked_kinds: Vec<SourceKind> = SourceKind::ALL
        .into_iter()
        .filter(|k| !admission_checks(*k).is_empty())
        .collect();
    let mut out = String::from(
        "# Generated from src/core/permissions.rs (the permissions an accepted recipient gets, per\n\
         # source kind); do not edit. Regenerate: IMS_REGENERATE_CHART=1 cargo test --test chart\n\
         # Included under the spec of the source-access ValidatingAdmissionPolicy.\n",
    );
    out.push_str("matchConditions:\n");
    let unchecked: Vec<&str> = SourceKind::ALL
        .into_iter()
        .filter(|k| !checked_kinds.contains(k))
        .map(SourceKind::field)
        .collect();
    out.push_str(&format!(
        "  # Sources whose recipients get nothing but the image itself ({}) are not checked.\n",
        unchecked.join(", ")
    ));
    out.push_str("  - name: source-names-an-object\n    expression: |-\n");
    let has: Vec<String> = checked_kinds
        .iter()
        .map(|k| format!("has(object.spec.source.{})", k.field()))
        .collect();
    push_block(
        &mut out,
        &format!("has(object.spec) && has(object.spec.source) &&\n({})", has.join(" || ")),
        6,
    );
    out.push_str("variables:\n");
    for check in &checks {
        out.push_str(&format!("  - name: {}\n    expression: |-\n", check.variable()));
        push_block(&mut out, &check.expression(), 6);
    }
    out.push_str("validations:\n");
    for check in &checks {
        out.push_str(&format!(
            "  - expression: variables.{}\n    reason: Forbidden\n    message: {}\n    messageExpression: |-\n",
            check.variable(),
            serde_json::to_string(&check.message()).expect("a string serializes")
        ));
        push_block(&mut out, &check.message_expression(), 6);
    }
    out
}

/// Appends a YAML literal block's lines.
fn push_block(out: &mut String, text: &str, indent: usize) {
    for line in text.lines() {
        out.push_str(&" ".repeat(indent));
        out.push_str(line);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_grants_get_on_the_image_and_nothing_on_a_file() {
        for kind in SourceKind::ALL {
            let list = recipient_permissions(kind);
            assert_eq!(list[0], GET_IMAGE, "{kind:?}");
            assert!(
                list.iter().all(|p| !p.resource.is_empty() && !p.verb.is_empty()),
                "{kind:?}"
            );
        }
        assert_eq!(recipient_permissions(SourceKind::File), &[GET_IMAGE]);
        assert!(admission_checks(SourceKind::File).is_empty());
    }

    #[test]
    fn admission_checks_are_the_list_without_the_image_and_namespace_wide_for_disk_claims() {
        for kind in SourceKind::ALL {
            let checks = admission_checks(kind);
            let expected: Vec<Permission> = recipient_permissions(kind)
                .iter()
                .filter(|p| p.target != Target::Image)
                .copied()
                .collect();
            assert_eq!(checks.iter().map(|c| c.permission).collect::<Vec<_>>(), expected);
            for c in checks {
                assert_eq!(c.by_name, c.permission.target == Target::Source, "{c:?}");
                assert_eq!(c.expression().contains(".name("), c.by_name, "{c:?}");
            }
        }
    }

    #[test]
    fn both_volume_and_server_need_the_clone_right() {
        for kind in [SourceKind::Volume, SourceKind::Server] {
            assert!(
                admission_checks(kind).iter().any(|c| c.permission.group == CDI_GROUP
                    && c.permission.resource == "datavolumes/source"
                    && c.permission.verb == "create"),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn expressions_name_the_subresource_separately() {
        let check = admission_checks(SourceKind::Volume)
            .into_iter()
            .find(|c| c.permission.group == CDI_GROUP)
            .unwrap();
        let cel = check.expression();
        assert!(
            cel.contains("authorizer.group('cdi.kubevirt.io').resource('datavolumes').subresource('source')"),
            "{cel}"
        );
        assert!(
            cel.contains(".name(object.spec.source.volume.persistentVolumeClaim)"),
            "{cel}"
        );
        assert!(cel.ends_with(".check('create').allowed()"), "{cel}");
    }

    #[test]
    fn variable_names_are_unique_cel_identifiers() {
        let names: Vec<String> = SourceKind::ALL
            .into_iter()
            .flat_map(admission_checks)
            .map(|c| c.variable())
            .collect();
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for n in &names {
            assert!(
                n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !n.starts_with(|c: char| c.is_ascii_digit()),
                "{n}"
            );
        }
    }

    #[test]
    fn cel_strings_escape_quotes() {
        assert_eq!(cel_string(r"it's a \ b"), r"'it\'s a \\ b'");
    }

    #[test]
    fn unknown_disk_claims_name_nothing() {
        assert!(target_names(&GET_DISK_CLAIMS, "img", Some("vm"), &[]).is_empty());
        assert_eq!(
            target_names(&CLONE_DISK_CLAIMS, "img", Some("vm"), &["a".into(), "b".into()]),
            ["a", "b"]
        );
        assert_eq!(target_names(&GET_SOURCE_VM, "img", Some("vm"), &["a".into()]), ["vm"]);
        assert_eq!(target_names(&GET_IMAGE, "img", Some("vm"), &[]), ["img"]);
    }
}
