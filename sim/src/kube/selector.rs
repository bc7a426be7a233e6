//! Label and field selectors: parsed from query strings and from
//! `matchLabels`/`matchExpressions`, and matched against objects.

use serde_json::{Map, Value};

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A label selector: every requirement must hold. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the query-string form: `app=istiod,istio.io/rev in (1-6-5,canary),!legacy`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    /// Reads a `LabelSelector` object (`matchLabels`, `matchExpressions`).
    /// `null` and `{}` match everything.
    pub fn from_json(selector: &Value) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if selector.is_null() {
            return Ok(Self::default());
        }
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in labels {
                let value = value.as_str().ok_or_else(|| format!("matchLabels.{key} must be a string"))?;
                requirements.push(Requirement::Equals(key.clone(), value.to_string()));
            }
        }
        for expression in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
            let key =
                expression.get("key").and_then(Value::as_str).ok_or("matchExpressions[].key is required")?.to_string();
            let values: Vec<String> = expression
                .get("values")
                .and_then(Value::as_array)
                .map(|values| values.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default();
            let requirement = match expression.get("operator").and_then(Value::as_str) {
                Some("In") => Requirement::In(key, values),
                Some("NotIn") => Requirement::NotIn(key, values),
                Some("Exists") => Requirement::Exists(key),
                Some("DoesNotExist") => Requirement::DoesNotExist(key),
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    /// Whether `labels` (a JSON object, or null) satisfies every requirement.
    #[must_use]
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |key: &str| labels.and_then(|labels| labels.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => get(key) == Some(value.as_str()),
            Requirement::NotEquals(key, value) => get(key) != Some(value.as_str()),
            Requirement::In(key, values) => get(key).is_some_and(|found| values.iter().any(|v| v == found)),
            Requirement::NotIn(key, values) => get(key).is_none_or(|found| !values.iter().any(|v| v == found)),
            Requirement::Exists(key) => get(key).is_some(),
            Requirement::DoesNotExist(key) => get(key).is_none(),
        })
    }

    /// Whether it has no requirement.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let fail = |why: &str| format!("unable to parse requirement: {why}: {part:?}");
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(check_key(key.trim()).map_err(|why| fail(&why))?));
    }
    for (operator, negated) in [(" notin ", true), (" in ", false)] {
        if let Some((key, rest)) = part.split_once(operator) {
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| fail("values must be in parentheses"))?;
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
            for value in &values {
                check_value(value).map_err(|why| fail(&why))?;
            }
            let key = check_key(key.trim()).map_err(|why| fail(&why))?;
            return Ok(if negated { Requirement::NotIn(key, values) } else { Requirement::In(key, values) });
        }
    }
    for (operator, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = part.split_once(operator) {
            let key = check_key(key.trim()).map_err(|why| fail(&why))?;
            let value = value.trim();
            check_value(value).map_err(|why| fail(&why))?;
            return Ok(if negated {
                Requirement::NotEquals(key, value.into())
            } else {
                Requirement::Equals(key, value.into())
            });
        }
    }
    Ok(Requirement::Exists(check_key(part).map_err(|why| fail(&why))?))
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at
/// most 63 characters of alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
pub fn check_key(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && crate::kube::object::check_dns_subdomain(prefix).is_err()
    {
        return Err(format!("prefix part of {key:?} must be a DNS subdomain"));
    }
    check_name_part(name).map_err(|why| format!("name part of {key:?} {why}"))?;
    Ok(key.to_string())
}

/// A label value: empty, or like a key's name part.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_part(value).map_err(|why| format!("value {value:?} {why}"))
}

fn check_name_part(text: &str) -> Result<(), String> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let valid = !text.is_empty()
        && text.len() <= 63
        && edge_ok(text.chars().next())
        && edge_ok(text.chars().last())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err("must be 63 characters or less, alphanumeric, '-', '_' or '.', starting and ending with an alphanumeric character".into())
    }
}

/// A field selector: `metadata.name=x,status.phase!=Running`.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

const FIELDS: [&str; 4] = ["metadata.name", "metadata.namespace", "status.phase", "spec.nodeName"];

impl FieldSelector {
    /// Parses the query-string form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|part| !part.is_empty()) {
            let (field, negated, value) = if let Some((field, value)) = part.split_once("!=") {
                (field, true, value)
            } else if let Some((field, value)) = part.split_once("==") {
                (field, false, value)
            } else if let Some((field, value)) = part.split_once('=') {
                (field, false, value)
            } else {
                return Err(format!("invalid selector: {part:?}; can't understand {part:?}"));
            };
            let field = field.trim();
            if !FIELDS.contains(&field) {
                return Err(format!(
                    "{field:?} is not a known field selector: only {}",
                    FIELDS.map(|f| format!("{f:?}")).join(", ")
                ));
            }
            requirements.push((field.to_string(), negated, value.trim().to_string()));
        }
        Ok(Self { requirements })
    }

    /// Whether `object` satisfies every requirement.
    #[must_use]
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(field, negated, value)| {
            let mut found = object;
            for part in field.split('.') {
                found = found.get(part).unwrap_or(&Value::Null);
            }
            let equal = found.as_str().unwrap_or_default() == value;
            equal != *negated
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    #[test]
    fn query_selectors_parse_and_match() {
        let selector =
            LabelSelector::parse("app=istiod,istio.io/rev in (1-6-5, canary),!legacy,tier!=db").expect("parses");
        assert!(selector.matches(Some(&labels(json!({"app": "istiod", "istio.io/rev": "canary"})))));
        assert!(!selector.matches(Some(&labels(json!({"app": "istiod", "istio.io/rev": "1-6-8"})))));
        assert!(!selector.matches(Some(&labels(json!({"app": "istiod", "istio.io/rev": "canary", "legacy": "y"})))));
        assert!(LabelSelector::parse("").expect("empty").matches(None));
        assert!(LabelSelector::parse("a b c").is_err());
        assert!(LabelSelector::parse("app=in valid").is_err());
        assert!(LabelSelector::parse("x in 1,2").is_err());
    }

    #[test]
    fn json_selectors_follow_the_webhook_semantics() {
        let selector = LabelSelector::from_json(&json!({
            "matchExpressions": [
                {"key": "istio.io/rev", "operator": "In", "values": ["1-6-8"]},
                {"key": "istio-injection", "operator": "DoesNotExist"}
            ]
        }))
        .expect("parses");
        assert!(selector.matches(Some(&labels(json!({"istio.io/rev": "1-6-8"})))));
        assert!(!selector.matches(Some(&labels(json!({"istio.io/rev": "1-6-8", "istio-injection": "enabled"})))));
        assert!(
            LabelSelector::from_json(&json!({})).expect("empty").matches(None),
            "an empty selector matches everything"
        );
        let not_in = LabelSelector::from_json(&json!({"matchExpressions": [{"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]})).expect("parses");
        assert!(not_in.matches(None), "NotIn holds for a missing label");
    }

    #[test]
    fn field_selectors_know_their_fields() {
        let selector = FieldSelector::parse("metadata.name=web,status.phase!=Failed").expect("parses");
        assert!(selector.matches(&json!({"metadata": {"name": "web"}, "status": {"phase": "Running"}})));
        assert!(!selector.matches(&json!({"metadata": {"name": "api"}})));
        assert!(FieldSelector::parse("spec.bogus=1").expect_err("unknown").contains("not a known field selector"));
    }
}
