//! Offline admission: checks an object against its CRD's OpenAPI schema and CEL rules the way
//! the API server does, so `simulate` and the tests reject what `kubectl apply` would.
//!
//! Covers the OpenAPI keywords our schemas use (type, enum, required, minimum/maximum,
//! minLength/maxLength, minItems/maxItems, pattern, `x-kubernetes-list-type: set`), then applies
//! defaults and evaluates the `x-kubernetes-validations` rules with kube's CEL validator.

use serde_json::Value;

use kube::core::cel::Validator;

/// One violation, naming the field path and the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The openAPIV3Schema of one of our kinds (generated once per process).
pub fn schema_of(kind: &str) -> Option<Value> {
    static SCHEMAS: std::sync::OnceLock<Vec<(String, Value)>> = std::sync::OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        super::crds()
            .into_iter()
            .filter_map(|crd| {
                let schema = crd
                    .spec
                    .versions
                    .first()?
                    .schema
                    .as_ref()?
                    .open_api_v3_schema
                    .as_ref()?;
                Some((crd.spec.names.kind.clone(), serde_json::to_value(schema).ok()?))
            })
            .collect()
    });
    schemas
        .iter()
        .find(|(k, _)| k == kind)
        .map(|(_, schema)| schema.clone())
}

/// Validates an object (create when `old` is None, update otherwise). Returns every violation.
pub fn validate(schema: &Value, object: &Value, old: Option<&Value>) -> Result<(), Vec<Violation>> {
    let mut violations = Vec::new();
    // Only spec is user input; status and metadata are checked by the API server elsewhere.
    if let (Some(spec_schema), Some(spec)) = (schema.pointer("/properties/spec"), object.get("spec")) {
        check(spec_schema, spec, "spec", &mut violations);
    } else if object.get("spec").is_none() {
        violations.push(Violation {
            path: "spec".into(),
            message: "Required value".into(),
        });
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    let defaulted = kube::core::cel::apply_defaults(schema, object);
    let old = old.map(|o| kube::core::cel::apply_defaults(schema, o));
    if let Err(errors) = Validator::new().validate(schema, &defaulted, old.as_ref()) {
        for e in errors.into_vec() {
            violations.push(Violation {
                path: if e.field_path.is_empty() {
                    "<object>".into()
                } else {
                    e.field_path.clone()
                },
                message: format!("Invalid value: {} (rule: {})", e.message, e.rule),
            });
        }
    }
    if violations.is_empty() { Ok(()) } else { Err(violations) }
}

fn push(out: &mut Vec<Violation>, path: &str, message: String) {
    out.push(Violation {
        path: path.to_string(),
        message,
    });
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
    if value.is_null() {
        if !schema.get("nullable").and_then(Value::as_bool).unwrap_or(false) {
            push(out, path, "Invalid value: null: must not be null".into());
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let ok = actual == expected || (expected == "number" && actual == "integer");
        if !ok {
            push(
                out,
                path,
                format!("Invalid value: {actual}: must be of type {expected}"),
            );
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let allowed: Vec<String> = options.iter().filter(|o| !o.is_null()).map(|o| o.to_string()).collect();
        push(
            out,
            path,
            format!("Unsupported value: {value}: supported values: {}", allowed.join(", ")),
        );
    }
    match value {
        Value::Number(n) => {
            if let (Some(min), Some(x)) = (schema.get("minimum").and_then(Value::as_f64), n.as_f64())
                && x < min
            {
                push(
                    out,
                    path,
                    format!("Invalid value: {n}: should be greater than or equal to {min}"),
                );
            }
            if let (Some(max), Some(x)) = (schema.get("maximum").and_then(Value::as_f64), n.as_f64())
                && x > max
            {
                push(
                    out,
                    path,
                    format!("Invalid value: {n}: should be less than or equal to {max}"),
                );
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                push(
                    out,
                    path,
                    format!("Invalid value: {s:?}: should be at least {min} chars long"),
                );
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                push(out, path, format!("Too long: may not be more than {max} bytes"));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => {
                        push(out, path, format!("Invalid value: {s:?}: should match '{pattern}'"))
                    }
                    Ok(_) => {}
                    Err(e) => push(out, path, format!("schema pattern {pattern:?} does not compile: {e}")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                push(
                    out,
                    path,
                    format!("Invalid value: {} items: should have at least {min} items", items.len()),
                );
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && (items.len() as u64) > max
            {
                push(
                    out,
                    path,
                    format!("Too many: {}: must have at most {max} items", items.len()),
                );
            }
            if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        push(out, &format!("{path}[{i}]"), format!("Duplicate value: {item}"));
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if let Some(key) = required.as_str()
                    && !map.contains_key(key)
                {
                    push(out, &format!("{path}.{key}"), "Required value".into());
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (key, child) in map {
                match properties.and_then(|p| p.get(key)) {
                    Some(child_schema) => check(child_schema, child, &format!("{path}.{key}"), out),
                    None if properties.is_some()
                        && !schema
                            .get("x-kubernetes-preserve-unknown-fields")
                            .and_then(Value::as_bool)
                            .unwrap_or(false) =>
                    {
                        // The API server prunes unknown fields silently; a manifest that relies on
                        // one is almost always a typo, so say so.
                        push(out, &format!("{path}.{key}"), "unknown field".into());
                    }
                    None => {}
                }
            }
        }
        _ => {}
    }
}
