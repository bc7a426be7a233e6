//! Flags and subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Upgrade Istio across Kubernetes clusters as durable workflows that resume
/// exactly where they stopped.
#[derive(Debug, Parser)]
#[command(name = "canaryflow", version, about, max_term_width = 100)]
pub struct Cli {
    /// Where the event log lives [default: $XDG_DATA_HOME/canaryflow, or ~/.local/share/canaryflow].
    #[arg(long, global = true, env = "CANARYFLOW_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// More logging on stderr (-v info, -vv debug); CANARYFLOW_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upgrade a simulated fleet (its own process) from Istio 1.6.5 to 1.6.8 in two waves, live.
    Demo(DemoArgs),
    /// Show every step of an upgrade, with its compensation, before anything runs (reads the clusters only).
    Plan(PlanArgs),
    /// Start an upgrade and run it in the foreground; prints its workflow id first.
    Start(StartArgs),
    /// Roll an upgrade back (all of it, or one cluster), in the foreground.
    Rollback(RollbackArgs),
    /// Let a wave's approval gate pass.
    Approve(ApproveArgs),
    /// Start nothing new in a workflow until it is resumed.
    Pause(ReasonArgs),
    /// Stop a workflow for good, without undoing anything.
    Cancel(ReasonArgs),
    /// List workflows, newest last.
    List(ListArgs),
    /// Show one workflow: its status and every step's.
    Status(StatusArgs),
    /// Show one workflow's events, or its state as of one of them.
    History(HistoryArgs),
    /// Check every record of the log; exit 1 and name each damaged record.
    Verify(VerifyArgs),
    /// Rebuild the summary index from the log.
    Reindex,
    /// Run every unfinished workflow (or one) until it ends or pauses, in the foreground.
    Resume(ResumeArgs),
    /// Run a simulated fleet of clusters with Istio installed, until interrupted;
    /// or print a revision's manifests.
    Sim(Box<SimArgs>),
    /// Measure.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// `sim` flags.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimArgs {
    /// Print rendered manifests instead of running a fleet.
    #[command(subcommand)]
    pub action: Option<SimAction>,
    /// How many clusters.
    #[arg(long, default_value_t = 3)]
    pub clusters: usize,
    /// Their names (comma-separated), instead of cluster-0, cluster-1, ...
    #[arg(long, value_delimiter = ',')]
    pub names: Vec<String>,
    /// Application namespaces per cluster.
    #[arg(long, default_value_t = 3)]
    pub namespaces: usize,
    /// Deployments per namespace.
    #[arg(long, default_value_t = 2)]
    pub deployments: usize,
    /// Replicas per deployment.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// The installed control plane's revision; `default` is a non-revisioned install.
    #[arg(long, default_value = "default")]
    pub istio_revision: String,
    /// Its Istio version.
    #[arg(long, default_value = "1.6.5")]
    pub istio_version: String,
    /// Where to write the kubeconfig [default: <data-dir>/sim-kubeconfig].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig_out: Option<PathBuf>,
    /// How long a rollout takes before its new pods start (500ms, 2s).
    #[arg(long, default_value = "500ms")]
    pub rollout_delay: String,
    /// Added to every API request (0ms, 20ms).
    #[arg(long, default_value = "0ms")]
    pub api_latency: String,
    /// Create this revision tag for the installed revision and label the namespaces with it.
    #[arg(long, value_name = "TAG")]
    pub namespace_tag: Option<String>,
    /// Faults every cluster starts with, as JSON (as `PUT <url>/sim/faults` takes), e.g.
    /// '{"error500Rate": 0.05, "stuckRollouts": ["istio-system/istiod-1-6-8"]}'.
    #[arg(long, value_name = "JSON")]
    pub faults: Option<String>,
    /// Seed every cluster by applying FILE (rendered manifests, such as `istioctl manifest
    /// generate` output) as the installer would, in place of the simulator's own rendering of
    /// --istio-revision/--istio-version (repeatable).
    #[arg(long = "install", value_name = "FILE")]
    pub install: Vec<PathBuf>,
    /// Who installed Istio: istioctl (its owner labels on everything, the default tag) or helm.
    #[arg(long, value_enum, default_value_t = SimInstaller::Istioctl)]
    pub installer: SimInstaller,
    /// The Kubernetes release the clusters serve (1.18, 1.32) [default: the newest the Istio
    /// version supports, at most 1.32].
    #[arg(long, value_name = "VERSION")]
    pub kube_version: Option<String>,
    /// Install the CNI node agent (DaemonSet istio-cni-node).
    #[arg(long)]
    pub cni: bool,
    /// Install ztunnel (DaemonSet ztunnel).
    #[arg(long)]
    pub ztunnel: bool,
    /// Run an in-cluster Istio operator reconciling an IstioOperator.
    #[arg(long)]
    pub operator: bool,
}

/// Who installed a simulated cluster's Istio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimInstaller {
    /// `istioctl install`.
    Istioctl,
    /// `helm install`.
    Helm,
}

/// `sim` subcommands.
#[derive(Debug, Subcommand)]
pub enum SimAction {
    /// Print the rendered objects of a revision, like `istioctl manifest generate --set revision=R`.
    Manifests {
        /// The revision's name (a DNS-1123 label, like 1-6-8).
        #[arg(long)]
        revision: String,
        /// Its Istio version (like 1.6.8).
        #[arg(long)]
        version: String,
        /// Render for this Kubernetes release (charts pick API versions by it) [default: the
        /// newest the Istio version supports, at most 1.32].
        #[arg(long, value_name = "VERSION")]
        kube_version: Option<String>,
    },
}

/// `demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The demo's folder: kubeconfig, upgrade spec, manifests, the fleet's log, and (unless
    /// --data-dir is given) the event log [default: <temp dir>/canaryflow-demo].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Clusters in the fleet: the first is the canary wave, the rest the second wave.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=50))]
    pub clusters: u16,
    /// Abort the upgrade right after event #N is recorded (the SEQ of `history`), as a kill -9
    /// would; the fleet keeps running, and `demo --resume` finishes the upgrade.
    #[arg(long, value_name = "N", conflicts_with_all = ["resume", "rollback", "stop"])]
    pub crash_after: Option<u64>,
    /// Finish the interrupted demo upgrade against its still-running fleet.
    #[arg(long, conflicts_with_all = ["rollback", "stop"])]
    pub resume: bool,
    /// Roll the interrupted demo upgrade back, against its still-running fleet.
    #[arg(long, conflicts_with = "stop")]
    pub rollback: bool,
    /// Stop the demo's simulated fleet.
    #[arg(long)]
    pub stop: bool,
    /// How to show progress.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
}

/// `plan` flags.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The upgrade spec (apiVersion: canaryflow.io/v1, kind: Upgrade).
    #[arg(short = 'f', long = "file", value_name = "SPEC")]
    pub file: PathBuf,
}

/// `start` flags.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The upgrade spec (apiVersion: canaryflow.io/v1, kind: Upgrade).
    #[arg(short = 'f', long = "file", value_name = "SPEC")]
    pub file: PathBuf,
    /// How to show progress.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
}

/// Progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// Bars on a terminal, else plain.
    Auto,
    /// A line per cluster with its current step and a bar per wave, redrawn in place.
    Bars,
    /// A line per step as it starts and ends.
    Plain,
    /// A JSON object per event, one per line.
    Json,
    /// Nothing until the end.
    Quiet,
}

/// `rollback` flags.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The workflow id.
    pub id: String,
    /// Roll back only this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Skip the compensations of irreversible steps instead of stopping at them.
    #[arg(long)]
    pub allow_irreversible: bool,
    /// Why (recorded in the history).
    #[arg(long, default_value = "requested by an operator")]
    pub reason: String,
    /// How to show progress.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
}

/// `approve` flags.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The workflow id.
    pub id: String,
    /// The wave whose gate to pass (1 is the first); without it, the one gate waiting.
    #[arg(long, value_name = "N")]
    pub wave: Option<u32>,
}

/// `pause` and `cancel` flags.
#[derive(Debug, Args)]
pub struct ReasonArgs {
    /// The workflow id.
    pub id: String,
    /// Why (recorded in the history).
    #[arg(long, default_value = "requested by an operator")]
    pub reason: String,
}

/// `list` flags.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these statuses (running, paused, succeeded, failed, rolling-back, rolled-back, cancelled).
    #[arg(long, value_delimiter = ',')]
    pub status: Vec<String>,
    /// Only workflows with this label (KEY=VALUE); repeat for more.
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Only workflows created at or after this time (RFC 3339, or an age such as 2h).
    #[arg(long)]
    pub since: Option<String>,
    /// Only workflows created before this time (RFC 3339, or an age such as 2h).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The workflow id.
    pub id: String,
}

/// `history` flags.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The workflow id.
    pub id: String,
    /// Show the workflow's state as of this sequence number (and the events up to it).
    #[arg(long, value_name = "SEQ")]
    pub at: Option<u64>,
    /// Only events of this step (or steps starting with this prefix).
    #[arg(long)]
    pub step: Option<String>,
    /// Only events of steps in this group (cluster).
    #[arg(long, alias = "cluster")]
    pub group: Option<String>,
    /// Only events of these kinds (StepFailed, SignalReceived, ...).
    #[arg(long, value_delimiter = ',')]
    pub kind: Vec<String>,
}

/// `verify` flags.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Accept the damage reported earlier and let canaryflow open the log again
    /// with what is left (the lost records stay lost).
    #[arg(long)]
    pub accept_loss: bool,
}

/// `resume` flags.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Only this workflow (resumed from a pause if it is paused).
    pub id: Option<String>,
    /// How to show progress (of one workflow).
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
}

/// `bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Run synthetic workflows of no-op steps through the engine, durably,
    /// then the same appends straight into sled, and print both.
    Engine(BenchEngineArgs),
    /// Start a simulated fleet and measure its start time and GET throughput.
    Sim(BenchSimArgs),
    /// Upgrade a simulated fleet (its own process) and compare the time to the critical-path bound.
    Fleet(BenchFleetArgs),
}

/// The size of a simulated fleet for the benchmarks.
#[derive(Debug, Clone, Copy, Args, serde::Serialize)]
pub struct FleetShape {
    /// Clusters.
    #[arg(long, default_value_t = 100)]
    pub clusters: usize,
    /// Application namespaces per cluster.
    #[arg(long, default_value_t = 20)]
    pub namespaces: usize,
    /// Deployments per namespace.
    #[arg(long, default_value_t = 10)]
    pub deployments: usize,
    /// Replicas per deployment.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
}

/// `bench fleet` flags.
#[derive(Debug, Args)]
pub struct BenchFleetArgs {
    /// The simulated fleet.
    #[command(flatten)]
    pub fleet: FleetShape,
    /// Waves (the clusters are split evenly).
    #[arg(long, default_value_t = 5)]
    pub waves: usize,
    /// Clusters in progress at once within a wave.
    #[arg(long, default_value_t = 20)]
    pub max_parallel: u32,
    /// How long every rollout takes in the simulator (istiod, gateways, workloads).
    #[arg(long, default_value = "5s")]
    pub rollout_delay: String,
    /// How often the upgrade's waits that are not watched look again (rollouts are watched).
    #[arg(long, default_value = "100ms")]
    pub poll: String,
    /// Keep the spec, the fleet's log and the event log here (default: a temporary folder, removed).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<std::path::PathBuf>,
}

/// `bench sim` flags.
#[derive(Debug, Args)]
pub struct BenchSimArgs {
    /// The simulated fleet.
    #[command(flatten)]
    pub fleet: FleetShape,
    /// Client connections at once (keep-alive), spread over the clusters.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Seconds each GET measurement runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// `bench engine` flags.
#[derive(Debug, Args)]
pub struct BenchEngineArgs {
    /// How many workflows.
    #[arg(long, default_value_t = 1000)]
    pub workflows: u64,
    /// No-op steps per workflow, in a chain.
    #[arg(long, default_value_t = 10)]
    pub steps: u32,
    /// Workflows driven at once (and writers in the raw reference).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Skip the raw sled reference.
    #[arg(long)]
    pub no_reference: bool,
}
