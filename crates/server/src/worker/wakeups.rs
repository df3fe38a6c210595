//! Idle slots wake when another process makes work claimable (Postgres `LISTEN`), not only
//! after their poll interval.
//!
//! With `reelay api` and `reelay worker` as separate processes the api's in-process wake
//! (`AppState::wake`, rung on every job it creates) cannot reach the workers; each idle slot
//! waited up to `4 × poll_interval_ms` (1 s by default) before it saw a new job, on every small
//! job's critical path (issue 18). The store's `NOTIFY` on commit reaches them at once. Polling
//! stays: notifications are lost while the listening connection is down.

use crate::state::AppState;
use reelay_jobs::WorkListener;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long to wait before listening again after the connection failed to come back.
const RETRY: Duration = Duration::from_secs(2);

/// Rings `st.wake` on every notification until `stop`; returns at once for a store without
/// notifications (SQLite).
pub(super) async fn run(st: AppState, stop: CancellationToken) {
    let url = st.cfg.database_url.clone();
    let mut listener: Option<WorkListener> = None;
    loop {
        let l = match listener.as_mut() {
            Some(l) => l,
            None => match WorkListener::connect(url.as_deref()).await {
                Ok(Some(l)) => {
                    tracing::debug!("listening for claimable work");
                    listener.insert(l)
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for new work; polling only for now");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => continue,
                        _ = stop.cancelled() => return,
                    }
                }
            },
        };
        tokio::select! {
            got = l.next() => match got {
                Ok(job_id) => {
                    tracing::trace!(job_id, "work claimable");
                    st.wake.notify_waiters();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the work notifications; polling only for now");
                    listener = None;
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            },
            _ = stop.cancelled() => return,
        }
    }
}
