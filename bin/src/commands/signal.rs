//! `canaryflow approve`, `pause` and `cancel`: signals recorded in a
//! workflow's history, here or through the process running it.

use std::path::Path;
use std::process::ExitCode;

use canaryflow_engine::Signal;
use canaryflow_store::WorkflowId;

use crate::cli::{ApproveArgs, Format, ReasonArgs};
use crate::commands::access::{Delivery, Reader, deliver};
use crate::commands::parse_id;

/// The gate of wave `n` (1-based), as the upgrade plan names it.
fn wave_gate(n: u32) -> String {
    format!("wave-{n}")
}

pub async fn approve(data_dir: &Path, format: Format, args: &ApproveArgs) -> anyhow::Result<ExitCode> {
    let id = parse_id(&args.id)?;
    let gate = match args.wave {
        Some(0) => anyhow::bail!("--wave 0: waves are numbered from 1"),
        Some(n) => wave_gate(n),
        None => {
            // Read what waits, then let go of the store before delivering.
            let waiting = Reader::open(data_dir).await?.state(id, None).await?.waiting_gates();
            match waiting.as_slice() {
                [] => anyhow::bail!("workflow {id} is not waiting for an approval"),
                [gate] => gate.clone(),
                many => {
                    anyhow::bail!("workflow {id} waits for approval of {}; say which with --wave N", many.join(" and "))
                }
            }
        }
    };
    let delivery = deliver(data_dir, id, Signal::Approve { gate: gate.clone() }).await?;
    report(format, id, &format!("approved {gate}"), &delivery);
    Ok(ExitCode::SUCCESS)
}

pub async fn pause(data_dir: &Path, format: Format, args: &ReasonArgs) -> anyhow::Result<ExitCode> {
    let id = parse_id(&args.id)?;
    let delivery = deliver(data_dir, id, Signal::Pause { reason: args.reason.clone() }).await?;
    report(format, id, "paused (steps already running finish; nothing new starts)", &delivery);
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(data_dir: &Path, format: Format, args: &ReasonArgs) -> anyhow::Result<ExitCode> {
    let id = parse_id(&args.id)?;
    let delivery = deliver(data_dir, id, Signal::Cancel { reason: args.reason.clone() }).await?;
    report(format, id, "cancelled (nothing was undone; `canaryflow rollback` undoes)", &delivery);
    Ok(ExitCode::SUCCESS)
}

fn report(format: Format, id: WorkflowId, what: &str, delivery: &Delivery) {
    let (seq, by) = match delivery {
        Delivery::Local { seq, .. } => (*seq, None),
        Delivery::Remote { seq, holder_pid } => (*seq, Some(*holder_pid)),
    };
    if format == Format::Json {
        let line = serde_json::json!({
            "workflow": id.to_string(), "recorded_seq": seq, "relayed_by_pid": by.flatten(), "relayed": by.is_some(),
        });
        println!("{line}");
        return;
    }
    println!("Workflow {id}: {what} (event #{seq}).");
    match by {
        Some(pid) => println!(
            "The canaryflow process running it{} acts on it now.",
            pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
        ),
        None => println!("No canaryflow process is running it now: `canaryflow resume {id}` goes on from here."),
    }
}
