//! `reelay list`: recent jobs, newest first.
//!
//! Through the edge a listing can miss a cluster that is down; then the jobs shown are not all
//! there are, and the command says so on stderr (and fails with `--strict`) instead of letting
//! a script take the page for the whole truth.

use super::{context, emit, emit_json};
use crate::client::Client;
use crate::format::{self, clean};
use clap::Args;
use reelay_protocol::{JobList, JobStatus};
use std::fmt;
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

    /// Exit with status 3 when the listing is partial (a cluster's jobs are missing because it
    /// is down or did not answer). The jobs that were listed are still printed.
    #[arg(long)]
    pub strict: bool,
}

/// A listing that lacks some clusters' jobs, under `--strict` (exit status 3).
#[derive(Debug)]
pub struct PartialListing(pub Vec<String>);

impl fmt::Display for PartialListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the listing is partial: the jobs of {} are missing (cluster unavailable)",
            names(&self.0)
        )
    }
}

impl std::error::Error for PartialListing {}

fn names(clusters: &[String]) -> String {
    if clusters.is_empty() {
        return "some clusters".to_string();
    }
    clusters
        .iter()
        .map(|c| clean(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The stderr warning for a partial listing, or None for a complete one.
pub fn partial_warning(list: &JobList) -> Option<String> {
    list.partial.then(|| {
        format!(
            "warning: partial listing: the jobs of {} are missing (cluster unavailable); \
             retry later (--strict makes this an error)",
            names(&list.missing_clusters)
        )
    })
}

pub async fn run(client: &Client, args: &ListArgs) -> anyhow::Result<()> {
    let list = client
        .jobs(args.status, args.limit, args.cursor.as_deref())
        .await
        .map_err(|e| context(e, "cannot list jobs"))?;
    if args.json {
        emit_json(&list)?;
    } else {
        emit(render(&list).trim_end())?;
        if let Some(cursor) = &list.next_cursor {
            let _ = writeln!(
                std::io::stderr(),
                "more jobs: reelay list --cursor {}",
                clean(cursor)
            );
        }
    }
    if args.strict && list.partial {
        return Err(PartialListing(list.missing_clusters).into());
    }
    if let Some(warning) = partial_warning(&list) {
        let _ = writeln!(std::io::stderr(), "{warning}");
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
    fn only_a_partial_listing_warns_and_names_the_missing_clusters() {
        assert_eq!(partial_warning(&JobList::complete(vec![], None)), None);
        let list = JobList::with_missing(vec![], None, vec!["gcp".into(), "aws".into()]);
        let w = partial_warning(&list).unwrap();
        assert!(
            w.starts_with("warning: partial listing: the jobs of aws, gcp are missing"),
            "{w}"
        );
        assert_eq!(
            PartialListing(list.missing_clusters).to_string(),
            "the listing is partial: the jobs of aws, gcp are missing (cluster unavailable)"
        );
    }

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
