//! Integrity checks over a whole data directory.
//!
//! [`Store::verify`] reads every record and every summary and reports every
//! problem it finds, each naming the workflow and sequence number, and
//! compares sled's view with a raw scan of its files (see `raw_scan`), so
//! that damage sled hides is named too.

use std::collections::BTreeSet;
use std::path::Path;

use crate::data_dir::{self, OpenMode};
use crate::envelope;
use crate::error::{CorruptKind, Error, Result};
use crate::raw_scan::{RawScan, raw_scan};
use crate::store::{Store, WorkflowId};
use crate::summary;

/// One thing wrong with a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The workflow concerned, when known.
    pub workflow_id: Option<WorkflowId>,
    /// The sequence number concerned, when known.
    pub seq: Option<u64>,
    /// What is wrong, in a sentence.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.workflow_id, self.seq) {
            (Some(id), Some(seq)) => write!(f, "workflow {id}, sequence {seq}: {}", self.what),
            (Some(id), None) => write!(f, "workflow {id}: {}", self.what),
            _ => f.write_str(&self.what),
        }
    }
}

impl Problem {
    /// Reads back a line written by `Display` (the `DAMAGED` report).
    fn parse_reported(line: &str) -> Problem {
        let parsed = line.strip_prefix("workflow ").and_then(|rest| {
            let (id, rest) = rest.split_once(", sequence ")?;
            let (seq, what) = rest.split_once(": ")?;
            Some((WorkflowId::parse(id).ok()?, seq.parse().ok()?, what))
        });
        match parsed {
            Some((id, seq, what)) => {
                Problem { workflow_id: Some(id), seq: Some(seq), what: format!("found earlier: {what}") }
            }
            None => Problem { workflow_id: None, seq: None, what: format!("found earlier: {line}") },
        }
    }
}

/// Consecutive records of one workflow that sled lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LostRun {
    pub(crate) id: WorkflowId,
    pub(crate) first: u64,
    pub(crate) last: u64,
}

impl LostRun {
    pub(crate) fn problem(&self) -> Problem {
        let which = if self.first == self.last {
            format!("sequence {} is", self.first)
        } else {
            format!("sequences {} to {} are", self.first, self.last)
        };
        Problem {
            workflow_id: Some(self.id),
            seq: Some(self.first),
            what: format!(
                "{which} intact in the raw log files but missing from the log as sled reads it: sled dropped them \
                 (it discards everything after a damaged frame)"
            ),
        }
    }
}

/// What [`Store::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Workflows seen (in the log or the index).
    pub workflows: u64,
    /// Records read and found intact.
    pub records_ok: u64,
    /// Every problem found, in key order.
    pub problems: Vec<Problem>,
    /// Set when sled refused to open the log and the raw scan was used.
    pub sled_refused: Option<String>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.sled_refused.is_none()
    }
}

impl Store {
    /// Checks every record and summary in the data directory at `path`.
    ///
    /// First it scans the raw files for our envelopes (before sled can touch
    /// them), then it opens sled and walks its view: checksums, gapless
    /// sequences, the summary index, and whether any record found intact on
    /// disk is missing from what sled returns (sled drops everything after a
    /// damaged frame). Returns `Err` only when the directory cannot be
    /// examined at all (missing, locked, unreadable); damage is reported in
    /// the [`VerifyReport`], with the opened store when sled could open it,
    /// for the caller's own (semantic) checks.
    pub fn verify(path: &Path) -> Result<(VerifyReport, Option<Store>)> {
        let dir = data_dir::open(path, OpenMode::Existing)?;
        let earlier = data_dir::read_damage_report(&dir.path)?;
        let scan = raw_scan(&dir.log_path())?;
        let mut report = VerifyReport::default();
        if let Some(earlier) = earlier {
            report.problems.extend(earlier.lines().map(Problem::parse_reported));
        }
        let store = match Store::open_unchecked(dir) {
            Ok(store) => store,
            Err(Error::LogCorrupt { path: log_path, detail }) => {
                report.workflows = scan.workflows().len() as u64;
                report.records_ok = scan.intact.len() as u64;
                report.sled_refused = Some(format!("sled refused to open {}: {detail}", log_path.display()));
                report.problems.extend(scan.damage_problems());
                if report.problems.is_empty() {
                    report.problems.push(Problem {
                        workflow_id: None,
                        seq: None,
                        what: format!(
                            "all {} records found by a raw scan are intact: the damage is in sled's own structures",
                            report.records_ok
                        ),
                    });
                }
                return Ok((report, None));
            }
            Err(err) => return Err(err),
        };
        let view = store.verify_view()?;
        report.workflows = view.workflows;
        report.records_ok = view.records_ok;
        report.problems.extend(view.problems);
        let mut lost: Vec<Problem> = store.lost_runs(&scan)?.iter().map(LostRun::problem).collect();
        if !lost.is_empty() {
            lost.extend(scan.damage_problems());
            data_dir::write_damage_report(store.path(), &lost)?;
            report.problems.extend(lost);
        } else {
            report.problems.extend(scan.damage_problems());
        }
        if let Err(err) = store.check_watermark() {
            let (workflow_id, seq) = store.watermark()?.map_or((None, None), |(id, seq)| (Some(id), Some(seq)));
            report.problems.push(Problem { workflow_id, seq, what: err.to_string() });
        }
        Ok((report, Some(store)))
    }

    fn verify_view(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let mut logged = BTreeSet::new();
        for id in self.logged_workflow_ids() {
            let id = id?;
            logged.insert(id);
            self.verify_workflow(id, &mut report);
        }
        for entry in self.summaries_tree().iter() {
            let (key, value) = entry.map_err(|err| self.sled(err))?;
            let Some(id) = WorkflowId::from_slice(&key) else {
                report.problems.push(Problem {
                    workflow_id: None,
                    seq: None,
                    what: format!("summary index key of {} bytes", key.len()),
                });
                continue;
            };
            if !logged.contains(&id) {
                report.workflows += 1;
                let readable = summary::decode(id, &value).is_ok();
                report.problems.push(Problem {
                    workflow_id: Some(id),
                    seq: Some(0),
                    what: format!(
                        "the summary index lists it{}, but its history is missing entirely",
                        if readable { "" } else { " (unreadably)" }
                    ),
                });
            }
        }
        Ok(report)
    }

    fn verify_workflow(&self, id: WorkflowId, report: &mut VerifyReport) {
        report.workflows += 1;
        let mut last_seq = None;
        for record in self.every_record(id) {
            match record {
                Ok(record) => {
                    report.records_ok += 1;
                    last_seq = Some(record.seq);
                }
                Err(Error::Corrupt { workflow_id, seq, kind }) => {
                    if !matches!(kind, CorruptKind::Gap { .. }) {
                        last_seq = Some(seq);
                    }
                    report.problems.push(Problem {
                        workflow_id: Some(workflow_id),
                        seq: Some(seq),
                        what: kind.to_string(),
                    });
                }
                Err(other) => {
                    report.problems.push(Problem { workflow_id: Some(id), seq: None, what: other.to_string() });
                    return;
                }
            }
        }
        match self.summary(id) {
            Ok(Some(summary)) if Some(summary.last_seq) == last_seq => {}
            Ok(Some(summary)) => report.problems.push(Problem {
                workflow_id: Some(id),
                seq: last_seq.map(|seq| seq.min(summary.last_seq) + 1),
                what: format!(
                    "the summary index says the last sequence is {}, the log ends at {}",
                    summary.last_seq,
                    last_seq.map_or("nothing".to_string(), |seq| seq.to_string())
                ),
            }),
            Ok(None) => report.problems.push(Problem {
                workflow_id: Some(id),
                seq: None,
                what: "it has records but no entry in the summary index (run `canaryflow reindex`)".into(),
            }),
            Err(err) => report.problems.push(Problem { workflow_id: Some(id), seq: None, what: err.to_string() }),
        }
    }

    /// Runs of records whose intact copy is in the raw files but which sled
    /// no longer returns, leaving out losses an operator already accepted,
    /// and leaving out a workflow's unacknowledged tail.
    ///
    /// A workflow's tail is unacknowledged when the watermark's record is
    /// still there: every flush made durable everything sled had been given
    /// up to the record it names, and sled recovers its log up to the first
    /// incomplete write, so it recovered every acknowledged record; a
    /// workflow's appends wait for their flush one after another, so what
    /// is missing past its last record was written after the last flush. A
    /// process killed while sled was writing can leave such a write complete
    /// in the files and an earlier one torn, so that sled drops it (seen once
    /// in `a_bench_killed_halfway_is_finished_by_resume`). A missing record
    /// with a later one of its workflow present is always a loss.
    pub(crate) fn lost_runs(&self, scan: &RawScan) -> Result<Vec<LostRun>> {
        let tails_unacknowledged = matches!(self.watermark_record_present()?, Some((_, true)));
        let accepted = data_dir::read_accepted_losses(self.path())?;
        let is_accepted =
            |id: WorkflowId, seq: u64| accepted.iter().any(|run| run.id == id && (run.first..=run.last).contains(&seq));
        let mut runs: Vec<LostRun> = Vec::new();
        for &(id, seq) in scan.intact.keys() {
            if is_accepted(id, seq) {
                continue;
            }
            let present = self.events_tree().contains_key(envelope::key(id, seq)).map_err(|err| self.sled(err))?;
            if present {
                continue;
            }
            match runs.last_mut() {
                Some(run) if run.id == id && run.last + 1 == seq => run.last = seq,
                _ => runs.push(LostRun { id, first: seq, last: seq }),
            }
        }
        if tails_unacknowledged {
            let mut kept = Vec::with_capacity(runs.len());
            for run in runs {
                let later = envelope::key(run.id, run.last.saturating_add(1))..=envelope::key(run.id, u64::MAX);
                if self.events_tree().range(later).next().transpose().map_err(|err| self.sled(err))?.is_some() {
                    kept.push(run);
                }
            }
            runs = kept;
        }
        Ok(runs)
    }
}
