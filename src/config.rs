//! The operator's configuration file (see README.md), shared by `run --config` and
//! `simulate --config`, and rendered by the Helm chart from `values.yaml`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A limit value: a count, or `-1` for unlimited.
pub type Limit = i64;

/// Unlimited, as written in the config file and namespace annotations.
pub const UNLIMITED: Limit = -1;

/// The region a namespace without the region label belongs to, unless configured.
pub const DEFAULT_REGION: &str = "default";

/// Operator configuration. Every key is optional; a missing key keeps its default.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Region of namespaces that have no `ims.imageshare.io/region` label.
    #[serde(default = "default_region")]
    pub region: String,
    /// Default limits per tenant; namespace annotations override them.
    #[serde(default)]
    pub limits: Limits,
    /// Extra RoleBinding subjects per accepted recipient, e.g. `Group:{namespace}:image-users`.
    #[serde(default)]
    pub grant_subjects: Vec<String>,
    /// KubeVirt support, as `run --kubevirt` (either one turns it on): PVCs and KubeVirt
    /// VirtualMachines are watched and `volume` and `server` sources judged; without it such
    /// sources are `SourceUnsupported` — in `simulate` too, which reads the same key.
    #[serde(default)]
    pub kubevirt: bool,
}

/// The three per-tenant limits (`-1` = unlimited).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_private_images")]
    pub private_images_per_tenant: Limit,
    #[serde(default = "default_shared_images")]
    pub shared_images_per_tenant: Limit,
    #[serde(default = "default_recipients")]
    pub recipients_per_image: Limit,
}

fn default_region() -> String {
    DEFAULT_REGION.to_string()
}
fn default_private_images() -> Limit {
    10
}
fn default_shared_images() -> Limit {
    30
}
fn default_recipients() -> Limit {
    128
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            private_images_per_tenant: default_private_images(),
            shared_images_per_tenant: default_shared_images(),
            recipients_per_image: default_recipients(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            region: default_region(),
            limits: Limits::default(),
            grant_subjects: Vec::new(),
            kubevirt: false,
        }
    }
}

/// A RoleBinding subject template from `grantSubjects`, `{namespace}` standing for the
/// recipient namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectTemplate {
    /// `Group`, `User` or `ServiceAccount` (a service account of the recipient namespace).
    pub kind: String,
    pub name: String,
}

impl SubjectTemplate {
    /// Parses `Kind:name`, e.g. `Group:{namespace}:image-users` or `ServiceAccount:builder`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::Invalid {
            field: "grantSubjects".into(),
            message: format!(
                "{text:?}: {why}; expected Group:NAME, User:NAME or ServiceAccount:NAME, where NAME may contain {{namespace}}"
            ),
        };
        let (kind, name) = text.split_once(':').ok_or_else(|| bad("missing ':'"))?;
        if !matches!(kind, "Group" | "User" | "ServiceAccount") {
            return Err(bad("unknown subject kind"));
        }
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        Ok(SubjectTemplate {
            kind: kind.into(),
            name: name.into(),
        })
    }

    /// The subject name for one recipient namespace.
    pub fn render(&self, namespace: &str) -> String {
        self.name.replace("{namespace}", namespace)
    }
}

/// A configuration file that can not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: {field}: {message}")]
    Invalid { field: String, message: String },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text; an empty document is the default config.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            crate::yaml::from_str::<Option<Config>>(text)
                .map_err(|message| ConfigError::Parse {
                    path: String::new(),
                    message,
                })?
                .unwrap_or_default()
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("limits.privateImagesPerTenant", self.limits.private_images_per_tenant),
            ("limits.sharedImagesPerTenant", self.limits.shared_images_per_tenant),
            ("limits.recipientsPerImage", self.limits.recipients_per_image),
        ] {
            if value < UNLIMITED {
                return Err(ConfigError::Invalid {
                    field: field.into(),
                    message: format!("{value} is not a count >= 0 or -1 (unlimited)"),
                });
            }
        }
        if self.region.is_empty() {
            return Err(ConfigError::Invalid {
                field: "region".into(),
                message: "must not be empty".into(),
            });
        }
        self.subject_templates()?;
        Ok(())
    }

    /// The parsed `grantSubjects`.
    pub fn subject_templates(&self) -> Result<Vec<SubjectTemplate>, ConfigError> {
        self.grant_subjects.iter().map(|s| SubjectTemplate::parse(s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_keys_keep_defaults() {
        let c = Config::parse("limits: {recipientsPerImage: -1}\n").unwrap();
        assert_eq!(c.region, "default");
        assert_eq!(c.limits.private_images_per_tenant, 10);
        assert_eq!(c.limits.shared_images_per_tenant, 30);
        assert_eq!(c.limits.recipients_per_image, UNLIMITED);
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn kubevirt_is_off_unless_the_file_turns_it_on() {
        assert!(!Config::default().kubevirt);
        assert!(!Config::parse("region: eu\n").unwrap().kubevirt);
        assert!(Config::parse("kubevirt: true\n").unwrap().kubevirt);
        assert!(!Config::parse("kubevirt: false\n").unwrap().kubevirt);
        let e = Config::parse("kubevirt: maybe\n").unwrap_err().to_string();
        assert!(e.contains("kubevirt") || e.contains("bool"), "{e}");
    }

    #[test]
    fn rejects_bad_values_naming_the_field() {
        let e = Config::parse("limits: {sharedImagesPerTenant: -2}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.sharedImagesPerTenant"), "{e}");
        let e = Config::parse("limits: {sharedImages: 3}").unwrap_err().to_string();
        assert!(e.contains("sharedImages"), "{e}");
        let e = Config::parse("grantSubjects: [\"Robot:x\"]").unwrap_err().to_string();
        assert!(e.contains("grantSubjects"), "{e}");
    }

    #[test]
    fn subject_templates_render_the_namespace() {
        let c = Config::parse("grantSubjects: [\"Group:{namespace}:image-users\"]").unwrap();
        let t = &c.subject_templates().unwrap()[0];
        assert_eq!(t.kind, "Group");
        assert_eq!(t.render("tenant-b"), "tenant-b:image-users");
    }
}
