//! A small block-style YAML writer for `simulate -o yaml`, whose output is a contract: any
//! YAML 1.1 or 1.2 reader (kubectl, PyYAML) must read back the same values. A string is written
//! plain only when it can not be mistaken for anything else (bool words like `yes`/`on`/`y`,
//! null, numbers including `0755` and `1_000`, timestamps, indicators); otherwise it is written
//! as a JSON string, which is a valid double-quoted YAML scalar.

use serde_json::Value;

/// Renders one document (without the leading `---`).
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

/// Renders a multi-document stream.
pub fn stream<'a>(docs: impl IntoIterator<Item = &'a Value>) -> String {
    docs.into_iter().map(|d| format!("---\n{}", to_string(d))).collect()
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, level: usize) {
    for (key, value) in map {
        indent(out, level);
        out.push_str(&string_text(key));
        out.push(':');
        write_child(out, value, level + 2, level);
    }
}

fn write_seq(out: &mut String, items: &[Value], level: usize) {
    for item in items {
        indent(out, level);
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // First key on the dash line, the rest aligned under it.
                let mut nested = String::new();
                write_map(&mut nested, map, level + 2);
                out.push(' ');
                out.push_str(&nested[level + 2..]);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(out, inner, level + 2);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

/// Writes the value after `key:`; sequences under a map key are not indented (kubectl style).
fn write_child(out: &mut String, value: &Value, map_level: usize, key_level: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, map_level);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, key_level);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_text(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn string_text(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("strings serialize")
    }
}

/// Words that some YAML version resolves to a bool or null.
const RESERVED: &[&str] = &[
    "y", "yes", "n", "no", "true", "false", "on", "off", "null", "nan", "inf",
];

/// A conservative test for strings that every YAML reader reads back as the same string: they
/// start with a letter, contain only letters, digits and `-_./`, and are no reserved word.
fn is_plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else { return false };
    if !first.is_ascii_alphabetic() {
        return false;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    {
        return false;
    }
    !RESERVED.contains(&s.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        ] {
            let text = string_text(s);
            assert!(text.starts_with('"'), "{s:?} must be quoted, got {text}");
        }
        for s in [
            "tenant-a",
            "centos-web",
            "Pending",
            "x86_64",
            "SystemDisk",
            "ims.imageshare.io/v1alpha1",
        ] {
            assert_eq!(string_text(s), s);
        }
    }

    #[test]
    fn nested_structures_render_in_block_style() {
        let v = json!({"a": {"b": [1, {"c": "yes", "d": []}], "e": {}}, "f": [[1, 2]]});
        assert_eq!(
            to_string(&v),
            "a:\n  b:\n  - 1\n  - c: \"yes\"\n    d: []\n  e: {}\nf:\n-\n  - 1\n  - 2\n"
        );
    }
}
