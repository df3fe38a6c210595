//! Running a task of another cluster (issue 16, part 2): a worker slot whose own cluster had
//! nothing for it asks its peers (`[steal]`), and runs what one hands it with the same
//! handler a home task of that kind gets.
//!
//! The handler sees a [`Context`] like any other, except that its storage is a local staging
//! directory: the task's inputs are copied there from the owner first (presigned URLs, or
//! streamed through the owner's api), and afterwards every file the attempt wrote under its
//! prefix is sent to the owner, before the completion. The owner keeps the job; this cluster's
//! store never sees it. The lease is the owner's: a keeper renews it through the peer's api for
//! as long as the task runs and its files travel, and turns *cancelled* or *lease lost* into
//! the handler's stop token, exactly as at home.

use super::{dispatch, lease_keeper, record_phase, Ended, StopCell, StopReason, WorkerPool};
use crate::metrics as m;
use crate::peer_io::{
    Attempt, CompleteAnswer, CompleteRequest, EdgeClient, FailRequest, PeerClient, PeerError,
    PeerTask, StealConfig,
};
use crate::state::AppState;
use crate::storage::Storage;
use reelay_media::CancellationToken;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::timing::{Phase, Timings};
use super::trouble::{Change, Trouble};

/// The peers this process's slots may take tasks from.
pub(super) struct Remote {
    peers: Vec<PeerClient>,
    /// Round robin over the peers, so one that always has work does not starve the others'.
    next: AtomicUsize,
    poll: Duration,
    /// `[steal] edge`: the edge decides which peer and task (its stealing policy weighs the
    /// wait saved against the transfer); without it, the round robin above takes any task.
    edge: Option<EdgeClient>,
    /// Which asks keep failing, so each failure is logged once (`super::trouble`).
    trouble: Trouble,
}

impl Remote {
    /// `None` when no peer is configured (or none is usable: each unusable one is logged).
    pub(super) fn from_config(cfg: &StealConfig, allow_private_urls: bool) -> Option<Remote> {
        let timeout = Duration::from_millis(cfg.request_timeout_ms.max(100));
        let peers: Vec<PeerClient> = cfg
            .peers
            .iter()
            .filter_map(|p| match PeerClient::new(p, timeout, allow_private_urls) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(peer = %p.name, error = %e, "peer left out of [steal]");
                    None
                }
            })
            .collect();
        let edge = match EdgeClient::new(cfg, timeout) {
            Ok(e) => e,
            Err(e) => {
                // Asking nobody beats taking tasks the edge's policy would not move.
                tracing::error!(error = %e, "[steal] edge unusable; this cluster takes no peer's work");
                return None;
            }
        };
        (!peers.is_empty()).then(|| Remote {
            peers,
            next: AtomicUsize::new(0),
            poll: Duration::from_millis(cfg.poll_ms.max(50)),
            edge,
            trouble: Trouble::default(),
        })
    }
}

/// A peer's task a slot of this process runs: what the heartbeat tells this cluster's api
/// about it (the handler's progress and ETA, shared with the lease keeper).
pub(super) struct Away {
    weight: f64,
    claimed_at: reelay_jobs::Millis,
    progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
    eta_at: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// Holds a peer's task in [`WorkerPool::away`] while it runs, whichever way its run ends, and
/// has the heartbeat go out when it starts and when it ends.
pub(super) struct AwayGuard<'a> {
    pool: &'a WorkerPool,
    key: String,
}

impl<'a> AwayGuard<'a> {
    /// Keyed by task and attempt: two slots of this process may run two attempts of one task
    /// (the first's lease lapsed at the owner, a second slot claimed the next attempt), and the
    /// first one ending must not remove the second.
    fn new(pool: &'a WorkerPool, task_id: &str, attempt: u32, away: Away) -> AwayGuard<'a> {
        let key = format!("{task_id}#{attempt}");
        if let Ok(mut map) = pool.away.lock() {
            map.insert(key.clone(), away);
        }
        pool.beat_now.notify_one();
        AwayGuard { pool, key }
    }
}

impl Drop for AwayGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.pool.away.lock() {
            map.remove(&self.key);
        }
        self.pool.beat_now.notify_one();
    }
}

impl WorkerPool {
    /// The peers' tasks running now, as the heartbeat carries them.
    pub(super) fn away_tasks(&self) -> Vec<reelay_jobs::AwayTask> {
        let Ok(map) = self.away.lock() else {
            return vec![];
        };
        map.values()
            .map(|a| {
                let eta = a.eta_at.load(Ordering::Relaxed);
                reelay_jobs::AwayTask {
                    estimated_seconds: a.weight,
                    progress: f64::from_bits(a.progress.load(Ordering::Relaxed)),
                    claimed_at: a.claimed_at,
                    eta_at: (eta != super::NO_ETA).then_some(eta),
                }
            })
            .collect()
    }
}

fn count(outcome: &'static str) {
    metrics::counter!(m::REMOTE_TASKS, "outcome" => outcome).increment(1);
}

fn count_ask(outcome: &'static str) {
    metrics::counter!(m::STEAL_ASKS, "outcome" => outcome).increment(1);
}

/// The kind of a failed ask: what [`Trouble`] compares, so a refusal that keeps its status and
/// code is one failure however its message varies.
fn kind(e: &PeerError) -> String {
    match e {
        PeerError::Refused { status, code, .. } => format!("{} {status} {code}", e.code()),
        _ => e.code().to_string(),
    }
}

impl Remote {
    /// Logs the outcome of asking `source` (the edge, or a peer by name) when it differs from
    /// the last ask's: a failure at warn (error when it will not pass by itself: a refused
    /// credential, a peer entry that cannot work), its end at info.
    fn note(&self, source: &str, what: &str, outcome: Result<(), &PeerError>) {
        let k = outcome.err().map(kind);
        match (self.trouble.record(source, k.as_deref()), outcome) {
            (Change::Started | Change::Changed, Err(e)) if !e.is_transient() => {
                tracing::error!(%source, error = %e, "{what} fails and will until the configuration changes; no work moves from there");
            }
            (Change::Started | Change::Changed, Err(e)) => {
                tracing::warn!(%source, error = %e, "{what} fails; this is logged again when the failure changes or ends");
            }
            (Change::Ended, _) => tracing::info!(%source, "{what} works again"),
            _ => {}
        }
    }
}

impl WorkerPool {
    /// Asks the peers for a task (at most every `poll`, tracked in `last`) and runs it; true
    /// when one was run, so the slot asks its own cluster first again.
    pub(super) async fn steal(&self, last: &mut Option<Instant>) -> bool {
        let Some(remote) = &self.remote else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < remote.poll) || self.stop_claiming.is_cancelled() {
            return false;
        }
        *last = Some(Instant::now());
        if let Some(edge) = &remote.edge {
            return self.steal_decided(remote, edge).await;
        }
        let n = remote.peers.len();
        let start = remote.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let peer = &remote.peers[(start + i) % n];
            let asked = Instant::now();
            match peer.claim(&self.id, None).await {
                Ok(Some(task)) => {
                    remote.note(&peer.name, "asking the peer for work", Ok(()));
                    count_ask("claimed");
                    self.run_remote(peer, task, asked.elapsed()).await;
                    return true;
                }
                Ok(None) => {
                    remote.note(&peer.name, "asking the peer for work", Ok(()));
                    count_ask("nothing");
                }
                Err(e) => {
                    remote.note(&peer.name, "asking the peer for work", Err(&e));
                    count_ask("claim_error");
                }
            }
        }
        false
    }

    /// Asks the edge which task to take, and claims exactly that one from the peer it names;
    /// true when one was run.
    async fn steal_decided(&self, remote: &Remote, edge: &EdgeClient) -> bool {
        let decision = match edge.decide(&self.state.cfg.cluster).await {
            Ok(d) => {
                remote.note("edge", "asking the edge for a stealing decision", Ok(()));
                d
            }
            Err(e) => {
                remote.note("edge", "asking the edge for a stealing decision", Err(&e));
                count_ask("edge_error");
                return false;
            }
        };
        let (Some(from), Some(task_id)) = (decision.from, decision.task_id) else {
            count_ask("stay");
            return false;
        };
        let Some(peer) = remote.peers.iter().find(|p| p.name == from) else {
            tracing::warn!(peer = %from, "the edge named a peer missing from [steal] peers");
            return false;
        };
        let asked = Instant::now();
        let claimed = peer.claim(&self.id, Some(&task_id)).await;
        remote.note(
            &from,
            "claiming the task the edge chose",
            claimed.as_ref().map(|_| ()),
        );
        match claimed {
            Ok(Some(task)) => {
                count_ask("claimed");
                tracing::info!(peer = %from, task_id = %task_id, saved_seconds = ?decision.saved_seconds, "taking a task the edge chose");
                self.run_remote(peer, task, asked.elapsed()).await;
                true
            }
            // Taken at home (or by another thief) since the edge's reading: the edge's
            // readings are up to a poll old, so this happens and is no fault.
            Ok(None) => {
                count_ask("gone");
                tracing::debug!(peer = %from, task_id = %task_id, "the chosen task was taken meanwhile");
                false
            }
            Err(_) => {
                count_ask("claim_error");
                false
            }
        }
    }

    /// Runs a task claimed from `peer` and reports its end there, every log line (the lease
    /// keeper's too) in its `remote_task` span: attached with `.instrument()`, never an entered
    /// guard held across `.await` (why: [`WorkerPool::execute`]).
    async fn run_remote(&self, peer: &PeerClient, task: PeerTask, claimed_in: Duration) {
        use tracing::Instrument;
        let claim = task.to_claim();
        let span = tracing::info_span!("remote_task", peer = %peer.name, job_id = %claim.job.id, task_id = %claim.task_id, kind = %claim.kind, attempt = claim.attempt);
        self.run_peer_task(peer, task, claim, claimed_in)
            .instrument(span)
            .await
    }

    async fn run_peer_task(
        &self,
        peer: &PeerClient,
        task: PeerTask,
        claim: reelay_jobs::Claim,
        claimed_in: Duration,
    ) {
        tracing::info!("task of a peer started");
        let at = Attempt {
            worker: self.id.clone(),
            attempt: claim.attempt,
        };
        let timings = std::sync::Mutex::new(Timings::default());
        record_phase(&timings, &claim.kind, Phase::Claim, claimed_in);
        let shared = lease_keeper::Shared::new();
        // This cluster's load report shows the slot busy until the run ends.
        let _away = AwayGuard::new(
            self,
            &claim.task_id,
            claim.attempt,
            Away {
                weight: claim.weight,
                claimed_at: reelay_jobs::now_millis(),
                progress: shared.progress.clone(),
                eta_at: shared.eta_at.clone(),
            },
        );
        let lease = lease_keeper::PeerLease {
            peer: peer.clone(),
            task_id: claim.task_id.clone(),
            worker: at.worker.clone(),
            attempt: at.attempt,
        };
        // The keeper outlives the handler: the outputs travel under the same lease.
        let keeper_done = CancellationToken::new();
        let keeper = lease_keeper::spawn(
            lease,
            Duration::from_millis(task.lease_ms),
            shared.clone(),
            self.abandon.clone(),
            keeper_done.clone(),
        );

        let scratch = self
            .state
            .cfg
            .data_dir
            .join("peer")
            .join(format!("{}-a{}", claim.task_id, claim.attempt));
        let workdir = scratch.join("work");
        // Whether the handler started: until then a failure hands the task back as never
        // begun, and the owner may offer it to a peer again.
        let mut began = false;
        let ended = match Storage::open(None, &scratch) {
            Err(e) => Err(format!("staging directory: {e}")),
            Ok(staging) => {
                let fetched = {
                    let started = Instant::now();
                    let mut r = Ok(());
                    for obj in &task.inputs {
                        if let Err(e) = peer.download(&claim.task_id, &at, obj, &staging).await {
                            r = Err(format!("reading {} from {}: {e}", obj.key, peer.name));
                            break;
                        }
                    }
                    record_phase(&timings, &claim.kind, Phase::Fetch, started.elapsed());
                    r
                };
                match fetched {
                    Err(e) => Err(e),
                    Ok(()) => {
                        began = true;
                        let state = AppState {
                            storage: staging.clone(),
                            ..self.state.clone()
                        };
                        let cx = self.context(
                            &state,
                            &claim,
                            &task.output_prefix,
                            &workdir,
                            &shared,
                            &timings,
                        );
                        let ended = dispatch(&cx).await;
                        match ended {
                            Ended::Done(outputs) => {
                                // Sending the files to the owner is this attempt's publishing.
                                let started = Instant::now();
                                let sent = self
                                    .send_outputs(
                                        peer,
                                        &claim.task_id,
                                        &at,
                                        &task,
                                        &staging,
                                        &shared.stop,
                                    )
                                    .await;
                                record_phase(
                                    &timings,
                                    &claim.kind,
                                    Phase::Publish,
                                    started.elapsed(),
                                );
                                sent.map(|()| Ended::Done(outputs))
                            }
                            other => Ok(other),
                        }
                    }
                }
            }
        };
        keeper_done.cancel();
        let _ = keeper.await;
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        let ended = match (ended, shared.stop.get()) {
            // A stop wins over whatever the handler or the transfer made of it.
            (_, Some(why)) => Ended::Stopped(why),
            (Ok(e), None) => e,
            (Err(e), None) => {
                // The link or this side's disk, not the task: hand it back uncounted.
                tracing::warn!(error = %e, "could not move the task's files; handing it back");
                count("error");
                if let Err(e) = peer.release(&claim.task_id, &at, began).await {
                    tracing::warn!(error = %e, "release failed; the owner's lease will expire");
                }
                return;
            }
        };
        self.report(peer, &claim, &at, ended, &timings).await;
    }

    /// Sends every file the attempt wrote under its prefix to the owner.
    async fn send_outputs(
        &self,
        peer: &PeerClient,
        task_id: &str,
        at: &Attempt,
        task: &PeerTask,
        staging: &Storage,
        stop: &StopCell,
    ) -> Result<(), String> {
        let files = staging
            .list(&task.output_prefix)
            .await
            .map_err(|e| format!("listing the outputs: {e}"))?;
        for f in files {
            if stop.get().is_some() {
                return Ok(());
            }
            let path = staging
                .local_path(&f.key)
                .ok_or_else(|| "staging is not a local directory".to_string())?;
            peer.upload(task_id, at, &f.key, &path)
                .await
                .map_err(|e| format!("sending {} to {}: {e}", f.key, peer.name))?;
        }
        Ok(())
    }

    async fn report(
        &self,
        peer: &PeerClient,
        claim: &reelay_jobs::Claim,
        at: &Attempt,
        ended: Ended,
        timings: &std::sync::Mutex<Timings>,
    ) {
        let task = &claim.task_id;
        match ended {
            Ended::Done(outputs) => {
                let req = CompleteRequest {
                    worker: at.worker.clone(),
                    attempt: at.attempt,
                    outputs,
                    timings: timings.lock().map(|t| t.seconds()).ok(),
                };
                match peer.complete(task, &req).await {
                    Ok(CompleteAnswer::Completed) => {
                        count("completed");
                        tracing::info!("task of a peer succeeded");
                    }
                    Ok(CompleteAnswer::LeaseLost) => {
                        count("lease_lost");
                        tracing::warn!(
                            "lease lost before completion; the owner does not use these outputs"
                        );
                    }
                    Err(e) => {
                        count("error");
                        tracing::error!(error = %e, "could not complete; the owner's lease will expire and it runs again");
                    }
                }
            }
            Ended::Failed { error, transient } => {
                let req = FailRequest {
                    worker: at.worker.clone(),
                    attempt: at.attempt,
                    retry_after_ms: transient
                        .then(|| reelay_jobs::backoff(at.attempt).as_millis() as u64),
                    error,
                };
                count("failed");
                if let Err(e) = peer.fail(task, &req).await {
                    tracing::warn!(error = %e, "could not report the failure; the owner's lease will expire");
                }
            }
            Ended::Stopped(StopReason::Shutdown) => {
                count("released");
                if let Err(e) = peer.release(task, at, true).await {
                    tracing::warn!(error = %e, "release failed; the owner's lease will expire");
                }
            }
            // A URL input probed here turned out long enough to split: the owner's graph can
            // only grow at home, so the task goes back (not counted) and a home worker splits it.
            Ended::Grown(_) => {
                count("released");
                tracing::info!("the job splits; its task goes home to grow the graph there");
                if let Err(e) = peer.release(task, at, true).await {
                    tracing::warn!(error = %e, "release failed; the owner's lease will expire");
                }
            }
            Ended::Stopped(why) => {
                count("stopped");
                tracing::info!(?why, "task of a peer stopped");
            }
        }
    }
}
