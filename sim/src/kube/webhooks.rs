//! Admission webhooks as an API server calls them, and what answers them.
//!
//! The API server's part is generic: which configured webhooks match a
//! request (rules, namespace and object selectors), which ready pod behind
//! each webhook's Service takes the call, and what a webhook that cannot
//! be reached means (`failurePolicy`). Mutating webhooks run first, in name
//! order, each once; then the validating ones. What the pod answers is the
//! business of the program it runs: [`Programs`], which the simulator fills
//! with Istio's and a bare API server leaves empty ([`NoPrograms`]).

use serde_json::Value;

use super::object;
use super::resources::ResourceType;
use super::selector::LabelSelector;
use super::state::{ReadinessGates, State, endpoints};
use super::status::ApiError;

/// One call of an admission webhook.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The ready pod behind the webhook's Service that takes the call.
    pub endpoint: &'a Value,
    /// The webhook's path (`/inject`, `/validate`).
    pub path: &'a str,
    /// `CREATE` or `UPDATE`.
    pub operation: &'a str,
    /// What is being written.
    pub resource: &'a ResourceType,
}

/// The programs a cluster runs behind its Services, as far as the API
/// server and the kubelet meet them.
pub trait Programs: ReadinessGates {
    /// Answers an admission webhook call: the object as admitted (changed
    /// by a mutating webhook, or not), or why it is denied.
    fn admit(&self, state: &State, call: &Call<'_>, object: Value) -> Result<Value, String>;

    /// Answers a request the API server's service proxy forwards to
    /// `endpoint` (`/api/v1/namespaces/NS/services/NAME:PORT/proxy/PATH`):
    /// its status code and JSON body, or `None` when nothing listens there.
    fn serve(&self, state: &State, endpoint: &Value, port: u16, path: &str) -> Option<(u16, Value)>;
}

/// Runs the admission webhooks configured for `operation` on `object`:
/// the mutating ones (each matching webhook once, in configuration name
/// order), then the validating ones.
pub fn admit(
    state: &State,
    programs: &dyn Programs,
    resource: &ResourceType,
    object: Value,
    operation: &str,
) -> Result<Value, ApiError> {
    let namespace =
        if resource.namespaced { state.get("", "namespaces", "", object::namespace(&object)) } else { None };
    let mut admitted = object;
    for webhook in matching(state, "mutatingwebhookconfigurations", resource, operation) {
        admitted = call(state, programs, webhook, resource, namespace, admitted, operation)?;
    }
    for webhook in matching(state, "validatingwebhookconfigurations", resource, operation) {
        // A validating webhook's answer is a verdict, not a change.
        call(state, programs, webhook, resource, namespace, admitted.clone(), operation)?;
    }
    Ok(admitted)
}

/// The webhooks of every configuration of a kind whose rules cover the request, in name order.
fn matching<'a>(state: &'a State, plural: &str, resource: &ResourceType, operation: &str) -> Vec<&'a Value> {
    let mut configurations: Vec<&Value> = state.all("admissionregistration.k8s.io", plural).collect();
    configurations.sort_by(|a, b| object::name(a).cmp(object::name(b)));
    configurations
        .into_iter()
        .flat_map(|configuration| configuration.get("webhooks").and_then(Value::as_array).into_iter().flatten())
        .filter(|webhook| rules_match(webhook, resource, operation))
        .collect()
}

/// Calls one webhook if its selectors match: the ready pod behind its
/// Service answers; with none, `failurePolicy: Ignore` lets the request
/// through and `Fail` (the default) refuses it.
fn call(
    state: &State,
    programs: &dyn Programs,
    webhook: &Value,
    resource: &ResourceType,
    namespace: Option<&Value>,
    object: Value,
    operation: &str,
) -> Result<Value, ApiError> {
    if !selectors_match(webhook, resource, namespace, &object)? {
        return Ok(object);
    }
    let name = webhook.get("name").and_then(Value::as_str).unwrap_or_default();
    let service = webhook.pointer("/clientConfig/service");
    let text = |field: &str| service.and_then(|s| s.get(field)).and_then(Value::as_str);
    let (service_namespace, service_name) = (text("namespace").unwrap_or_default(), text("name").unwrap_or_default());
    let path = text("path").unwrap_or("/");
    let Some(endpoint) = endpoints(state, service_namespace, service_name).into_iter().next() else {
        if webhook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore") {
            return Ok(object);
        }
        return Err(ApiError::internal(format!(
            "failed calling webhook \"{name}\": failed to call webhook: Post \"https://{service_name}.{service_namespace}.svc:443{path}?timeout=10s\": no endpoints available for service \"{service_name}\""
        )));
    };
    let call = Call { endpoint, path, operation, resource };
    programs
        .admit(state, &call, object)
        .map_err(|why| ApiError::bad_request(format!("admission webhook \"{name}\" denied the request: {why}")))
}

/// Whether a webhook's `rules` cover `operation` on `resource`.
fn rules_match(webhook: &Value, resource: &ResourceType, operation: &str) -> bool {
    let listed = |rule: &Value, field: &str, wanted: &str| {
        rule.get(field)
            .and_then(Value::as_array)
            .is_some_and(|items| items.iter().any(|item| item == "*" || item == wanted))
    };
    webhook.get("rules").and_then(Value::as_array).into_iter().flatten().any(|rule| {
        listed(rule, "operations", operation)
            && listed(rule, "apiGroups", resource.group)
            && listed(rule, "apiVersions", resource.version)
            && listed(rule, "resources", resource.plural)
    })
}

/// Whether a webhook's namespace and object selectors match (the
/// namespace selector only for namespaced objects, as for a real one).
fn selectors_match(
    webhook: &Value,
    resource: &ResourceType,
    namespace: Option<&Value>,
    object: &Value,
) -> Result<bool, ApiError> {
    let parse =
        |field: &str| LabelSelector::from_json(webhook.get(field).unwrap_or(&Value::Null)).map_err(ApiError::internal);
    let namespace_matches =
        !resource.namespaced || parse("namespaceSelector")?.matches(namespace.and_then(object::labels));
    Ok(namespace_matches && parse("objectSelector")?.matches(object::labels(object)))
}
