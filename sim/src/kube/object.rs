//! Reading and writing the parts of a JSON object every kind shares.

use serde_json::{Map, Value, json};

/// `metadata.name`.
#[must_use]
pub fn name(object: &Value) -> &str {
    metadata_field(object, "name").and_then(Value::as_str).unwrap_or_default()
}

/// `metadata.<field>`, without `Value::pointer`'s allocations (hot path).
fn metadata_field<'a>(object: &'a Value, field: &str) -> Option<&'a Value> {
    object.get("metadata")?.get(field)
}

/// `metadata.namespace`.
#[must_use]
pub fn namespace(object: &Value) -> &str {
    metadata_field(object, "namespace").and_then(Value::as_str).unwrap_or_default()
}

/// `metadata.labels`.
#[must_use]
pub fn labels(object: &Value) -> Option<&Map<String, Value>> {
    metadata_field(object, "labels").and_then(Value::as_object)
}

/// `metadata.labels[key]`.
#[must_use]
pub fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    labels(object).and_then(|labels| labels.get(key)).and_then(Value::as_str)
}

/// `metadata.annotations[key]`.
#[must_use]
pub fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    metadata_field(object, "annotations").and_then(|a| a.get(key)).and_then(Value::as_str)
}

/// `metadata`, created if missing.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("metadata was just made an object")
}

/// A map under `metadata` (`labels`, `annotations`), created if missing.
pub fn metadata_map_mut<'a>(object: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    let metadata = metadata_mut(object);
    if !metadata.get(field).is_some_and(Value::is_object) {
        metadata.insert(field.into(), json!({}));
    }
    metadata.get_mut(field).and_then(Value::as_object_mut).expect("just made an object")
}

/// `metadata.resourceVersion` as a number.
#[must_use]
pub fn resource_version(object: &Value) -> Option<u64> {
    metadata_field(object, "resourceVersion").and_then(Value::as_str).and_then(|rv| rv.parse().ok())
}

/// A DNS-1123 label: at most 63 lowercase alphanumerics or `-`, starting and ending alphanumeric.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid = !name.is_empty()
        && name.len() <= 63
        && edge(name.chars().next())
        && edge(name.chars().last())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into())
    }
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 || name.split('.').any(|part| check_dns_label(part).is_err()) {
        return Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into());
    }
    Ok(())
}

/// Kubernetes' age column: `45s`, `12m`, `3h5m`, `2d4h`.
#[must_use]
pub fn age(seconds: u64) -> String {
    match seconds {
        0..120 => format!("{seconds}s"),
        120..3_600 => format!("{}m", seconds / 60),
        3_600..28_800 => format!("{}h{}m", seconds / 3_600, (seconds % 3_600) / 60),
        28_800..172_800 => format!("{}h", seconds / 3_600),
        _ => format!("{}d{}h", seconds / 86_400, (seconds % 86_400) / 3_600),
    }
}

/// RFC 3339 UTC of Unix seconds, as `creationTimestamp` is written.
#[must_use]
pub fn rfc3339(unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let rem = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3_600, (rem % 3_600) / 60, rem % 60)
}

/// Parses what [`rfc3339`] writes back to Unix seconds.
#[must_use]
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut date = date.split('-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let mut time = time.split(':').map(|part| part.split('.').next().and_then(|p| p.parse::<u64>().ok()));
    let (hour, minute, second) = (time.next()??, time.next()??, time.next()??);
    let days = days_from_civil(year, month, day);
    Some(u64::try_from(days).ok()? * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Howard Hinnant's civil-from-days.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_1123() {
        assert!(check_dns_label("istiod-1-6-8").is_ok());
        assert!(check_dns_label("1.6.8").is_err());
        assert!(check_dns_label("Upper").is_err());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
        assert!(check_dns_subdomain("istio-sidecar-injector.istio-system").is_ok());
        assert!(check_dns_subdomain("-bad").is_err());
    }

    #[test]
    fn times_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_824_000), "2026-11-28T00:00:00Z");
        assert_eq!(parse_rfc3339("2026-11-28T21:36:34Z"), Some(1_795_824_000 + 21 * 3_600 + 36 * 60 + 34));
        assert_eq!(age(45), "45s");
        assert_eq!(age(7_500), "2h5m");
    }
}
