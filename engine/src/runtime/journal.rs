//! Between events and the store: encoding, durable appends, loading.

use canaryflow_store::{NewRecord, Store, SummaryFields, WorkflowId};

use crate::codec;
use crate::core::event::RecordedEvent;
use crate::core::state::WorkflowState;
use crate::error::{Error, Result};

/// Appends `events` (already applied to `state`, which gives the summary)
/// and returns once they are durable. Blocking: call from a blocking thread.
pub(crate) fn append(store: &Store, state: &WorkflowState, events: &[RecordedEvent]) -> Result<()> {
    let first = events.first().expect("an append has at least one event");
    let records: Vec<NewRecord> = events
        .iter()
        .map(|recorded| {
            let (kind, kind_version, payload) = codec::encode(&recorded.event);
            NewRecord { kind, kind_version, at_ms: recorded.at_ms, payload }
        })
        .collect();
    let fields = SummaryFields { name: state.name.clone(), status: state.status(), labels: state.labels.clone() };
    let receipt = store.append(state.id, first.seq, &records, &fields)?;
    assert_eq!(receipt.last_seq + 1, state.next_seq, "the state was applied exactly up to the appended events");
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
