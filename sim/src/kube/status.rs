//! `Status` errors, shaped and worded as a real API server's.

use serde_json::{Value, json};

use super::resources::ResourceType;

/// An API error: the HTTP code and the `Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (also `code` in the body).
    pub code: u16,
    /// `reason`: NotFound, AlreadyExists, Conflict, Invalid, BadRequest, ...
    pub reason: &'static str,
    /// `message`, which kubectl prints verbatim.
    pub message: String,
    /// `details`, when there are any.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    /// 404 for an object.
    #[must_use]
    pub fn not_found(resource: &ResourceType, name: &str) -> Self {
        let mut error = Self::new(404, "NotFound", format!("{} \"{name}\" not found", resource.qualified()));
        error.details = Some(json!({"name": name, "group": resource.group, "kind": resource.plural}));
        error
    }

    /// 404 for a path the server does not serve.
    #[must_use]
    pub fn no_such_resource() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    /// 409 on create of an existing object.
    #[must_use]
    pub fn already_exists(resource: &ResourceType, name: &str) -> Self {
        let mut error = Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", resource.qualified()));
        error.details = Some(json!({"name": name, "group": resource.group, "kind": resource.plural}));
        error
    }

    /// 409 on a write with a stale resourceVersion.
    #[must_use]
    pub fn conflict(resource: &ResourceType, name: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            resource.qualified()
        );
        let mut error = Self::new(409, "Conflict", message);
        error.details = Some(json!({"name": name, "group": resource.group, "kind": resource.plural}));
        error
    }

    /// 409 for server-side apply conflicts with other field managers.
    #[must_use]
    pub fn apply_conflict(resource: &ResourceType, name: &str, conflicts: &[(String, String)]) -> Self {
        let listed: Vec<String> =
            conflicts.iter().map(|(manager, field)| format!("conflict with \"{manager}\": {field}")).collect();
        let message = format!(
            "Apply failed with {} conflict{}: {}",
            conflicts.len(),
            if conflicts.len() == 1 { "" } else { "s" },
            listed.join("; ")
        );
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{manager}\""), "field": field}))
            .collect();
        let mut error = Self::new(409, "Conflict", message);
        error.details = Some(json!({"name": name, "group": resource.group, "kind": resource.plural, "causes": causes}));
        error
    }

    /// 422 with the invalid fields.
    #[must_use]
    pub fn invalid(resource: &ResourceType, name: &str, causes: &[(String, String)]) -> Self {
        let group = if resource.group.is_empty() { String::new() } else { format!(".{}", resource.group) };
        let listed: Vec<String> = causes.iter().map(|(field, why)| format!("{field}: {why}")).collect();
        let message = format!("{}{group} \"{name}\" is invalid: {}", resource.kind, listed.join(", "));
        let causes: Vec<Value> = causes
            .iter()
            .map(|(field, why)| json!({"reason": "FieldValueInvalid", "message": why, "field": field}))
            .collect();
        let mut error = Self::new(422, "Invalid", message);
        error.details = Some(json!({"name": name, "group": resource.group, "kind": resource.kind, "causes": causes}));
        error
    }

    /// 400.
    #[must_use]
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405.
    #[must_use]
    pub fn method_not_allowed() -> Self {
        Self::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    }

    /// 415 for a patch type the server does not take.
    #[must_use]
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"
            ),
        )
    }

    /// 415 for a request body in a format the simulator does not read.
    #[must_use]
    pub fn unsupported_media_type_for_body(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type:?}) - accepted media types include: application/json, application/yaml (the simulator does not read protobuf; use kubectl apply -f or create -f)"
            ),
        )
    }

    /// 500.
    #[must_use]
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }

    /// 403.
    #[must_use]
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message.into())
    }

    /// 503, as the service proxy answers when nothing behind a Service does.
    #[must_use]
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message.into())
    }

    /// 429.
    #[must_use]
    pub fn too_many_requests() -> Self {
        let mut error = Self::new(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        );
        error.details = Some(json!({"retryAfterSeconds": 1}));
        error
    }

    /// 410 for a watch from a resourceVersion older than the server keeps.
    #[must_use]
    pub fn gone(resource_version: u64) -> Self {
        Self::new(410, "Expired", format!("too old resource version: {resource_version}"))
    }

    /// The `Status` object.
    #[must_use]
    pub fn body(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}
