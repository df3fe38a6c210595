//! [`JobStore`] on a single SQLite file.
//!
//! Every state change runs in a `BEGIN IMMEDIATE` transaction: it takes SQLite's single write
//! lock up front, so the read-check-write sequences below (claim, idempotent create, lease
//! checks) cannot interleave with another writer, whether in this process or another one.
//! Deferred transactions would instead fail with SQLITE_BUSY when upgrading a stale snapshot.

use crate::migrate::{self, SQLITE_MIGRATIONS};
use crate::model::{
    now_millis, scopes_from_column, scopes_to_column, ApiToken, CancelOutcome, Claim,
    CreateOutcome, FailOutcome, Job, Millis, NewJob, NewToken, QueueCounts, RenewOutcome,
    RevocationRow, RunningAttempt, StoredOutput,
};
use crate::shared_sql;
use crate::store::{JobStore, StoreError};
use reelay_protocol::{ErrorDetail, JobStatus};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::time::Duration;

/// Today every job is one task of this kind.
const TRANSCODE: &str = "transcode";

/// Task statuses reuse the job status words; a task's status is an internal detail, the job's
/// is what users see.
const QUEUED: &str = "queued";
const RUNNING: &str = "running";
const SUCCEEDED: &str = "succeeded";
const FAILED: &str = "failed";
const CANCELLED: &str = "cancelled";

const JOB_COLUMNS: &str = "id, cluster, status, progress, attempts, max_attempts, priority, \
     spec_json, spec_hash, input_key, input_url, idempotency_key, owner, estimated_seconds, \
     created_at, started_at, finished_at, error_code, error_message, outputs, cancel_requested";

/// Enough for a handful of api handlers and local workers; SQLite serializes writers anyway, so
/// more connections would only queue on the write lock.
const POOL_SIZE: u32 = 4;

/// How long a connection waits for the write lock before giving up with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating the file and its parent directory if missing) and migrates the database.
    ///
    /// WAL lets readers (status polls, listings) proceed while a worker writes; `synchronous =
    /// NORMAL` is durable against process crashes in WAL mode and only risks the last
    /// transactions on power loss, which the lease/retry machinery tolerates.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(sqlx::Error::Io)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// A private database that lives as long as this store, for tests.
    ///
    /// An in-memory database exists per connection, so the pool is pinned to one connection that
    /// is never recycled.
    pub async fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations; a no-op when the schema is current. `open` already calls it,
    /// this is for an explicit `reelay migrate`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrate::run(&self.pool, SQLITE_MIGRATIONS).await
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

fn millis_after(now: Millis, d: Duration) -> Millis {
    now.saturating_add(Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
}

fn to_u32(value: i64, column: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} = {value}")))
}

fn job_from_row(row: &SqliteRow) -> Result<Job, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |what: String| StoreError::Corrupt(format!("job {id}: {what}"));

    let status: String = row.try_get("status")?;
    let status = status.parse::<JobStatus>().map_err(corrupt)?;
    let error = match (
        row.try_get::<Option<String>, _>("error_code")?,
        row.try_get::<Option<String>, _>("error_message")?,
    ) {
        (Some(code), message) => Some(ErrorDetail::new(code, message.unwrap_or_default())),
        (None, _) => None,
    };
    let outputs: String = row.try_get("outputs")?;
    let outputs: Vec<StoredOutput> =
        serde_json::from_str(&outputs).map_err(|e| corrupt(format!("outputs: {e}")))?;
    let attempts = to_u32(row.try_get("attempts")?, "attempts")?;
    let max_attempts = to_u32(row.try_get("max_attempts")?, "max_attempts")?;
    let cancel_requested: i64 = row.try_get("cancel_requested")?;

    Ok(Job {
        cluster: row.try_get("cluster")?,
        status,
        progress: row.try_get("progress")?,
        attempts,
        max_attempts,
        priority: row.try_get("priority")?,
        spec_json: row.try_get("spec_json")?,
        spec_hash: row.try_get("spec_hash")?,
        input_key: row.try_get("input_key")?,
        input_url: row.try_get("input_url")?,
        idempotency_key: row.try_get("idempotency_key")?,
        owner: row.try_get("owner")?,
        estimated_seconds: row.try_get("estimated_seconds")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        error,
        outputs,
        cancel_requested: cancel_requested != 0,
        id,
    })
}

async fn fetch_job(conn: &mut SqliteConnection, id: &str) -> Result<Option<Job>, StoreError> {
    let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(job_from_row).transpose()
}

async fn fetch_existing_job(conn: &mut SqliteConnection, id: &str) -> Result<Job, StoreError> {
    fetch_job(conn, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("task refers to missing job {id}")))
}

/// The lease-relevant state of one task.
struct TaskState {
    job_id: String,
    status: String,
    attempts: i64,
    max_attempts: i64,
    lease_owner: Option<String>,
}

impl TaskState {
    /// Whether `worker_id` holds attempt `attempt`. The status is deliberately not part of it:
    /// callers distinguish "owned but cancelled" from "owned and running".
    fn owned_by(&self, worker_id: &str, attempt: u32) -> bool {
        self.lease_owner.as_deref() == Some(worker_id) && self.attempts == i64::from(attempt)
    }
}

async fn fetch_task(
    conn: &mut SqliteConnection,
    task_id: &str,
) -> Result<Option<TaskState>, StoreError> {
    let row = sqlx::query(
        "SELECT job_id, status, attempts, max_attempts, lease_owner FROM tasks WHERE id = ?",
    )
    .bind(task_id)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(TaskState {
        job_id: row.try_get("job_id")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        lease_owner: row.try_get("lease_owner")?,
    }))
}

/// The task of `task_id` if `worker_id` holds attempt `attempt` and it is still running.
async fn owned_running_task(
    conn: &mut SqliteConnection,
    task_id: &str,
    worker_id: &str,
    attempt: u32,
) -> Result<Option<TaskState>, StoreError> {
    Ok(fetch_task(conn, task_id)
        .await?
        .filter(|t| t.status == RUNNING && t.owned_by(worker_id, attempt)))
}

#[async_trait::async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, new: NewJob) -> Result<CreateOutcome, StoreError> {
        let mut tx = self.write_tx().await?;

        // Checked inside the write lock, so of two concurrent creates with one key the second
        // always sees the first; the unique index is the backstop.
        // Keys are per owner (migration 0006): another owner's use of this key is not ours.
        let owner = new.owner.as_deref().unwrap_or("");
        if let Some(key) = &new.idempotency_key {
            let existing = sqlx::query(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs \
                 WHERE cluster = ? AND COALESCE(owner, '') = ? AND idempotency_key = ?"
            ))
            .bind(&new.cluster)
            .bind(owner)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = existing {
                let job = job_from_row(&row)?;
                return if job.spec_hash == new.spec_hash {
                    Ok(CreateOutcome::Existing(job))
                } else {
                    Err(StoreError::IdempotencyConflict)
                };
            }
        }

        let now = now_millis();
        let max_attempts = i64::from(new.max_attempts.max(1));
        sqlx::query(
            "INSERT INTO jobs (id, cluster, status, progress, attempts, max_attempts, priority,
                 spec_json, spec_hash, input_key, input_url, idempotency_key, owner,
                 estimated_seconds, created_at, outputs, cancel_requested)
             VALUES (?, ?, ?, 0, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', 0)",
        )
        .bind(&new.id)
        .bind(&new.cluster)
        .bind(QUEUED)
        .bind(max_attempts)
        .bind(new.priority)
        .bind(&new.spec_json)
        .bind(&new.spec_hash)
        .bind(&new.input_key)
        .bind(&new.input_url)
        .bind(&new.idempotency_key)
        .bind(&new.owner)
        .bind(new.estimated_seconds)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let fair_seq: i64 = sqlx::query(&shared_sql::next_fair_seq("MAX"))
            .bind(owner)
            .fetch_one(&mut *tx)
            .await?
            .try_get("seq")?;
        sqlx::query(
            "INSERT INTO tasks (id, job_id, kind, status, priority, created_at, run_after,
                 attempts, max_attempts, owner, fair_seq)
             VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
        )
        .bind(format!("{}.{TRANSCODE}", new.id))
        .bind(&new.id)
        .bind(TRANSCODE)
        .bind(QUEUED)
        .bind(new.priority)
        .bind(now)
        .bind(now)
        .bind(max_attempts)
        .bind(owner)
        .bind(fair_seq)
        .execute(&mut *tx)
        .await?;

        let job = fetch_existing_job(&mut tx, &new.id).await?;
        tx.commit().await?;
        Ok(CreateOutcome::Created(job))
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        fetch_job(&mut conn, id).await
    }

    async fn list_jobs_of(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Job>, Option<String>), StoreError> {
        let limit = limit.max(1);
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
        if owner.is_some() {
            sql.push_str(" AND owner = ?");
        }
        if status.is_some() {
            sql.push_str(" AND status = ?");
        }
        if cursor.is_some() {
            sql.push_str(" AND id < ?");
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");

        let mut query = sqlx::query(&sql);
        if let Some(owner) = owner {
            query = query.bind(owner);
        }
        if let Some(status) = status {
            query = query.bind(status.as_str());
        }
        if let Some(cursor) = cursor {
            query = query.bind(cursor);
        }
        // One extra row tells whether another page exists without a COUNT.
        let rows = query
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;

        let mut jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if jobs.len() > limit as usize {
            jobs.truncate(limit as usize);
            jobs.last().map(|j| j.id.clone())
        } else {
            None
        };
        Ok((jobs, next))
    }

    async fn claim(&self, worker_id: &str, lease: Duration) -> Result<Option<Claim>, StoreError> {
        let mut tx = self.write_tx().await?;
        let now = now_millis();
        loop {
            // Two index-ordered probes instead of one OR: with an OR the planner sorts every
            // claimable row, which makes a claim O(queue depth). Orphaned tasks (expired leases,
            // never more than the worker count) go first: they were started earliest.
            let order = shared_sql::CLAIM_ORDER;
            let mut candidate = sqlx::query(&format!(
                "SELECT id, job_id, status, attempts, max_attempts FROM tasks
                 WHERE status = 'running' AND lease_expires_at <= ?1
                 {order} LIMIT 1"
            ))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if candidate.is_none() {
                candidate = sqlx::query(&format!(
                    "SELECT id, job_id, status, attempts, max_attempts FROM tasks
                     WHERE status = 'queued' AND run_after <= ?1
                     {order} LIMIT 1"
                ))
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            }
            let Some(row) = candidate else {
                // Commit rather than drop: earlier iterations may have failed lost tasks.
                tx.commit().await?;
                return Ok(None);
            };
            let task_id: String = row.try_get("id")?;
            let job_id: String = row.try_get("job_id")?;
            let status: String = row.try_get("status")?;
            let attempts: i64 = row.try_get("attempts")?;
            let max_attempts: i64 = row.try_get("max_attempts")?;

            if status == RUNNING && attempts >= max_attempts {
                let error = ErrorDetail::new(
                    "worker_lost",
                    format!(
                        "the worker running attempt {attempts} stopped renewing its lease \
                         and no attempts are left"
                    ),
                );
                sqlx::query(
                    "UPDATE tasks SET status = ?, lease_owner = NULL, lease_expires_at = NULL, claimed_at = NULL, eta_at = NULL
                     WHERE id = ?",
                )
                .bind(FAILED)
                .bind(&task_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE jobs SET status = ?, error_code = ?, error_message = ?,
                         finished_at = ?
                     WHERE id = ?",
                )
                .bind(FAILED)
                .bind(&error.code)
                .bind(&error.message)
                .bind(now)
                .bind(&job_id)
                .execute(&mut *tx)
                .await?;
                tracing::warn!(
                    job_id,
                    task_id,
                    attempts,
                    "lease expired with no attempts left; job failed"
                );
                continue;
            }

            let attempt = attempts + 1;
            let lease_expires_at = millis_after(now, lease);
            sqlx::query(
                "UPDATE tasks SET status = ?, attempts = ?, lease_owner = ?, lease_expires_at = ?,
                     claimed_at = ?, eta_at = NULL
                 WHERE id = ?",
            )
            .bind(RUNNING)
            .bind(attempt)
            .bind(worker_id)
            .bind(lease_expires_at)
            .bind(now)
            .bind(&task_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE jobs SET status = ?, attempts = ?, progress = 0,
                     started_at = COALESCE(started_at, ?)
                 WHERE id = ?",
            )
            .bind(RUNNING)
            .bind(attempt)
            .bind(now)
            .bind(&job_id)
            .execute(&mut *tx)
            .await?;
            let job = fetch_existing_job(&mut tx, &job_id).await?;
            tx.commit().await?;
            if status == RUNNING {
                tracing::info!(
                    job_id,
                    task_id,
                    attempt,
                    "took over a task whose lease expired"
                );
            }
            return Ok(Some(Claim {
                job,
                task_id,
                attempt: to_u32(attempt, "attempts")?,
                lease_expires_at,
            }));
        }
    }

    async fn renew(
        &self,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
        lease: Duration,
        progress: Option<f64>,
        eta_at: Option<Millis>,
    ) -> Result<RenewOutcome, StoreError> {
        let mut tx = self.write_tx().await?;
        let Some(task) = fetch_task(&mut tx, task_id).await? else {
            return Ok(RenewOutcome::LeaseLost);
        };
        if !task.owned_by(worker_id, attempt) {
            return Ok(RenewOutcome::LeaseLost);
        }
        match task.status.as_str() {
            RUNNING => {}
            CANCELLED => return Ok(RenewOutcome::Cancelled),
            _ => return Ok(RenewOutcome::LeaseLost),
        }
        let now = now_millis();
        sqlx::query("UPDATE tasks SET lease_expires_at = ?, eta_at = ? WHERE id = ?")
            .bind(millis_after(now, lease))
            .bind(eta_at)
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        // NaN would poison every later comparison, so it is dropped rather than stored.
        if let Some(progress) = progress.filter(|p| !p.is_nan()) {
            sqlx::query("UPDATE jobs SET progress = ? WHERE id = ?")
                .bind(progress.clamp(0.0, 1.0))
                .bind(&task.job_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(RenewOutcome::Renewed)
    }

    async fn complete(
        &self,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
        outputs: Vec<StoredOutput>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let Some(task) = owned_running_task(&mut tx, task_id, worker_id, attempt).await? else {
            return Ok(false);
        };
        let outputs = serde_json::to_string(&outputs)
            .map_err(|e| StoreError::Corrupt(format!("outputs do not serialize: {e}")))?;
        let now = now_millis();
        sqlx::query("UPDATE tasks SET status = ?, lease_expires_at = NULL, claimed_at = NULL, eta_at = NULL WHERE id = ?")
            .bind(SUCCEEDED)
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        // A retried job that finally succeeded should not show the error of an earlier attempt.
        sqlx::query(
            "UPDATE jobs SET status = ?, progress = 1, outputs = ?, finished_at = ?,
                 error_code = NULL, error_message = NULL
             WHERE id = ?",
        )
        .bind(SUCCEEDED)
        .bind(outputs)
        .bind(now)
        .bind(&task.job_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn fail(
        &self,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
        error: ErrorDetail,
        retry_after: Option<Duration>,
    ) -> Result<FailOutcome, StoreError> {
        let mut tx = self.write_tx().await?;
        let Some(task) = owned_running_task(&mut tx, task_id, worker_id, attempt).await? else {
            return Ok(FailOutcome::LeaseLost);
        };
        let now = now_millis();
        let outcome = match retry_after {
            Some(delay) if task.attempts < task.max_attempts => {
                let run_after = millis_after(now, delay);
                sqlx::query(
                    "UPDATE tasks SET status = ?, run_after = ?, lease_owner = NULL,
                         lease_expires_at = NULL, claimed_at = NULL, eta_at = NULL
                     WHERE id = ?",
                )
                .bind(QUEUED)
                .bind(run_after)
                .bind(task_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE jobs SET status = ?, progress = 0, error_code = ?, error_message = ?
                     WHERE id = ?",
                )
                .bind(QUEUED)
                .bind(&error.code)
                .bind(&error.message)
                .bind(&task.job_id)
                .execute(&mut *tx)
                .await?;
                FailOutcome::Requeued { run_after }
            }
            _ => {
                sqlx::query("UPDATE tasks SET status = ?, lease_expires_at = NULL, claimed_at = NULL, eta_at = NULL WHERE id = ?")
                    .bind(FAILED)
                    .bind(task_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE jobs SET status = ?, error_code = ?, error_message = ?,
                         finished_at = ?
                     WHERE id = ?",
                )
                .bind(FAILED)
                .bind(&error.code)
                .bind(&error.message)
                .bind(now)
                .bind(&task.job_id)
                .execute(&mut *tx)
                .await?;
                FailOutcome::Failed
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn release(
        &self,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let Some(task) = owned_running_task(&mut tx, task_id, worker_id, attempt).await? else {
            tracing::debug!(
                task_id,
                worker_id,
                attempt,
                "release of a task no longer owned ignored"
            );
            return Ok(());
        };
        let attempts = (task.attempts - 1).max(0);
        let now = now_millis();
        sqlx::query(
            "UPDATE tasks SET status = ?, attempts = ?, run_after = ?, lease_owner = NULL,
                 lease_expires_at = NULL, claimed_at = NULL, eta_at = NULL
             WHERE id = ?",
        )
        .bind(QUEUED)
        .bind(attempts)
        .bind(now)
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        // With no attempt left on record the job has, as far as users are concerned, not started.
        sqlx::query(
            "UPDATE jobs SET status = ?, attempts = ?, progress = 0,
                 started_at = CASE WHEN ? = 0 THEN NULL ELSE started_at END
             WHERE id = ?",
        )
        .bind(QUEUED)
        .bind(attempts)
        .bind(attempts)
        .bind(&task.job_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn cancel(&self, id: &str) -> Result<CancelOutcome, StoreError> {
        let mut tx = self.write_tx().await?;
        let Some(job) = fetch_job(&mut tx, id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        if job.status.is_terminal() {
            return Ok(CancelOutcome::AlreadyFinished(job));
        }
        let now = now_millis();
        // The lease owner is kept on purpose: it is how renew recognises the worker that must
        // be told "cancelled" rather than "lease lost".
        sqlx::query(
            "UPDATE tasks SET status = ?, lease_expires_at = NULL, claimed_at = NULL, eta_at = NULL
             WHERE job_id = ? AND status IN ('queued', 'running')",
        )
        .bind(CANCELLED)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET status = ?, finished_at = ?, cancel_requested = 1 WHERE id = ?",
        )
        .bind(CANCELLED)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let job = fetch_existing_job(&mut tx, id).await?;
        tx.commit().await?;
        Ok(CancelOutcome::Cancelled(job))
    }

    async fn counts(&self) -> Result<QueueCounts, StoreError> {
        // TOTAL (unlike SUM) is 0.0 rather than NULL over no rows.
        let row = sqlx::query(
            "SELECT
                 COALESCE(SUM(status = 'queued'), 0) AS queued,
                 COALESCE(SUM(status = 'running'), 0) AS running,
                 TOTAL(CASE WHEN status = 'queued' THEN estimated_seconds END) AS queued_seconds
             FROM jobs WHERE status IN ('queued', 'running')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueCounts {
            queued: to_u32(row.try_get("queued")?, "queued count")?,
            running: to_u32(row.try_get("running")?, "running count")?,
            queued_estimated_seconds: row.try_get("queued_seconds")?,
        })
    }

    async fn running_attempts(&self) -> Result<Vec<RunningAttempt>, StoreError> {
        let rows = sqlx::query(shared_sql::RUNNING_ATTEMPTS)
            .bind(RUNNING)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(running_attempt).collect()
    }

    async fn heartbeat(
        &self,
        worker_id: &str,
        slots: u32,
        ttl: Duration,
        speed: Option<f64>,
    ) -> Result<(), StoreError> {
        let now = now_millis();
        let expires = now.saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64);
        let speed = speed.filter(|s| s.is_finite() && *s > 0.0);
        sqlx::query(shared_sql::HEARTBEAT)
            .bind(worker_id)
            .bind(i64::from(slots))
            .bind(expires)
            .bind(speed)
            .execute(&self.pool)
            .await?;
        // Dropping expired rows here keeps the table the size of the fleet.
        sqlx::query(shared_sql::FORGET_OLD_WORKERS)
            .bind(now - 3_600_000)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn deregister(&self, worker_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(worker_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn live_capacity(&self) -> Result<u32, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(slots), 0) AS total FROM workers WHERE expires_at >= $1",
        )
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await?;
        let total: i64 = row.try_get("total")?;
        Ok(u32::try_from(total.max(0)).unwrap_or(u32::MAX))
    }

    async fn live_speed(&self) -> Result<Option<f64>, StoreError> {
        let row = sqlx::query(shared_sql::LIVE_SPEED)
            .bind(now_millis())
            .fetch_one(&self.pool)
            .await?;
        let speed: Option<f64> = row.try_get("speed")?;
        Ok(speed.filter(|s| s.is_finite() && *s > 0.0))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_token(&self, new: NewToken) -> Result<ApiToken, StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, secret_hash, scopes, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&new.id)
        .bind(&new.name)
        .bind(&new.secret_hash)
        .bind(scopes_to_column(&new.scopes))
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        self.get_token(&new.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("token {} vanished", new.id)))
    }

    async fn get_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now_millis())
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_token(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ?")
            .bind(now_millis())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn any_tokens(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM api_tokens) AS present")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<bool, _>("present")?)
    }

    async fn add_revocation(&self, token_id: &str, revoked_at: Millis) -> Result<bool, StoreError> {
        let done = sqlx::query(shared_sql::ADD_REVOCATION)
            .bind(token_id)
            .bind(revoked_at)
            .bind(now_millis())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn revocations_since(
        &self,
        after: i64,
        recent_since: Millis,
        limit: u32,
    ) -> Result<Vec<RevocationRow>, StoreError> {
        let recent = sqlx::query(shared_sql::REVOCATIONS_RECENT)
            .bind(after)
            .bind(recent_since)
            .fetch_all(&self.pool)
            .await?;
        let next = sqlx::query(shared_sql::REVOCATIONS_AFTER)
            .bind(after)
            .bind(i64::from(limit.max(1)))
            .fetch_all(&self.pool)
            .await?;
        recent
            .iter()
            .chain(&next)
            .map(revocation_from_row)
            .collect()
    }
}

fn revocation_from_row(row: &SqliteRow) -> Result<RevocationRow, StoreError> {
    Ok(RevocationRow {
        seq: row.try_get("seq")?,
        token_id: row.try_get("token_id")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const TOKEN_COLUMNS: &str = "id, name, secret_hash, scopes, created_at, last_used_at, revoked_at";

fn token_from_row(row: &SqliteRow) -> Result<ApiToken, StoreError> {
    let scopes: String = row.try_get("scopes")?;
    Ok(ApiToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        scopes: scopes_from_column(&scopes),
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// A row of the running-attempts query; a task claimed before `claimed_at` existed counts as
/// claimed now.
fn running_attempt(row: &sqlx::sqlite::SqliteRow) -> Result<RunningAttempt, StoreError> {
    let claimed_at: Option<Millis> = row.try_get("claimed_at")?;
    Ok(RunningAttempt {
        estimated_seconds: row.try_get("estimated_seconds")?,
        claimed_at: claimed_at.unwrap_or_else(now_millis),
        eta_at: row.try_get("eta_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsuite::{self, new_job};
    use std::sync::Arc;
    use tempfile::TempDir;

    async fn fresh() -> (TempDir, Arc<dyn JobStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("jobs.db"))
            .await
            .expect("open");
        (dir, Arc::new(store))
    }

    crate::job_store_suite!(fresh);

    async fn migration_count(store: &SqliteStore) -> i64 {
        sqlx::query("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(&store.pool)
            .await
            .and_then(|row| row.try_get(0))
            .expect("count migrations")
    }

    #[tokio::test]
    async fn reopening_keeps_everything_and_migrations_are_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/deeper/jobs.db");
        let store = SqliteStore::open(&path)
            .await
            .expect("open creates parents");
        let job = match store.create_job(new_job("test")).await.expect("create") {
            CreateOutcome::Created(job) => job,
            other => panic!("{other:?}"),
        };
        let claim = store
            .claim("w", Duration::from_secs(60))
            .await
            .expect("claim")
            .expect("claimable");
        store
            .renew(
                &claim.task_id,
                "w",
                1,
                Duration::from_secs(60),
                Some(0.5),
                None,
            )
            .await
            .expect("renew");
        let before = store.get_job(&job.id).await.expect("get").expect("job");
        store.migrate().await.expect("migrate again");
        assert_eq!(
            migration_count(&store).await,
            SQLITE_MIGRATIONS.len() as i64
        );
        store.pool.close().await;

        let reopened = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(
            migration_count(&reopened).await,
            SQLITE_MIGRATIONS.len() as i64
        );
        assert_eq!(
            reopened.get_job(&job.id).await.expect("get").expect("job"),
            before
        );
        // The lease survived too: the worker can carry on where it was.
        assert_eq!(
            reopened
                .renew(&claim.task_id, "w", 1, Duration::from_secs(60), None, None)
                .await
                .expect("renew"),
            RenewOutcome::Renewed
        );
        assert!(reopened
            .complete(&claim.task_id, "w", 1, vec![])
            .await
            .expect("complete"));
    }

    #[tokio::test]
    async fn refuses_a_schema_newer_than_the_build() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.db");
        let store = SqliteStore::open(&path).await.expect("open");
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
        )
        .execute(&store.pool)
        .await
        .expect("insert");
        store.pool.close().await;
        assert!(matches!(
            SqliteStore::open(&path).await,
            Err(StoreError::Migration(_))
        ));
    }

    /// Migrations 0006 and 0007 on a database with jobs: owners are copied to the tasks, the
    /// old jobs keep their place and their keys.
    #[tokio::test]
    async fn upgrading_from_schema_4_keeps_jobs_keys_and_order() {
        // A fresh in-memory database migrated only as far as schema 4.
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .expect("pool");
        migrate::run(&pool, &SQLITE_MIGRATIONS[..4])
            .await
            .expect("migrate to 4");
        for sql in testsuite::SCHEMA_4_ROWS {
            sqlx::query(sql).execute(&pool).await.expect(sql);
        }
        let store = SqliteStore { pool };
        store.migrate().await.expect("upgrade");
        let owners: Vec<(String, String)> =
            sqlx::query_as("SELECT id, owner FROM tasks ORDER BY id")
                .fetch_all(&store.pool)
                .await
                .expect("owners");
        assert_eq!(
            owners,
            vec![
                ("other.0002.transcode".into(), "bob".into()),
                ("test.0001.transcode".into(), "alice".into())
            ]
        );
        testsuite::upgraded_from_schema_4(&store).await;
    }

    #[tokio::test]
    async fn journal_mode_is_wal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("jobs.db"))
            .await
            .expect("open");
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .and_then(|row| row.try_get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn in_memory_store_works() {
        let store = SqliteStore::open_in_memory().await.expect("open");
        testsuite::claim_order(&store).await;
        let store = SqliteStore::open_in_memory().await.expect("open");
        testsuite::cancel(&store).await;
    }
}
