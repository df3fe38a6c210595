//! Every job operation of both stores, written once.
//!
//! A back end only provides a [`Conn`]: a connection inside its transaction that runs a
//! statement with [`Arg`]s and decodes rows, plus its [`Dialect`] (row-locking clauses, the
//! two-argument maximum, NOTIFY). The statements and the decisions are here; the decisions
//! themselves are [`machine::apply`].
//!
//! Locking (Postgres; SQLite has one writer at a time): every transaction that changes a job
//! locks the JOB row first (`FOR UPDATE`) and only then reads and writes its tasks. The claim
//! probe locks the job row of its candidate with `SKIP LOCKED`, so concurrent claimers pass over
//! a job another transaction is changing instead of waiting, and no transaction ever holds a
//! task row while waiting for a job row: no deadlocks.

use crate::machine::{
    self, Event, JobState, Outcome, Rejection, TaskState, TaskStatus, Transition,
};
use crate::model::{
    check_tasks, CancelOutcome, Claim, CreateOutcome, FailOutcome, Job, JobEvent, JobFilter,
    Millis, NewJob, Purge, QueueCounts, RenewOutcome, RetentionCutoffs, RunningAttempt,
    StoredOutput, TaskSummary,
};
use crate::store::StoreError;
use reelay_protocol::{ErrorDetail, InputFacts, JobStatus};
use std::time::Duration;

/// A bound value. Typed NULLs, because Postgres wants to know what a NULL is.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    OptText(Option<String>),
    I64(i64),
    OptI64(Option<i64>),
    F64(f64),
    Bool(bool),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Text(s.to_string())
    }
}
impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Text(s)
    }
}
impl From<&String> for Arg {
    fn from(s: &String) -> Arg {
        Arg::Text(s.clone())
    }
}
impl From<Option<String>> for Arg {
    fn from(s: Option<String>) -> Arg {
        Arg::OptText(s)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::I64(v)
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Arg {
        Arg::OptI64(v)
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Arg {
        Arg::F64(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Arg {
        Arg::Bool(v)
    }
}

/// `args![a, b, c]`: a `Vec<Arg>` from anything convertible.
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$(crate::ops::Arg::from($a)),*] };
}
pub(crate) use args;

/// What differs between the dialects, besides the connection type.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// Appended to a read of the job row a transaction is about to change.
    pub lock_job: &'static str,
    /// Appended to the claim probe (`j` is the candidate's job).
    pub claim_lock: &'static str,
    /// The two-argument maximum (`MAX` in SQLite, `GREATEST` in Postgres).
    pub greatest: &'static str,
}

/// A task row as stored: the machine's view plus what only the store and workers need.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskRow {
    pub state: TaskState,
    pub job_id: String,
    pub payload: serde_json::Value,
    pub position: i64,
    /// Where the succeeded attempt's time went (see [`complete`]).
    pub timings: Option<crate::model::PhaseTimings>,
    /// The cluster whose worker claimed the latest attempt (migration 0021).
    pub ran_on: Option<String>,
    /// The peer the task was handed to, once ever (a task moves at most once).
    pub moved_to: Option<String>,
}

/// A connection inside a transaction of one back end.
#[async_trait::async_trait]
pub(crate) trait Conn: Send {
    fn dialect(&self) -> &'static Dialect;
    /// Runs a statement; the number of rows it changed.
    async fn exec(&mut self, sql: &str, args: Vec<Arg>) -> Result<u64, StoreError>;
    /// Rows of [`JOB_COLUMNS`], decoded with no tasks.
    async fn jobs(&mut self, sql: &str, args: Vec<Arg>) -> Result<Vec<Job>, StoreError>;
    /// Rows of [`TASK_COLUMNS`].
    async fn tasks(&mut self, sql: &str, args: Vec<Arg>) -> Result<Vec<TaskRow>, StoreError>;
    /// Rows of [`EVENT_COLUMNS`].
    async fn events(&mut self, sql: &str, args: Vec<Arg>) -> Result<Vec<JobEvent>, StoreError>;
    /// Rows of two text columns (`a`, `b`), e.g. ids.
    async fn pairs(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// The first column of the first row as an integer (NULL and no row: `None`).
    async fn int(&mut self, sql: &str, args: Vec<Arg>) -> Result<Option<i64>, StoreError>;
    /// QueueCounts's three columns `queued`, `running`, `queued_seconds`.
    async fn counts(&mut self, sql: &str, args: Vec<Arg>) -> Result<QueueCounts, StoreError>;
    /// Running attempt rows: `estimated_seconds`, `progress`, `claimed_at`, `eta_at`,
    /// `lease_expires_at`, `on_peer` (0/1).
    async fn running(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<RunningAttempt>, StoreError>;
    /// Rows of [`crate::webhooks::DELIVERY_COLUMNS`].
    async fn deliveries(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<crate::webhooks::Delivery>, StoreError>;
    /// Rows of [`crate::webhooks::ATTEMPT_COLUMNS`].
    async fn attempts(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<crate::webhooks::DeliveryAttempt>, StoreError>;
    /// Wakes listening workers when the transaction commits (Postgres NOTIFY; SQLite: no-op).
    async fn notify(&mut self, job_id: &str) -> Result<(), StoreError>;
}

pub(crate) const JOB_COLUMNS: &str = "id, cluster, status, progress, attempts, max_attempts, \
     priority, spec_json, spec_hash, input_key, input_url, idempotency_key, owner, \
     estimated_seconds, created_at, started_at, finished_at, error_code, error_message, outputs, \
     cancel_requested, deleted_at, inputs_deleted_at, playable_at, split_json, input_name, \
     input_facts";

pub(crate) const TASK_COLUMNS: &str = "id, job_id, kind, status, payload, depends_on, attempts, \
     max_attempts, lease_owner, lease_expires_at, claimed_at, eta_at, run_after, progress, \
     weight, position, error_code, error_message, outputs, timings, ran_on, moved_to";

pub(crate) const EVENT_COLUMNS: &str = "id, job_id, seq, kind, at, payload";

/// Decoders for the rows above, expanded once per back end (the row types differ, the code
/// does not).
macro_rules! row_decoders {
    ($row:ty) => {
        fn to_u32(value: i64, column: &str) -> Result<u32, StoreError> {
            u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} = {value}")))
        }

        fn error_from(
            code: Option<String>,
            message: Option<String>,
        ) -> Option<reelay_protocol::ErrorDetail> {
            code.map(|code| reelay_protocol::ErrorDetail::new(code, message.unwrap_or_default()))
        }

        fn job_from_row(row: &$row) -> Result<crate::model::Job, StoreError> {
            use sqlx::Row;
            let id: String = row.try_get("id")?;
            let corrupt = |what: String| StoreError::Corrupt(format!("job {id}: {what}"));
            let status: String = row.try_get("status")?;
            let status = status
                .parse::<reelay_protocol::JobStatus>()
                .map_err(corrupt)?;
            let outputs: String = row.try_get("outputs")?;
            let outputs: Vec<crate::model::StoredOutput> =
                serde_json::from_str(&outputs).map_err(|e| corrupt(format!("outputs: {e}")))?;
            let input_facts: Option<String> = row.try_get("input_facts")?;
            let input_facts = input_facts
                .map(|f| serde_json::from_str(&f))
                .transpose()
                .map_err(|e| corrupt(format!("input_facts: {e}")))?;
            Ok(crate::model::Job {
                cluster: row.try_get("cluster")?,
                status,
                progress: row.try_get("progress")?,
                attempts: to_u32(row.try_get("attempts")?, "attempts")?,
                max_attempts: to_u32(row.try_get("max_attempts")?, "max_attempts")?,
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
                error: error_from(row.try_get("error_code")?, row.try_get("error_message")?),
                outputs,
                cancel_requested: row.try_get("cancel_requested")?,
                deleted_at: row.try_get("deleted_at")?,
                inputs_deleted_at: row.try_get("inputs_deleted_at")?,
                playable_at: row.try_get("playable_at")?,
                split_json: row.try_get("split_json")?,
                tasks: Vec::new(),
                input_name: row.try_get("input_name")?,
                input_facts,
                id,
            })
        }

        fn task_from_row(row: &$row) -> Result<crate::ops::TaskRow, StoreError> {
            use sqlx::Row;
            let id: String = row.try_get("id")?;
            let corrupt = |what: String| StoreError::Corrupt(format!("task {id}: {what}"));
            let status: String = row.try_get("status")?;
            let status = status
                .parse::<crate::machine::TaskStatus>()
                .map_err(corrupt)?;
            let payload: String = row.try_get("payload")?;
            let payload =
                serde_json::from_str(&payload).map_err(|e| corrupt(format!("payload: {e}")))?;
            let depends_on: String = row.try_get("depends_on")?;
            let depends_on = serde_json::from_str(&depends_on)
                .map_err(|e| corrupt(format!("depends_on: {e}")))?;
            let outputs: Option<String> = row.try_get("outputs")?;
            let outputs = outputs
                .map(|o| serde_json::from_str(&o))
                .transpose()
                .map_err(|e| corrupt(format!("outputs: {e}")))?;
            let timings: Option<String> = row.try_get("timings")?;
            let timings = timings
                .map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(|e| corrupt(format!("timings: {e}")))?;
            Ok(crate::ops::TaskRow {
                timings,
                ran_on: row.try_get("ran_on")?,
                moved_to: row.try_get("moved_to")?,
                job_id: row.try_get("job_id")?,
                payload,
                position: row.try_get("position")?,
                state: crate::machine::TaskState {
                    kind: row.try_get("kind")?,
                    status,
                    depends_on,
                    attempts: to_u32(row.try_get("attempts")?, "attempts")?,
                    max_attempts: to_u32(row.try_get("max_attempts")?, "max_attempts")?,
                    lease_owner: row.try_get("lease_owner")?,
                    lease_expires_at: row.try_get("lease_expires_at")?,
                    claimed_at: row.try_get("claimed_at")?,
                    eta_at: row.try_get("eta_at")?,
                    run_after: row.try_get("run_after")?,
                    progress: row.try_get("progress")?,
                    weight: row.try_get("weight")?,
                    error: error_from(row.try_get("error_code")?, row.try_get("error_message")?),
                    outputs,
                    id,
                },
            })
        }

        fn event_from_row(row: &$row) -> Result<crate::model::JobEvent, StoreError> {
            use sqlx::Row;
            let payload: String = row.try_get("payload")?;
            Ok(crate::model::JobEvent {
                id: row.try_get("id")?,
                job_id: row.try_get("job_id")?,
                seq: row.try_get("seq")?,
                kind: row.try_get("kind")?,
                at: row.try_get("at")?,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| StoreError::Corrupt(format!("job event payload: {e}")))?,
            })
        }

        fn delivery_from_row(row: &$row) -> Result<crate::webhooks::Delivery, StoreError> {
            use sqlx::Row;
            Ok(crate::webhooks::Delivery {
                id: row.try_get("id")?,
                job_id: row.try_get("job_id")?,
                endpoint: row.try_get("endpoint")?,
                url: row.try_get("url")?,
                event_id: row.try_get("event_id")?,
                seq: row.try_get("seq")?,
                kind: row.try_get("kind")?,
                body: row.try_get("body")?,
                state: row.try_get("state")?,
                attempts: to_u32(row.try_get("attempts")?, "delivery attempts")?,
                created_at: row.try_get("created_at")?,
                next_at: row.try_get("next_at")?,
            })
        }

        fn attempt_from_row(row: &$row) -> Result<crate::webhooks::DeliveryAttempt, StoreError> {
            use sqlx::Row;
            let status: Option<i64> = row.try_get("status_code")?;
            Ok(crate::webhooks::DeliveryAttempt {
                delivery_id: row.try_get("delivery_id")?,
                n: to_u32(row.try_get("n")?, "attempt number")?,
                at: row.try_get("at")?,
                status_code: status.and_then(|s| u16::try_from(s).ok()),
                latency_ms: row.try_get("latency_ms")?,
                error: row.try_get("error")?,
            })
        }

        fn counts_from_row(row: &$row) -> Result<crate::model::QueueCounts, StoreError> {
            use sqlx::Row;
            Ok(crate::model::QueueCounts {
                queued: to_u32(row.try_get("queued")?, "queued count")?,
                running: to_u32(row.try_get("running")?, "running count")?,
                queued_estimated_seconds: row.try_get("queued_seconds")?,
            })
        }

        /// A task claimed before `claimed_at` existed counts as claimed now.
        fn running_from_row(row: &$row) -> Result<crate::model::RunningAttempt, StoreError> {
            use sqlx::Row;
            let claimed_at: Option<crate::model::Millis> = row.try_get("claimed_at")?;
            Ok(crate::model::RunningAttempt {
                estimated_seconds: row.try_get("estimated_seconds")?,
                progress: row.try_get("progress")?,
                claimed_at: claimed_at.unwrap_or_else(crate::model::now_millis),
                eta_at: row.try_get("eta_at")?,
                lease_expires_at: row.try_get("lease_expires_at")?,
                on_peer: row.try_get::<i64, _>("on_peer")? != 0,
            })
        }
    };
}
pub(crate) use row_decoders;

/// Both databases store text; Postgres cannot hold NUL, which tool output may contain. Replaced
/// in both, so the back ends store the same thing.
pub(crate) fn clean_text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn clean_error(e: &ErrorDetail) -> ErrorDetail {
    ErrorDetail::new(clean_text(&e.code), clean_text(&e.message))
}

pub(crate) fn millis_after(now: Millis, d: Duration) -> Millis {
    now.saturating_add(Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
}

fn json_text(value: &impl serde::Serialize, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("{what} does not serialize: {e}")))
        .map(|s| clean_text(&s))
}

fn job_state(job: &Job) -> JobState {
    JobState {
        status: job.status,
        progress: job.progress,
        attempts: job.attempts,
        error: job.error.clone(),
        outputs: job.outputs.clone(),
        started_at: job.started_at,
        finished_at: job.finished_at,
        cancel_requested: job.cancel_requested,
    }
}

fn summary(t: &TaskRow) -> TaskSummary {
    TaskSummary {
        id: t.state.id.clone(),
        kind: t.state.kind.clone(),
        status: t.state.status,
        progress: t.state.progress,
        attempts: t.state.attempts,
        timings: t.timings.clone(),
        ran_on: t.ran_on.clone(),
    }
}

async fn job_tasks(db: &mut dyn Conn, job_id: &str) -> Result<Vec<TaskRow>, StoreError> {
    db.tasks(
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = $1 ORDER BY position, id"),
        args![job_id],
    )
    .await
}

/// The job with its tasks; `lock` locks the job row for the rest of the transaction.
pub(crate) async fn load_job(
    db: &mut dyn Conn,
    id: &str,
    lock: bool,
) -> Result<Option<(Job, Vec<TaskRow>)>, StoreError> {
    let suffix = if lock { db.dialect().lock_job } else { "" };
    let mut jobs = db
        .jobs(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1{suffix}"),
            args![id],
        )
        .await?;
    let Some(mut job) = jobs.pop() else {
        return Ok(None);
    };
    let tasks = job_tasks(db, id).await?;
    job.tasks = tasks.iter().map(summary).collect();
    Ok(Some((job, tasks)))
}

pub(crate) async fn get_job(db: &mut dyn Conn, id: &str) -> Result<Option<Job>, StoreError> {
    Ok(load_job(db, id, false).await?.map(|(job, _)| job))
}

async fn existing_job(db: &mut dyn Conn, id: &str) -> Result<Job, StoreError> {
    get_job(db, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished")))
}

/// Fills in the tasks of listed jobs, with one query for the whole page.
pub(crate) async fn with_tasks(db: &mut dyn Conn, jobs: &mut [Job]) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let placeholders: Vec<String> = (1..=jobs.len()).map(|i| format!("${i}")).collect();
    let args = jobs.iter().map(|j| Arg::from(&j.id)).collect();
    let rows = db
        .tasks(
            &format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE job_id IN ({}) \
                 ORDER BY job_id, position, id",
                placeholders.join(", ")
            ),
            args,
        )
        .await?;
    let mut by_job: std::collections::HashMap<&str, Vec<TaskSummary>> =
        std::collections::HashMap::new();
    for row in &rows {
        by_job
            .entry(row.job_id.as_str())
            .or_default()
            .push(summary(row));
    }
    for job in jobs {
        job.tasks = by_job.remove(job.id.as_str()).unwrap_or_default();
    }
    Ok(())
}

/// Appends the job's next event (the seam every status change goes through).
async fn append_event(
    db: &mut dyn Conn,
    job_id: &str,
    kind: &str,
    job: &JobState,
    now: Millis,
) -> Result<(), StoreError> {
    let payload = serde_json::json!({
        "status": job.status.as_str(),
        "progress": job.progress,
        "attempts": job.attempts,
        "error": job.error,
    });
    db.exec(
        "INSERT INTO job_events (job_id, seq, kind, at, payload) \
         VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM job_events WHERE job_id = $1), \
                 $2, $3, $4)",
        args![job_id, kind, now, json_text(&payload, "event payload")?],
    )
    .await?;
    Ok(())
}

/// The events of `job_id` after `after_seq`, oldest first, at most `limit`.
pub(crate) async fn job_events(
    db: &mut dyn Conn,
    job_id: &str,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<JobEvent>, StoreError> {
    db.events(
        &format!(
            "SELECT {EVENT_COLUMNS} FROM job_events WHERE job_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        ),
        args![job_id, after_seq, i64::from(limit.max(1))],
    )
    .await
}

/// The events of every job after outbox cursor `after_id`, oldest first, at most `limit`.
pub(crate) async fn events_after(
    db: &mut dyn Conn,
    after_id: i64,
    limit: u32,
) -> Result<Vec<JobEvent>, StoreError> {
    db.events(
        &format!("SELECT {EVENT_COLUMNS} FROM job_events WHERE id > $1 ORDER BY id LIMIT $2"),
        args![after_id, i64::from(limit.max(1))],
    )
    .await
}

/// Existing job for a reused key: the same one for the same spec, a conflict otherwise.
fn reuse(existing: Job, spec_hash: &str) -> Result<CreateOutcome, StoreError> {
    if existing.spec_hash == spec_hash {
        Ok(CreateOutcome::Existing(existing))
    } else {
        Err(StoreError::IdempotencyConflict)
    }
}

async fn job_by_key(db: &mut dyn Conn, new: &NewJob, key: &str) -> Result<Option<Job>, StoreError> {
    let owner = new.owner.as_deref().unwrap_or("");
    let mut jobs = db
        .jobs(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs \
                 WHERE cluster = $1 AND COALESCE(owner, '') = $2 AND idempotency_key = $3"
            ),
            args![&new.cluster, owner, key],
        )
        .await?;
    let Some(mut job) = jobs.pop() else {
        return Ok(None);
    };
    with_tasks(db, std::slice::from_mut(&mut job)).await?;
    Ok(Some(job))
}

/// What [`create_job`] decided; `Existing` and `Conflict` change nothing (roll back).
pub(crate) enum Created {
    New(Job),
    Reused(Result<CreateOutcome, StoreError>),
}

/// Inserts the job, all its tasks and its `created` event. Keys are per owner (migration 0006).
pub(crate) async fn create_job(
    db: &mut dyn Conn,
    new: &NewJob,
    now: Millis,
) -> Result<Created, StoreError> {
    check_tasks(&new.tasks).map_err(StoreError::InvalidTasks)?;
    // The common retry case, answered without attempting an insert.
    if let Some(key) = &new.idempotency_key {
        if let Some(existing) = job_by_key(db, new, key).await? {
            return Ok(Created::Reused(reuse(existing, &new.spec_hash)));
        }
    }
    let max_attempts = i64::from(new.max_attempts.max(1));
    // A concurrent create with the same key that commits first makes this insert a no-op
    // (Postgres waits for that transaction rather than failing), so exactly one caller creates.
    let inserted = db
        .exec(
            "INSERT INTO jobs (id, cluster, status, progress, attempts, max_attempts, priority, \
                 spec_json, spec_hash, input_key, input_url, idempotency_key, owner, \
                 estimated_seconds, created_at, outputs, cancel_requested, split_json, input_name, \
                 input_facts) \
             VALUES ($1, $2, $3, 0, 0, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, '[]', FALSE, \
                     $14, $15, $16) \
             ON CONFLICT DO NOTHING",
            args![
                &new.id,
                &new.cluster,
                JobStatus::Queued.as_str(),
                max_attempts,
                i64::from(new.priority),
                &new.spec_json,
                &new.spec_hash,
                new.input_key.clone(),
                new.input_url.clone(),
                new.idempotency_key.clone(),
                new.owner.clone(),
                new.estimated_seconds,
                now,
                new.split_json.clone(),
                new.input_name.as_deref().map(clean_text),
                new.input_facts
                    .as_ref()
                    .map(|f| json_text(f, "input facts"))
                    .transpose()?
            ],
        )
        .await?;
    if inserted == 0 {
        let existing = match &new.idempotency_key {
            Some(key) => job_by_key(db, new, key).await?,
            None => None,
        };
        return Ok(Created::Reused(match existing {
            Some(existing) => reuse(existing, &new.spec_hash),
            None => Err(StoreError::Corrupt(format!(
                "insert of job {} skipped but no job holds its idempotency key",
                new.id
            ))),
        }));
    }
    for (key, value) in &new.metadata {
        db.exec(
            "INSERT INTO job_metadata (job_id, key, value) VALUES ($1, $2, $3)",
            args![&new.id, clean_text(key), clean_text(value)],
        )
        .await?;
    }
    // Two creates of one owner at once may read the same last number and tie; ties fall back to
    // age, so that costs exactness of the turns, never correctness.
    let owner = new.owner.as_deref().unwrap_or("");
    let fair_seq_sql = crate::shared_sql::next_fair_seq(db.dialect().greatest);
    let fair_seq = db.int(&fair_seq_sql, args![owner]).await?.unwrap_or(0);
    let task_id = |key: &str| format!("{}.{key}", new.id);
    let weights = scaled_weights(&new.tasks, new.estimated_seconds);
    for (t, weight) in new.tasks.iter().zip(weights) {
        let depends_on: Vec<String> = t.depends_on.iter().map(|d| task_id(d)).collect();
        db.exec(
            "INSERT INTO tasks (id, job_id, kind, status, priority, created_at, run_after, \
                 attempts, max_attempts, owner, fair_seq, payload, depends_on, weight, position, \
                 progress) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12, $13, $14, 0)",
            args![
                task_id(&t.key),
                &new.id,
                &t.kind,
                machine::initial_status(&depends_on).as_str(),
                i64::from(new.priority),
                now,
                now,
                max_attempts,
                owner,
                fair_seq,
                json_text(&t.payload, "task payload")?,
                json_text(&depends_on, "depends_on")?,
                weight,
                t.position
            ],
        )
        .await?;
    }
    let (job, _) = load_job(db, &new.id, false)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("job {} vanished", new.id)))?;
    append_event(db, &new.id, "created", &job_state(&job), now).await?;
    db.notify(&new.id).await?;
    Ok(Created::New(job))
}

/// The tasks' weights in encode seconds: their relative weights scaled to add up to the job's
/// estimate (equal shares when no weight is given), so the job's estimate stays the one figure
/// the api computes and the load report can charge each task its own part.
pub(crate) fn scaled_weights(tasks: &[crate::model::NewTask], estimated_seconds: f64) -> Vec<f64> {
    let clean = |w: f64| if w.is_finite() && w > 0.0 { w } else { 0.0 };
    let total: f64 = tasks.iter().map(|t| clean(t.weight)).sum();
    let estimate = clean(estimated_seconds);
    tasks
        .iter()
        .map(|t| {
            if total > 0.0 {
                estimate * clean(t.weight) / total
            } else {
                estimate / tasks.len().max(1) as f64
            }
        })
        .collect()
}

/// Writes what a transition changed: the changed tasks, the job, an event if its status
/// changed, a notification if a task became claimable.
async fn write(
    db: &mut dyn Conn,
    job_id: &str,
    before_tasks: &[TaskState],
    before_job: &JobState,
    t: &Transition,
    now: Millis,
) -> Result<(), StoreError> {
    for i in t.changed(before_tasks) {
        let s = &t.tasks[i];
        let outputs = s
            .outputs
            .as_ref()
            .map(|o| json_text(o, "task outputs"))
            .transpose()?;
        let error = s.error.as_ref().map(clean_error);
        db.exec(
            "UPDATE tasks SET status = $1, attempts = $2, lease_owner = $3, \
                 lease_expires_at = $4, claimed_at = $5, eta_at = $6, run_after = $7, \
                 progress = $8, error_code = $9, error_message = $10, outputs = $11 \
             WHERE id = $12",
            args![
                s.status.as_str(),
                i64::from(s.attempts),
                s.lease_owner.clone(),
                s.lease_expires_at,
                s.claimed_at,
                s.eta_at,
                s.run_after,
                s.progress,
                error.as_ref().map(|e| e.code.clone()),
                error.map(|e| e.message),
                outputs,
                &s.id
            ],
        )
        .await?;
    }
    if t.job != *before_job {
        let j = &t.job;
        let error = j.error.as_ref().map(clean_error);
        db.exec(
            "UPDATE jobs SET status = $1, progress = $2, attempts = $3, error_code = $4, \
                 error_message = $5, outputs = $6, started_at = $7, finished_at = $8, \
                 cancel_requested = $9 \
             WHERE id = $10",
            args![
                j.status.as_str(),
                j.progress,
                i64::from(j.attempts),
                error.as_ref().map(|e| e.code.clone()),
                error.map(|e| e.message),
                json_text(&j.outputs, "outputs")?,
                j.started_at,
                j.finished_at,
                j.cancel_requested,
                job_id
            ],
        )
        .await?;
    }
    if let Some(status) = t.status_change(before_job) {
        append_event(db, job_id, status.as_str(), &t.job, now).await?;
    }
    if t.made_claimable(before_tasks, now) {
        db.notify(job_id).await?;
    }
    Ok(())
}

/// Loads and locks job `job_id` with its tasks, applies `event`, writes what changed.
async fn transition(
    db: &mut dyn Conn,
    job_id: &str,
    event: &Event,
    now: Millis,
) -> Result<Option<(Transition, Vec<TaskRow>)>, StoreError> {
    let Some((job, rows)) = load_job(db, job_id, true).await? else {
        return Ok(None);
    };
    let before: Vec<TaskState> = rows.iter().map(|r| r.state.clone()).collect();
    let before_job = job_state(&job);
    let t = machine::apply(&before, &before_job, event, now)
        .map_err(|e| StoreError::InvalidTasks(e.to_string()))?;
    if !matches!(t.outcome, Outcome::Rejected(_)) {
        write(db, job_id, &before, &before_job, &t, now).await?;
    }
    Ok(Some((t, rows)))
}

async fn job_of_task(db: &mut dyn Conn, task_id: &str) -> Result<Option<String>, StoreError> {
    Ok(db
        .pairs(
            "SELECT job_id AS a, id AS b FROM tasks WHERE id = $1",
            args![task_id],
        )
        .await?
        .pop()
        .map(|(job, _)| job))
}

/// Who claims to hold a task: the three parts of a lease.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holder<'a> {
    pub task_id: &'a str,
    pub worker_id: &'a str,
    pub attempt: u32,
}

/// A task event by its lease holder; `None` when the task does not exist.
async fn task_event(
    db: &mut dyn Conn,
    task_id: &str,
    event: Event,
    now: Millis,
) -> Result<Option<Outcome>, StoreError> {
    let Some(job_id) = job_of_task(db, task_id).await? else {
        return Ok(None);
    };
    Ok(transition(db, &job_id, &event, now)
        .await?
        .map(|(t, _)| t.outcome))
}

/// Claim probes: orphaned tasks (expired leases, never more than the worker count) first, they
/// were started earliest; then queued ones. Two index-ordered probes instead of one OR, which
/// would make the planner sort every claimable row.
///
/// A peer's probe (`peer` given) also skips every task that moved once, every kind the peer
/// may not run (`$2`, `$3`, … hold the kinds), every task of a job whose split is still
/// undecided ([`SPLIT_PENDING`]), and, when the peer names one task, every other task (its id
/// is the last argument). `lock` adds the dialect's claim lock (a claim; not an offer, which
/// only reads).
fn claim_probe(status: &str, dialect: &Dialect, peer: Option<PeerProbe>, lock: bool) -> String {
    probe_sql(status, dialect, peer, "", 1, lock)
}

/// The claim probe's query: `t.job_id AS a, t.id AS b` and `more` columns of the first `limit`
/// claimable tasks in the claim order.
fn probe_sql(
    status: &str,
    dialect: &Dialect,
    peer: Option<PeerProbe>,
    more: &str,
    limit: usize,
    lock: bool,
) -> String {
    let condition = if status == "running" {
        "t.status = 'running' AND t.lease_expires_at <= $1"
    } else {
        "t.status = 'queued' AND t.run_after <= $1"
    };
    let peer = match peer {
        Some(PeerProbe { kinds: n, one_task }) => {
            let kinds: Vec<String> = (2..n + 2).map(|i| format!("${i}")).collect();
            let task = if one_task {
                format!(" AND t.id = ${}", n + 2)
            } else {
                String::new()
            };
            // Any input: a key input is served to the peer as the job's own source
            // (`inputs/{job}/source`), so the peer's key prefix never matters.
            format!(
                " AND t.moved_to IS NULL AND t.kind IN ({}) \
                 AND (j.split_json IS NULL OR j.split_json NOT LIKE '{SPLIT_PENDING}'){task}",
                kinds.join(", ")
            )
        }
        None => String::new(),
    };
    format!(
        "SELECT t.job_id AS a, t.id AS b{more} FROM tasks t JOIN jobs j ON j.id = t.job_id \
         WHERE {condition}{peer} {} LIMIT {limit}{}",
        crate::shared_sql::CLAIM_ORDER,
        if lock { dialect.claim_lock } else { "" }
    )
}

/// How many tasks at the front of the line an offer chooses among ([`offer_probe`]).
pub const OFFER_WINDOW: usize = 64;

/// The offer's probe: of the first [`OFFER_WINDOW`] tasks a peer's claim could take (in the
/// claim order, of the front priority among them), the one with the most expected work; ties
/// keep the claim order.
///
/// Why not the head, as the home claim takes: a thief is extra capacity, and what it takes
/// shortens everyone's wait at home whichever task it is. Taking the longest of those in line
/// is the list-scheduling rule (longest processing time first) that leaves the shortest tasks
/// for the end, where two clusters draining one queue otherwise finish apart by up to one
/// long task (the skewed stealing benchmark lost most of its distance to the best possible
/// there). It also moves the task whose wait at home is longest: behind the head it waits at
/// least as long as the head would, so the edge's estimate from the first slot to free stays a
/// lower bound. The window keeps the probe one bounded index scan, and a task far back in a
/// long queue is not taken ahead of those that waited for it.
fn offer_probe(status: &str, dialect: &Dialect, peer: PeerProbe) -> String {
    let front = probe_sql(
        status,
        dialect,
        Some(peer),
        ", t.priority AS p, t.weight AS w, t.fair_seq AS f, t.position AS o, t.created_at AS c",
        OFFER_WINDOW,
        false,
    );
    format!(
        "SELECT a, b FROM ({front}) front \
         ORDER BY p DESC, w DESC, f ASC, o ASC, c ASC, b ASC LIMIT 1"
    )
}

/// The shape of a peer's probe: how many kinds it may take, and whether it names one task.
#[derive(Debug, Clone, Copy)]
struct PeerProbe {
    kinds: usize,
    one_task: bool,
}

/// A job whose split is still undecided (its input is probed by its first task, which may
/// then grow the graph: `split_graph::PENDING` in the server) as a `LIKE` pattern over its
/// stored `split_json`. The view is serialised compactly by serde_json, so the pair always
/// reads exactly like this. Such a task belongs at home: its graph can only grow there.
const SPLIT_PENDING: &str = "%\"reason\":\"pending\"%";

/// How many candidates one claim looks at before giving up for this poll: each is either taken,
/// failed as lost, or found already taken by a concurrent claimer.
const CLAIM_PROBES: usize = 64;

/// A claim made for a worker of another cluster (issue 16, remote claim).
#[derive(Debug, Clone, Copy)]
pub struct PeerClaim<'a> {
    /// The peer cluster's name: recorded as the task's `ran_on` and `moved_to`.
    pub peer: &'a str,
    /// The task kinds the peer may take (never empty; an empty list claims nothing).
    pub kinds: &'a [&'a str],
    /// Only tasks claimable at home for at least this long are offered: the home cluster's
    /// own workers get the first chance at every task.
    pub ready_for: Duration,
    /// Exactly this task, when it is still claimable by the rules above (the one the edge's
    /// stealing decision named), else nothing; `None`: the first claimable one.
    pub task: Option<&'a str>,
}

impl PeerClaim<'_> {
    fn probe(&self) -> PeerProbe {
        PeerProbe {
            kinds: self.kinds.len(),
            one_task: self.task.is_some(),
        }
    }

    /// The probe's arguments after `$1`.
    fn args(&self) -> Vec<Arg> {
        let mut a: Vec<Arg> = self.kinds.iter().map(|k| Arg::from(*k)).collect();
        if let Some(t) = self.task {
            a.push(Arg::from(t));
        }
        a
    }

    /// The probe's `$1`: tasks claimable since before `now - ready_for`.
    fn probe_now(&self, now: Millis) -> Millis {
        now.saturating_sub(i64::try_from(self.ready_for.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The task a peer's claim should name now ([`offer`]): what the edge's stealing policy weighs.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerOffer {
    pub task_id: String,
    pub kind: String,
    /// Since when it has been claimable: queued since `run_after`, or orphaned since its lease
    /// expired.
    pub ready_since: Millis,
    /// Its share of the job's estimate, in media seconds (the weight the load report counts).
    pub weight: f64,
    /// The job's input as admission or the first probe recorded it.
    pub input_size: Option<u64>,
    pub input_key: Option<String>,
    /// How many outputs the job asked for (its spec's renditions), for an output estimate.
    pub outputs: usize,
    /// The task's payload (an `encode_segment`'s range index), as a claim would hand it out.
    pub payload: serde_json::Value,
    /// The outputs of the tasks it depends on, by task id, as in [`Claim::dependencies`]: a
    /// piece's offer reads the `split` task's output to say which stored pieces a thief moves.
    pub dependencies: Vec<(String, serde_json::Value)>,
}

/// The task a peer's claim should name at `now` ([`offer_probe`]: the longest of the front of
/// the line, not always the head), read without claiming or locking. Like the claim, orphaned
/// tasks come first; a task whose lease expired with no attempt left
/// is offered too (the claim would fail it and look further: the offer is a hint, the claim
/// decides).
pub(crate) async fn offer(
    db: &mut dyn Conn,
    peer: PeerClaim<'_>,
    now: Millis,
) -> Result<Option<PeerOffer>, StoreError> {
    if peer.kinds.is_empty() {
        return Ok(None);
    }
    let dialect = db.dialect();
    let args = || {
        let mut a = args![peer.probe_now(now)];
        a.extend(peer.args());
        a
    };
    let mut candidate = None;
    for status in ["running", "queued"] {
        candidate = db
            .pairs(&offer_probe(status, dialect, peer.probe()), args())
            .await?
            .pop();
        if candidate.is_some() {
            break;
        }
    }
    let Some((job_id, task_id)) = candidate else {
        return Ok(None);
    };
    let Some((job, rows)) = load_job(db, &job_id, false).await? else {
        return Ok(None);
    };
    let Some(row) = rows.iter().find(|r| r.state.id == task_id) else {
        return Ok(None);
    };
    let ready_since = match row.state.status {
        TaskStatus::Running => row.state.lease_expires_at.unwrap_or(row.state.run_after),
        _ => row.state.run_after,
    };
    let outputs = serde_json::from_str::<serde_json::Value>(&job.spec_json)
        .ok()
        .and_then(|s| s.get("outputs").and_then(|o| o.as_array()).map(Vec::len))
        .unwrap_or(1)
        .max(1);
    Ok(Some(PeerOffer {
        task_id,
        kind: row.state.kind.clone(),
        ready_since,
        weight: row.state.weight,
        input_size: job.input_facts.as_ref().and_then(|f| f.size),
        input_key: job.input_key.clone(),
        outputs,
        payload: row.payload.clone(),
        dependencies: row
            .state
            .depends_on
            .iter()
            .filter_map(|d| {
                rows.iter()
                    .find(|r| &r.state.id == d)
                    .map(|r| (d.clone(), r.state.outputs.clone().unwrap_or_default()))
            })
            .collect(),
    }))
}

pub(crate) async fn claim(
    db: &mut dyn Conn,
    worker_id: &str,
    lease: Duration,
    now: Millis,
    peer: Option<PeerClaim<'_>>,
) -> Result<Option<Claim>, StoreError> {
    if peer.is_some_and(|p| p.kinds.is_empty()) {
        return Ok(None);
    }
    let lease_expires_at = millis_after(now, lease);
    // A peer sees only tasks that have been claimable at home for `ready_for`.
    let probe_now = peer.map_or(now, |p| p.probe_now(now));
    let probe_args = || {
        let mut a: Vec<Arg> = args![probe_now];
        if let Some(p) = peer {
            a.extend(p.args());
        }
        a
    };
    let shape = peer.map(|p| p.probe());
    for _ in 0..CLAIM_PROBES {
        let dialect = db.dialect();
        let mut candidate = db
            .pairs(&claim_probe("running", dialect, shape, true), probe_args())
            .await?
            .pop();
        if candidate.is_none() {
            candidate = db
                .pairs(&claim_probe("queued", dialect, shape, true), probe_args())
                .await?
                .pop();
        }
        let Some((job_id, task_id)) = candidate else {
            return Ok(None);
        };
        let Some((job, rows)) = load_job(db, &job_id, true).await? else {
            continue;
        };
        let before: Vec<TaskState> = rows.iter().map(|r| r.state.clone()).collect();
        let Some(task) = before.iter().find(|t| t.id == task_id) else {
            continue;
        };
        let before_job = job_state(&job);
        if task.lease_expired(now) && task.attempts >= task.max_attempts {
            let event = Event::LeaseExpired {
                task: task_id.clone(),
            };
            let t = machine::apply(&before, &before_job, &event, now)
                .map_err(|e| StoreError::InvalidTasks(e.to_string()))?;
            if t.outcome == Outcome::TaskFailed {
                write(db, &job_id, &before, &before_job, &t, now).await?;
                tracing::warn!(
                    job_id,
                    task_id,
                    attempts = task.attempts,
                    "lease expired with no attempts left; job failed"
                );
            }
            continue;
        }
        let took_over = task.status == TaskStatus::Running;
        let event = Event::Claimed {
            task: task_id.clone(),
            worker: worker_id.to_string(),
            lease_expires_at,
        };
        let t = machine::apply(&before, &before_job, &event, now)
            .map_err(|e| StoreError::InvalidTasks(e.to_string()))?;
        if t.outcome != Outcome::Applied {
            // Taken (or changed) by a concurrent transaction since the probe's snapshot.
            continue;
        }
        write(db, &job_id, &before, &before_job, &t, now).await?;
        // Where this attempt runs; a peer's claim also marks the task as moved, for good.
        match peer {
            Some(p) => {
                db.exec(
                    "UPDATE tasks SET ran_on = $1, moved_to = $1 WHERE id = $2",
                    args![p.peer, &task_id],
                )
                .await?
            }
            None => {
                db.exec(
                    "UPDATE tasks SET ran_on = $1 WHERE id = $2",
                    args![&job.cluster, &task_id],
                )
                .await?
            }
        };
        if took_over {
            tracing::info!(job_id, task_id, "took over a task whose lease expired");
        }
        let i = before.iter().position(|s| s.id == task_id).unwrap_or(0);
        let claimed = &t.tasks[i];
        let dependencies = claimed
            .depends_on
            .iter()
            .filter_map(|d| {
                t.tasks
                    .iter()
                    .find(|s| &s.id == d)
                    .map(|s| (d.clone(), s.outputs.clone().unwrap_or_default()))
            })
            .collect();
        return Ok(Some(Claim {
            job: existing_job(db, &job_id).await?,
            task_id,
            kind: claimed.kind.clone(),
            payload: rows[i].payload.clone(),
            attempt: claimed.attempts,
            lease_expires_at,
            dependencies,
            weight: claimed.weight,
        }));
    }
    Ok(None)
}

pub(crate) async fn renew(
    db: &mut dyn Conn,
    Holder {
        task_id,
        worker_id,
        attempt,
    }: Holder<'_>,
    lease: Duration,
    progress: Option<f64>,
    eta_at: Option<Millis>,
    hold_limit: Option<Duration>,
    now: Millis,
) -> Result<RenewOutcome, StoreError> {
    let event = Event::Progress {
        task: task_id.to_string(),
        worker: worker_id.to_string(),
        attempt,
        progress,
        eta_at,
        lease_expires_at: millis_after(now, lease),
        hold_limit: hold_limit.map(|d| millis_after(0, d)),
    };
    Ok(match task_event(db, task_id, event, now).await? {
        Some(Outcome::Applied) => RenewOutcome::Renewed,
        Some(Outcome::Rejected(Rejection::Cancelled)) => RenewOutcome::Cancelled,
        _ => RenewOutcome::LeaseLost,
    })
}

pub(crate) async fn complete(
    db: &mut dyn Conn,
    Holder {
        task_id,
        worker_id,
        attempt,
    }: Holder<'_>,
    outputs: serde_json::Value,
    timings: Option<&crate::model::PhaseTimings>,
    now: Millis,
) -> Result<bool, StoreError> {
    let event = Event::Succeeded {
        task: task_id.to_string(),
        worker: worker_id.to_string(),
        attempt,
        outputs,
    };
    let applied = task_event(db, task_id, event, now).await? == Some(Outcome::Applied);
    // In the completion's own transaction: a succeeded task never shows without its timings,
    // and recording them costs no extra commit on the task's critical path.
    if let (true, Some(t)) = (applied, timings) {
        db.exec(
            "UPDATE tasks SET timings = $1 WHERE id = $2",
            args![json_text(t, "timings")?, task_id],
        )
        .await?;
    }
    Ok(applied)
}

/// The lease holder's success that grows its job's graph ([`Event::Grown`]): the new task rows
/// (claim order copied from the grower: priority, owner, turn), the job's new estimate, split
/// decision and input, all in the completion's transaction. False, changing nothing, when the
/// attempt is no longer the holder's (or the job was cancelled).
pub(crate) async fn grow(
    db: &mut dyn Conn,
    Holder {
        task_id,
        worker_id,
        attempt,
    }: Holder<'_>,
    outputs: serde_json::Value,
    growth: &crate::model::Growth,
    timings: Option<&crate::model::PhaseTimings>,
    now: Millis,
) -> Result<bool, StoreError> {
    let Some(job_id) = job_of_task(db, task_id).await? else {
        return Ok(false);
    };
    let Some((job, rows)) = load_job(db, &job_id, true).await? else {
        return Ok(false);
    };
    let prefix = format!("{job_id}.");
    let existing: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.state.id.strip_prefix(&prefix))
        .collect();
    let Some(grower) = rows.iter().find(|r| r.state.id == task_id) else {
        return Ok(false);
    };
    let task_id_of = |key: &str| format!("{prefix}{key}");
    let weights = scaled_weights(&growth.tasks, growth.estimated_seconds);
    let add: Vec<TaskState> = growth
        .tasks
        .iter()
        .zip(&weights)
        .map(|(t, w)| {
            let depends_on: Vec<String> = t.depends_on.iter().map(|d| task_id_of(d)).collect();
            TaskState {
                id: task_id_of(&t.key),
                kind: t.kind.clone(),
                status: machine::initial_status(&depends_on),
                depends_on,
                attempts: 0,
                max_attempts: grower.state.max_attempts,
                lease_owner: None,
                lease_expires_at: None,
                claimed_at: None,
                eta_at: None,
                run_after: now,
                progress: 0.0,
                weight: *w,
                error: None,
                outputs: None,
            }
        })
        .collect();
    let before: Vec<TaskState> = rows.iter().map(|r| r.state.clone()).collect();
    let before_job = job_state(&job);
    let event = Event::Grown {
        task: task_id.to_string(),
        worker: worker_id.to_string(),
        attempt,
        outputs,
        weight: growth.grower_weight,
        add: add.clone(),
    };
    let t = machine::apply(&before, &before_job, &event, now)
        .map_err(|e| StoreError::InvalidTasks(e.to_string()))?;
    match t.outcome {
        Outcome::Applied => {}
        Outcome::Rejected(Rejection::BadGraph) => {
            return Err(StoreError::InvalidTasks(format!(
                "the tasks task {task_id} adds are not a graph its job can run"
            )))
        }
        _ => return Ok(false),
    }
    // Keys as a new job's (the machine checked the graph by id; this checks their spelling).
    crate::model::check_tasks_after(&growth.tasks, &existing).map_err(StoreError::InvalidTasks)?;
    for (n, new) in growth.tasks.iter().zip(&add) {
        db.exec(
            "INSERT INTO tasks (id, job_id, kind, status, priority, created_at, run_after, \
                 attempts, max_attempts, owner, fair_seq, payload, depends_on, weight, position, \
                 progress) \
             SELECT $1, job_id, $2, $3, priority, $4, $4, 0, max_attempts, owner, fair_seq, $5, \
                 $6, $7, $8, 0 FROM tasks WHERE id = $9",
            args![
                &new.id,
                &new.kind,
                new.status.as_str(),
                now,
                json_text(&n.payload, "task payload")?,
                json_text(&new.depends_on, "depends_on")?,
                new.weight,
                n.position,
                task_id
            ],
        )
        .await?;
    }
    db.exec(
        "UPDATE tasks SET weight = $1 WHERE id = $2",
        args![
            t.tasks
                .iter()
                .find(|s| s.id == task_id)
                .map_or(0.0, |s| s.weight),
            task_id
        ],
    )
    .await?;
    write(db, &job_id, &before, &before_job, &t, now).await?;
    db.exec(
        "UPDATE jobs SET estimated_seconds = $1, split_json = COALESCE($2, split_json), \
             input_key = COALESCE(input_key, $3) WHERE id = $4",
        args![
            growth.estimated_seconds,
            growth.split_json.clone(),
            growth.input_key.clone(),
            &job_id
        ],
    )
    .await?;
    if let Some(timings) = timings {
        db.exec(
            "UPDATE tasks SET timings = $1 WHERE id = $2",
            args![json_text(timings, "timings")?, task_id],
        )
        .await?;
    }
    Ok(true)
}

/// See [`crate::JobStore::set_split_view`].
pub(crate) async fn set_split_view(
    db: &mut dyn Conn,
    id: &str,
    split_json: &str,
) -> Result<bool, StoreError> {
    Ok(db
        .exec(
            "UPDATE jobs SET split_json = $1 WHERE id = $2",
            args![clean_text(split_json), id],
        )
        .await?
        > 0)
}

pub(crate) fn files_json(outputs: &[StoredOutput]) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(outputs)
        .map_err(|e| StoreError::Corrupt(format!("outputs do not serialize: {e}")))
}

pub(crate) async fn fail(
    db: &mut dyn Conn,
    Holder {
        task_id,
        worker_id,
        attempt,
    }: Holder<'_>,
    error: ErrorDetail,
    retry_after: Option<Duration>,
    now: Millis,
) -> Result<FailOutcome, StoreError> {
    let event = Event::Failed {
        task: task_id.to_string(),
        worker: worker_id.to_string(),
        attempt,
        error: clean_error(&error),
        retry_after: retry_after.map(|d| millis_after(0, d)),
    };
    Ok(match task_event(db, task_id, event, now).await? {
        Some(Outcome::Requeued { run_after }) => FailOutcome::Requeued { run_after },
        Some(Outcome::TaskFailed) => FailOutcome::Failed,
        _ => FailOutcome::LeaseLost,
    })
}

/// Hands the holder's task back uncounted. `forget_move`: the attempt of a peer that never
/// began (its inputs could not be listed or fetched) also forgets that the task moved, so it
/// may still be offered to a peer once more; a release after the work began keeps the mark (a
/// task moves at most once).
pub(crate) async fn release(
    db: &mut dyn Conn,
    Holder {
        task_id,
        worker_id,
        attempt,
    }: Holder<'_>,
    forget_move: bool,
    now: Millis,
) -> Result<(), StoreError> {
    let event = Event::Released {
        task: task_id.to_string(),
        worker: worker_id.to_string(),
        attempt,
    };
    if task_event(db, task_id, event, now).await? != Some(Outcome::Applied) {
        tracing::debug!(
            task_id,
            worker_id,
            attempt,
            "release of a task no longer owned ignored"
        );
    } else if forget_move {
        db.exec(
            "UPDATE tasks SET moved_to = NULL, ran_on = NULL WHERE id = $1",
            args![task_id],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn cancel(
    db: &mut dyn Conn,
    id: &str,
    now: Millis,
) -> Result<CancelOutcome, StoreError> {
    let Some((t, _)) = transition(db, id, &Event::Cancel, now).await? else {
        return Ok(CancelOutcome::NotFound);
    };
    let job = existing_job(db, id).await?;
    Ok(match t.outcome {
        Outcome::Rejected(_) => CancelOutcome::AlreadyFinished(job),
        _ => CancelOutcome::Cancelled(job),
    })
}

/// Waiting tasks (queued or blocked) and running ones, counted in tasks: a slot runs a task.
pub(crate) async fn counts(db: &mut dyn Conn) -> Result<QueueCounts, StoreError> {
    db.counts(
        "SELECT \
             COALESCE(SUM(CASE WHEN status IN ('queued', 'blocked') THEN 1 ELSE 0 END), 0) \
                 AS queued, \
             COALESCE(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0) AS running, \
             COALESCE(SUM(CASE WHEN status IN ('queued', 'blocked') THEN weight ELSE 0.0 END), \
                      0.0) AS queued_seconds \
         FROM tasks WHERE status IN ('queued', 'blocked', 'running')",
        Vec::new(),
    )
    .await
}

/// Every running attempt with what the load report needs to judge it: its lease expiry (a
/// lapsed one is a dead worker's) and whether a peer runs it (a stolen task: the peer's claim
/// set `ran_on` = `moved_to`; a home claim after that sets `ran_on` back to this cluster).
/// One statement for both back ends; `on_peer` is an integer because SQLite has no booleans.
pub(crate) async fn running_attempts(db: &mut dyn Conn) -> Result<Vec<RunningAttempt>, StoreError> {
    db.running(
        "SELECT weight AS estimated_seconds, progress, claimed_at, eta_at, lease_expires_at, \
                CAST(CASE WHEN moved_to IS NOT NULL AND ran_on = moved_to THEN 1 ELSE 0 END \
                     AS BIGINT) AS on_peer \
         FROM tasks WHERE status = $1",
        args![TaskStatus::Running.as_str()],
    )
    .await
}

/// Newest first, optionally one owner's and one status's, after `cursor`; one extra row tells
/// whether another page exists without a COUNT.
/// Finished jobs with something left to delete under `cutoffs`, claimed for this sweeper until
/// `now + lease`: each claim is a guarded UPDATE (`purge_lease_until < now`), so of several
/// replicas scanning at once exactly one gets each job (in Postgres the loser's UPDATE waits for
/// the winner's row lock and then matches nothing). Returned with their tasks, whose ids name
/// the task intermediates' prefixes.
pub(crate) async fn claim_expired(
    db: &mut dyn Conn,
    cutoffs: RetentionCutoffs,
    now: Millis,
    lease: Duration,
    limit: u32,
) -> Result<Vec<Job>, StoreError> {
    let candidates = db
        .jobs(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs \
                 WHERE deleted_at IS NULL AND finished_at IS NOT NULL AND purge_lease_until < $1 \
                   AND ((status = 'succeeded' AND finished_at < $2) \
                     OR (status = 'succeeded' AND inputs_deleted_at IS NULL AND finished_at < $3) \
                     OR (status = 'failed' AND finished_at < $4) \
                     OR (status = 'cancelled' AND finished_at < $5)) \
                 ORDER BY finished_at LIMIT $6"
            ),
            args![
                now,
                cutoffs.succeeded,
                cutoffs.inputs_after_success,
                cutoffs.failed,
                cutoffs.cancelled,
                i64::from(limit.max(1))
            ],
        )
        .await?;
    let until = millis_after(now, lease);
    let mut claimed = Vec::new();
    for job in candidates {
        let n = db
            .exec(
                "UPDATE jobs SET purge_lease_until = $1 \
                 WHERE id = $2 AND deleted_at IS NULL AND purge_lease_until < $3",
                args![until, job.id.as_str(), now],
            )
            .await?;
        if n == 1 {
            claimed.push(job);
        }
    }
    with_tasks(db, &mut claimed).await?;
    Ok(claimed)
}

/// Records that the job's objects in `scope` are gone (after they were deleted: a crash in
/// between leaves the job to be swept again, and deleting twice is harmless). `All` leaves a
/// tombstone: status and history kept, outputs emptied. Only a finished job can be purged;
/// `None` when there is no such finished job.
pub(crate) async fn mark_purged(
    db: &mut dyn Conn,
    id: &str,
    scope: Purge,
    now: Millis,
) -> Result<Option<Job>, StoreError> {
    let sql = match scope {
        Purge::All => {
            "UPDATE jobs SET deleted_at = COALESCE(deleted_at, $1), \
             inputs_deleted_at = COALESCE(inputs_deleted_at, $1), outputs = '[]', \
             purge_lease_until = 0 WHERE id = $2 AND finished_at IS NOT NULL"
        }
        Purge::Inputs => {
            "UPDATE jobs SET inputs_deleted_at = COALESCE(inputs_deleted_at, $1), \
             purge_lease_until = 0 WHERE id = $2 AND finished_at IS NOT NULL"
        }
    };
    if db.exec(sql, args![now, id]).await? == 0 {
        return Ok(None);
    }
    get_job(db, id).await
}

/// Sets the job's `playable_at` once, before it ends (progressive HLS of a split job). Not
/// only while `running`: between two tasks (one worker, the next range not claimed yet) the
/// rollup says `queued`.
pub(crate) async fn mark_playable(
    db: &mut dyn Conn,
    id: &str,
    at: Millis,
) -> Result<bool, StoreError> {
    let sql = "UPDATE jobs SET playable_at = $1 \
               WHERE id = $2 AND playable_at IS NULL AND status IN ('queued', 'running')";
    Ok(db.exec(sql, args![at, id]).await? > 0)
}

/// The outputs of the job's succeeded tasks, by task id, in claim order.
pub(crate) async fn task_outputs(
    db: &mut dyn Conn,
    job_id: &str,
) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
    Ok(job_tasks(db, job_id)
        .await?
        .into_iter()
        .filter(|t| t.state.status == TaskStatus::Succeeded)
        .filter_map(|t| Some((t.state.id, t.state.outputs?)))
        .collect())
}

/// Records what probing the job's input found (the latest probe wins: a retried attempt may
/// probe again). `false` when there is no such job.
pub(crate) async fn set_input_facts(
    db: &mut dyn Conn,
    id: &str,
    facts: &InputFacts,
) -> Result<bool, StoreError> {
    let n = db
        .exec(
            "UPDATE jobs SET input_facts = $1 WHERE id = $2",
            args![json_text(facts, "input facts")?, id],
        )
        .await?;
    Ok(n > 0)
}

pub(crate) async fn list_jobs_filtered(
    db: &mut dyn Conn,
    owner: Option<&str>,
    want: &JobFilter,
    limit: u32,
    cursor: Option<&str>,
) -> Result<(Vec<Job>, Option<String>), StoreError> {
    let status = want.status;
    let limit = limit.max(1);
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
    let mut args: Vec<Arg> = Vec::new();
    let mut filter = |column: &str, op: &str, value: &str, args: &mut Vec<Arg>| {
        args.push(Arg::from(value));
        sql.push_str(&format!(" AND {column} {op} ${}", args.len()));
    };
    if let Some(owner) = owner {
        filter("owner", "=", owner, &mut args);
    }
    if let Some(status) = status {
        filter("status", "=", status.as_str(), &mut args);
    }
    if let Some(cursor) = cursor {
        filter("id", "<", cursor, &mut args);
    }
    // One probe of `job_metadata_lookup` per pair (migration 0014).
    for (key, value) in &want.metadata {
        args.push(Arg::from(clean_text(key)));
        args.push(Arg::from(clean_text(value)));
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM job_metadata m WHERE m.job_id = jobs.id \
             AND m.key = ${} AND m.value = ${})",
            args.len() - 1,
            args.len()
        ));
    }
    args.push(Arg::I64(i64::from(limit) + 1));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    let mut jobs = db.jobs(&sql, args).await?;
    let next = if jobs.len() > limit as usize {
        jobs.truncate(limit as usize);
        jobs.last().map(|j| j.id.clone())
    } else {
        None
    };
    with_tasks(db, &mut jobs).await?;
    Ok((jobs, next))
}

/// `impl Conn for $wrapper` over `$conn` (the back end's connection type) of database
/// `$database`; `$dialect` and `$notify` (an `async fn(&mut $conn, &str)`) are its only
/// differences. Expanded once per back end.
macro_rules! conn_impl {
    ($wrapper:ident, $conn:ty, $database:ty, $dialect:expr, $notify:path) => {
        /// The back end's connection, inside a transaction, as a [`crate::ops::Conn`].
        pub(crate) struct $wrapper<'c>(pub(crate) &'c mut $conn);

        fn bind<'q>(
            mut q: sqlx::query::Query<'q, $database, <$database as sqlx::Database>::Arguments<'q>>,
            args: Vec<crate::ops::Arg>,
        ) -> sqlx::query::Query<'q, $database, <$database as sqlx::Database>::Arguments<'q>> {
            use crate::ops::Arg;
            for a in args {
                q = match a {
                    Arg::Text(v) => q.bind(v),
                    Arg::OptText(v) => q.bind(v),
                    Arg::I64(v) => q.bind(v),
                    Arg::OptI64(v) => q.bind(v),
                    Arg::F64(v) => q.bind(v),
                    Arg::Bool(v) => q.bind(v),
                };
            }
            q
        }

        #[async_trait::async_trait]
        impl crate::ops::Conn for $wrapper<'_> {
            fn dialect(&self) -> &'static crate::ops::Dialect {
                &$dialect
            }

            async fn exec(
                &mut self,
                sql: &str,
                args: Vec<crate::ops::Arg>,
            ) -> Result<u64, StoreError> {
                Ok(bind(sqlx::query(sql), args)
                    .execute(&mut *self.0)
                    .await?
                    .rows_affected())
            }

            async fn jobs(
                &mut self,
                sql: &str,
                args: Vec<crate::ops::Arg>,
            ) -> Result<Vec<crate::model::Job>, StoreError> {
                let rows = bind(sqlx::query(sql), args).fetch_all(&mut *self.0).await?;
                rows.iter().map(job_from_row).collect()
            }

            async fn tasks(
                &mut self,
                sql: &str,
                args: Vec<crate::ops::Arg>,
            ) -> Result<Vec<crate::ops::TaskRow>, StoreError> {
                let rows = bind(sqlx::query(sql), args).fetch_all(&mut *self.0).await?;
                rows.iter().map(task_from_row).collect()
            }

            async fn events(
                &mut self,
                sql: &str,
                args: Vec<crate::ops::Arg>,
            ) -> Result<Vec<crate::model::JobEvent>, StoreError> {
                let rows = bind(sqlx::query(sql), args).fetch_all(&mut *self.0).await?;
                rows.iter().map(event_from_row).collect()
            }

            async fn pairs(
                &mut self,
                sql: &str,
                args: Vec<crate::ops::Arg>,
            ) -> Result<Vec<(String, String)>, StoreError> {
                use sqlx::Row;
                let rows = bind(sqlx::query(sql), args).fetch_all(&mut *self.0).await?;
                rows.iter()
                    .map(|r| Ok((r.try_get("a")?, r.try_get("b")?)))
                    .collect()
            }

            async fn int(
                &mut self,
                sql: &str,
                args: Vec<crate::ops::Arg>,
            ) -> Result<Option<i64>, StoreError> {
                use sqlx::Row;
                let row = bind(sqlx::query(sql), args)
                    .fetch_optional(&mut *self.0)
                    .await?;
                Ok(match row {
                    Some(row) => row.try_get::<Option<i64>, _>(0)?,
                    None => None,
                })
            }

            async fn counts(
                &mut self,
                sql: &str,
                args: Vec<crate::ops::Arg>,
            ) -> Result<crate::model::QueueCounts, StoreError> {
                let row = bind(sqlx::query(sql), args).fetch_one(&mut *self.0).await?;
                counts_from_row(&row)
            }

            async fn running(
                &mut self,
                sql: &str,
                args: Vec<crate::ops::Arg>,
            ) -> Result<Vec<crate::model::RunningAttempt>, StoreError> {
                let rows = bind(sqlx::query(sql), args).fetch_all(&mut *self.0).await?;
                rows.iter().map(running_from_row).collect()
            }

            async fn deliveries(
                &mut self,
                sql: &str,
                args: Vec<crate::ops::Arg>,
            ) -> Result<Vec<crate::webhooks::Delivery>, StoreError> {
                let rows = bind(sqlx::query(sql), args).fetch_all(&mut *self.0).await?;
                rows.iter().map(delivery_from_row).collect()
            }

            async fn attempts(
                &mut self,
                sql: &str,
                args: Vec<crate::ops::Arg>,
            ) -> Result<Vec<crate::webhooks::DeliveryAttempt>, StoreError> {
                let rows = bind(sqlx::query(sql), args).fetch_all(&mut *self.0).await?;
                rows.iter().map(attempt_from_row).collect()
            }

            async fn notify(&mut self, job_id: &str) -> Result<(), StoreError> {
                $notify(&mut *self.0, job_id).await
            }
        }
    };
}
pub(crate) use conn_impl;

/// Runs `$body` (which sees the connection as `$db: &mut dyn Conn`) in the transaction that
/// `$begin` opens, committing on success and rolling back (explicitly, so Postgres
/// releases row locks at once) on error.
macro_rules! in_tx {
    ($begin:expr, $wrapper:ident, |$db:ident| $body:expr) => {{
        let mut tx = $begin.await?;
        let result = {
            let mut conn = $wrapper(&mut *tx);
            let $db: &mut dyn crate::ops::Conn = &mut conn;
            $body.await
        };
        match result {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }};
}
pub(crate) use in_tx;

/// `impl JobStore for $store`, the same for every back end: each method is one transaction
/// around its operation above. `$store` has `begin()` (a write transaction), `read()` (a read
/// transaction) and `ping()`-able `pool`; `$wrapper` is its [`Conn`].
macro_rules! job_store_impl {
    ($store:ty, $wrapper:ident) => {
        #[async_trait::async_trait]
        impl crate::store::JobStore for $store {
            async fn create_job(
                &self,
                new: crate::model::NewJob,
            ) -> Result<crate::model::CreateOutcome, StoreError> {
                let now = crate::model::now_millis();
                let mut tx = self.begin().await?;
                let created = {
                    let mut conn = $wrapper(&mut *tx);
                    crate::ops::create_job(&mut conn, &new, now).await
                };
                match created {
                    Ok(crate::ops::Created::New(job)) => {
                        tx.commit().await?;
                        Ok(crate::model::CreateOutcome::Created(job))
                    }
                    Ok(crate::ops::Created::Reused(outcome)) => {
                        tx.rollback().await?;
                        outcome
                    }
                    Err(e) => {
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                }
            }

            async fn get_job(&self, id: &str) -> Result<Option<crate::model::Job>, StoreError> {
                crate::ops::in_tx!(self.read(), $wrapper, |db| crate::ops::get_job(db, id))
            }

            async fn list_jobs_filtered(
                &self,
                owner: Option<&str>,
                filter: &crate::model::JobFilter,
                limit: u32,
                cursor: Option<&str>,
            ) -> Result<(Vec<crate::model::Job>, Option<String>), StoreError> {
                crate::ops::in_tx!(self.read(), $wrapper, |db| crate::ops::list_jobs_filtered(
                    db, owner, filter, limit, cursor
                ))
            }

            async fn set_input_facts(
                &self,
                id: &str,
                facts: &reelay_protocol::InputFacts,
            ) -> Result<bool, StoreError> {
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::set_input_facts(
                    db, id, facts
                ))
            }

            async fn claim(
                &self,
                worker_id: &str,
                lease: std::time::Duration,
            ) -> Result<Option<crate::model::Claim>, StoreError> {
                let now = crate::model::now_millis();
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::claim(
                    db, worker_id, lease, now, None
                ))
            }

            async fn claim_for_peer(
                &self,
                peer: crate::ops::PeerClaim<'_>,
                worker_id: &str,
                lease: std::time::Duration,
            ) -> Result<Option<crate::model::Claim>, StoreError> {
                let now = crate::model::now_millis();
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::claim(
                    db,
                    worker_id,
                    lease,
                    now,
                    Some(peer)
                ))
            }

            async fn renew(
                &self,
                task_id: &str,
                worker_id: &str,
                attempt: u32,
                lease: std::time::Duration,
                progress: Option<f64>,
                eta_at: Option<crate::model::Millis>,
            ) -> Result<crate::model::RenewOutcome, StoreError> {
                let now = crate::model::now_millis();
                let holder = crate::ops::Holder {
                    task_id,
                    worker_id,
                    attempt,
                };
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::renew(
                    db, holder, lease, progress, eta_at, None, now
                ))
            }

            #[allow(clippy::too_many_arguments)]
            async fn renew_held(
                &self,
                task_id: &str,
                worker_id: &str,
                attempt: u32,
                lease: std::time::Duration,
                progress: Option<f64>,
                eta_at: Option<crate::model::Millis>,
                hold_limit: std::time::Duration,
            ) -> Result<crate::model::RenewOutcome, StoreError> {
                let now = crate::model::now_millis();
                let holder = crate::ops::Holder {
                    task_id,
                    worker_id,
                    attempt,
                };
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::renew(
                    db,
                    holder,
                    lease,
                    progress,
                    eta_at,
                    Some(hold_limit),
                    now
                ))
            }

            async fn complete_task_timed(
                &self,
                task_id: &str,
                worker_id: &str,
                attempt: u32,
                outputs: serde_json::Value,
                timings: Option<&crate::model::PhaseTimings>,
            ) -> Result<bool, StoreError> {
                let now = crate::model::now_millis();
                let holder = crate::ops::Holder {
                    task_id,
                    worker_id,
                    attempt,
                };
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::complete(
                    db, holder, outputs, timings, now
                ))
            }

            async fn set_split_view(&self, id: &str, split_json: &str) -> Result<bool, StoreError> {
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::set_split_view(
                    db, id, split_json
                ))
            }

            async fn grow(
                &self,
                task_id: &str,
                worker_id: &str,
                attempt: u32,
                outputs: serde_json::Value,
                growth: &crate::model::Growth,
                timings: Option<&crate::model::PhaseTimings>,
            ) -> Result<bool, StoreError> {
                let now = crate::model::now_millis();
                let holder = crate::ops::Holder {
                    task_id,
                    worker_id,
                    attempt,
                };
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::grow(
                    db, holder, outputs, growth, timings, now
                ))
            }

            async fn fail(
                &self,
                task_id: &str,
                worker_id: &str,
                attempt: u32,
                error: reelay_protocol::ErrorDetail,
                retry_after: Option<std::time::Duration>,
            ) -> Result<crate::model::FailOutcome, StoreError> {
                let now = crate::model::now_millis();
                let holder = crate::ops::Holder {
                    task_id,
                    worker_id,
                    attempt,
                };
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::fail(
                    db,
                    holder,
                    error,
                    retry_after,
                    now
                ))
            }

            async fn release(
                &self,
                task_id: &str,
                worker_id: &str,
                attempt: u32,
            ) -> Result<(), StoreError> {
                let now = crate::model::now_millis();
                let holder = crate::ops::Holder {
                    task_id,
                    worker_id,
                    attempt,
                };
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::release(
                    db, holder, false, now
                ))
            }

            async fn release_unstarted(
                &self,
                task_id: &str,
                worker_id: &str,
                attempt: u32,
            ) -> Result<(), StoreError> {
                let now = crate::model::now_millis();
                let holder = crate::ops::Holder {
                    task_id,
                    worker_id,
                    attempt,
                };
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::release(
                    db, holder, true, now
                ))
            }

            async fn peer_offer(
                &self,
                peer: crate::ops::PeerClaim<'_>,
            ) -> Result<Option<crate::ops::PeerOffer>, StoreError> {
                let now = crate::model::now_millis();
                crate::ops::in_tx!(self.read(), $wrapper, |db| crate::ops::offer(db, peer, now))
            }

            async fn cancel(&self, id: &str) -> Result<crate::model::CancelOutcome, StoreError> {
                let now = crate::model::now_millis();
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::cancel(db, id, now))
            }

            async fn claim_expired(
                &self,
                cutoffs: crate::model::RetentionCutoffs,
                lease: std::time::Duration,
                limit: u32,
            ) -> Result<Vec<crate::model::Job>, StoreError> {
                let now = crate::model::now_millis();
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::claim_expired(
                    db, cutoffs, now, lease, limit
                ))
            }

            async fn mark_purged(
                &self,
                id: &str,
                scope: crate::model::Purge,
            ) -> Result<Option<crate::model::Job>, StoreError> {
                let now = crate::model::now_millis();
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::mark_purged(
                    db, id, scope, now
                ))
            }

            async fn mark_playable(
                &self,
                id: &str,
                at: crate::model::Millis,
            ) -> Result<bool, StoreError> {
                crate::ops::in_tx!(self.begin(), $wrapper, |db| crate::ops::mark_playable(
                    db, id, at
                ))
            }

            async fn task_outputs(
                &self,
                job_id: &str,
            ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
                crate::ops::in_tx!(self.read(), $wrapper, |db| crate::ops::task_outputs(
                    db, job_id
                ))
            }

            async fn counts(&self) -> Result<crate::model::QueueCounts, StoreError> {
                crate::ops::in_tx!(self.read(), $wrapper, |db| crate::ops::counts(db))
            }

            async fn running_attempts(
                &self,
            ) -> Result<Vec<crate::model::RunningAttempt>, StoreError> {
                crate::ops::in_tx!(self.read(), $wrapper, |db| crate::ops::running_attempts(db))
            }

            async fn job_events(
                &self,
                job_id: &str,
                after_seq: i64,
                limit: u32,
            ) -> Result<Vec<crate::model::JobEvent>, StoreError> {
                crate::ops::in_tx!(self.read(), $wrapper, |db| crate::ops::job_events(
                    db, job_id, after_seq, limit
                ))
            }

            async fn events_after(
                &self,
                after_id: i64,
                limit: u32,
            ) -> Result<Vec<crate::model::JobEvent>, StoreError> {
                crate::ops::in_tx!(self.read(), $wrapper, |db| crate::ops::events_after(
                    db, after_id, limit
                ))
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}
pub(crate) use job_store_impl;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewTask;

    #[test]
    fn weights_are_shares_of_the_job_estimate() {
        let task = |w| NewTask {
            weight: w,
            ..NewTask::transcode(0.0)
        };
        assert_eq!(scaled_weights(&[task(7.0)], 20.0), vec![20.0]);
        assert_eq!(
            scaled_weights(&[task(1.0), task(3.0)], 100.0),
            vec![25.0, 75.0]
        );
        assert_eq!(
            scaled_weights(&[task(0.0), task(f64::NAN)], 10.0),
            vec![5.0, 5.0]
        );
        assert_eq!(scaled_weights(&[task(1.0)], f64::NAN), vec![0.0]);
    }
}
