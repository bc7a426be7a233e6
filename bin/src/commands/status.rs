//! `canaryflow status ID`

use std::path::Path;
use std::process::ExitCode;

use canaryflow_engine::load_state;
use canaryflow_store::OpenMode;

use crate::cli::{Format, StatusArgs};
use crate::commands::view::WorkflowView;
use crate::commands::{open_store, parse_id};

pub async fn run(data_dir: &Path, format: Format, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let id = parse_id(&args.id)?;
    let store = open_store(data_dir, OpenMode::Existing).await?;
    let state = tokio::task::spawn_blocking(move || load_state(&store, id, None)).await??;
    WorkflowView::of(&state).print(format)?;
    Ok(ExitCode::SUCCESS)
}
