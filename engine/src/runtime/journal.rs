//! Between events and the store: encoding, durable appends, loading.

use canaryflow_store::{NewRecord, Store, SummaryFields, WorkflowId};

use crate::codec;
use crate::core::event::RecordedEvent;
use crate::core::state::WorkflowState;
use crate::error::{Error, Result};

/// What an append needs of the workflow's state: its summary fields, and
/// the sequence number after the events (to check that the state was
/// applied exactly up to them). Small, so that appending does not copy the
/// state (which holds the whole plan) on every batch.
pub(crate) struct AppendHead {
    id: WorkflowId,
    next_seq: u64,
    fields: SummaryFields,
}

impl AppendHead {
    /// The head for events already applied to `state`.
    pub(crate) fn of(state: &WorkflowState) -> Self {
        Self {
            id: state.id,
            next_seq: state.next_seq,
            fields: SummaryFields { name: state.name.clone(), status: state.status(), labels: state.labels.clone() },
        }
    }
}

/// Appends `events` (already applied to the state `head` was taken from)
/// and returns once they are durable. Blocking: call from a blocking thread.
pub(crate) fn append(store: &Store, head: &AppendHead, events: &[RecordedEvent]) -> Result<()> {
    let first = events.first().expect("an append has at least one event");
    let records: Vec<NewRecord> = events
        .iter()
        .map(|recorded| {
            let (kind, kind_version, payload) = codec::encode(&recorded.event);
            NewRecord { kind, kind_version, at_ms: recorded.at_ms, payload }
        })
        .collect();
    let receipt = store.append(head.id, first.seq, &records, &head.fields)?;
    assert_eq!(receipt.last_seq + 1, head.next_seq, "the state was applied exactly up to the appended events");
    Ok(())
}

/// Decodes one stored record into its event.
pub fn decode_record(record: &canaryflow_store::Record) -> Result<crate::core::event::Event> {
    codec::decode(record.kind, record.kind_version, &record.payload).map_err(|source| Error::Codec {
        workflow_id: record.workflow_id,
        seq: record.seq,
        source,
    })
}

/// Reads and decodes `id`'s history up to `until_seq` (inclusive).
pub fn load_history(store: &Store, id: WorkflowId, until_seq: Option<u64>) -> Result<Vec<RecordedEvent>> {
    let mut out = Vec::new();
    for record in store.history_range(id, 0, until_seq)? {
        let record = record?;
        let event = decode_record(&record)?;
        out.push(RecordedEvent { seq: record.seq, at_ms: record.at_ms, event });
    }
    Ok(out)
}

/// Folds `id`'s history (up to `until_seq`, inclusive) into its state.
pub fn load_state(store: &Store, id: WorkflowId, until_seq: Option<u64>) -> Result<WorkflowState> {
    let history = load_history(store, id, until_seq)?;
    WorkflowState::fold(id, &history).map_err(|source| Error::Fold { workflow_id: id, source })
}
