//! Admission as an API server runs it: its own plugins, then the webhooks
//! configured ([`super::webhooks`]).
//!
//! The one plugin modelled is ServiceAccount: a pod runs as the account
//! its spec names (`default` when it names none), and is refused while
//! that account does not exist. A controller making pods for a workload
//! whose account is missing reports `FailedCreate`, so a control plane
//! applied without its ServiceAccount never starts here either.

use serde_json::{Value, json};

use super::object;
use super::resources::ResourceType;
use super::state::State;
use super::status::ApiError;
use super::webhooks::{self, Programs};

/// Runs the API server's admission on a write of `object`.
pub fn admit(
    state: &State,
    programs: &dyn Programs,
    resource: &ResourceType,
    object: Value,
    operation: &str,
) -> Result<Value, ApiError> {
    let object = if resource.storage_key() == ("", "pods") && operation == "CREATE" {
        service_account(state, object)?
    } else {
        object
    };
    webhooks::admit(state, programs, resource, object, operation)
}

/// The ServiceAccount plugin: names the account, and refuses a pod whose account is missing.
fn service_account(state: &State, mut pod: Value) -> Result<Value, ApiError> {
    let named = |field: &str| {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
    };
    let account = named("serviceAccountName").or_else(|| named("serviceAccount")).unwrap_or_else(|| "default".into());
    let namespace = object::namespace(&pod).to_string();
    if state.get("", "serviceaccounts", &namespace, &account).is_none() {
        return Err(ApiError::forbidden(format!(
            "pods \"{}\" is forbidden: error looking up service account {namespace}/{account}: serviceaccount \"{account}\" not found",
            object::name(&pod)
        )));
    }
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("serviceAccountName".into(), json!(account));
        spec.insert("serviceAccount".into(), json!(account));
    }
    Ok(pod)
}
