//! Every manifest under examples/ is something the API server would admit: our three kinds
//! deserialize into the typed structs and pass the CRD schema (OpenAPI + CEL) offline; the
//! only other kinds are v1 Namespace and v1 PersistentVolumeClaim. Every example folder tells
//! its story in a `#` header, and examples/README.md lists exactly the folders that exist.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use ims_operator::api::{self, ImageShare, PrivateImage, ShareAcceptance, validation};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use serde_json::Value;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Every file under `dir`, recursively, in name order.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let mut out = Vec::new();
    for path in entries {
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn yaml_files() -> Vec<PathBuf> {
    files(&examples_dir())
        .into_iter()
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect()
}

/// The documents of a multi-document YAML stream, as JSON values; comment-only documents
/// (a file's header before the first `---`) are skipped.
fn documents(path: &Path) -> Vec<(usize, Value)> {
    let text = std::fs::read_to_string(path).unwrap();
    ims_operator::yaml::documents(&text)
        .into_iter()
        .enumerate()
        .filter_map(|(i, doc)| {
            let value = doc.unwrap_or_else(|e| panic!("{}: document {}: {e}", path.display(), i + 1));
            (!value.is_null()).then_some((i, value))
        })
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(doc: &Value, at: &str) -> T {
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{at}: does not deserialize: {e}"))
}

#[track_caller]
fn check_schema(kind: &str, doc: &Value, at: &str) {
    let schema = validation::schema_of(kind).unwrap();
    if let Err(violations) = validation::validate(&schema, doc, None) {
        let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
        panic!("{at}: rejected by the {kind} schema:\n  {}", lines.join("\n  "));
    }
}

#[track_caller]
fn check_cel(result: Result<(), kube::core::cel::ValidationErrors>, at: &str) {
    if let Err(errors) = result {
        panic!("{at}: rejected by a CEL rule: {errors}");
    }
}

#[test]
fn every_example_manifest_is_admissible() {
    let files = yaml_files();
    assert!(files.len() >= 14, "examples/ has only {} YAML files", files.len());
    let mut kinds_seen = BTreeSet::new();
    for path in &files {
        let rel = path.strip_prefix(examples_dir()).unwrap().display().to_string();
        let docs = documents(path);
        assert!(!docs.is_empty(), "{rel}: no documents");
        for (i, doc) in docs {
            let at = format!("examples/{rel} document {i}");
            let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
            let name = doc.pointer("/metadata/name").and_then(Value::as_str);
            assert!(name.is_some_and(|n| !n.is_empty()), "{at}: metadata.name missing");
            match (api_version, kind) {
                (api::API_VERSION, "PrivateImage") => {
                    let object: PrivateImage = typed(&doc, &at);
                    check_schema(kind, &doc, &at);
                    check_cel(object.validate_cel(), &at);
                }
                (api::API_VERSION, "ImageShare") => {
                    let object: ImageShare = typed(&doc, &at);
                    check_schema(kind, &doc, &at);
                    check_cel(object.validate_cel(), &at);
                }
                (api::API_VERSION, "ShareAcceptance") => {
                    let object: ShareAcceptance = typed(&doc, &at);
                    check_schema(kind, &doc, &at);
                    check_cel(object.validate_cel(), &at);
                }
                ("v1", "Namespace") => {
                    let _: Namespace = typed(&doc, &at);
                    assert!(
                        doc.pointer("/metadata/namespace").is_none(),
                        "{at}: a Namespace has no namespace"
                    );
                }
                ("v1", "PersistentVolumeClaim") => {
                    let _: PersistentVolumeClaim = typed(&doc, &at);
                }
                _ => panic!(
                    "{at}: unexpected {api_version}/{kind}; examples hold only our three kinds, v1 Namespace and v1 PersistentVolumeClaim"
                ),
            }
            if kind != "Namespace" {
                let namespace = doc.pointer("/metadata/namespace").and_then(Value::as_str);
                assert!(
                    namespace.is_some_and(|n| !n.is_empty()),
                    "{at}: namespaced objects of the examples name their namespace (the tenant)"
                );
            }
            kinds_seen.insert(kind.to_string());
        }
    }
    let expected: BTreeSet<String> = ["PrivateImage", "ImageShare", "ShareAcceptance", "Namespace"]
        .into_iter()
        .map(String::from)
        .collect();
    assert!(kinds_seen.is_superset(&expected), "examples cover {kinds_seen:?}");
}

/// Folders directly holding YAML files (scenario folders and step folders).
fn example_folders() -> BTreeSet<PathBuf> {
    yaml_files()
        .into_iter()
        .map(|p| p.parent().unwrap().to_path_buf())
        .collect()
}

#[test]
fn every_example_folder_starts_with_a_comment_header() {
    let folders = example_folders();
    assert!(!folders.is_empty());
    for folder in folders {
        let first = files(&folder)
            .into_iter()
            .find(|p| p.parent() == Some(folder.as_path()) && p.extension().is_some_and(|e| e == "yaml"))
            .unwrap();
        let text = std::fs::read_to_string(&first).unwrap();
        assert!(
            text.starts_with('#'),
            "{}: the first file of an example folder starts with a `#` header telling the scenario",
            first.display()
        );
        // The header of the folder's first file is a real story, not a one-liner.
        let header_lines = text.lines().take_while(|l| l.starts_with('#')).count();
        assert!(
            header_lines >= 5,
            "{}: header has only {header_lines} lines",
            first.display()
        );
    }
    // Every file carries at least a one-line header.
    for path in yaml_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with('#'), "{}: no `#` header", path.display());
    }
}

/// The folders named in the first column of the README's table: `NN-name/` or
/// `NN-name/stepX/`, followed by more `stepY/` of the same scenario.
fn readme_folders() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(examples_dir().join("README.md")).unwrap();
    let mut out = BTreeSet::new();
    for line in readme.lines() {
        let Some(first_cell) = line.strip_prefix('|').and_then(|rest| rest.split('|').next()) else {
            continue;
        };
        let names: Vec<&str> = first_cell.split('`').skip(1).step_by(2).collect();
        let Some(first) = names.first() else { continue };
        let first = first.trim_end_matches('/');
        let scenario = first.split('/').next().unwrap().to_string();
        out.insert(scenario.clone());
        if first.contains('/') {
            out.insert(first.to_string());
        }
        for step in &names[1..] {
            out.insert(format!("{scenario}/{}", step.trim_end_matches('/')));
        }
    }
    out
}

#[test]
fn readme_lists_exactly_the_example_folders() {
    let root = examples_dir();
    let on_disk: BTreeSet<String> = example_folders()
        .into_iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .chain(
            std::fs::read_dir(&root)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_dir())
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned()),
        )
        .collect();
    let listed = readme_folders();
    assert!(listed.len() >= 14, "README table parsed to {listed:?}");
    let missing: Vec<_> = listed.difference(&on_disk).collect();
    let unlisted: Vec<_> = on_disk.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "examples/README.md lists folders that do not exist: {missing:?}"
    );
    assert!(
        unlisted.is_empty(),
        "folders missing from the table of examples/README.md: {unlisted:?}"
    );
}
