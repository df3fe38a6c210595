//! The one state machine of jobs and tasks, as a pure function.
//!
//! Every change to a task (claimed, progress, succeeded, failed, lease expired, released) and the
//! user's cancel go through [`apply`]: it takes the current state of ALL the tasks of one job,
//! the job's rolled-up state, an [`Event`] and the time, and returns the new task states plus the
//! job's new state. Both stores only load rows, call this, and write back what changed, in one
//! transaction: the rules live here once, and are unit-tested without a database.
//!
//! The job is a rollup of its tasks:
//! * status: `failed` as soon as one task fails for good (the other tasks are cancelled),
//!   `cancelled` when the user cancelled, `succeeded` when every task succeeded, `running` while
//!   some task runs, `queued` otherwise (waiting tasks, retries, blocked tasks);
//! * progress: the tasks' progress weighted by their expected work (`weight`);
//! * attempts: the highest attempt count of any task (a single-task job: that task's);
//! * error: the error of the task that failed it, or the last retried error while it runs on;
//! * outputs: the outputs of the tasks nothing depends on (the `transcode` task of a plain job,
//!   the `stitch` task of a split one), in task order.

use crate::model::{Millis, StoredOutput};
use reelay_protocol::{ErrorDetail, JobStatus};
use std::fmt;
use std::str::FromStr;

/// Where a task stands. `blocked` waits for the tasks it depends on; `queued` may be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    Blocked,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Blocked,
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Blocked => "blocked",
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// A terminal task never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown task status {s:?}"))
    }
}

/// Everything the machine needs to know about one task (the store keeps more: payload, order).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    pub id: String,
    pub kind: String,
    pub status: TaskStatus,
    /// Ids of the tasks that must succeed before this one may run.
    pub depends_on: Vec<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    /// Kept after the task ends: it is how a renew recognises the worker that must be told
    /// "cancelled" rather than "lease lost".
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Millis>,
    pub claimed_at: Option<Millis>,
    pub eta_at: Option<Millis>,
    /// Not claimable before this (retry back-off).
    pub run_after: Millis,
    /// 0..=1.
    pub progress: f64,
    /// Expected work (encode seconds), for the job's weighted progress and the load report.
    pub weight: f64,
    pub error: Option<ErrorDetail>,
    /// What the task produced (JSON), once it succeeded.
    pub outputs: Option<serde_json::Value>,
}

impl TaskState {
    /// Whether `worker` holds attempt `attempt` of this task, whatever its status.
    pub fn owned_by(&self, worker: &str, attempt: u32) -> bool {
        self.lease_owner.as_deref() == Some(worker) && self.attempts == attempt
    }

    /// Whether a worker may take this task at `now`: queued and due, or running under a lease
    /// that expired with attempts left.
    pub fn claimable(&self, now: Millis) -> bool {
        match self.status {
            TaskStatus::Queued => self.run_after <= now,
            TaskStatus::Running => self.lease_expired(now) && self.attempts < self.max_attempts,
            _ => false,
        }
    }

    /// Running under a lease that expired: its worker stopped renewing.
    pub fn lease_expired(&self, now: Millis) -> bool {
        self.status == TaskStatus::Running && self.lease_expires_at.is_some_and(|at| at <= now)
    }

    fn clear_lease_times(&mut self) {
        self.lease_expires_at = None;
        self.claimed_at = None;
        self.eta_at = None;
    }
}

/// The job's own fields that the machine maintains.
#[derive(Debug, Clone, PartialEq)]
pub struct JobState {
    pub status: JobStatus,
    pub progress: f64,
    pub attempts: u32,
    pub error: Option<ErrorDetail>,
    pub outputs: Vec<StoredOutput>,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub cancel_requested: bool,
}

/// Something that happens to a task (or, for [`Event::Cancel`], to the whole job).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `worker` takes the task until `lease_expires_at`.
    Claimed {
        task: String,
        worker: String,
        lease_expires_at: Millis,
    },
    /// The lease holder renews and reports progress (`None`: unchanged) and its finish estimate.
    Progress {
        task: String,
        worker: String,
        attempt: u32,
        progress: Option<f64>,
        eta_at: Option<Millis>,
        lease_expires_at: Millis,
        /// Refuse the renewal (as a lost lease: the lease then runs out and the task is
        /// claimed again) once the attempt was claimed this many ms ago. A peer's attempts
        /// get one (`[steal] max_peer_hold_seconds`): a peer that renews forever, broken or
        /// hostile, would otherwise hold its owner's task for good. `None`: no limit.
        hold_limit: Option<Millis>,
    },
    Succeeded {
        task: String,
        worker: String,
        attempt: u32,
        outputs: serde_json::Value,
    },
    /// `retry_after: Some(d)`: try again `d` ms from now if attempts are left; `None`: for good.
    Failed {
        task: String,
        worker: String,
        attempt: u32,
        error: ErrorDetail,
        retry_after: Option<Millis>,
    },
    /// The task's worker stopped renewing and no attempt is left: it is lost.
    LeaseExpired { task: String },
    /// The lease holder hands the task back without using up the attempt (shutdown).
    Released {
        task: String,
        worker: String,
        attempt: u32,
    },
    /// The lease holder succeeds AND the job's graph grows: `add` are new tasks (fresh states,
    /// `blocked`/`queued` as [`initial_status`] says, dependencies on tasks of the job or on each
    /// other), and the finished task's weight becomes `weight`. This is how a task that learns
    /// what the job needs only once it has the input (a URL, key or tus input probed by the
    /// worker) turns a one-task job into a split graph, atomically with its own success.
    Grown {
        task: String,
        worker: String,
        attempt: u32,
        outputs: serde_json::Value,
        weight: f64,
        add: Vec<TaskState>,
    },
    /// The user cancels the job: every task stops.
    Cancel,
}

/// Why an event changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    NoSuchTask,
    /// The caller does not hold this attempt, or the task is no longer running.
    LeaseLost,
    /// The caller holds the attempt but the task was cancelled: stop working.
    Cancelled,
    /// The task cannot be claimed (not queued and due, nor orphaned with attempts left).
    NotClaimable,
    /// The job already ended.
    JobFinished,
    /// A [`Event::Grown`] whose new tasks are not a graph the job can run (a duplicate id, a
    /// dependency on no task, a task that is not fresh).
    BadGraph,
}

/// What the event did, beyond the new states.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Applied,
    /// A failed attempt went back to the queue, claimable from `run_after`.
    Requeued {
        run_after: Millis,
    },
    /// The task failed for good (and with it the job).
    TaskFailed,
    Rejected(Rejection),
}

/// The result of [`apply`]: the new state of every task (same order as given) and of the job.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub tasks: Vec<TaskState>,
    pub job: JobState,
    pub outcome: Outcome,
}

impl Transition {
    /// The job status if this transition changed it: the moment to append a job event.
    pub fn status_change(&self, before: &JobState) -> Option<JobStatus> {
        (self.job.status != before.status).then_some(self.job.status)
    }

    /// Indices of the tasks whose state changed (the rows to write).
    pub fn changed<'a>(&'a self, before: &'a [TaskState]) -> impl Iterator<Item = usize> + 'a {
        (0..self.tasks.len()).filter(move |&i| before.get(i) != Some(&self.tasks[i]))
    }

    /// Whether some task became claimable at once (worth waking idle workers for).
    pub fn made_claimable(&self, before: &[TaskState], now: Millis) -> bool {
        self.changed(before)
            .any(|i| self.tasks[i].status == TaskStatus::Queued && self.tasks[i].run_after <= now)
    }
}

/// A sink task whose outputs are not a list of stored outputs: the worker broke the contract.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("task {task} produced outputs that are not a list of files: {reason}")]
pub struct BadOutputs {
    pub task: String,
    pub reason: String,
}

/// The error a task gets when its worker vanished with no attempt left.
pub fn worker_lost(attempts: u32) -> ErrorDetail {
    ErrorDetail::new(
        "worker_lost",
        format!(
            "the worker running attempt {attempts} stopped renewing its lease and no attempts \
             are left"
        ),
    )
}

/// Applies `event` to the job whose tasks are `tasks` and whose state is `job`, at `now`.
///
/// Pure: the same inputs always give the same result. A rejected event returns the states
/// unchanged. The only error is a sink task completing with outputs that are not files.
pub fn apply(
    tasks: &[TaskState],
    job: &JobState,
    event: &Event,
    now: Millis,
) -> Result<Transition, BadOutputs> {
    let mut next = tasks.to_vec();
    let mut new_job = job.clone();
    let unchanged = |why| Transition {
        tasks: tasks.to_vec(),
        job: job.clone(),
        outcome: Outcome::Rejected(why),
    };
    let find = |id: &str| tasks.iter().position(|t| t.id == id);

    let outcome = match event {
        Event::Cancel => {
            if job.status.is_terminal() {
                return Ok(unchanged(Rejection::JobFinished));
            }
            stop_all(&mut next, None);
            new_job.status = JobStatus::Cancelled;
            new_job.finished_at = Some(now);
            new_job.cancel_requested = true;
            Outcome::Applied
        }
        Event::Claimed {
            task,
            worker,
            lease_expires_at,
        } => {
            let Some(i) = find(task) else {
                return Ok(unchanged(Rejection::NoSuchTask));
            };
            if job.status.is_terminal() {
                return Ok(unchanged(Rejection::JobFinished));
            }
            if !tasks[i].claimable(now) {
                return Ok(unchanged(Rejection::NotClaimable));
            }
            let t = &mut next[i];
            t.status = TaskStatus::Running;
            t.attempts += 1;
            t.lease_owner = Some(worker.clone());
            t.lease_expires_at = Some(*lease_expires_at);
            t.claimed_at = Some(now);
            t.eta_at = None;
            t.progress = 0.0;
            new_job.started_at = job.started_at.or(Some(now));
            Outcome::Applied
        }
        Event::Progress {
            task,
            worker,
            attempt,
            progress,
            eta_at,
            lease_expires_at,
            hold_limit,
        } => {
            let i = match owned(tasks, task, worker, *attempt) {
                Ok(i) => i,
                Err(why) => return Ok(unchanged(why)),
            };
            if held_too_long(&tasks[i], *hold_limit, now) {
                return Ok(unchanged(Rejection::LeaseLost));
            }
            let t = &mut next[i];
            t.lease_expires_at = Some(*lease_expires_at);
            t.eta_at = *eta_at;
            // NaN would poison every later comparison, so it is dropped rather than stored.
            if let Some(p) = progress.filter(|p| !p.is_nan()) {
                t.progress = p.clamp(0.0, 1.0);
            }
            Outcome::Applied
        }
        Event::Succeeded {
            task,
            worker,
            attempt,
            outputs,
        } => {
            let i = match owned(tasks, task, worker, *attempt) {
                Ok(i) => i,
                Err(_) => return Ok(unchanged(Rejection::LeaseLost)),
            };
            let t = &mut next[i];
            t.status = TaskStatus::Succeeded;
            t.progress = 1.0;
            t.outputs = Some(outputs.clone());
            t.clear_lease_times();
            unblock(&mut next, now);
            Outcome::Applied
        }
        Event::Grown {
            task,
            worker,
            attempt,
            outputs,
            weight,
            add,
        } => {
            let i = match owned(tasks, task, worker, *attempt) {
                Ok(i) => i,
                Err(_) => return Ok(unchanged(Rejection::LeaseLost)),
            };
            if !valid_growth(tasks, add) {
                return Ok(unchanged(Rejection::BadGraph));
            }
            let t = &mut next[i];
            t.status = TaskStatus::Succeeded;
            t.progress = 1.0;
            t.outputs = Some(outputs.clone());
            t.clear_lease_times();
            if weight.is_finite() && *weight >= 0.0 {
                t.weight = *weight;
            }
            next.extend(add.iter().cloned().map(|mut n| {
                n.run_after = now;
                n
            }));
            unblock(&mut next, now);
            Outcome::Applied
        }
        Event::Failed {
            task,
            worker,
            attempt,
            error,
            retry_after,
        } => {
            let i = match owned(tasks, task, worker, *attempt) {
                Ok(i) => i,
                Err(_) => return Ok(unchanged(Rejection::LeaseLost)),
            };
            match retry_after {
                Some(delay) if tasks[i].attempts < tasks[i].max_attempts => {
                    let run_after = now.saturating_add((*delay).max(0));
                    let t = &mut next[i];
                    t.status = TaskStatus::Queued;
                    t.run_after = run_after;
                    t.lease_owner = None;
                    t.clear_lease_times();
                    t.progress = 0.0;
                    t.error = Some(error.clone());
                    new_job.error = Some(error.clone());
                    Outcome::Requeued { run_after }
                }
                _ => {
                    fail_job(&mut next, &mut new_job, i, error.clone(), now);
                    Outcome::TaskFailed
                }
            }
        }
        Event::LeaseExpired { task } => {
            let Some(i) = find(task) else {
                return Ok(unchanged(Rejection::NoSuchTask));
            };
            let t = &tasks[i];
            if job.status.is_terminal() || !t.lease_expired(now) || t.attempts < t.max_attempts {
                return Ok(unchanged(Rejection::NotClaimable));
            }
            // Nobody holds it any more: the lease owner goes, unlike a failure reported by it.
            next[i].lease_owner = None;
            fail_job(&mut next, &mut new_job, i, worker_lost(t.attempts), now);
            Outcome::TaskFailed
        }
        Event::Released {
            task,
            worker,
            attempt,
        } => {
            let i = match owned(tasks, task, worker, *attempt) {
                Ok(i) => i,
                Err(_) => return Ok(unchanged(Rejection::LeaseLost)),
            };
            let t = &mut next[i];
            t.status = TaskStatus::Queued;
            t.attempts = t.attempts.saturating_sub(1);
            t.run_after = now;
            t.lease_owner = None;
            t.clear_lease_times();
            t.progress = 0.0;
            Outcome::Applied
        }
    };

    roll_up(&next, &mut new_job, now)?;
    // With no attempt left on record the job has, as far as users are concerned, not started.
    if new_job.attempts == 0 && !new_job.status.is_terminal() {
        new_job.started_at = None;
    }
    Ok(Transition {
        tasks: next,
        job: new_job,
        outcome,
    })
}

/// Whether `add` may join `tasks`: unique new ids, every dependency a task of the job or an
/// earlier new one (so no cycle), each new task fresh (no attempt, not started, not ended).
fn valid_growth(tasks: &[TaskState], add: &[TaskState]) -> bool {
    let mut known: std::collections::HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    for n in add {
        let fresh = n.attempts == 0
            && matches!(n.status, TaskStatus::Blocked | TaskStatus::Queued)
            && n.status == initial_status(&n.depends_on)
            && n.outputs.is_none()
            && n.lease_owner.is_none();
        if !fresh || n.depends_on.iter().any(|d| !known.contains(d.as_str())) {
            return false;
        }
        if !known.insert(n.id.as_str()) {
            return false;
        }
    }
    true
}

/// Whether the attempt holding `t` has held it for `limit` ms or more (see
/// [`Event::Progress::hold_limit`]).
fn held_too_long(t: &TaskState, limit: Option<Millis>, now: Millis) -> bool {
    match (limit, t.claimed_at) {
        (Some(limit), Some(at)) => now.saturating_sub(at) >= limit,
        _ => false,
    }
}

/// Index of `task` if `worker` holds `attempt` of it and it is running; why not otherwise.
fn owned(tasks: &[TaskState], task: &str, worker: &str, attempt: u32) -> Result<usize, Rejection> {
    let i = tasks
        .iter()
        .position(|t| t.id == task)
        .ok_or(Rejection::NoSuchTask)?;
    let t = &tasks[i];
    if !t.owned_by(worker, attempt) {
        return Err(Rejection::LeaseLost);
    }
    match t.status {
        TaskStatus::Running => Ok(i),
        TaskStatus::Cancelled => Err(Rejection::Cancelled),
        _ => Err(Rejection::LeaseLost),
    }
}

/// Task `i` failed for good: it carries the error, every other unfinished task is cancelled
/// (their workers learn it at their next renew), and the job fails with that error.
fn fail_job(
    tasks: &mut [TaskState],
    job: &mut JobState,
    i: usize,
    error: ErrorDetail,
    now: Millis,
) {
    let t = &mut tasks[i];
    t.status = TaskStatus::Failed;
    t.error = Some(error.clone());
    t.clear_lease_times();
    stop_all(tasks, Some(i));
    job.status = JobStatus::Failed;
    job.error = Some(error);
    job.finished_at = Some(now);
}

/// Cancels every unfinished task except `except`.
fn stop_all(tasks: &mut [TaskState], except: Option<usize>) {
    for (j, t) in tasks.iter_mut().enumerate() {
        if Some(j) != except && !t.status.is_terminal() {
            t.status = TaskStatus::Cancelled;
            t.clear_lease_times();
        }
    }
}

/// Blocked tasks whose dependencies have all succeeded become queued, due at once.
fn unblock(tasks: &mut [TaskState], now: Millis) {
    let succeeded: std::collections::HashSet<String> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Succeeded)
        .map(|t| t.id.clone())
        .collect();
    for t in tasks.iter_mut() {
        if t.status == TaskStatus::Blocked && t.depends_on.iter().all(|d| succeeded.contains(d)) {
            t.status = TaskStatus::Queued;
            t.run_after = now;
        }
    }
}

/// The status a new job's tasks start in: blocked while it has dependencies.
pub fn initial_status(depends_on: &[String]) -> TaskStatus {
    if depends_on.is_empty() {
        TaskStatus::Queued
    } else {
        TaskStatus::Blocked
    }
}

/// Recomputes the job's derived fields from its tasks. A terminal job keeps its status.
fn roll_up(tasks: &[TaskState], job: &mut JobState, now: Millis) -> Result<(), BadOutputs> {
    job.attempts = tasks.iter().map(|t| t.attempts).max().unwrap_or(0);
    job.progress = weighted_progress(tasks);
    if job.status.is_terminal() {
        return Ok(());
    }
    if !tasks.is_empty() && tasks.iter().all(|t| t.status == TaskStatus::Succeeded) {
        job.status = JobStatus::Succeeded;
        job.progress = 1.0;
        job.finished_at = Some(now);
        // A retried job that finally succeeded should not show the error of an earlier attempt.
        job.error = None;
        job.outputs = sink_outputs(tasks)?;
    } else if tasks.iter().any(|t| t.status == TaskStatus::Running) {
        job.status = JobStatus::Running;
    } else {
        job.status = JobStatus::Queued;
    }
    Ok(())
}

/// Progress weighted by each task's expected work; equal weights when none is known.
pub fn weighted_progress(tasks: &[TaskState]) -> f64 {
    let weight = |t: &TaskState| {
        if t.weight.is_finite() && t.weight > 0.0 {
            t.weight
        } else {
            0.0
        }
    };
    let total: f64 = tasks.iter().map(weight).sum();
    let p = if total > 0.0 {
        tasks.iter().map(|t| weight(t) * t.progress).sum::<f64>() / total
    } else if tasks.is_empty() {
        0.0
    } else {
        tasks.iter().map(|t| t.progress).sum::<f64>() / tasks.len() as f64
    };
    if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The outputs of the tasks no other task depends on: what the user asked for.
fn sink_outputs(tasks: &[TaskState]) -> Result<Vec<StoredOutput>, BadOutputs> {
    let mut outputs = Vec::new();
    for t in tasks {
        if tasks.iter().any(|o| o.depends_on.contains(&t.id)) {
            continue;
        }
        let Some(value) = &t.outputs else { continue };
        let files: Vec<StoredOutput> =
            serde_json::from_value(value.clone()).map_err(|e| BadOutputs {
                task: t.id.clone(),
                reason: e.to_string(),
            })?;
        outputs.extend(files);
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests;
