//! The per-workflow summary index: what `list` and `status` read instead of
//! scanning histories.
//!
//! Stored value: magic `CFSM`, one codec tag byte, postcard of [`SummaryV1`],
//! then a CRC32C of everything before it. The index is derived data: it is
//! written in the same transaction as each append and can be rebuilt from
//! the log ([`crate::Store::rebuild_summaries`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::WorkflowId;

/// The longest workflow name, in bytes (a Kubernetes object name's limit).
pub const NAME_BYTES_MAX: usize = 253;
/// The most labels one workflow may carry.
pub const LABELS_COUNT_MAX: usize = 64;
/// The longest label key or value, in bytes.
pub(crate) const LABEL_BYTES_MAX: usize = 253;

const MAGIC: [u8; 4] = *b"CFSM";
const CODEC_POSTCARD_SUMMARY_V1: u8 = 1;

/// Where a workflow stands, as the summary index records it.
///
/// The numbers are stored; never reuse one.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Moving forward (or waiting on a timer or an approval).
    Running = 1,
    /// Stopped for an operator's decision.
    Paused = 2,
    /// Every step succeeded.
    Succeeded = 3,
    /// Stopped without finishing; needs an operator's decision.
    Failed = 4,
    /// Running its compensations.
    RollingBack = 5,
    /// Every compensation ran: back where it started.
    RolledBack = 6,
    /// Stopped by an operator without compensation.
    Cancelled = 7,
}

impl Status {
    /// Every status, in a stable order.
    pub const ALL: [Status; 7] = [
        Self::Running,
        Self::Paused,
        Self::Succeeded,
        Self::Failed,
        Self::RollingBack,
        Self::RolledBack,
        Self::Cancelled,
    ];

    /// The lower-case name used on the command line and in JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::RollingBack => "rolling-back",
            Self::RolledBack => "rolled-back",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses [`Status::as_str`]'s output.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// Whether a workflow in this status still has work to do by itself
    /// (`resume` picks these up).
    #[must_use]
    pub fn is_unfinished(self) -> bool {
        matches!(self, Self::Running | Self::RollingBack)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields of a summary that the caller decides on each append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryFields {
    /// A human name for the workflow.
    pub name: String,
    /// Its status after this append.
    pub status: Status,
    /// Labels to filter by (`cluster=prod-eu`, `kind=istio-upgrade`).
    pub labels: BTreeMap<String, String>,
}

/// One workflow's entry in the summary index. (Its serde form is for
/// passing it between processes; the stored form is `SummaryV1`.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The workflow.
    pub id: WorkflowId,
    /// Its name.
    pub name: String,
    /// Its status as of its last record.
    pub status: Status,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The timestamp of its first record, Unix milliseconds.
    pub created_ms: u64,
    /// The timestamp of its last record, Unix milliseconds.
    pub updated_ms: u64,
    /// The sequence number of its last record.
    pub last_seq: u64,
}

/// The stored shape. Changing it means a `SummaryV2` and a new codec tag.
#[derive(Serialize, Deserialize)]
struct SummaryV1 {
    name: String,
    status: u8,
    labels: BTreeMap<String, String>,
    created_ms: u64,
    updated_ms: u64,
    last_seq: u64,
}

impl SummaryFields {
    /// Checks the bounds the index imposes, naming the field that breaks one.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.name.len() > NAME_BYTES_MAX {
            return Err(format!("name is {} bytes, more than {NAME_BYTES_MAX}", self.name.len()));
        }
        if self.labels.len() > LABELS_COUNT_MAX {
            return Err(format!("{} labels, more than {LABELS_COUNT_MAX}", self.labels.len()));
        }
        for (key, value) in &self.labels {
            if key.is_empty() || key.len() > LABEL_BYTES_MAX || value.len() > LABEL_BYTES_MAX {
                return Err(format!("label {key:?}={value:?} is empty or longer than {LABEL_BYTES_MAX} bytes"));
            }
        }
        Ok(())
    }
}

pub(crate) fn encode(summary: &Summary) -> Vec<u8> {
    let stored = SummaryV1 {
        name: summary.name.clone(),
        status: summary.status as u8,
        labels: summary.labels.clone(),
        created_ms: summary.created_ms,
        updated_ms: summary.updated_ms,
        last_seq: summary.last_seq,
    };
    let mut out = MAGIC.to_vec();
    out.push(CODEC_POSTCARD_SUMMARY_V1);
    let out = postcard::to_extend(&stored, out).expect("serializing to a Vec cannot fail");
    let crc = crc32c::crc32c(&out);
    let mut out = out;
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

pub(crate) fn decode(id: WorkflowId, bytes: &[u8]) -> Result<Summary, String> {
    if bytes.len() < MAGIC.len() + 1 + 4 || bytes[..4] != MAGIC {
        return Err("unreadable summary (bad magic or too short)".into());
    }
    let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
    let stored_crc = u32::from_be_bytes(crc_bytes.try_into().expect("4 bytes"));
    if crc32c::crc32c(body) != stored_crc {
        return Err("summary checksum mismatch".into());
    }
    if body[4] != CODEC_POSTCARD_SUMMARY_V1 {
        return Err(format!("unknown summary codec tag {}", body[4]));
    }
    let stored: SummaryV1 = postcard::from_bytes(&body[5..]).map_err(|err| format!("summary decode: {err}"))?;
    let status = Status::ALL
        .into_iter()
        .find(|status| *status as u8 == stored.status)
        .ok_or_else(|| format!("unknown status number {}", stored.status))?;
    Ok(Summary {
        id,
        name: stored.name,
        status,
        labels: stored.labels,
        created_ms: stored.created_ms,
        updated_ms: stored.updated_ms,
        last_seq: stored.last_seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_round_trips_and_detects_damage() {
        let summary = Summary {
            id: WorkflowId::from_u128(5),
            name: "istio-1-6-8".into(),
            status: Status::RollingBack,
            labels: BTreeMap::from([("cluster".into(), "prod-eu".into())]),
            created_ms: 10,
            updated_ms: 20,
            last_seq: 7,
        };
        let bytes = encode(&summary);
        assert_eq!(decode(summary.id, &bytes), Ok(summary.clone()));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert!(decode(summary.id, &damaged).is_err(), "flip at {at} unnoticed");
        }
    }

    #[test]
    fn status_names_round_trip_and_numbers_are_stable() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        // Stored numbers: changing one would misread every old summary.
        assert_eq!(Status::Running as u8, 1);
        assert_eq!(Status::Cancelled as u8, 7);
        assert_eq!(Status::parse("bogus"), None);
    }

    #[test]
    fn bounds_name_the_offending_field() {
        let mut fields =
            SummaryFields { name: "x".repeat(NAME_BYTES_MAX + 1), status: Status::Running, labels: BTreeMap::new() };
        assert!(fields.check().expect_err("long name").contains("name"));
        fields.name = "ok".into();
        fields.labels.insert(String::new(), "v".into());
        assert!(fields.check().expect_err("empty key").contains("label"));
    }
}
