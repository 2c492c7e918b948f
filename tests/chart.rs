//! Checks of the Helm chart charts/ims-operator (README, "Install on a cluster"; docs/security.md).
//!
//! - Without helm: Chart.yaml's appVersion is the crate version, files/crds links to crds/,
//!   every value in values.yaml is in values.schema.json and documented.
//! - With helm (`helm lint`, `helm template`): the rendered CRDs are crds/, the Deployment is
//!   hardened and probed, the ClusterRole holds every permission the operator's grants hand out
//!   (the RBAC escalation rule), leader election and kubevirt switch what they should, and bad
//!   values are refused. When helm is missing the test fails under CI (which installs it, see
//!   .ci/run) and is skipped with a notice otherwise.
//! - The ValidatingAdmissionPolicies' CEL, evaluated offline with kube's VAP evaluator; the
//!   `authorizer` library it lacks is stood in for by a fake authorizer (see below).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex, OnceLock},
};

use ims_operator::{
    api::{FileFormat, FileSource, ImageSource, PrivateImage, PrivateImageSpec, ServerSource, VolumeSource},
    config::Config,
    core::{
        grants::{build_grant_with, grant_rules},
        permissions::{self, AdmissionCheck, SourceKind, Target},
    },
    yaml,
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    rbac::v1::{ClusterRole, PolicyRule},
};
use kube::core::cel::{
    AdmissionRequest, GroupVersionKind, GroupVersionResource, KubeCelExt, VapEvaluator, VapExpression,
    cel::{
        self, Program,
        objects::{Key, Map},
    },
};
use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    repo().join("charts/ims-operator")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_file(path: &Path) -> Value {
    yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// =============================================================================================
// (a) Static checks, no helm needed.

#[test]
fn app_version_is_the_crate_version() {
    let chart = yaml_file(&chart_dir().join("Chart.yaml"));
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "ims-operator");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "Chart.yaml appVersion must equal the crate version (the default image tag)"
    );
    let version = chart["version"].as_str().expect("Chart.yaml has a version");
    assert_eq!(version.split('.').count(), 3, "chart version {version} is SemVer");
}

#[test]
fn files_crds_is_a_symlink_to_the_repository_crds() {
    let link = chart_dir().join("files/crds");
    let meta = std::fs::symlink_metadata(&link).expect("charts/ims-operator/files/crds exists");
    assert!(
        meta.file_type().is_symlink(),
        "files/crds must be a symlink, not a copy"
    );
    let target = std::fs::read_link(&link).unwrap();
    assert!(
        target.is_relative(),
        "the symlink must be relative (it is resolved in clones): {}",
        target.display()
    );
    assert_eq!(
        link.canonicalize().unwrap(),
        repo().join("crds").canonicalize().unwrap(),
        "files/crds must resolve to the repository's crds/"
    );
    let crds: BTreeSet<String> = std::fs::read_dir(&link)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        crds,
        BTreeSet::from(
            [
                "imageoffers.ims.imageshare.io.yaml",
                "imagequotas.ims.imageshare.io.yaml",
                "imageshares.ims.imageshare.io.yaml",
                "privateimages.ims.imageshare.io.yaml",
                "shareacceptances.ims.imageshare.io.yaml"
            ]
            .map(String::from)
        )
    );
}

/// Resolves a local `$ref` (`#/definitions/x`) of values.schema.json.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("non-local $ref {reference}"));
            resolve(
                root,
                root.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}")),
            )
        }
        None => node,
    }
}

/// Walks values.yaml along values.schema.json. A key is a leaf when its schema has no fixed
/// `properties` (a scalar, a list, or a free-form map such as `nodeSelector` or
/// `resources.requests`). Every key must be declared by the schema.
fn walk_values(root: &Value, schema: &Value, value: &Value, path: &str, leaves: &mut Vec<String>) {
    let schema = resolve(root, schema);
    match (value, schema.get("properties").and_then(Value::as_object)) {
        (Value::Object(map), Some(properties)) => {
            assert_eq!(schema["type"], "object", "{path}: schema type");
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let child_schema = properties
                    .get(key)
                    .unwrap_or_else(|| panic!("values.yaml key {child_path} is not in values.schema.json"));
                walk_values(root, child_schema, child, &child_path, leaves);
            }
        }
        (_, Some(_)) => panic!("{path}: values.yaml has {value} where the schema expects an object"),
        (value, None) => {
            if let Some(expected) = schema.get("type").and_then(Value::as_str) {
                let actual = match value {
                    Value::Null => "null",
                    Value::Bool(_) => "boolean",
                    Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
                    Value::Number(_) => "number",
                    Value::String(_) => "string",
                    Value::Array(_) => "array",
                    Value::Object(_) => "object",
                };
                assert_eq!(
                    actual, expected,
                    "{path}: default value {value} has the wrong type for the schema"
                );
            }
            leaves.push(path.to_string());
        }
    }
}

fn values_leaves() -> Vec<String> {
    let schema: Value = serde_json::from_str(&read(&chart_dir().join("values.schema.json"))).unwrap();
    let values = yaml_file(&chart_dir().join("values.yaml"));
    let mut leaves = Vec::new();
    walk_values(&schema, &schema, &values, "", &mut leaves);
    leaves
}

#[test]
fn every_value_is_in_the_schema_and_every_schema_property_has_a_default() {
    let leaves = values_leaves();
    assert!(leaves.len() >= 25, "values.yaml parsed to only {leaves:?}");
    assert!(leaves.contains(&"config.limits.recipientsPerImage".to_string()));
    // The other way round: every property of the schema has a default in values.yaml, so
    // values.yaml is the complete list of settings (`global` is Helm's, for subcharts).
    let schema: Value = serde_json::from_str(&read(&chart_dir().join("values.schema.json"))).unwrap();
    let values = yaml_file(&chart_dir().join("values.yaml"));
    fn properties(root: &Value, node: &Value, path: &str, out: &mut Vec<String>) {
        let node = resolve(root, node);
        for (key, child) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let child_path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            out.push(child_path.clone());
            properties(root, child, &child_path, out);
        }
    }
    let mut declared = Vec::new();
    properties(&schema, &schema, "", &mut declared);
    for path in declared.iter().filter(|p| *p != "global") {
        let pointer = format!("/{}", path.replace('.', "/"));
        assert!(
            values.pointer(&pointer).is_some(),
            "values.schema.json declares {path}, values.yaml has no default"
        );
    }
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown top-level values must be refused"
    );
}

/// (dotted path, has a `#` comment line directly above) of every key line of values.yaml.
fn values_key_comments(text: &str) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            continue;
        }
        while stack.last().is_some_and(|(level, _)| *level >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        let path = stack.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>().join(".");
        let commented = i > 0 && lines[i - 1].trim_start().starts_with('#');
        out.insert(path, commented);
    }
    out
}

#[test]
fn every_value_is_documented_in_values_yaml_and_the_readme() {
    let comments = values_key_comments(&read(&chart_dir().join("values.yaml")));
    let readme = read(&chart_dir().join("README.md"));
    let mut undocumented = Vec::new();
    let mut not_in_readme = Vec::new();
    for leaf in values_leaves() {
        assert!(
            comments.contains_key(&leaf),
            "{leaf} not found by the line scanner: {comments:?}"
        );
        let parent = leaf.rsplit_once('.').map(|(p, _)| p.to_string());
        let documented = comments[&leaf] || parent.as_ref().is_some_and(|p| comments.get(p) == Some(&true));
        if !documented {
            undocumented.push(leaf.clone());
        }
        let in_table = |p: &str| readme.contains(&format!("| `{p}` |"));
        if !in_table(&leaf) && !parent.as_deref().is_some_and(in_table) {
            not_in_readme.push(leaf);
        }
    }
    assert!(
        undocumented.is_empty(),
        "values without a `#` comment directly above them or above their parent key: {undocumented:?}"
    );
    assert!(
        not_in_readme.is_empty(),
        "values missing from the Values table of the chart README: {not_in_readme:?}"
    );
}

// =============================================================================================
// (b) Rendering with helm.

fn helm_available() -> bool {
    Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True when helm can be used; without it the test fails under CI and is skipped otherwise.
fn need_helm(test: &str) -> bool {
    if helm_available() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: helm is not on PATH, but CI is set: CI installs it (bash .ci/install-helm.sh)");
    }
    // Straight to the process's stderr: the test harness captures eprintln! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "NOTICE: {test} skipped: helm is not on PATH (install it with `bash .ci/install-helm.sh`)"
    );
    false
}

fn helm(args: &[&str]) -> Output {
    Command::new("helm")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("helm {args:?}: {e}"))
}

/// `helm template t charts/ims-operator ARGS`, parsed into documents (JSON values).
fn template(extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "t", "charts/ims-operator", "--namespace", "ims-system"];
    args.extend_from_slice(extra);
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    yaml::documents(&text)
        .into_iter()
        .map(|doc| doc.expect("helm template output is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

const FULL: &str = "kubevirt.enabled=true,serviceMonitor.enabled=true,leaderElection.enabled=false";

fn rendered_default() -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| template(&[]))
}

fn rendered_full() -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| template(&["--set", FULL]))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected exactly one {kind}, found {}", found.len());
    found[0]
}

/// The document of a kind and name (names of release `t`: `t-ims-operator…`).
fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// The operator's own ClusterRole (the others are the tenant roles).
const OPERATOR: &str = "t-ims-operator";

#[test]
fn helm_lint_strict_passes() {
    if !need_helm("helm_lint_strict_passes") {
        return;
    }
    for set in [None, Some(FULL)] {
        let mut args = vec!["lint", "--strict", "charts/ims-operator"];
        if let Some(set) = set {
            args.extend(["--set", set]);
        }
        let out = helm(&args);
        assert!(
            out.status.success(),
            "helm {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Without metadata.labels/annotations, and with whole floats as integers (crds/ says
/// `maximum: 2048.0`, Helm's toYaml writes `2048`: the same number to the API server).
fn comparable(mut crd: Value) -> Value {
    fn normalize(v: &mut Value) {
        match v {
            Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap();
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    *v = json!(f as i64);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(normalize),
            Value::Object(map) => map.values_mut().for_each(normalize),
            _ => {}
        }
    }
    let meta = crd["metadata"].as_object_mut().unwrap();
    meta.remove("labels");
    meta.remove("annotations");
    normalize(&mut crd);
    crd
}

#[test]
fn rendered_crds_are_the_crds_folder_and_are_kept_on_uninstall() {
    if !need_helm("rendered_crds_are_the_crds_folder_and_are_kept_on_uninstall") {
        return;
    }
    for docs in [rendered_default(), rendered_full()] {
        let crds = of_kind(docs, "CustomResourceDefinition");
        assert_eq!(crds.len(), 5, "every CRD rendered");
        for crd in crds {
            let name = crd["metadata"]["name"].as_str().unwrap();
            let file = yaml_file(&repo().join("crds").join(format!("{name}.yaml")));
            assert!(
                comparable(crd.clone()) == comparable(file),
                "{name}: the rendered CRD differs from crds/{name}.yaml"
            );
            let annotations = &crd["metadata"]["annotations"];
            assert_eq!(annotations["helm.sh/resource-policy"], "keep", "{name}");
            assert_eq!(annotations["argocd.argoproj.io/sync-options"], "Delete=false", "{name}");
            let labels = &crd["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/part-of"], "ims-operator", "{name}");
            assert_eq!(labels["app.kubernetes.io/version"], env!("CARGO_PKG_VERSION"), "{name}");
        }
    }
    // crds.keep=false drops the policy; crds.install=false drops the CRDs.
    let docs = template(&["--set", "crds.keep=false"]);
    for crd in of_kind(&docs, "CustomResourceDefinition") {
        assert!(crd["metadata"]["annotations"].get("helm.sh/resource-policy").is_none());
    }
    let docs = template(&["--set", "crds.install=false"]);
    assert!(of_kind(&docs, "CustomResourceDefinition").is_empty());
}

fn deployment(docs: &[Value]) -> Deployment {
    serde_json::from_value(one(docs, "Deployment").clone()).expect("the Deployment is a valid apps/v1 Deployment")
}

#[test]
fn deployment_is_hardened_probed_and_configured() {
    if !need_helm("deployment_is_hardened_probed_and_configured") {
        return;
    }
    for docs in [rendered_default(), rendered_full()] {
        let deploy = deployment(docs);
        let pod = deploy.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let pod_sc = pod.security_context.clone().unwrap_or_default();
        assert_eq!(pod.containers.len(), 1);
        let c = &pod.containers[0];
        let sc = c.security_context.clone().expect("container securityContext");
        assert!(
            sc.run_as_non_root == Some(true) || pod_sc.run_as_non_root == Some(true),
            "runAsNonRoot at pod or container level"
        );
        assert_ne!(sc.run_as_user.or(pod_sc.run_as_user), Some(0), "must not run as UID 0");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_ne!(sc.privileged, Some(true));
        let drop = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.clone())
            .unwrap_or_default();
        assert!(
            drop.iter().any(|d| d == "ALL"),
            "capabilities.drop must contain ALL: {drop:?}"
        );
        assert!(
            sc.capabilities
                .as_ref()
                .and_then(|c| c.add.as_ref())
                .is_none_or(|a| a.is_empty()),
            "no capabilities added"
        );
        let seccomp = sc
            .seccomp_profile
            .as_ref()
            .or(pod_sc.seccomp_profile.as_ref())
            .expect("seccompProfile");
        assert_eq!(seccomp.type_, "RuntimeDefault");
        assert_ne!(pod.host_network, Some(true));
        assert_ne!(pod.host_pid, Some(true));

        // Probes on the container's named port.
        let ports: BTreeSet<String> = c.ports.iter().flatten().filter_map(|p| p.name.clone()).collect();
        for (probe, path) in [(&c.liveness_probe, "/livez"), (&c.readiness_probe, "/readyz")] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .unwrap_or_else(|| panic!("{path} probe"));
            assert_eq!(get.path.as_deref(), Some(path));
            match &get.port {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => {
                    assert!(
                        ports.contains(name),
                        "probe port {name} is not a container port {ports:?}"
                    )
                }
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => {
                    assert!(c.ports.iter().flatten().any(|p| p.container_port == *n))
                }
            }
        }
        assert!(
            c.resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .is_some_and(|l| l.contains_key("memory"))
        );

        // `run --config FILE`, FILE in the mounted ConfigMap, whose config.yaml the operator reads.
        let args = c.args.clone().unwrap_or_default();
        assert_eq!(args.first().map(String::as_str), Some("run"), "args: {args:?}");
        let config_path = args
            .iter()
            .find_map(|a| a.strip_prefix("--config="))
            .or_else(|| args.iter().position(|a| a == "--config").map(|i| args[i + 1].as_str()))
            .unwrap_or_else(|| panic!("no --config in {args:?}"));
        let (dir, file) = config_path.rsplit_once('/').unwrap();
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == dir)
            .unwrap_or_else(|| panic!("{dir} is not mounted"));
        let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).unwrap();
        let cm_name = volume
            .config_map
            .as_ref()
            .expect("the config volume is a ConfigMap")
            .name
            .clone();
        let cm = of_kind(docs, "ConfigMap")
            .into_iter()
            .find(|cm| cm["metadata"]["name"] == cm_name.as_str())
            .unwrap_or_else(|| panic!("ConfigMap {cm_name} not rendered"));
        let text = cm["data"][file]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap {cm_name} has no {file}"));
        let config = Config::parse(text).unwrap_or_else(|e| panic!("the rendered config does not load: {e}"));
        // kubevirt.enabled reaches the file too, so that `simulate --config` with it judges
        // volume and server sources as `run` does.
        let kubevirt = std::ptr::eq(docs, rendered_full());
        assert_eq!(
            config,
            Config {
                kubevirt,
                ..Config::default()
            },
            "the chart's default config is the operator's default"
        );

        // The pods are selected by the Deployment and the Service.
        let spec = deploy.spec.as_ref().unwrap();
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap_or_default();
        for (k, v) in spec.selector.match_labels.iter().flatten() {
            assert_eq!(pod_labels.get(k), Some(v), "selector {k}={v}");
        }
        let service = one(docs, "Service");
        for (k, v) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(
                pod_labels.get(k).map(String::as_str),
                v.as_str(),
                "Service selector {k}"
            );
        }
        assert!(
            service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["targetPort"] == "http")
        );

        // The ServiceAccount the pods run as is the one the ClusterRoleBinding binds.
        let sa = pod.service_account_name.clone().expect("serviceAccountName");
        assert_eq!(one(docs, "ServiceAccount")["metadata"]["name"], sa.as_str());
        let binding = one(docs, "ClusterRoleBinding");
        assert_eq!(binding["roleRef"]["name"], OPERATOR);
        named(docs, "ClusterRole", OPERATOR);
        assert!(
            binding["subjects"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa.as_str() && s["namespace"] == "ims-system")
        );
    }
}

#[test]
fn leader_election_and_kubevirt_switch_args_and_rbac() {
    if !need_helm("leader_election_and_kubevirt_switch_args_and_rbac") {
        return;
    }
    // Default: leader election on, kubevirt off.
    let docs = rendered_default();
    let deploy = deployment(docs);
    let args = deploy.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(args.contains(&"--leader-elect".to_string()), "{args:?}");
    assert!(!args.contains(&"--kubevirt".to_string()), "{args:?}");
    let lease = args
        .iter()
        .find_map(|a| a.strip_prefix("--lease-name="))
        .expect("--lease-name");
    let role = one(docs, "Role");
    let rules: Vec<PolicyRule> = serde_json::from_value(role["rules"].clone()).unwrap();
    assert!(
        rules
            .iter()
            .all(|r| r.api_groups.as_deref() == Some(&["coordination.k8s.io".to_string()][..]))
    );
    assert!(
        rules.iter().any(|r| r.verbs.contains(&"update".to_string())
            && r.resource_names.as_deref() == Some(&[lease.to_string()][..])),
        "the Lease Role updates exactly the operator's Lease {lease}: {rules:?}"
    );
    assert_eq!(role["metadata"]["namespace"], "ims-system");
    assert_eq!(one(docs, "RoleBinding")["roleRef"]["name"], role["metadata"]["name"]);
    assert!(of_kind(docs, "ServiceMonitor").is_empty());

    // leaderElection=false: no Lease Role, no --leader-elect, Recreate; kubevirt on; ServiceMonitor.
    let docs = rendered_full();
    let deploy = deployment(docs);
    let spec = deploy.spec.as_ref().unwrap();
    let args = spec.template.spec.as_ref().unwrap().containers[0].args.clone().unwrap();
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--leader-elect") || a.starts_with("--lease-name")),
        "{args:?}"
    );
    assert!(args.contains(&"--kubevirt".to_string()), "{args:?}");
    assert!(
        of_kind(docs, "Role").is_empty(),
        "leaderElection.enabled=false renders no Lease Role"
    );
    assert!(of_kind(docs, "RoleBinding").is_empty());
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate")
    );
    let monitor = one(docs, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http");
}

fn cluster_role(docs: &[Value]) -> Vec<PolicyRule> {
    let role: ClusterRole = serde_json::from_value(named(docs, "ClusterRole", OPERATOR).clone()).unwrap();
    role.rules.unwrap_or_default()
}

/// Whether `held` (the operator's ClusterRole) covers every request `rule` allows — the check
/// the API server makes before letting the operator write a Role with `rule` (no `escalate`).
fn covers(held: &[PolicyRule], rule: &PolicyRule) -> Result<(), String> {
    let groups = rule.api_groups.clone().unwrap_or_default();
    let resources = rule.resources.clone().unwrap_or_default();
    let names: Vec<Option<String>> = match &rule.resource_names {
        Some(names) if !names.is_empty() => names.iter().cloned().map(Some).collect(),
        _ => vec![None],
    };
    let has = |list: &Option<Vec<String>>, x: &str| list.iter().flatten().any(|e| e == x || e == "*");
    for group in &groups {
        for resource in &resources {
            for verb in &rule.verbs {
                for name in &names {
                    let ok = held.iter().any(|h| {
                        has(&h.api_groups, group)
                            && has(&h.resources, resource)
                            && (h.verbs.iter().any(|v| v == verb || v == "*"))
                            && match (&h.resource_names, name) {
                                (None, _) => true,
                                (Some(allowed), _) if allowed.is_empty() => true,
                                (Some(allowed), Some(name)) => allowed.contains(name),
                                (Some(_), None) => false,
                            }
                    });
                    if !ok {
                        return Err(format!("{verb} {group}/{resource} {name:?}"));
                    }
                }
            }
        }
    }
    Ok(())
}

fn grant_image(source: ImageSource) -> PrivateImage {
    let mut image = PrivateImage::new(
        "ubuntu-golden",
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
    image.metadata.uid = Some("0000-1111".into());
    image
}

/// An image of each source kind, as the tests use them: a volume source names the PVC
/// `ubuntu-vm-disk`, a server source the VirtualMachine `ubuntu-builder`.
fn image_of_kind(kind: SourceKind) -> PrivateImage {
    grant_image(match kind {
        SourceKind::File => ImageSource {
            file: Some(FileSource {
                url: "s3://bucket/ubuntu.qcow2".into(),
                format: FileFormat::Qcow2,
            }),
            ..Default::default()
        },
        SourceKind::Volume => ImageSource {
            volume: Some(VolumeSource {
                persistent_volume_claim: "ubuntu-vm-disk".into(),
            }),
            ..Default::default()
        },
        SourceKind::Server => ImageSource {
            server: Some(ServerSource {
                name: "ubuntu-builder".into(),
            }),
            ..Default::default()
        },
    })
}

/// The disk claims of the VirtualMachine `ubuntu-builder` in these tests.
fn vm_claims() -> Vec<String> {
    vec!["ubuntu-data".into(), "ubuntu-root".into()]
}

#[test]
fn cluster_role_holds_every_permission_the_grants_hand_out() {
    if !need_helm("cluster_role_holds_every_permission_the_grants_hand_out") {
        return;
    }
    let claims = vm_claims();
    let grant = |kind| {
        build_grant_with(
            &image_of_kind(kind),
            &claims,
            &["tenant-b", "tenant-c"],
            &Vec::new().into(),
        )
    };
    let file_rules = grant(SourceKind::File).role().rules.unwrap();
    let volume_rules = grant(SourceKind::Volume).role().rules.unwrap();
    let server_rules = grant(SourceKind::Server).role().rules.unwrap();
    assert!(volume_rules.len() > file_rules.len());
    assert!(server_rules.len() > volume_rules.len());
    assert!(
        server_rules.iter().any(
            |r| r.resources.as_deref() == Some(&["datavolumes/source".to_string()][..])
                && r.resource_names.as_ref() == Some(&claims)
        ),
        "the server grant clones every disk claim: {server_rules:?}"
    );

    // With kubevirt the operator may write the grant of every kind of image.
    let full = cluster_role(rendered_full());
    for rule in file_rules.iter().chain(&volume_rules).chain(&server_rules) {
        covers(&full, rule).unwrap_or_else(|missing| {
            panic!("kubevirt.enabled=true: the ClusterRole lacks {missing}, which the grant Role {rule:?} hands out")
        });
    }
    // Spelled out, as docs/security.md lists them.
    for (verb, group, resource) in [
        ("get", "ims.imageshare.io", "privateimages"),
        ("get", "", "persistentvolumeclaims"),
        ("get", "kubevirt.io", "virtualmachines"),
        ("create", "cdi.kubevirt.io", "datavolumes/source"),
    ] {
        let probe = PolicyRule {
            api_groups: Some(vec![group.into()]),
            resources: Some(vec![resource.into()]),
            verbs: vec![verb.into()],
            ..Default::default()
        };
        covers(&full, &probe).unwrap_or_else(|m| panic!("kubevirt.enabled=true: ClusterRole lacks {m}"));
    }

    // Without kubevirt: file-source grants are covered. Volume and server sources are
    // SourceUnsupported then (never Ready, never offered, never granted), and the ClusterRole
    // holds no PVC, VirtualMachine or CDI permission at all.
    let default = cluster_role(rendered_default());
    for rule in &file_rules {
        covers(&default, rule).unwrap_or_else(|m| panic!("default values: the ClusterRole lacks {m}"));
    }
    for rules in [&volume_rules, &server_rules] {
        assert!(
            rules.iter().any(|r| covers(&default, r).is_err()),
            "without kubevirt the ClusterRole should not hold the PVC/VM/CDI permissions"
        );
    }

    // Least privilege: no wildcards, no secrets or pods, no escalate/bind/impersonate.
    for (label, rules) in [("default", &default), ("kubevirt", &full)] {
        for rule in rules {
            let all: Vec<&String> = rule
                .api_groups
                .iter()
                .flatten()
                .chain(rule.resources.iter().flatten())
                .chain(rule.verbs.iter())
                .collect();
            assert!(!all.iter().any(|s| s.contains('*')), "{label}: wildcard in {rule:?}");
            for forbidden in ["secrets", "pods", "serviceaccounts/token"] {
                assert!(
                    !rule.resources.iter().flatten().any(|r| r == forbidden),
                    "{label}: {forbidden} in {rule:?}"
                );
            }
            for verb in ["escalate", "bind", "impersonate", "update"] {
                if rule
                    .resources
                    .iter()
                    .flatten()
                    .any(|r| r == "roles" || r == "rolebindings")
                {
                    assert!(
                        !rule.verbs.iter().any(|v| v == verb),
                        "{label}: {verb} on RBAC in {rule:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn bad_values_make_helm_template_fail() {
    if !need_helm("bad_values_make_helm_template_fail") {
        return;
    }
    for (set, expect) in [
        ("config.limits.recipientsPerImage=-5", "recipientsPerImage"),
        ("replicas=x", "replicas"),
        ("logFormat=xml", "logFormat"),
        ("config.region=not a label", "region"),
        ("config.grantSubjects[0]=Robot:x", "grantSubjects"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("unknownKey=1", "unknownKey"),
        ("replicas=2,leaderElection.enabled=false", "leaderElection"),
    ] {
        let out = helm(&["template", "t", "charts/ims-operator", "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "helm template --set {set} must fail");
        assert!(
            stderr.contains(expect),
            "helm template --set {set}: the error should name {expect}: {stderr}"
        );
    }
    // Valid edge values render.
    template(&[
        "--set",
        "config.limits.recipientsPerImage=-1,replicas=3,config.region=cn-east_1.a",
    ]);
}
// =============================================================================================
// (c) The ValidatingAdmissionPolicies, evaluated offline.
//
// kube's VapEvaluator (kube-cel) binds `object`, `oldObject`, `request`, `params` and
// `namespaceObject`, but neither `authorizer` (it needs an API server) nor `variables`. The
// delete and status policies use neither and are evaluated with VapEvaluator as is. The
// source-access policy needs both: its matchCondition is evaluated with VapEvaluator, and its
// variables and validations with the same CEL engine plus a fake `authorizer` that answers
// from a list of allowed (group, resource/subresource, namespace, name, verb) tuples and
// records what it was asked — so the tests prove the policy asks the right questions and acts
// on the answers, not how a real authorizer answers them.

const POLICY_TEMPLATE: &str = "charts/ims-operator/templates/admission-policies.yaml";
/// Set to rewrite the generated chart file(s) instead of failing on drift.
const REGENERATE: &str = "IMS_REGENERATE_CHART";

#[test]
fn source_access_checks_file_is_generated_from_the_permission_list() {
    let path = repo().join(permissions::CHART_CHECKS_FILE);
    let generated = permissions::source_access_checks_yaml();
    if std::env::var_os(REGENERATE).is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} drifted from src/core/permissions.rs; run `{REGENERATE}=1 cargo test --test chart`",
        permissions::CHART_CHECKS_FILE
    );
    let parsed: Value = yaml::from_str(&generated).expect("the generated checks are YAML");
    for key in ["matchConditions", "variables", "validations"] {
        assert!(parsed[key].is_array(), "{key} in {parsed}");
    }
}

/// The policy documents read from the template text without helm: template comments are
/// dropped, `.Files.Get` is inlined, the release's name prefix is filled in, and the lines that
/// only add labels or guard the file are dropped. Documents with any other template action
/// (filled from values) can not be read this way and are left out.
fn policies_from_template_text() -> Vec<Value> {
    let mut text = read(&repo().join(POLICY_TEMPLATE));
    while let Some(start) = text.find("{{- /*") {
        let end = text[start..].find("*/ -}}").expect("unterminated template comment") + start + "*/ -}}".len();
        text.replace_range(start..end, "");
    }
    let text = text.replace("{{ $fullname }}", OPERATOR);
    let mut files: HashMap<String, String> = HashMap::new();
    let mut kept = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // `{{- $var := .Files.Get "path" }}`
        if let Some((var, path)) = trimmed
            .strip_prefix("{{- $")
            .and_then(|r| r.split_once(" := .Files.Get \""))
        {
            let path = path.split('"').next().unwrap();
            files.insert(var.to_string(), read(&chart_dir().join(path)));
            continue;
        }
        // `{{- $var | nindent N }}`
        if let Some((var, n)) = trimmed
            .strip_prefix("{{- $")
            .and_then(|r| r.strip_suffix(" }}"))
            .and_then(|r| r.split_once(" | nindent "))
        {
            let content = &files[var];
            let n: usize = n.parse().unwrap();
            for l in content.lines() {
                kept.push_str(&format!("{}{l}\n", " ".repeat(n)));
            }
            continue;
        }
        let only_guard = [
            "{{- if",
            "{{- end",
            "{{- fail",
            "{{- $fullname :=",
            "{{- include \"ims-operator.labels\"",
        ]
        .iter()
        .any(|p| trimmed.starts_with(p));
        if only_guard {
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    kept.split("\n---\n")
        .filter(|doc| !doc.contains("{{"))
        .map(|doc| yaml::from_str::<Value>(doc).expect("the policy template without actions is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The policies (kind ValidatingAdmissionPolicy) by the suffix of their name, rendered by helm
/// when it is there (and then checked against the text reading), else read from the text.
fn policies() -> BTreeMap<String, Value> {
    let from_text: BTreeMap<String, Value> = policies_from_template_text()
        .into_iter()
        .filter(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .map(|d| (policy_key(&d), d))
        .collect();
    assert!(
        from_text.contains_key("deny-delete-published-image") && from_text.contains_key("require-source-access"),
        "the text reading lost a policy: {:?}",
        from_text.keys().collect::<Vec<_>>()
    );
    if !helm_available() {
        return from_text;
    }
    let rendered: BTreeMap<String, Value> = of_kind(rendered_default(), "ValidatingAdmissionPolicy")
        .into_iter()
        .map(|d| (policy_key(d), d.clone()))
        .collect();
    for (key, doc) in &from_text {
        let other = rendered
            .get(key)
            .unwrap_or_else(|| panic!("{key} read from the template but not rendered by helm"));
        assert_eq!(doc["spec"], other["spec"], "{key}: the template text reading is off");
    }
    let bindings = of_kind(rendered_default(), "ValidatingAdmissionPolicyBinding");
    assert_eq!(bindings.len(), rendered.len());
    for doc in rendered.values() {
        let name = &doc["metadata"]["name"];
        assert!(
            bindings
                .iter()
                .any(|b| &b["spec"]["policyName"] == name && b["spec"]["validationActions"] == json!(["Deny"])),
            "no Deny binding for policy {name}"
        );
    }
    let off = template(&["--set", "admissionPolicies.enabled=false"]);
    assert!(of_kind(&off, "ValidatingAdmissionPolicy").is_empty());
    assert!(of_kind(&off, "ValidatingAdmissionPolicyBinding").is_empty());
    rendered
}

fn policy_key(doc: &Value) -> String {
    let name = doc["metadata"]["name"].as_str().expect("a policy has a name");
    name.strip_prefix(&format!("{OPERATOR}-"))
        .unwrap_or_else(|| panic!("policy {name} is not named after the release"))
        .to_string()
}

fn expressions(list: &Value) -> Vec<VapExpression> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|v| VapExpression {
            expression: v["expression"].as_str().unwrap().to_string(),
            message: v["message"].as_str().map(String::from),
            message_expression: v["messageExpression"].as_str().map(String::from),
        })
        .collect()
}

fn image_doc(published: Option<bool>, source: Value) -> Value {
    let mut spec = json!({"imageType": "SystemDisk", "diskSizeGiB": 40, "source": source});
    if let Some(p) = published {
        spec["published"] = json!(p);
    }
    json!({
        "apiVersion": "ims.imageshare.io/v1alpha1",
        "kind": "PrivateImage",
        "metadata": {"name": "lamp-market", "namespace": "tenant-a"},
        "spec": spec
    })
}

fn request(operation: &str, user: &str) -> AdmissionRequest {
    AdmissionRequest {
        operation: operation.into(),
        username: user.into(),
        uid: "u-1".into(),
        groups: vec!["system:authenticated".into()],
        name: "lamp-market".into(),
        namespace: "tenant-a".into(),
        dry_run: false,
        kind: GroupVersionKind {
            group: "ims.imageshare.io".into(),
            version: "v1alpha1".into(),
            kind: "PrivateImage".into(),
        },
        resource: GroupVersionResource {
            group: "ims.imageshare.io".into(),
            version: "v1alpha1".into(),
            resource: "privateimages".into(),
        },
    }
}

/// Whether a request passes a policy: None when its matchConditions leave it out, else the
/// result of each validation (evaluated by kube's VapEvaluator; no authorizer, no variables).
fn evaluate_plain(
    spec: &Value,
    old: Option<Value>,
    object: Option<Value>,
    req: AdmissionRequest,
) -> Option<Vec<(bool, Option<String>)>> {
    evaluate_in(spec, old, object, req, active_namespace())
}

/// The request's namespace as `namespaceObject`, not being deleted.
fn active_namespace() -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-a"}})
}

/// The request's namespace while it is being deleted.
fn terminating_namespace() -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": "tenant-a", "deletionTimestamp": "2026-06-01T00:00:00Z"}})
}

/// [`evaluate_plain`] with a given `namespaceObject`.
fn evaluate_in(
    spec: &Value,
    old: Option<Value>,
    object: Option<Value>,
    req: AdmissionRequest,
    namespace: Value,
) -> Option<Vec<(bool, Option<String>)>> {
    let mut builder = VapEvaluator::builder().request(req).namespace_object(namespace);
    if let Some(old) = old {
        builder = builder.old_object(old);
    }
    if let Some(object) = object {
        builder = builder.object(object);
    }
    let evaluator = builder.build();
    let conditions = expressions(&spec["matchConditions"]);
    if !evaluator.evaluate(&conditions).iter().all(|r| r.passed) {
        return None;
    }
    let results = evaluator.evaluate(&expressions(&spec["validations"]));
    Some(results.into_iter().map(|r| (r.passed, r.message)).collect())
}

#[test]
fn delete_published_image_policy() {
    let policies = policies();
    let policy = &policies["deny-delete-published-image"];
    let spec = &policy["spec"];
    assert_eq!(spec["failurePolicy"], "Fail");
    let rule = &spec["matchConstraints"]["resourceRules"][0];
    assert_eq!(rule["apiGroups"], json!(["ims.imageshare.io"]));
    assert_eq!(rule["resources"], json!(["privateimages"]));
    assert_eq!(rule["operations"], json!(["DELETE"]));
    let validations = expressions(&spec["validations"]);
    assert_eq!(validations.len(), 1);

    let file = json!({"file": {"url": "s3://market/lamp.qcow2", "format": "QCOW2"}});
    let delete = |old: Value, user: &str| evaluate_plain(spec, Some(old), None, request("DELETE", user));
    // Published: denied.
    let published = image_doc(Some(true), file.clone());
    let results = delete(published.clone(), "alice").expect("a user's delete is matched");
    assert!(!results[0].0, "{results:?}");
    let static_message = validations[0].message.clone().unwrap();
    assert!(static_message.contains("unpublish it first (set spec.published to false)"));
    // The message names the image, from the request (not from `oldObject.metadata.namespace`:
    // `namespace` is a CEL reserved word that kube-cel escapes in object keys).
    let message = results[0].1.clone().unwrap();
    assert!(
        message.starts_with("PrivateImage tenant-a/lamp-market is published"),
        "{message}"
    );
    let ctx = context(
        &Value::Null,
        &json!({"operation": "DELETE", "namespace": "tenant-a", "name": "lamp-market"}),
        &[],
    );
    let message = run(&ctx, validations[0].message_expression.as_deref().unwrap());
    assert_eq!(
        message,
        cel::Value::String(Arc::new(
            "PrivateImage tenant-a/lamp-market is published to the marketplace, and a published image can not be \
             deleted; unpublish it first (set spec.published to false), then delete it"
                .into()
        ))
    );
    // Not published, or `published` absent (the default false): allowed.
    for old in [image_doc(Some(false), file.clone()), image_doc(None, file.clone())] {
        let results = delete(old, "alice").unwrap();
        assert!(results[0].0, "{results:?}");
    }
    // An object without spec (never admitted by the schema, but the policy must not error).
    let results = delete(json!({"metadata": {"name": "x", "namespace": "tenant-a"}}), "alice").unwrap();
    assert!(results[0].0, "{results:?}");

    // Deleting a namespace deletes a published image with it, whoever the namespace controller
    // runs as; in a namespace that is not being deleted, nobody may, kube-system's controllers
    // included.
    for user in [
        "system:serviceaccount:kube-system:namespace-controller",
        "system:kube-controller-manager",
        "admin",
    ] {
        let results = evaluate_in(
            spec,
            Some(published.clone()),
            None,
            request("DELETE", user),
            terminating_namespace(),
        )
        .unwrap();
        assert!(results[0].0, "{user} in a terminating namespace: {results:?}");
    }
    for user in [
        "system:serviceaccount:kube-system:namespace-controller",
        "system:kube-controller-manager",
        "system:serviceaccount:kube-system:generic-garbage-collector",
    ] {
        let results = delete(published.clone(), user).unwrap_or_else(|| panic!("{user} must be matched"));
        assert!(!results[0].0, "{user}: {results:?}");
    }
}

// --- A fake `authorizer` for the CEL engine ----------------------------------------------------

fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap()),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => cel::Value::Map(Map {
            map: Arc::new(
                map.iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

fn field(map: &cel::Value, key: &str) -> Option<cel::Value> {
    match map {
        cel::Value::Map(m) => m.map.get(&Key::String(Arc::new(key.to_string()))).cloned(),
        _ => None,
    }
}

fn with_field(map: &cel::Value, key: &str, value: cel::Value) -> cel::Value {
    let mut entries: HashMap<Key, cel::Value> = match map {
        cel::Value::Map(m) => (*m.map).clone(),
        _ => HashMap::new(),
    };
    entries.insert(Key::String(Arc::new(key.to_string())), value);
    cel::Value::Map(Map { map: Arc::new(entries) })
}

fn text(value: Option<cel::Value>) -> String {
    match value {
        Some(cel::Value::String(s)) => (*s).clone(),
        _ => String::new(),
    }
}

type CelResult = Result<cel::Value, cel::ExecutionError>;

/// Questions the fake authorizer was asked, as `group/resource[/subresource]/namespace/name/verb`.
type Asked = Arc<Mutex<Vec<String>>>;

/// A CEL context with the Kubernetes libraries, the VAP variables and a fake authorizer that
/// allows exactly the `group/resource[/subresource]/namespace/name/verb` strings in `allowed`
/// (an empty name is a namespace-wide question).
fn context(object: &Value, request: &Value, allowed: &[&str]) -> cel::Context<'static> {
    context_recording(object, request, allowed, Asked::default())
}

fn context_recording(object: &Value, request: &Value, allowed: &[&str], asked: Asked) -> cel::Context<'static> {
    use cel::extractors::This;
    let mut ctx = cel::Context::default().with_all();
    ctx.add_variable_from_value("object", to_cel(object));
    ctx.add_variable_from_value("oldObject", cel::Value::Null);
    ctx.add_variable_from_value("request", to_cel(request));
    ctx.add_variable_from_value("authorizer", to_cel(&json!({"allow": allowed})));
    for key in ["group", "resource", "subresource", "namespace", "name"] {
        ctx.add_function(
            key,
            move |This(this): This<cel::Value>, arg: Arc<String>| -> CelResult {
                Ok(with_field(&this, key, cel::Value::String(arg)))
            },
        );
    }
    ctx.add_function(
        "check",
        move |This(this): This<cel::Value>, verb: Arc<String>| -> CelResult {
            let mut resource = text(field(&this, "resource"));
            let sub = text(field(&this, "subresource"));
            if !sub.is_empty() {
                resource = format!("{resource}/{sub}");
            }
            let question = format!(
                "{}/{resource}/{}/{}/{verb}",
                text(field(&this, "group")),
                text(field(&this, "namespace")),
                text(field(&this, "name"))
            );
            asked.lock().unwrap().push(question.clone());
            let allowed = match field(&this, "allow") {
                Some(cel::Value::List(list)) => list
                    .iter()
                    .any(|a| matches!(a, cel::Value::String(s) if **s == question)),
                _ => false,
            };
            Ok(with_field(&this, "allowed", cel::Value::Bool(allowed)))
        },
    );
    ctx.add_function("allowed", |This(this): This<cel::Value>| {
        matches!(field(&this, "allowed"), Some(cel::Value::Bool(true)))
    });
    ctx
}

fn run(ctx: &cel::Context, expression: &str) -> cel::Value {
    Program::compile(expression)
        .unwrap_or_else(|e| panic!("{expression}: does not compile: {e}"))
        .execute(ctx)
        .unwrap_or_else(|e| panic!("{expression}: evaluation error: {e}"))
}

/// Outcome of the source-access policy for one request: None when it does not match,
/// Some(Ok) when admitted, Some(Err(messages)) when denied.
fn source_policy(spec: &Value, object: &Value, user: &str, allowed: &[&str]) -> Option<Result<(), Vec<String>>> {
    source_policy_asked(spec, object, user, allowed).0
}

/// The same, with the sorted, distinct questions the authorizer was asked.
fn source_policy_asked(
    spec: &Value,
    object: &Value,
    user: &str,
    allowed: &[&str],
) -> (Option<Result<(), Vec<String>>>, BTreeSet<String>) {
    let req = request("CREATE", user);
    // matchConditions through kube's VapEvaluator (no authorizer needed there).
    let conditions = expressions(&spec["matchConditions"]);
    let matched = VapEvaluator::builder()
        .object(object.clone())
        .request(req.clone())
        .build()
        .evaluate(&conditions);
    if !matched.iter().all(|r| r.passed) {
        return (None, BTreeSet::new());
    }
    let request_json = json!({
        "operation": req.operation,
        "name": req.name,
        "namespace": req.namespace,
        "userInfo": {"username": req.username, "uid": req.uid, "groups": req.groups},
    });
    let asked = Asked::default();
    let mut ctx = context_recording(object, &request_json, allowed, asked.clone());
    let mut variables = json!({});
    for var in spec["variables"].as_array().unwrap() {
        let value = run(&ctx, var["expression"].as_str().unwrap());
        let cel::Value::Bool(b) = value else {
            panic!("variable {} is not a bool: {value:?}", var["name"])
        };
        variables[var["name"].as_str().unwrap()] = json!(b);
        ctx.add_variable_from_value("variables", to_cel(&variables));
    }
    let mut denied = Vec::new();
    for v in spec["validations"].as_array().unwrap() {
        match run(&ctx, v["expression"].as_str().unwrap()) {
            cel::Value::Bool(true) => {}
            cel::Value::Bool(false) => {
                let message = match v["messageExpression"].as_str().map(|m| run(&ctx, m)) {
                    Some(cel::Value::String(s)) => (*s).clone(),
                    _ => v["message"].as_str().unwrap().to_string(),
                };
                denied.push(message);
            }
            other => panic!("validation returned {other:?}"),
        }
    }
    let asked: BTreeSet<String> = asked.lock().unwrap().iter().cloned().collect();
    (Some(if denied.is_empty() { Ok(()) } else { Err(denied) }), asked)
}

/// The `spec.source` of the test image of a kind, as JSON.
fn source_json(kind: SourceKind) -> Value {
    serde_json::to_value(&image_of_kind(kind).spec.source).unwrap()
}

/// The question the fake authorizer gets for an admission check of the test image.
fn question(check: &AdmissionCheck) -> String {
    let image = image_of_kind(check.kind);
    let source = SourceKind::object_name(&image.spec.source).unwrap();
    let p = check.permission;
    let name = if check.by_name { source } else { "" };
    format!("{}/{}/tenant-a/{name}/{}", p.group, p.resource, p.verb)
}

#[test]
fn source_access_policy() {
    let policies = policies();
    let policy = &policies["require-source-access"];
    let spec = &policy["spec"];
    assert_eq!(spec["failurePolicy"], "Fail");
    let rule = &spec["matchConstraints"]["resourceRules"][0];
    assert_eq!(rule["operations"], json!(["CREATE", "UPDATE"]));
    assert_eq!(
        rule["resources"],
        json!(["privateimages"]),
        "the operator's /status writes must not match"
    );

    // Every expression compiles (the evaluator compiles what it runs; check the rest too).
    let all: Vec<VapExpression> = [&spec["matchConditions"], &spec["variables"], &spec["validations"]]
        .into_iter()
        .flat_map(expressions)
        .collect();
    let evaluator = VapEvaluator::builder().object(json!({})).build();
    for (expr, compiled) in all.iter().zip(evaluator.compile_expressions(&all)) {
        compiled.unwrap_or_else(|e| panic!("{}: {e}", expr.expression));
    }
    assert!(
        all.iter().any(|e| e.expression.contains("authorizer")),
        "the policy asks the authorizer"
    );

    let pvc = source_json(SourceKind::Volume);
    let vm = source_json(SourceKind::Server);
    let file = source_json(SourceKind::File);
    const GET_PVC: &str = "/persistentvolumeclaims/tenant-a/ubuntu-vm-disk/get";
    const CLONE_PVC: &str = "cdi.kubevirt.io/datavolumes/source/tenant-a/ubuntu-vm-disk/create";
    const GET_VM: &str = "kubevirt.io/virtualmachines/tenant-a/ubuntu-builder/get";
    const GET_ANY_PVC: &str = "/persistentvolumeclaims/tenant-a//get";
    const CLONE_ANY: &str = "cdi.kubevirt.io/datavolumes/source/tenant-a//create";

    // File sources are not matched at all; neither is an object without a source.
    assert_eq!(source_policy(spec, &image_doc(None, file), "mallory", &[]), None);
    assert_eq!(
        source_policy(spec, &json!({"metadata": {"name": "x"}, "spec": {}}), "mallory", &[]),
        None
    );

    // A PVC source: admitted exactly when the user may get and clone that PVC in the image's
    // namespace.
    let doc = image_doc(None, pvc.clone());
    assert_eq!(source_policy(spec, &doc, "alice", &[GET_PVC, CLONE_PVC]), Some(Ok(())));
    // `get` alone (the stock `view` role) is not enough: a confused deputy.
    let denied = source_policy(spec, &doc, "viewer", &[GET_PVC]).unwrap().unwrap_err();
    assert_eq!(
        denied,
        [
            "user viewer may not create cdi.kubevirt.io datavolumes/source tenant-a/ubuntu-vm-disk, so PrivateImage \
          tenant-a/lamp-market can not use PersistentVolumeClaim tenant-a/ubuntu-vm-disk as spec.source.volume: \
          accepting recipients would get that permission (clone the disk of the image: the CDI clone permission) \
          through the grant of the image, and nobody may share more than they can do themselves"
        ]
    );
    for allowed in [
        &[CLONE_PVC][..],
        &["/persistentvolumeclaims/tenant-a/other-disk/get", CLONE_PVC],
        &["/persistentvolumeclaims/tenant-b/ubuntu-vm-disk/get", CLONE_PVC],
        &["/persistentvolumeclaims/tenant-a/ubuntu-vm-disk/list", CLONE_PVC],
        &[GET_VM, CLONE_PVC],
    ] {
        let denied = source_policy(spec, &doc, "mallory", allowed).unwrap().unwrap_err();
        assert_eq!(denied.len(), 1, "{denied:?}");
        assert!(
            denied[0].starts_with(
                "user mallory may not get persistentvolumeclaims tenant-a/ubuntu-vm-disk, so PrivateImage tenant-a/lamp-market can not use PersistentVolumeClaim tenant-a/ubuntu-vm-disk as spec.source.volume"
            ),
            "{denied:?}"
        );
    }
    // The clone right on another PVC, or under the core group, does not count.
    for clone in [
        "cdi.kubevirt.io/datavolumes/source/tenant-a/other-disk/create",
        "/datavolumes/source/tenant-a/ubuntu-vm-disk/create",
        "cdi.kubevirt.io/datavolumes/tenant-a/ubuntu-vm-disk/create",
    ] {
        let denied = source_policy(spec, &doc, "mallory", &[GET_PVC, clone])
            .unwrap()
            .unwrap_err();
        assert_eq!(denied.len(), 1, "{clone}: {denied:?}");
        assert!(
            denied[0].contains("may not create cdi.kubevirt.io datavolumes/source"),
            "{denied:?}"
        );
    }

    // A VirtualMachine source: get on it by name, and get and clone on the namespace's claims
    // (its disks are not known at admission).
    let doc = image_doc(None, vm);
    assert_eq!(
        source_policy(spec, &doc, "alice", &[GET_VM, GET_ANY_PVC, CLONE_ANY]),
        Some(Ok(()))
    );
    let denied = source_policy(spec, &doc, "mallory", &[GET_VM, GET_ANY_PVC])
        .unwrap()
        .unwrap_err();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(
        denied[0].starts_with(
            "user mallory may not create cdi.kubevirt.io datavolumes/source in namespace tenant-a (any name: the disks \
             of a VirtualMachine are not known at admission), so PrivateImage tenant-a/lamp-market can not use \
             VirtualMachine tenant-a/ubuntu-builder as spec.source.server"
        ),
        "{denied:?}"
    );
    for allowed in [
        &[GET_ANY_PVC, CLONE_ANY][..],
        &[GET_PVC, GET_ANY_PVC, CLONE_ANY],
        &["/virtualmachines/tenant-a/ubuntu-builder/get", GET_ANY_PVC, CLONE_ANY],
    ] {
        let denied = source_policy(spec, &doc, "mallory", allowed).unwrap().unwrap_err();
        assert_eq!(denied.len(), 1, "{denied:?}");
        assert!(
            denied[0].starts_with("user mallory may not get kubevirt.io virtualmachines tenant-a/ubuntu-builder"),
            "{denied:?}"
        );
    }
    // The clone right on one named claim is not the namespace-wide right.
    let denied = source_policy(
        spec,
        &doc,
        "mallory",
        &[
            GET_VM,
            GET_ANY_PVC,
            "cdi.kubevirt.io/datavolumes/source/tenant-a/ubuntu-root/create",
        ],
    )
    .unwrap()
    .unwrap_err();
    assert_eq!(denied.len(), 1, "{denied:?}");

    // With kube's own evaluator (no authorizer): the variables of the source kind that is not
    // set short-circuit to true without consulting the authorizer.
    let variables = expressions(&spec["variables"]);
    let results = VapEvaluator::builder()
        .object(image_doc(None, pvc))
        .request(request("CREATE", "alice"))
        .build()
        .evaluate(&variables);
    let server_checks: Vec<usize> = variables
        .iter()
        .enumerate()
        .filter(|(_, v)| v.expression.contains("source.server"))
        .map(|(i, _)| i)
        .collect();
    assert!(!server_checks.is_empty());
    for i in server_checks {
        assert!(results[i].passed, "{results:?}");
    }
}

/// For every source kind, the grant's rules and the admission checks come from the one list of
/// permissions and agree: the admission policy asks the authorizer exactly the questions the
/// list implies, every permission of the grant except the image's own is asked about, and a
/// user is admitted exactly when they hold all of them.
#[test]
fn grant_and_admission_checks_come_from_one_list_and_agree() {
    let policies = policies();
    let spec = &policies["require-source-access"]["spec"];
    let claims = vm_claims();
    for kind in SourceKind::ALL {
        let list = permissions::recipient_permissions(kind);
        let image = image_of_kind(kind);
        let rules = grant_rules(&image, &claims);
        let checks = permissions::admission_checks(kind);

        // The grant: one rule per permission of the list, by resourceName.
        assert_eq!(rules.len(), list.len(), "{kind:?}: {rules:?}");
        for (rule, p) in rules.iter().zip(list) {
            assert_eq!(rule.api_groups.as_deref(), Some(&[p.group.to_string()][..]), "{kind:?}");
            assert_eq!(
                rule.resources.as_deref(),
                Some(&[p.resource.to_string()][..]),
                "{kind:?}"
            );
            assert_eq!(rule.verbs, [p.verb], "{kind:?}");
            let names = rule.resource_names.clone().unwrap_or_default();
            let expected: Vec<String> = match p.target {
                Target::Image => vec!["ubuntu-golden".into()],
                Target::Source => vec![SourceKind::object_name(&image.spec.source).unwrap().into()],
                Target::EachDiskClaim => claims.clone(),
            };
            assert_eq!(names, expected, "{kind:?} {p:?}");
        }

        // Every rule of the grant but the image's own `get` is covered by an admission check:
        // the same group, resource and verb, by the same name or namespace-wide.
        for (rule, p) in rules.iter().zip(list) {
            if p.target == Target::Image {
                assert!(checks.iter().all(|c| c.permission != *p));
                continue;
            }
            let names = rule.resource_names.clone().unwrap();
            let covered = checks.iter().any(|c| {
                c.permission.group == p.group
                    && c.permission.resource == p.resource
                    && c.permission.verb == p.verb
                    && (!c.by_name || names == [SourceKind::object_name(&image.spec.source).unwrap()])
            });
            assert!(covered, "{kind:?}: the grant rule {rule:?} has no admission check");
        }

        // The policy asks exactly the questions the list implies.
        let expected: BTreeSet<String> = checks.iter().map(question).collect();
        let all: Vec<&str> = expected.iter().map(String::as_str).collect();
        let doc = image_doc(None, source_json(kind));
        let (outcome, asked) = source_policy_asked(spec, &doc, "alice", &all);
        if checks.is_empty() {
            assert_eq!(outcome, None, "{kind:?}: nothing to check, so not matched");
            continue;
        }
        assert_eq!(
            outcome,
            Some(Ok(())),
            "{kind:?}: a user holding every permission is admitted"
        );
        assert_eq!(asked, expected, "{kind:?}: the authorizer's questions");

        // Lacking any one of them is denied, with one message naming the user, the image, the
        // source and the missing permission.
        for missing in &checks {
            let allowed: Vec<&str> = all.iter().copied().filter(|q| *q != question(missing)).collect();
            let (outcome, asked) = source_policy_asked(spec, &doc, "mallory", &allowed);
            let denied = outcome.unwrap().unwrap_err();
            assert_eq!(asked, expected, "{kind:?}");
            assert_eq!(denied.len(), 1, "{kind:?} without {missing:?}: {denied:?}");
            let object = SourceKind::object_name(&image.spec.source).unwrap();
            for part in [
                "user mallory may not ".to_string(),
                missing.permission.describe(),
                "PrivateImage tenant-a/lamp-market".into(),
                format!("tenant-a/{object} as spec.source.{}", kind.field()),
            ] {
                assert!(denied[0].contains(&part), "{kind:?}: {part:?} not in {denied:?}");
            }
        }
        // In particular, everything but the clone right is not enough.
        let clone = checks
            .iter()
            .find(|c| c.permission.resource == "datavolumes/source")
            .unwrap_or_else(|| panic!("{kind:?}: no clone check"));
        let without_clone: Vec<&str> = all.iter().copied().filter(|q| *q != question(clone)).collect();
        assert!(
            matches!(source_policy(spec, &doc, "mallory", &without_clone), Some(Err(_))),
            "{kind:?}"
        );
    }
}

// --- The status policy, the tenant roles, the NetworkPolicy ----------------------------------

/// The plural resource names of the CRDs the operator serves.
/// The kinds only the operator writes; tenants read them.
const OWNED_KINDS: [&str; 2] = ["imagequotas", "imageoffers"];

/// The kinds tenants write (their spec; the status is the operator's).
fn crd_resources() -> BTreeSet<String> {
    ims_operator::api::crds()
        .iter()
        .map(|c| c.spec.names.plural.clone())
        .filter(|plural| !OWNED_KINDS.contains(&plural.as_str()))
        .collect()
}

fn status_request(operation: &str, user: &str, kind: &str, resource: &str) -> AdmissionRequest {
    let mut req = request(operation, user);
    req.kind.kind = kind.into();
    req.resource.resource = resource.into();
    req
}

#[test]
fn status_policy_lets_only_the_operator_write_status() {
    if !need_helm("status_policy_lets_only_the_operator_write_status") {
        return;
    }
    let policies = policies();
    let spec = &policies["status-is-the-operators"]["spec"];
    assert_eq!(spec["failurePolicy"], "Fail");
    let rules = spec["matchConstraints"]["resourceRules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["apiGroups"], json!(["ims.imageshare.io"]));
    assert_eq!(rules[0]["operations"], json!(["CREATE", "UPDATE"]));
    let resources: BTreeSet<String> = rules[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = crd_resources().iter().map(|r| format!("{r}/status")).collect();
    assert_eq!(
        resources, expected,
        "the /status of every kind of the group, and only that"
    );

    // The operator is the ServiceAccount the Deployment runs as, in the release namespace.
    let sa = one(rendered_default(), "ServiceAccount")["metadata"]["name"]
        .as_str()
        .unwrap();
    let operator = format!("system:serviceaccount:ims-system:{sa}");
    for (kind, resource) in [
        ("PrivateImage", "privateimages"),
        ("ImageShare", "imageshares"),
        ("ShareAcceptance", "shareacceptances"),
    ] {
        for operation in ["CREATE", "UPDATE"] {
            let ok = evaluate_plain(
                spec,
                None,
                Some(json!({})),
                status_request(operation, &operator, kind, resource),
            )
            .unwrap();
            assert!(
                ok.iter().all(|(passed, _)| *passed),
                "{operator} {operation} {kind}: {ok:?}"
            );
        }
        for user in [
            "alice",
            "system:serviceaccount:tenant-a:default",
            "system:serviceaccount:ims-system:default",
            "system:serviceaccount:other-ns:t-ims-operator",
            "system:admin",
        ] {
            let results = evaluate_plain(
                spec,
                None,
                Some(json!({})),
                status_request("UPDATE", user, kind, resource),
            )
            .unwrap();
            assert_eq!(results.len(), 1);
            assert!(!results[0].0, "{user} may not write the status of {kind}");
            let message = results[0].1.clone().unwrap();
            assert_eq!(
                message,
                format!(
                    "user {user} may not write the status of {kind} tenant-a/lamp-market: status is written only \
                     by the ims-operator ({operator})"
                )
            );
        }
    }
    // Another release namespace and name change who the operator is.
    let docs = template(&["--namespace", "platform", "--set", "fullnameOverride=imgs"]);
    let policy = named(&docs, "ValidatingAdmissionPolicy", "imgs-status-is-the-operators");
    assert!(
        policy["spec"]["validations"][0]["expression"]
            .as_str()
            .unwrap()
            .contains("'system:serviceaccount:platform:imgs'"),
        "{policy}"
    );
}

#[test]
fn tenant_roles_aggregate_into_the_stock_roles_without_status() {
    if !need_helm("tenant_roles_aggregate_into_the_stock_roles_without_status") {
        return;
    }
    let docs = rendered_default();
    let kinds = crd_resources();
    for (name, verbs, aggregate_to) in [
        (
            "t-ims-operator-tenant-view",
            &["get", "list", "watch"][..],
            &["view", "edit", "admin"][..],
        ),
        (
            "t-ims-operator-tenant-edit",
            &["create", "update", "patch", "delete"],
            &["edit", "admin"],
        ),
    ] {
        let doc = named(docs, "ClusterRole", name);
        let labels = doc["metadata"]["labels"].as_object().unwrap();
        for stock in ["view", "edit", "admin"] {
            let label = format!("rbac.authorization.k8s.io/aggregate-to-{stock}");
            assert_eq!(
                labels.get(&label).and_then(Value::as_str) == Some("true"),
                aggregate_to.contains(&stock),
                "{name}: {label}"
            );
        }
        let role: ClusterRole = serde_json::from_value(doc.clone()).unwrap();
        let rules = role.rules.unwrap();
        let (rule, owned) = match rules.as_slice() {
            [rule] => (rule, None),
            [rule, owned] => (rule, Some(owned)),
            other => panic!("{name}: {other:?}"),
        };
        // Tenants read the operator's own kinds, and nothing more.
        let owned_resources: Option<BTreeSet<String>> = owned.map(|o| o.resources.iter().flatten().cloned().collect());
        let expected_owned =
            (name.ends_with("view")).then(|| OWNED_KINDS.iter().map(|k| k.to_string()).collect::<BTreeSet<String>>());
        assert_eq!(owned_resources, expected_owned, "{name}");
        if let Some(owned) = owned {
            assert_eq!(owned.verbs, ["get", "list", "watch"], "{name}");
        }
        assert_eq!(rule.api_groups.as_deref(), Some(&["ims.imageshare.io".to_string()][..]));
        let resources: BTreeSet<String> = rule.resources.iter().flatten().cloned().collect();
        assert_eq!(resources, kinds, "{name}: exactly the three kinds, never /status");
        assert_eq!(rule.verbs, verbs, "{name}");
        assert!(rule.resource_names.is_none());
    }
    // No tenant role of any configuration touches /status or anything outside the group.
    for docs in [rendered_default(), rendered_full()] {
        for doc in of_kind(docs, "ClusterRole") {
            if doc["metadata"]["name"] == OPERATOR {
                continue;
            }
            let text = doc["rules"].to_string();
            assert!(!text.contains("/status"), "{text}");
            assert!(!text.contains('*'), "{text}");
        }
    }
    let off = template(&["--set", "tenantRoles.enabled=false"]);
    let names: Vec<&Value> = of_kind(&off, "ClusterRole")
        .iter()
        .map(|d| &d["metadata"]["name"])
        .collect();
    assert_eq!(names, [OPERATOR], "tenantRoles.enabled=false");
}

#[test]
fn network_policy_admits_only_the_http_port() {
    if !need_helm("network_policy_admits_only_the_http_port") {
        return;
    }
    for docs in [rendered_default(), rendered_full()] {
        let policy = one(docs, "NetworkPolicy");
        assert_eq!(policy["metadata"]["namespace"], "ims-system");
        let spec = &policy["spec"];
        let deploy = deployment(docs);
        let deploy_spec = deploy.spec.as_ref().unwrap();
        let selector = serde_json::to_value(&deploy_spec.selector.match_labels).unwrap();
        assert_eq!(
            spec["podSelector"]["matchLabels"], selector,
            "selects the operator pods"
        );
        assert_eq!(spec["policyTypes"], json!(["Ingress"]), "egress is left alone");
        let ingress = spec["ingress"].as_array().unwrap();
        assert_eq!(ingress.len(), 1);
        assert_eq!(ingress[0]["ports"], json!([{"port": "http", "protocol": "TCP"}]));
        assert!(ingress[0].get("from").is_none(), "any source by default");
        let container = &deploy_spec.template.spec.as_ref().unwrap().containers[0];
        let ports: Vec<_> = container.ports.iter().flatten().collect();
        assert_eq!(ports.len(), 1, "the http port is the only port: {ports:?}");
        assert_eq!(ports[0].name.as_deref(), Some("http"));
    }
    let docs = template(&[
        "--set-json",
        r#"networkPolicy.from=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]"#,
    ]);
    assert_eq!(
        one(&docs, "NetworkPolicy")["spec"]["ingress"][0]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])
    );
    let off = template(&["--set", "networkPolicy.enabled=false"]);
    assert!(of_kind(&off, "NetworkPolicy").is_empty());
    // A peer that is not a NetworkPolicyPeer is refused.
    let out = helm(&[
        "template",
        "t",
        "charts/ims-operator",
        "--set-json",
        r#"networkPolicy.from=[{"pods":{}}]"#,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("networkPolicy"));
}

#[test]
fn owned_kinds_policy_lets_only_the_operator_write_them() {
    if !need_helm("owned_kinds_policy_lets_only_the_operator_write_them") {
        return;
    }
    let policies = policies();
    let spec = &policies["owned-kinds-are-the-operators"]["spec"];
    assert_eq!(spec["failurePolicy"], "Fail");
    let rules = spec["matchConstraints"]["resourceRules"].as_array().unwrap();
    assert_eq!(rules[0]["operations"], json!(["CREATE", "UPDATE", "DELETE"]));
    let resources: BTreeSet<String> = rules[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = OWNED_KINDS
        .iter()
        .flat_map(|k| [k.to_string(), format!("{k}/status")])
        .collect();
    assert_eq!(resources, expected);
    let sa = one(rendered_default(), "ServiceAccount")["metadata"]["name"]
        .as_str()
        .unwrap();
    let operator = format!("system:serviceaccount:ims-system:{sa}");
    let quota = |operation: &str, user: &str| {
        let mut req = status_request(operation, user, "ImageQuota", "imagequotas");
        req.name = "ims".into();
        evaluate_plain(spec, Some(json!({})), Some(json!({})), req)
    };
    for operation in ["CREATE", "UPDATE", "DELETE"] {
        let ok = quota(operation, &operator).unwrap();
        assert!(ok.iter().all(|(passed, _)| *passed), "{operation}: {ok:?}");
        for user in ["alice", "system:serviceaccount:tenant-a:default", "system:admin"] {
            let denied = quota(operation, user).unwrap();
            assert!(!denied[0].0, "{user} {operation}");
            assert_eq!(
                denied[0].1.as_deref(),
                Some(
                    format!(
                        "user {user} may not {} ImageQuota tenant-a/ims: it is written only by the ims-operator ({operator})",
                        operation.to_lowercase()
                    )
                    .as_str()
                )
            );
        }
    }
    // Deleting a namespace deletes its ImageQuota, whoever the namespace controller runs as;
    // nothing else is allowed there either.
    for user in [
        "system:serviceaccount:kube-system:namespace-controller",
        "admin",
        "alice",
    ] {
        let mut req = status_request("DELETE", user, "ImageQuota", "imagequotas");
        req.name = "ims".into();
        let results = evaluate_in(spec, Some(json!({})), None, req, terminating_namespace()).unwrap();
        assert!(results[0].0, "{user} deletes with the namespace");
        let mut req = status_request("UPDATE", user, "ImageQuota", "imagequotas");
        req.name = "ims".into();
        let results = evaluate_in(spec, Some(json!({})), Some(json!({})), req, terminating_namespace()).unwrap();
        assert!(!results[0].0, "{user} may only delete");
    }
    // The operator may write them, and tenants' roles may only read them.
    let held = cluster_role(rendered_default());
    let owned_rule = held
        .iter()
        .find(|r| r.resources.as_deref() == Some(&["imagequotas".to_string(), "imageoffers".to_string()][..]))
        .expect("the operator's rule for its own kinds");
    assert_eq!(owned_rule.verbs, ["get", "list", "watch", "create", "patch", "delete"]);
    assert!(held.iter().any(|r| {
        r.resources
            .as_deref()
            .is_some_and(|res| res.contains(&"imagequotas/status".to_string()))
            && r.verbs == ["patch"]
    }));
}
