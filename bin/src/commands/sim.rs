//! `canaryflow sim`: a simulated fleet in the foreground, or a revision's manifests.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use canaryflow_sim::{
    Fleet, FleetConfig, Installer, KubeVersion, Render, Revision, manifests_yaml, manifests_yaml_for,
};

use crate::cli::{SimAction, SimArgs, SimInstaller};
use crate::output::parse_duration_ms;

pub async fn run(data_dir: &Path, args: &SimArgs) -> anyhow::Result<ExitCode> {
    if let Some(SimAction::Manifests { revision, version, kube_version }) = &args.action {
        let revision =
            Revision::new(revision, version).map_err(|why| anyhow::anyhow!("--revision/--version: {why}"))?;
        let yaml = match kube_version {
            Some(kube) => manifests_yaml_for(&revision, &Render::for_kube(kube_version_arg(kube)?)),
            None => manifests_yaml(&revision),
        };
        print!("{}", yaml.map_err(anyhow::Error::msg)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut install = Vec::new();
    for path in &args.install {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("--install {}: cannot read", path.display()))?;
        let objects = canaryflow_sim::objects_from_yaml(&text)
            .map_err(|why| anyhow::anyhow!("--install {}: {why}", path.display()))?;
        install.push(objects);
    }
    let faults = match &args.faults {
        Some(text) => serde_json::from_str(text).map_err(|err| anyhow::anyhow!("--faults {text:?}: {err}"))?,
        None => canaryflow_sim::FaultConfig::default(),
    };
    let config = FleetConfig {
        faults,
        namespace_tag: args.namespace_tag.clone(),
        clusters: args.clusters,
        names: args.names.clone(),
        namespaces: args.namespaces,
        deployments: args.deployments,
        replicas: args.replicas,
        revision: args.istio_revision.clone(),
        version: args.istio_version.clone(),
        rollout_delay: Duration::from_millis(
            parse_duration_ms(&args.rollout_delay).map_err(|err| anyhow::anyhow!("--rollout-delay: {err}"))?,
        ),
        api_latency: Duration::from_millis(
            parse_duration_ms(&args.api_latency).map_err(|err| anyhow::anyhow!("--api-latency: {err}"))?,
        ),
        install,
        installer: match args.installer {
            SimInstaller::Istioctl => Installer::Istioctl,
            SimInstaller::Helm => Installer::Helm,
        },
        kube_version: args.kube_version.as_deref().map(kube_version_arg).transpose()?,
        cni: args.cni,
        ztunnel: args.ztunnel,
        operator: args.operator,
        ..FleetConfig::default()
    };
    let started = std::time::Instant::now();
    let fleet = Fleet::start(config).await?;
    let elapsed = started.elapsed();
    let kubeconfig = match &args.kubeconfig_out {
        Some(path) => path.clone(),
        None => {
            std::fs::create_dir_all(data_dir).map_err(|err| anyhow::anyhow!("create {}: {err}", data_dir.display()))?;
            data_dir.join("sim-kubeconfig")
        }
    };
    fleet.write_kubeconfig(&kubeconfig).map_err(|err| anyhow::anyhow!("write {}: {err}", kubeconfig.display()))?;
    println!(
        "Simulated fleet of {} clusters, Istio {} ({}), started in {:.2} s:",
        fleet.clusters().len(),
        args.istio_version,
        args.istio_revision,
        elapsed.as_secs_f64()
    );
    for cluster in fleet.clusters().iter().take(20) {
        println!("  {:<16} {}", cluster.name, cluster.url);
    }
    if fleet.clusters().len() > 20 {
        println!("  ... and {} more", fleet.clusters().len() - 20);
    }
    println!("Kubeconfig: {}", kubeconfig.display());
    println!(
        "Try:        kubectl --kubeconfig {} --context {} get pods -n istio-system -l app=istiod",
        kubeconfig.display(),
        fleet.clusters()[0].name
    );
    println!("Faults:     curl -X PUT {}/sim/faults -d '{{\"down\": true}}'", fleet.clusters()[0].url);
    println!("Running until interrupted (Ctrl-C).");
    wait_for_signal().await;
    Ok(ExitCode::SUCCESS)
}

fn kube_version_arg(text: &str) -> anyhow::Result<KubeVersion> {
    KubeVersion::parse(text).map_err(|why| anyhow::anyhow!("--kube-version: {why}"))
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
