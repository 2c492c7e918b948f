//! Every CEL rule (`x-kubernetes-validations`) of the three CRDs, proven both ways — an object
//! the rule accepts and one it rejects — offline, with the `validate_cel()` /
//! `validate_cel_update(&old)` methods that `#[kube(cel)]` derives; plus the OpenAPI part of
//! the schemas (README, "The API") through `api::validation::validate`, the checker `simulate` uses.
//!
//! `every_cel_rule_of_the_crds_is_covered` lists the rules of the generated CRDs and fails when
//! one is added, moved or reworded without a test here.

use std::collections::BTreeSet;

use ims_operator::api::{
    self, Architecture, Decision, DecisionReason, FileFormat, FileSource, ImageOffer, ImageShare, ImageShareSpec,
    ImageSource, ImageType, OsType, PrivateImage, PrivateImageSpec, ReceivedImage, ServerSource, ShareAcceptance,
    ShareAcceptanceSpec, ShareAcceptanceStatus, ShareState, VolumeSource, validation,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResourceExt;
use kube::core::cel::ValidationErrors;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The rules, as written in the generated CRDs (kind, schema location, rule). Each test below
// names the rule it proves through these constants, and `COVERED` is the list the coverage test
// compares with the CRDs.

const NAME_IS_DNS_LABEL: &str =
    "self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')";
const DISK_SIZE_BY_TYPE: &str = "(has(self.imageType) && self.imageType == 'DataDisk') || self.diskSizeGiB <= 1024";
const IMMUTABLE: &str = "self == oldSelf";
const EXACTLY_ONE_SOURCE: &str =
    "(has(self.file) ? 1 : 0) + (has(self.volume) ? 1 : 0) + (has(self.server) ? 1 : 0) == 1";
const URL_SCHEME: &str = "self.matches('^(s3://[^/ ]+/[^ ]+|https://[^/ ]+/[^ ]+)$')";
const RECIPIENTS_OR_SELECTOR: &str =
    "(has(self.recipients) && size(self.recipients) > 0) || has(self.recipientSelector)";
const RECIPIENT_SELECTOR_NOT_EMPTY: &str = "!has(self.recipientSelector) || has(self.recipientSelector.matchLabels) || has(self.recipientSelector.matchExpressions)";
const RECIPIENT_SELECTOR_OPERATORS: &str = "!has(self.recipientSelector) || !has(self.recipientSelector.matchExpressions) || self.recipientSelector.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])";
const OWNER_SELECTOR_NOT_EMPTY: &str =
    "!has(self.ownerSelector) || has(self.ownerSelector.matchLabels) || has(self.ownerSelector.matchExpressions)";
const OWNER_SELECTOR_OPERATORS: &str = "!has(self.ownerSelector) || !has(self.ownerSelector.matchExpressions) || self.ownerSelector.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])";
const OWNER_XOR_SELECTOR: &str = "has(self.owner) != has(self.ownerSelector)";
const NO_IMAGES_WITH_SELECTOR: &str = "!has(self.ownerSelector) || !has(self.images) || size(self.images) == 0";

/// (kind, JSON path of the schema node inside openAPIV3Schema, rule) of every rule a test proves.
const COVERED: &[(&str, &str, &str)] = &[
    // private_image_name_must_be_a_dns_label
    ("PrivateImage", "", NAME_IS_DNS_LABEL),
    // disk_size_above_1024_only_for_data_disks
    ("PrivateImage", ".spec", DISK_SIZE_BY_TYPE),
    // image_type_is_immutable
    ("PrivateImage", ".spec.imageType", IMMUTABLE),
    // source_needs_exactly_one_of_file_volume_server
    ("PrivateImage", ".spec.source", EXACTLY_ONE_SOURCE),
    // source_is_immutable
    ("PrivateImage", ".spec.source", IMMUTABLE),
    // file_url_must_be_s3_or_https
    ("PrivateImage", ".spec.source.file.url", URL_SCHEME),
    // a_share_needs_recipients_or_a_selector
    ("ImageShare", ".spec", RECIPIENTS_OR_SELECTOR),
    // selectors_are_not_empty_and_use_known_operators
    ("ImageShare", ".spec", RECIPIENT_SELECTOR_NOT_EMPTY),
    ("ImageShare", ".spec", RECIPIENT_SELECTOR_OPERATORS),
    ("ShareAcceptance", ".spec", OWNER_SELECTOR_NOT_EMPTY),
    ("ShareAcceptance", ".spec", OWNER_SELECTOR_OPERATORS),
    // an_acceptance_names_an_owner_or_selects_owners
    ("ShareAcceptance", ".spec", OWNER_XOR_SELECTOR),
    // an_acceptance_by_selector_names_no_images
    ("ShareAcceptance", ".spec", NO_IMAGES_WITH_SELECTOR),
    // share_acceptance_owner_is_immutable
    ("ShareAcceptance", ".spec.owner", IMMUTABLE),
    // accepted_source_url_in_status_must_be_s3_or_https (FileSource reused in the status)
];

/// Every `x-kubernetes-validations` rule of a schema, with the JSON path of its node.
fn collect_rules(path: &str, schema: &Value, out: &mut Vec<(String, String)>) {
    let Some(node) = schema.as_object() else { return };
    for rule in node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push((
            path.to_string(),
            rule["rule"].as_str().expect("a rule is a string").to_string(),
        ));
    }
    for (key, child) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
        collect_rules(&format!("{path}.{key}"), child, out);
    }
    if let Some(items) = node.get("items") {
        collect_rules(&format!("{path}[]"), items, out);
    }
    if let Some(additional @ Value::Object(_)) = node.get("additionalProperties") {
        collect_rules(&format!("{path}{{}}"), additional, out);
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        for (i, branch) in node
            .get(combinator)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            collect_rules(&format!("{path}<{combinator}{i}>"), branch, out);
        }
    }
    if let Some(not) = node.get("not") {
        collect_rules(&format!("{path}<not>"), not, out);
    }
}

#[test]
fn every_cel_rule_of_the_crds_is_covered() {
    let mut generated = Vec::new();
    for crd in api::crds() {
        let kind = crd.spec.names.kind.clone();
        for version in &crd.spec.versions {
            let schema =
                serde_json::to_value(version.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap();
            let mut rules = Vec::new();
            collect_rules("", &schema, &mut rules);
            generated.extend(rules.into_iter().map(|(path, rule)| (kind.clone(), path, rule)));
        }
    }
    let covered: Vec<(String, String, String)> = COVERED
        .iter()
        .map(|(k, p, r)| (k.to_string(), p.to_string(), r.to_string()))
        .collect();
    assert_eq!(
        generated.len(),
        covered.len(),
        "the CRDs have {} CEL rules, the tests cover {}; add a test for each new rule (and to COVERED).\n\
         generated: {generated:#?}",
        generated.len(),
        covered.len()
    );
    let generated: BTreeSet<_> = generated.into_iter().collect();
    let covered: BTreeSet<_> = covered.into_iter().collect();
    assert_eq!(
        generated.symmetric_difference(&covered).collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "rules in the CRDs but not covered, or covered but no longer in the CRDs"
    );

    // The list above comes from the generated CRDs; src/api must not hold a rule that did not
    // make it into them (e.g. on a type no kind uses).
    let mut in_source = 0;
    let api_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    for entry in std::fs::read_dir(&api_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            in_source += std::fs::read_to_string(&path).unwrap().matches("Rule::new(").count();
        }
    }
    // Each Rule::new in src/api appears exactly once in the CRDs.
    assert_eq!(
        in_source,
        COVERED.len(),
        "Rule::new count in src/api changed; update COVERED and the tests"
    );
}

// ---------------------------------------------------------------------------------------------
// Builders.

fn file(url: &str) -> ImageSource {
    ImageSource {
        file: Some(FileSource {
            url: url.into(),
            format: FileFormat::Qcow2,
        }),
        ..Default::default()
    }
}

fn volume(pvc: &str) -> ImageSource {
    ImageSource {
        volume: Some(VolumeSource {
            persistent_volume_claim: pvc.into(),
        }),
        ..Default::default()
    }
}

fn server(vm: &str) -> ImageSource {
    ImageSource {
        server: Some(ServerSource { name: vm.into() }),
        ..Default::default()
    }
}

fn image_named(name: &str, image_type: ImageType, disk: i32, source: ImageSource) -> PrivateImage {
    let mut image = PrivateImage::new(
        name,
        PrivateImageSpec {
            display_name: Some("CentOS 7.6 web".into()),
            description: None,
            image_type,
            os_type: Some(OsType::Linux),
            os_version: Some("CentOS 7.6 64bit".into()),
            architecture: Architecture::X86_64,
            disk_size_gib: disk,
            min_memory_mib: None,
            source,
            published: false,
        },
    );
    image.metadata.namespace = Some("tenant-a".into());
    image
}

fn image(image_type: ImageType, disk: i32, source: ImageSource) -> PrivateImage {
    image_named("centos-web", image_type, disk, source)
}

fn ok_image() -> PrivateImage {
    image(ImageType::SystemDisk, 40, file("s3://tenant-a-images/centos.qcow2"))
}

fn acceptance(owner: &str, decision: Decision) -> ShareAcceptance {
    let mut sacc = ShareAcceptance::new(
        "from-tenant-a",
        ShareAcceptanceSpec {
            owner: owner.into(),
            owner_selector: None,
            images: vec!["centos-web".into()],
            decision,
        },
    );
    sacc.metadata.namespace = Some("tenant-b".into());
    sacc
}

/// Asserts that exactly the given rule failed, at the given field path, with its message.
#[track_caller]
fn assert_rejected_by(result: Result<(), ValidationErrors>, rule: &str, field_path: &str, message_part: &str) {
    let errors = result.expect_err("the object must be rejected").into_vec();
    assert_eq!(errors.len(), 1, "exactly one violation expected: {errors:#?}");
    let e = &errors[0];
    assert_eq!(e.rule, rule, "{errors:#?}");
    assert_eq!(e.field_path, field_path, "{errors:#?}");
    assert!(
        e.message.contains(message_part),
        "message {:?} lacks {message_part:?}",
        e.message
    );
}

#[track_caller]
fn assert_accepted(result: Result<(), ValidationErrors>) {
    if let Err(errors) = result {
        panic!("the object must be accepted: {errors:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// PrivateImage

#[test]
fn private_image_name_must_be_a_dns_label() {
    for name in ["centos-web", "a", "0", "img-7-6", &"a".repeat(63)] {
        assert_accepted(image_named(name, ImageType::SystemDisk, 40, file("s3://b/o")).validate_cel());
    }
    for name in [
        "CentOS-web",
        "centos_web",
        "centos.web",
        "-web",
        "web-",
        "ftp server",
        &"a".repeat(64),
    ] {
        assert_rejected_by(
            image_named(name, ImageType::SystemDisk, 40, file("s3://b/o")).validate_cel(),
            NAME_IS_DNS_LABEL,
            "",
            "must be a DNS label",
        );
    }
}

#[test]
fn disk_size_above_1024_only_for_data_disks() {
    let src = || file("s3://b/o");
    assert_accepted(image(ImageType::SystemDisk, 1024, src()).validate_cel());
    assert_accepted(image(ImageType::FullMachine, 1024, src()).validate_cel());
    assert_accepted(image(ImageType::DataDisk, 1025, src()).validate_cel());
    assert_accepted(image(ImageType::DataDisk, 2048, src()).validate_cel());
    for image_type in [ImageType::SystemDisk, ImageType::FullMachine] {
        for disk in [1025, 2048] {
            assert_rejected_by(
                image(image_type, disk, src()).validate_cel(),
                DISK_SIZE_BY_TYPE,
                "spec.diskSizeGiB",
                "between 40 and 1024",
            );
        }
    }
    // Without imageType (the schema default SystemDisk applies) the 1024 limit holds too.
    let schema = validation::schema_of("PrivateImage").unwrap();
    let mut doc = serde_json::to_value(image(ImageType::SystemDisk, 1025, src())).unwrap();
    doc["spec"].as_object_mut().unwrap().remove("imageType");
    let violations = validation::validate(&schema, &doc, None).unwrap_err();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].path, "spec.diskSizeGiB");
    assert!(violations[0].message.contains(DISK_SIZE_BY_TYPE), "{violations:?}");
    doc["spec"]["diskSizeGiB"] = json!(1024);
    validation::validate(&schema, &doc, None).unwrap();
}

#[test]
fn image_type_is_immutable() {
    let old = image(ImageType::SystemDisk, 100, file("s3://b/o"));
    // Unchanged imageType, other fields changed: fine.
    let mut same = old.clone();
    same.spec.display_name = Some("renamed".into());
    same.spec.published = true;
    same.spec.disk_size_gib = 200;
    assert_accepted(same.validate_cel_update(&old));
    for new_type in [ImageType::DataDisk, ImageType::FullMachine] {
        let mut changed = old.clone();
        changed.spec.image_type = new_type;
        assert_rejected_by(
            changed.validate_cel_update(&old),
            IMMUTABLE,
            "spec.imageType",
            "imageType is immutable",
        );
        // A transition rule does not apply on create.
        assert_accepted(changed.validate_cel());
    }
}

#[test]
fn source_needs_exactly_one_of_file_volume_server() {
    for source in [file("s3://b/o"), volume("ubuntu-vm-disk"), server("ubuntu-builder")] {
        assert_accepted(image(ImageType::SystemDisk, 40, source).validate_cel());
    }
    let none = ImageSource::default();
    let two = ImageSource {
        volume: Some(VolumeSource {
            persistent_volume_claim: "disk".into(),
        }),
        ..file("s3://b/o")
    };
    let three = ImageSource {
        server: Some(ServerSource { name: "vm".into() }),
        ..two.clone()
    };
    for source in [none, two, three] {
        assert_rejected_by(
            image(ImageType::SystemDisk, 40, source).validate_cel(),
            EXACTLY_ONE_SOURCE,
            "spec.source",
            "exactly one of source.file, source.volume or source.server",
        );
    }
}

#[test]
fn source_is_immutable() {
    let old = ok_image();
    assert_accepted(old.clone().validate_cel_update(&old));
    let mut published = old.clone();
    published.spec.published = true;
    assert_accepted(published.validate_cel_update(&old));
    for source in [
        file("s3://tenant-a-images/other.qcow2"),
        file("https://images.example.com/centos.qcow2"),
        volume("ubuntu-vm-disk"),
        server("ubuntu-builder"),
    ] {
        let mut changed = old.clone();
        changed.spec.source = source;
        assert_rejected_by(
            changed.validate_cel_update(&old),
            IMMUTABLE,
            "spec.source",
            "source is immutable",
        );
    }
    let mut raw = old.clone();
    raw.spec.source.file.as_mut().unwrap().format = FileFormat::Raw;
    assert_rejected_by(
        raw.validate_cel_update(&old),
        IMMUTABLE,
        "spec.source",
        "source is immutable",
    );
}

const GOOD_URLS: &[&str] = &[
    "s3://tenant-a-images/centos-7.6-web.qcow2",
    "s3://bucket/dir/sub/object.raw",
    "https://images.example.com/centos.qcow2",
    "https://host:8443/path/to/image?version=2",
];
const BAD_URLS: &[&str] = &[
    "http://images.example.com/centos.qcow2",
    "ftp://host/centos.qcow2",
    "s3://bucket",
    "s3://bucket/",
    "s3:///object",
    "https://host",
    "https://host/",
    "https://host/pa th",
    "S3://bucket/object",
    "/local/file.qcow2",
    " s3://bucket/object",
];

#[test]
fn file_url_must_be_s3_or_https() {
    for url in GOOD_URLS {
        assert_accepted(image(ImageType::SystemDisk, 40, file(url)).validate_cel());
    }
    for url in BAD_URLS {
        assert_rejected_by(
            image(ImageType::SystemDisk, 40, file(url)).validate_cel(),
            URL_SCHEME,
            "spec.source.file.url",
            "url must be s3://bucket/object or https://host/path",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// ShareAcceptance

#[test]
fn share_acceptance_owner_is_immutable() {
    let old = acceptance("tenant-a", Decision::Accept);
    // Decision and images may change: that is how a recipient rejects, removes, re-accepts.
    for decision in [Decision::Accept, Decision::Reject, Decision::Remove] {
        let mut changed = acceptance("tenant-a", decision);
        changed.spec.images = vec![];
        assert_accepted(changed.validate_cel_update(&old));
    }
    let moved = acceptance("tenant-c", Decision::Accept);
    assert_rejected_by(
        moved.validate_cel_update(&old),
        IMMUTABLE,
        "spec.owner",
        "owner is immutable",
    );
    assert_accepted(moved.validate_cel());
}

fn team_selector() -> LabelSelector {
    LabelSelector {
        match_labels: Some([("team".to_string(), "a".to_string())].into()),
        ..Default::default()
    }
}

#[test]
fn a_share_needs_recipients_or_a_selector() {
    let share = |recipients: Vec<String>, selector: Option<LabelSelector>| {
        ImageShare::new(
            "share",
            ImageShareSpec {
                images: vec!["centos-web".into()],
                recipients,
                recipient_selector: selector,
                expires_at: None,
            },
        )
    };
    assert_accepted(share(vec!["tenant-b".into()], None).validate_cel());
    assert_accepted(share(vec![], Some(team_selector())).validate_cel());
    assert_accepted(share(vec!["tenant-b".into()], Some(team_selector())).validate_cel());
    assert_rejected_by(
        share(vec![], None).validate_cel(),
        RECIPIENTS_OR_SELECTOR,
        "spec",
        "set spec.recipients, spec.recipientSelector or both",
    );
}

#[test]
fn an_acceptance_names_an_owner_or_selects_owners() {
    let mut by_selector = acceptance("", Decision::Accept);
    by_selector.spec.images = vec![];
    by_selector.spec.owner_selector = Some(team_selector());
    assert_accepted(by_selector.validate_cel());
    let mut both = by_selector.clone();
    both.spec.owner = "tenant-a".into();
    assert_rejected_by(
        both.validate_cel(),
        OWNER_XOR_SELECTOR,
        "spec",
        "set exactly one of spec.owner and spec.ownerSelector",
    );
    let mut neither = acceptance("", Decision::Accept);
    neither.spec.images = vec![];
    assert_rejected_by(
        neither.validate_cel(),
        OWNER_XOR_SELECTOR,
        "spec",
        "set exactly one of spec.owner and spec.ownerSelector",
    );
}

#[test]
fn selectors_are_not_empty_and_use_known_operators() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    let expression = |operator: &str| LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "team".into(),
            operator: operator.into(),
            values: Some(vec!["a".into()]),
        }]),
        ..Default::default()
    };
    let share = |selector: LabelSelector| {
        ImageShare::new(
            "share",
            ImageShareSpec {
                images: vec!["centos-web".into()],
                recipients: vec![],
                recipient_selector: Some(selector),
                expires_at: None,
            },
        )
    };
    let by = |selector: LabelSelector| {
        let mut a = acceptance("", Decision::Accept);
        a.spec.images.clear();
        a.spec.owner_selector = Some(selector);
        a
    };
    for operator in ["In", "NotIn", "Exists", "DoesNotExist"] {
        assert_accepted(share(expression(operator)).validate_cel());
        assert_accepted(by(expression(operator)).validate_cel());
    }
    assert_rejected_by(
        share(LabelSelector::default()).validate_cel(),
        RECIPIENT_SELECTOR_NOT_EMPTY,
        "spec",
        "spec.recipientSelector must not be empty",
    );
    assert_rejected_by(
        share(expression("Gt")).validate_cel(),
        RECIPIENT_SELECTOR_OPERATORS,
        "spec",
        "operators are In, NotIn, Exists or DoesNotExist",
    );
    assert_rejected_by(
        by(LabelSelector::default()).validate_cel(),
        OWNER_SELECTOR_NOT_EMPTY,
        "spec",
        "spec.ownerSelector must not be empty",
    );
    assert_rejected_by(
        by(expression("Gt")).validate_cel(),
        OWNER_SELECTOR_OPERATORS,
        "spec",
        "operators are In, NotIn, Exists or DoesNotExist",
    );
}

#[test]
fn an_acceptance_by_selector_names_no_images() {
    let mut by_selector = acceptance("", Decision::Reject);
    by_selector.spec.owner_selector = Some(team_selector());
    assert_rejected_by(
        by_selector.validate_cel(),
        NO_IMAGES_WITH_SELECTOR,
        "spec",
        "spec.images must be empty with spec.ownerSelector",
    );
    by_selector.spec.images.clear();
    assert_accepted(by_selector.validate_cel());
    // With an owner, images may be named.
    assert_accepted(acceptance("tenant-a", Decision::Reject).validate_cel());
}

#[test]
fn status_lists_carry_no_rule() {
    // The operator copies what an inbox lists from validated specs; a rule there would be
    // evaluated per listed image (up to 1,000) and eat the CRD's CEL cost budget, so there is
    // none, in the ShareAcceptance's entries nor anywhere in the ImageOffer.
    let mut sacc = acceptance("tenant-a", Decision::Accept);
    sacc.status = Some(ShareAcceptanceStatus {
        images: vec![ReceivedImage {
            name: "centos-web".into(),
            owner: None,
            state: ShareState::Accepted,
            reason: DecisionReason::ThisAcceptance,
            decided_by: None,
        }],
        ..Default::default()
    });
    assert_accepted(sacc.validate_cel());
    let offer = serde_json::to_string(&ImageOffer::crd()).unwrap();
    assert!(!offer.contains("x-kubernetes-validations"), "{offer}");
}

#[test]
fn image_share_has_no_cel_rules_and_valid_shares_pass() {
    let mut share = ImageShare::new(
        "share-centos",
        ImageShareSpec {
            images: vec!["centos-web".into()],
            recipients: vec!["tenant-b".into(), "tenant-c".into()],
            recipient_selector: None,
            expires_at: None,
        },
    );
    share.metadata.namespace = Some("tenant-a".into());
    assert_accepted(share.validate_cel());
    assert_accepted(share.clone().validate_cel_update(&share));
}

// ---------------------------------------------------------------------------------------------
// OpenAPI part, through the offline validator `simulate` uses (api::validation).

fn schema(kind: &str) -> Value {
    validation::schema_of(kind).unwrap_or_else(|| panic!("no schema for {kind}"))
}

fn image_doc() -> Value {
    json!({
        "apiVersion": api::API_VERSION,
        "kind": "PrivateImage",
        "metadata": {"name": "centos-web", "namespace": "tenant-a"},
        "spec": {
            "imageType": "SystemDisk",
            "osType": "Linux",
            "diskSizeGiB": 40,
            "source": {"file": {"url": "s3://tenant-a-images/centos.qcow2", "format": "QCOW2"}}
        }
    })
}

fn share_doc(images: Vec<String>, recipients: Vec<String>) -> Value {
    json!({
        "apiVersion": api::API_VERSION,
        "kind": "ImageShare",
        "metadata": {"name": "share", "namespace": "tenant-a"},
        "spec": {"images": images, "recipients": recipients}
    })
}

fn acceptance_doc() -> Value {
    json!({
        "apiVersion": api::API_VERSION,
        "kind": "ShareAcceptance",
        "metadata": {"name": "from-tenant-a", "namespace": "tenant-b"},
        "spec": {"owner": "tenant-a", "images": ["centos-web"], "decision": "Accept"}
    })
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Asserts a violation at `path` whose message contains every part; returns all violations.
#[track_caller]
fn assert_some_violation(kind: &str, doc: &Value, path: &str, parts: &[&str]) -> Vec<validation::Violation> {
    let violations = validation::validate(&schema(kind), doc, None).expect_err("the object must be rejected");
    assert!(
        violations
            .iter()
            .any(|v| v.path == path && parts.iter().all(|p| v.message.contains(p))),
        "expected a violation at {path} containing {parts:?}, got {violations:#?}"
    );
    violations
}

/// Asserts exactly one violation, at `path`, whose message contains every part.
#[track_caller]
fn assert_violation(kind: &str, doc: &Value, path: &str, parts: &[&str]) {
    let violations = assert_some_violation(kind, doc, path, parts);
    assert_eq!(violations.len(), 1, "exactly one violation expected: {violations:#?}");
}

#[test]
fn valid_documents_pass_the_offline_validator() {
    validation::validate(&schema("PrivateImage"), &image_doc(), None).unwrap();
    validation::validate(
        &schema("ImageShare"),
        &share_doc(names("img", 30), names("tenant", 128)),
        None,
    )
    .unwrap();
    validation::validate(&schema("ShareAcceptance"), &acceptance_doc(), None).unwrap();
    // Empty images = "all images of the owner".
    let mut all = acceptance_doc();
    all["spec"]["images"] = json!([]);
    validation::validate(&schema("ShareAcceptance"), &all, None).unwrap();
}

#[test]
fn enum_violations_name_the_field_and_the_allowed_values() {
    let mut doc = image_doc();
    doc["spec"]["imageType"] = json!("OsDisk");
    assert_violation(
        "PrivateImage",
        &doc,
        "spec.imageType",
        &[
            "Unsupported value: \"OsDisk\"",
            "\"SystemDisk\"",
            "\"DataDisk\"",
            "\"FullMachine\"",
        ],
    );
    let mut doc = image_doc();
    doc["spec"]["architecture"] = json!("arm64");
    assert_violation(
        "PrivateImage",
        &doc,
        "spec.architecture",
        &["Unsupported value", "\"aarch64\""],
    );
    let mut doc = image_doc();
    doc["spec"]["source"]["file"]["format"] = json!("qcow2");
    assert_violation(
        "PrivateImage",
        &doc,
        "spec.source.file.format",
        &["Unsupported value", "\"QCOW2\""],
    );
    let mut doc = acceptance_doc();
    doc["spec"]["decision"] = json!("Ignore");
    assert_violation(
        "ShareAcceptance",
        &doc,
        "spec.decision",
        &["Unsupported value", "\"Accept\"", "\"Reject\"", "\"Remove\""],
    );
}

#[test]
fn disk_size_range_is_40_to_2048() {
    for (disk, rule) in [
        (39, "greater than or equal to 40"),
        (0, "greater than or equal to 40"),
        (-1, "40"),
    ] {
        let mut doc = image_doc();
        doc["spec"]["diskSizeGiB"] = json!(disk);
        assert_violation("PrivateImage", &doc, "spec.diskSizeGiB", &[rule]);
    }
    let mut doc = image_doc();
    doc["spec"]["imageType"] = json!("DataDisk");
    doc["spec"]["diskSizeGiB"] = json!(2049);
    assert_violation(
        "PrivateImage",
        &doc,
        "spec.diskSizeGiB",
        &["less than or equal to 2048"],
    );
    doc["spec"]["diskSizeGiB"] = json!(2048);
    validation::validate(&schema("PrivateImage"), &doc, None).unwrap();
    let mut doc = image_doc();
    doc["spec"]["diskSizeGiB"] = json!("40");
    assert_violation("PrivateImage", &doc, "spec.diskSizeGiB", &["must be of type integer"]);
}

#[test]
fn recipients_and_images_must_be_dns_labels() {
    const PATTERN: &str = "should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'";
    for bad in ["Tenant-B", "tenant_b", "tenant.b", "-tenant", "tenant b"] {
        let doc = share_doc(vec!["centos-web".into()], vec!["tenant-c".into(), bad.into()]);
        assert_violation("ImageShare", &doc, "spec.recipients[1]", &[PATTERN, bad]);
        let doc = share_doc(vec![bad.into()], vec!["tenant-b".into()]);
        assert_violation("ImageShare", &doc, "spec.images[0]", &[PATTERN]);
    }
    let doc = share_doc(vec!["centos-web".into()], vec!["t".repeat(64)]);
    assert_violation("ImageShare", &doc, "spec.recipients[0]", &["may not be more than 63"]);
    // An empty name breaks both minLength and the pattern; both are reported, like the API server does.
    let doc = share_doc(vec!["centos-web".into()], vec![String::new()]);
    assert_some_violation("ImageShare", &doc, "spec.recipients[0]", &["at least 1 chars"]);
    let mut doc = acceptance_doc();
    doc["spec"]["owner"] = json!("Tenant-A");
    assert_violation("ShareAcceptance", &doc, "spec.owner", &[PATTERN]);
    let mut doc = image_doc();
    doc["spec"]["source"] = json!({"volume": {"persistentVolumeClaim": "Disk_1"}});
    assert_violation(
        "PrivateImage",
        &doc,
        "spec.source.volume.persistentVolumeClaim",
        &["should match"],
    );
}

#[test]
fn list_sets_reject_duplicates() {
    let doc = share_doc(
        vec!["centos-web".into()],
        vec!["tenant-b".into(), "tenant-c".into(), "tenant-b".into()],
    );
    assert_violation(
        "ImageShare",
        &doc,
        "spec.recipients[2]",
        &["Duplicate value: \"tenant-b\""],
    );
    let doc = share_doc(vec!["centos-web".into(), "centos-web".into()], vec!["tenant-b".into()]);
    assert_violation(
        "ImageShare",
        &doc,
        "spec.images[1]",
        &["Duplicate value: \"centos-web\""],
    );
    let mut doc = acceptance_doc();
    doc["spec"]["images"] = json!(["a", "b", "a"]);
    assert_violation("ShareAcceptance", &doc, "spec.images[2]", &["Duplicate value: \"a\""]);
}

#[test]
fn list_sizes_are_bounded() {
    let doc = share_doc(names("img", 31), vec!["tenant-b".into()]);
    assert_violation("ImageShare", &doc, "spec.images", &["Too many: 31", "at most 30 items"]);
    let doc = share_doc(vec!["centos-web".into()], names("tenant", 129));
    assert_violation(
        "ImageShare",
        &doc,
        "spec.recipients",
        &["Too many: 129", "at most 128 items"],
    );
    let doc = share_doc(vec![], vec!["tenant-b".into()]);
    assert_violation("ImageShare", &doc, "spec.images", &["at least 1 items"]);
    let mut doc = acceptance_doc();
    doc["spec"]["images"] = json!(names("img", 1001));
    assert_violation("ShareAcceptance", &doc, "spec.images", &["at most 1000 items"]);
}

#[test]
fn unknown_fields_are_reported() {
    let mut doc = image_doc();
    doc["spec"]["diskSize"] = json!(40);
    assert_violation("PrivateImage", &doc, "spec.diskSize", &["unknown field"]);
    let mut doc = image_doc();
    doc["spec"]["source"]["file"]["checksum"] = json!("abc");
    assert_violation("PrivateImage", &doc, "spec.source.file.checksum", &["unknown field"]);
    let mut doc = acceptance_doc();
    doc["spec"]["recipient"] = json!("tenant-b");
    assert_violation("ShareAcceptance", &doc, "spec.recipient", &["unknown field"]);
}

#[test]
fn required_fields_are_reported() {
    for field in ["diskSizeGiB", "source"] {
        let mut doc = image_doc();
        doc["spec"].as_object_mut().unwrap().remove(field);
        assert_violation("PrivateImage", &doc, &format!("spec.{field}"), &["Required value"]);
    }
    let mut doc = image_doc();
    doc["spec"]["source"]["file"].as_object_mut().unwrap().remove("url");
    assert_violation("PrivateImage", &doc, "spec.source.file.url", &["Required value"]);
    // recipients and owner are optional to the schema: the CEL rules above require them or
    // their selectors.
    let mut doc = share_doc(vec!["centos-web".into()], vec!["tenant-b".into()]);
    doc["spec"].as_object_mut().unwrap().remove("images");
    assert_violation("ImageShare", &doc, "spec.images", &["Required value"]);
    let mut doc = acceptance_doc();
    doc.as_object_mut().unwrap().remove("spec");
    assert_violation("ShareAcceptance", &doc, "spec", &["Required value"]);
}

#[test]
fn string_lengths_are_bounded() {
    let mut doc = image_doc();
    doc["spec"]["displayName"] = json!("x".repeat(129));
    assert_violation("PrivateImage", &doc, "spec.displayName", &["may not be more than 128"]);
    let mut doc = image_doc();
    doc["spec"]["description"] = json!("x".repeat(1025));
    assert_violation("PrivateImage", &doc, "spec.description", &["may not be more than 1024"]);
    // 1024 characters of a multi-byte script are fine (the limit counts characters).
    doc["spec"]["description"] = json!("镜".repeat(1024));
    validation::validate(&schema("PrivateImage"), &doc, None).unwrap();
}

#[test]
fn cel_violations_through_the_offline_validator_name_path_message_and_rule() {
    // Create: URL scheme.
    let mut doc = image_doc();
    doc["spec"]["source"]["file"]["url"] = json!("http://insecure.example.com/a.qcow2");
    let v = validation::validate(&schema("PrivateImage"), &doc, None).unwrap_err();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].path, "spec.source.file.url");
    assert!(
        v[0].message
            .contains("url must be s3://bucket/object or https://host/path"),
        "{v:?}"
    );
    assert!(v[0].message.contains(&format!("(rule: {URL_SCHEME})")), "{v:?}");
    // Create: bad object name (root rule).
    let mut doc = image_doc();
    doc["metadata"]["name"] = json!("CentOS_Web");
    let v = validation::validate(&schema("PrivateImage"), &doc, None).unwrap_err();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].message.contains(NAME_IS_DNS_LABEL), "{v:?}");
    // Update: imageType and source changed, both reported.
    let old = image_doc();
    let mut new = image_doc();
    new["spec"]["imageType"] = json!("FullMachine");
    new["spec"]["source"] = json!({"server": {"name": "vm-1"}});
    let v = validation::validate(&schema("PrivateImage"), &new, Some(&old)).unwrap_err();
    let paths: BTreeSet<&str> = v.iter().map(|v| v.path.as_str()).collect();
    assert_eq!(paths, BTreeSet::from(["spec.imageType", "spec.source"]), "{v:?}");
    assert!(
        v.iter()
            .all(|v| v.message.contains("is immutable") && v.message.contains("(rule: self == oldSelf)"))
    );
    // Update: owner of a ShareAcceptance.
    let old = acceptance_doc();
    let mut new = acceptance_doc();
    new["spec"]["owner"] = json!("tenant-c");
    let v = validation::validate(&schema("ShareAcceptance"), &new, Some(&old)).unwrap_err();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].path, "spec.owner");
    assert!(v[0].message.contains("owner is immutable"), "{v:?}");
    // Update with a missing imageType in the old object: defaults apply to both sides.
    let mut old = image_doc();
    old["spec"].as_object_mut().unwrap().remove("imageType");
    validation::validate(&schema("PrivateImage"), &image_doc(), Some(&old)).unwrap();
}
