//! `canaryflow status ID`

use std::path::Path;
use std::process::ExitCode;

use crate::cli::{Format, StatusArgs};
use crate::commands::access::Reader;
use crate::commands::parse_id;
use crate::commands::view::WorkflowView;

pub async fn run(data_dir: &Path, format: Format, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let id = parse_id(&args.id)?;
    let state = Reader::open(data_dir).await?.state(id, None).await?;
    WorkflowView::of(&state).print(format)?;
    Ok(ExitCode::SUCCESS)
}
