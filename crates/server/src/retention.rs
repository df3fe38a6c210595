//! Retention and delete: which objects belong to a job, when a finished job's objects are due,
//! and the sweeper that removes them.
//!
//! The policy ([`Retention::cutoffs`], [`Retention::scope`], [`job_prefixes`]) is pure, with the
//! time passed in; the store claims due jobs (`JobStore::claim_expired`, a lease per job so that
//! of many replicas one cleans each job at a time) and records what was removed
//! (`JobStore::mark_purged`) only after the objects are gone, so a crash in between leaves the
//! job to be swept again. Deletes are idempotent: a prefix already empty is not an error.

use crate::storage::{Storage, StorageError};
use reelay_jobs::{Job, JobStore, Millis, Purge, RetentionCutoffs, StoreError};
use reelay_protocol::JobStatus;
use serde::Deserialize;
use std::time::Duration;

/// `[retention]`: how long a finished job's objects are kept, in seconds; 0 keeps them forever.
/// The defaults match the Terraform lifecycle rules of the buckets (`terraform/modules/*/
/// storage.tf`), which remove anything the sweeper missed a day later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// A succeeded job's input (`inputs/{job}/`), once its outputs exist (7 days).
    pub inputs_after_success_seconds: u64,
    /// A succeeded job's outputs, and then the job becomes a tombstone (30 days).
    pub outputs_seconds: u64,
    /// Everything of a failed job (7 days).
    pub failed_seconds: u64,
    /// Everything of a cancelled job (1 day).
    pub cancelled_seconds: u64,
    /// How often each API process looks for due jobs.
    pub sweep_interval_seconds: u64,
}

const DAY: u64 = 24 * 3600;

impl Default for Retention {
    fn default() -> Self {
        Retention {
            inputs_after_success_seconds: 7 * DAY,
            outputs_seconds: 30 * DAY,
            failed_seconds: 7 * DAY,
            cancelled_seconds: DAY,
            sweep_interval_seconds: 300,
        }
    }
}

/// A job that finished before this instant is due; `Millis::MIN` (nothing is) for "forever".
fn cutoff(now: Millis, keep_seconds: u64) -> Millis {
    if keep_seconds == 0 {
        return Millis::MIN;
    }
    let keep = i64::try_from(keep_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    now.saturating_sub(keep)
}

impl Retention {
    pub fn cutoffs(&self, now: Millis) -> RetentionCutoffs {
        RetentionCutoffs {
            inputs_after_success: cutoff(now, self.inputs_after_success_seconds),
            succeeded: cutoff(now, self.outputs_seconds),
            failed: cutoff(now, self.failed_seconds),
            cancelled: cutoff(now, self.cancelled_seconds),
        }
    }

    /// What is due of `job` at `now`: everything once its status's time is up, else a
    /// succeeded job's inputs once theirs is; nothing for unfinished or deleted jobs.
    pub fn scope(&self, job: &Job, now: Millis) -> Option<Purge> {
        let finished = job.finished_at?;
        if job.deleted_at.is_some() {
            return None;
        }
        let c = self.cutoffs(now);
        let all = match job.status {
            JobStatus::Succeeded => c.succeeded,
            JobStatus::Failed => c.failed,
            JobStatus::Cancelled => c.cancelled,
            JobStatus::Queued | JobStatus::Running => return None,
        };
        if finished < all {
            Some(Purge::All)
        } else if job.status == JobStatus::Succeeded
            && job.inputs_deleted_at.is_none()
            && finished < c.inputs_after_success
        {
            Some(Purge::Inputs)
        } else {
            None
        }
    }
}

/// Every storage prefix holding objects of `job` in `scope`: its input (and the upload's probe
/// result beside it), every attempt's outputs, and its tasks' intermediates (`tasks/{job}/…`,
/// see `worker::intermediate_prefix`; normally already removed when the job ended). A key input (`{"input": {"key": ...}}`)
/// is the caller's own object outside these prefixes and is never deleted.
pub fn job_prefixes(job: &Job, scope: Purge) -> Vec<String> {
    let mut out = vec![format!("inputs/{}", job.id)];
    if scope == Purge::All {
        out.push(format!("outputs/{}", job.id));
        out.push(crate::worker::intermediate_prefix(&job.id));
    }
    out
}

/// Deletes the objects of `job` in `scope` (idempotent).
pub async fn delete_objects(
    storage: &Storage,
    job: &Job,
    scope: Purge,
) -> Result<(), StorageError> {
    for prefix in job_prefixes(job, scope) {
        storage.delete_prefix(&prefix).await?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// One round: claims up to `batch` due jobs and cleans them. Returns how many were cleaned. A
/// job whose objects could not be deleted keeps its claim until the lease lapses and is retried
/// by whichever replica sweeps next.
pub async fn sweep_once(
    store: &dyn JobStore,
    storage: &Storage,
    policy: &Retention,
    now: Millis,
    batch: u32,
) -> Result<usize, SweepError> {
    let lease = Duration::from_secs(policy.sweep_interval_seconds.max(60) * 2);
    let jobs = store
        .claim_expired(policy.cutoffs(now), lease, batch)
        .await?;
    let mut done = 0;
    for job in jobs {
        let Some(scope) = policy.scope(&job, now) else {
            continue;
        };
        delete_objects(storage, &job, scope).await?;
        store.mark_purged(&job.id, scope).await?;
        tracing::info!(job_id = %job.id, ?scope, "retention: job objects deleted");
        done += 1;
    }
    Ok(done)
}

/// Sweeps every `sweep_interval_seconds` until `stop`; every API process runs one.
pub async fn run_sweeper(
    store: std::sync::Arc<dyn JobStore>,
    storage: Storage,
    policy: Retention,
    stop: tokio_util::sync::CancellationToken,
) {
    let every = Duration::from_secs(policy.sweep_interval_seconds.max(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = chrono::Utc::now().timestamp_millis();
        // Rounds of 100 until nothing more is due, so a backlog clears in one interval.
        loop {
            match sweep_once(&*store, &storage, &policy, now, 100).await {
                Ok(100) if !stop.is_cancelled() => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "retention sweep failed; the next round retries");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: JobStatus, finished_at: Option<Millis>) -> Job {
        Job {
            status,
            progress: 1.0,
            input_key: Some("inputs/aws.01J/source".into()),
            finished_at,
            ..Job::for_test("aws.01J")
        }
    }

    const H: Millis = 3_600_000;

    #[test]
    fn finished_jobs_expire_by_status_and_inputs_first() {
        let p = Retention::default();
        let now = 100 * 24 * H;
        let ago = |hours: i64| Some(now - hours * H);
        assert_eq!(p.scope(&job(JobStatus::Succeeded, ago(1)), now), None);
        assert_eq!(
            p.scope(&job(JobStatus::Succeeded, ago(8 * 24)), now),
            Some(Purge::Inputs)
        );
        let mut inputs_gone = job(JobStatus::Succeeded, ago(8 * 24));
        inputs_gone.inputs_deleted_at = Some(now);
        assert_eq!(p.scope(&inputs_gone, now), None);
        assert_eq!(
            p.scope(&job(JobStatus::Succeeded, ago(31 * 24)), now),
            Some(Purge::All)
        );
        assert_eq!(p.scope(&job(JobStatus::Failed, ago(6 * 24)), now), None);
        assert_eq!(
            p.scope(&job(JobStatus::Failed, ago(8 * 24)), now),
            Some(Purge::All)
        );
        assert_eq!(
            p.scope(&job(JobStatus::Cancelled, ago(25)), now),
            Some(Purge::All)
        );
        assert_eq!(p.scope(&job(JobStatus::Running, None), now), None);
        let mut deleted = job(JobStatus::Failed, ago(1000));
        deleted.deleted_at = Some(now);
        assert_eq!(p.scope(&deleted, now), None);
    }

    #[test]
    fn zero_keeps_forever() {
        let p = Retention {
            outputs_seconds: 0,
            inputs_after_success_seconds: 0,
            ..Retention::default()
        };
        let now = 1_000_000 * H;
        assert_eq!(p.scope(&job(JobStatus::Succeeded, Some(0)), now), None);
        assert_eq!(p.cutoffs(now).succeeded, Millis::MIN);
    }

    #[test]
    fn prefixes_cover_inputs_outputs_and_task_intermediates() {
        let mut j = job(JobStatus::Succeeded, Some(0));
        j.tasks.push(reelay_jobs::TaskSummary {
            id: "aws.01J.split".into(),
            kind: "split".into(),
            status: reelay_jobs::TaskStatus::Succeeded,
            progress: 1.0,
            attempts: 1,
            timings: None,
            ran_on: None,
        });
        assert_eq!(job_prefixes(&j, Purge::Inputs), vec!["inputs/aws.01J"]);
        assert_eq!(
            job_prefixes(&j, Purge::All),
            vec!["inputs/aws.01J", "outputs/aws.01J", "tasks/aws.01J"]
        );
    }
}
