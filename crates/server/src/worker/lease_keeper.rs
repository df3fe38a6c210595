//! The lease keeper of a running task: renews the lease, carries the task's progress and ETA
//! with each renewal, and turns *cancelled*, *lease lost* and shutdown into the handler's stop
//! token (with the reason in its [`StopCell`]).
//!
//! One loop for every lease, so a home task and a peer's task stop for the same reasons in the
//! same way. What differs is a parameter: where the lease is renewed ([`Renew`]: this
//! cluster's store, or the owner's api) and when the keeper may end (`until`: a home task's
//! lease is needed only while its handler runs; a peer's task also while its files travel to
//! the owner under the same lease).

use super::{StopCell, StopReason, NO_ETA};
use crate::peer_io::{PeerClient, PeerError, RenewAnswer, RenewRequest};
use reelay_jobs::{JobStore, RenewOutcome, StoreError};
use reelay_media::CancellationToken;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Where a task's lease is renewed.
pub(super) trait Renew: Send + 'static {
    type Error: std::fmt::Display + Send;

    /// Renews once for the lease's full length, reporting `progress` (0..=1) and the expected
    /// end (`eta_at`, ms since the epoch) so the owner can show them.
    fn renew(
        &self,
        progress: f64,
        eta_at: Option<i64>,
    ) -> impl Future<Output = Result<RenewOutcome, Self::Error>> + Send;
}

/// A home task's lease, in this cluster's store.
pub(super) struct StoreLease {
    pub store: Arc<dyn JobStore>,
    pub task_id: String,
    pub worker: String,
    pub attempt: u32,
    pub lease: Duration,
}

impl Renew for StoreLease {
    type Error = StoreError;

    async fn renew(&self, progress: f64, eta_at: Option<i64>) -> Result<RenewOutcome, StoreError> {
        let StoreLease {
            store,
            task_id,
            worker,
            attempt,
            lease,
        } = self;
        store
            .renew(task_id, worker, *attempt, *lease, Some(progress), eta_at)
            .await
    }
}

/// A peer's task's lease, held by the owner and renewed through its api.
pub(super) struct PeerLease {
    pub peer: PeerClient,
    pub task_id: String,
    pub worker: String,
    pub attempt: u32,
}

impl Renew for PeerLease {
    type Error = PeerError;

    async fn renew(&self, progress: f64, eta_at: Option<i64>) -> Result<RenewOutcome, PeerError> {
        let req = RenewRequest {
            worker: self.worker.clone(),
            attempt: self.attempt,
            progress: Some(progress),
            eta_at,
        };
        Ok(match self.peer.renew(&self.task_id, &req).await? {
            RenewAnswer::Renewed => RenewOutcome::Renewed,
            RenewAnswer::Cancelled => RenewOutcome::Cancelled,
            RenewAnswer::LeaseLost => RenewOutcome::LeaseLost,
        })
    }
}

/// What the keeper shares with the handler: the stop token and reason it sets, the progress and
/// ETA the handler sets.
#[derive(Clone)]
pub(super) struct Shared {
    pub token: CancellationToken,
    pub stop: Arc<StopCell>,
    /// Bits of an f64 in 0..=1.
    pub progress: Arc<AtomicU64>,
    /// ms since the epoch, `NO_ETA` until known.
    pub eta_at: Arc<AtomicI64>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            token: CancellationToken::new(),
            stop: Arc::new(StopCell::default()),
            progress: Arc::new(AtomicU64::new(0f64.to_bits())),
            eta_at: Arc::new(AtomicI64::new(NO_ETA)),
        }
    }

    fn halt(&self, why: StopReason) {
        self.stop.set(why);
        self.token.cancel();
    }
}

/// How often a lease of length `lease` is renewed: three chances before it expires, and at
/// least every second so progress reaches the owner promptly.
pub(super) fn renew_every(lease: Duration) -> Duration {
    (lease / 3).min(Duration::from_secs(1))
}

/// Why the task must stop after a renewal answered `outcome`, if it must.
pub(super) fn stop_for(outcome: RenewOutcome) -> Option<StopReason> {
    match outcome {
        RenewOutcome::Renewed => None,
        RenewOutcome::Cancelled => Some(StopReason::Cancelled),
        RenewOutcome::LeaseLost => Some(StopReason::LeaseLost),
    }
}

/// Starts the keeper of a lease of length `lease_len`. It runs until `until` is cancelled, the
/// task must stop (cancelled, lease lost), or `abandon` is cancelled (shutdown: the task goes
/// back to the queue). A failed renewal is only logged: the lease has slack for a few misses,
/// and a store or link that comes back in time costs nothing. The keeper's log lines carry the
/// caller's span (the task's).
pub(super) fn spawn(
    lease: impl Renew,
    lease_len: Duration,
    shared: Shared,
    abandon: CancellationToken,
    until: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let every = renew_every(lease_len);
    let keeper = async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = abandon.cancelled() => {
                    shared.halt(StopReason::Shutdown);
                    return;
                }
                _ = until.cancelled() => return,
            }
            let p = f64::from_bits(shared.progress.load(Ordering::Relaxed));
            let eta = Some(shared.eta_at.load(Ordering::Relaxed)).filter(|e| *e != NO_ETA);
            match lease.renew(p, eta).await {
                Ok(outcome) => {
                    if let Some(why) = stop_for(outcome) {
                        shared.halt(why);
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
        }
    };
    tokio::spawn(keeper.in_current_span())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn renews_three_times_a_lease_and_at_least_every_second() {
        assert_eq!(
            renew_every(Duration::from_millis(300)),
            Duration::from_millis(100)
        );
        assert_eq!(renew_every(Duration::from_secs(30)), Duration::from_secs(1));
    }

    #[test]
    fn only_a_renewed_lease_keeps_the_task_running() {
        assert_eq!(stop_for(RenewOutcome::Renewed), None);
        assert_eq!(
            stop_for(RenewOutcome::Cancelled),
            Some(StopReason::Cancelled)
        );
        assert_eq!(
            stop_for(RenewOutcome::LeaseLost),
            Some(StopReason::LeaseLost)
        );
    }

    /// What one renewal carried: the progress and the ETA.
    type Carried = (f64, Option<i64>);

    /// Answers renewals from a script (then `Renewed`), recording what each one carried.
    #[derive(Clone, Default)]
    struct Scripted {
        answers: Arc<Mutex<Vec<Result<RenewOutcome, String>>>>,
        seen: Arc<Mutex<Vec<Carried>>>,
    }

    impl Renew for Scripted {
        type Error = String;
        async fn renew(&self, progress: f64, eta_at: Option<i64>) -> Result<RenewOutcome, String> {
            self.seen.lock().unwrap().push((progress, eta_at));
            let mut a = self.answers.lock().unwrap();
            if a.is_empty() {
                Ok(RenewOutcome::Renewed)
            } else {
                a.remove(0)
            }
        }
    }

    const LEASE: Duration = Duration::from_millis(30);

    /// Runs a keeper whose renewals answer `answers` (then `Renewed`) until it ends by itself;
    /// returns what it shared with the handler and what each renewal carried.
    async fn keep_until_stopped(
        answers: Vec<Result<RenewOutcome, String>>,
        shared: Shared,
        abandon: CancellationToken,
    ) -> Vec<Carried> {
        let lease = Scripted::default();
        *lease.answers.lock().unwrap() = answers;
        let keeper = spawn(
            lease.clone(),
            LEASE,
            shared,
            abandon,
            CancellationToken::new(),
        );
        tokio::time::timeout(Duration::from_secs(5), keeper)
            .await
            .unwrap()
            .unwrap();
        let seen = lease.seen.lock().unwrap().clone();
        seen
    }

    #[tokio::test]
    async fn a_failed_renewal_is_survived_and_a_cancellation_stops_the_task() {
        let shared = Shared::new();
        shared.progress.store(0.25f64.to_bits(), Ordering::Relaxed);
        shared.eta_at.store(1234, Ordering::Relaxed);
        let answers = vec![
            Ok(RenewOutcome::Renewed),
            Err("store hiccup".into()),
            Ok(RenewOutcome::Cancelled),
        ];
        let seen = keep_until_stopped(answers, shared.clone(), CancellationToken::new()).await;
        assert!(shared.token.is_cancelled());
        assert_eq!(shared.stop.get(), Some(StopReason::Cancelled));
        assert_eq!(seen, vec![(0.25, Some(1234)); 3]);
    }

    #[tokio::test]
    async fn a_lost_lease_stops_the_task_and_no_eta_is_sent_as_none() {
        let shared = Shared::new();
        let answers = vec![Ok(RenewOutcome::LeaseLost)];
        let seen = keep_until_stopped(answers, shared.clone(), CancellationToken::new()).await;
        assert!(shared.token.is_cancelled());
        assert_eq!(shared.stop.get(), Some(StopReason::LeaseLost));
        assert_eq!(seen, vec![(0.0, None)]);
    }

    #[tokio::test]
    async fn shutdown_hands_the_task_back() {
        let shared = Shared::new();
        let abandon = CancellationToken::new();
        abandon.cancel();
        let seen = keep_until_stopped(vec![], shared.clone(), abandon).await;
        assert_eq!(shared.stop.get(), Some(StopReason::Shutdown));
        assert!(shared.token.is_cancelled());
        assert!(seen.is_empty(), "{seen:?}");
    }

    /// The home keeper's `until` is the task's own token: the handler ended, nothing to stop.
    #[tokio::test]
    async fn until_ends_the_keeper_quietly() {
        let shared = Shared::new();
        let lease = Scripted::default();
        let keeper = spawn(
            lease.clone(),
            LEASE,
            shared.clone(),
            CancellationToken::new(),
            shared.token.clone(),
        );
        tokio::time::sleep(LEASE).await;
        shared.token.cancel();
        tokio::time::timeout(Duration::from_secs(5), keeper)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(shared.stop.get(), None);
        assert!(
            !lease.seen.lock().unwrap().is_empty(),
            "renewed while running"
        );
    }
}
