//! `crds/` holds exactly what `ims-operator crd` prints, and the CRDs keep the API rules of
//! README, "The API" (short names, category, status subresource, list types, no unsigned ints or floats).

use std::{collections::BTreeSet, path::Path};

use ims_operator::{api, crdgen};
use serde_json::Value;

const REGENERATE: &str = "IMS_REGENERATE_CRDS";

#[test]
fn crds_folder_matches_generated_output() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let files = crdgen::crd_files();
    if std::env::var_os(REGENERATE).is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, yaml) in &files {
            std::fs::write(dir.join(name), yaml).unwrap();
        }
    }
    let expected: BTreeSet<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        present, expected,
        "crds/ must hold exactly the generated CRDs; run `{REGENERATE}=1 cargo test --test crds`"
    );
    for (name, yaml) in files {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(
            on_disk == yaml,
            "crds/{name} drifted from `ims-operator crd`; run `{REGENERATE}=1 cargo test --test crds`"
        );
    }
}

#[test]
fn crd_command_prints_every_file_of_crds_folder() {
    let stream = crdgen::crds_yaml();
    for (_, yaml) in crdgen::crd_files() {
        assert!(stream.contains(&yaml));
    }
    assert_eq!(stream.matches("\n---\n").count() + 1, 5);
}

fn walk(path: &str, v: &Value, visit: &mut dyn FnMut(&str, &serde_json::Map<String, Value>)) {
    match v {
        Value::Object(map) => {
            visit(path, map);
            for (k, child) in map {
                walk(&format!("{path}/{k}"), child, visit);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(&format!("{path}/{i}"), child, visit);
            }
        }
        _ => {}
    }
}

#[test]
fn api_shape_follows_the_spec() {
    let expected = [
        ("PrivateImage", "pimg"),
        ("ImageShare", "ishare"),
        ("ShareAcceptance", "sacc"),
    ];
    let crds = api::crds();
    assert_eq!(crds.len(), 5);
    // The operator's own ImageOffer (the inbox): no status subresource, so one apply writes
    // it whole; its columns as `kubectl get imageoffers` shows them.
    let offer = &crds[4];
    assert_eq!(offer.spec.names.kind, "ImageOffer");
    assert_eq!(offer.spec.names.plural, "imageoffers");
    assert_eq!(offer.spec.scope, "Namespaced");
    assert_eq!(
        offer.spec.names.short_names.as_deref(),
        Some(&["ioffer".to_string()][..])
    );
    assert_eq!(offer.spec.names.categories.as_deref(), Some(&["ims".to_string()][..]));
    assert!(offer.spec.versions[0].subresources.is_none());
    let columns: Vec<&str> = offer.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Owner", "Pending", "Accepted", "Age"]);
    // The operator's own ImageQuota: ResourceQuota-like columns, no conditions.
    let quota = &crds[3];
    assert_eq!(quota.spec.names.kind, "ImageQuota");
    assert_eq!(quota.spec.scope, "Namespaced");
    assert_eq!(
        quota.spec.names.short_names.as_deref(),
        Some(&["iquota".to_string()][..])
    );
    assert_eq!(quota.spec.names.categories.as_deref(), Some(&["ims".to_string()][..]));
    let columns: Vec<&str> = quota.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Private", "Shared", "Age"]);
    let schema = serde_json::to_value(&quota.spec.versions[0].schema).unwrap();
    walk("", &schema, &mut |path, node| {
        if let Some(format) = node.get("format").and_then(Value::as_str) {
            assert!(!format.starts_with("uint"), "ImageQuota{path}: unsigned integer");
        }
    });
    for (crd, (kind, short)) in crds.iter().zip(expected) {
        assert_eq!(crd.spec.group, "ims.imageshare.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&[short.to_string()][..]));
        assert_eq!(crd.spec.names.categories.as_deref(), Some(&["ims".to_string()][..]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(
            version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{kind} has /status"
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert!(
            columns.contains(&"Ready") && columns.contains(&"Age"),
            "{kind}: {columns:?}"
        );

        let schema =
            serde_json::to_value(version.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap();
        let conditions = schema.pointer("/properties/status/properties/conditions").unwrap();
        assert_eq!(
            conditions["x-kubernetes-list-type"], "map",
            "{kind} conditions are a list-map"
        );
        assert_eq!(conditions["x-kubernetes-list-map-keys"], serde_json::json!(["type"]));
        walk("", &schema, &mut |path, node| {
            if let Some(format) = node.get("format").and_then(Value::as_str) {
                assert!(!format.starts_with("uint"), "{kind}{path}: unsigned integer");
            }
            assert_ne!(
                node.get("type").and_then(Value::as_str),
                Some("number"),
                "{kind}{path}: float"
            );
        });
    }
}

#[test]
fn printer_columns_show_the_seed_ui_columns() {
    let crd = &api::crds()[0];
    let columns: Vec<&str> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Type", "OS", "Disk", "Ready", "Shared", "Age"]);
}
