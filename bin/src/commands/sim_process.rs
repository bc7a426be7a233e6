//! A simulated fleet in a process of its own (`canaryflow sim`), for the
//! demo and the fleet benchmark: killing the upgrade leaves the clusters
//! standing, and the upgrade's memory is measured without the fleet's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// What `canaryflow sim` prints once it serves.
const READY_LINE: &str = "Running until interrupted";

/// glibc malloc settings for the fleet's process, unless the environment
/// sets its own. The simulator makes and drops objects as JSON trees, a
/// wave's pods by the thousand, and glibc's per-thread cache (7 blocks of
/// each size) overflows at once: malloc and free were 40% of its CPU while
/// a wave's rollouts came due. A cache of 8,000 blocks a size cut its CPU in
/// `bench fleet` (40 clusters, 2 waves) from 6.6-7.2 s to 5.1 s (2,000:
/// 6.1 s; 65,000: 5.5 s). Only the fleet gets it: in this process (the
/// upgrade) it raised the peak RSS from 88 to 133 MB.
const SIM_GLIBC_TUNABLES: &str = "glibc.malloc.tcache_count=8000";

/// A running `canaryflow sim` child. Dropping it leaves it running.
pub struct SimProcess {
    child: Child,
    log: PathBuf,
    /// The kubeconfig it writes, one context per cluster.
    pub kubeconfig: PathBuf,
}

impl SimProcess {
    /// Starts `canaryflow sim SIM_ARGS` with its log and kubeconfig in
    /// `dir`, in a process group of its own (Ctrl-C on this process leaves
    /// it running), and waits until it serves.
    pub fn start(dir: &Path, log_name: &str, sim_args: &[String], timeout: Duration) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let log = dir.join(log_name);
        let kubeconfig = dir.join("kubeconfig");
        let file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let exe = std::env::current_exe().context("where is this canaryflow binary?")?;
        let mut command = Command::new(exe);
        if std::env::var_os("GLIBC_TUNABLES").is_none() {
            command.env("GLIBC_TUNABLES", SIM_GLIBC_TUNABLES);
        }
        let child = command
            .arg("sim")
            .args(sim_args)
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .context("start the simulated fleet")?;
        let mut process = Self { child, log, kubeconfig };
        if let Err(err) = process.wait_ready(timeout) {
            process.stop();
            return Err(err);
        }
        Ok(process)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(READY_LINE) && self.kubeconfig.exists() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the simulated fleet exited ({status}) before it served:\n{log}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the simulated fleet did not start within {} s:\n{log}",
                timeout.as_secs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGTERM, then SIGKILL after 10 s) and reaps it.
    pub fn stop(mut self) {
        terminate(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `pid` (through kill(1): this workspace has no unsafe code).
pub fn terminate(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).stderr(Stdio::null()).status();
}

/// Whether `pid` runs `canaryflow sim` (not exited, not a reused pid).
#[must_use]
pub fn is_sim(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let zombie = stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'));
    !zombie && cmdline.split(|b| *b == 0).any(|arg| arg == b"sim")
}
