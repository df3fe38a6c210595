//! Prometheus metrics. The recorder is process-global, so it is installed once and shared.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

pub const SUBMITTED: &str = "reelay_jobs_submitted_total";
pub const FINISHED: &str = "reelay_jobs_finished_total";
pub const FAILED_BY_CODE: &str = "reelay_jobs_failed_total";
pub const JOB_SECONDS: &str = "reelay_job_duration_seconds";
pub const ENCODE_SPEED: &str = "reelay_encode_speed_ratio";
pub const TASK_PHASE_SECONDS: &str = "reelay_task_phase_seconds";
pub const SUBMIT_PHASE_SECONDS: &str = "reelay_submit_phase_seconds";
pub const OUTPUT_PSNR: &str = "reelay_output_psnr_db";
pub const OUTPUT_SSIM: &str = "reelay_output_ssim";
pub const QUEUE_DEPTH: &str = "reelay_queue_depth";
pub const RUNNING: &str = "reelay_jobs_running";
pub const BACKLOG: &str = "reelay_backlog_seconds";
pub const CAPACITY: &str = "reelay_worker_slots";
pub const HTTP_REQUESTS: &str = "reelay_http_requests_total";
pub const HTTP_SECONDS: &str = "reelay_http_request_duration_seconds";
pub const CONNECTIONS_REFUSED: &str = "reelay_http_connections_refused_total";
pub const PEER_TASKS: &str = "reelay_peer_tasks_total";
pub const REMOTE_TASKS: &str = "reelay_remote_tasks_total";
pub const STEAL_ASKS: &str = "reelay_steal_asks_total";

pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(JOB_SECONDS.into()),
                    &[
                        1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(ENCODE_SPEED.into()),
                        &[0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(OUTPUT_PSNR.into()),
                        &[20.0, 25.0, 30.0, 33.0, 36.0, 39.0, 42.0, 45.0, 50.0, 60.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(OUTPUT_SSIM.into()),
                        &[0.5, 0.7, 0.8, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(TASK_PHASE_SECONDS.into()),
                        &[
                            0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
                            300.0, 1800.0,
                        ],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(SUBMIT_PHASE_SECONDS.into()),
                        &[
                            0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
                            300.0, 1800.0,
                        ],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(HTTP_SECONDS.into()),
                        &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0],
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embedding several servers).
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(SUBMITTED, "Jobs accepted, by first output preset");
    metrics::describe_counter!(
        FINISHED,
        "Jobs that reached a terminal status, by status and preset"
    );
    metrics::describe_histogram!(
        JOB_SECONDS,
        "Wall time from claim to finish of successful jobs"
    );
    metrics::describe_histogram!(
        ENCODE_SPEED,
        "Seconds of media encoded per second of wall time"
    );
    metrics::describe_histogram!(
        TASK_PHASE_SECONDS,
        "Seconds each phase of a task took (claim, fetch, probe, analyse, encode, receipt, \
         publish, complete), by phase and task kind"
    );
    metrics::describe_histogram!(
        SUBMIT_PHASE_SECONDS,
        "Seconds each phase of a multipart submission took (receive, probe, store_input, \
         store_extras, insert), by phase"
    );
    metrics::describe_histogram!(
        OUTPUT_PSNR,
        "PSNR of video file outputs against their scaled source (dB), by container"
    );
    metrics::describe_histogram!(
        OUTPUT_SSIM,
        "SSIM of video file outputs against their scaled source, by container"
    );
    metrics::describe_counter!(FAILED_BY_CODE, "Jobs that failed for good, by error code");
    metrics::describe_gauge!(QUEUE_DEPTH, "Jobs waiting to be claimed");
    metrics::describe_gauge!(RUNNING, "Jobs being encoded");
    metrics::describe_gauge!(BACKLOG, "Estimated seconds of queued work per job slot");
    metrics::describe_gauge!(CAPACITY, "Job slots of the live workers of this cluster");
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by method, route and status");
    metrics::describe_histogram!(HTTP_SECONDS, "HTTP request latency by route");
    metrics::describe_counter!(
        CONNECTIONS_REFUSED,
        "Requests and connections turned away because their client held too many connections"
    );
    metrics::describe_counter!(
        PEER_TASKS,
        "Remote claim, as the owner: tasks handed to a peer's worker and what came back, by \
         event (claimed, completed, failed, requeued, released, lease_lost)"
    );
    metrics::describe_counter!(
        REMOTE_TASKS,
        "Remote claim, as the peer: tasks of another cluster this cluster's workers ran, by \
         outcome (completed, failed, released, stopped, lease_lost, error)"
    );
    metrics::describe_counter!(
        STEAL_ASKS,
        "Work stealing, as the thief: an idle slot's asks for a peer's task, by outcome \
         (claimed, stay: the edge said take nothing, nothing: the peer had none, gone: the \
         chosen task was taken meanwhile, edge_error, claim_error)"
    );
    // Refusals are rare: the series exist from the start (at 0), so rate() and alerts on them
    // see a value instead of nothing.
    for answer in ["429", "closed"] {
        metrics::counter!(CONNECTIONS_REFUSED, "answer" => answer).increment(0);
    }
    // So are remote claims (none at all without `[steal]` peers).
    for event in [
        "claimed",
        "completed",
        "failed",
        "requeued",
        "released",
        "lease_lost",
    ] {
        metrics::counter!(PEER_TASKS, "event" => event).increment(0);
    }
    for outcome in [
        "completed",
        "failed",
        "released",
        "stopped",
        "lease_lost",
        "error",
    ] {
        metrics::counter!(REMOTE_TASKS, "outcome" => outcome).increment(0);
    }
    for outcome in [
        "claimed",
        "stay",
        "nothing",
        "gone",
        "edge_error",
        "claim_error",
    ] {
        metrics::counter!(STEAL_ASKS, "outcome" => outcome).increment(0);
    }
}
