//! The store: append, read, list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::data_dir::{self, DataDir, OpenMode};
use crate::envelope::{self, APPEND_RECORDS_MAX, NewRecord, RECORD_PAYLOAD_BYTES_MAX, Record, WORKFLOW_RECORDS_MAX};
use crate::error::{CorruptKind, Error, Result};
use crate::group_commit::GroupCommit;
use crate::raw_scan::raw_scan;
use crate::summary::{self, Status, Summary, SummaryFields};
use crate::verify::LostRun;

const EVENTS_TREE: &str = "events";
const SUMMARIES_TREE: &str = "summaries";

/// A workflow's identity: a UUID, version 7 when canaryflow makes it, so ids
/// sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkflowId(uuid::Uuid);

impl WorkflowId {
    /// A fresh, time-ordered id.
    #[must_use]
    pub fn new_v7() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// An id from its 128-bit value (tests and fixtures).
    #[must_use]
    pub fn from_u128(value: u128) -> Self {
        Self(uuid::Uuid::from_u128(value))
    }

    /// An id from 16 bytes; `None` if the slice is not 16 bytes long.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        uuid::Uuid::from_slice(bytes).ok().map(Self)
    }

    /// The smallest version-7 id that could have been made at `unix_ms`.
    #[must_use]
    pub fn first_at_ms(unix_ms: u64) -> Self {
        let timestamp = u128::from(unix_ms & 0xFFFF_FFFF_FFFF) << 80;
        Self(uuid::Uuid::from_u128(timestamp | (0x7 << 76)))
    }

    /// Parses the hyphenated form, naming what was wrong.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        uuid::Uuid::parse_str(text.trim()).map(Self).map_err(|err| {
            format!(
                "{text:?} is not a workflow id (expected a UUID such as 0192f1c4-8f2a-7c3e-9b1d-2f5e6a7b8c9d): {err}"
            )
        })
    }

    /// The 16 bytes of the id.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl std::fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl std::fmt::Debug for WorkflowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkflowId({self})")
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReceipt {
    /// The sequence number of the first record written.
    pub first_seq: u64,
    /// The sequence number of the last record written.
    pub last_seq: u64,
}

/// What `list` should return. Empty fields match everything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListFilter {
    /// Only these statuses.
    pub statuses: Vec<Status>,
    /// Only workflows carrying every one of these labels.
    pub labels: BTreeMap<String, String>,
    /// Only workflows created at or after this time (Unix ms).
    pub created_from_ms: Option<u64>,
    /// Only workflows created before this time (Unix ms).
    pub created_before_ms: Option<u64>,
    /// At most this many, oldest first.
    pub limit: Option<usize>,
}

impl ListFilter {
    fn matches(&self, summary: &Summary) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&summary.status))
            && self.labels.iter().all(|(key, value)| summary.labels.get(key) == Some(value))
            && self.created_from_ms.is_none_or(|from| summary.created_ms >= from)
            && self.created_before_ms.is_none_or(|before| summary.created_ms < before)
    }
}

/// How long to wait for sled's own file lock once ours is held.
const SLED_LOCK_WAIT_MS_MAX: u64 = 5_000;

/// Opens the sled database at `log_path` as the store does: with its
/// configuration, and waiting (bounded) for sled's own file lock. For the
/// store, and for the raw benchmark and tests that look at a log behind
/// its back. Within the store we hold the data directory's lock already,
/// so a sled lock still taken can only be a store of this process that was
/// just dropped: sled lets go of its file a little after the last handle
/// goes, from its own threads.
pub fn open_sled(log_path: &Path) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        // Every durable write is flushed explicitly (group commit); a
        // background flusher would only add fsyncs we cannot account for.
        match sled::Config::new().path(log_path).flush_every_ms(None).open() {
            Ok(db) => return Ok(db),
            Err(err)
                if sled_lock_busy(&err)
                    && started.elapsed() < std::time::Duration::from_millis(SLED_LOCK_WAIT_MS_MAX) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(err) => return Err(sled_error(log_path, err)),
        }
    }
}

/// Whether opening sled failed only because its file lock is still held
/// (by a database of this process that is winding down). sled reports that
/// as an `Other` I/O error saying so, not as `WouldBlock`.
fn sled_lock_busy(err: &sled::Error) -> bool {
    match err {
        sled::Error::Io(err) => {
            err.kind() == std::io::ErrorKind::WouldBlock || err.to_string().starts_with("could not acquire lock")
        }
        _ => false,
    }
}

/// The event log. Cheap to clone; all clones share one database and lock.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: DataDir,
    db: sled::Db,
    events: sled::Tree,
    summaries: sled::Tree,
    commit: GroupCommit,
    watermark: Watermark,
    appends: std::sync::atomic::AtomicU64,
}

/// Why a transaction gave up.
enum Abort {
    Conflict { next_seq: u64 },
    Corrupt(Error),
}

impl Store {
    /// Opens (or, with [`OpenMode::CreateIfMissing`], creates) the data
    /// directory at `path` and locks it for this process.
    ///
    /// Before sled opens the log, its files are scanned for intact records;
    /// if sled then returns fewer, the loss is written to `<data-dir>/DAMAGED`
    /// and this (and every later open) fails until an operator accepts it
    /// with [`Store::accept_damage`].
    pub fn open(path: &Path, mode: OpenMode) -> Result<Self> {
        let dir = data_dir::open(path, mode)?;
        if let Some(report) = data_dir::read_damage_report(&dir.path)? {
            return Err(Error::Damaged { path: dir.path.clone(), first_problem: first_line(&report) });
        }
        let scan = raw_scan(&dir.log_path())?;
        let store = Self::open_unchecked(dir)?;
        let mut lost: Vec<crate::verify::Problem> = store.lost_runs(&scan)?.iter().map(LostRun::problem).collect();
        if let Some(first) = lost.first() {
            let first_problem = first.to_string();
            lost.extend(scan.damage_problems());
            data_dir::write_damage_report(store.path(), &lost)?;
            return Err(Error::Damaged { path: store.path().to_path_buf(), first_problem });
        }
        store.check_watermark()?;
        Ok(store)
    }

    /// Removes the damage report that keeps [`Store::open`] from opening
    /// `path`: the operator has seen it and goes on with what is left.
    /// Returns whether there was one.
    pub fn accept_damage(path: &Path) -> Result<bool> {
        let dir = data_dir::open(path, OpenMode::Existing)?;
        if data_dir::read_damage_report(&dir.path)?.is_none() {
            return Ok(false);
        }
        let scan = raw_scan(&dir.log_path())?;
        let store = Self::open_unchecked(dir)?;
        let lost = store.lost_runs(&scan)?;
        data_dir::append_accepted_losses(store.path(), &lost)?;
        data_dir::clear_damage_report(store.path())
    }

    /// Opens sled in a locked directory without checking the watermark
    /// (`verify` wants to see what sled recovered, whatever it is).
    pub(crate) fn open_unchecked(dir: DataDir) -> Result<Self> {
        let log_path = dir.log_path();
        let db = open_sled(&log_path)?;
        let events = db.open_tree(EVENTS_TREE).map_err(|err| sled_error(&log_path, err))?;
        let summaries = db.open_tree(SUMMARIES_TREE).map_err(|err| sled_error(&log_path, err))?;
        let watermark = Watermark::open(&dir.path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                db,
                events,
                summaries,
                commit: GroupCommit::default(),
                watermark,
                appends: Default::default(),
            }),
        })
    }

    /// sled treats a damaged frame in its log as the torn end of the log and
    /// silently drops everything after it, acknowledged writes included.
    /// The watermark names the newest record known durable; if sled no
    /// longer has it, refuse to go on with a shortened history.
    pub(crate) fn check_watermark(&self) -> Result<()> {
        let Some(((id, seq), false)) = self.watermark_record_present()? else {
            return Ok(());
        };
        Err(Error::LogCorrupt {
            path: self.inner.dir.log_path(),
            detail: format!(
                "sled recovered less than had been made durable: workflow {id} sequence {seq} was flushed, and is gone \
                 (sled drops everything after a damaged frame)"
            ),
        })
    }

    /// The watermark's record, and whether sled still has it (`None`
    /// without a watermark).
    pub(crate) fn watermark_record_present(&self) -> Result<Option<((WorkflowId, u64), bool)>> {
        let Some((id, seq)) = self.inner.watermark.read()? else {
            return Ok(None);
        };
        let present = self.inner.events.contains_key(envelope::key(id, seq)).map_err(|err| self.sled(err))?;
        Ok(Some(((id, seq), present)))
    }

    /// The newest record the watermark knows to be durable.
    pub(crate) fn watermark(&self) -> Result<Option<(WorkflowId, u64)>> {
        self.inner.watermark.read()
    }

    /// The data directory this store holds.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.dir.path
    }

    /// Appends `records` to workflow `id`, the first at `expected_seq`, and
    /// sets its summary, in one transaction; returns once they are durable.
    ///
    /// `expected_seq` must be the next free sequence number (0 for a new
    /// workflow); anything else is [`Error::Conflict`] and writes nothing.
    pub fn append(
        &self,
        id: WorkflowId,
        expected_seq: u64,
        records: &[NewRecord],
        fields: &SummaryFields,
    ) -> Result<AppendReceipt> {
        let receipt = self.append_buffered(id, expected_seq, records, fields)?;
        self.sync()?;
        Ok(receipt)
    }

    /// Like [`Store::append`], but returns before the flush: the records are
    /// visible to readers and become durable at the next [`Store::sync`].
    pub fn append_buffered(
        &self,
        id: WorkflowId,
        expected_seq: u64,
        records: &[NewRecord],
        fields: &SummaryFields,
    ) -> Result<AppendReceipt> {
        check_append(expected_seq, records, fields)?;
        let count = records.len() as u64;
        let last_seq = expected_seq + count - 1;
        let encoded: Vec<([u8; envelope::KEY_BYTES], Vec<u8>)> = records
            .iter()
            .enumerate()
            .map(|(offset, record)| {
                let seq = expected_seq + offset as u64;
                (envelope::key(id, seq), envelope::encode(id, seq, record))
            })
            .collect();
        let first_at_ms = records.first().expect("checked non-empty").at_ms;
        let last_at_ms = records.last().expect("checked non-empty").at_ms;
        let outcome = (&self.inner.events, &self.inner.summaries).transaction(|(events, summaries)| {
            let previous = match summaries.get(id.as_bytes())? {
                Some(bytes) => Some(summary::decode(id, &bytes).map_err(|why| {
                    ConflictableTransactionError::Abort(Abort::Corrupt(Error::Corrupt {
                        workflow_id: id,
                        seq: expected_seq,
                        kind: CorruptKind::Summary(why),
                    }))
                })?),
                None => None,
            };
            let next_seq = previous.as_ref().map_or(0, |summary| summary.last_seq + 1);
            if next_seq != expected_seq {
                return Err(ConflictableTransactionError::Abort(Abort::Conflict { next_seq }));
            }
            for (key, value) in &encoded {
                if events.get(key)?.is_some() {
                    // The index says this key is free, yet a record is there:
                    // never overwrite it.
                    return Err(ConflictableTransactionError::Abort(Abort::Conflict { next_seq: u64::MAX }));
                }
                events.insert(&key[..], value.as_slice())?;
            }
            let created_ms = previous.as_ref().map_or(first_at_ms, |summary| summary.created_ms);
            let summary = Summary {
                id,
                name: fields.name.clone(),
                status: fields.status,
                labels: fields.labels.clone(),
                created_ms,
                updated_ms: last_at_ms,
                last_seq,
            };
            summaries.insert(&id.as_bytes()[..], summary::encode(&summary))?;
            Ok(())
        });
        match outcome {
            Ok(()) => {
                self.inner.appends.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.inner.watermark.note_written(id, last_seq);
                Ok(AppendReceipt { first_seq: expected_seq, last_seq })
            }
            Err(TransactionError::Abort(Abort::Conflict { next_seq })) => {
                Err(Error::Conflict { workflow_id: id, expected_seq, next_seq })
            }
            Err(TransactionError::Abort(Abort::Corrupt(err))) => Err(err),
            Err(TransactionError::Storage(err)) => Err(sled_error(&self.inner.dir.log_path(), err)),
        }
    }

    /// Makes every write applied so far durable, sharing the fsync with
    /// concurrent callers.
    pub fn sync(&self) -> Result<()> {
        let ticket = self.inner.commit.ticket();
        self.inner.commit.wait_durable(ticket, || {
            // Read before flushing: this record was applied before the flush
            // starts, so the flush covers it.
            let newest = self.inner.watermark.newest_written();
            self.inner.db.flush().map_err(|err| self.sled(err))?;
            match newest {
                Some((id, seq)) => self.inner.watermark.record_durable(id, seq),
                None => Ok(()),
            }
        })
    }

    /// How many appends succeeded since open.
    #[must_use]
    pub fn append_count(&self) -> u64 {
        self.inner.appends.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many fsyncs group commit has issued since open.
    #[must_use]
    pub fn flush_count(&self) -> u64 {
        self.inner.commit.flush_count()
    }

    /// The summary of workflow `id`, if it exists.
    pub fn summary(&self, id: WorkflowId) -> Result<Option<Summary>> {
        match self.inner.summaries.get(id.as_bytes()).map_err(|err| self.sled(err))? {
            None => Ok(None),
            Some(bytes) => summary::decode(id, &bytes).map(Some).map_err(|why| Error::Corrupt {
                workflow_id: id,
                seq: 0,
                kind: CorruptKind::Summary(why),
            }),
        }
    }

    /// The summary of workflow `id`, or [`Error::UnknownWorkflow`].
    pub fn require_summary(&self, id: WorkflowId) -> Result<Summary> {
        self.summary(id)?.ok_or(Error::UnknownWorkflow(id))
    }

    /// Workflows matching `filter`, oldest first, read from the summary
    /// index only.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Summary>> {
        let start = filter.created_from_ms.map(WorkflowId::first_at_ms);
        let iter = match start {
            Some(start) => self.inner.summaries.range(start.as_bytes().to_vec()..),
            None => self.inner.summaries.iter(),
        };
        let mut out = Vec::new();
        for entry in iter {
            let (key, value) = entry.map_err(|err| self.sled(err))?;
            let id = WorkflowId::from_slice(&key).ok_or_else(|| Error::Sled("summary key is not 16 bytes".into()))?;
            let summary = summary::decode(id, &value).map_err(|why| Error::Corrupt {
                workflow_id: id,
                seq: 0,
                kind: CorruptKind::Summary(why),
            })?;
            if filter.matches(&summary) {
                out.push(summary);
                if filter.limit.is_some_and(|limit| out.len() >= limit) {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Workflow `id`'s records from `from_seq` on, checked one by one.
    pub fn history(&self, id: WorkflowId, from_seq: u64) -> Result<History> {
        self.history_range(id, from_seq, None)
    }

    /// Workflow `id`'s records from `from_seq` up to and including
    /// `until_seq` (or the end).
    pub fn history_range(&self, id: WorkflowId, from_seq: u64, until_seq: Option<u64>) -> Result<History> {
        let summary = self.require_summary(id)?;
        let end_seq = until_seq.map_or(summary.last_seq, |until| until.min(summary.last_seq));
        let range = envelope::key(id, from_seq).to_vec()..=envelope::key(id, u64::MAX).to_vec();
        Ok(History {
            id,
            next_seq: from_seq,
            end_seq: Some(end_seq),
            iter: self.inner.events.range(range),
            iter_source: self.inner.events.clone(),
            done: from_seq > end_seq,
            keep_going: false,
        })
    }

    /// Every workflow id that has at least one record, read from the log itself.
    pub(crate) fn logged_workflow_ids(&self) -> impl Iterator<Item = Result<WorkflowId>> + '_ {
        let mut next_start: Option<Vec<u8>> = Some(Vec::new());
        std::iter::from_fn(move || {
            let start = next_start.take()?;
            match self.inner.events.range(start..).next() {
                None => None,
                Some(Err(err)) => Some(Err(self.sled(err))),
                Some(Ok((key, _))) => match envelope::split_key(&key) {
                    None => Some(Err(Error::Sled(format!("event key of {} bytes", key.len())))),
                    Some((id, _)) => {
                        let after = envelope::key(id, u64::MAX);
                        let mut bound = after.to_vec();
                        bound.push(0);
                        next_start = Some(bound);
                        Some(Ok(id))
                    }
                },
            }
        })
    }

    /// The raw records of `id`, without comparing them to the summary index.
    pub(crate) fn unchecked_history(&self, id: WorkflowId) -> History {
        let range = envelope::key(id, 0).to_vec()..=envelope::key(id, u64::MAX).to_vec();
        History {
            id,
            next_seq: 0,
            end_seq: None,
            iter: self.inner.events.range(range),
            iter_source: self.inner.events.clone(),
            done: false,
            keep_going: false,
        }
    }

    /// Like `unchecked_history`, but going on past damaged records and gaps.
    pub(crate) fn every_record(&self, id: WorkflowId) -> History {
        History { keep_going: true, ..self.unchecked_history(id) }
    }

    /// Rebuilds the summary index from the log: `summarize` is given each
    /// workflow's records and returns its name, status and labels.
    /// Returns how many summaries were written.
    pub fn rebuild_summaries<F>(&self, mut summarize: F) -> Result<usize>
    where
        F: FnMut(WorkflowId, &mut dyn Iterator<Item = Result<Record>>) -> Result<SummaryFields>,
    {
        let ids: Vec<WorkflowId> = self.logged_workflow_ids().collect::<Result<_>>()?;
        for id in &ids {
            let mut first_last: Option<(u64, u64, u64)> = None;
            let mut records = self.unchecked_history(*id).inspect(|record| {
                if let Ok(record) = record {
                    let created = first_last.map_or(record.at_ms, |(created, _, _)| created);
                    first_last = Some((created, record.at_ms, record.seq));
                }
            });
            let fields = summarize(*id, &mut records)?;
            drop(records);
            let (created_ms, updated_ms, last_seq) = first_last.expect("a logged workflow has a record");
            let summary = Summary {
                id: *id,
                name: fields.name,
                status: fields.status,
                labels: fields.labels,
                created_ms,
                updated_ms,
                last_seq,
            };
            self.inner.summaries.insert(id.as_bytes(), summary::encode(&summary)).map_err(|err| self.sled(err))?;
        }
        self.sync()?;
        Ok(ids.len())
    }

    pub(crate) fn events_tree(&self) -> &sled::Tree {
        &self.inner.events
    }

    pub(crate) fn summaries_tree(&self) -> &sled::Tree {
        &self.inner.summaries
    }

    pub(crate) fn sled(&self, err: sled::Error) -> Error {
        sled_error(&self.inner.dir.log_path(), err)
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

fn check_append(expected_seq: u64, records: &[NewRecord], fields: &SummaryFields) -> Result<()> {
    if records.is_empty() {
        return Err(Error::Invalid("an append needs at least one record".into()));
    }
    if records.len() > APPEND_RECORDS_MAX {
        return Err(Error::Invalid(format!("{} records in one append, more than {APPEND_RECORDS_MAX}", records.len())));
    }
    if let Some(big) = records.iter().find(|record| record.payload.len() > RECORD_PAYLOAD_BYTES_MAX) {
        return Err(Error::Invalid(format!(
            "a record payload of {} bytes, more than {RECORD_PAYLOAD_BYTES_MAX}",
            big.payload.len()
        )));
    }
    if expected_seq.saturating_add(records.len() as u64) > WORKFLOW_RECORDS_MAX {
        return Err(Error::Invalid(format!("a workflow history may hold at most {WORKFLOW_RECORDS_MAX} records")));
    }
    fields.check().map_err(|why| Error::Invalid(format!("summary: {why}")))
}

fn sled_error(path: &Path, err: sled::Error) -> Error {
    match err {
        sled::Error::Corruption { at, .. } => Error::LogCorrupt {
            path: path.to_path_buf(),
            detail: match at {
                Some(at) => format!("checksum failure at {at:?}"),
                None => "checksum failure".into(),
            },
        },
        sled::Error::Io(source) => Error::Io { action: "sled I/O on", path: PathBuf::from(path), source },
        other => Error::Sled(other.to_string()),
    }
}

/// The durability watermark: the key of the newest record known flushed,
/// in `<data-dir>/watermark`. Written (not fsynced) after each group-commit
/// flush: it survives a killed process, and after a power loss it can only
/// be older than the truth, never newer, so it never raises a false alarm.
#[derive(Debug)]
struct Watermark {
    path: PathBuf,
    file: std::sync::Mutex<std::fs::File>,
    newest_written: std::sync::Mutex<Option<(WorkflowId, u64)>>,
}

const WATERMARK_FILE: &str = "watermark";
const WATERMARK_BYTES: usize = envelope::KEY_BYTES + 4;

impl Watermark {
    fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(WATERMARK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|err| Error::io("open watermark", &path, err))?;
        Ok(Self { path, file: std::sync::Mutex::new(file), newest_written: std::sync::Mutex::new(None) })
    }

    fn note_written(&self, id: WorkflowId, seq: u64) {
        *self.newest_written.lock().expect("watermark lock poisoned") = Some((id, seq));
    }

    fn newest_written(&self) -> Option<(WorkflowId, u64)> {
        *self.newest_written.lock().expect("watermark lock poisoned")
    }

    fn record_durable(&self, id: WorkflowId, seq: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let mut bytes = envelope::key(id, seq).to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
        assert_eq!(bytes.len(), WATERMARK_BYTES);
        let file = self.file.lock().expect("watermark lock poisoned");
        file.write_all_at(&bytes, 0).map_err(|err| Error::io("write watermark", &self.path, err))
    }

    fn read(&self) -> Result<Option<(WorkflowId, u64)>> {
        use std::os::unix::fs::FileExt;
        let file = self.file.lock().expect("watermark lock poisoned");
        let mut bytes = [0u8; WATERMARK_BYTES];
        match file.read_exact_at(&mut bytes, 0) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(err) => return Err(Error::io("read watermark", &self.path, err)),
        }
        let (key, crc) = bytes.split_at(envelope::KEY_BYTES);
        if crc32c::crc32c(key).to_be_bytes() != crc {
            // A torn write of the watermark itself: it proves nothing.
            return Ok(None);
        }
        Ok(envelope::split_key(key))
    }
}

/// One workflow's records in order, each checked: checksum, key, and that
/// no sequence number is missing (also at the end, against the summary).
pub struct History {
    id: WorkflowId,
    next_seq: u64,
    end_seq: Option<u64>,
    iter: sled::Iter,
    iter_source: sled::Tree,
    done: bool,
    /// Go on past a record that fails its checks (for `verify`).
    keep_going: bool,
}

impl Iterator for History {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.done {
            return None;
        }
        if self.end_seq.is_some_and(|end| self.next_seq > end) {
            self.done = true;
            return None;
        }
        let corrupt = |seq, kind| Error::Corrupt { workflow_id: self.id, seq, kind };
        match self.iter.next() {
            None => {
                self.done = true;
                let end = self.end_seq?;
                Some(Err(corrupt(self.next_seq, CorruptKind::Truncated { summary_last_seq: end })))
            }
            Some(Err(err)) => {
                self.done = true;
                Some(Err(Error::Sled(err.to_string())))
            }
            Some(Ok((key, value))) => {
                let Some((_, seq)) = envelope::split_key(&key) else {
                    self.done = true;
                    return Some(Err(corrupt(self.next_seq, CorruptKind::KeyMismatch("malformed key".into()))));
                };
                if seq != self.next_seq {
                    let missing = self.next_seq;
                    self.next_seq = seq;
                    self.done = !self.keep_going;
                    if self.keep_going {
                        // Re-read this record on the next call.
                        let range = envelope::key(self.id, seq).to_vec()..=envelope::key(self.id, u64::MAX).to_vec();
                        self.iter = self.iter_source.range(range);
                    }
                    return Some(Err(corrupt(missing, CorruptKind::Gap { next_found: seq })));
                }
                self.next_seq += 1;
                let record = envelope::decode(self.id, seq, &value);
                if record.is_err() && !self.keep_going {
                    self.done = true;
                }
                Some(record)
            }
        }
    }
}
