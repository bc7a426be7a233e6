//! canaryflow's end-to-end tests: one binary, one module per area.

// Crash the engine at every event boundary and resume it.
mod crash;
// Fleets: waves, gates, failure policies, outages.
mod fleet;
// Fleet gates and signals through the command line, across restarts.
mod fleet_cli;
// The command line: bench, resume, list, verify, bad input, exit codes.
mod cli;
// `canaryflow demo`, crashed, resumed and rolled back.
mod demo;
// The simulator against Istio's own installer output.
mod istio_real;
// The simulator through kube-rs, over HTTP.
mod sim_kube;
// The simulator with the real kubectl.
mod sim_kubectl;
// The Istio canary upgrade of one cluster, end to end.
mod upgrade;
// The upgrade fed Istio's real generated output, on real-looking installs.
mod upgrade_real;
// Istio's real generated output, turned into other versions and revisions as the charts do.
mod real_install;
// The upgrade through the command line: crashes, kubectl, bad input.
mod upgrade_cli;
// Shared by the upgrade tests.
mod upgrade_support;
// Shared helpers for spawning the binaries.
mod support;
