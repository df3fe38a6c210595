//! `reelay list`: recent jobs, newest first.
//!
//! Through the edge a listing can miss a cluster that is down; then the jobs shown are not all
//! there are, and the command says so on stderr (and fails with `--strict`) instead of letting
//! a script take the page for the whole truth.

use super::{context, emit, emit_json};
use crate::client::Client;
use crate::format::{self, clean};
use clap::Args;
use reelay_protocol::{JobList, JobStatus, JobView};
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

    /// Only jobs submitted with this metadata, KEY=VALUE (exact). Repeatable: all must match.
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = super::submit::parse_key_value)]
    pub metadata: Vec<(String, String)>,

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
        .jobs(
            args.status,
            args.limit,
            args.cursor.as_deref(),
            &args.metadata,
        )
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
                name(j),
                duration(j),
                outputs(j),
            ]
        })
        .collect();
    format::table(
        &[
            "ID", "STATUS", "PROGRESS", "CREATED", "NAME", "DURATION", "OUTPUTS",
        ],
        &rows,
    )
}

/// Longest input name shown in the table; the JSON has it whole.
const NAME_CHARS: usize = 32;

/// The input's name, shortened in the middle (the start and the extension say most), or `-`.
fn name(j: &JobView) -> String {
    let Some(name) = j.input.as_ref().and_then(|i| i.name.as_deref()) else {
        return "-".to_string();
    };
    let name = clean(name);
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= NAME_CHARS {
        return name;
    }
    let head: String = chars[..NAME_CHARS - 9].iter().collect();
    let tail: String = chars[chars.len() - 8..].iter().collect();
    format!("{head}…{tail}")
}

/// The input's duration as `m:ss` (`h:mm:ss` from an hour), `-` until it was probed.
fn duration(j: &JobView) -> String {
    match j.input.as_ref().and_then(|i| i.duration_seconds) {
        Some(d) if d.is_finite() && d >= 0.0 => {
            let s = d.round() as u64;
            if s >= 3600 {
                format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
            } else {
                format!("{}:{:02}", s / 60, s % 60)
            }
        }
        _ => "-".to_string(),
    }
}

/// What the job asked for (its presets, or the custom outputs' names), from older servers
/// the number of outputs made.
fn outputs(j: &JobView) -> String {
    if j.requested_outputs.is_empty() {
        return j.outputs.len().to_string();
    }
    let names: Vec<String> = j
        .requested_outputs
        .iter()
        .map(|o| clean(o.preset.as_deref().unwrap_or(&o.name)))
        .collect();
    names.join(",")
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
            "ID                              STATUS   PROGRESS  CREATED               NAME  DURATION  OUTPUTS\n\
             aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2  running  50%       2024-11-26T08:23:00Z  -     -         0\n"
        );
    }

    #[test]
    fn the_table_says_what_each_job_is() {
        let list: JobList = serde_json::from_value(serde_json::json!({
            "jobs": [{
                "id": "aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2", "cluster": "aws", "status": "succeeded",
                "progress": 1.0, "attempts": 1, "created_at": "2024-11-26T08:23:00Z",
                "started_at": null, "finished_at": null, "error": null, "outputs": [],
                "input": {"name": "Holiday \u{1b}[2J2024 in the mountains with everyone.mp4",
                          "size": 1, "duration_seconds": 3725.4, "width": 1920, "height": 1080,
                          "video_codec": "h264", "audio_codec": "aac"},
                "requested_outputs": [{"name": "mp4-720p.mp4", "preset": "mp4-720p"},
                                      {"name": "small.mp4", "preset": null}]
            }, {
                "id": "aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V3", "cluster": "aws", "status": "queued",
                "progress": 0.0, "attempts": 0, "created_at": "2024-11-26T08:24:00Z",
                "started_at": null, "finished_at": null, "error": null, "outputs": [],
                "input": {"name": "a.mov", "size": null, "duration_seconds": 65.0,
                          "width": null, "height": null, "video_codec": null, "audio_codec": null},
                "requested_outputs": [{"name": "hls-abr", "preset": "hls-abr"}]
            }],
            "next_cursor": null
        }))
        .unwrap();
        let out = render(&list);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].contains("1:02:05"), "{out}");
        assert!(lines[1].contains("mp4-720p,small.mp4"), "{out}");
        assert!(
            !out.contains('\u{1b}'),
            "terminal escapes are not printed: {out}"
        );
        assert!(lines[1].contains("Holiday"), "{out}");
        assert!(lines[1].contains("…"), "long names are shortened: {out}");
        assert!(lines[1].contains("one.mp4"), "{out}");
        assert!(
            lines[2].contains("a.mov") && lines[2].contains("1:05"),
            "{out}"
        );
        assert!(lines[2].ends_with("hls-abr"), "{out}");
    }
}
