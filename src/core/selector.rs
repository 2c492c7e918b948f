//! `metav1.LabelSelector` matching, as the API server does it for `kubectl get -l`: every
//! matchLabels pair and every matchExpressions requirement must hold; an empty selector
//! matches every set of labels. An operator the API does not define matches nothing, so a
//! malformed selector shares and accepts nothing (fail closed).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Whether `labels` satisfy `selector`.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    pairs
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|requirement| holds(requirement, labels))
}

fn holds(requirement: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&requirement.key);
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let selector = LabelSelector {
            match_labels: Some([("team".to_string(), "a".to_string())].into()),
            match_expressions: Some(vec![
                requirement("tier", "In", &["gold", "silver"]),
                requirement("legacy", "DoesNotExist", &[]),
                requirement("env", "NotIn", &["test"]),
                requirement("region", "Exists", &[]),
            ]),
        };
        let good = labels(&[("team", "a"), ("tier", "gold"), ("region", "r")]);
        assert!(matches(&selector, &good));
        for (key, value) in [("team", "b"), ("tier", "bronze"), ("legacy", "x"), ("env", "test")] {
            let mut bad = good.clone();
            bad.insert(key.into(), value.into());
            assert!(!matches(&selector, &bad), "{key}={value}");
        }
        let mut no_region = good.clone();
        no_region.remove("region");
        assert!(!matches(&selector, &no_region));
    }

    #[test]
    fn an_empty_selector_matches_everything_and_an_unknown_operator_nothing() {
        assert!(matches(&LabelSelector::default(), &labels(&[])));
        let odd = LabelSelector {
            match_expressions: Some(vec![requirement("team", "Gt", &["1"])]),
            ..Default::default()
        };
        assert!(!matches(&odd, &labels(&[("team", "2")])));
    }
}
