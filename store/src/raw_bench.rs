//! The reference for the engine benchmark: the same write pattern straight
//! into sled, with the same group-commit flush discipline, and nothing else.
//!
//! `canaryflow bench engine` runs its workflows through the engine, then
//! this with the batch shapes the engine produced, in the same process and
//! on the same disk, and prints the ratio.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::envelope::{self, NewRecord};
use crate::error::{Error, Result};
use crate::group_commit::GroupCommit;
use crate::store::{WorkflowId, open_sled};

/// The write pattern to replay.
#[derive(Debug, Clone)]
pub struct RawBenchConfig {
    /// How many independent histories ("workflows") to write.
    pub workflows: u64,
    /// For each history, the sizes of its appends in order (records per append).
    pub batch_sizes: Vec<usize>,
    /// The payload bytes of each record.
    pub payload_bytes: usize,
    /// How many writers run at once.
    pub concurrency: usize,
}

/// What the raw run measured.
#[derive(Debug, Clone, Copy)]
pub struct RawBenchReport {
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Appends made (each one durable before the writer's next).
    pub appends: u64,
    /// Records written.
    pub records: u64,
    /// fsyncs issued.
    pub flushes: u64,
}

/// Writes `config`'s pattern into a fresh sled database at `path` (which
/// must not exist) and measures it.
pub fn raw_append_bench(path: &Path, config: &RawBenchConfig) -> Result<RawBenchReport> {
    assert!(config.concurrency > 0, "at least one writer");
    assert!(config.batch_sizes.iter().all(|size| *size > 0), "no empty batch");
    if path.exists() {
        return Err(Error::Invalid(format!(
            "{} already exists; the raw benchmark needs a fresh directory",
            path.display()
        )));
    }
    let db = open_sled(path)?;
    let tree = db.open_tree("events").map_err(|err| Error::Sled(err.to_string()))?;
    let commit = Arc::new(GroupCommit::default());
    let next_workflow = Arc::new(AtomicU64::new(0));
    let config = Arc::new(config.clone());
    let started = Instant::now();
    let writers: Vec<_> = (0..config.concurrency)
        .map(|_| {
            let (db, tree, commit, next_workflow, config) =
                (db.clone(), tree.clone(), commit.clone(), next_workflow.clone(), config.clone());
            std::thread::spawn(move || -> Result<u64> {
                let mut appends = 0;
                loop {
                    let index = next_workflow.fetch_add(1, Ordering::Relaxed);
                    if index >= config.workflows {
                        return Ok(appends);
                    }
                    let id = WorkflowId::new_v7();
                    let mut seq = 0u64;
                    for size in &config.batch_sizes {
                        let mut batch = sled::Batch::default();
                        for _ in 0..*size {
                            let record = NewRecord {
                                kind: 1,
                                kind_version: 1,
                                at_ms: 0,
                                payload: vec![0x5a; config.payload_bytes],
                            };
                            batch.insert(&envelope::key(id, seq)[..], envelope::encode(id, seq, &record));
                            seq += 1;
                        }
                        tree.apply_batch(batch).map_err(|err| Error::Sled(err.to_string()))?;
                        let ticket = commit.ticket();
                        commit.wait_durable(ticket, || {
                            db.flush().map(|_| ()).map_err(|err| Error::Sled(err.to_string()))
                        })?;
                        appends += 1;
                    }
                }
            })
        })
        .collect();
    let mut appends = 0;
    for writer in writers {
        appends += writer.join().map_err(|_| Error::Invalid("a raw benchmark writer panicked".into()))??;
    }
    let elapsed = started.elapsed();
    let per_workflow: usize = config.batch_sizes.iter().sum();
    Ok(RawBenchReport {
        elapsed,
        appends,
        records: config.workflows * per_workflow as u64,
        flushes: commit.flush_count(),
    })
}
