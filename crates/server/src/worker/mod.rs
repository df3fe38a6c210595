//! The worker loop: claim a task, hold its lease while a handler runs it, record the result.
//!
//! Correctness rests on the job store: a claim is a lease that must be renewed, a completion only
//! counts while the lease is held, and each attempt writes under its own storage prefix. So a
//! worker that dies, stalls or is partitioned away loses its task to another worker, and the late
//! one's results are never the ones the job points at.
//!
//! Each task kind has its handler, one module per kind (today `transcode`); [`dispatch`] picks
//! it by the claimed task's kind. A handler returns its own error enum implementing
//! [`TaskError`]: its code, whether another attempt could succeed, or that it was stopped. The
//! loop turns that into retry-or-fail, the same for every kind. A kind this build does not know
//! fails permanently with `unknown_task_kind`.

mod encode_audio;
mod encode_segment;
mod lease_keeper;
mod parts;
mod receipts;
mod remote;
mod side_inputs;
mod split;
mod stitch;
mod sweeper;
pub mod timing;
mod transcode;
mod trouble;
mod wakeups;

use crate::error::ErrorCode;
use crate::metrics as m;
use crate::state::AppState;
use crate::storage::output_prefix;
use reelay_jobs::{backoff, Claim, FailOutcome};
use reelay_media::CancellationToken;
use reelay_protocol::ErrorDetail;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use parts::{intermediate_prefix, PartError};
pub use sweeper::sweep_intermediates;
pub use transcode::TranscodeError;

use timing::{Phase, Timings};

/// "No estimate yet" in the shared ETA cell.
const NO_ETA: i64 = i64::MIN;

/// Why a running task was stopped from outside its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The user cancelled the job (or another task of it failed).
    Cancelled,
    /// Another worker owns the task now.
    LeaseLost,
    /// This process is shutting down: the task goes back to the queue.
    Shutdown,
}

/// The stop reason, shared between the lease keeper (which sets it) and the handler.
#[derive(Debug, Default)]
pub struct StopCell(AtomicU8);

impl StopCell {
    pub fn set(&self, why: StopReason) {
        let v = match why {
            StopReason::Cancelled => 1,
            StopReason::LeaseLost => 2,
            StopReason::Shutdown => 3,
        };
        self.0.store(v, Ordering::SeqCst);
    }

    pub fn get(&self) -> Option<StopReason> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(StopReason::Cancelled),
            2 => Some(StopReason::LeaseLost),
            3 => Some(StopReason::Shutdown),
            _ => None,
        }
    }
}

/// What every handler's error tells the loop.
pub trait TaskError: std::fmt::Display {
    /// Machine-readable, snake_case, stable: becomes the job's error code.
    fn code(&self) -> &str;
    /// Whether another attempt could succeed (then the task is retried after a back-off).
    fn is_transient(&self) -> bool;
    /// `Some` when the handler stopped because it was told to, not because it failed.
    fn stopped(&self) -> Option<StopReason>;
}

/// A task kind this build has no handler for: permanent, nothing another attempt could fix.
#[derive(Debug, thiserror::Error)]
#[error("this worker has no handler for tasks of kind {0:?}")]
pub struct UnknownKind(pub String);

impl TaskError for UnknownKind {
    fn code(&self) -> &str {
        ErrorCode::UnknownTaskKind.as_str()
    }
    fn is_transient(&self) -> bool {
        false
    }
    fn stopped(&self) -> Option<StopReason> {
        None
    }
}

/// What a handler sees of its task and of the worker.
pub struct Context<'a> {
    pub state: &'a AppState,
    pub claim: &'a Claim,
    /// Where this attempt writes its files in `state.storage`: [`attempt_prefix`] at home, the
    /// owner's [`peer_attempt_prefix`] for a peer's task.
    pub prefix: &'a str,
    /// Scratch space of this attempt, removed afterwards.
    pub workdir: &'a Path,
    /// Cancelled when the task must stop (see `stop` for why).
    pub token: &'a CancellationToken,
    pub stop: &'a StopCell,
    /// The task's progress (bits of an f64 in 0..=1), reported with each lease renewal.
    pub progress: &'a AtomicU64,
    /// When the task should end (ms since the epoch), `NO_ETA` until known.
    pub eta_at: &'a AtomicI64,
    speed: &'a AtomicU64,
    /// Where this attempt's time goes, by phase (see [`timing`]).
    timings: &'a std::sync::Mutex<Timings>,
}

/// Where an attempt of `claim` writes its files, so that a stopped or failed attempt removes
/// only its own: a `transcode` task writes the job's outputs under `outputs/{job}/a{n}` (the
/// layout the outputs API reads); other kinds under `tasks/{task id}/a{n}`, one place per task
/// and attempt, so two segments of one job never share (or delete) each other's files.
///
/// The `stitch` task writes the job's outputs under `outputs/{job}/stitch-a{n}` (the outputs API
/// serves every prefix the job's outputs name); intermediate kinds under
/// `tasks/{job}/{task key}/a{n}`, inside the job's [`intermediate_prefix`], removed when the job
/// ends.
pub fn attempt_prefix(claim: &Claim) -> String {
    attempt_prefix_of(&claim.job.id, &claim.task_id, &claim.kind, claim.attempt)
}

/// [`attempt_prefix`] from its parts (the owner of a task a peer runs has no `Claim`).
pub fn attempt_prefix_of(job: &str, task_id: &str, kind: &str, attempt: u32) -> String {
    match kind {
        reelay_jobs::TRANSCODE => output_prefix(job, attempt),
        crate::task_payloads::STITCH => format!("outputs/{job}/stitch-a{attempt}"),
        _ => {
            let key = task_id.strip_prefix(&format!("{job}.")).unwrap_or(task_id);
            format!("{}/{key}/a{attempt}", intermediate_prefix(job))
        }
    }
}

/// Where a peer's attempt writes: [`attempt_prefix_of`] tagged with a digest of its lease
/// holder (`peer:{cluster}:{worker}`). A released attempt gives its number back (a release does
/// not count against the task's attempts), so the next holder gets the same number; a peer's
/// presigned upload URLs stay valid for up to a lease after its release, and without the tag
/// they would point into the next holder's files. The tag keeps the released peer's late
/// writes out of them (the outputs API and every clean-up go by whole prefixes, so a tagged
/// attempt is read and removed like any other).
pub fn peer_attempt_prefix(home_prefix: &str, holder: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(holder.as_bytes());
    let tag: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{home_prefix}-p{tag}")
}

impl Context<'_> {
    /// Runs one phase of the task: inside a `phase` span, its duration logged, exported
    /// (`reelay_task_phase_seconds`) and added to the attempt's timings.
    pub async fn timed<T>(&self, phase: Phase, work: impl std::future::Future<Output = T>) -> T {
        use tracing::Instrument;
        let started = Instant::now();
        let out = work
            .instrument(tracing::info_span!("phase", phase = phase.as_str()))
            .await;
        self.record(phase, started.elapsed());
        out
    }

    /// Records a phase measured elsewhere (see [`Context::timed`]).
    pub fn record(&self, phase: Phase, took: Duration) {
        record_phase(self.timings, &self.claim.kind, phase, took);
    }

    /// Folds one measured encode speed (media seconds per wall second) into the worker's.
    pub fn record_speed(&self, sample: f64) {
        let old = Some(f64::from_bits(self.speed.load(Ordering::Relaxed))).filter(|s| *s > 0.0);
        let speed = crate::load::update_speed(old, sample);
        self.speed.store(speed.to_bits(), Ordering::Relaxed);
    }
}

/// Adds one phase of a task of `kind` to its timings, the histogram and the log.
fn record_phase(timings: &std::sync::Mutex<Timings>, kind: &str, phase: Phase, took: Duration) {
    if let Ok(mut t) = timings.lock() {
        t.add(phase, took);
    }
    let seconds = took.as_secs_f64();
    metrics::histogram!(m::TASK_PHASE_SECONDS, "phase" => phase.as_str(), "kind" => kind.to_string())
        .record(seconds);
    tracing::info!(phase = phase.as_str(), seconds, "phase finished");
}

/// How a task's run ended, before it is written to the store.
enum Ended {
    /// The task's outputs (JSON; a list of files for tasks whose outputs are the job's).
    Done(serde_json::Value),
    Failed {
        error: ErrorDetail,
        transient: bool,
    },
    Stopped(StopReason),
    /// The task succeeded by growing its job's graph (a `transcode` task that probed an input
    /// admission could not, and found that the job splits).
    Grown(Box<reelay_jobs::Growth>),
}

impl Ended {
    fn from_error(e: &dyn TaskError) -> Ended {
        match e.stopped() {
            Some(why) => Ended::Stopped(why),
            None => Ended::Failed {
                error: ErrorDetail::new(e.code(), e.to_string()),
                transient: e.is_transient(),
            },
        }
    }
}

/// A handler's result as the loop records it.
fn ended<T: serde::Serialize, E: TaskError>(r: Result<T, E>) -> Ended {
    match r {
        Ok(out) => match serde_json::to_value(out) {
            Ok(v) => Ended::Done(v),
            Err(e) => Ended::Failed {
                error: ErrorDetail::new(
                    ErrorCode::Internal.as_str(),
                    format!("outputs do not encode: {e}"),
                ),
                transient: false,
            },
        },
        Err(e) => Ended::from_error(&e),
    }
}

/// Runs the claimed task with the handler of its kind.
async fn dispatch(cx: &Context<'_>) -> Ended {
    use crate::task_payloads as kind;
    match cx.claim.kind.as_str() {
        reelay_jobs::TRANSCODE => match transcode::run(cx).await {
            Ok(transcode::Transcoded::Split(growth)) => Ended::Grown(growth),
            Ok(transcode::Transcoded::Outputs(outputs)) => ended(Ok::<_, TranscodeError>(outputs)),
            Err(e) => Ended::from_error(&e),
        },
        kind::SPLIT => ended(split::run(cx).await),
        kind::ENCODE_SEGMENT => ended(encode_segment::run(cx).await),
        kind::ENCODE_AUDIO => ended(encode_audio::run(cx).await),
        kind::STITCH => ended(stitch::run(cx).await),
        other => Ended::from_error(&UnknownKind(other.to_string())),
    }
}

pub struct WorkerPool {
    pub id: String,
    state: AppState,
    /// Cancelled when the pool must stop claiming (SIGTERM).
    stop_claiming: CancellationToken,
    /// Cancelled when running jobs must be abandoned (grace period over).
    abandon: CancellationToken,
    /// Recent encode speed (media seconds per wall second, bits of an f64; 0 = none yet),
    /// advertised with the heartbeat so queued work can be reported in wall seconds.
    speed: AtomicU64,
    /// Peers to take tasks from when this cluster has none (`[steal]`, [`remote`]).
    remote: Option<remote::Remote>,
    /// The peers' tasks this process's slots run now, by task and attempt: every heartbeat carries
    /// them, so this cluster's load report shows those slots busy ([`remote::AwayGuard`]).
    away: std::sync::Mutex<std::collections::HashMap<String, remote::Away>>,
    /// Poked when `away` changes: the heartbeat goes out at once, not at its next tick.
    beat_now: tokio::sync::Notify,
}

impl WorkerPool {
    pub fn new(state: AppState) -> Arc<WorkerPool> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        let remote = remote::Remote::from_config(&state.cfg.steal, state.cfg.allow_private_urls);
        Arc::new(WorkerPool {
            id: format!("{host}-{}-{}", std::process::id(), ulid::Ulid::new()),
            state,
            stop_claiming: CancellationToken::new(),
            abandon: CancellationToken::new(),
            speed: AtomicU64::new(0f64.to_bits()),
            remote,
            away: Default::default(),
            beat_now: tokio::sync::Notify::new(),
        })
    }

    /// Runs `capacity` slots until [`WorkerPool::shutdown`] finishes.
    pub async fn run(self: Arc<Self>) {
        let slots = self.state.capacity as usize;
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop());
        let sweeper = tokio::spawn(sweep_intermediates(
            self.state.clone(),
            Duration::from_secs(1),
            self.stop_claiming.clone(),
        ));
        let wakeups = tokio::spawn(wakeups::run(self.state.clone(), self.stop_claiming.clone()));
        let mut set = tokio::task::JoinSet::new();
        for slot in 0..slots {
            let pool = self.clone();
            set.spawn(async move { pool.slot_loop(slot).await });
        }
        while set.join_next().await.is_some() {}
        heartbeat.abort();
        sweeper.abort();
        wakeups.abort();
        if let Err(e) = self.state.store.deregister(&self.id).await {
            tracing::warn!(error = %e, "could not deregister; the heartbeat will expire");
        }
    }

    fn speed(&self) -> Option<f64> {
        Some(f64::from_bits(self.speed.load(Ordering::Relaxed))).filter(|s| *s > 0.0)
    }

    /// Advertises this process's slots (and encode speed, and the peers' tasks it runs) so
    /// every api replica can report the cluster's capacity and how busy it is.
    async fn heartbeat_loop(self: Arc<Self>) {
        let ttl = self.state.cfg.lease().max(Duration::from_secs(3));
        loop {
            let away = self.away_tasks();
            if let Err(e) = self
                .state
                .store
                .heartbeat(&self.id, self.state.capacity, ttl, self.speed(), &away)
                .await
            {
                tracing::warn!(error = %e, "worker heartbeat failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(ttl / 3) => {}
                _ = self.beat_now.notified() => {}
                _ = self.stop_claiming.cancelled() => return,
            }
        }
    }

    /// Stops claiming; running jobs get `grace` to finish, then are handed back to the queue.
    pub async fn shutdown(
        self: &Arc<Self>,
        grace: Duration,
        done: impl std::future::Future<Output = ()>,
    ) {
        self.stop_claiming.cancel();
        tokio::pin!(done);
        if tokio::time::timeout(grace, &mut done).await.is_err() {
            tracing::warn!("grace period over: handing running jobs back to the queue");
            self.abandon.cancel();
            done.await;
        }
    }

    async fn slot_loop(&self, slot: usize) {
        let poll = Duration::from_millis(self.state.cfg.poll_interval_ms.max(50) * 4);
        let mut last_steal = None;
        loop {
            if self.stop_claiming.is_cancelled() {
                return;
            }
            let wake = self.state.wake.notified();
            let claiming = Instant::now();
            match self
                .state
                .store
                .claim(&self.id, self.state.cfg.lease())
                .await
            {
                Ok(Some(claim)) => {
                    self.execute(claim, claiming.elapsed()).await;
                    continue;
                }
                // Nothing at home: a peer's task, if one is offered (`[steal]`).
                Ok(None) => {
                    if self.steal(&mut last_steal).await {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(slot, error = %e, "claiming failed; retrying"),
            }
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(poll) => {}
                _ = self.stop_claiming.cancelled() => return,
            }
        }
    }

    /// What a handler of `claim` sees: `state` (whose storage is a staging directory for a
    /// peer's task), the attempt's scratch `workdir`, what it shares with its lease keeper, and
    /// this worker's speed.
    fn context<'a>(
        &'a self,
        state: &'a AppState,
        claim: &'a Claim,
        prefix: &'a str,
        workdir: &'a Path,
        lease: &'a lease_keeper::Shared,
        timings: &'a std::sync::Mutex<Timings>,
    ) -> Context<'a> {
        Context {
            state,
            claim,
            prefix,
            workdir,
            token: &lease.token,
            stop: &lease.stop,
            progress: &lease.progress,
            eta_at: &lease.eta_at,
            speed: &self.speed,
            timings,
        }
    }

    /// Runs a claimed task and records its end; `claimed_in` is how long the claim took. Every
    /// log line of the task carries the `task` span: attached with `.instrument()`, not an
    /// entered guard, which would stay entered on this thread across awaits and tag whatever
    /// else the runtime polls there.
    async fn execute(&self, claim: Claim, claimed_in: Duration) {
        let job = &claim.job;
        let span = tracing::info_span!("task", job_id = %job.id, task_id = %claim.task_id, kind = %claim.kind, cluster = %job.cluster, attempt = claim.attempt);
        // `instrument`, never a `span.enter()` guard held across `.await`: the guard stays
        // entered on whichever thread the future left, nests the next tasks' spans under this
        // one, and once this span closes tracing-subscriber's registry panics ("tried to clone
        // a span that already closed"), killing the worker slot mid job (seen in the dashboard
        // browser test: a split job's segments on one slot, the job stuck running).
        use tracing::Instrument;
        self.run_task(claim, claimed_in).instrument(span).await
    }

    async fn run_task(&self, claim: Claim, claimed_in: Duration) {
        let st = &self.state;
        let job = &claim.job;
        tracing::info!("task started");
        let started = Instant::now();
        let timings = std::sync::Mutex::new(Timings::default());
        record_phase(&timings, &claim.kind, Phase::Claim, claimed_in);
        let shared = lease_keeper::Shared::new();
        let lease = lease_keeper::StoreLease {
            store: st.store.clone(),
            task_id: claim.task_id.clone(),
            worker: self.id.clone(),
            attempt: claim.attempt,
            lease: st.cfg.lease(),
        };
        // Needed only while the handler runs: the task's own token ends the keeper.
        let keeper = lease_keeper::spawn(
            lease,
            st.cfg.lease(),
            shared.clone(),
            self.abandon.clone(),
            shared.token.clone(),
        );

        let workdir = st
            .cfg
            .data_dir
            .join("work")
            .join(format!("{}-a{}", claim.task_id, claim.attempt));
        let prefix = attempt_prefix(&claim);
        let cx = self.context(st, &claim, &prefix, &workdir, &shared, &timings);
        let ended = dispatch(&cx).await;
        shared.token.cancel();
        let _ = keeper.await;
        let _ = tokio::fs::remove_dir_all(&workdir).await;

        let preset = crate::api::jobs::preset_label(&job.spec_json);
        let (task, worker, attempt) = (&claim.task_id, &self.id, claim.attempt);
        let result = match ended {
            Ended::Done(outputs) => {
                let timings = timings.lock().map(|t| t.seconds()).ok();
                let completing = Instant::now();
                let completed = st
                    .store
                    .complete_task_timed(task, worker, attempt, outputs, timings.as_ref())
                    .await;
                // The completing write cannot store its own duration: it is in the histogram
                // and the log only (phase `complete`).
                let took = completing.elapsed();
                metrics::histogram!(m::TASK_PHASE_SECONDS, "phase" => "complete", "kind" => claim.kind.clone())
                    .record(took.as_secs_f64());
                tracing::info!(
                    phase = "complete",
                    seconds = took.as_secs_f64(),
                    "phase finished"
                );
                match completed {
                    Ok(true) => {
                        metrics::counter!(m::FINISHED, "status" => "succeeded", "preset" => preset)
                            .increment(1);
                        metrics::histogram!(m::JOB_SECONDS).record(started.elapsed().as_secs_f64());
                        tracing::info!(seconds = started.elapsed().as_secs_f64(), "task succeeded");
                        // Tasks that waited on this one may be claimable now: idle slots look
                        // at once instead of after their poll interval.
                        st.wake.notify_waiters();
                        if crate::progressive::may_make_playable(&claim.kind) {
                            self.mark_if_playable(job).await;
                        }
                        Ok(())
                    }
                    Ok(false) => {
                        tracing::warn!(
                            "lease lost before completion; discarding this attempt's outputs"
                        );
                        let _ = st.storage.delete_prefix(&prefix).await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Ended::Grown(growth) => {
                let timings = timings.lock().map(|t| t.seconds()).ok();
                let grown = st
                    .store
                    .grow(
                        task,
                        worker,
                        attempt,
                        serde_json::json!([]),
                        &growth,
                        timings.as_ref(),
                    )
                    .await;
                match grown {
                    Ok(true) => {
                        tracing::info!(tasks = growth.tasks.len(), "job split: its graph grew");
                        st.wake.notify_waiters();
                        Ok(())
                    }
                    Ok(false) => {
                        tracing::warn!("lease lost before the job's graph could grow");
                        Ok(())
                    }
                    // A graph the store refuses is this build's bug: no attempt would do better.
                    Err(reelay_jobs::StoreError::InvalidTasks(m)) => {
                        self.fail(
                            &claim,
                            ErrorDetail::new(ErrorCode::Internal.as_str(), m),
                            None,
                            &preset,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                }
            }
            Ended::Failed { error, transient } => {
                let retry = transient.then(|| backoff(attempt));
                self.fail(&claim, error, retry, &preset).await
            }
            Ended::Stopped(why) => {
                let _ = st.storage.delete_prefix(&prefix).await;
                match why {
                    StopReason::Shutdown => {
                        tracing::info!("handing the task back to the queue (shutdown)");
                        st.store.release(task, worker, attempt).await
                    }
                    StopReason::Cancelled => {
                        tracing::info!("task cancelled; ffmpeg killed and partial outputs removed");
                        Ok(())
                    }
                    StopReason::LeaseLost => {
                        tracing::warn!("lease lost; another worker owns the task now");
                        Ok(())
                    }
                }
            }
        };
        if let Err(e) = result {
            // The lease will expire and the task will be claimed again: nothing is lost.
            tracing::error!(error = %e, "could not record the task's result; it will be retried when its lease expires");
        }
    }

    /// Records when a split job's HLS outputs became playable (progressive HLS), checked after
    /// each range or audio track is committed: the completion that makes them playable sees
    /// every other committed one, so the first moment is recorded whatever the order.
    async fn mark_if_playable(&self, job: &reelay_jobs::Job) {
        let st = &self.state;
        let outputs = match st.store.task_outputs(&job.id).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "could not read task outputs for progressive HLS");
                return;
            }
        };
        let playable = crate::progressive::LiveHls::new(&job.spec_json, &outputs)
            .is_some_and(|l| l.playable());
        if playable {
            match st
                .store
                .mark_playable(&job.id, reelay_jobs::now_millis())
                .await
            {
                Ok(true) => tracing::info!("job playable (progressive HLS)"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not record playable_at"),
            }
        }
    }

    async fn fail(
        &self,
        claim: &Claim,
        err: ErrorDetail,
        retry: Option<Duration>,
        preset: &str,
    ) -> Result<(), reelay_jobs::StoreError> {
        let st = &self.state;
        let _ = st.storage.delete_prefix(&attempt_prefix(claim)).await;
        match st
            .store
            .fail(&claim.task_id, &self.id, claim.attempt, err.clone(), retry)
            .await?
        {
            FailOutcome::Requeued { .. } => {
                tracing::warn!(code = %err.code, message = %err.message, "attempt failed; task requeued")
            }
            FailOutcome::Failed => {
                metrics::counter!(m::FINISHED, "status" => "failed", "preset" => preset.to_string()).increment(1);
                metrics::counter!(m::FAILED_BY_CODE, "code" => err.code.clone()).increment(1);
                tracing::warn!(code = %err.code, message = %err.message, "job failed");
            }
            FailOutcome::LeaseLost => tracing::warn!("lease lost before recording the failure"),
        }
        Ok(())
    }
}
