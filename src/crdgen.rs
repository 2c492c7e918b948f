//! `ims-operator crd` and the files in `crds/`: the CRDs as published.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use serde_json::Value;

/// The CRDs as published: [`crate::api::crds`] with field descriptions as paragraphs.
pub fn crds() -> Vec<CustomResourceDefinition> {
    crate::api::crds()
        .into_iter()
        .map(with_paragraph_descriptions)
        .collect()
}

/// Each CRD as (file name in `crds/`, YAML document).
pub fn crd_files() -> Vec<(String, String)> {
    crds()
        .into_iter()
        .map(|crd| {
            let yaml = crate::yaml::to_string(&crd);
            (format!("{}.yaml", crd.name_any()), yaml)
        })
        .collect()
}

/// All CRDs as one YAML stream, as `ims-operator crd` prints it.
pub fn crds_yaml() -> String {
    crd_files()
        .into_iter()
        .map(|(_, yaml)| format!("---\n{yaml}"))
        .collect()
}

/// Descriptions come from doc comments, wrapped at the source's line width; `kubectl explain`
/// prints them as they are, wrap by wrap. Joins each paragraph's lines with a space.
fn with_paragraph_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    match child {
                        Value::String(text) if key == "description" => *text = paragraphs(text),
                        _ => walk(child),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    walk(&mut value);
    serde_json::from_value(value).expect("rewrapping descriptions keeps a valid CRD")
}

/// Text with its wrapped lines joined: paragraphs (separated by blank lines) are kept, apart by
/// one blank line; a line starting a list item (`- `, `* `, `1. `) stays on its own line.
pub fn paragraphs(text: &str) -> String {
    let mut out = String::new();
    let mut blank_before = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            blank_before = !out.is_empty();
            continue;
        }
        if blank_before {
            out.push_str("\n\n");
        } else if !out.is_empty() {
            out.push(if starts_list_item(line) { '\n' } else { ' ' });
        }
        out.push_str(line);
        blank_before = false;
    }
    out
}

fn starts_list_item(line: &str) -> bool {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    line.starts_with("- ") || line.starts_with("* ") || (digits > 0 && line[digits..].starts_with(". "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_lines_are_joined_and_paragraphs_kept() {
        assert_eq!(
            paragraphs("The per-image\nrecipient limit counts\n across all.\n\n\nSecond\nparagraph.\n"),
            "The per-image recipient limit counts across all.\n\nSecond paragraph."
        );
        assert_eq!(paragraphs("One line."), "One line.");
        assert_eq!(paragraphs("Either:\n- a\n- b\n1. c\nd"), "Either:\n- a\n- b\n1. c d");
    }

    /// Every description of the published CRDs, by path.
    fn descriptions() -> Vec<(String, String)> {
        fn walk(path: &str, value: &Value, out: &mut Vec<(String, String)>) {
            match value {
                Value::Object(map) => {
                    for (key, child) in map {
                        match child {
                            Value::String(text) if key == "description" => out.push((path.into(), text.clone())),
                            _ => walk(&format!("{path}/{key}"), child, out),
                        }
                    }
                }
                Value::Array(items) => {
                    for (i, child) in items.iter().enumerate() {
                        walk(&format!("{path}/{i}"), child, out);
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        for (name, yaml) in crd_files() {
            let value: Value = crate::yaml::from_str(&yaml).unwrap();
            walk(&name, &value, &mut out);
        }
        out
    }

    #[test]
    fn no_published_description_breaks_a_line_inside_a_paragraph() {
        let descriptions = descriptions();
        assert!(descriptions.len() > 20, "{descriptions:?}");
        for (path, text) in descriptions {
            let lines: Vec<&str> = text.split('\n').collect();
            for pair in lines.windows(2) {
                let is_break = pair[0].is_empty() || pair[1].is_empty() || starts_list_item(pair[1]);
                assert!(is_break, "{path}: a line break inside a paragraph: {text:?}");
            }
            assert_eq!(text.trim(), text, "{path}");
        }
    }
}
