//! The storage contract shared by every backend.

use crate::model::{
    ApiToken, AwayTask, CancelOutcome, Claim, CreateOutcome, FailOutcome, Growth, Job, JobEvent,
    JobFilter, Millis, NewJob, NewToken, PhaseTimings, Purge, QueueCounts, RenewOutcome,
    RetentionCutoffs, RevocationRow, RunningAttempt, StoredOutput,
};
use reelay_protocol::{ErrorDetail, JobStatus};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("idempotency key already used with a different spec")]
    IdempotencyConflict,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A row the store wrote itself no longer decodes: a bug or manual tampering, never user input.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// The store was asked for something it cannot be, e.g. a database URL of an unknown kind.
    #[error("invalid job store configuration: {0}")]
    Config(String),
    /// A job's task list (or a task's outputs) breaks the task model: a caller's bug.
    #[error("invalid tasks: {0}")]
    InvalidTasks(String),
}

/// Everything the api and the workers do with jobs and their tasks.
///
/// Every state change is guarded so that concurrent callers (several api processes, many
/// workers, a worker that lost its lease but does not know yet) cannot produce two completions or
/// resurrect a finished job. Every change goes through [`crate::machine::apply`] and appends a
/// [`JobEvent`] when the job's status changes, in the same transaction. A trait, so the SQLite
/// and the Postgres backends share one test suite (`testsuite`). The stores also keep the
/// worker registry ([`WorkerRegistry`]) and API tokens ([`TokenStore`]); those are separate
/// traits, required here only so that one `Arc<dyn JobStore>` serves a process.
#[async_trait::async_trait]
pub trait JobStore:
    WorkerRegistry + TokenStore + crate::webhooks::WebhookStore + Send + Sync + 'static
{
    /// Inserts the job, all its tasks (one transaction; tasks with dependencies start
    /// `blocked`) and its `created` event. When `idempotency_key` was already used in this cluster:
    /// same `spec_hash` → [`CreateOutcome::Existing`] with the earlier job, otherwise
    /// [`StoreError::IdempotencyConflict`]. Concurrent creates with one key yield one `Created`.
    async fn create_job(&self, new: NewJob) -> Result<CreateOutcome, StoreError>;

    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError>;

    /// Newest first (ORDER BY id DESC; ids are ULID-suffixed so they sort by creation within a
    /// cluster). `cursor` is the id of the last job of the previous page; returns the page and the
    /// next cursor (None when there are no more). A `limit` of 0 is treated as 1.
    async fn list_jobs(
        &self,
        status: Option<JobStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Job>, Option<String>), StoreError> {
        self.list_jobs_of(None, status, limit, cursor).await
    }

    /// [`JobStore::list_jobs`] restricted to the jobs whose `owner` is `owner` (when given):
    /// what a non-admin API token may see.
    async fn list_jobs_of(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Job>, Option<String>), StoreError> {
        let filter = JobFilter {
            status,
            ..JobFilter::default()
        };
        self.list_jobs_filtered(owner, &filter, limit, cursor).await
    }

    /// [`JobStore::list_jobs_of`] with every condition of `filter` (status, metadata pairs).
    async fn list_jobs_filtered(
        &self,
        owner: Option<&str>,
        filter: &JobFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Job>, Option<String>), StoreError>;

    /// Records what probing the job's input found; `false` when there is no such job.
    async fn set_input_facts(
        &self,
        id: &str,
        facts: &reelay_protocol::InputFacts,
    ) -> Result<bool, StoreError>;

    /// Atomically hands ONE claimable task to `worker_id`: a task that is queued with
    /// run_after <= now, or running with an expired lease (its worker died). Highest priority
    /// first, then the owners' turns, then position within its job, then oldest. Increments attempts, sets lease owner/expiry, sets job status running
    /// and started_at (first time only). A task whose lease expired and that has already used
    /// max_attempts is instead marked failed with code "worker_lost" (and not returned); the
    /// search continues with the next one. Never hands the same task to two workers whose leases
    /// are both live.
    async fn claim(&self, worker_id: &str, lease: Duration) -> Result<Option<Claim>, StoreError>;

    /// [`JobStore::claim`] for a worker of another cluster (issue 16, remote claim): only tasks
    /// of `peer.kinds` that never moved before; the task records `ran_on` and `moved_to` =
    /// `peer.peer`, so it is never offered to a peer again (a task moves at most once). The
    /// lease, renewals and expiry are the home workers' own: a peer's worker that vanishes
    /// loses the task to the next claim, at home.
    async fn claim_for_peer(
        &self,
        peer: crate::ops::PeerClaim<'_>,
        worker_id: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, StoreError>;

    /// The task a [`JobStore::claim_for_peer`] naming it would hand out now with `peer`,
    /// without claiming it: the offer a cluster's `/v1/load` reports for the edge's stealing
    /// policy (issue 16). Of the first tasks such a claim could take, the one with the most
    /// expected work (longest first: the short ones are left for the end).
    async fn peer_offer(
        &self,
        peer: crate::ops::PeerClaim<'_>,
    ) -> Result<Option<crate::ops::PeerOffer>, StoreError>;

    /// Extends the lease if `worker_id` still owns this attempt of the task (an expired lease
    /// nobody took over yet still counts as owned); stores progress (clamped to 0..=1) when
    /// given. Returns Cancelled if the job was cancelled meanwhile, LeaseLost if someone else
    /// owns it now or it is no longer running.
    async fn renew(
        &self,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
        lease: Duration,
        progress: Option<f64>,
        eta_at: Option<Millis>,
    ) -> Result<RenewOutcome, StoreError>;

    /// [`JobStore::renew`] for an attempt that may hold its task at most `hold_limit` from its
    /// claim (a peer's): past that, [`RenewOutcome::LeaseLost`] and nothing changes, so the
    /// lease runs out and the task is claimed again.
    #[allow(clippy::too_many_arguments)]
    async fn renew_held(
        &self,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
        lease: Duration,
        progress: Option<f64>,
        eta_at: Option<Millis>,
        hold_limit: Duration,
    ) -> Result<RenewOutcome, StoreError>;

    /// Marks the task succeeded with these outputs (its job succeeds with them when it is the
    /// job's last task) — ONLY if `worker_id` still owns this attempt and the job was not
    /// cancelled (returns false otherwise and changes nothing). This is what makes "exactly one
    /// completion" true.
    async fn complete(
        &self,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
        outputs: Vec<StoredOutput>,
    ) -> Result<bool, StoreError> {
        let outputs = crate::ops::files_json(&outputs)?;
        self.complete_task(task_id, worker_id, attempt, outputs)
            .await
    }

    /// [`JobStore::complete`] with any JSON as the task's outputs: intermediate tasks (a split's
    /// piece list) hand theirs to the tasks that depend on them. The outputs of the tasks nothing
    /// depends on must be a list of [`StoredOutput`]s: they become the job's.
    async fn complete_task(
        &self,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
        outputs: serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.complete_task_timed(task_id, worker_id, attempt, outputs, None)
            .await
    }

    /// [`JobStore::complete_task`] that also stores where the attempt's time went, in the same
    /// transaction (nothing is stored when the completion does not apply).
    async fn complete_task_timed(
        &self,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
        outputs: serde_json::Value,
        timings: Option<&PhaseTimings>,
    ) -> Result<bool, StoreError>;

    /// Replaces the job view's split decision (JSON of `SplitView`): a task that decided, having
    /// probed the input, that the job stays one task says why. False when no such job.
    async fn set_split_view(&self, id: &str, split_json: &str) -> Result<bool, StoreError>;

    /// [`JobStore::complete_task_timed`] that also grows the job's graph by `growth` in the same
    /// transaction: a task that decided only now what its job needs (the split of an input the
    /// api could not probe) succeeds and the job's new tasks exist at once, or neither. False,
    /// changing nothing, when the attempt is no longer owned or the job was cancelled;
    /// [`StoreError::InvalidTasks`] when the new tasks are not a graph the job can run.
    async fn grow(
        &self,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
        outputs: serde_json::Value,
        growth: &Growth,
        timings: Option<&PhaseTimings>,
    ) -> Result<bool, StoreError>;

    /// Records a failure of this attempt (only if still owned). `retry_after: Some(d)` and
    /// attempts < max_attempts → task back to queued with run_after = now + d, error kept as the
    /// job's last error; otherwise the task fails, and with it the job (this error, finished_at),
    /// and the job's other tasks are cancelled. Not owned, or cancelled meanwhile → [`FailOutcome::LeaseLost`], no change.
    async fn fail(
        &self,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
        error: ErrorDetail,
        retry_after: Option<Duration>,
    ) -> Result<FailOutcome, StoreError>;

    /// Hands a running task back without counting the attempt (graceful shutdown): queued and
    /// claimable at once, attempts decremented, lease cleared. Only if still owned; otherwise a
    /// silent no-op, because whoever owns it now is not affected.
    async fn release(&self, task_id: &str, worker_id: &str, attempt: u32)
        -> Result<(), StoreError>;

    /// [`JobStore::release`] of a peer's attempt that never began (the owner could not list
    /// its inputs, or the peer could not fetch them): the task also forgets that it moved
    /// (`moved_to`, `ran_on`), so it may be offered to a peer again. A release after the work
    /// began goes through [`JobStore::release`] and keeps the mark: a task moves at most once.
    async fn release_unstarted(
        &self,
        task_id: &str,
        worker_id: &str,
        attempt: u32,
    ) -> Result<(), StoreError>;

    /// queued → cancelled at once; running → cancelled at once too (every task of the job
    /// cancelled, finished_at set, cancel_requested = true; workers learn it from
    /// renew/complete); terminal → AlreadyFinished.
    async fn cancel(&self, id: &str) -> Result<CancelOutcome, StoreError>;

    /// Waiting and running tasks (not jobs: a slot runs a task).
    /// Finished, not yet deleted jobs due under `cutoffs`, each claimed for this caller for
    /// `lease` (another replica's sweep skips them until then); at most `limit`, oldest first.
    async fn claim_expired(
        &self,
        cutoffs: RetentionCutoffs,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;

    /// Records that a finished job's objects in `scope` were deleted (idempotent); `None`
    /// when there is no such finished job.
    async fn mark_purged(&self, id: &str, scope: Purge) -> Result<Option<Job>, StoreError>;

    /// Records when a split job's HLS outputs first became playable while it encodes
    /// (progressive HLS): sets `playable_at` once, only before the job ends. `true` when this
    /// call set it. Whoever completes a task that makes the outputs playable calls it, so a
    /// race between two completions sets it once, at the later one.
    async fn mark_playable(&self, id: &str, at: Millis) -> Result<bool, StoreError>;

    /// The outputs of the job's succeeded tasks, by task id, in claim order: what a
    /// progressive view of a job still running is made from.
    async fn task_outputs(
        &self,
        job_id: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError>;

    async fn counts(&self) -> Result<QueueCounts, StoreError>;

    /// Every running attempt (at most the cluster's slots, so a small list), for the load report.
    async fn running_attempts(&self) -> Result<Vec<RunningAttempt>, StoreError>;

    /// The events of one job after its event number `after_seq` (0: from the start), oldest
    /// first, at most `limit`.
    async fn job_events(
        &self,
        job_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<JobEvent>, StoreError>;

    /// The outbox: events of every job after `after_id` (a [`JobEvent::id`]; 0 from the start),
    /// oldest first, at most `limit`. A reader keeps the highest id it handled; in Postgres an
    /// event can commit after one with a higher id, so a reader re-reads a few seconds back
    /// and skips (job_id, seq) pairs it already handled.
    async fn events_after(&self, after_id: i64, limit: u32) -> Result<Vec<JobEvent>, StoreError>;

    /// Cheap liveness query for /readyz.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Which workers are alive, with how many slots and how fast: the cluster's capacity.
#[async_trait::async_trait]
pub trait WorkerRegistry: Send + Sync {
    /// Records that `worker_id` is alive with `slots` job slots for `ttl` from now, its recent
    /// encode `speed` when it has one, and the peers' tasks it runs now (`away`, replacing the
    /// last beat's). Workers call it periodically; api replicas read the sums through
    /// [`WorkerRegistry::live_capacity`], [`WorkerRegistry::live_speed`] and
    /// [`WorkerRegistry::live_away`].
    async fn heartbeat(
        &self,
        worker_id: &str,
        slots: u32,
        ttl: Duration,
        speed: Option<f64>,
        away: &[AwayTask],
    ) -> Result<(), StoreError>;

    /// Forgets a worker at once (clean shutdown), instead of waiting for its heartbeat to expire.
    async fn deregister(&self, worker_id: &str) -> Result<(), StoreError>;

    /// Job slots of every worker whose heartbeat has not expired.
    async fn live_capacity(&self) -> Result<u32, StoreError>;

    /// The peers' tasks live workers run now, as running attempts whose lease is the worker's
    /// heartbeat: the slots they hold are busy, though no task row of this cluster says so.
    async fn live_away(&self) -> Result<Vec<RunningAttempt>, StoreError>;

    /// The live workers' encode speed (media seconds per wall second), averaged over their
    /// slots; `None` until some worker has finished a job.
    async fn live_speed(&self) -> Result<Option<f64>, StoreError>;
}

/// API tokens (`rly_…`) and the revocations of signed tokens (`rly2.…`).
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a new API token (id unique; a clash is a database error).
    async fn create_token(&self, new: NewToken) -> Result<ApiToken, StoreError>;

    /// The token with this id, revoked or not.
    async fn get_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError>;

    /// Every token, revoked ones included, oldest first.
    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError>;

    /// Marks the token revoked (from now on it authenticates nothing). False if there is no such
    /// token or it was already revoked.
    async fn revoke_token(&self, id: &str) -> Result<bool, StoreError>;

    /// Records that the token was just used (best effort, for `reelay token list`).
    async fn touch_token(&self, id: &str) -> Result<(), StoreError>;

    /// Whether any token was ever created (revoked ones count): from then on the API requires
    /// authentication.
    async fn any_tokens(&self) -> Result<bool, StoreError>;

    /// Records that the signed token `token_id` is revoked since `revoked_at`. Idempotent: true
    /// only the first time (a later call keeps the first time).
    async fn add_revocation(&self, token_id: &str, revoked_at: Millis) -> Result<bool, StoreError>;

    /// Revocations recorded after `after` (a `seq`), at most `limit`, in `seq` order — plus, to
    /// cover rows that committed out of `seq` order, every row at or below `after` recorded since
    /// `recent_since`. A reader keeps the highest `seq` it saw and asks again.
    async fn revocations_since(
        &self,
        after: i64,
        recent_since: Millis,
        limit: u32,
    ) -> Result<Vec<RevocationRow>, StoreError>;
}
