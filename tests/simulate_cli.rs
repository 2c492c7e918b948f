//! `ims-operator simulate` and `crd` as a user runs them: the binary, its exit codes, its
//! error reports and its flags.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const NOW: &str = "2026-06-01T00:00:00Z";

fn ims(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ims-operator"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh folder of this test's own under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ims-simulate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, file: &str, content: &str) -> String {
    std::fs::write(dir.join(file), content).unwrap();
    dir.join(file).display().to_string()
}

const GOOD: &str = "\
apiVersion: ims.imageshare.io/v1alpha1
kind: PrivateImage
metadata: {name: web, namespace: tenant-a}
spec:
  diskSizeGiB: 40
  source: {file: {url: \"s3://b/web.qcow2\", format: QCOW2}}
---
apiVersion: ims.imageshare.io/v1alpha1
kind: ImageShare
metadata: {name: s, namespace: tenant-a}
spec: {images: [web], recipients: [tenant-b]}
";

#[test]
fn bad_documents_are_reported_with_file_and_number_and_the_rest_is_evaluated() {
    let dir = scratch("bad");
    write(&dir, "10-good.yaml", GOOD);
    let bad = write(
        &dir,
        "20-bad.yaml",
        "\
apiVersion: v1
kind: ConfigMap
metadata: {name: x, namespace: tenant-a}
---
apiVersion: ims.imageshare.io/v1alpha1
kind: PrivateImage
metadata: {name: tiny, namespace: tenant-a}
spec:
  diskSizeGiB: 5
  source: {file: {url: \"s3://b/t.qcow2\", format: QCOW2}}
---
apiVersion: ims.imageshare.io/v1alpha1
kind: PrivateImage
metadata: {name: ftp, namespace: tenant-a}
spec:
  diskSizeGiB: 40
  source: {file: {url: \"ftp://b/t.qcow2\", format: QCOW2}}
",
    );
    // A document that is not YAML of a single value (a duplicate key) is reported with its
    // line in the file; the next document is still read.
    let duplicate = write(
        &dir,
        "25-duplicate.yaml",
        "\
# a comment before the first `---` is no document
---
apiVersion: ims.imageshare.io/v1alpha1
kind: PrivateImage
kind: PrivateImage
---
apiVersion: ims.imageshare.io/v1alpha1
kind: PrivateImage
metadata: {name: after-duplicate, namespace: tenant-a}
spec:
  diskSizeGiB: 40
  source: {file: {url: \"s3://b/a.qcow2\", format: QCOW2}}
",
    );
    let broken = write(&dir, "30-broken.yaml", "kind: [unclosed\n");
    let out = ims(&["simulate", "--now", NOW, dir.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{bad}: document 1")) && stderr.contains("unsupported kind \"ConfigMap\""),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{bad}: document 2")) && stderr.contains("spec.diskSizeGiB"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{bad}: document 3")) && stderr.contains("url must be s3://bucket/object"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{duplicate}: document 1")) && stderr.contains("line 5"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{broken}: document 1")), "{stderr}");
    assert!(stdout.contains("after-duplicate"), "{stdout}");
    // The valid objects were still evaluated.
    assert!(stdout.contains("web") && stdout.contains("AllOffered"), "{stdout}");
    assert!(!stdout.contains("tiny") && !stdout.contains("ftp"), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn fail_on_not_ready_turns_a_refusal_into_exit_status_3() {
    let ok = ims(&[
        "simulate",
        "--fail-on-not-ready",
        "--now",
        NOW,
        "examples/01-basic-share-accept",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let refused = ims(&[
        "simulate",
        "--fail-on-not-ready",
        "--now",
        NOW,
        "examples/09-quota-reached",
    ]);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("not Ready"));
    // Without the flag a refusal is a result, not a failure.
    let plain = ims(&["simulate", "--now", NOW, "examples/09-quota-reached"]);
    assert_eq!(plain.status.code(), Some(0));
}

#[test]
fn config_file_limits_and_now_change_the_verdicts() {
    let dir = scratch("config");
    let config = write(&dir, "config.yaml", "limits: {privateImagesPerTenant: 0}\n");
    let out = ims(&[
        "simulate",
        "--config",
        &config,
        "--now",
        NOW,
        "examples/01-basic-share-accept",
    ]);
    assert!(text(&out.stdout).contains("QuotaExceeded"), "{}", text(&out.stdout));

    let expired = ims(&["simulate", "--now", NOW, "examples/12-expired-share"]);
    assert!(text(&expired.stdout).contains("Expired"));
    let before = ims(&["simulate", "--now", "2025-12-31T00:00:00Z", "examples/12-expired-share"]);
    assert!(!text(&before.stdout).contains("Expired") && text(&before.stdout).contains("AllOffered"));

    let bad = write(&dir, "bad.yaml", "limits: {recipientsPerImage: -7}\n");
    let out = ims(&["simulate", "--config", &bad, "examples/01-basic-share-accept"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("limits.recipientsPerImage"),
        "{}",
        text(&out.stderr)
    );
    let out = ims(&["simulate", "--now", "yesterday", "examples/01-basic-share-accept"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--now"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn yaml_output_carries_every_input_object_with_its_status() {
    let out = ims(&["simulate", "-o", "yaml", "--now", NOW, "examples/01-basic-share-accept"]);
    assert_eq!(out.status.code(), Some(0));
    let docs: Vec<serde_json::Value> = ims_operator::yaml::documents(&text(&out.stdout))
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    // The input objects in input order, then the ImageOffer and the ImageQuota the operator
    // would keep.
    assert_eq!(
        kinds,
        [
            "PrivateImage",
            "ImageShare",
            "ShareAcceptance",
            "ImageOffer",
            "ImageQuota"
        ]
    );
    assert!(
        docs[..3]
            .iter()
            .all(|d| d["status"]["conditions"][0]["type"] == "Ready")
    );
    assert_eq!(docs[3]["metadata"]["namespace"], "tenant-b");
    assert_eq!(docs[3]["metadata"]["name"], "tenant-a");
    assert_eq!(docs[4]["metadata"]["namespace"], "tenant-a");
    assert_eq!(docs[4]["status"]["summary"]["privateImages"], "1/10");
}

#[test]
fn crd_prints_the_crds_folder() {
    let out = ims(&["crd"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), ims_operator::crdgen::crds_yaml());
}

#[test]
fn simulate_judges_volume_and_server_sources_as_run_does() {
    let example = "examples/14-volume-source";
    // Without KubeVirt support (run's default) a volume source is SourceUnsupported, so a
    // GitOps check is not green where the cluster would say so.
    let off = ims(&["simulate", "--fail-on-not-ready", "--now", NOW, example]);
    assert_eq!(off.status.code(), Some(3), "{}", text(&off.stderr));
    assert!(text(&off.stdout).contains("SourceUnsupported"), "{}", text(&off.stdout));
    // On with the flag, as `run --kubevirt` …
    let flag = ims(&["simulate", "--fail-on-not-ready", "--kubevirt", "--now", NOW, example]);
    assert_eq!(flag.status.code(), Some(0), "{}", text(&flag.stderr));
    assert!(!text(&flag.stdout).contains("SourceUnsupported"));
    // … or with the config file's key, which `run --config` reads too.
    let dir = scratch("kubevirt");
    for (content, code) in [("kubevirt: true\n", 0), ("kubevirt: false\n", 3)] {
        let config = write(&dir, "config.yaml", content);
        let out = ims(&[
            "simulate",
            "--fail-on-not-ready",
            "--config",
            &config,
            "--now",
            NOW,
            example,
        ]);
        assert_eq!(out.status.code(), Some(code), "{content}: {}", text(&out.stderr));
    }
    let _ = std::fs::remove_dir_all(dir);
}
