use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as K8sCondition, Time};
use serde::{Deserialize, Serialize};

/// `metav1.Condition`, with k8s-openapi's schema and JSON (same fields, same order, the same
/// defaults when reading). Its type, status and reason are the operator's fixed words, so they
/// are shared static strings when the engine writes them: k8s-openapi's type needs three
/// allocations per condition, and the engine writes one condition for every object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub last_transition_time: Time,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub reason: Cow<'static, str>,
    #[serde(default)]
    pub status: Cow<'static, str>,
    #[serde(default, rename = "type")]
    pub type_: Cow<'static, str>,
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
