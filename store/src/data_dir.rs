//! The data directory: a marker file, a lock file, and the sled log.
//!
//! ```text
//! <data-dir>/CANARYFLOW   "canaryflow data directory\nformat 1\n"
//! <data-dir>/lock         held with an exclusive lock; holds the holder's pid
//! <data-dir>/log/         the sled database
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The newest data directory format this binary reads and writes.
pub const DATA_DIR_FORMAT_VERSION: u16 = 1;

const MARKER_FILE: &str = "CANARYFLOW";
const MARKER_FIRST_LINE: &str = "canaryflow data directory";
const LOCK_FILE: &str = "lock";
const DAMAGE_FILE: &str = "DAMAGED";
const ACCEPTED_LOSS_FILE: &str = "accepted-loss";
pub(crate) const LOG_DIR: &str = "log";

/// Whether opening may create the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the directory (or adopt an empty one) if needed: for commands that write.
    CreateIfMissing,
    /// Fail with [`Error::Missing`] rather than create anything: for commands that only read.
    Existing,
}

/// An opened, locked data directory. The lock lasts as long as this value.
#[derive(Debug)]
pub(crate) struct DataDir {
    pub(crate) path: PathBuf,
    _lock: File,
}

impl DataDir {
    pub(crate) fn log_path(&self) -> PathBuf {
        self.path.join(LOG_DIR)
    }
}

pub(crate) fn open(path: &Path, mode: OpenMode) -> Result<DataDir> {
    let path = path.to_path_buf();
    let marker = path.join(MARKER_FILE);
    match std::fs::metadata(&path) {
        Ok(meta) if !meta.is_dir() => {
            return Err(Error::NotADataDir { path, why: "it is a file, not a directory".into() });
        }
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if mode == OpenMode::Existing {
                return Err(Error::Missing { path });
            }
            std::fs::create_dir_all(&path).map_err(|err| Error::io("create data directory", &path, err))?;
        }
        Err(err) => return Err(Error::io("read data directory", &path, err)),
    }
    let marker_found = check_marker(&path, &marker)?;
    if !marker_found {
        refuse_foreign_content(&path)?;
        if mode == OpenMode::Existing {
            return Err(Error::Missing { path });
        }
    }
    let lock = take_lock(&path)?;
    if !marker_found {
        write_marker(&path, &marker)?;
    }
    Ok(DataDir { path, _lock: lock })
}

/// Reads the marker if present, refusing one from a newer canaryflow.
fn check_marker(path: &Path, marker: &Path) -> Result<bool> {
    let text = match std::fs::read_to_string(marker) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(Error::io("read marker file", marker, err)),
    };
    let mut lines = text.lines();
    let format = lines.next().filter(|first| *first == MARKER_FIRST_LINE).and(lines.next());
    let version = format
        .and_then(|line| line.strip_prefix("format "))
        .and_then(|number| number.trim().parse::<u16>().ok())
        .ok_or_else(|| Error::NotADataDir {
            path: path.to_path_buf(),
            why: format!("{MARKER_FILE} does not say which format it holds"),
        })?;
    if version > DATA_DIR_FORMAT_VERSION {
        return Err(Error::NewerFormat {
            path: path.to_path_buf(),
            found: version,
            supported: DATA_DIR_FORMAT_VERSION,
        });
    }
    Ok(true)
}

/// A directory without our marker may be adopted only if it is empty (a lock
/// file left by a process that died before writing the marker is fine).
fn refuse_foreign_content(path: &Path) -> Result<()> {
    let entries = std::fs::read_dir(path).map_err(|err| Error::io("list data directory", path, err))?;
    for entry in entries {
        let entry = entry.map_err(|err| Error::io("list data directory", path, err))?;
        if entry.file_name() != LOCK_FILE {
            return Err(Error::NotADataDir {
                path: path.to_path_buf(),
                why: format!("it holds {:?} and no {MARKER_FILE} marker", entry.file_name()),
            });
        }
    }
    Ok(())
}

fn take_lock(path: &Path) -> Result<File> {
    let lock_path = path.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|err| Error::io("open lock file", &lock_path, err))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let holder_pid = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
            return Err(Error::Locked { path: path.to_path_buf(), holder_pid });
        }
        Err(std::fs::TryLockError::Error(err)) => return Err(Error::io("lock", &lock_path, err)),
    }
    file.set_len(0).map_err(|err| Error::io("write lock file", &lock_path, err))?;
    file.rewind().map_err(|err| Error::io("write lock file", &lock_path, err))?;
    writeln!(file, "{}", std::process::id()).map_err(|err| Error::io("write lock file", &lock_path, err))?;
    Ok(file)
}

fn write_marker(path: &Path, marker: &Path) -> Result<()> {
    let temporary = path.join(format!("{MARKER_FILE}.tmp"));
    let text = format!("{MARKER_FIRST_LINE}\nformat {DATA_DIR_FORMAT_VERSION}\n");
    let mut file = File::create(&temporary).map_err(|err| Error::io("write marker file", &temporary, err))?;
    file.write_all(text.as_bytes()).map_err(|err| Error::io("write marker file", &temporary, err))?;
    file.sync_all().map_err(|err| Error::io("sync marker file", &temporary, err))?;
    std::fs::rename(&temporary, marker).map_err(|err| Error::io("write marker file", marker, err))?;
    File::open(path).and_then(|dir| dir.sync_all()).map_err(|err| Error::io("sync data directory", path, err))
}

/// The damage report left by an earlier open, if any.
pub(crate) fn read_damage_report(path: &Path) -> Result<Option<String>> {
    let file = path.join(DAMAGE_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::io("read damage report", &file, err)),
    }
}

/// Records damage that sled's recovery is about to erase the evidence of.
pub(crate) fn write_damage_report(path: &Path, problems: &[crate::verify::Problem]) -> Result<()> {
    let file = path.join(DAMAGE_FILE);
    let mut text = String::new();
    for problem in problems {
        text.push_str(&problem.to_string());
        text.push('\n');
    }
    let mut out = File::create(&file).map_err(|err| Error::io("write damage report", &file, err))?;
    out.write_all(text.as_bytes()).map_err(|err| Error::io("write damage report", &file, err))?;
    out.sync_all().map_err(|err| Error::io("sync damage report", &file, err))
}

/// Losses an operator accepted: one `<workflow id> <first seq> <last seq>` per line.
pub(crate) fn read_accepted_losses(path: &Path) -> Result<Vec<crate::verify::LostRun>> {
    let file = path.join(ACCEPTED_LOSS_FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Error::io("read accepted losses", &file, err)),
    };
    let parse = |line: &str| -> Option<crate::verify::LostRun> {
        let mut fields = line.split_whitespace();
        let id = crate::store::WorkflowId::parse(fields.next()?).ok()?;
        let first = fields.next()?.parse().ok()?;
        let last = fields.next()?.parse().ok()?;
        Some(crate::verify::LostRun { id, first, last })
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            parse(line).ok_or_else(|| Error::NotADataDir {
                path: path.to_path_buf(),
                why: format!("{ACCEPTED_LOSS_FILE} has an unreadable line {line:?}"),
            })
        })
        .collect()
}

pub(crate) fn append_accepted_losses(path: &Path, runs: &[crate::verify::LostRun]) -> Result<()> {
    let file = path.join(ACCEPTED_LOSS_FILE);
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .map_err(|err| Error::io("write accepted losses", &file, err))?;
    for run in runs {
        writeln!(out, "{} {} {}", run.id, run.first, run.last)
            .map_err(|err| Error::io("write accepted losses", &file, err))?;
    }
    out.sync_all().map_err(|err| Error::io("sync accepted losses", &file, err))
}

pub(crate) fn clear_damage_report(path: &Path) -> Result<bool> {
    let file = path.join(DAMAGE_FILE);
    match std::fs::remove_file(&file) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::io("remove damage report", &file, err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reopens_and_locks_exclusively() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data");
        let first = open(&path, OpenMode::CreateIfMissing).expect("creates");
        let err = open(&path, OpenMode::CreateIfMissing).expect_err("second open is refused");
        match err {
            Error::Locked { holder_pid, .. } => assert_eq!(holder_pid, Some(std::process::id())),
            other => panic!("expected Locked, got {other}"),
        }
        drop(first);
        open(&path, OpenMode::Existing).expect("reopens after the lock is released");
    }

    #[test]
    fn existing_mode_writes_nothing_when_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent");
        assert!(matches!(open(&path, OpenMode::Existing), Err(Error::Missing { .. })));
        assert!(!path.exists(), "a read-only open created the directory");
    }

    #[test]
    fn refuses_foreign_directories_and_newer_formats() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("notes.txt"), "mine").expect("write");
        let err = open(dir.path(), OpenMode::CreateIfMissing).expect_err("foreign");
        assert!(err.to_string().contains("notes.txt"), "{err}");
        assert!(!dir.path().join(MARKER_FILE).exists(), "nothing written into a foreign directory");

        let newer = tempfile::tempdir().expect("tempdir");
        std::fs::write(newer.path().join(MARKER_FILE), "canaryflow data directory\nformat 9\n").expect("write");
        let err = open(newer.path(), OpenMode::CreateIfMissing).expect_err("newer");
        assert!(matches!(err, Error::NewerFormat { found: 9, supported: 1, .. }), "{err}");

        let file = dir.path().join("notes.txt");
        assert!(matches!(open(&file, OpenMode::CreateIfMissing), Err(Error::NotADataDir { .. })));
    }
}
