//! Removes a job's intermediate files (split pieces, encoded ranges, audio tracks) once the job
//! ends, whatever the outcome: it follows the `job_events` log, the one seam every job status
//! change goes through, and deletes [`super::intermediate_prefix`] for each `succeeded`,
//! `failed` or `cancelled` event.
//!
//! A succeeded job whose HLS was served progressively (`playable_at`) keeps them a grace period
//! ([`reelay_media::split::plan::vod_grace_seconds`]: twice its longest HLS target duration
//! plus `split.vod_grace_margin_seconds`) after the event: a player still on the `EVENT`
//! playlist may have resolved a segment to its intermediate key just before the job ended, and
//! must still read it; by its next reload the `VOD` playlist names the same segment at the same
//! URL, served from the outputs. Failed and cancelled jobs have nothing to play on: at once.
//!
//! Every worker process runs one; deletes are idempotent, so several may sweep the same job. A
//! task still running when its job ends learns it at its next lease renewal and removes its own
//! attempt's files (the worker loop's stop path), so nothing written after the sweep stays.
//! Deletes waiting out their grace are kept in memory: a worker that restarts reads the log
//! from the start again and finds them due (or not yet) from the event's time.

use crate::state::AppState;
use std::time::Duration;

const TERMINAL: [&str; 3] = ["succeeded", "failed", "cancelled"];
const PAGE: u32 = 500;

/// Sweeps from the start of the log, then follows it every `every`, until `stop` is cancelled.
pub async fn sweep_intermediates(
    st: AppState,
    every: Duration,
    stop: reelay_media::CancellationToken,
) {
    let mut after = 0i64;
    // (due at, job id): succeeded jobs served progressively, deleted once due.
    let mut waiting: Vec<(reelay_jobs::Millis, String)> = vec![];
    loop {
        loop {
            match st.store.events_after(after, PAGE).await {
                Ok(events) => {
                    let full = events.len() as u32 == PAGE;
                    for e in events {
                        after = after.max(e.id);
                        if TERMINAL.contains(&e.kind.as_str()) {
                            let due = e.at.saturating_add(grace_ms(&st, &e).await);
                            waiting.push((due, e.job_id));
                        }
                    }
                    if !full {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading job events failed");
                    break;
                }
            }
        }
        let now = reelay_jobs::now_millis();
        let mut kept = vec![];
        for (due, job_id) in std::mem::take(&mut waiting) {
            if due > now {
                kept.push((due, job_id));
                continue;
            }
            let prefix = super::intermediate_prefix(&job_id);
            if let Err(err) = st.storage.delete_prefix(&prefix).await {
                tracing::warn!(job_id = %job_id, error = %err, "could not remove intermediates; retrying at the next sweep");
                kept.push((now, job_id));
            }
        }
        waiting = kept;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// How long after the event `e` ended its job the intermediates stay: the VOD grace for a
/// succeeded job whose HLS was playable early, nothing otherwise (or when the job no longer
/// reads: it was deleted, and its files with it).
async fn grace_ms(st: &AppState, e: &reelay_jobs::JobEvent) -> i64 {
    // Long past any grace (restarts read the log from the start): no need to look the job up.
    const LONG_AGO_MS: i64 = 2 * 3600 * 1000;
    if e.kind != "succeeded" || reelay_jobs::now_millis() - e.at > LONG_AGO_MS {
        return 0;
    }
    let job = match st.store.get_job(&e.job_id).await {
        Ok(Some(job)) if job.playable_at.is_some() => job,
        _ => return 0,
    };
    let renditions = serde_json::from_str::<reelay_protocol::JobSpec>(&job.spec_json)
        .ok()
        .and_then(|spec| reelay_media::resolve_outputs(&spec.outputs).ok())
        .unwrap_or_default();
    let seconds = reelay_media::split::plan::vod_grace_seconds(&renditions, st.cfg.split);
    i64::from(seconds) * 1000
}
