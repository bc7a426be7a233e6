//! Activity inputs and outputs: JSON text, stored as a string.
//!
//! postcard is not self-describing, so the engine cannot store an arbitrary
//! `serde_json::Value` with it; activities' data is kept as JSON text
//! instead, which also keeps it readable in `canaryflow history`. Before any
//! payload is recorded it is checked for secrets ([`find_secret`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest payload the engine records, in bytes of JSON.
pub const PAYLOAD_BYTES_MAX: usize = 2 * 1024 * 1024;

/// A JSON document carried by an event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload(String);

/// Why a value could not become a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// serde_json refused it.
    #[error("not JSON: {0}")]
    Json(String),
    /// It is bigger than [`PAYLOAD_BYTES_MAX`].
    #[error("payload of {bytes} bytes is larger than the limit of {PAYLOAD_BYTES_MAX}")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
}

impl Payload {
    /// The JSON `null`.
    #[must_use]
    pub fn null() -> Self {
        Self("null".into())
    }

    /// Serializes `value` as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, PayloadError> {
        let text = serde_json::to_string(value).map_err(|err| PayloadError::Json(err.to_string()))?;
        Self::from_json_text(text)
    }

    /// Takes JSON text, checking that it parses and fits.
    pub fn from_json_text(text: String) -> Result<Self, PayloadError> {
        if text.len() > PAYLOAD_BYTES_MAX {
            return Err(PayloadError::TooLarge { bytes: text.len() });
        }
        serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|err| PayloadError::Json(err.to_string()))?;
        Ok(Self(text))
    }

    /// Deserializes the payload into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        serde_json::from_str(&self.0).map_err(|err| PayloadError::Json(err.to_string()))
    }

    /// The payload as a JSON value.
    #[must_use]
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// The JSON text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is `null` (or empty).
    #[must_use]
    pub fn is_null(&self) -> bool {
        self.0.is_empty() || self.0 == "null"
    }
}

// In a human-readable format (JSON output) a payload is the JSON document
// itself; in postcard it is a string.
impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.to_value().serialize(serializer)
        } else {
            serializer.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let value = serde_json::Value::deserialize(deserializer)?;
            Ok(Self(value.to_string()))
        } else {
            String::deserialize(deserializer).map(Self)
        }
    }
}

/// Object keys whose value is a credential, compared after lower-casing and
/// dropping `-`, `_` and `.`.
const SECRET_KEYS: [&str; 16] = [
    "password",
    "passwd",
    "secret",
    "clientsecret",
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "bearertoken",
    "apikey",
    "privatekey",
    "clientkeydata",
    "tlskey",
    "cakey",
    "keypem",
    "authorization",
];

/// Looks for a credential in `payload`; returns the JSON path of the first
/// one found. It never returns the value itself, so the answer can be
/// logged.
///
/// What counts: a text or number under a credential-named key (see
/// `SECRET_KEYS`), a PEM private key anywhere, a JSON Web Token anywhere,
/// and the `data` or `stringData` of a Kubernetes `Secret`. An object or a
/// list under a credential-named key is not itself a credential: a pod
/// volume `secret: {secretName: cacerts, optional: true}` only names a
/// Secret (Istio's own istiod Deployment has three). What it holds is
/// looked at like everything else.
#[must_use]
pub fn find_secret(payload: &Payload) -> Option<String> {
    let value = payload.to_value();
    let mut pending: Vec<(String, &serde_json::Value)> = vec![("$".into(), &value)];
    while let Some((path, value)) = pending.pop() {
        match value {
            serde_json::Value::String(text) if looks_like_secret_text(text) => return Some(path),
            serde_json::Value::Array(items) => {
                pending.extend(items.iter().enumerate().map(|(index, item)| (format!("{path}[{index}]"), item)));
            }
            serde_json::Value::Object(map) => {
                let is_secret_object = map.get("kind").and_then(serde_json::Value::as_str) == Some("Secret");
                for (key, item) in map {
                    let child = format!("{path}.{key}");
                    let normalized: String =
                        key.chars().filter(|c| !matches!(c, '-' | '_' | '.')).collect::<String>().to_lowercase();
                    let holds_text = match item {
                        serde_json::Value::String(text) => !text.is_empty(),
                        serde_json::Value::Number(_) => true,
                        _ => false,
                    };
                    if holds_text && SECRET_KEYS.contains(&normalized.as_str()) {
                        return Some(child);
                    }
                    let holds_value = !matches!(item, serde_json::Value::Null | serde_json::Value::Bool(_))
                        && item.as_str().is_none_or(|text| !text.is_empty());
                    if holds_value && is_secret_object && matches!(key.as_str(), "data" | "stringData") {
                        return Some(child);
                    }
                    pending.push((child, item));
                }
            }
            _ => {}
        }
    }
    None
}

fn looks_like_secret_text(text: &str) -> bool {
    if text.contains("-----BEGIN") && text.contains("PRIVATE KEY-----") {
        return true;
    }
    // A JWT: three base64url segments, the first two JSON objects ("eyJ").
    let mut parts = text.split('.');
    let jwt = matches!((parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(header), Some(claims), Some(signature), None)
            if header.starts_with("eyJ") && claims.starts_with("eyJ") && signature.len() >= 16);
    jwt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(value: serde_json::Value) -> Payload {
        Payload::json(&value).expect("payload")
    }

    #[test]
    fn finds_credentials_by_key_shape_and_kind_without_revealing_them() {
        let cases = [
            (serde_json::json!({"user": {"password": "hunter2"}}), "$.user.password"),
            (serde_json::json!({"users": [{"name": "x", "client-key-data": "LS0t"}]}), "$.users[0].client-key-data"),
            (serde_json::json!({"note": "-----BEGIN RSA PRIVATE KEY-----\nMIIE"}), "$.note"),
            (serde_json::json!({"t": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl"}), "$.t"),
            (serde_json::json!({"kind": "Secret", "data": {"ca.crt": "x"}}), "$.data"),
            (serde_json::json!({"headers": {"Authorization": "Bearer abc"}}), "$.headers.Authorization"),
            (serde_json::json!({"secret": {"token": "abc"}}), "$.secret.token"),
            (serde_json::json!({"apiKey": 12345}), "$.apiKey"),
        ];
        for (value, path) in cases {
            assert_eq!(find_secret(&payload(value.clone())).as_deref(), Some(path), "{value}");
        }
    }

    #[test]
    fn ordinary_istio_data_is_not_a_secret() {
        let harmless = serde_json::json!({
            "kind": "ConfigMap", "data": {"mesh": "defaultConfig: {}"},
            "secretName": "istio-ca-secret", "tokenTTL": null, "password": "",
            "annotations": {"sidecar.istio.io/status": "{\"revision\":\"1-6-8\"}"},
            "version": "1.6.8", "revision": "1-6-8"
        });
        assert_eq!(find_secret(&payload(harmless)), None);
    }

    /// Regression (issue 15, point 0): Istio's generated istiod Deployment
    /// mounts three optional Secrets by name; naming a Secret is not holding one.
    #[test]
    fn r15_a_volume_that_names_a_secret_is_not_a_credential() {
        let istiod = serde_json::json!({"spec": {"template": {"spec": {"volumes": [
            {"name": "cacerts", "secret": {"optional": true, "secretName": "cacerts"}},
            {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken":
                {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}}
        ]}}}});
        assert_eq!(find_secret(&payload(istiod)), None);
        let hidden = serde_json::json!({"volumes": [{"secret": {"secretName": "x", "password": "hunter2"}}]});
        assert_eq!(find_secret(&payload(hidden)).as_deref(), Some("$.volumes[0].secret.password"));
    }

    #[test]
    fn payloads_are_json_and_bounded() {
        assert!(Payload::from_json_text("{not json".into()).is_err());
        let huge = format!("\"{}\"", "x".repeat(PAYLOAD_BYTES_MAX));
        assert!(matches!(Payload::from_json_text(huge), Err(PayloadError::TooLarge { .. })));
        let value: Vec<u32> = Payload::json(&vec![1, 2]).expect("json").decode().expect("decode");
        assert_eq!(value, vec![1, 2]);
    }

    #[test]
    fn serializes_as_json_for_people_and_as_a_string_for_postcard() {
        let payload = payload(serde_json::json!({"a": 1}));
        assert_eq!(serde_json::to_string(&payload).expect("json"), r#"{"a":1}"#);
        let bytes = postcard::to_allocvec(&payload).expect("postcard");
        let back: Payload = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, payload);
    }
}
