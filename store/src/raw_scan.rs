//! A scan of sled's raw files for our self-identifying envelopes.
//!
//! sled treats a damaged frame in its log as the torn end of the log: on
//! open it drops, and then zeroes, everything after it, acknowledged writes
//! included. So before sled opens a log, we read its files ourselves and
//! note every intact record; once sled is open we can tell whether it lost
//! any. The scan uses `memchr`, so it costs about one read of the log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::envelope::{self, HEADER_BYTES, MAGIC};
use crate::error::{CorruptKind, Error, Result};
use crate::store::WorkflowId;
use crate::verify::Problem;

/// An envelope found in the raw files that fails its checks.
#[derive(Debug)]
pub(crate) struct DamagedCopy {
    file: PathBuf,
    offset: usize,
    /// The key its header claims, when the header is readable.
    key: Option<(WorkflowId, u64)>,
    what: String,
}

/// What a raw scan of the sled files found.
#[derive(Debug, Default)]
pub(crate) struct RawScan {
    /// Intact copies per record.
    pub(crate) intact: BTreeMap<(WorkflowId, u64), u64>,
    /// Damaged envelopes, in file order.
    pub(crate) damaged: Vec<DamagedCopy>,
}

impl RawScan {
    pub(crate) fn workflows(&self) -> BTreeSet<WorkflowId> {
        self.intact.keys().map(|(id, _)| *id).collect()
    }

    pub(crate) fn damage_problems(&self) -> Vec<Problem> {
        self.damaged
            .iter()
            .map(|DamagedCopy { file, offset, key, what }| {
                let place = format!("{} byte {offset}", file.display());
                match key {
                    Some((id, seq)) => {
                        let others = self.intact.get(&(*id, *seq)).copied().unwrap_or(0);
                        let note = if others == 0 {
                            "no intact copy was found".to_string()
                        } else {
                            format!("{others} other stored copies are intact")
                        };
                        Problem {
                            workflow_id: Some(*id),
                            seq: Some(*seq),
                            what: format!("a stored copy at {place} is damaged: {what}; {note}"),
                        }
                    }
                    None => {
                        Problem { workflow_id: None, seq: None, what: format!("a damaged record at {place}: {what}") }
                    }
                }
            })
            .collect()
    }
}

/// Scans every file of a sled directory for our envelopes and checks each
/// copy found. sled keeps several copies of a record over time (each
/// rewrite of a tree node writes it again), so one record may be found
/// several times.
pub(crate) fn raw_scan(log_path: &Path) -> Result<RawScan> {
    let mut scan = RawScan::default();
    if !log_path.exists() {
        return Ok(scan);
    }
    for file in files_under(log_path)? {
        let bytes = std::fs::read(&file).map_err(|err| Error::io("read", &file, err))?;
        for start in memchr::memmem::find_iter(&bytes, &MAGIC) {
            let slice = &bytes[start..];
            match envelope::parse_header(slice) {
                Ok(header) if slice.len() >= HEADER_BYTES + header.payload_len => {
                    let computed = envelope::checksum(slice, header.payload_len);
                    let key = (header.workflow_id, header.seq);
                    if computed == header.crc {
                        *scan.intact.entry(key).or_default() += 1;
                    } else {
                        let what = CorruptKind::Checksum { stored: header.crc, computed }.to_string();
                        scan.damaged.push(DamagedCopy { file: file.clone(), offset: start, key: Some(key), what });
                    }
                }
                Ok(_) => scan.damaged.push(DamagedCopy {
                    file: file.clone(),
                    offset: start,
                    key: None,
                    what: "an envelope cut short by the end of the file".into(),
                }),
                Err(kind) => scan.damaged.push(DamagedCopy {
                    file: file.clone(),
                    offset: start,
                    key: None,
                    what: kind.to_string(),
                }),
            }
        }
    }
    Ok(scan)
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let entries = std::fs::read_dir(&next).map_err(|err| Error::io("list", &next, err))?;
        for entry in entries {
            let entry = entry.map_err(|err| Error::io("list", &next, err))?;
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}
