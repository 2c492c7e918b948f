use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Condition;

/// A tenant's private VM image. Lives in the owner's namespace; other tenants can use it only
/// after it is shared with them (ImageShare) and they accept it (ShareAcceptance).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ims.imageshare.io",
    version = "v1alpha1",
    kind = "PrivateImage",
    plural = "privateimages",
    shortname = "pimg",
    category = "ims",
    namespaced,
    cel,
    status = "PrivateImageStatus",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.imageType"}"#,
    printcolumn = r#"{"name":"OS","type":"string","jsonPath":".spec.osType"}"#,
    printcolumn = r#"{"name":"Disk","type":"integer","jsonPath":".spec.diskSizeGiB","description":"Disk size in GiB"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Shared","type":"integer","jsonPath":".status.recipients.accepted","description":"Recipients that accepted the image"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name of a PrivateImage must be a DNS label (at most 63 lowercase letters, digits and '-'), so that ImageShares can name it"),
)]
#[x_kube(
    validation = Rule::new("(has(self.imageType) && self.imageType == 'DataDisk') || self.diskSizeGiB <= 1024").message("diskSizeGiB must be between 40 and 1024 for SystemDisk and FullMachine images (DataDisk images allow up to 2048)").field_path(".diskSizeGiB"),
)]
#[serde(rename_all = "camelCase")]
pub struct PrivateImageSpec {
    /// Human-readable image name shown to recipients, e.g. "ftp server". Free text, unlike
    /// metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,

    /// Free-text description of the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// What the image holds: SystemDisk (an OS disk, the default), DataDisk (a data volume) or
    /// FullMachine (a whole machine backup). Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("imageType is immutable; create a new PrivateImage instead"))]
    pub image_type: ImageType,

    /// Operating system family of a system or full-machine image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<OsType>,

    /// Operating system version, free text, e.g. "CentOS 7.6 64bit".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub os_version: Option<String>,

    /// CPU architecture the image boots on.
    #[serde(default)]
    pub architecture: Architecture,

    /// Disk size in GiB: 40-1024 for SystemDisk and FullMachine, 40-2048 for DataDisk.
    #[serde(rename = "diskSizeGiB")]
    #[schemars(range(min = 40, max = 2048))]
    pub disk_size_gib: i32,

    /// Minimum memory in MiB a machine needs to boot this image.
    #[serde(rename = "minMemoryMiB", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16777216))]
    pub min_memory_mib: Option<i32>,

    /// Where the image content comes from: exactly one of file, volume or server. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("source is immutable; create a new PrivateImage instead"))]
    pub source: ImageSource,

    /// Published to the marketplace. A published image can not be shared and can not be
    /// deleted (the chart's admission policy refuses the delete).
    #[serde(default)]
    pub published: bool,
}

/// Kind of image content.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageType {
    #[default]
    SystemDisk,
    DataDisk,
    FullMachine,
}

/// Operating system family.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OsType {
    Linux,
    Windows,
}

/// CPU architecture.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Architecture {
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

/// The origin of an image's content. Exactly one field is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("(has(self.file) ? 1 : 0) + (has(self.volume) ? 1 : 0) + (has(self.server) ? 1 : 0) == 1").message("exactly one of source.file, source.volume or source.server must be set"))]
#[serde(rename_all = "camelCase")]
pub struct ImageSource {
    /// An image file in object storage. The operator never downloads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
    /// A PersistentVolumeClaim in the same namespace, e.g. the disk of a stopped VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSource>,
    /// A KubeVirt VirtualMachine in the same namespace; it must be stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSource>,
}

/// An image file in object storage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileSource {
    /// Location of the file: s3://bucket/object or https://host/path.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(s3://[^/ ]+/[^ ]+|https://[^/ ]+/[^ ]+)$')").message("url must be s3://bucket/object or https://host/path"))]
    pub url: String,
    /// File format of the image.
    pub format: FileFormat,
}

/// Image file format.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    #[serde(rename = "QCOW2")]
    Qcow2,
    #[serde(rename = "RAW")]
    Raw,
}

/// A PersistentVolumeClaim holding the image disk.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSource {
    /// Name of the PersistentVolumeClaim in the image's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub persistent_volume_claim: String,
}

/// A KubeVirt VirtualMachine whose disk becomes the image.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServerSource {
    /// Name of the VirtualMachine in the image's namespace. It must be stopped.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Observed state of a PrivateImage, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrivateImageStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready: True/Available when the image can be shared; otherwise the reason says why not
    /// (QuotaExceeded, InvalidSource, SourceNotFound, SourceNotReady, SourceUnsupported).
    /// AccessGranted, present while at least one recipient accepted the image: True/Granted
    /// when its Role and RoleBinding are in place; False/GrantNameTaken when a Role or
    /// RoleBinding of that name exists that the operator did not make (it is never
    /// overwritten), False/GrantWriteFailed when the API server refused the write.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// How many recipients the image is offered to, by share state.
    #[serde(default)]
    pub recipients: RecipientCounts,
}

/// Recipient counts by share state.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecipientCounts {
    #[serde(default)]
    pub pending: i32,
    #[serde(default)]
    pub accepted: i32,
    #[serde(default)]
    pub rejected: i32,
    #[serde(default)]
    pub removed: i32,
}
