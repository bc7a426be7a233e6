//! The append-only event log that every canaryflow workflow is recorded in.
//!
//! A [`Store`] keeps, for each workflow, a gapless sequence of [`Record`]s on
//! sled, plus a [`Summary`] per workflow maintained in the same transaction
//! as each append. It knows nothing of what the records mean: the engine
//! encodes its events into payloads and tells the store their kind and
//! version. Nothing here is async and nothing here knows Istio.
//!
//! What it guarantees:
//!
//! - **Append only.** [`Store::append`] names the sequence number it expects
//!   to write; a record that already exists is a conflict, never an
//!   overwrite. Nothing is ever updated or deleted.
//! - **Durable on return.** An append returns only after sled has flushed it
//!   to disk. Concurrent appends from many threads share one flush
//!   ([group commit](GroupCommit)).
//! - **Checked on read.** Every record carries a CRC32C over its key, header
//!   and payload; a record that fails it, or that breaks the sequence, is an
//!   [`Error::Corrupt`] naming the workflow and sequence number.
//! - **One process.** A data directory is locked by the process that opened
//!   it; a second one gets [`Error::Locked`] at once.
//!
//! Start at [`Store::open`].
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use canaryflow_store::{NewRecord, OpenMode, Status, Store, SummaryFields, WorkflowId};
//!
//! let store = Store::open("/var/lib/canaryflow".as_ref(), OpenMode::CreateIfMissing)?;
//! let id = WorkflowId::new_v7();
//! let record = NewRecord { kind: 1, kind_version: 1, at_ms: 1_700_000_000_000, payload: vec![1, 2, 3] };
//! let summary = SummaryFields { name: "demo".into(), status: Status::Running, labels: BTreeMap::new() };
//! store.append(id, 0, &[record], &summary)?;
//! for record in store.history(id, 0)? {
//!     println!("{} #{}", record?.workflow_id, 0);
//! }
//! # Ok::<(), canaryflow_store::Error>(())
//! ```

mod data_dir;
mod envelope;
mod error;
mod group_commit;
mod raw_bench;
mod raw_scan;
mod store;
mod summary;
mod verify;

pub use crate::data_dir::{DATA_DIR_FORMAT_VERSION, OpenMode};
pub use crate::envelope::{APPEND_RECORDS_MAX, NewRecord, RECORD_PAYLOAD_BYTES_MAX, Record, WORKFLOW_RECORDS_MAX};
pub use crate::error::{CorruptKind, Error, Result};
pub use crate::group_commit::GroupCommit;
pub use crate::raw_bench::{RawBenchConfig, RawBenchReport, raw_append_bench};
pub use crate::store::{AppendReceipt, History, ListFilter, Store, WorkflowId, open_sled};
pub use crate::summary::{LABELS_COUNT_MAX, NAME_BYTES_MAX, Status, Summary, SummaryFields};
pub use crate::verify::{Problem, VerifyReport};
