//! Stored jobs → the wire's `JobView`.

use chrono::{DateTime, SecondsFormat, Utc};
use reelay_jobs::{Job, Millis};
use reelay_protocol::{InputView, JobSpec, JobView, OutputView, TaskView};

pub fn rfc3339(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn output_url(job_id: &str, name: &str) -> String {
    format!("/v1/jobs/{job_id}/outputs/{name}")
}

pub fn job_view(job: &Job) -> JobView {
    // The stored spec passed admission; one that no longer reads shows no context.
    let spec: Option<JobSpec> = serde_json::from_str(&job.spec_json).ok();
    JobView {
        id: job.id.clone(),
        cluster: job.cluster.clone(),
        status: job.status,
        progress: (job.progress * 1000.0).round() / 1000.0,
        attempts: job.attempts,
        created_at: rfc3339(job.created_at),
        started_at: job.started_at.map(rfc3339),
        finished_at: job.finished_at.map(rfc3339),
        error: job.error.clone(),
        outputs: job
            .outputs
            .iter()
            .map(|o| OutputView {
                name: o.name.clone(),
                url: output_url(&job.id, &o.name),
                size: o.size,
                content_type: o.content_type.clone(),
                loudness: o.loudness,
                quality: o.quality,
                rungs: o.rungs.clone(),
            })
            .collect(),
        deleted_at: job.deleted_at.map(rfc3339),
        playable_at: job.playable_at.map(rfc3339),
        split: job
            .split_json
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok()),
        tasks: job
            .tasks
            .iter()
            .map(|t| TaskView {
                id: t.id.clone(),
                kind: t.kind.clone(),
                status: t.status.as_str().to_string(),
                progress: (t.progress * 1000.0).round() / 1000.0,
                attempts: t.attempts,
                timings: t.timings.clone(),
                ran_on: t.ran_on.clone(),
            })
            .collect(),
        metadata: spec
            .as_ref()
            .map(|s| s.metadata.clone())
            .unwrap_or_default(),
        input: Some(InputView::new(
            job.input_name.clone(),
            job.input_facts.as_ref(),
        )),
        requested_outputs: spec
            .as_ref()
            .map(crate::context::requested_outputs)
            .unwrap_or_default(),
        timings: crate::worker::timing::job_sum(
            job.tasks.iter().filter_map(|t| t.timings.as_ref()),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_764_145_200_123),
            "2025-11-26T08:20:00.123Z"
        );
    }
}
