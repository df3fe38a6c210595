//! The worker loop: claim a job, hold its lease while encoding, store the outputs, finish it.
//!
//! Correctness rests on the job store: a claim is a lease that must be renewed, a completion only
//! counts while the lease is held, and each attempt writes under its own storage prefix. So a
//! worker that dies, stalls or is partitioned away loses its job to another worker, and the late
//! one's results are never the ones the job points at.

use crate::fetch::FetchError;
use crate::metrics as m;
use crate::state::AppState;
use crate::storage::{content_type, output_prefix};
use reelay_jobs::{backoff, Claim, FailOutcome, RenewOutcome, StoredOutput};
use reelay_media::{CancellationToken, ProbeError, RunError, RunLimits};
use reelay_protocol::{ErrorDetail, JobSpec};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a running job's token was cancelled.
const STOP_NONE: u8 = 0;
/// "No estimate yet" in the shared ETA cell.
const NO_ETA: i64 = i64::MIN;
const STOP_CANCELLED: u8 = 1;
const STOP_LEASE_LOST: u8 = 2;
const STOP_SHUTDOWN: u8 = 3;

/// How a job attempt ended, before it is written to the store.
#[derive(Debug)]
enum Outcome {
    Done(Vec<StoredOutput>),
    Permanent(ErrorDetail),
    Transient(ErrorDetail),
    /// Cancelled by the user, lease lost, or shutdown: the store already knows or `release` tells it.
    Stopped(u8),
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
}

impl WorkerPool {
    pub fn new(state: AppState) -> Arc<WorkerPool> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        Arc::new(WorkerPool {
            id: format!("{host}-{}-{}", std::process::id(), ulid::Ulid::new()),
            state,
            stop_claiming: CancellationToken::new(),
            abandon: CancellationToken::new(),
            speed: AtomicU64::new(0f64.to_bits()),
        })
    }

    /// Runs `capacity` slots until [`WorkerPool::shutdown`] finishes.
    pub async fn run(self: Arc<Self>) {
        let slots = self.state.capacity as usize;
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop());
        let mut set = tokio::task::JoinSet::new();
        for slot in 0..slots {
            let pool = self.clone();
            set.spawn(async move { pool.slot_loop(slot).await });
        }
        while set.join_next().await.is_some() {}
        heartbeat.abort();
        if let Err(e) = self.state.store.deregister(&self.id).await {
            tracing::warn!(error = %e, "could not deregister; the heartbeat will expire");
        }
    }

    fn speed(&self) -> Option<f64> {
        Some(f64::from_bits(self.speed.load(Ordering::Relaxed))).filter(|s| *s > 0.0)
    }

    /// Advertises this process's slots (and encode speed) so every api replica can report the
    /// cluster's capacity.
    async fn heartbeat_loop(self: Arc<Self>) {
        let ttl = self.state.cfg.lease().max(Duration::from_secs(3));
        loop {
            if let Err(e) = self
                .state
                .store
                .heartbeat(&self.id, self.state.capacity, ttl, self.speed())
                .await
            {
                tracing::warn!(error = %e, "worker heartbeat failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(ttl / 3) => {}
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
        loop {
            if self.stop_claiming.is_cancelled() {
                return;
            }
            let wake = self.state.wake.notified();
            match self
                .state
                .store
                .claim(&self.id, self.state.cfg.lease())
                .await
            {
                Ok(Some(claim)) => {
                    self.execute(claim).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(slot, error = %e, "claiming failed; retrying"),
            }
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(poll) => {}
                _ = self.stop_claiming.cancelled() => return,
            }
        }
    }

    async fn execute(&self, claim: Claim) {
        let st = &self.state;
        let job = &claim.job;
        let span = tracing::info_span!("job", job_id = %job.id, cluster = %job.cluster, attempt = claim.attempt);
        let _enter = span.enter();
        tracing::info!("job started");
        let started = Instant::now();
        let token = CancellationToken::new();
        let reason = Arc::new(AtomicU8::new(STOP_NONE));
        let progress = Arc::new(AtomicU64::new(0f64.to_bits()));
        // When the encode should end (ms since the epoch), NO_ETA until ffmpeg reports a speed.
        let eta_at = Arc::new(AtomicI64::new(NO_ETA));

        // Lease keeper: renews, carries progress, and turns cancel / lost lease / shutdown into the token.
        let keeper = {
            let (store, token, reason, progress, eta_at, abandon) = (
                st.store.clone(),
                token.clone(),
                reason.clone(),
                progress.clone(),
                eta_at.clone(),
                self.abandon.clone(),
            );
            let (task_id, worker, attempt, lease) = (
                claim.task_id.clone(),
                self.id.clone(),
                claim.attempt,
                st.cfg.lease(),
            );
            let every = (lease / 3).min(Duration::from_secs(1));
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = abandon.cancelled() => {
                            reason.store(STOP_SHUTDOWN, Ordering::SeqCst);
                            token.cancel();
                            return;
                        }
                        _ = token.cancelled() => return,
                    }
                    let p = f64::from_bits(progress.load(Ordering::Relaxed));
                    let eta = Some(eta_at.load(Ordering::Relaxed)).filter(|e| *e != NO_ETA);
                    match store
                        .renew(&task_id, &worker, attempt, lease, Some(p), eta)
                        .await
                    {
                        Ok(RenewOutcome::Renewed) => {}
                        Ok(RenewOutcome::Cancelled) => {
                            reason.store(STOP_CANCELLED, Ordering::SeqCst);
                            token.cancel();
                            return;
                        }
                        Ok(RenewOutcome::LeaseLost) => {
                            reason.store(STOP_LEASE_LOST, Ordering::SeqCst);
                            token.cancel();
                            return;
                        }
                        // A store hiccup: keep encoding; the lease has slack for a few misses.
                        Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
                    }
                }
            })
        };

        let workdir = st
            .cfg
            .data_dir
            .join("work")
            .join(format!("{}-a{}", job.id, claim.attempt));
        let outcome = self
            .attempt(&claim, &workdir, &token, &reason, &progress, &eta_at)
            .await;
        token.cancel();
        let _ = keeper.await;
        let _ = tokio::fs::remove_dir_all(&workdir).await;

        let preset = crate::api::jobs::preset_label(&job.spec_json);
        let (task, worker, attempt) = (&claim.task_id, &self.id, claim.attempt);
        let prefix = output_prefix(&job.id, attempt);
        let result = match outcome {
            Outcome::Done(outputs) => match st.store.complete(task, worker, attempt, outputs).await
            {
                Ok(true) => {
                    metrics::counter!(m::FINISHED, "status" => "succeeded", "preset" => preset)
                        .increment(1);
                    metrics::histogram!(m::JOB_SECONDS).record(started.elapsed().as_secs_f64());
                    tracing::info!(seconds = started.elapsed().as_secs_f64(), "job succeeded");
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
            },
            Outcome::Permanent(err) => self.fail(&claim, err, None, &preset).await,
            Outcome::Transient(err) => {
                let delay = backoff(attempt);
                self.fail(&claim, err, Some(delay), &preset).await
            }
            Outcome::Stopped(why) => {
                let _ = st.storage.delete_prefix(&prefix).await;
                match why {
                    STOP_SHUTDOWN => {
                        tracing::info!("handing the job back to the queue (shutdown)");
                        st.store.release(task, worker, attempt).await
                    }
                    STOP_CANCELLED => {
                        tracing::info!("job cancelled; ffmpeg killed and partial outputs removed");
                        Ok(())
                    }
                    _ => {
                        tracing::warn!("lease lost; another worker owns the job now");
                        Ok(())
                    }
                }
            }
        };
        if let Err(e) = result {
            // The lease will expire and the job will be claimed again: nothing is lost.
            tracing::error!(error = %e, "could not record the job's result; it will be retried when its lease expires");
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
        let _ = st
            .storage
            .delete_prefix(&output_prefix(&claim.job.id, claim.attempt))
            .await;
        match st
            .store
            .fail(&claim.task_id, &self.id, claim.attempt, err.clone(), retry)
            .await?
        {
            FailOutcome::Requeued { .. } => {
                tracing::warn!(code = %err.code, message = %err.message, "attempt failed; job requeued")
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

    /// One attempt, from input to stored outputs. Never panics; every failure is classified.
    async fn attempt(
        &self,
        claim: &Claim,
        workdir: &Path,
        token: &CancellationToken,
        reason: &AtomicU8,
        progress: &AtomicU64,
        eta_at: &AtomicI64,
    ) -> Outcome {
        let st = &self.state;
        let cfg = &st.cfg;
        let job = &claim.job;
        let transient = |code: &str, msg: String| Outcome::Transient(ErrorDetail::new(code, msg));
        let permanent = |code: &str, msg: String| Outcome::Permanent(ErrorDetail::new(code, msg));
        let stopped = || Outcome::Stopped(reason.load(Ordering::SeqCst));

        let _ = tokio::fs::remove_dir_all(workdir).await;
        let out_dir = workdir.join("out");
        if let Err(e) = tokio::fs::create_dir_all(&out_dir).await {
            return transient(
                "scratch_error",
                format!("cannot create the working directory: {e}"),
            );
        }
        let spec: JobSpec = match serde_json::from_str(&job.spec_json) {
            Ok(s) => s,
            Err(e) => return permanent("invalid_spec", format!("stored spec unreadable: {e}")),
        };
        let renditions = match reelay_media::resolve_outputs(&spec.outputs) {
            Ok(r) => r,
            Err(e) => return permanent("invalid_spec", e.to_string()),
        };

        // Input into the working directory.
        let input = workdir.join("input");
        let fetched = if let Some(key) = &job.input_key {
            // Checked again here for jobs stored before the prefix existed (or under another
            // setting): the job's own upload, or a key under the prefix, nothing else.
            if *key != crate::storage::input_key(&job.id) && !cfg.key_inputs().within_prefix(key) {
                return permanent(
                    "input_not_found",
                    "the input key lies outside this cluster's key_input_prefix".into(),
                );
            }
            tokio::select! {
                r = st.storage.get_to_file(key, &input) => r.map_err(|e| match e {
                    crate::storage::StorageError::NotFound(_) => permanent("input_not_found", format!("input object {key:?} is gone")),
                    other => transient("storage_error", format!("reading the input: {other}")),
                }),
                _ = token.cancelled() => return stopped(),
            }
        } else if let Some(url) = &job.input_url {
            tokio::select! {
                r = st.fetcher.download(url, &input, cfg.policy.max_bytes) => r.map_err(|e: FetchError| {
                    if e.is_transient() { transient(e.code(), e.to_string()) } else { permanent(e.code(), e.to_string()) }
                }),
                _ = token.cancelled() => return stopped(),
            }
        } else {
            Err(permanent("invalid_spec", "the job has no input".into()))
        };
        let size = match fetched {
            Ok(n) => n,
            Err(o) => return o,
        };

        // Probe and policy: a refusal is permanent.
        if let Err(r) = cfg.policy.check_size(size) {
            return permanent(r.code, r.message);
        }
        // Uploads were probed by the api against the same policy; reuse that result.
        let cached = match &job.input_key {
            Some(key) if *key == crate::storage::input_key(&job.id) => st
                .storage
                .get_small(&crate::storage::probe_key(&job.id), 1 << 20)
                .await
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<reelay_media::MediaInfo>(&b).ok()),
            _ => None,
        };
        let probed = match cached {
            Some(info) => Ok(info),
            None => reelay_media::probe(&input, &cfg.tools, &cfg.policy).await,
        };
        let mut info = match probed {
            Ok(i) => i,
            Err(ProbeError::FormatNotAllowed(f)) => {
                return permanent(
                    "unsupported_format",
                    format!("input format {f:?} is not allowed"),
                )
            }
            Err(ProbeError::Unreadable(m)) => {
                return permanent(
                    "corrupt_input",
                    format!("the input is not a readable media file ({m})"),
                )
            }
            Err(e) => return transient("probe_failed", e.to_string()),
        };
        if let Err(r) = cfg
            .policy
            .check(&info, size, reelay_media::needs(&renditions))
        {
            return permanent(r.code, r.message);
        }
        // Interlaced sources must be deinterlaced; where the probe is unsure, idet looks at the
        // first seconds of frames. Not knowing is no reason to fail: the encode goes ahead as
        // before (no deinterlacer), and a file idet cannot read fails the encode anyway.
        if renditions.iter().any(|r| r.needs_video()) {
            if let Err(e) =
                reelay_media::detect_scan(&mut info, &input, &cfg.tools, &cfg.policy).await
            {
                tracing::warn!(code = e.code(), error = %e, "scan of the input unknown; not deinterlacing");
            }
        }

        // Encode each output; progress is the share of outputs done plus the current one's fraction.
        let n = renditions.len() as f64;
        // Media seconds actually written, for the encode speed (never the header's claim).
        let mut media_seconds = 0.0;
        let encode_started = Instant::now();
        for (i, r) in renditions.iter().enumerate() {
            let mut inv = match reelay_media::build(r, &info, &cfg.policy, &input, &out_dir) {
                Ok(inv) => inv,
                Err(e) => return permanent("invalid_output", format!("{}: {e}", r.name)),
            };
            if let Err(e) = reelay_media::package::prepare(r, &out_dir) {
                return transient(e.code(), e.to_string());
            }
            if cfg.tools.realtime_input {
                if let Some(i) = inv.args.iter().position(|a| a == "-i") {
                    inv.args.insert(i, "-re".into());
                }
            }
            let limits = RunLimits {
                stall_timeout: Duration::from_secs(cfg.stall_timeout_seconds),
                time_limit: Duration::from_secs(cfg.job_timeout_seconds),
                max_out_time: Some(cfg.policy.out_time_limit(inv.duration)),
            };
            let run =
                reelay_media::run_ffmpeg(&cfg.tools, &inv.args, workdir, limits, token, |p| {
                    let frac = (i as f64 + p.fraction(inv.duration)) / n;
                    progress.store(frac.min(0.999).to_bits(), Ordering::Relaxed);
                    let later = renditions.len() - i - 1;
                    if let Some(eta) = p.eta_seconds(inv.duration, later) {
                        let at = reelay_jobs::now_millis().saturating_add((eta * 1000.0) as i64);
                        eta_at.store(at, Ordering::Relaxed);
                    }
                })
                .await;
            let e = match run {
                Ok(stats) => {
                    media_seconds += stats.last.out_time;
                    // Manifests completed from the segments ffmpeg wrote (codecs strings).
                    if let Err(e) = reelay_media::package::finish(r, &info, &out_dir) {
                        let message = format!("output {}: {e}", r.name);
                        return if e.is_transient() {
                            transient(e.code(), message)
                        } else {
                            permanent(e.code(), message)
                        };
                    }
                    continue;
                }
                Err(RunError::Cancelled) => return stopped(),
                Err(e) => e,
            };
            let message = match &e {
                _ if e.code() == "output_too_large" => format!(
                    "output {} reached the file size limit of {} bytes",
                    r.name, cfg.tools.limits.file_size_bytes
                ),
                RunError::Stalled(d) => format!(
                    "ffmpeg made no progress for {} s on output {}",
                    d.as_secs(),
                    r.name
                ),
                RunError::TimedOut(d) => {
                    format!("encoding exceeded the time limit of {} s", d.as_secs())
                }
                RunError::Failed {
                    signal: Some(_),
                    status,
                    ..
                } => format!("ffmpeg died ({status}) on output {}", r.name),
                RunError::Failed { stderr_tail, .. } => {
                    let tail = stderr_tail.replace(&workdir.display().to_string(), "");
                    format!("ffmpeg failed on output {}: {}", r.name, tail.trim())
                }
                RunError::Overran { out_time, limit } => format!(
                    "output {} reached {out_time:.1} s but the input was probed at {:.1} s \
                     (at most {limit:.1} s allowed): the input holds more than its header says",
                    r.name, inv.duration
                ),
                RunError::FrameTooLarge => format!(
                    "the input has frames larger than {}x{} pixels after its start",
                    cfg.policy.max_width, cfg.policy.max_height
                ),
                other => other.to_string(),
            };
            return if e.is_transient() {
                transient(e.code(), message)
            } else {
                permanent(e.code(), message)
            };
        }
        let secs = encode_started.elapsed().as_secs_f64();
        if secs > 0.0 && media_seconds > 0.0 {
            metrics::histogram!(m::ENCODE_SPEED).record(media_seconds / secs);
            let speed = crate::load::update_speed(self.speed(), media_seconds / secs);
            self.speed.store(speed.to_bits(), Ordering::Relaxed);
        }

        // Upload every file of this attempt under its own prefix.
        let prefix = output_prefix(&job.id, claim.attempt);
        let files = match walk(&out_dir) {
            Ok(f) => f,
            Err(e) => return transient("scratch_error", format!("listing outputs: {e}")),
        };
        let mut sizes = std::collections::HashMap::new();
        for rel in &files {
            if token.is_cancelled() {
                return stopped();
            }
            let key = format!("{prefix}/{rel}");
            match st.storage.put_file(&key, &out_dir.join(rel)).await {
                Ok(n) => {
                    sizes.insert(rel.clone(), n);
                }
                Err(e) => return transient("storage_error", format!("storing output {rel}: {e}")),
            }
        }
        let mut outputs = Vec::new();
        // A CMAF output lists both of its manifests (HLS master playlist and DASH MPD).
        for name in renditions.iter().flat_map(|r| r.primary_files()) {
            let Some(size) = sizes.get(&name) else {
                return permanent("transcode_failed", format!("ffmpeg produced no {name}"));
            };
            outputs.push(StoredOutput {
                key: format!("{prefix}/{name}"),
                size: *size,
                content_type: content_type(&name).into(),
                name,
            });
        }
        Outcome::Done(outputs)
    }
}

/// Relative paths of every file under `dir`, sorted.
fn walk(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = vec![];
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                if let Ok(rel) = entry.path().strip_prefix(dir) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}
