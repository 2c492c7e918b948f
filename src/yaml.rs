//! YAML in and out, through serde-saphyr (maintained; kube itself uses it).
//!
//! Output (`simulate -o yaml`, `ims-operator crd`) is a contract (README.md, "simulate: check
//! manifests offline"): every YAML 1.1 or 1.2 reader — kubectl, PyYAML — must read back the
//! values given, for every character. serde-saphyr's serializer guarantees that with its default
//! `yaml_12: false`: strings a YAML 1.1 reader would resolve to something else (`yes`, `on`,
//! `y`, `0755`, `1_000`, `12:30`, timestamps, `~`) are quoted, and characters a YAML 1.1 reader
//! rejects raw (DEL, C1 controls, U+FFFE) or reads as line breaks (NEL, LS, PS) are written as
//! escapes in double-quoted scalars. tests/golden.rs holds it to that with PyYAML and kubectl,
//! so an own writer is not needed.

use serde::Serialize;
use serde_json::Value;

/// Serializer options: block style, sequences under a key not indented (kubectl's layout),
/// YAML 1.1-safe quoting (`yaml_12: false`, which also omits a `%YAML` directive).
fn options() -> serde_saphyr::SerializerOptions {
    serde_saphyr::ser_options! {
        yaml_12: false,
        compact_list_indent: true,
        indent_step: 2,
    }
}

/// Renders one document (without a leading `---`).
pub fn to_string<T: Serialize>(value: &T) -> String {
    serde_saphyr::to_string_with_options(value, options()).expect("JSON-like values serialize to YAML")
}

/// Renders a multi-document stream, each document after a `---` line.
pub fn stream<'a>(docs: impl IntoIterator<Item = &'a Value>) -> String {
    docs.into_iter().map(|d| format!("---\n{}", to_string(d))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// YAML 1.1's printable characters (production c-printable) minus the ones a YAML 1.1
    /// reader takes for line breaks or a byte order mark.
    fn is_yaml_1_1_plain_char(c: char) -> bool {
        matches!(c as u32, 0x09 | 0x0A | 0x20..=0x7E | 0xA0..=0x2027 | 0x202A..=0xD7FF | 0xE000..=0xFEFE | 0xFF00..=0xFFFD | 0x10000..)
    }

    #[test]
    fn every_character_is_written_yaml_1_1_safe_and_reads_back() {
        let mut strings = Vec::new();
        for code in (0..0x3000).chain([0xD7FF, 0xE000, 0xFEFF, 0xFFFD, 0xFFFE, 0xFFFF, 0x1F600, 0x10FFFF]) {
            if let Some(c) = char::from_u32(code) {
                strings.push(format!("{c}"));
                strings.push(format!("a{c}b c"));
            }
        }
        let doc = json!({ "values": strings, "keys": strings.iter().map(|s| json!({ s: s })).collect::<Vec<_>>() });
        let text = to_string(&doc);
        let raw: Vec<char> = text.chars().filter(|c| !is_yaml_1_1_plain_char(*c)).collect();
        assert!(raw.is_empty(), "unescaped characters in the output: {raw:?}");
        let back: Value = serde_saphyr::from_str_with_options(&text, serde_saphyr::options! { budget: None }).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn ambiguous_strings_are_quoted() {
        for s in [
            "yes",
            "No",
            "ON",
            "off",
            "y",
            "n",
            "true",
            "null",
            "~",
            "0755",
            "1e3",
            "12",
            "",
            "-",
            "a: b",
            " x",
            "2026-01-01",
            "Null",
            ".5",
            "#x",
            "@a",
            "1_000",
            "12:30",
            "0x1F",
            "<<",
            "=",
        ] {
            let text = to_string(&json!({ "k": s }));
            let value = text.strip_prefix("k: ").unwrap().trim_end();
            assert!(
                value.starts_with('"') || value.starts_with('\''),
                "{s:?} must be quoted, got {text}"
            );
        }
        for s in [
            "tenant-a",
            "centos-web",
            "Pending",
            "x86_64",
            "SystemDisk",
            "ims.imageshare.io/v1alpha1",
        ] {
            assert_eq!(to_string(&json!({ "k": s })), format!("k: {s}\n"));
        }
    }

    #[test]
    fn nested_structures_render_in_block_style() {
        let v = json!({"a": {"b": [1, {"c": "yes", "d": []}], "e": {}}, "f": [[1, 2]]});
        let text = to_string(&v);
        assert!(text.starts_with("a:\n  b:\n  - 1\n  - c: "), "{text}");
        let back: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, v);
        assert_eq!(stream([&v, &v]).matches("---\n").count(), 2);
    }
}
