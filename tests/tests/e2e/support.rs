//! Spawning the test binaries.

use std::path::Path;
use std::process::{Command, Output};

/// The `canaryflow` command, built from this checkout.
pub fn canaryflow(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_canaryflow-test-cli"));
    command.arg("--data-dir").arg(data_dir).env_remove("CANARYFLOW_DATA_DIR").env("CANARYFLOW_LOG", "warn");
    command
}

/// Runs a command and returns its output, with stdout and stderr as text.
pub fn run(command: &mut Command) -> (Output, String, String) {
    let output = command.output().expect("spawn");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// The crash child.
pub fn crash_child() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crash-child"))
}
