//! The store's one error type.

use std::path::PathBuf;

use crate::store::WorkflowId;

/// The result of a store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the store.
///
/// None of these is retried by the store itself. `Conflict` is a programming
/// error in the caller (two writers for one workflow); `Io` and `Sled` may
/// succeed on a later attempt; the rest need an operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process holds the data directory.
    #[error(
        "data directory {path} is in use by another canaryflow process{holder}; stop it, or give another --data-dir",
        holder = holder_pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// The pid the holder wrote into the lock file, if it could be read.
        holder_pid: Option<u32>,
    },
    /// The directory exists, is not empty, and is not a canaryflow data directory.
    #[error("{path} is not a canaryflow data directory ({why}); refusing to write into it")]
    NotADataDir {
        /// The directory.
        path: PathBuf,
        /// What was found instead.
        why: String,
    },
    /// No data directory exists where one was required.
    #[error("no canaryflow data directory at {path} (nothing has run with this --data-dir yet)")]
    Missing {
        /// The directory.
        path: PathBuf,
    },
    /// The data directory was written by a newer canaryflow.
    #[error(
        "data directory {path} has format version {found}; this canaryflow understands up to {supported}: upgrade canaryflow"
    )]
    NewerFormat {
        /// The directory.
        path: PathBuf,
        /// The version found on disk.
        found: u16,
        /// The newest version this binary knows.
        supported: u16,
    },
    /// A record, a summary or sled itself failed an integrity check.
    #[error("corrupt record: workflow {workflow_id}, sequence {seq}: {kind}")]
    Corrupt {
        /// The workflow whose history is damaged.
        workflow_id: WorkflowId,
        /// The sequence number of the damaged (or missing) record.
        seq: u64,
        /// What is wrong with it.
        kind: CorruptKind,
    },
    /// sled refused to open the log because its own checksums failed.
    #[error(
        "the event log in {path} is corrupt: sled refused to open it ({detail}); run `canaryflow verify` to find the damaged records"
    )]
    LogCorrupt {
        /// The sled directory.
        path: PathBuf,
        /// sled's description.
        detail: String,
    },
    /// A raw scan found records that sled no longer returns; the report is
    /// in `<data-dir>/DAMAGED` until an operator accepts it.
    #[error(
        "data directory {path} is damaged: {first_problem}; run `canaryflow verify` for the whole report, \
         and `canaryflow verify --accept-loss` once you have decided to go on with what is left"
    )]
    Damaged {
        /// The data directory.
        path: PathBuf,
        /// The first problem of the report.
        first_problem: String,
    },
    /// An append named a sequence number other than the next one.
    #[error(
        "append conflict for workflow {workflow_id}: expected to write sequence {expected_seq}, but the next free sequence is {next_seq}"
    )]
    Conflict {
        /// The workflow.
        workflow_id: WorkflowId,
        /// The sequence number the caller expected to write.
        expected_seq: u64,
        /// The sequence number that is actually next.
        next_seq: u64,
    },
    /// No workflow with this id has any record.
    #[error("no workflow with id {0}")]
    UnknownWorkflow(WorkflowId),
    /// The caller asked for something the store's limits forbid.
    #[error("invalid append: {0}")]
    Invalid(String),
    /// A file-system operation failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done ("create data directory", "open lock file", ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// sled returned an error other than corruption.
    #[error("sled: {0}")]
    Sled(String),
}

/// What is wrong with a corrupt record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptKind {
    /// The CRC32C stored in the envelope does not match its contents.
    Checksum {
        /// The checksum stored in the record.
        stored: u32,
        /// The checksum computed from its bytes.
        computed: u32,
    },
    /// The envelope could not be parsed (too short, bad magic, bad length).
    Envelope(String),
    /// The record's header names another key than the one it is stored under.
    KeyMismatch(String),
    /// A sequence number is missing: `seq` is the first one absent.
    Gap {
        /// The sequence number found after the gap.
        next_found: u64,
    },
    /// The record uses an envelope version newer than this binary knows.
    NewerEnvelope(u8),
    /// The summary disagrees with the history, or is unreadable.
    Summary(String),
    /// A record exists past the summary's last sequence number.
    Extra,
    /// The history ends before the summary's last sequence number.
    Truncated {
        /// The last sequence number the summary index records.
        summary_last_seq: u64,
    },
}

impl std::fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Checksum { stored, computed } => {
                write!(f, "checksum mismatch (stored CRC32C {stored:#010x}, computed {computed:#010x})")
            }
            Self::Envelope(why) => write!(f, "unreadable envelope: {why}"),
            Self::KeyMismatch(why) => write!(f, "stored under the wrong key: {why}"),
            Self::Gap { next_found } => {
                write!(f, "missing from the history (the next record found is sequence {next_found})")
            }
            Self::NewerEnvelope(version) => {
                write!(f, "envelope version {version} is newer than this canaryflow understands: upgrade canaryflow")
            }
            Self::Summary(why) => write!(f, "summary index: {why}"),
            Self::Extra => write!(f, "record beyond the end recorded in the summary index"),
            Self::Truncated { summary_last_seq } => write!(
                f,
                "missing: the history ends here, but the summary index records {summary_last_seq} as its last sequence"
            ),
        }
    }
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { action, path: path.into(), source }
    }
}
