//! `reelay delete`: delete a finished job's input and output files.

use super::{context, emit};
use crate::client::Client;
use crate::format::clean;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// The job id, e.g. aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2.
    pub id: String,

    /// A queued or running job: cancel it first, then delete its files.
    #[arg(long)]
    pub cancel: bool,
}

pub async fn run(client: &Client, args: &DeleteArgs) -> anyhow::Result<()> {
    let what = || format!("cannot delete job {}", args.id);
    match client
        .delete(&args.id)
        .await
        .map_err(|e| context(e, what()))?
    {
        None => emit(format!("job {} deleted", clean(&args.id)))?,
        // The server cancels an unfinished job instead of deleting it.
        Some(view) if args.cancel => {
            match client
                .delete(&view.id)
                .await
                .map_err(|e| context(e, what()))?
            {
                None => emit(format!("job {} cancelled and deleted", clean(&view.id)))?,
                Some(view) => anyhow::bail!("job {} is still {}", clean(&view.id), view.status),
            }
        }
        Some(view) => emit(format!(
            "job {} was unfinished and is now {}; run `reelay delete` again to delete its files",
            clean(&view.id),
            view.status
        ))?,
    }
    Ok(())
}
