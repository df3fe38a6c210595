//! [`JobStore`] on Postgres, for several api and worker processes on several machines.
//!
//! It behaves exactly like [`SqliteStore`](crate::SqliteStore) (both run the same `testsuite`);
//! only the way concurrent writers are kept apart differs. SQLite has one write lock for the
//! whole file; here every state change locks just the rows it reads before deciding:
//!
//! * `claim` picks its candidate with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never
//!   wait on, nor both take, the same task;
//! * `renew`, `complete`, `fail` and `release` lock their task row (`FOR UPDATE`) before checking
//!   the lease, so a takeover or a cancel cannot slip in between check and write;
//! * `cancel` locks the job's task rows, then the job row.
//!
//! Rows are always locked task first, then job, so these transactions cannot deadlock. And every
//! path ends its transaction explicitly, also when nothing changed (see `unchanged`).
//!
//! Times are the caller's wall clock ([`now_millis`]), not the database's `now()`, so both
//! backends share one notion of time. The price: lease expiry compares one process's clock with
//! another's, so machines whose clocks disagree by more than a small part of the lease length
//! (keep them NTP-synced) take over leases early or late. Skew never gives two workers the same
//! lease, though: the owner is one column changed under the row lock, and a worker that was
//! overtaken learns it from its next renew.

use crate::migrate::{self, POSTGRES_MIGRATIONS};
use crate::model::{
    now_millis, scopes_from_column, scopes_to_column, ApiToken, CancelOutcome, Claim,
    CreateOutcome, FailOutcome, Job, Millis, NewJob, NewToken, QueueCounts, RenewOutcome,
    RevocationRow, RunningAttempt, StoredOutput,
};
use crate::shared_sql;
use crate::store::{JobStore, StoreError};
use reelay_protocol::{ErrorDetail, JobStatus};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use std::time::Duration;

/// Channel on which a `NOTIFY` (payload: the job id) is sent whenever a task becomes claimable at
/// once: a new job, or a released task. Workers may `LISTEN` on it to claim without waiting for
/// their next poll; nothing depends on it, because notifications are lost while nobody listens.
pub const NOTIFY_CHANNEL: &str = "reelay_jobs";

/// Today every job is one task of this kind.
const TRANSCODE: &str = "transcode";

/// Task statuses reuse the job status words (see `sqlite.rs`).
const QUEUED: &str = "queued";
const RUNNING: &str = "running";
const SUCCEEDED: &str = "succeeded";
const FAILED: &str = "failed";
const CANCELLED: &str = "cancelled";

const JOB_COLUMNS: &str = "id, cluster, status, progress, attempts, max_attempts, priority, \
     spec_json, spec_hash, input_key, input_url, idempotency_key, owner, estimated_seconds, \
     created_at, started_at, finished_at, error_code, error_message, outputs, cancel_requested";

/// Per process. Unlike SQLite, writers run in parallel, so more connections do help; but every
/// api and worker process has its own pool and Postgres' default `max_connections` is 100.
const POOL_SIZE: u32 = 10;

/// How long a query waits for a connection (including reconnecting to a restarted server)
/// before it fails with [`StoreError::Database`]: long enough to ride out a quick restart or
/// failover, short enough that /readyz reports an outage.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and migrates, like [`SqliteStore::open`](crate::SqliteStore::open).
    ///
    /// `url` is a libpq-style `postgres://user:password@host:port/database?options` URL. An
    /// unreachable server or refused login is a [`StoreError::Database`]. The pool checks each
    /// idle connection before handing it out and replaces dead ones, so the store carries on by
    /// itself after the server restarts; calls made while it is down fail after 10 s.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        Self::connect_with(url, ACQUIRE_TIMEOUT).await
    }

    pub(crate) async fn connect_with(
        url: &str,
        acquire_timeout: Duration,
    ) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(acquire_timeout)
            // The default already; spelled out because reconnecting after a restart relies on it.
            .test_before_acquire(true)
            .connect(url)
            .await?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations; a no-op when the schema is current, and safe to run from
    /// several processes at once (they take turns on an advisory lock). `connect` already calls
    /// it, this is for an explicit `reelay migrate`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrate::run_postgres(&self.pool, POSTGRES_MIGRATIONS).await
    }
}

/// Ends a transaction that changed nothing and returns `value`.
///
/// Dropping the transaction would roll it back too, but sqlx only queues that ROLLBACK and sends
/// it when the connection is next used or its return to the pool is processed; until then the
/// server keeps the row locks this transaction took. A worker's claim right after a `LeaseLost`
/// renew would then skip (SKIP LOCKED) a task that is free.
async fn unchanged<T>(tx: Transaction<'_, Postgres>, value: T) -> Result<T, StoreError> {
    tx.rollback().await?;
    Ok(value)
}

fn millis_after(now: Millis, d: Duration) -> Millis {
    now.saturating_add(Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
}

fn to_u32(value: i64, column: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} = {value}")))
}

/// Postgres text cannot hold NUL, which SQLite stores happily. Error messages are the one field
/// that may carry arbitrary bytes (tool output); refusing them would leave the job running until
/// its lease expires, so the NUL is replaced instead.
fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}

fn job_from_row(row: &PgRow) -> Result<Job, StoreError> {
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
        cancel_requested: row.try_get("cancel_requested")?,
        id,
    })
}

/// `lock` is `""` or a locking clause such as `" FOR UPDATE"`.
async fn fetch_job(
    conn: &mut PgConnection,
    id: &str,
    lock: &str,
) -> Result<Option<Job>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1{lock}"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(job_from_row).transpose()
}

async fn fetch_existing_job(conn: &mut PgConnection, id: &str) -> Result<Job, StoreError> {
    fetch_job(conn, id, "")
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("task refers to missing job {id}")))
}

/// The job that `owner` ('' for none) created with idempotency key `key` (keys are per owner,
/// migration 0006).
async fn fetch_job_by_key(
    conn: &mut PgConnection,
    cluster: &str,
    owner: &str,
    key: &str,
) -> Result<Option<Job>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs \
         WHERE cluster = $1 AND COALESCE(owner, '') = $2 AND idempotency_key = $3"
    ))
    .bind(cluster)
    .bind(owner)
    .bind(key)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(job_from_row).transpose()
}

/// Existing job for a reused key: the same one for the same spec, a conflict otherwise.
fn reuse(existing: Job, spec_hash: &str) -> Result<CreateOutcome, StoreError> {
    if existing.spec_hash == spec_hash {
        Ok(CreateOutcome::Existing(existing))
    } else {
        Err(StoreError::IdempotencyConflict)
    }
}

async fn notify(conn: &mut PgConnection, job_id: &str) -> Result<(), StoreError> {
    // Inside the caller's transaction: delivered on commit, dropped on rollback.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(job_id)
        .execute(conn)
        .await?;
    Ok(())
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

/// Reads the task and locks it until the end of the transaction: every decision based on the
/// lease must still hold when it is written.
async fn lock_task(
    conn: &mut PgConnection,
    task_id: &str,
) -> Result<Option<TaskState>, StoreError> {
    let row = sqlx::query(
        "SELECT job_id, status, attempts, max_attempts, lease_owner FROM tasks WHERE id = $1
         FOR UPDATE",
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

/// The task of `task_id`, locked, if `worker_id` holds attempt `attempt` and it is still running.
async fn owned_running_task(
    conn: &mut PgConnection,
    task_id: &str,
    worker_id: &str,
    attempt: u32,
) -> Result<Option<TaskState>, StoreError> {
    Ok(lock_task(conn, task_id)
        .await?
        .filter(|t| t.status == RUNNING && t.owned_by(worker_id, attempt)))
}

#[async_trait::async_trait]
impl JobStore for PgStore {
    async fn create_job(&self, new: NewJob) -> Result<CreateOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;

        // The common retry case, answered without attempting an insert.
        let owner = new.owner.as_deref().unwrap_or("");
        if let Some(key) = &new.idempotency_key {
            if let Some(existing) = fetch_job_by_key(&mut tx, &new.cluster, owner, key).await? {
                tx.rollback().await?;
                return reuse(existing, &new.spec_hash);
            }
        }

        let now = now_millis();
        let max_attempts = i64::from(new.max_attempts.max(1));
        // A concurrent create with the same key that commits first makes this insert a no-op
        // (it waits for that transaction rather than failing), so exactly one caller creates.
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, cluster, status, progress, attempts, max_attempts, priority,
                 spec_json, spec_hash, input_key, input_url, idempotency_key, owner,
                 estimated_seconds, created_at, outputs, cancel_requested)
             VALUES ($1, $2, $3, 0, 0, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, '[]', FALSE)
             ON CONFLICT (cluster, (COALESCE(owner, '')), idempotency_key)
                 WHERE idempotency_key IS NOT NULL
             DO NOTHING",
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
        .await?
        .rows_affected();
        if inserted == 0 {
            // Only the idempotency index is an arbiter, so there is a key and its winner is
            // committed: in READ COMMITTED this new statement sees it.
            let existing = match &new.idempotency_key {
                Some(key) => fetch_job_by_key(&mut tx, &new.cluster, owner, key).await?,
                None => None,
            };
            tx.rollback().await?;
            return match existing {
                Some(existing) => reuse(existing, &new.spec_hash),
                None => Err(StoreError::Corrupt(format!(
                    "insert of job {} skipped but no job holds its idempotency key",
                    new.id
                ))),
            };
        }
        // Two creates of one owner at once may read the same last number and tie; ties fall
        // back to age, so that costs exactness of the turns, never correctness.
        let fair_seq: i64 = sqlx::query(&shared_sql::next_fair_seq("GREATEST"))
            .bind(owner)
            .fetch_one(&mut *tx)
            .await?
            .try_get("seq")?;
        sqlx::query(
            "INSERT INTO tasks (id, job_id, kind, status, priority, created_at, run_after,
                 attempts, max_attempts, owner, fair_seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10)",
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
        notify(&mut tx, &new.id).await?;
        tx.commit().await?;
        Ok(CreateOutcome::Created(job))
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        fetch_job(&mut conn, id, "").await
    }

    async fn list_jobs_of(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Job>, Option<String>), StoreError> {
        let limit = limit.max(1);
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE TRUE");
        let mut param = 0;
        let mut next_param = || {
            param += 1;
            param
        };
        if owner.is_some() {
            sql.push_str(&format!(" AND owner = ${}", next_param()));
        }
        if status.is_some() {
            sql.push_str(&format!(" AND status = ${}", next_param()));
        }
        if cursor.is_some() {
            sql.push_str(&format!(" AND id < ${}", next_param()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", next_param()));

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
        let mut tx = self.pool.begin().await?;
        let now = now_millis();
        loop {
            // SKIP LOCKED: a task another claimer (or a renew, complete, ...) holds right now is
            // passed over rather than waited for. A row that changed since this statement's
            // snapshot is re-checked against the WHERE clause once locked, so a lease renewed
            // meanwhile is not taken over.
            //
            // Two index-ordered probes instead of one OR: with an OR the planner sorts every
            // claimable row, which makes a claim O(queue depth). Orphaned tasks (expired leases,
            // never more than the worker count) go first: they were started earliest.
            let order = shared_sql::CLAIM_ORDER;
            let mut candidate = sqlx::query(&format!(
                "SELECT id, job_id, status, attempts, max_attempts FROM tasks
                 WHERE status = 'running' AND lease_expires_at <= $1
                 {order} LIMIT 1
                 FOR UPDATE SKIP LOCKED"
            ))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if candidate.is_none() {
                candidate = sqlx::query(&format!(
                    "SELECT id, job_id, status, attempts, max_attempts FROM tasks
                     WHERE status = 'queued' AND run_after <= $1
                     {order} LIMIT 1
                     FOR UPDATE SKIP LOCKED"
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
                    "UPDATE tasks SET status = $1, lease_owner = NULL, lease_expires_at = NULL, claimed_at = NULL, eta_at = NULL
                     WHERE id = $2",
                )
                .bind(FAILED)
                .bind(&task_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE jobs SET status = $1, error_code = $2, error_message = $3,
                         finished_at = $4
                     WHERE id = $5",
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
                "UPDATE tasks SET status = $1, attempts = $2, lease_owner = $3,
                     lease_expires_at = $4, claimed_at = $5, eta_at = NULL
                 WHERE id = $6",
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
                "UPDATE jobs SET status = $1, attempts = $2, progress = 0,
                     started_at = COALESCE(started_at, $3)
                 WHERE id = $4",
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
        let mut tx = self.pool.begin().await?;
        let Some(task) = lock_task(&mut tx, task_id).await? else {
            return unchanged(tx, RenewOutcome::LeaseLost).await;
        };
        if !task.owned_by(worker_id, attempt) {
            return unchanged(tx, RenewOutcome::LeaseLost).await;
        }
        match task.status.as_str() {
            RUNNING => {}
            CANCELLED => return unchanged(tx, RenewOutcome::Cancelled).await,
            _ => return unchanged(tx, RenewOutcome::LeaseLost).await,
        }
        let now = now_millis();
        sqlx::query("UPDATE tasks SET lease_expires_at = $1, eta_at = $2 WHERE id = $3")
            .bind(millis_after(now, lease))
            .bind(eta_at)
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        // NaN would poison every later comparison, so it is dropped rather than stored.
        if let Some(progress) = progress.filter(|p| !p.is_nan()) {
            sqlx::query("UPDATE jobs SET progress = $1 WHERE id = $2")
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
        let mut tx = self.pool.begin().await?;
        let Some(task) = owned_running_task(&mut tx, task_id, worker_id, attempt).await? else {
            return unchanged(tx, false).await;
        };
        let outputs = serde_json::to_string(&outputs)
            .map_err(|e| StoreError::Corrupt(format!("outputs do not serialize: {e}")))?;
        let now = now_millis();
        sqlx::query("UPDATE tasks SET status = $1, lease_expires_at = NULL, claimed_at = NULL, eta_at = NULL WHERE id = $2")
            .bind(SUCCEEDED)
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        // A retried job that finally succeeded should not show the error of an earlier attempt.
        sqlx::query(
            "UPDATE jobs SET status = $1, progress = 1, outputs = $2, finished_at = $3,
                 error_code = NULL, error_message = NULL
             WHERE id = $4",
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
        let mut tx = self.pool.begin().await?;
        let Some(task) = owned_running_task(&mut tx, task_id, worker_id, attempt).await? else {
            return unchanged(tx, FailOutcome::LeaseLost).await;
        };
        let now = now_millis();
        let code = pg_text(&error.code);
        let message = pg_text(&error.message);
        let outcome = match retry_after {
            Some(delay) if task.attempts < task.max_attempts => {
                let run_after = millis_after(now, delay);
                sqlx::query(
                    "UPDATE tasks SET status = $1, run_after = $2, lease_owner = NULL,
                         lease_expires_at = NULL, claimed_at = NULL, eta_at = NULL
                     WHERE id = $3",
                )
                .bind(QUEUED)
                .bind(run_after)
                .bind(task_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE jobs SET status = $1, progress = 0, error_code = $2,
                         error_message = $3
                     WHERE id = $4",
                )
                .bind(QUEUED)
                .bind(&*code)
                .bind(&*message)
                .bind(&task.job_id)
                .execute(&mut *tx)
                .await?;
                FailOutcome::Requeued { run_after }
            }
            _ => {
                sqlx::query("UPDATE tasks SET status = $1, lease_expires_at = NULL, claimed_at = NULL, eta_at = NULL WHERE id = $2")
                    .bind(FAILED)
                    .bind(task_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE jobs SET status = $1, error_code = $2, error_message = $3,
                         finished_at = $4
                     WHERE id = $5",
                )
                .bind(FAILED)
                .bind(&*code)
                .bind(&*message)
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
        let mut tx = self.pool.begin().await?;
        let Some(task) = owned_running_task(&mut tx, task_id, worker_id, attempt).await? else {
            tracing::debug!(
                task_id,
                worker_id,
                attempt,
                "release of a task no longer owned ignored"
            );
            return unchanged(tx, ()).await;
        };
        let attempts = (task.attempts - 1).max(0);
        let now = now_millis();
        sqlx::query(
            "UPDATE tasks SET status = $1, attempts = $2, run_after = $3, lease_owner = NULL,
                 lease_expires_at = NULL, claimed_at = NULL, eta_at = NULL
             WHERE id = $4",
        )
        .bind(QUEUED)
        .bind(attempts)
        .bind(now)
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        // With no attempt left on record the job has, as far as users are concerned, not started.
        sqlx::query(
            "UPDATE jobs SET status = $1, attempts = $2, progress = 0,
                 started_at = CASE WHEN $2 = 0 THEN NULL ELSE started_at END
             WHERE id = $3",
        )
        .bind(QUEUED)
        .bind(attempts)
        .bind(&task.job_id)
        .execute(&mut *tx)
        .await?;
        notify(&mut tx, &task.job_id).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn cancel(&self, id: &str) -> Result<CancelOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Tasks before the job, the order every other transaction locks them in.
        sqlx::query("SELECT id FROM tasks WHERE job_id = $1 ORDER BY id FOR UPDATE")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let Some(job) = fetch_job(&mut tx, id, " FOR UPDATE").await? else {
            return unchanged(tx, CancelOutcome::NotFound).await;
        };
        if job.status.is_terminal() {
            return unchanged(tx, CancelOutcome::AlreadyFinished(job)).await;
        }
        let now = now_millis();
        // The lease owner is kept on purpose: it is how renew recognises the worker that must
        // be told "cancelled" rather than "lease lost".
        sqlx::query(
            "UPDATE tasks SET status = $1, lease_expires_at = NULL, claimed_at = NULL, eta_at = NULL
             WHERE job_id = $2 AND status IN ('queued', 'running')",
        )
        .bind(CANCELLED)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET status = $1, finished_at = $2, cancel_requested = TRUE WHERE id = $3",
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
        let row = sqlx::query(
            "SELECT
                 COUNT(*) FILTER (WHERE status = 'queued') AS queued,
                 COUNT(*) FILTER (WHERE status = 'running') AS running,
                 COALESCE(SUM(estimated_seconds) FILTER (WHERE status = 'queued'), 0)
                     AS queued_seconds
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
            "SELECT COALESCE(SUM(slots), 0)::BIGINT AS total FROM workers WHERE expires_at >= $1",
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
             VALUES ($1, $2, $3, $4, $5)",
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
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1"
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
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now_millis())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_token(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
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

fn revocation_from_row(row: &PgRow) -> Result<RevocationRow, StoreError> {
    Ok(RevocationRow {
        seq: row.try_get("seq")?,
        token_id: row.try_get("token_id")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const TOKEN_COLUMNS: &str = "id, name, secret_hash, scopes, created_at, last_used_at, revoked_at";

fn token_from_row(row: &PgRow) -> Result<ApiToken, StoreError> {
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
fn running_attempt(row: &sqlx::postgres::PgRow) -> Result<RunningAttempt, StoreError> {
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
    use crate::testpg::{self, Cluster, PrivateCluster};
    use crate::testsuite::{new_job, test_database_url};
    use std::collections::HashSet;
    use std::sync::Arc;

    const LEASE: Duration = Duration::from_secs(60);

    async fn fresh() -> (String, Arc<dyn JobStore>) {
        let url = test_database_url().await;
        let store = PgStore::connect(&url).await.expect("connect");
        (url, Arc::new(store))
    }

    crate::job_store_suite!(fresh);

    async fn migration_count(store: &PgStore) -> i64 {
        sqlx::query("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(&store.pool)
            .await
            .and_then(|row| row.try_get(0))
            .expect("count migrations")
    }

    /// Two pools stand for two worker processes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_claim_each_job_exactly_once() {
        let url = test_database_url().await;
        let a = Arc::new(PgStore::connect(&url).await.expect("connect a"));
        let b = Arc::new(PgStore::connect(&url).await.expect("connect b"));
        let mut ids = HashSet::new();
        for i in 0..40 {
            let store = if i % 2 == 0 { &a } else { &b };
            let job = store.create_job(new_job("test")).await.expect("create");
            ids.insert(job.into_job().id);
        }

        let mut handles = Vec::new();
        for (name, store) in [("a", &a), ("b", &b)] {
            for w in 0..8 {
                let store = Arc::clone(store);
                let worker = format!("worker-{name}{w}");
                handles.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    while let Some(claim) = store.claim(&worker, LEASE).await.expect("claim") {
                        assert_eq!(claim.attempt, 1);
                        assert_eq!(claim.job.attempts, 1);
                        mine.push(claim.job.id);
                        tokio::task::yield_now().await;
                    }
                    mine
                }));
            }
        }
        let mut claimed = Vec::new();
        for handle in handles {
            claimed.extend(handle.await.expect("claimer panicked"));
        }
        let unique: HashSet<_> = claimed.iter().cloned().collect();
        assert_eq!(claimed.len(), 40, "some job was claimed twice: {claimed:?}");
        assert_eq!(unique, ids);
        let counts = a.counts().await.expect("counts");
        assert_eq!((counts.queued, counts.running), (0, 40));
        assert!(b.claim("late", LEASE).await.expect("claim").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_are_safe_and_idempotent() {
        let url = test_database_url().await;
        // Four processes starting at once against an empty database all migrate on connect.
        let (a, b, c, d) = tokio::join!(
            PgStore::connect(&url),
            PgStore::connect(&url),
            PgStore::connect(&url),
            PgStore::connect(&url)
        );
        let stores = [a, b, c, d].map(|s| s.expect("connect and migrate"));
        let expected = POSTGRES_MIGRATIONS.len() as i64;
        assert_eq!(migration_count(&stores[0]).await, expected);

        let job = stores[0]
            .create_job(new_job("test"))
            .await
            .expect("create")
            .into_job();
        let (a, b, c, d) = tokio::join!(
            stores[0].migrate(),
            stores[1].migrate(),
            stores[2].migrate(),
            stores[3].migrate()
        );
        for result in [a, b, c, d] {
            result.expect("migrate again");
        }
        assert_eq!(migration_count(&stores[3]).await, expected);
        assert_eq!(
            stores[3].get_job(&job.id).await.expect("get"),
            Some(job),
            "re-running migrations must not touch data"
        );
    }

    /// Migrations 0006 and 0007 on a database with jobs: owners are copied to the tasks, the
    /// old jobs keep their place and their keys.
    #[tokio::test]
    async fn upgrading_from_schema_4_keeps_jobs_keys_and_order() {
        let url = test_database_url().await;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("pool");
        migrate::run_postgres(&pool, &POSTGRES_MIGRATIONS[..4])
            .await
            .expect("migrate to 4");
        for sql in crate::testsuite::SCHEMA_4_ROWS {
            sqlx::query(sql).execute(&pool).await.expect(sql);
        }
        pool.close().await;
        let store = PgStore::connect(&url).await.expect("connect and upgrade");
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
        crate::testsuite::upgraded_from_schema_4(&store).await;
    }

    #[tokio::test]
    async fn refuses_a_schema_newer_than_the_build() {
        let url = test_database_url().await;
        let store = PgStore::connect(&url).await.expect("connect");
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
        )
        .execute(&store.pool)
        .await
        .expect("insert");
        store.pool.close().await;
        assert!(matches!(
            PgStore::connect(&url).await,
            Err(StoreError::Migration(_))
        ));
    }

    #[tokio::test]
    async fn connection_failures_are_database_errors() {
        let url = test_database_url().await;
        let missing = testpg::with_database(&url, "reelay_no_such_database").expect("url");
        assert!(matches!(
            PgStore::connect(&missing).await,
            Err(StoreError::Database(_))
        ));

        // Nothing listens on a port just released; the pool retries until its timeout.
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let closed = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        assert!(matches!(
            PgStore::connect_with(&closed, Duration::from_millis(500)).await,
            Err(StoreError::Database(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reconnects_after_the_server_restarts() {
        if testpg::external_server() {
            eprintln!(
                "skipping reconnects_after_the_server_restarts: REELAY_TEST_DATABASE_URL is set \
                 and the tests must not restart a server they did not start"
            );
            return;
        }
        // A cluster of its own: restarting the shared one would break tests running alongside.
        let cluster = tokio::task::spawn_blocking(Cluster::start_new)
            .await
            .expect("start task")
            .map(PrivateCluster)
            .expect("start a private cluster");
        let url = cluster.0.admin_url();
        let store = Arc::new(
            PgStore::connect_with(&url, Duration::from_secs(1))
                .await
                .expect("connect"),
        );
        let job = store
            .create_job(new_job("test"))
            .await
            .expect("create")
            .into_job();
        let claim = store
            .claim("w", LEASE)
            .await
            .expect("claim")
            .expect("claimable");
        // Several idle connections in the pool, all of which the restart kills.
        let pings: Vec<_> = (0..4)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.ping().await })
            })
            .collect();
        for ping in pings {
            ping.await.expect("ping task").expect("ping");
        }

        let cluster =
            tokio::task::spawn_blocking(move || cluster.0.stop().map(|()| cluster).expect("stop"))
                .await
                .expect("stop task");
        // Each waits out the acquire timeout while the pool keeps trying to reconnect.
        let (ping, get) = tokio::join!(store.ping(), store.get_job(&job.id));
        assert!(matches!(ping, Err(StoreError::Database(_))), "{ping:?}");
        assert!(matches!(get, Err(StoreError::Database(_))), "{get:?}");
        let _cluster = tokio::task::spawn_blocking(move || {
            cluster.0.start().map(|()| cluster).expect("start again")
        })
        .await
        .expect("start task");

        // No retry loop: the first call after the restart must already work.
        store.ping().await.expect("ping after restart");
        assert_eq!(
            store.get_job(&job.id).await.expect("get").expect("job"),
            claim.job
        );
        assert_eq!(
            store
                .renew(&claim.task_id, "w", 1, LEASE, Some(0.5), None)
                .await
                .expect("renew"),
            RenewOutcome::Renewed
        );
        assert!(store
            .complete(&claim.task_id, "w", 1, vec![])
            .await
            .expect("complete"));
        store.create_job(new_job("test")).await.expect("create");
    }

    /// Calls that change nothing must not leave their row locks behind for the next caller to
    /// skip (see `unchanged`); the suite's `release` test caught this only now and then.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_calls_leave_nothing_locked() {
        let (_url, store) = fresh().await;
        for _ in 0..25 {
            let job = store
                .create_job(new_job("test"))
                .await
                .expect("create")
                .into_job();
            let claim = store
                .claim("w1", LEASE)
                .await
                .expect("claim")
                .expect("claimable");
            store
                .release(&claim.task_id, "w1", 1)
                .await
                .expect("release");
            assert_eq!(
                store
                    .renew(&claim.task_id, "w1", 1, LEASE, None, None)
                    .await
                    .expect("renew"),
                RenewOutcome::LeaseLost
            );
            assert!(!store
                .complete(&claim.task_id, "w1", 1, vec![])
                .await
                .expect("complete"));
            let again = store
                .claim("w2", LEASE)
                .await
                .expect("claim")
                .expect("the released task, not skipped as locked");
            assert_eq!(again.job.id, job.id);
            store
                .release(&again.task_id, "w3", 1)
                .await
                .expect("release");
            assert!(matches!(
                store.cancel(&job.id).await.expect("cancel"),
                CancelOutcome::Cancelled(_)
            ));
            assert!(matches!(
                store.cancel(&job.id).await.expect("cancel"),
                CancelOutcome::AlreadyFinished(_)
            ));
            assert_eq!(
                store
                    .renew(&again.task_id, "w2", 1, LEASE, None, None)
                    .await
                    .expect("renew"),
                RenewOutcome::Cancelled
            );
        }
        assert!(store.claim("w", LEASE).await.expect("claim").is_none());
    }

    async fn next_payload(listener: &mut sqlx::postgres::PgListener) -> String {
        tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .expect("a notification within 5 s")
            .expect("recv")
            .payload()
            .to_string()
    }

    #[tokio::test]
    async fn notifies_when_work_becomes_claimable() {
        let (url, store) = fresh().await;
        let mut listener = sqlx::postgres::PgListener::connect(&url)
            .await
            .expect("listener");
        listener.listen(NOTIFY_CHANNEL).await.expect("listen");
        let job = store
            .create_job(new_job("test"))
            .await
            .expect("create")
            .into_job();
        assert_eq!(next_payload(&mut listener).await, job.id);
        let claim = store
            .claim("w", LEASE)
            .await
            .expect("claim")
            .expect("claimable");
        store
            .release(&claim.task_id, "w", 1)
            .await
            .expect("release");
        assert_eq!(next_payload(&mut listener).await, job.id);
    }

    #[tokio::test]
    async fn error_messages_with_nul_are_stored() {
        let (_url, store) = fresh().await;
        let job = store
            .create_job(new_job("test"))
            .await
            .expect("create")
            .into_job();
        let claim = store
            .claim("w", LEASE)
            .await
            .expect("claim")
            .expect("claimable");
        let outcome = store
            .fail(
                &claim.task_id,
                "w",
                1,
                ErrorDetail::new("ffmpeg\0failed", "bad\0frame"),
                None,
            )
            .await
            .expect("fail");
        assert_eq!(outcome, FailOutcome::Failed);
        let failed = store.get_job(&job.id).await.expect("get").expect("job");
        assert_eq!(
            failed.error,
            Some(ErrorDetail::new("ffmpeg\u{FFFD}failed", "bad\u{FFFD}frame"))
        );
    }

    /// Listing and claiming compare ids byte by byte like SQLite, whatever the database's
    /// default collation (the test cluster's is C anyway, so the column itself is checked).
    #[tokio::test]
    async fn ids_compare_bytewise() {
        let url = test_database_url().await;
        let store = PgStore::connect(&url).await.expect("connect");
        let collations: Vec<(String, String, Option<String>)> = sqlx::query(
            "SELECT table_name::text, column_name::text, collation_name::text
             FROM information_schema.columns
             WHERE column_name IN ('id', 'job_id') AND table_name IN ('jobs', 'tasks')
             ORDER BY 1, 2",
        )
        .fetch_all(&store.pool)
        .await
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
        let c = Some("C".to_string());
        assert_eq!(
            collations,
            [
                ("jobs".into(), "id".into(), c.clone()),
                ("tasks".into(), "id".into(), c.clone()),
                ("tasks".into(), "job_id".into(), c),
            ]
        );
    }
}
