//! Live progress of a running workflow: a line per step as it starts and
//! ends (or JSON lines), from the engine's progress notices.

use std::collections::BTreeMap;
use std::io::Write;

use canaryflow_engine::{Engine, Event, Progress as Notice};
use canaryflow_store::WorkflowId;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::cli::Progress;
use crate::output::{duration_ms, time};

/// Prints `engine`'s progress for workflow `id` until [`Printer::finish`].
pub struct Printer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Printer {
    /// Starts printing in `mode`.
    pub fn start(engine: &Engine, id: WorkflowId, mode: Progress) -> Self {
        let mut notices = engine.subscribe();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut line = Line::default();
            loop {
                tokio::select! {
                    received = notices.recv() => match received {
                        Ok(notice) if notice.workflow_id == id => line.print(&notice, mode),
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    },
                    _ = &mut stopped => {
                        while let Ok(notice) = notices.try_recv() {
                            if notice.workflow_id == id {
                                line.print(&notice, mode);
                            }
                        }
                        return;
                    }
                }
            }
        });
        Self { stop, task }
    }

    /// Prints what is left and stops.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[derive(Default)]
struct Line {
    started: BTreeMap<String, u64>,
}

impl Line {
    fn print(&mut self, notice: &Notice, mode: Progress) {
        let recorded = &notice.recorded;
        match mode {
            Progress::Quiet => {}
            Progress::Json => {
                let line = serde_json::json!({
                    "seq": recorded.seq, "at": time(recorded.at_ms), "workflow": notice.workflow_id.to_string(),
                    "kind": recorded.event.kind().name(), "step": recorded.event.step().map(ToString::to_string),
                    "status": notice.status.as_str(), "event": recorded.event,
                });
                println!("{line}");
            }
            Progress::Plain => {
                if let Some(text) = self.describe(recorded.at_ms, &recorded.event) {
                    let clock = time(recorded.at_ms);
                    let clock = clock.get(11..19).unwrap_or(&clock);
                    println!("{clock}  {text}");
                    let _ = std::io::stdout().flush();
                }
            }
        }
    }

    fn took(&mut self, step: &str, at_ms: u64) -> String {
        self.started
            .remove(step)
            .map(|from| format!(" in {}", duration_ms(at_ms.saturating_sub(from))))
            .unwrap_or_default()
    }

    fn describe(&mut self, at_ms: u64, event: &Event) -> Option<String> {
        let row = |step: &str, what: String| format!("{step:<40} {what}");
        Some(match event {
            Event::StepStarted(e) => {
                self.started.insert(e.step.to_string(), at_ms);
                row(
                    e.step.as_str(),
                    if e.resumed {
                        format!("started again (attempt {}, after a restart)", e.attempt)
                    } else if e.attempt > 1 {
                        format!("attempt {}", e.attempt)
                    } else {
                        "started".into()
                    },
                )
            }
            Event::StepSucceeded(e) => {
                let took = self.took(e.step.as_str(), at_ms);
                row(e.step.as_str(), format!("done{took}"))
            }
            Event::StepFailed(e) => row(
                e.step.as_str(),
                format!(
                    "failed (attempt {}): {}{}",
                    e.attempt,
                    e.error.message,
                    if e.error.retryable { "" } else { " (not retried)" }
                ),
            ),
            Event::StepAborted(e) => row(e.step.as_str(), format!("stopped: {}", e.reason)),
            Event::TimerStarted(e) => row(e.step.as_str(), format!("waiting until {}", time(e.fire_at_ms))),
            Event::CompensationStarted(e) => {
                self.started.insert(format!("{}#undo", e.step), at_ms);
                row(
                    e.step.as_str(),
                    if e.resumed { "undoing again (after a restart)".into() } else { "undoing".into() },
                )
            }
            Event::CompensationSucceeded(e) => {
                let took = self.took(&format!("{}#undo", e.step), at_ms);
                row(e.step.as_str(), format!("undone{took}"))
            }
            Event::CompensationFailed(e) => {
                row(e.step.as_str(), format!("undo failed (attempt {}): {}", e.attempt, e.error.message))
            }
            Event::CompensationSkipped(e) => row(e.step.as_str(), format!("undo skipped: {}", e.reason)),
            Event::RollbackStarted(e) => format!("rolling back {}: {}", e.scope, e.reason),
            Event::GroupRolledBack(e) => format!("cluster {} rolled back", e.group),
            Event::Paused(e) => format!("paused: {}", e.reason),
            Event::Resumed => "resumed".into(),
            Event::SignalReceived(e) => format!("signal {} from {}", e.signal.name(), e.by),
            Event::WorkflowSucceeded => "upgrade succeeded".into(),
            Event::WorkflowFailed(e) => format!("upgrade failed: {}", e.reason),
            Event::WorkflowRolledBack => "rolled back".into(),
            Event::WorkflowCancelled(e) => format!("cancelled: {}", e.reason),
            Event::StepsAdded(_) | Event::StepSkipped(_) | Event::TimerFired(_) | Event::WorkflowStarted(_) => {
                return None;
            }
        })
    }
}
