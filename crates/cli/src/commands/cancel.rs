//! `reelay cancel`: stop a queued or running job.

use super::{context, emit, emit_json};
use crate::client::Client;
use crate::format::clean;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    /// The job id, e.g. aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2.
    pub id: String,

    /// Print the cancelled job as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(client: &Client, args: &CancelArgs) -> anyhow::Result<()> {
    let view = client
        .cancel(&args.id)
        .await
        .map_err(|e| context(e, format!("cannot cancel job {}", args.id)))?;
    if args.json {
        return emit_json(&view);
    }
    emit(format!("job {} {}", clean(&view.id), view.status))?;
    Ok(())
}
