//! Istio versions, as far as behaviour depends on them.

use crate::kube::resources::KubeVersion;

/// `1.6.8` -> 6; anything unreadable -> 0.
#[must_use]
pub fn minor_of(version: &str) -> u32 {
    version.trim_start_matches('v').split('.').nth(1).and_then(|minor| minor.parse().ok()).unwrap_or(0)
}

/// The Kubernetes releases (1.x minors, first and last) an Istio release
/// supports, from istio.io's support status table (`data/compatibility/
/// supportStatus.yml`; 1.6-1.8 from the 1.7 "Supported Releases" page;
/// 1.9-1.22 as that table listed them when each was current).
#[must_use]
pub fn kubernetes_supported(minor: u32) -> (u32, u32) {
    match minor {
        0..=6 => (15, 18),
        7 => (16, 18),
        8 => (16, 19),
        9 => (17, 20),
        10 => (18, 21),
        11 | 12 => (19, 22),
        13 => (20, 23),
        14 => (21, 24),
        15 | 16 => (22, 25),
        17 => (23, 26),
        18 => (24, 27),
        19 => (25, 28),
        20 => (25, 29),
        21 => (26, 29),
        22 => (27, 30),
        23 => (27, 30),
        24 => (28, 31),
        25 => (29, 32),
        26 | 27 => (29, 33),
        28 => (30, 34),
        29 => (31, 35),
        _ => (32, 36),
    }
}

/// The Kubernetes a cluster running Istio `version` runs, when nobody
/// says: the newest that release supports, at most the simulator's newest.
#[must_use]
pub fn kubernetes_for(version: &str) -> KubeVersion {
    let (_, newest) = kubernetes_supported(minor_of(version));
    KubeVersion { minor: newest.min(KubeVersion::default().minor) }
}
