//! The control socket: how `approve`, `pause`, `cancel`, `resume` and
//! `rollback` reach a workflow that another canaryflow process is running.
//!
//! The store admits one process per data directory (its lock), so a second
//! process cannot append a signal itself. The process that holds the lock
//! listens on `<data-dir>/control.sock` (a Unix socket: the data
//! directory's permissions decide who may send, and no port is opened) and
//! relays each request to its engine, which checks it against the
//! workflow's state exactly as a local signal would be: a request that does
//! not apply is refused with nothing recorded.
//!
//! The same socket serves reads (`status`, `history`, `list`) while the
//! lock is held, so that a running upgrade can be watched from another
//! terminal.
//!
//! One JSON request per connection, of at most [`REQUEST_BYTES_MAX`];
//! the answer is JSON lines, each at most [`REPLY_LINE_BYTES_MAX`]: one
//! line, or for histories and lists one line per item and an `end` line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use canaryflow_engine::{Engine, Event, RecordedEvent, Signal, load_history};
use canaryflow_store::{ListFilter, Status, Summary, WorkflowId};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, warn};

/// The socket's name inside the data directory.
pub const SOCKET_NAME: &str = "control.sock";

/// The longest request.
pub const REQUEST_BYTES_MAX: u64 = 64 * 1024;

/// The longest reply line: an event holds at most a 4 MiB record, which is
/// longer as JSON.
pub const REPLY_LINE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Connections served at once; more wait.
const CONNECTIONS_MAX: usize = 16;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A request to the process running a workflow.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Record `signal` for `workflow`, as asked by `by`.
    Signal {
        /// The workflow.
        workflow: WorkflowId,
        /// The signal.
        signal: Signal,
        /// Who asked (recorded in the history).
        by: String,
    },
    /// `workflow`'s events up to `until_seq` (all without).
    History {
        /// The workflow.
        workflow: WorkflowId,
        /// The last event wanted.
        until_seq: Option<u64>,
    },
    /// The summaries that match `filter`.
    List {
        /// What to list.
        filter: ListFilter,
    },
    /// Answer once `workflow` stops moving (ends or pauses), or, with
    /// `group`, once that group is rolled back.
    Wait {
        /// The workflow.
        workflow: WorkflowId,
        /// A group whose rollback to wait for.
        group: Option<String>,
    },
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    /// The signal is in the history at `seq`.
    Recorded {
        /// Its sequence number.
        seq: u64,
    },
    /// The workflow stopped moving (or the group was rolled back).
    Settled {
        /// Its status.
        status: Status,
        /// Why, if it did not succeed.
        reason: Option<String>,
        /// Whether the group waited for is rolled back.
        group_rolled_back: bool,
    },
    /// One event of a history.
    Event {
        /// The event.
        event: RecordedEvent,
    },
    /// One workflow of a list.
    Summary {
        /// Its summary.
        summary: Summary,
    },
    /// The last line of a history or a list.
    End,
    /// The request was refused; nothing was recorded.
    Refused {
        /// Why.
        error: String,
    },
}

/// The socket's path for a data directory.
#[must_use]
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Whether a live process serves `data_dir`'s control socket (a socket file
/// left by a killed process refuses connections).
#[must_use]
pub fn is_served(data_dir: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket_path(data_dir)).is_ok()
}

/// Serves the control socket of `data_dir` while it lives; removes the
/// socket when dropped.
pub struct Server {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts serving. Call only while holding the data directory's lock: a
    /// socket file left there is then stale (its process is gone) and is
    /// replaced. Without a socket (a path too long for one, say) signals
    /// from other processes cannot arrive; that is logged, not fatal.
    #[must_use]
    pub fn start(engine: &Engine, data_dir: &Path) -> Option<Self> {
        let path = socket_path(data_dir);
        let _ = std::fs::remove_file(&path);
        let listener = match UnixListener::bind(&path) {
            Ok(listener) => listener,
            Err(err) => {
                warn!(path = %path.display(), %err, "no control socket: other canaryflow commands cannot signal this process");
                return None;
            }
        };
        let engine = engine.clone();
        let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let engine = engine.clone();
                tokio::spawn(async move {
                    if let Err(err) = serve(&engine, stream).await {
                        debug!(%err, "control connection ended");
                    }
                    drop(permit);
                });
            }
        });
        Some(Self { path, task })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(engine: &Engine, stream: UnixStream) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(REQUEST_BYTES_MAX);
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await.context("no request in time")??;
    let replies = match serde_json::from_str::<Request>(&line) {
        Err(err) => vec![Reply::Refused { error: format!("not a control request: {err}") }],
        Ok(Request::Signal { workflow, signal, by }) => vec![match engine.signal_by(workflow, signal, by).await {
            Ok(seq) => Reply::Recorded { seq },
            Err(err) => Reply::Refused { error: err.to_string() },
        }],
        Ok(Request::Wait { workflow, group }) => vec![settled(engine, workflow, group.as_deref()).await],
        Ok(Request::History { workflow, until_seq }) => {
            let store = engine.store().clone();
            match tokio::task::spawn_blocking(move || load_history(&store, workflow, until_seq)).await? {
                Ok(events) => events.into_iter().map(|event| Reply::Event { event }).chain([Reply::End]).collect(),
                Err(err) => vec![Reply::Refused { error: err.to_string() }],
            }
        }
        Ok(Request::List { filter }) => {
            let store = engine.store().clone();
            match tokio::task::spawn_blocking(move || store.list(&filter)).await? {
                Ok(list) => list.into_iter().map(|summary| Reply::Summary { summary }).chain([Reply::End]).collect(),
                Err(err) => vec![Reply::Refused { error: err.to_string() }],
            }
        }
    };
    for reply in replies {
        let mut text = serde_json::to_string(&reply)?;
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
    }
    write.shutdown().await?;
    Ok(())
}

/// Waits until `id` stops moving, or `group` is rolled back.
async fn settled(engine: &Engine, id: WorkflowId, group: Option<&str>) -> Reply {
    // Subscribe before reading the state, so that nothing falls between.
    let mut notices = engine.subscribe();
    let mut check = true;
    loop {
        if check {
            let state = match engine.load_state(id).await {
                Ok(state) => state,
                Err(err) => return Reply::Refused { error: err.to_string() },
            };
            let group_rolled_back = group.is_some_and(|group| {
                matches!(state.group_rollbacks.get(group), Some(canaryflow_engine::GroupRollback::RolledBack))
            });
            let status = state.status();
            if group_rolled_back || !matches!(status, Status::Running | Status::RollingBack) {
                let reason = state.paused.clone().or_else(|| match &state.outcome {
                    Some(
                        canaryflow_engine::Outcome::Failed { reason }
                        | canaryflow_engine::Outcome::Cancelled { reason },
                    ) => Some(reason.clone()),
                    _ => None,
                });
                return Reply::Settled { status, reason, group_rolled_back };
            }
        }
        check = match notices.recv().await {
            Ok(notice) => {
                notice.workflow_id == id
                    && (!matches!(notice.status, Status::Running | Status::RollingBack)
                        || matches!(notice.recorded.event, Event::GroupRolledBack(_)))
            }
            Err(RecvError::Lagged(_)) => true,
            Err(RecvError::Closed) => return Reply::Refused { error: "the engine stopped".into() },
        };
    }
}

/// Sends `request` to the process serving `data_dir`'s control socket and
/// returns its one reply.
pub async fn send(data_dir: &Path, request: &Request) -> anyhow::Result<Reply> {
    let mut replies = exchange(data_dir, request).await?;
    anyhow::ensure!(replies.len() == 1, "expected one answer on the control socket, got {}", replies.len());
    Ok(replies.remove(0))
}

/// Sends `request` and returns every reply line up to `end` (which is left
/// out). A refusal comes back as an error.
pub async fn fetch(data_dir: &Path, request: &Request) -> anyhow::Result<Vec<Reply>> {
    let mut replies = exchange(data_dir, request).await?;
    match replies.pop() {
        Some(Reply::End) => Ok(replies),
        Some(Reply::Refused { error }) => Err(anyhow::anyhow!(error)),
        _ => anyhow::bail!("the answer on the control socket of {} ended early", data_dir.display()),
    }
}

async fn exchange(data_dir: &Path, request: &Request) -> anyhow::Result<Vec<Reply>> {
    let path = socket_path(data_dir);
    let stream = UnixStream::connect(&path).await.with_context(|| {
        format!(
            "cannot reach the canaryflow process that holds {} through {}; is it still running?",
            data_dir.display(),
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await?;
    let mut reader = BufReader::new(read);
    let mut replies = Vec::new();
    loop {
        let mut line = String::new();
        (&mut reader).take(REPLY_LINE_BYTES_MAX).read_line(&mut line).await?;
        if line.is_empty() {
            break;
        }
        let reply: Reply = serde_json::from_str(&line)
            .with_context(|| format!("an unreadable answer on {}: {}", path.display(), line.trim_end()))?;
        replies.push(reply);
    }
    if replies.is_empty() {
        anyhow::bail!("the canaryflow process holding {} stopped before it answered", data_dir.display());
    }
    Ok(replies)
}
