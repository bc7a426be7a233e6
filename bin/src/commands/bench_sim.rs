//! `canaryflow bench sim`: how fast a simulated fleet starts, and how many
//! GETs it serves, beside a reference measured in the same run.
//!
//! The load is plain HTTP/1.1 over keep-alive connections from this
//! process (a minimal client, so the measurement is the server's cost and
//! little else). The reference is `GET /version` through the same server,
//! same connections: the ratio says what serving a stored object costs
//! beyond the HTTP path itself.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use canaryflow_sim::{Fleet, FleetConfig};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::{BenchSimArgs, FleetShape, Format};
use crate::output::print_json;

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    fleet: FleetShape,
    objects_per_cluster: usize,
    start_seconds: f64,
    rss_megabytes_after_start: Option<f64>,
    connections: usize,
    object_gets_per_second: f64,
    version_gets_per_second: f64,
    ratio: f64,
}

pub async fn run(format: Format, args: &BenchSimArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.connections > 0 && args.connections <= 1_024,
        "--connections {} must be 1 to 1024",
        args.connections
    );
    anyhow::ensure!(args.seconds > 0 && args.seconds <= 600, "--seconds {} must be 1 to 600", args.seconds);
    let config = FleetConfig {
        clusters: args.fleet.clusters,
        namespaces: args.fleet.namespaces,
        deployments: args.fleet.deployments,
        replicas: args.fleet.replicas,
        rollout_delay: Duration::from_secs(1),
        ..FleetConfig::default()
    };
    let started = Instant::now();
    let fleet = Fleet::start(config).await?;
    let start_seconds = started.elapsed().as_secs_f64();
    let rss = rss_megabytes();
    eprintln!("bench: {} clusters started in {start_seconds:.2} s; measuring GETs", args.fleet.clusters);
    let addresses: Vec<String> =
        fleet.clusters().iter().map(|c| c.url.trim_start_matches("http://").to_string()).collect();
    let duration = Duration::from_secs(args.seconds);
    // Warm up the connections and the caches, then measure each path.
    load(&addresses, "/version", args.connections, Duration::from_millis(300)).await?;
    let version = load(&addresses, "/version", args.connections, duration).await?;
    let object = load(&addresses, "/apis/apps/v1/namespaces/shop/deployments/web", args.connections, duration).await?;
    let objects_per_cluster = args.fleet.namespaces * args.fleet.deployments * (2 + args.fleet.replicas);
    let report = Report {
        fleet: args.fleet,
        objects_per_cluster,
        start_seconds,
        rss_megabytes_after_start: rss,
        connections: args.connections,
        object_gets_per_second: object,
        version_gets_per_second: version,
        ratio: object / version,
    };
    if format == Format::Json {
        print_json(&report)?;
    } else {
        println!(
            "sim: {} clusters x {} namespaces x {} deployments x {} replicas (~{} objects per cluster)",
            report.fleet.clusters,
            report.fleet.namespaces,
            report.fleet.deployments,
            report.fleet.replicas,
            report.objects_per_cluster
        );
        println!("  start          {:>10.2} s", report.start_seconds);
        if let Some(rss) = report.rss_megabytes_after_start {
            println!("  RSS after start{:>10.0} MB", rss);
        }
        println!(
            "  GET object/s   {:>10.0}   (a Deployment, {} keep-alive connections over all clusters)",
            report.object_gets_per_second, report.connections
        );
        println!(
            "  GET /version/s {:>10.0}   (reference: same server, same connections)",
            report.version_gets_per_second
        );
        println!("  ratio          {:>10.2}", report.ratio);
    }
    drop(fleet);
    Ok(ExitCode::SUCCESS)
}

/// GETs `path` on every cluster over `connections` keep-alive connections
/// for `duration`; returns answers per second (each checked to be a 200).
async fn load(addresses: &[String], path: &str, connections: usize, duration: Duration) -> anyhow::Result<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..connections {
        let address = addresses[index % addresses.len()].clone();
        let (count, path) = (count.clone(), path.to_string());
        tasks.spawn(async move { get_until(&address, &path, deadline, &count).await });
    }
    let started = Instant::now();
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn get_until(address: &str, path: &str, deadline: Instant, count: &AtomicU64) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: application/json\r\nUser-Agent: canaryflow-bench\r\n\r\n"
    );
    let mut buffer = vec![0u8; 256 * 1024];
    while Instant::now() < deadline {
        stream.write_all(request.as_bytes()).await?;
        read_response(&mut stream, &mut buffer).await?;
        count.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Reads one response with a Content-Length body; checks for a 200.
async fn read_response(stream: &mut TcpStream, buffer: &mut [u8]) -> anyhow::Result<()> {
    let mut filled = 0;
    let header_end = loop {
        let read = stream.read(&mut buffer[filled..]).await?;
        anyhow::ensure!(read > 0, "the server closed the connection");
        filled += read;
        if let Some(at) = buffer[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        anyhow::ensure!(filled < buffer.len(), "response headers too large");
    };
    let head = std::str::from_utf8(&buffer[..header_end])?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "unexpected answer: {}", head.lines().next().unwrap_or_default());
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .map(|(_, value)| value.trim().parse())
        })
        .ok_or_else(|| anyhow::anyhow!("no content-length"))??;
    let mut have = filled - header_end;
    while have < length {
        let read = stream.read(&mut buffer[..]).await?;
        anyhow::ensure!(read > 0, "the server closed the connection mid-body");
        have += read;
    }
    Ok(())
}

fn rss_megabytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kilobytes: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes / 1024.0)
}
