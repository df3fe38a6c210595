//! [`Lease`]: the one value that names a claimed attempt, so callers of the lease-guarded
//! store calls pass it whole instead of three positional arguments that are easy to mix up.
//!
//! Additive: the [`JobStore`] methods keep their `(task_id, worker_id, attempt, …)` form; a
//! lease's methods call them.

use crate::model::{Claim, FailOutcome, Millis, PhaseTimings, RenewOutcome, StoredOutput};
use crate::store::{JobStore, StoreError};
use reelay_protocol::ErrorDetail;
use std::time::Duration;

/// One attempt of one task as one worker holds it: every store call about that work presents
/// all three, so a worker whose lease was taken over cannot touch the new attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub task_id: String,
    pub worker_id: String,
    /// 1-based attempt number the claim started.
    pub attempt: u32,
}

impl Claim {
    /// The lease this claim gave `worker_id` (the id it claimed with).
    pub fn lease(&self, worker_id: &str) -> Lease {
        Lease::new(&self.task_id, worker_id, self.attempt)
    }
}

impl Lease {
    pub fn new(task_id: impl Into<String>, worker_id: impl Into<String>, attempt: u32) -> Self {
        Lease {
            task_id: task_id.into(),
            worker_id: worker_id.into(),
            attempt,
        }
    }

    /// [`JobStore::renew`] of this lease.
    pub async fn renew(
        &self,
        store: &dyn JobStore,
        lease: Duration,
        progress: Option<f64>,
        eta_at: Option<Millis>,
    ) -> Result<RenewOutcome, StoreError> {
        store
            .renew(
                &self.task_id,
                &self.worker_id,
                self.attempt,
                lease,
                progress,
                eta_at,
            )
            .await
    }

    /// [`JobStore::complete`] of this lease.
    pub async fn complete(
        &self,
        store: &dyn JobStore,
        outputs: Vec<StoredOutput>,
    ) -> Result<bool, StoreError> {
        store
            .complete(&self.task_id, &self.worker_id, self.attempt, outputs)
            .await
    }

    /// [`JobStore::complete_task`] of this lease.
    pub async fn complete_task(
        &self,
        store: &dyn JobStore,
        outputs: serde_json::Value,
    ) -> Result<bool, StoreError> {
        store
            .complete_task(&self.task_id, &self.worker_id, self.attempt, outputs)
            .await
    }

    /// [`JobStore::complete_task_timed`] of this lease.
    pub async fn complete_task_timed(
        &self,
        store: &dyn JobStore,
        outputs: serde_json::Value,
        timings: Option<&PhaseTimings>,
    ) -> Result<bool, StoreError> {
        store
            .complete_task_timed(
                &self.task_id,
                &self.worker_id,
                self.attempt,
                outputs,
                timings,
            )
            .await
    }

    /// [`JobStore::fail`] of this lease.
    pub async fn fail(
        &self,
        store: &dyn JobStore,
        error: ErrorDetail,
        retry_after: Option<Duration>,
    ) -> Result<FailOutcome, StoreError> {
        store
            .fail(
                &self.task_id,
                &self.worker_id,
                self.attempt,
                error,
                retry_after,
            )
            .await
    }

    /// [`JobStore::release`] of this lease.
    pub async fn release(&self, store: &dyn JobStore) -> Result<(), StoreError> {
        store
            .release(&self.task_id, &self.worker_id, self.attempt)
            .await
    }
}
