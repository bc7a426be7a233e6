//! Live progress of a running workflow, from the engine's progress
//! notices: a board of waves and clusters redrawn in place (on a
//! terminal), a line per step as it starts and ends, or JSON lines.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use canaryflow_engine::{Engine, Event, Progress as Notice, WorkflowState};
use canaryflow_store::WorkflowId;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::cli::Progress;
use crate::fleet_view;
use crate::output::{duration_ms, time};

/// Prints `engine`'s progress for workflow `id` until [`Printer::finish`].
pub struct Printer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Printer {
    /// Starts printing in `mode`.
    pub async fn start(engine: &Engine, id: WorkflowId, mode: Progress) -> Self {
        let mut notices = engine.subscribe();
        let mode = match mode {
            Progress::Auto if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() => Progress::Bars,
            Progress::Auto => Progress::Plain,
            other => other,
        };
        // Bars draw the folded state: subscribe first, then read it, so
        // that no event falls between.
        let mut board = match mode {
            Progress::Bars => engine.load_state(id).await.ok().map(Board::new),
            _ => None,
        };
        let engine = engine.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut line = Line::default();
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    received = notices.recv() => match received {
                        Ok(notice) if notice.workflow_id == id => match board.as_mut() {
                            Some(board) => board.apply(&engine, &notice, &mut line).await,
                            None => line.print(&notice, mode),
                        },
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => {
                            if let Some(board) = board.as_mut() {
                                board.reload(&engine).await;
                            }
                        }
                        Err(RecvError::Closed) => return,
                    },
                    _ = tick.tick() => {
                        if let Some(board) = board.as_mut() {
                            board.draw(engine.now_ms());
                        }
                    }
                    _ = &mut stopped => {
                        while let Ok(notice) = notices.try_recv() {
                            if notice.workflow_id == id {
                                match board.as_mut() {
                                    Some(board) => board.apply(&engine, &notice, &mut line).await,
                                    None => line.print(&notice, mode),
                                }
                            }
                        }
                        if let Some(board) = board {
                            board.finish(engine.now_ms());
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

/// The live board: a bar per wave, a line per cluster, redrawn from the
/// folded state; finished steps are printed above it with their times.
struct Board {
    state: WorkflowState,
    multi: MultiProgress,
    waves: Vec<(ProgressBar, Vec<ProgressBar>)>,
}

impl Board {
    fn new(state: WorkflowState) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        let wave_style = ProgressStyle::with_template("{prefix:<24} [{bar:32}] {pos:>3}/{len:3} {msg}")
            .expect("a valid template")
            .progress_chars("=> ");
        let cluster_style = ProgressStyle::with_template("  {prefix:<22} {msg}").expect("a valid template");
        let mut waves = Vec::new();
        let views = fleet_view::waves(&state);
        if views.is_empty() {
            let bar = multi.add(ProgressBar::new(state.steps.len() as u64).with_style(wave_style.clone()));
            bar.set_prefix(state.name.clone());
            waves.push((bar, Vec::new()));
        }
        for wave in &views {
            let bar = multi.add(ProgressBar::new(wave.total as u64).with_style(wave_style.clone()));
            bar.set_prefix(format!("{} (max {})", wave.name, wave.max_parallel));
            let clusters = wave
                .clusters
                .iter()
                .map(|cluster| {
                    let line = multi.add(ProgressBar::new(1).with_style(cluster_style.clone()));
                    line.set_prefix(cluster.name.clone());
                    line
                })
                .collect();
            waves.push((bar, clusters));
        }
        Self { state, multi, waves }
    }

    async fn apply(&mut self, engine: &Engine, notice: &Notice, line: &mut Line) {
        if let Some(text) = line.describe(notice.recorded.at_ms, &notice.recorded.event) {
            let clock = time(notice.recorded.at_ms);
            let _ = self.multi.println(format!("{}  {text}", clock.get(11..19).unwrap_or(&clock)));
        }
        if notice.recorded.seq != self.state.next_seq || self.state.apply(&notice.recorded).is_err() {
            self.reload(engine).await;
        }
        self.draw(engine.now_ms());
    }

    async fn reload(&mut self, engine: &Engine) {
        if let Ok(state) = engine.load_state(self.state.id).await {
            self.state = state;
        }
    }

    fn draw(&self, now_ms: u64) {
        let views = fleet_view::waves(&self.state);
        if views.is_empty() {
            if let Some((bar, _)) = self.waves.first() {
                bar.set_position(self.state.steps.iter().filter(|step| step.in_effect()).count() as u64);
                bar.set_message(self.state.status().to_string());
            }
            return;
        }
        for (wave, (bar, lines)) in views.iter().zip(&self.waves) {
            bar.set_position(wave.done as u64);
            let message = match (&wave.gate, wave.gate_until_ms) {
                (Some(gate), Some(until)) => {
                    format!("gate: {gate}, {} left", duration_ms(until.saturating_sub(now_ms)))
                }
                (Some(gate), None) => format!("gate: {gate}"),
                (None, _) => wave.state.to_string(),
            };
            bar.set_message(message);
            for (cluster, line) in wave.clusters.iter().zip(lines) {
                let step = cluster.step.clone().unwrap_or_default();
                let step = if cluster.also_running > 0 { format!("{step} +{}", cluster.also_running) } else { step };
                let elapsed = match (cluster.state, cluster.since_ms) {
                    ("running" | "rolling back", Some(since)) => duration_ms(now_ms.saturating_sub(since)),
                    _ => String::new(),
                };
                let detail = cluster.detail.as_deref().map(|d| format!("  ({d})")).unwrap_or_default();
                line.set_message(format!(
                    "{:<13} {:<34} {:>7}  {:>2}/{:<2}{detail}",
                    cluster.state, step, elapsed, cluster.done, cluster.total
                ));
            }
        }
    }

    fn finish(self, now_ms: u64) {
        self.draw(now_ms);
        for (bar, lines) in &self.waves {
            bar.abandon();
            for line in lines {
                line.abandon();
            }
        }
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
            Progress::Quiet | Progress::Auto | Progress::Bars => {}
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
