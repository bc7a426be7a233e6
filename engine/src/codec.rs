//! The one place events become bytes and bytes become events.
//!
//! An event is stored as the store's envelope kind ([`EventKind`] number),
//! a schema version for that kind, and the postcard encoding of the
//! variant's body. postcard is not self-describing, so a body's encoded
//! shape never changes in place: a changed body gets a new version here,
//! and [`decode`] keeps reading every older version, upcasting it to the
//! current type. `tests/fixtures/events-v1.txt` holds the bytes of one
//! event of every kind as first written; a test decodes them and checks
//! that encoding today gives the same bytes.

use serde::de::DeserializeOwned;

use crate::core::event::{Event, EventKind};

/// The schema version written for every kind today.
pub const CURRENT_VERSION: u16 = 1;

/// An event that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The kind number is not one this binary knows.
    #[error("unknown event kind {0} (written by a newer canaryflow?)")]
    UnknownKind(u16),
    /// The version is newer than this binary knows.
    #[error(
        "event kind {kind} version {version} is newer than this canaryflow understands (up to {CURRENT_VERSION}): upgrade canaryflow"
    )]
    NewerVersion {
        /// The kind's name.
        kind: &'static str,
        /// The version found.
        version: u16,
    },
    /// The bytes do not decode as that kind and version.
    #[error("event kind {kind} version {version} does not decode: {why}")]
    Malformed {
        /// The kind's name.
        kind: &'static str,
        /// The version.
        version: u16,
        /// postcard's complaint.
        why: String,
    },
}

/// Encodes an event: its kind number, schema version and body bytes.
#[must_use]
pub fn encode(event: &Event) -> (u16, u16, Vec<u8>) {
    let body = match event {
        Event::WorkflowStarted(body) => to_bytes(body.as_ref()),
        Event::StepStarted(body) => to_bytes(body),
        Event::StepSucceeded(body) => to_bytes(body),
        Event::StepFailed(body) => to_bytes(body),
        Event::StepAborted(body) => to_bytes(body),
        Event::StepSkipped(body) => to_bytes(body),
        Event::StepsAdded(body) => to_bytes(body),
        Event::TimerStarted(body) => to_bytes(body),
        Event::TimerFired(body) => to_bytes(body),
        Event::SignalReceived(body) => to_bytes(body),
        Event::Paused(body) => to_bytes(body),
        Event::RollbackStarted(body) => to_bytes(body),
        Event::CompensationStarted(body) => to_bytes(body),
        Event::CompensationSucceeded(body) => to_bytes(body),
        Event::CompensationFailed(body) => to_bytes(body),
        Event::CompensationSkipped(body) => to_bytes(body),
        Event::GroupRolledBack(body) => to_bytes(body),
        Event::WorkflowFailed(body) => to_bytes(body),
        Event::WorkflowCancelled(body) => to_bytes(body),
        Event::Resumed | Event::WorkflowSucceeded | Event::WorkflowRolledBack => Vec::new(),
    };
    (event.kind() as u16, CURRENT_VERSION, body)
}

/// Decodes an event of kind number `kind` at schema `version`.
pub fn decode(kind: u16, version: u16, bytes: &[u8]) -> Result<Event, CodecError> {
    let kind = EventKind::from_u16(kind).ok_or(CodecError::UnknownKind(kind))?;
    if version > CURRENT_VERSION {
        return Err(CodecError::NewerVersion { kind: kind.name(), version });
    }
    // Version 1 is the only one so far; a version 2 of a kind adds an arm
    // that decodes the old body and converts it.
    let body = Body { kind, version, bytes };
    Ok(match kind {
        EventKind::WorkflowStarted => Event::WorkflowStarted(Box::new(body.decode()?)),
        EventKind::StepStarted => Event::StepStarted(body.decode()?),
        EventKind::StepSucceeded => Event::StepSucceeded(body.decode()?),
        EventKind::StepFailed => Event::StepFailed(body.decode()?),
        EventKind::StepAborted => Event::StepAborted(body.decode()?),
        EventKind::StepSkipped => Event::StepSkipped(body.decode()?),
        EventKind::StepsAdded => Event::StepsAdded(body.decode()?),
        EventKind::TimerStarted => Event::TimerStarted(body.decode()?),
        EventKind::TimerFired => Event::TimerFired(body.decode()?),
        EventKind::SignalReceived => Event::SignalReceived(body.decode()?),
        EventKind::Paused => Event::Paused(body.decode()?),
        EventKind::Resumed => body.empty(Event::Resumed)?,
        EventKind::RollbackStarted => Event::RollbackStarted(body.decode()?),
        EventKind::CompensationStarted => Event::CompensationStarted(body.decode()?),
        EventKind::CompensationSucceeded => Event::CompensationSucceeded(body.decode()?),
        EventKind::CompensationFailed => Event::CompensationFailed(body.decode()?),
        EventKind::CompensationSkipped => Event::CompensationSkipped(body.decode()?),
        EventKind::GroupRolledBack => Event::GroupRolledBack(body.decode()?),
        EventKind::WorkflowSucceeded => body.empty(Event::WorkflowSucceeded)?,
        EventKind::WorkflowFailed => Event::WorkflowFailed(body.decode()?),
        EventKind::WorkflowRolledBack => body.empty(Event::WorkflowRolledBack)?,
        EventKind::WorkflowCancelled => Event::WorkflowCancelled(body.decode()?),
    })
}

struct Body<'a> {
    kind: EventKind,
    version: u16,
    bytes: &'a [u8],
}

impl Body<'_> {
    fn decode<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        let (value, rest) = postcard::take_from_bytes(self.bytes).map_err(|err| self.malformed(err.to_string()))?;
        if !rest.is_empty() {
            return Err(self.malformed(format!("{} bytes left over", rest.len())));
        }
        Ok(value)
    }

    fn empty(&self, event: Event) -> Result<Event, CodecError> {
        if self.bytes.is_empty() {
            Ok(event)
        } else {
            Err(self.malformed(format!("{} unexpected bytes", self.bytes.len())))
        }
    }

    fn malformed(&self, why: String) -> CodecError {
        CodecError::Malformed { kind: self.kind.name(), version: self.version, why }
    }
}

fn to_bytes<T: serde::Serialize>(body: &T) -> Vec<u8> {
    postcard::to_allocvec(body)
        .expect("postcard encodes every event body (no maps with non-string keys, no unsized data)")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::core::event::*;
    use crate::core::payload::Payload;
    use crate::core::plan::*;

    fn id(text: &str) -> StepId {
        StepId::new(text).expect("step id")
    }

    fn error() -> StepError {
        StepError { message: "connection refused".into(), class: "unavailable".into(), retryable: true }
    }

    fn sample_plan() -> Plan {
        let mut install = StepSpec::activity(
            "c1/install",
            "istio.install",
            Payload::json(&serde_json::json!({"rev": "1-6-8"})).expect("json"),
        )
        .expect("step");
        install.group = Some("c1".into());
        install.compensation = Compensation::Activity {
            name: "istio.uninstall".into(),
            input: Payload::null(),
            retry: RetryPolicy::exponential(3, 100, 1_000),
            timeout_ms: 60_000,
        };
        let mut soak = StepSpec::activity("soak", "unused", Payload::null()).expect("step");
        soak.action = StepAction::Sleep { duration_ms: 600_000 };
        soak.depends_on = vec![id("c1/install")];
        let mut gate = StepSpec::activity("gate", "unused", Payload::null()).expect("step");
        gate.action = StepAction::Approval { gate: "wave-2".into() };
        gate.compensation = Compensation::Irreversible;
        Plan {
            steps: vec![install, soak, gate],
            group_limits: vec![GroupLimit { name: "wave-1".into(), groups: vec!["c1".into()], active_max: 1 }],
            on_failure: FailurePolicy::RollbackGroup,
        }
    }

    /// One event of every kind, as the fixture file holds them.
    pub(crate) fn one_of_each() -> Vec<Event> {
        vec![
            Event::WorkflowStarted(Box::new(WorkflowStarted {
                definition: "istio-canary-upgrade".into(),
                definition_version: 1,
                name: "istio-1-6-8".into(),
                labels: BTreeMap::from([("cluster".into(), "c1".into())]),
                input: Payload::json(&serde_json::json!({"to": "1-6-8"})).expect("json"),
                plan: sample_plan(),
            })),
            Event::StepStarted(StepStarted { step: id("c1/install"), attempt: 1, resumed: false }),
            Event::StepSucceeded(StepSucceeded {
                step: id("c1/install"),
                attempt: 1,
                output: Payload::json(&[1, 2]).expect("json"),
            }),
            Event::StepFailed(StepFailed { step: id("c1/install"), attempt: 2, error: error() }),
            Event::StepAborted(StepAborted { step: id("c1/install"), attempt: 3, reason: "rollback".into() }),
            Event::StepSkipped(StepSkipped { step: id("gate"), reason: "operator".into() }),
            Event::StepsAdded(StepsAdded {
                by: id("c1/install"),
                steps: sample_plan().steps[..1].to_vec(),
                dependencies: vec![(id("soak"), id("c1/install"))],
            }),
            Event::TimerStarted(TimerStarted { step: id("soak"), fire_at_ms: 1_800_000_000_000 }),
            Event::TimerFired(TimerFired { step: id("soak") }),
            Event::SignalReceived(SignalReceived {
                signal: Signal::Rollback {
                    scope: Scope::Group("c1".into()),
                    reason: "bad".into(),
                    allow_irreversible: true,
                },
                by: "alice".into(),
            }),
            Event::Paused(Paused { reason: "operator".into() }),
            Event::Resumed,
            Event::RollbackStarted(RollbackStarted {
                scope: Scope::All,
                reason: "failed".into(),
                allow_irreversible: false,
            }),
            Event::CompensationStarted(CompensationStarted { step: id("c1/install"), attempt: 1, resumed: true }),
            Event::CompensationSucceeded(CompensationSucceeded {
                step: id("c1/install"),
                attempt: 1,
                output: Payload::null(),
            }),
            Event::CompensationFailed(CompensationFailed { step: id("c1/install"), attempt: 1, error: error() }),
            Event::CompensationSkipped(CompensationSkipped { step: id("gate"), reason: "irreversible".into() }),
            Event::GroupRolledBack(GroupRolledBack { group: "c1".into() }),
            Event::WorkflowSucceeded,
            Event::WorkflowFailed(WorkflowFailed { reason: "blocked".into() }),
            Event::WorkflowRolledBack,
            Event::WorkflowCancelled(WorkflowCancelled { reason: "operator".into() }),
        ]
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex")).collect()
    }

    #[test]
    fn every_kind_round_trips() {
        for event in one_of_each() {
            let (kind, version, bytes) = encode(&event);
            assert_eq!(decode(kind, version, &bytes).as_ref(), Ok(&event), "{}", event.kind().name());
        }
        assert_eq!(one_of_each().len(), EventKind::ALL.len(), "one sample per kind");
    }

    #[test]
    fn committed_fixtures_still_decode_and_encode_to_the_same_bytes() {
        // Goal: a change to any stored shape fails here, not in a user's log.
        // To add a new kind's line: CANARYFLOW_BLESS_FIXTURES=1 cargo test.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events-v1.txt");
        let samples = one_of_each();
        if std::env::var_os("CANARYFLOW_BLESS_FIXTURES").is_some() {
            let text: String = samples
                .iter()
                .map(|event| {
                    let (kind, version, bytes) = encode(event);
                    format!("{} {kind} {version} {}\n", event.kind().name(), hex(&bytes))
                })
                .collect();
            std::fs::write(path, text).expect("write fixtures");
        }
        let text = std::fs::read_to_string(path).expect("fixture file");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), samples.len(), "one fixture line per kind");
        for (line, sample) in lines.iter().zip(&samples) {
            let fields: Vec<&str> = line.split(' ').collect();
            let (kind, version, bytes) =
                (fields[1].parse().expect("kind"), fields[2].parse().expect("version"), unhex(fields[3]));
            assert_eq!(
                decode(kind, version, &bytes).as_ref(),
                Ok(sample),
                "fixture {} no longer decodes to the sample",
                fields[0]
            );
            assert_eq!(encode(sample).2, bytes, "encoding of {} changed: give it a new version instead", fields[0]);
        }
    }

    #[test]
    fn unknown_newer_and_malformed_are_errors() {
        assert_eq!(decode(999, 1, &[]), Err(CodecError::UnknownKind(999)));
        assert!(matches!(decode(2, 9, &[]), Err(CodecError::NewerVersion { version: 9, .. })));
        assert!(matches!(decode(2, 1, &[0xff]), Err(CodecError::Malformed { .. })));
        assert!(matches!(decode(19, 1, &[0]), Err(CodecError::Malformed { .. })));
        let (kind, version, mut bytes) = encode(&one_of_each()[1]);
        bytes.push(0);
        assert!(matches!(decode(kind, version, &bytes), Err(CodecError::Malformed { .. })), "trailing bytes");
    }
}
