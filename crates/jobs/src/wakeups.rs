//! Wake-ups for idle workers in other processes: Postgres `LISTEN` on [`NOTIFY_CHANNEL`].
//!
//! Every transaction that makes a task claimable at once (a new job, a released task, tasks
//! unblocked by their dependencies) sends a `NOTIFY` on commit (`postgres::notify`). A worker
//! process that listens claims at once instead of after its next poll (`4 × poll_interval_ms`,
//! 1 s by default): with separate `reelay api` and `reelay worker` processes that poll was on
//! every small job's critical path (issue 18).
//!
//! Nothing depends on a notification arriving: they are lost while the connection is down, so
//! workers keep polling as well. SQLite has no such channel; `reelay serve` (api and workers in
//! one process) wakes its slots in process instead.

use crate::postgres::NOTIFY_CHANNEL;
use crate::store::StoreError;
use sqlx::postgres::PgListener;

/// A connection listening for "work is claimable" notifications.
pub struct WorkListener {
    inner: PgListener,
}

impl std::fmt::Debug for WorkListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkListener")
    }
}

impl WorkListener {
    /// Listens on the store named by `database_url` (as [`crate::open_store`] reads it), or
    /// `None` for a store that has no notifications (SQLite).
    pub async fn connect(database_url: Option<&str>) -> Result<Option<WorkListener>, StoreError> {
        let Some(url) = database_url.filter(|u| crate::is_postgres_url(u)) else {
            return Ok(None);
        };
        let mut inner = PgListener::connect(url).await?;
        inner.listen(NOTIFY_CHANNEL).await?;
        Ok(Some(WorkListener { inner }))
    }

    /// Waits for the next notification and returns its payload (the job id). A lost connection
    /// is reconnected (and the channel listened on again) by the next call; notifications sent
    /// meanwhile are lost, which the workers' polling covers.
    pub async fn next(&mut self) -> Result<String, StoreError> {
        Ok(self.inner.recv().await?.payload().to_string())
    }
}
