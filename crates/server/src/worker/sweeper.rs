//! Removes a job's intermediate files (split pieces, encoded ranges, audio tracks) once the job
//! ends, whatever the outcome: it follows the `job_events` log, the one seam every job status
//! change goes through, and deletes [`super::intermediate_prefix`] for each `succeeded`,
//! `failed` or `cancelled` event.
//!
//! Every worker process runs one; deletes are idempotent, so several may sweep the same job. A
//! task still running when its job ends learns it at its next lease renewal and removes its own
//! attempt's files (the worker loop's stop path), so nothing written after the sweep stays.

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
    loop {
        loop {
            match st.store.events_after(after, PAGE).await {
                Ok(events) => {
                    let full = events.len() as u32 == PAGE;
                    for e in events {
                        after = after.max(e.id);
                        if TERMINAL.contains(&e.kind.as_str()) {
                            let prefix = super::intermediate_prefix(&e.job_id);
                            if let Err(err) = st.storage.delete_prefix(&prefix).await {
                                tracing::warn!(job_id = %e.job_id, error = %err, "could not remove intermediates; retrying at the next sweep");
                            }
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
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}
