//! `simulate` over every example folder, compared with the golden files in `tests/golden/`
//! (`IMS_UPDATE_GOLDEN=1 cargo test --test golden` rewrites them), and the `-o yaml` contract
//! of README.md ("simulate: check manifests offline"): the stream reads back as the same
//! values, also with YAML 1.1 readers — PyYAML and kubectl.
//!
//! PyYAML is required: without python3 and PyYAML the read-back tests fail when `CI` is set
//! (`.ci/run` installs PyYAML and sets it) and are skipped with a notice otherwise. kubectl is
//! used when it is on PATH (`kubectl annotate --local` reads files without a cluster).

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use ims_operator::{
    config::Config,
    core::QuotaUpdate,
    simulate::{Report, simulate},
};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

const UPDATE: &str = "IMS_UPDATE_GOLDEN";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

fn is_yaml(p: &Path) -> bool {
    p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Folders under `examples/` that directly contain YAML files, sorted.
fn leaf_examples() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        if entries.iter().any(|p| is_yaml(p)) {
            out.push(dir.to_path_buf());
        }
        for e in entries.iter().filter(|p| p.is_dir()) {
            walk(e, out);
        }
    }
    let mut out = Vec::new();
    walk(&root().join("examples"), &mut out);
    assert!(
        out.len() >= 14,
        "examples/ should hold the scenario folders, found {out:?}"
    );
    out
}

/// `examples/04-x/step1` -> `04-x__step1`.
fn golden_stem(example: &Path) -> String {
    let rel = example.strip_prefix(root().join("examples")).unwrap();
    rel.to_string_lossy().replace(['/', '\\'], "__")
}

/// Every example simulated once, shared by the tests of this file.
fn reports() -> &'static [(PathBuf, Report)] {
    static REPORTS: OnceLock<Vec<(PathBuf, Report)>> = OnceLock::new();
    REPORTS.get_or_init(|| leaf_examples().into_iter().map(|e| (e.clone(), run(&e))).collect())
}

/// The config an example is simulated with: the flags of the first `simulate` command of its
/// header that names the folder itself, e.g. `simulate --kubevirt examples/14-volume-source`,
/// so the golden file is what the documented command prints.
fn config_of(example: &Path) -> Config {
    let rel = format!(
        "examples/{}",
        example.strip_prefix(root().join("examples")).unwrap().display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(example).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let first = files.into_iter().find(|p| is_yaml(p)).unwrap();
    let text = std::fs::read_to_string(&first).unwrap();
    let mut config = Config::default();
    let command = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.split_once("-- simulate ").map(|(_, args)| args.trim_end()))
        .find(|args| args.ends_with(&rel));
    let flags = command.map(|args| args.strip_suffix(&rel).unwrap().split_whitespace());
    for flag in flags.into_iter().flatten() {
        match flag {
            "--kubevirt" => config.kubevirt = true,
            other => panic!(
                "{}: the golden test does not know the simulate flag {other}",
                first.display()
            ),
        }
    }
    config
}

fn run(example: &Path) -> Report {
    let report = simulate(&[example.to_path_buf()], config_of(example), now()).unwrap();
    assert!(
        report.errors.is_empty(),
        "{}: simulate reported errors: {:#?}",
        example.display(),
        report.errors
    );
    report
}

#[test]
fn examples_match_golden_files() {
    let dir = root().join("tests/golden");
    let update = std::env::var_os(UPDATE).is_some_and(|v| v == "1");
    if update {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut expected_files = Vec::new();
    let mut mismatches = Vec::new();
    for (example, report) in reports() {
        let stem = golden_stem(example);
        for (ext, text) in [("yaml", report.yaml()), ("txt", report.table())] {
            let name = format!("{stem}.{ext}");
            let path = dir.join(&name);
            expected_files.push(name.clone());
            if update {
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(golden) if golden == text => {}
                Ok(golden) => mismatches.push(format!("{name}:\n{}", first_difference(&golden, &text))),
                Err(e) => mismatches.push(format!("{name}: {e}")),
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "simulate output differs from tests/golden (if intended: {UPDATE}=1 cargo test --test golden):\n{}",
        mismatches.join("\n")
    );
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(present, expected_files, "tests/golden holds a file for no example");
}

fn first_difference(golden: &str, actual: &str) -> String {
    let (g, a): (Vec<&str>, Vec<&str>) = (golden.lines().collect(), actual.lines().collect());
    for i in 0..g.len().max(a.len()) {
        if g.get(i) != a.get(i) {
            return format!(
                "  line {}:\n  golden: {:?}\n  actual: {:?}",
                i + 1,
                g.get(i).unwrap_or(&"<end>"),
                a.get(i).unwrap_or(&"<end>")
            );
        }
    }
    "  (only trailing newlines differ)".into()
}

/// The documents of a YAML stream, read with the crate's own reader (serde-saphyr).
fn parse_stream(text: &str) -> Vec<Value> {
    ims_operator::yaml::documents(text)
        .into_iter()
        .map(|d| d.expect("the stream is valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// True when a tool the read-back checks need can be used. Without it the test fails when
/// `CI` is set (CI installs it, see `.ci/run`) and is skipped with a loud notice otherwise —
/// written straight to stderr, since the test harness swallows `eprintln!` of passing tests.
fn need(tool: &str, available: bool, install: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{tool} is not available, but CI is set: CI installs it ({install})");
    }
    let _ = writeln!(
        std::io::stderr(),
        "NOTICE: YAML read-back check with {tool} skipped: {tool} is not available ({install})"
    );
    false
}

fn pyyaml_available() -> bool {
    Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The documents of YAML streams, read with PyYAML (a YAML 1.1 reader) in one run, or None
/// when python3 with PyYAML is missing outside CI.
fn parse_with_pyyaml(streams: &[String]) -> Option<Vec<Vec<Value>>> {
    const SCRIPT: &str = "import sys, json, yaml\n\
        streams = json.loads(sys.stdin.buffer.read().decode('utf-8'))\n\
        out = [[d for d in yaml.safe_load_all(s) if d is not None] for s in streams]\n\
        sys.stdout.buffer.write(json.dumps(out).encode('utf-8'))\n";
    if !need(
        "python3 with PyYAML",
        pyyaml_available(),
        "python3 -m pip install pyyaml, or apt-get install python3-yaml",
    ) {
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(streams).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyYAML could not read the stream: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The objects of a YAML stream as kubectl reads them (`kubectl annotate --local -o json`
/// parses the file as `kubectl apply` does, without a cluster), or None without kubectl.
fn parse_with_kubectl(stream: &str) -> Option<Vec<Value>> {
    const MARK: &str = "ims-readback-check";
    let available = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        // Optional: CI does not install kubectl.
        let _ = writeln!(
            std::io::stderr(),
            "NOTICE: YAML read-back check with kubectl skipped: kubectl is not on PATH"
        );
        return None;
    }
    let file = std::env::temp_dir().join(format!(
        "ims-golden-kubectl-{}-{}.yaml",
        std::process::id(),
        KUBECTL_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::write(&file, stream).unwrap();
    let out = Command::new("kubectl")
        .args(["annotate", "--local", "-o", "json", "-f"])
        .arg(&file)
        .arg(format!("{MARK}=1"))
        .env("KUBECONFIG", "/dev/null")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "kubectl could not read the stream: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One JSON object per input object, each with our annotation added.
    let mut objects: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .map(|o| o.expect("kubectl prints JSON"))
        .collect();
    for o in &mut objects {
        let annotations = o["metadata"]["annotations"].as_object_mut().unwrap();
        annotations.remove(MARK);
        if annotations.is_empty() {
            o["metadata"].as_object_mut().unwrap().remove("annotations");
        }
    }
    Some(objects)
}

static KUBECTL_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Statuses the report computed, by (kind, namespace, name).
fn statuses(report: &Report) -> BTreeMap<(String, String, String), Value> {
    let mut map = BTreeMap::new();
    for o in &report.outcomes {
        let ns = &o.namespace;
        let key = |kind: &str, name: &str| (kind.to_string(), ns.clone(), name.to_string());
        for u in &o.images {
            map.insert(key("PrivateImage", &u.name), serde_json::to_value(&u.status).unwrap());
        }
        for u in &o.shares {
            map.insert(key("ImageShare", &u.name), serde_json::to_value(&u.status).unwrap());
        }
        for u in &o.acceptances {
            map.insert(
                key("ShareAcceptance", &u.name),
                serde_json::to_value(&u.status).unwrap(),
            );
        }
    }
    map
}

/// The input documents of the three kinds, in input order (files in name order).
fn input_documents(folder: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files.iter().filter(|p| is_yaml(p)) {
        for mut doc in parse_stream(&std::fs::read_to_string(f).unwrap()) {
            if doc["apiVersion"] == "ims.imageshare.io/v1alpha1" {
                doc.as_object_mut().unwrap().remove("status");
                docs.push(doc);
            }
        }
    }
    docs
}

/// `-o yaml` reads back (serde-saphyr) as the input objects with the computed statuses; returns
/// the documents read.
fn check_yaml_reads_back(folder: &Path, report: &Report) -> Vec<Value> {
    let text = report.yaml();
    let mut docs = parse_stream(&text);
    // After the input objects: the ImageOffers of every recipient, then the ImageQuota of every
    // namespace that needs one, by namespace.
    let first_quota = docs
        .iter()
        .position(|d| d["kind"] == "ImageQuota")
        .unwrap_or(docs.len());
    let quotas = docs.split_off(first_quota);
    let first_offer = docs
        .iter()
        .position(|d| d["kind"] == "ImageOffer")
        .unwrap_or(docs.len());
    let offers = docs.split_off(first_offer);
    let expected_offers: Vec<Value> = report
        .outcomes
        .iter()
        .flat_map(|o| {
            o.offers.iter().map(|u| {
                json!({
                    "apiVersion": "ims.imageshare.io/v1alpha1",
                    "kind": "ImageOffer",
                    "metadata": {
                        "name": u.name,
                        "namespace": o.namespace,
                        "labels": {"ims.imageshare.io/owner": u.name},
                    },
                    "spec": {"owner": u.name},
                    "status": serde_json::to_value(&u.status).unwrap(),
                })
            })
        })
        .collect();
    assert_eq!(offers, expected_offers, "{}: the ImageOffers", folder.display());
    let expected_quotas: Vec<Value> = report
        .outcomes
        .iter()
        .filter_map(|o| match &o.quota {
            QuotaUpdate::Apply { status, .. } => Some(json!({
                "apiVersion": "ims.imageshare.io/v1alpha1",
                "kind": "ImageQuota",
                "metadata": {"name": "ims", "namespace": o.namespace},
                "spec": {},
                "status": serde_json::to_value(status).unwrap(),
            })),
            _ => None,
        })
        .collect();
    assert_eq!(quotas, expected_quotas, "{}: the ImageQuotas", folder.display());
    let inputs = input_documents(folder);
    assert_eq!(
        docs.len(),
        inputs.len(),
        "{}: one document per input object",
        folder.display()
    );
    let statuses = statuses(report);
    assert_eq!(
        docs.len(),
        statuses.len(),
        "{}: every object has a status",
        folder.display()
    );
    for (doc, input) in docs.iter().zip(&inputs) {
        let key = (
            doc["kind"].as_str().unwrap().to_string(),
            doc["metadata"]["namespace"].as_str().unwrap_or("default").to_string(),
            doc["metadata"]["name"].as_str().unwrap().to_string(),
        );
        assert_eq!(
            doc.get("status"),
            statuses.get(&key),
            "{}: status of {key:?}",
            folder.display()
        );
        // The generation the status was computed from: the object's, or 1 (what the API
        // server gives an object it creates) when the input has none.
        let generation = doc.pointer("/metadata/generation").cloned().unwrap_or(json!(1));
        assert_eq!(
            doc["status"]["observedGeneration"],
            generation,
            "{}: observedGeneration of {key:?}",
            folder.display()
        );
        for condition in doc["status"]["conditions"].as_array().into_iter().flatten() {
            assert_eq!(
                condition["observedGeneration"],
                generation,
                "{}: condition of {key:?}",
                folder.display()
            );
        }
        let mut without_status = doc.clone();
        without_status.as_object_mut().unwrap().remove("status");
        // The object is echoed as given (an object without a namespace may show `default`).
        let mut defaulted = input.clone();
        if defaulted.pointer("/metadata/namespace").is_none() {
            defaulted["metadata"]["namespace"] = json!("default");
        }
        assert!(
            without_status == *input || without_status == defaulted,
            "{}: the object itself is echoed:\n{without_status:#}\n{input:#}",
            folder.display()
        );
    }
    docs.extend(offers);
    docs.extend(quotas);
    docs
}

/// PyYAML and kubectl read the same values from each `-o yaml` stream as our own reader.
fn check_yaml_1_1_readers_agree(folders: &[&Path], reports: &[&Report], docs: &[Vec<Value>]) {
    let streams: Vec<String> = reports.iter().map(|r| r.yaml()).collect();
    if let Some(py) = parse_with_pyyaml(&streams) {
        for ((folder, py), docs) in folders.iter().zip(py).zip(docs) {
            assert_eq!(&py, docs, "{}: PyYAML reads different values", folder.display());
        }
    }
    for ((folder, stream), docs) in folders.iter().zip(&streams).zip(docs) {
        if let Some(kubectl) = parse_with_kubectl(stream) {
            assert_eq!(&kubectl, docs, "{}: kubectl reads different values", folder.display());
        }
    }
}

#[test]
fn yaml_output_of_every_example_reads_back_as_the_statuses() {
    let mut folders = Vec::new();
    let mut all = Vec::new();
    let mut docs = Vec::new();
    for (example, report) in reports() {
        docs.push(check_yaml_reads_back(example, report));
        folders.push(example.as_path());
        all.push(report);
    }
    check_yaml_1_1_readers_agree(&folders, &all, &docs);
}

/// A document as JSON (which is YAML) with every character outside printable ASCII escaped,
/// so that the input is YAML 1.1 for any content.
fn escaped_json(doc: &Value) -> String {
    let mut out = String::new();
    for c in serde_json::to_string(doc).unwrap().chars() {
        match c as u32 {
            0x20..=0x7e => out.push(c),
            n @ 0..=0xffff => out.push_str(&format!("\\u{n:04X}")),
            n => out.push_str(&format!("\\U{n:08X}")),
        }
    }
    out
}

#[test]
fn yaml_output_quotes_strings_that_yaml_1_1_would_read_as_something_else() {
    let tricky = [
        "yes",
        "No",
        "on",
        "OFF",
        "y",
        "n",
        "true",
        "null",
        "~",
        "0755",
        "0x1F",
        "1e3",
        "1_000",
        "12:30",
        "2026-01-01",
        ".inf",
        "-",
        "- x",
        "a: b",
        "#c",
        "@at",
        "`tick",
        "'single'",
        "\"double\"",
        "back\\slash",
        "line\nbreak",
        "tab\there",
        " lead",
        "trail ",
        "共享镜像",
        "&anchor",
        "*alias",
        "!tag",
        "%pct",
        "{flow}",
        "[seq]",
        "a #b",
        "?",
        // Characters YAML 1.1 readers reject raw (DEL, C1 controls, U+FFFE) or read as line
        // breaks (NEL, LS, PS), a BOM, other controls, and a character beyond the BMP.
        "del\u{7f}",
        "c1\u{80}\u{9f}",
        "nel\u{85}x",
        "ls\u{2028}x",
        "ps\u{2029}x",
        "bom\u{feff}x",
        "nonchar\u{fffe}",
        "nul\u{0}bell\u{7}esc\u{1b}",
        "cr\rlf",
        "smile\u{1f600}",
        "nbsp\u{a0}",
    ];
    let dir = std::env::temp_dir().join(format!("ims-golden-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut docs = Vec::new();
    for (i, text) in tricky.iter().enumerate() {
        docs.push(json!({
            "apiVersion": "ims.imageshare.io/v1alpha1",
            "kind": "PrivateImage",
            "metadata": {"name": format!("img-{i}"), "namespace": "tenant-a",
                         "labels": {"note": text}, "annotations": {"text": text}},
            "spec": {
                "displayName": text, "osVersion": text, "description": text, "diskSizeGiB": 40,
                "source": {"file": {"url": format!("s3://bucket/{i}.qcow2"), "format": "QCOW2"}}
            }
        }));
    }
    let images: Vec<String> = (0..tricky.len()).map(|i| format!("img-{i}")).collect();
    for (k, chunk) in images.chunks(30).enumerate() {
        docs.push(json!({
            "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ImageShare",
            "metadata": {"name": format!("s{k}"), "namespace": "tenant-a"},
            "spec": {"images": chunk, "recipients": ["tenant-b"]}
        }));
    }
    docs.push(json!({
        "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ShareAcceptance",
        "metadata": {"name": "all", "namespace": "tenant-b"},
        "spec": {"owner": "tenant-a", "images": [], "decision": "Accept"}
    }));
    // Without a namespace: in `default`.
    docs.push(json!({
        "apiVersion": "ims.imageshare.io/v1alpha1", "kind": "ShareAcceptance",
        "metadata": {"name": "no-namespace"},
        "spec": {"owner": "tenant-a"}
    }));
    let text: String = docs.iter().map(|d| format!("---\n{}\n", escaped_json(d))).collect();
    std::fs::write(dir.join("objects.yaml"), text).unwrap();
    let mut config = Config::default();
    config.limits.private_images_per_tenant = -1;
    config.limits.shared_images_per_tenant = -1;
    let report = simulate(std::slice::from_ref(&dir), config, now()).unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    let out = report.yaml();
    let parsed = parse_stream(&out);
    // The inbox carries displayName and osVersion of every tricky string.
    let offer = parsed.iter().find(|d| d["kind"] == "ImageOffer").unwrap();
    let received = offer["status"]["images"].as_array().unwrap();
    assert_eq!(received.len(), tricky.len());
    for d in &parsed {
        let name = d["metadata"]["name"].as_str().unwrap();
        if let Some(i) = name.strip_prefix("img-") {
            let text = tricky[i.parse::<usize>().unwrap()];
            assert_eq!(d["spec"]["displayName"], text);
            assert_eq!(d["metadata"]["labels"]["note"], text);
            let r = received.iter().find(|r| r["name"] == name).unwrap();
            assert_eq!(
                (r["displayName"].as_str(), r["osVersion"].as_str()),
                (Some(text), Some(text))
            );
        }
    }
    assert_eq!(
        parsed
            .iter()
            .filter(|d| d["kind"] != "ImageQuota" && d["kind"] != "ImageOffer")
            .count(),
        docs.len()
    );
    let read = check_yaml_reads_back(&dir, &report);
    check_yaml_1_1_readers_agree(&[dir.as_path()], &[&report], &[read]);
    let _ = std::fs::remove_dir_all(&dir);
}
