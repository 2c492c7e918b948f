use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as K8sCondition, Time};
use serde::{Deserialize, Serialize};

/// `metav1.Condition`, with k8s-openapi's schema and JSON: written with the same fields in the
/// same order, read by k8s-openapi itself (so a `null` or missing string, a repeated key, read
/// as it reads them). Its type, status and reason are the operator's fixed words, so they are
/// shared static strings when the engine writes them: k8s-openapi's type needs three
/// allocations per condition, and the engine writes one condition for every object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "K8sCondition")]
pub struct Condition {
    pub last_transition_time: Time,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub reason: Cow<'static, str>,
    pub status: Cow<'static, str>,
    #[serde(rename = "type")]
    pub type_: Cow<'static, str>,
}

impl From<K8sCondition> for Condition {
    fn from(c: K8sCondition) -> Self {
        Condition {
            last_transition_time: c.last_transition_time,
            message: c.message,
            observed_generation: c.observed_generation,
            reason: c.reason.into(),
            status: c.status.into(),
            type_: c.type_.into(),
        }
    }
}

impl schemars::JsonSchema for Condition {
    fn schema_name() -> Cow<'static, str> {
        K8sCondition::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        K8sCondition::json_schema(generator)
    }

    fn inline_schema() -> bool {
        K8sCondition::inline_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read as k8s-openapi reads it, written as it writes it.
    #[test]
    fn reads_and_writes_as_k8s_openapi_does() {
        let texts = [
            r#"{"lastTransitionTime":"2026-01-01T00:00:00Z","message":"m","observedGeneration":3,"reason":"R","status":"True","type":"Ready"}"#,
            r#"{"lastTransitionTime":"2026-01-01T00:00:00Z","reason":null,"type":"Ready","type":"Other","extra":1}"#,
        ];
        for text in texts {
            let ours: Condition = serde_json::from_str(text).unwrap();
            let theirs: K8sCondition = serde_json::from_str(text).unwrap();
            assert_eq!(
                serde_json::to_string(&ours).unwrap(),
                serde_json::to_string(&theirs).unwrap()
            );
        }
        let missing_time = r#"{"type":"Ready","status":"True"}"#;
        assert!(serde_json::from_str::<Condition>(missing_time).is_err());
        assert!(serde_json::from_str::<K8sCondition>(missing_time).is_err());
    }
}
