//! What `kubectl ims` prints: tables from the objects read, and the objects themselves as YAML
//! or JSON. Pure functions of values, so every layout is unit-tested without a cluster.

use std::fmt::Write;

use serde_json::{Value, json};

use super::{cli::Output, names::Covered};
use crate::{
    api::{
        Condition, Decision, DecisionReason, ImageOffer, ImageQuota, ImageShare, OfferedImage, PrivateImage,
        ShareAcceptance, ready_condition,
    },
    columns::columns,
    config::UNLIMITED,
};

fn cells<const N: usize>(texts: [&str; N]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

/// The inbox as a table, one row per offered image: `OWNER IMAGE STATE DECIDED-BY TYPE OS DISK
/// EXPIRES`, with `NAMESPACE` first for `-A`. Sorted by namespace, owner and image; None when
/// nothing is offered. Offers whose list is cut short (over 1,000 images) get a note.
pub fn offers(offers: &[ImageOffer], all_namespaces: bool) -> Option<String> {
    let mut sorted: Vec<&ImageOffer> = offers.iter().collect();
    sorted.sort_by(|a, b| {
        (a.metadata.namespace.as_deref(), &a.spec.owner).cmp(&(b.metadata.namespace.as_deref(), &b.spec.owner))
    });
    let mut header = cells(["OWNER", "IMAGE", "STATE", "DECIDED-BY", "TYPE", "OS", "DISK", "EXPIRES"]);
    if all_namespaces {
        header.insert(0, "NAMESPACE".into());
    }
    let mut rows = vec![header];
    let mut notes = Vec::new();
    for offer in sorted {
        let Some(status) = &offer.status else { continue };
        let namespace = offer.metadata.namespace.clone().unwrap_or_default();
        let mut images: Vec<&OfferedImage> = status.images.iter().collect();
        images.sort_by(|a, b| a.name.cmp(&b.name));
        for image in images {
            let mut row = vec![
                offer.spec.owner.clone(),
                image.name.to_string(),
                image.state.to_string(),
                image.decided_by.as_deref().unwrap_or("-").to_string(),
                format!("{:?}", image.image_type),
                image.os_label(),
                format!("{}Gi", image.disk_size_gib),
                image
                    .expires_at
                    .as_ref()
                    .map_or_else(|| "never".into(), |t| t.0.to_string()),
            ];
            if all_namespaces {
                row.insert(0, namespace.clone());
            }
            rows.push(row);
        }
        if status.more_images > 0 {
            let whose = if all_namespaces {
                format!("{namespace}/{}", offer.spec.owner)
            } else {
                offer.spec.owner.clone()
            };
            notes.push(format!(
                "{whose} offers {} more images than listed (pending {}, accepted {}, rejected {}, removed {} in all)",
                status.more_images, status.pending, status.accepted, status.rejected, status.removed
            ));
        }
    }
    if rows.len() == 1 {
        return None;
    }
    let mut out = columns(&rows);
    for note in notes {
        out.push_str(&note);
        out.push('\n');
    }
    Some(out)
}

/// A limit as printed: the count, or `unlimited` for -1.
fn limit(hard: i64) -> String {
    if hard == UNLIMITED {
        "unlimited".into()
    } else {
        hard.to_string()
    }
}

/// `PRIVATE SHARED RECIPIENTS-PER-IMAGE` of the ImageQuota, then one row per PrivateImage with
/// how many recipients it is offered to (against the per-image limit) and in which states.
pub fn usage(namespace: &str, quota: Option<&ImageQuota>, images: &[PrivateImage]) -> String {
    let mut out = String::new();
    let hard = quota.and_then(|q| q.status.as_ref()).map(|s| s.hard);
    match quota.and_then(|q| q.status.as_ref()) {
        Some(status) => out.push_str(&columns(&[
            cells(["PRIVATE", "SHARED", "RECIPIENTS-PER-IMAGE"]),
            vec![
                status.summary.private_images.clone(),
                status.summary.shared_images.clone(),
                limit(status.hard.recipients_per_image),
            ],
        ])),
        None if quota.is_some() => {
            let _ = writeln!(out, "The ImageQuota of namespace {namespace} has no status yet.");
        }
        None => {}
    }
    let mut sorted: Vec<&PrivateImage> = images.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rows = vec![cells([
        "IMAGE",
        "READY",
        "REASON",
        "RECIPIENTS",
        "PENDING",
        "ACCEPTED",
        "REJECTED",
        "REMOVED",
    ])];
    for image in sorted {
        let status = image.status.clone().unwrap_or_default();
        let (ready, reason) = match ready_condition(&status.conditions) {
            Some(c) => (c.status.to_string(), c.reason.to_string()),
            None => ("Unknown".into(), "-".into()),
        };
        let r = &status.recipients;
        let offered = i64::from(r.pending) + i64::from(r.accepted) + i64::from(r.rejected) + i64::from(r.removed);
        rows.push(vec![
            image.metadata.name.clone().unwrap_or_default(),
            ready,
            reason,
            match hard {
                Some(hard) => format!("{offered}/{}", limit(hard.recipients_per_image)),
                None => offered.to_string(),
            },
            r.pending.to_string(),
            r.accepted.to_string(),
            r.rejected.to_string(),
            r.removed.to_string(),
        ]);
    }
    if rows.len() > 1 {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&columns(&rows));
    }
    out
}

/// Whether the operator has reported on this generation of the object.
fn observed(metadata: &kube::core::ObjectMeta, observed_generation: Option<i64>) -> bool {
    observed_generation.is_some() && observed_generation == metadata.generation
}

/// What a decision covers, in words: `image web of tenant-a`, `every image tenant-a offers`.
fn covered_text(covered: &Covered) -> String {
    match covered.images.as_slice() {
        [] => format!("every image {} offers", covered.owner),
        [one] => format!("image {one} of {}", covered.owner),
        many => format!("images {} of {}", many.join(", "), covered.owner),
    }
}

/// The decision applied, then its effect per image once the operator has reported on it.
pub fn acceptance(namespace: &str, decision: Decision, covered: &Covered, applied: &ShareAcceptance) -> String {
    let name = applied.metadata.name.as_deref().unwrap_or_default();
    let mut out = format!(
        "shareacceptance/{name} applied in namespace {namespace}: {} {}\n",
        decision.as_str(),
        covered_text(covered)
    );
    let status = applied.status.as_ref();
    if !observed(&applied.metadata, status.and_then(|s| s.observed_generation)) {
        let _ = writeln!(
            out,
            "The operator has not reported on it yet: `kubectl ims offers -n {namespace}` shows the states (or pass --wait SECONDS)."
        );
        return out;
    }
    let status = status.expect("observed implies a status");
    let mut rows = vec![cells(["IMAGE", "STATE", "DECIDED-BY"])];
    for image in &status.images {
        let by = image.decided_by.as_deref().unwrap_or("-");
        let decided = match image.reason {
            DecisionReason::ThisAcceptance => name.to_string(),
            DecisionReason::UnreadableAcceptance => {
                "held: this namespace has a ShareAcceptance the operator can not read".into()
            }
            // Another acceptance decides (it names the image, or has a stronger decision…):
            // its name and the reason as the API spells it (README.md lists them), which
            // also covers reasons added to the API later.
            other => format!("{by} ({})", other.as_str()),
        };
        rows.push(vec![image.name.to_string(), image.state.to_string(), decided]);
    }
    if rows.len() > 1 {
        out.push_str(&columns(&rows));
    }
    if status.more_images > 0 {
        let _ = writeln!(out, "… and {} more images", status.more_images);
    }
    write_not_ready(&mut out, &status.conditions);
    out
}

/// A line saying why an object is not Ready, when it is not.
fn write_not_ready(out: &mut String, conditions: &[Condition]) {
    if let Some(ready) = ready_condition(conditions)
        && ready.status != "True"
    {
        let _ = writeln!(out, "Ready: {} ({}): {}", ready.status, ready.reason, ready.message);
    }
}

/// What `kubectl ims share` applied, in words.
pub struct SharePlan<'a> {
    pub images: &'a [String],
    pub recipients: &'a [String],
    pub selector: Option<&'a str>,
    pub expires_at: Option<&'a str>,
}

/// The share applied, then, once the operator has reported on it, every (image, recipient)
/// pair with its state, and the listed recipients not offered an image with the reason.
pub fn share(namespace: &str, plan: &SharePlan<'_>, applied: &ImageShare) -> String {
    let name = applied.metadata.name.as_deref().unwrap_or_default();
    let mut to = Vec::new();
    if !plan.recipients.is_empty() {
        to.push(plan.recipients.join(", "));
    }
    if let Some(selector) = plan.selector {
        to.push(format!("namespaces matching {selector:?}"));
    }
    let mut out = format!(
        "imageshare/{name} applied in namespace {namespace}: {} to {}",
        plan.images.join(", "),
        to.join(" and ")
    );
    match plan.expires_at {
        Some(at) => {
            let _ = writeln!(out, " until {at}");
        }
        None => out.push('\n'),
    }
    let status = applied.status.as_ref();
    if !observed(&applied.metadata, status.and_then(|s| s.observed_generation)) {
        let _ = writeln!(
            out,
            "The operator has not reported on it yet: `kubectl get imageshare {name} -n {namespace}` shows it (or pass --wait SECONDS)."
        );
        return out;
    }
    let status = status.expect("observed implies a status");
    let mut rows = vec![cells(["IMAGE", "RECIPIENT", "STATE"])];
    for image in &status.images {
        for (state, recipients) in image.lists() {
            for r in recipients {
                rows.push(vec![image.name.clone(), r.to_string(), state.to_string()]);
            }
        }
        for refused in &image.refused {
            for r in &refused.recipients {
                rows.push(vec![
                    image.name.clone(),
                    r.clone(),
                    format!("not offered: {}", refused.reason),
                ]);
            }
        }
    }
    if rows.len() > 1 {
        out.push_str(&columns(&rows));
    }
    write_not_ready(&mut out, &status.conditions);
    out
}

/// The object without `metadata.managedFields`, which kubectl also leaves out unless asked.
fn without_managed_fields(mut object: Value) -> Value {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    object
}

/// Objects as `-o yaml` or `-o json` print them: one object as itself, several (or a listing,
/// even an empty one) as a `v1 List`, as kubectl does.
pub fn objects(output: Output, objects: Vec<Value>, listing: bool) -> String {
    let mut objects: Vec<Value> = objects.into_iter().map(without_managed_fields).collect();
    let value = if !listing && objects.len() == 1 {
        objects.remove(0)
    } else {
        json!({"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {"resourceVersion": ""}})
    };
    match output {
        Output::Json => {
            let mut text = serde_json::to_string_pretty(&value).expect("JSON values serialize");
            text.push('\n');
            text
        }
        Output::Yaml | Output::Table => crate::yaml::to_string(&value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ImageQuotaStatus, QuotaHard, QuotaSummary, QuotaUsed};

    fn offer(recipient: &str, owner: &str, images: Value, more: i32) -> ImageOffer {
        serde_json::from_value(json!({
            "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ImageOffer",
            "metadata": {"name": owner, "namespace": recipient},
            "spec": {"owner": owner},
            "status": {"images": images, "moreImages": more, "pending": 1, "accepted": 1, "rejected": 0, "removed": 0},
        }))
        .unwrap()
    }

    fn inbox() -> Vec<ImageOffer> {
        vec![
            offer(
                "tenant-b",
                "tenant-c",
                json!([{"name": "pg-data", "state": "Pending", "imageType": "DataDisk", "architecture": "x86_64",
                        "diskSizeGiB": 100}]),
                0,
            ),
            offer(
                "tenant-b",
                "tenant-a",
                json!([
                    {"name": "web", "state": "Accepted", "decidedBy": "tenant-a-web", "imageType": "SystemDisk",
                     "osType": "Linux", "osVersion": "CentOS 7.6 64bit", "architecture": "x86_64", "diskSizeGiB": 40,
                     "expiresAt": "2027-01-01T00:00:00Z",
                     "source": {"namespace": "tenant-a", "file": {"url": "s3://b/web.qcow2", "format": "QCOW2"}}},
                    {"name": "db", "state": "Rejected", "decidedBy": "tenant-a", "imageType": "SystemDisk",
                     "osType": "Windows", "architecture": "x86_64", "diskSizeGiB": 60},
                ]),
                0,
            ),
        ]
    }

    #[test]
    fn the_inbox_is_one_row_per_offered_image_sorted_by_owner_and_image() {
        assert_eq!(
            offers(&inbox(), false).unwrap(),
            "\
OWNER     IMAGE    STATE     DECIDED-BY    TYPE        OS                      DISK   EXPIRES
tenant-a  db       Rejected  tenant-a      SystemDisk  Windows                 60Gi   never
tenant-a  web      Accepted  tenant-a-web  SystemDisk  Linux CentOS 7.6 64bit  40Gi   2027-01-01T00:00:00Z
tenant-c  pg-data  Pending   -             DataDisk    -                       100Gi  never
"
        );
    }

    #[test]
    fn all_namespaces_adds_the_namespace_and_notes_cut_lists() {
        let mut all = inbox();
        all.push(offer(
            "tenant-a",
            "tenant-z",
            json!([{"name": "x", "state": "Pending", "imageType": "FullMachine", "architecture": "aarch64",
                    "diskSizeGiB": 40}]),
            1500,
        ));
        let text = offers(&all, true).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE  OWNER     IMAGE"), "{text}");
        assert!(lines[1].starts_with("tenant-a   tenant-z  x "), "{text}");
        assert!(lines[2].starts_with("tenant-b   tenant-a  db "), "{text}");
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(
            lines[5],
            "tenant-a/tenant-z offers 1500 more images than listed (pending 1, accepted 1, rejected 0, removed 0 in all)"
        );
    }

    #[test]
    fn an_empty_inbox_has_no_table() {
        assert_eq!(offers(&[], false), None);
        assert_eq!(offers(&[offer("b", "a", json!([]), 0)], true), None);
    }

    fn quota(hard_recipients: i64) -> ImageQuota {
        ImageQuota::of(
            "tenant-a",
            ImageQuotaStatus {
                hard: QuotaHard {
                    private_images: 10,
                    shared_images: 30,
                    recipients_per_image: hard_recipients,
                },
                used: QuotaUsed {
                    private_images: 2,
                    shared_images: 1,
                },
                summary: QuotaSummary {
                    private_images: "2/10".into(),
                    shared_images: "1/30".into(),
                },
            },
        )
    }

    fn private_image(name: &str, ready: (&str, &str), counts: [i32; 4]) -> PrivateImage {
        serde_json::from_value(json!({
            "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "PrivateImage",
            "metadata": {"name": name, "namespace": "tenant-a"},
            "spec": {"diskSizeGiB": 40, "source": {"file": {"url": "s3://b/x.qcow2", "format": "QCOW2"}}},
            "status": {
                "conditions": [{"type": "Ready", "status": ready.0, "reason": ready.1, "message": "",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "recipients": {"pending": counts[0], "accepted": counts[1], "rejected": counts[2], "removed": counts[3]},
            },
        }))
        .unwrap()
    }

    #[test]
    fn usage_shows_the_quota_and_the_recipients_of_each_image() {
        let images = [
            private_image("web", ("True", "Available"), [1, 2, 0, 1]),
            private_image("big", ("False", "QuotaExceeded"), [0, 0, 0, 0]),
        ];
        assert_eq!(
            usage("tenant-a", Some(&quota(128)), &images),
            "\
PRIVATE  SHARED  RECIPIENTS-PER-IMAGE
2/10     1/30    128

IMAGE  READY  REASON         RECIPIENTS  PENDING  ACCEPTED  REJECTED  REMOVED
big    False  QuotaExceeded  0/128       0        0         0         0
web    True   Available      4/128       1        2         0         1
"
        );
        let unlimited = usage("tenant-a", Some(&quota(UNLIMITED)), &images[1..]);
        assert!(unlimited.contains("2/10     1/30    unlimited\n"), "{unlimited}");
        assert!(unlimited.contains("0/unlimited"), "{unlimited}");
        // Without an ImageQuota the images still show, with plain counts.
        let bare = usage("tenant-a", None, &images[..1]);
        assert!(bare.starts_with("IMAGE  READY"), "{bare}");
        assert!(bare.contains("web    True   Available  4 "), "{bare}");
        assert_eq!(usage("tenant-a", None, &[]), "");
    }

    fn acceptance_object(
        generation: i64,
        observed: Option<i64>,
        images: Value,
        ready: (&str, &str),
    ) -> ShareAcceptance {
        serde_json::from_value(json!({
            "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ShareAcceptance",
            "metadata": {"name": "tenant-a-web", "namespace": "tenant-b", "generation": generation},
            "spec": {"owner": "tenant-a", "images": ["web"], "decision": "Accept"},
            "status": {"observedGeneration": observed, "images": images,
                       "conditions": [{"type": "Ready", "status": ready.0, "reason": ready.1, "message": "why",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_decision_shows_its_effect_once_the_operator_reported_on_it() {
        let covered = Covered::new("tenant-a", &["web".into()]);
        let pending = acceptance_object(2, Some(1), json!([]), ("True", "Applied"));
        let text = acceptance("tenant-b", Decision::Accept, &covered, &pending);
        assert_eq!(
            text,
            "shareacceptance/tenant-a-web applied in namespace tenant-b: Accept image web of tenant-a\n\
             The operator has not reported on it yet: `kubectl ims offers -n tenant-b` shows the states (or pass --wait SECONDS).\n"
        );
        let done = acceptance_object(
            2,
            Some(2),
            json!([{"name": "web", "state": "Accepted", "reason": "ThisAcceptance"}]),
            ("True", "Applied"),
        );
        assert_eq!(
            acceptance("tenant-b", Decision::Accept, &covered, &done),
            "shareacceptance/tenant-a-web applied in namespace tenant-b: Accept image web of tenant-a\n\
             IMAGE  STATE     DECIDED-BY\n\
             web    Accepted  tenant-a-web\n"
        );
        let overridden = acceptance_object(
            1,
            Some(1),
            json!([{"name": "web", "state": "Removed", "reason": "Conflict", "decidedBy": "mine"}]),
            ("False", "Conflict"),
        );
        let text = acceptance("tenant-b", Decision::Accept, &covered, &overridden);
        assert!(text.contains("web    Removed  mine (Conflict)\n"), "{text}");
        assert!(text.ends_with("Ready: False (Conflict): why\n"), "{text}");
        let all = Covered::new("tenant-a", &[]);
        assert!(
            acceptance("tenant-b", Decision::Reject, &all, &pending).contains(": Reject every image tenant-a offers\n")
        );
    }

    #[test]
    fn a_share_shows_its_pairs_and_refusals() {
        let applied: ImageShare = serde_json::from_value(json!({
            "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ImageShare",
            "metadata": {"name": "share-web", "namespace": "tenant-a", "generation": 1},
            "spec": {"images": ["web"], "recipients": ["tenant-b", "ghost"]},
            "status": {"observedGeneration": 1, "offered": 1, "accepted": 0,
                       "images": [{"name": "web", "pending": ["tenant-b"],
                                   "refused": [{"reason": "RecipientNotFound", "recipients": ["ghost"]}]}],
                       "conditions": [{"type": "Ready", "status": "False", "reason": "RecipientNotFound",
                                       "message": "web → ghost: no such namespace",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .unwrap();
        let images = ["web".to_string()];
        let recipients = ["tenant-b".to_string(), "ghost".to_string()];
        let plan = SharePlan {
            images: &images,
            recipients: &recipients,
            selector: Some("team=a"),
            expires_at: Some("2027-01-01T00:00:00Z"),
        };
        assert_eq!(
            share("tenant-a", &plan, &applied),
            "imageshare/share-web applied in namespace tenant-a: web to tenant-b, ghost and namespaces matching \"team=a\" until 2027-01-01T00:00:00Z\n\
             IMAGE  RECIPIENT  STATE\n\
             web    tenant-b   Pending\n\
             web    ghost      not offered: RecipientNotFound\n\
             Ready: False (RecipientNotFound): web → ghost: no such namespace\n"
        );
    }

    #[test]
    fn objects_print_as_kubectl_prints_them() {
        let object = json!({"kind": "ImageOffer", "metadata": {"name": "a", "managedFields": [{"manager": "x"}]}});
        assert_eq!(
            objects(Output::Yaml, vec![object.clone()], false),
            "kind: ImageOffer\nmetadata:\n  name: a\n"
        );
        let listed: Value = serde_json::from_str(&objects(Output::Json, vec![object], true)).unwrap();
        assert_eq!(listed["kind"], "List");
        assert_eq!(listed["items"][0]["metadata"], json!({"name": "a"}));
        let empty: Value = serde_json::from_str(&objects(Output::Json, Vec::new(), true)).unwrap();
        assert_eq!(empty["items"], json!([]));
    }
}
