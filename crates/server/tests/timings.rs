//! Where a job's time went (issue 18), as a user and an operator see it: a real job over HTTP
//! (real ffmpeg, SQLite, local storage), its view's `timings` per task and for the job, and the
//! `reelay_task_phase_seconds` histogram on /metrics.

mod common;

use common::*;
use std::time::Duration;

fn millis(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .timestamp_millis()
}

#[tokio::test]
async fn a_finished_job_shows_where_its_time_went() {
    let s = TestServer::start().await;
    let clip = clip(s.dir.path(), "in.mp4", 320, 240, 2.0, true);
    let j = s
        .succeeded(&clip, r#"{"outputs":[{"preset":"mp4-360p"}]}"#)
        .await;

    // The wire form: `timings` objects on the task and on the job.
    let raw: serde_json::Value = s.get_json(&format!("/v1/jobs/{}", j.id)).await;
    assert!(raw["timings"].is_object(), "{raw}");
    assert!(raw["tasks"][0]["timings"].is_object(), "{raw}");

    assert_eq!(j.tasks.len(), 1, "{j:?}");
    let task = j.tasks[0].timings.as_ref().expect("the task's timings");
    let phases: Vec<&str> = task.keys().map(String::as_str).collect();
    // No loudness asked: no `analyse` phase. The receipt phase is there (a 2 s input gets a
    // quality receipt by default), and the output really has one.
    assert_eq!(
        phases,
        vec!["claim", "encode", "fetch", "probe", "publish", "receipt"],
        "{task:?}"
    );
    assert!(j.outputs[0].quality.is_some(), "{j:?}");
    for (phase, secs) in task {
        assert!(secs.is_finite() && *secs >= 0.0, "{phase}: {secs}");
    }
    // The encode is real work (ffmpeg on 50 frames): it cannot have taken no time.
    assert!(task["encode"] > 0.0, "{task:?}");

    // Phases are sequential parts of the attempt: together no longer than the job's life.
    let wall = (millis(j.finished_at.as_deref().unwrap()) - millis(&j.created_at)) as f64 / 1000.0;
    let sum: f64 = task.values().sum();
    // Each phase is rounded to the millisecond, the timestamps are whole milliseconds.
    assert!(
        sum <= wall + 0.001 * (task.len() as f64 + 2.0),
        "phases add up to {sum} s, the job lasted {wall} s: {task:?}"
    );

    // One task: the job's sum is that task's timings.
    assert_eq!(j.timings.as_ref(), Some(task));

    // The operator's view of the same phases. `complete` is timed after the completing write
    // returns, so it may land just after the job reads as succeeded.
    let mut missing = vec![];
    for _ in 0..50 {
        let (status, metrics) = s.get_bytes("/metrics").await;
        assert_eq!(status, 200);
        let metrics = String::from_utf8(metrics).unwrap();
        missing = [
            "claim", "fetch", "probe", "encode", "receipt", "publish", "complete",
        ]
        .into_iter()
        .filter(|phase| !counted(&metrics, phase))
        .collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        missing.is_empty(),
        "phases never counted on /metrics: {missing:?}"
    );
}

/// Whether /metrics counts at least one `phase` of a transcode task.
fn counted(metrics: &str, phase: &str) -> bool {
    let ph = format!("phase=\"{phase}\"");
    metrics.lines().any(|l| {
        l.starts_with("reelay_task_phase_seconds_count{")
            && l.contains("kind=\"transcode\"")
            && l.contains(&ph)
            && l.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()) >= Some(1.0)
    })
}

#[tokio::test]
async fn a_queued_job_has_no_timings_yet() {
    // No workers: the job stays queued, and nothing pretends to have been measured.
    let s = TestServer::start_with(|c| c.workers = 0).await;
    let clip = clip(s.dir.path(), "in.mp4", 160, 120, 1.0, false);
    let j = s
        .submit_ok(&clip, r#"{"outputs":[{"preset":"mp4-360p"}]}"#)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let raw: serde_json::Value = s.get_json(&format!("/v1/jobs/{}", j.id)).await;
    assert_eq!(raw["status"], "queued", "{raw}");
    assert!(raw.get("timings").is_none(), "{raw}");
    assert!(raw["tasks"][0].get("timings").is_none(), "{raw}");
}
