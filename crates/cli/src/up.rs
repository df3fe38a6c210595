//! `reelay up`: two clusters and the edge on this machine, as child processes.

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Which clusters to start and how the edge is configured.
    #[arg(
        long,
        env = "REELAY_TOPOLOGY",
        default_value = "deploy/local/topology.toml",
        value_name = "FILE"
    )]
    pub topology: PathBuf,
}

pub async fn run(args: &UpArgs) -> anyhow::Result<()> {
    let plan = reelay_edge::up::Plan::load(&args.topology)?;
    // The clusters and the edge are this same binary in other roles.
    let exe = std::env::current_exe()?;
    reelay_edge::up::run(plan, &exe, reelay_edge::shutdown_signal()).await?;
    Ok(())
}
