//! Object validation: what a real API server answers with 422 (or 400).

use serde_json::Value;

use super::object::{self, check_dns_label, check_dns_subdomain};
use super::resources::ResourceType;
use super::selector::{LabelSelector, check_key, check_value};
use super::status::ApiError;

/// Checks a new or changed object of type `resource`; `old` is the stored
/// one for updates.
pub fn check(resource: &ResourceType, object: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = object::name(object);
    let mut causes: Vec<(String, String)> = Vec::new();
    let name_check = if matches!(resource.plural, "namespaces" | "services") {
        check_dns_label(name)
    } else {
        check_dns_subdomain(name)
    };
    if let Err(why) = name_check {
        causes.push(("metadata.name".into(), format!("Invalid value: {name:?}: {why}")));
    }
    for (key, value) in object::labels(object).into_iter().flatten() {
        if let Err(why) = check_key(key) {
            causes.push((format!("metadata.labels: Invalid value: {key:?}"), why));
        }
        match value.as_str() {
            Some(text) => {
                if let Err(why) = check_value(text) {
                    causes.push((format!("metadata.labels: Invalid value: {text:?}"), why));
                }
            }
            None => causes.push((format!("metadata.labels.{key}"), "Invalid value: must be a string".into())),
        }
    }
    for key in
        object.pointer("/metadata/annotations").and_then(Value::as_object).into_iter().flatten().map(|(key, _)| key)
    {
        if let Err(why) = check_key(key) {
            causes.push((format!("metadata.annotations: Invalid value: {key:?}"), why));
        }
    }
    match resource.plural {
        "deployments" | "statefulsets" | "daemonsets" => workload(object, old, &mut causes),
        "pods" => containers(object.pointer("/spec/containers"), "spec.containers", &mut causes),
        "services" => {
            for (at, port) in object.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten().enumerate()
            {
                let number = port.get("port").and_then(Value::as_u64).unwrap_or(0);
                if !(1..=65_535).contains(&number) {
                    causes.push((
                        format!("spec.ports[{at}].port"),
                        format!("Invalid value: {number}: must be between 1 and 65535, inclusive"),
                    ));
                }
            }
        }
        _ => {}
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(resource, name, &causes)) }
}

fn workload(object: &Value, old: Option<&Value>, causes: &mut Vec<(String, String)>) {
    let selector = object.pointer("/spec/selector");
    match selector {
        None | Some(Value::Null) => causes.push(("spec.selector".into(), "Required value".into())),
        Some(selector) => match LabelSelector::from_json(selector) {
            Err(why) => causes.push(("spec.selector".into(), format!("Invalid value: {why}"))),
            Ok(parsed) if parsed.is_empty() => {
                causes.push(("spec.selector".into(), "Invalid value: empty selector is invalid for deployment".into()))
            }
            Ok(parsed) => {
                let labels = object.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
                if !parsed.matches(labels) {
                    causes.push((
                        "spec.template.metadata.labels".into(),
                        "Invalid value: `selector` does not match template `labels`".into(),
                    ));
                }
            }
        },
    }
    if let (Some(old), Some(selector)) = (old, selector)
        && old.pointer("/spec/selector") != Some(selector)
    {
        causes.push(("spec.selector".into(), "Invalid value: field is immutable".into()));
    }
    containers(object.pointer("/spec/template/spec/containers"), "spec.template.spec.containers", causes);
}

fn containers(list: Option<&Value>, field: &str, causes: &mut Vec<(String, String)>) {
    let Some(items) = list.and_then(Value::as_array).filter(|items| !items.is_empty()) else {
        causes.push((field.into(), "Required value".into()));
        return;
    };
    for (at, container) in items.iter().enumerate() {
        if container.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            causes.push((format!("{field}[{at}].name"), "Required value".into()));
        }
        if container.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
            causes.push((format!("{field}[{at}].image"), "Required value".into()));
        }
    }
}
