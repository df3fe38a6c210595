//! `reelay list`: recent jobs, newest first.

use super::{context, emit, emit_json};
use crate::client::Client;
use crate::format::{self, clean};
use clap::Args;
use reelay_protocol::{JobList, JobStatus};
use std::io::Write;

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only jobs in this status: queued, running, succeeded, failed or cancelled.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<JobStatus>,

    /// At most this many jobs.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,

    /// Continue a previous listing (its `next_cursor`).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,

    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(client: &Client, args: &ListArgs) -> anyhow::Result<()> {
    let list = client
        .jobs(args.status, args.limit, args.cursor.as_deref())
        .await
        .map_err(|e| context(e, "cannot list jobs"))?;
    if args.json {
        return emit_json(&list);
    }
    emit(render(&list).trim_end())?;
    if let Some(cursor) = &list.next_cursor {
        let _ = writeln!(
            std::io::stderr(),
            "more jobs: reelay list --cursor {}",
            clean(cursor)
        );
    }
    Ok(())
}

pub fn render(list: &JobList) -> String {
    if list.jobs.is_empty() {
        return "no jobs".to_string();
    }
    let rows: Vec<Vec<String>> = list
        .jobs
        .iter()
        .map(|j| {
            vec![
                clean(&j.id),
                j.status.to_string(),
                format!("{}%", format::percent(j.progress)),
                clean(&j.created_at),
                j.outputs.len().to_string(),
            ]
        })
        .collect();
    format::table(&["ID", "STATUS", "PROGRESS", "CREATED", "OUTPUTS"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_table() {
        let list: JobList = serde_json::from_value(serde_json::json!({
            "jobs": [{
                "id": "aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2", "cluster": "aws", "status": "running",
                "progress": 0.5, "attempts": 1, "created_at": "2024-11-26T08:23:00Z",
                "started_at": null, "finished_at": null, "error": null, "outputs": []
            }],
            "next_cursor": null
        }))
        .unwrap();
        assert_eq!(
            render(&list),
            "ID                              STATUS   PROGRESS  CREATED               OUTPUTS\n\
             aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2  running  50%       2024-11-26T08:23:00Z  0\n"
        );
    }
}
