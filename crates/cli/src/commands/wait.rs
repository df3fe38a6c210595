//! `reelay wait`: follow a job until it finishes, over its event stream, falling back to polling.

use super::{context, emit, emit_json};
use crate::client::{Client, ClientError};
use crate::format::{self, clean, human_bytes, human_duration};
use crate::progress;
use clap::Args;
use futures::StreamExt;
use indicatif::ProgressBar;
use reelay_protocol::{JobStatus, JobView};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// The job id, e.g. aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2.
    pub id: String,

    /// Give up after this many seconds (exit code 1).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// Print the final job as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Polling interval once the event stream is gone.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// An event stream silent for this long is treated as broken (the server may not send
/// keep-alives); polling takes over.
const STREAM_IDLE: Duration = Duration::from_secs(30);
/// Polling gives up after the server has been unreachable for this long.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a valid number of seconds"))
}

pub async fn run(client: &Client, args: &WaitArgs) -> anyhow::Result<()> {
    follow(client, &args.id, args.timeout, args.json).await
}

/// Follows a job with a progress bar until it is terminal, then reports: outputs on success,
/// an error (exit code 1) on failure, cancellation or timeout.
pub async fn follow(
    client: &Client,
    id: &str,
    timeout: Option<Duration>,
    json: bool,
) -> anyhow::Result<()> {
    let bar = progress::job_bar();
    let started = Instant::now();
    let mut last: Option<JobView> = None;
    let outcome = match timeout {
        Some(limit) => tokio::time::timeout(limit, watch(client, id, &bar, &mut last))
            .await
            .ok(),
        None => Some(watch(client, id, &bar, &mut last).await),
    };
    bar.finish_and_clear();
    let view = match outcome {
        Some(result) => result.map_err(|e| context(e, format!("cannot follow job {id}")))?,
        None => {
            let state = match &last {
                Some(v) => format!(
                    " (last seen {}, {}%)",
                    v.status,
                    format::percent(v.progress)
                ),
                None => String::new(),
            };
            anyhow::bail!(
                "timed out after {} waiting for job {id}{state}",
                human_duration(started.elapsed())
            );
        }
    };
    if json {
        emit_json(&view)?;
    }
    match view.status {
        JobStatus::Succeeded => {
            if !json {
                emit(success_report(client, &view, started.elapsed()))?;
            }
            Ok(())
        }
        _ => Err(anyhow::anyhow!(failure_message(&view))),
    }
}

/// Follows the job until it is terminal, keeping `last` up to date for the timeout message.
async fn watch(
    client: &Client,
    id: &str,
    bar: &ProgressBar,
    last: &mut Option<JobView>,
) -> Result<JobView, ClientError> {
    let view = client.job(id).await?;
    progress::show_job(bar, &view);
    if view.status.is_terminal() {
        return Ok(view);
    }
    *last = Some(view);

    match client.events(id).await {
        Ok(mut events) => loop {
            match tokio::time::timeout(STREAM_IDLE, events.next()).await {
                Ok(Some(Ok(view))) => {
                    if view.id != id {
                        tracing::debug!(got = %clean(&view.id), "ignoring an event for another job");
                        continue;
                    }
                    progress::show_job(bar, &view);
                    if view.status.is_terminal() {
                        return Ok(view);
                    }
                    *last = Some(view);
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "event stream broke; polling");
                    break;
                }
                Ok(None) => {
                    tracing::debug!("event stream ended before the job finished; polling");
                    break;
                }
                Err(_) => {
                    tracing::debug!("event stream silent for {STREAM_IDLE:?}; polling");
                    break;
                }
            }
        },
        // Polling reports for itself whatever is really wrong (a vanished job, a dead server).
        Err(e) => tracing::debug!(error = %e, "no event stream; polling"),
    }

    let mut failing_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        match client.job(id).await {
            Ok(view) => {
                failing_since = None;
                progress::show_job(bar, &view);
                if view.status.is_terminal() {
                    return Ok(view);
                }
                *last = Some(view);
            }
            Err(e) if e.is_transient() => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GIVE_UP_AFTER {
                    return Err(e);
                }
                tracing::debug!(error = %e, "polling failed; retrying");
                let status = last.as_ref().map_or("unknown", |v| v.status.as_str());
                bar.set_message(format!("{status} (server unavailable, retrying)"));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The one-liner for a job that ended without success.
pub fn failure_message(view: &JobView) -> String {
    let what = match view.status {
        JobStatus::Cancelled => "was cancelled",
        JobStatus::Failed => "failed",
        other => return format!("job {} is {other}", clean(&view.id)),
    };
    match &view.error {
        Some(error) => format!(
            "job {} {what}: {}: {}",
            clean(&view.id),
            clean(&error.code),
            clean(&error.message)
        ),
        None => format!("job {} {what}", clean(&view.id)),
    }
}

/// What a succeeded job produced, with full URLs.
fn success_report(client: &Client, view: &JobView, waited: Duration) -> String {
    let start = view.started_at.as_deref().unwrap_or(&view.created_at);
    let took = view
        .finished_at
        .as_deref()
        .and_then(|end| format::between(start, end))
        .unwrap_or(waited);
    let mut out = format!(
        "job {} succeeded in {}",
        clean(&view.id),
        human_duration(took)
    );
    if view.outputs.is_empty() {
        out.push_str("\n(no outputs listed)");
    }
    let rows: Vec<Vec<String>> = view
        .outputs
        .iter()
        .map(|o| {
            let url = client
                .resolve(&o.url)
                .map(|u| u.to_string())
                .unwrap_or_else(|_| clean(&o.url));
            vec![format!("  {}", clean(&o.name)), human_bytes(o.size), url]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str("\noutputs:\n");
        out.push_str(format::columns(&rows).trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reelay_protocol::ErrorDetail;

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_timeout("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("inf").is_err());
        assert!(parse_timeout("NaN").is_err());
    }

    #[test]
    fn failures_name_the_job_and_the_error() {
        let mut view: JobView = serde_json::from_value(serde_json::json!({
            "id": "aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2", "cluster": "aws", "status": "failed",
            "progress": 0.3, "attempts": 2, "created_at": "2024-11-26T08:23:00Z",
            "started_at": null, "finished_at": null, "error": null, "outputs": []
        }))
        .unwrap();
        assert_eq!(
            failure_message(&view),
            "job aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2 failed"
        );
        view.error = Some(ErrorDetail::new("unsupported_format", "no video stream"));
        assert_eq!(
            failure_message(&view),
            "job aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2 failed: unsupported_format: no video stream"
        );
        view.status = JobStatus::Cancelled;
        view.error = None;
        assert_eq!(
            failure_message(&view),
            "job aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2 was cancelled"
        );
    }
}
