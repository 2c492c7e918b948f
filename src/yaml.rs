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
//!
//! Input (manifests for `simulate`, the config file) is read like kubectl reads it: YAML 1.1
//! words such as `yes`/`on` are booleans, so a manifest that kubectl would send with a boolean
//! where a string belongs is refused by simulate too.

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

/// Limits of one input document: far above any manifest (a `List` of 10,000 objects fits),
/// still bounding what a hostile file can make the reader do. Alias expansion keeps
/// serde-saphyr's own limits.
fn read_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 40_000_000,
            max_nodes: 10_000_000,
        },
        with_snippet: false,
    }
}

/// Renders a read error as one line; `lines_before` shifts its line numbers to the file's.
fn read_error(e: &serde_saphyr::Error, lines_before: usize) -> String {
    e.render_with_options(serde_saphyr::render_options! {
        formatter: &serde_saphyr::UserMessageFormatter,
        line_offset: lines_before as u64,
    })
}

/// Reads one YAML document.
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str_with_options(text, read_options()).map_err(|e| read_error(&e, 0))
}

/// The documents of a YAML stream in order, numbered as the YAML parser counts them: an empty
/// document (`---` followed by `---`) is `Null` and counts, a comment before the first `---`
/// is no document. Each document is read on its own, so an unreadable one (say, a duplicate
/// key) does not hide the others; a syntax error ends the stream, since the parser can not find
/// the next document after it, and is reported as the document it occurred in.
pub fn documents(text: &str) -> Vec<Result<Value, String>> {
    use serde_saphyr::granit_parser::{Event, Parser};
    let mut out = Vec::new();
    // Byte offset where the current document's text begins (directives and comments
    // before its `---` included) and the number of lines before it.
    let (mut start, mut lines_before) = (0, 0);
    for item in Parser::new_from_str(text) {
        match item {
            Ok((Event::DocumentEnd, span)) => {
                let end = byte_offset(text, &span.end);
                let piece = &text[start..end];
                out.push(
                    serde_saphyr::from_str_with_options::<Value>(piece, read_options())
                        .map_err(|e| read_error(&e, lines_before)),
                );
                lines_before += piece.matches('\n').count();
                start = end;
            }
            Ok(_) => {}
            Err(e) => {
                let at = e.marker();
                out.push(Err(format!(
                    "{} at line {}, column {}",
                    e.info(),
                    at.line(),
                    at.col() + 1
                )));
                break;
            }
        }
    }
    out
}

/// The byte offset of a parser position in `text`.
fn byte_offset(text: &str, at: &serde_saphyr::granit_parser::Marker) -> usize {
    at.byte_offset().unwrap_or_else(|| {
        text.char_indices()
            .nth(at.index())
            .map_or(text.len(), |(offset, _)| offset)
    })
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
    fn documents_are_numbered_as_the_parser_counts_them_and_read_one_by_one() {
        let text = "# header\n---\na: 1\n---\n---\nb: yes\n...\n%YAML 1.2\n---\nc: 3\n---\nd: 1\nd: 2\n---\ne: 5\n";
        let docs = documents(text);
        assert_eq!(docs.len(), 6, "{docs:?}");
        assert_eq!(docs[0], Ok(json!({"a": 1})));
        assert_eq!(docs[1], Ok(Value::Null));
        // YAML 1.1, as kubectl reads it.
        assert_eq!(docs[2], Ok(json!({"b": true})));
        assert_eq!(docs[3], Ok(json!({"c": 3})));
        let duplicate = docs[4].as_ref().unwrap_err();
        assert!(
            duplicate.contains("duplicate") && duplicate.contains("line 13"),
            "{duplicate}"
        );
        assert_eq!(docs[5], Ok(json!({"e": 5})));

        let broken = documents("a: 1\n---\nb: [\n---\nc: 3\n");
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(broken[1].as_ref().unwrap_err().contains("line 3"), "{broken:?}");
        assert!(documents("").is_empty());
        assert!(documents("# nothing\n").is_empty());
        assert_eq!(
            documents("--- {a: 1}\n--- [1]\n"),
            vec![Ok(json!({"a": 1})), Ok(json!([1]))]
        );
        assert_eq!(documents("é: \"\\x7F\\N\"\n---\nx: 1\n")[1], Ok(json!({"x": 1})));
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
