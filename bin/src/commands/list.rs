//! `canaryflow list`

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use canaryflow_store::{ListFilter, Status, Summary};
use serde::Serialize;

use crate::cli::{Format, ListArgs};
use crate::commands::access::Reader;
use crate::output::{Table, parse_time, print_json, time};

#[derive(Serialize)]
struct Row<'a> {
    id: String,
    name: &'a str,
    status: &'a str,
    labels: &'a BTreeMap<String, String>,
    created: String,
    updated: String,
    events: u64,
}

pub async fn run(data_dir: &Path, format: Format, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let filter = filter(args)?;
    let summaries = Reader::open(data_dir).await?.list(filter).await?;
    print(&summaries, format)?;
    Ok(ExitCode::SUCCESS)
}

fn filter(args: &ListArgs) -> anyhow::Result<ListFilter> {
    let now_ms = jiff::Timestamp::now().as_millisecond().max(0).unsigned_abs();
    let statuses = args
        .status
        .iter()
        .map(|text| {
            Status::parse(text).ok_or_else(|| {
                let known: Vec<&str> = Status::ALL.iter().map(|status| status.as_str()).collect();
                anyhow::anyhow!("--status {text:?} is not a status; expected one of {}", known.join(", "))
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let labels = args
        .labels
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--label {pair:?} must be KEY=VALUE"))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(ListFilter {
        statuses,
        labels,
        created_from_ms: args.since.as_deref().map(|text| parse_time(text, now_ms)).transpose()?,
        created_before_ms: args.until.as_deref().map(|text| parse_time(text, now_ms)).transpose()?,
        limit: args.limit,
    })
}

fn print(summaries: &[Summary], format: Format) -> anyhow::Result<()> {
    let rows: Vec<Row> = summaries
        .iter()
        .map(|summary| Row {
            id: summary.id.to_string(),
            name: &summary.name,
            status: summary.status.as_str(),
            labels: &summary.labels,
            created: time(summary.created_ms),
            updated: time(summary.updated_ms),
            events: summary.last_seq + 1,
        })
        .collect();
    if format == Format::Json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!("No workflows.");
        return Ok(());
    }
    let mut table = Table::new(&["ID", "NAME", "STATUS", "CREATED", "UPDATED", "EVENTS"]);
    for row in rows {
        table.row(vec![row.id, row.name.into(), row.status.into(), row.created, row.updated, row.events.to_string()]);
    }
    table.print();
    Ok(())
}
