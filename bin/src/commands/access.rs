//! How a command reaches the data directory: by opening it, or, while
//! another canaryflow process holds it, through that process's control
//! socket (see [`crate::control`]).

use std::path::{Path, PathBuf};

use anyhow::Context;
use canaryflow_engine::{Engine, RecordedEvent, Signal, WorkflowState, load_history};
use canaryflow_store::{ListFilter, OpenMode, Store, Summary, WorkflowId};

use crate::commands::{engine, engine_crashing_after};
use crate::control::{self, Reply, Request};

/// How long to wait for a data directory held by a short-lived command
/// (`status`, `list`: they serve no control socket and let go within
/// milliseconds). A holder that serves the socket runs workflows: that
/// conflict is reported at once.
const BRIEF_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the store (blocking work on a blocking thread), keeping the
/// store's error so that callers can tell "in use" apart.
async fn open(path: &Path, mode: OpenMode) -> anyhow::Result<Result<Store, canaryflow_store::Error>> {
    let started = std::time::Instant::now();
    loop {
        let dir = path.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || Store::open(&dir, mode)).await?;
        match opened {
            Err(canaryflow_store::Error::Locked { .. })
                if !control::is_served(path) && started.elapsed() < BRIEF_HOLDER_WAIT =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => return Ok(other),
        }
    }
}

/// Whether another process holds `data_dir`, and serves its control socket.
fn held_elsewhere(err: &canaryflow_store::Error, data_dir: &Path) -> Option<Option<u32>> {
    match err {
        canaryflow_store::Error::Locked { holder_pid, .. } if control::is_served(data_dir) => Some(*holder_pid),
        _ => None,
    }
}

/// Reads histories and summaries, from the store or from its holder.
pub enum Reader {
    /// This process opened the store.
    Local(Store),
    /// Another process holds it; ask it.
    Remote(PathBuf),
}

impl Reader {
    /// Opens `data_dir` for reading.
    pub async fn open(data_dir: &Path) -> anyhow::Result<Self> {
        match open(data_dir, OpenMode::Existing).await? {
            Ok(store) => Ok(Self::Local(store)),
            Err(err) if held_elsewhere(&err, data_dir).is_some() => Ok(Self::Remote(data_dir.to_path_buf())),
            Err(err) => Err(err.into()),
        }
    }

    /// Workflow `id`'s events up to `until_seq`.
    pub async fn history(&self, id: WorkflowId, until_seq: Option<u64>) -> anyhow::Result<Vec<RecordedEvent>> {
        match self {
            Self::Local(store) => {
                let store = store.clone();
                Ok(tokio::task::spawn_blocking(move || load_history(&store, id, until_seq)).await??)
            }
            Self::Remote(data_dir) => {
                let replies = control::fetch(data_dir, &Request::History { workflow: id, until_seq }).await?;
                replies
                    .into_iter()
                    .map(|reply| match reply {
                        Reply::Event { event } => Ok(event),
                        other => Err(anyhow::anyhow!("expected an event on the control socket, got {other:?}")),
                    })
                    .collect()
            }
        }
    }

    /// Workflow `id`'s state as of `until_seq` (now without).
    pub async fn state(&self, id: WorkflowId, until_seq: Option<u64>) -> anyhow::Result<WorkflowState> {
        let history = self.history(id, until_seq).await?;
        WorkflowState::fold(id, &history).context("the history does not fold (run `canaryflow verify`)")
    }

    /// The summaries that match `filter`.
    pub async fn list(&self, filter: ListFilter) -> anyhow::Result<Vec<Summary>> {
        match self {
            Self::Local(store) => {
                let store = store.clone();
                Ok(tokio::task::spawn_blocking(move || store.list(&filter)).await??)
            }
            Self::Remote(data_dir) => {
                let replies = control::fetch(data_dir, &Request::List { filter }).await?;
                replies
                    .into_iter()
                    .map(|reply| match reply {
                        Reply::Summary { summary } => Ok(summary),
                        other => Err(anyhow::anyhow!("expected a summary on the control socket, got {other:?}")),
                    })
                    .collect()
            }
        }
    }
}

/// An engine over the data directory that serves its control socket while
/// it lives: what every command that runs workflows uses.
pub struct Session {
    /// The engine.
    pub engine: Engine,
    _control: Option<control::Server>,
}

impl Session {
    /// Opens `data_dir` and starts serving its control socket.
    pub async fn open(data_dir: &Path, mode: OpenMode) -> anyhow::Result<Self> {
        let store = open(data_dir, mode).await??;
        Ok(Self::serve(engine(store), data_dir))
    }

    /// [`Session::open`] whose process aborts right after event
    /// `crash_after_seq` is recorded (`demo --crash-after`).
    pub async fn open_crashing_after(
        data_dir: &Path,
        mode: OpenMode,
        crash_after_seq: Option<u64>,
    ) -> anyhow::Result<Self> {
        let store = open(data_dir, mode).await??;
        Ok(Self::serve(engine_crashing_after(store, crash_after_seq), data_dir))
    }

    fn serve(engine: Engine, data_dir: &Path) -> Self {
        let control = control::Server::start(&engine, data_dir);
        Self { engine, _control: control }
    }
}

/// Where a signal went.
pub enum Delivery {
    /// Recorded by this process, which now holds the data directory.
    Local {
        /// The signal's sequence number.
        seq: u64,
        /// The session that recorded it.
        session: Session,
    },
    /// Recorded by the process running the workflow.
    Remote {
        /// The signal's sequence number.
        seq: u64,
        /// That process, if its pid is known.
        holder_pid: Option<u32>,
    },
}

/// Records `signal` for workflow `id`, here or through the process that
/// holds `data_dir`. A signal that does not apply is an error, with nothing
/// recorded.
pub async fn deliver(data_dir: &Path, id: WorkflowId, signal: Signal) -> anyhow::Result<Delivery> {
    match open(data_dir, OpenMode::Existing).await? {
        Ok(store) => {
            let engine = engine(store);
            let control = control::Server::start(&engine, data_dir);
            let seq = engine.signal(id, signal).await?;
            Ok(Delivery::Local { seq, session: Session { engine, _control: control } })
        }
        Err(err) => {
            let Some(holder_pid) = held_elsewhere(&err, data_dir) else { return Err(err.into()) };
            let by = std::env::var("USER").unwrap_or_else(|_| "canaryflow".into());
            match control::send(data_dir, &Request::Signal { workflow: id, signal, by }).await? {
                Reply::Recorded { seq } => Ok(Delivery::Remote { seq, holder_pid }),
                Reply::Refused { error } => Err(anyhow::anyhow!(error)),
                other => Err(anyhow::anyhow!("an unexpected answer on the control socket: {other:?}")),
            }
        }
    }
}

/// Waits, through the process holding `data_dir`, until workflow `id`
/// stops moving (or `group` is rolled back).
pub async fn wait_remote(data_dir: &Path, id: WorkflowId, group: Option<String>) -> anyhow::Result<Reply> {
    control::send(data_dir, &Request::Wait { workflow: id, group }).await
}
