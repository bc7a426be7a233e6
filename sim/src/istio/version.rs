//! Istio versions, as far as behaviour depends on them.

/// `1.6.8` -> 6; anything unreadable -> 0.
#[must_use]
pub fn minor_of(version: &str) -> u32 {
    version.trim_start_matches('v').split('.').nth(1).and_then(|minor| minor.parse().ok()).unwrap_or(0)
}
