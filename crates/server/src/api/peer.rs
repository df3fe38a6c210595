//! `/v1/peer/tasks/…`: the remote claim, as the owner of the tasks (issue 16, part 1).
//!
//! A worker of another cluster claims a ready task here, renews its lease with progress, reads
//! the task's inputs and writes its outputs (streamed through these routes, or straight to
//! S3/GCS with presigned URLs), then completes, fails or releases it. The job stays this
//! cluster's: its row, its events, its outputs in this cluster's storage. The lease is the one
//! every home worker holds (same expiry, same takeover), recorded for `peer:{peer}:{worker}`,
//! so a peer's worker that vanishes loses the task to the next claim, at home.
//!
//! Every route needs a token with the `peer` scope, whatever the cluster's auth mode (open
//! mode included: these routes are never anonymous); `admin` does not imply it (see
//! `reelay_identity::Scope::Peer`). The peer's name is the token's owner (`sub`). Peer requests
//! are not rate-limited per token: a peer's idle slots poll, and its running tasks renew, every
//! second by design.

use crate::error::{ApiError, ErrorCode};
use crate::metrics as m;
use crate::peer_io::{
    lease_owner, may_read, may_write, outputs_within, valid_worker_id, Attempt, ClaimRequest,
    CompleteAnswer, CompleteRequest, FailAnswer, FailRequest, OutcomeBody, PeerJob, PeerObject,
    PeerTask, ReleaseRequest, RenewAnswer, RenewRequest, UploadUrlAnswer, UploadUrlRequest,
    PEER_KINDS,
};
use crate::state::AppState;
use crate::task_payloads::SegmentResult;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use reelay_identity::Scope;
use reelay_jobs::{FailOutcome, PeerClaim, RenewOutcome, StoredOutput};
use std::time::Duration;

/// The peer cluster a request comes from (the `peer` token's owner).
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
}

/// A completion lists every output file; a ladder's can be long.
const COMPLETE_BODY_BYTES: usize = 4 << 20;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/tasks/claim", post(claim))
        .route("/tasks/{task}/renew", post(renew))
        .route("/tasks/{task}/complete", post(complete))
        .route("/tasks/{task}/fail", post(fail))
        .route("/tasks/{task}/release", post(release))
        .route("/tasks/{task}/upload-url", post(upload_url))
        .route(
            "/tasks/{task}/objects/{*key}",
            get(get_object).put(put_object),
        )
        .route_layer(middleware::from_fn_with_state(state, guard))
}

/// Authenticates every request (never open), then requires the `peer` scope.
async fn guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let identity = st.auth.identity.as_deref();
    let principal = match crate::auth::authenticate(
        &*st.store,
        identity,
        req.headers().get(header::AUTHORIZATION),
    )
    .await
    {
        Ok((p, _)) => p,
        Err(resp) => return resp,
    };
    let name = match principal.owner.clone() {
        Some(name) if principal.has(Scope::Peer) => name,
        _ => {
            return ApiError::new(
                ErrorCode::Forbidden,
                "the remote-claim routes need a token with the peer scope",
            )
            .into_response()
        }
    };
    req.extensions_mut().insert(Peer { name });
    next.run(req).await
}

async fn json<T: serde::de::DeserializeOwned>(body: Body, limit: usize) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(format!("the body is larger than {limit} bytes")))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::new(ErrorCode::InvalidJson, e.to_string()))
}

fn check_worker(worker: &str) -> Result<(), ApiError> {
    if valid_worker_id(worker) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidWorker,
            "worker must be 1-128 characters of A-Z a-z 0-9 . _ -",
        ))
    }
}

fn count(event: &'static str) {
    metrics::counter!(m::PEER_TASKS, "event" => event).increment(1);
}

fn lease_error(outcome: RenewOutcome) -> Option<ApiError> {
    match outcome {
        RenewOutcome::Renewed => None,
        RenewOutcome::Cancelled => Some(ApiError::new(
            ErrorCode::Cancelled,
            "the job was cancelled: stop the task",
        )),
        RenewOutcome::LeaseLost => Some(ApiError::new(
            ErrorCode::LeaseLost,
            "this attempt no longer holds the task's lease",
        )),
    }
}

/// The file prefix of `holder`'s attempt of `task`.
async fn task_prefix(
    st: &AppState,
    task: &str,
    attempt: u32,
    holder: &str,
) -> Result<String, ApiError> {
    Ok(task_kind_prefix(st, task, attempt, holder).await?.prefix)
}

/// What the object routes need of a task an attempt holds.
struct Held {
    kind: String,
    /// The attempt's file prefix.
    prefix: String,
    /// The job's stored input (its upload, or a key input), which the peer reads as the job's
    /// own source key ([`crate::peer_io::stored_key`]).
    input_key: Option<String>,
}

/// The kind of `task`, the file prefix of `holder`'s attempt (see
/// [`crate::worker::peer_attempt_prefix`]) and the job's stored input.
async fn task_kind_prefix(
    st: &AppState,
    task: &str,
    attempt: u32,
    holder: &str,
) -> Result<Held, ApiError> {
    let not_found = || ApiError::not_found("no such task");
    let (job_id, _) = task.rsplit_once('.').ok_or_else(not_found)?;
    let job = st.store.get_job(job_id).await?.ok_or_else(not_found)?;
    let t = job
        .tasks
        .iter()
        .find(|t| t.id == task)
        .ok_or_else(not_found)?;
    let prefix = crate::worker::peer_attempt_prefix(
        &crate::worker::attempt_prefix_of(&job.id, task, &t.kind, attempt),
        holder,
    );
    Ok(Held {
        kind: t.kind.clone(),
        prefix,
        input_key: job.input_key.clone(),
    })
}

/// Checks (and extends) the attempt's lease: the object routes act only for a live lease.
/// Returns what [`task_kind_prefix`] does.
async fn hold(st: &AppState, peer: &Peer, task: &str, at: &Attempt) -> Result<Held, ApiError> {
    check_worker(&at.worker)?;
    let owner = lease_owner(&peer.name, &at.worker);
    let outcome = renew_peer(st, task, &owner, at.attempt, None, None).await?;
    if let Some(e) = lease_error(outcome) {
        return Err(e);
    }
    task_kind_prefix(st, task, at.attempt, &owner).await
}

/// Every lease check and renewal of a peer's attempt: bounded by `[steal]
/// max_peer_hold_seconds` from its claim (the object routes renew too, so a peer cannot keep a
/// task by reading it either).
async fn renew_peer(
    st: &AppState,
    task: &str,
    owner: &str,
    attempt: u32,
    progress: Option<f64>,
    eta_at: Option<i64>,
) -> Result<RenewOutcome, ApiError> {
    Ok(st
        .store
        .renew_held(
            task,
            owner,
            attempt,
            st.cfg.lease(),
            progress,
            eta_at,
            Duration::from_secs(st.cfg.steal.max_peer_hold_seconds),
        )
        .await?)
}

/// What this cluster hands a peer (`peer`, its name) and offers in `/v1/load`: the kinds in
/// [`PEER_KINDS`], ready at home for `[steal] offer_after_seconds`, and only `task` when given.
pub fn offer_rules<'a>(st: &AppState, peer: &'a str, task: Option<&'a str>) -> PeerClaim<'a> {
    PeerClaim {
        peer,
        kinds: PEER_KINDS,
        ready_for: Duration::try_from_secs_f64(st.cfg.steal.offer_after_seconds)
            .unwrap_or(Duration::ZERO),
        task,
    }
}

/// `POST /v1/peer/tasks/claim`: one task for the peer's worker (200), or 204 when none is
/// offered (nothing ready long enough, or this cluster is draining). With `task_id`, exactly
/// that task if it is still claimable (the one the edge's stealing decision named), else 204.
async fn claim(
    State(st): State<AppState>,
    Extension(peer): Extension<Peer>,
    body: Body,
) -> Result<Response, ApiError> {
    let req: ClaimRequest = json(body, st.cfg.max_json_bytes).await?;
    check_worker(&req.worker)?;
    if !st.is_accepting() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let owner = lease_owner(&peer.name, &req.worker);
    // The offer names its task by a handle only this cluster can open (`offer_handle`); one
    // that does not open (stale key, another cluster's, forged) names nothing claimable.
    let named = match req.task_id.as_deref() {
        Some(h) if reelay_protocol::is_offer_handle(h) => {
            let Some(id) = crate::offer_handle::open(&st.notify_key, &st.cfg.cluster, h) else {
                // Replicas reading different notify keys would refuse every steal this way.
                tracing::warn!(peer = %peer.name, "a claim named an offer handle this cluster did not seal (do all replicas read the same webhook notify key?)");
                return Ok(StatusCode::NO_CONTENT.into_response());
            };
            Some(id)
        }
        other => other.map(str::to_string),
    };
    let offer = offer_rules(&st, &peer.name, named.as_deref());
    let Some(claim) = st
        .store
        .claim_for_peer(offer, &owner, st.cfg.lease())
        .await?
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let inputs = match inputs_of(&st, &claim).await {
        Ok(i) => i,
        Err(NotMovable::StaysHome(why)) => {
            // Not the peer's to run: released with its move recorded, so it is never offered
            // again and a home worker meets (and reports) the problem as for any job.
            tracing::info!(task_id = %claim.task_id, why, "task kept home");
            if let Err(e) = st
                .store
                .release(&claim.task_id, &owner, claim.attempt)
                .await
            {
                tracing::warn!(error = %e, "could not release a task kept home");
            }
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Err(NotMovable::Api(e)) => {
            // Hand it back at once (not counted, and not marked as moved: the peer never
            // began) rather than let the lease run out.
            if let Err(e) = st
                .store
                .release_unstarted(&claim.task_id, &owner, claim.attempt)
                .await
            {
                tracing::warn!(error = %e, "could not release a task after a failed peer claim");
            }
            return Err(e);
        }
    };
    count("claimed");
    tracing::info!(task_id = %claim.task_id, peer = %peer.name, worker = %req.worker, attempt = claim.attempt, "task handed to a peer");
    let answer = PeerTask {
        output_prefix: crate::worker::peer_attempt_prefix(
            &crate::worker::attempt_prefix(&claim),
            &owner,
        ),
        task_id: claim.task_id,
        kind: claim.kind,
        payload: claim.payload,
        attempt: claim.attempt,
        lease_ms: st.cfg.lease_seconds.saturating_mul(1000),
        job: PeerJob::from_job(&claim.job),
        dependencies: claim.dependencies,
        inputs,
        weight: claim.weight,
    };
    Ok(Json(answer).into_response())
}

/// Why a claimed task's inputs cannot go to the peer.
enum NotMovable {
    /// The task itself cannot move (its key input is gone or outside this cluster's prefix):
    /// it stays home for good.
    StaysHome(&'static str),
    /// This cluster could not list them now (storage): the peer may try again.
    Api(ApiError),
}

impl From<ApiError> for NotMovable {
    fn from(e: ApiError) -> Self {
        NotMovable::Api(e)
    }
}

/// What the claimed task reads, each object with a presigned GET URL when the storage signs:
/// every object under the job's `inputs/` prefix, or for a split piece the piece files of its
/// range ([`crate::peer_io::segment_reads`]).
async fn inputs_of(
    st: &AppState,
    claim: &reelay_jobs::Claim,
) -> Result<Vec<PeerObject>, NotMovable> {
    let ttl = Duration::from_secs(st.cfg.presign_ttl_seconds);
    let listed = if claim.kind == crate::task_payloads::ENCODE_SEGMENT {
        let keys = crate::peer_io::segment_reads(claim)
            .map_err(|m| storage_unavailable(format!("split piece: {m}")))?;
        let mut infos = Vec::with_capacity(keys.len());
        for key in keys {
            infos.push(st.storage.head(&key).await.map_err(storage_unavailable)?);
        }
        infos
    } else {
        let job = &claim.job;
        let mut infos = st
            .storage
            .list(&format!("inputs/{}", job.id))
            .await
            .map_err(storage_unavailable)?;
        // A key input is not under `inputs/{job}/`: the peer gets it as the job's source,
        // after the check a home worker makes (the prefix may have changed since admission).
        let source = crate::storage::input_key(&job.id);
        if let Some(key) = job.input_key.as_deref().filter(|k| *k != source) {
            if !st.cfg.key_inputs().may_serve(&job.id, key) {
                return Err(NotMovable::StaysHome(
                    "its key input lies outside this cluster's key_input_prefix",
                ));
            }
            let mut info = match st.storage.head(key).await {
                Ok(info) => info,
                Err(crate::storage::StorageError::NotFound(_)) => {
                    return Err(NotMovable::StaysHome("its key input is gone"))
                }
                Err(e) => return Err(storage_unavailable(e).into()),
            };
            info.key = source;
            infos.push(info);
        }
        infos
    };
    let mut out = Vec::with_capacity(listed.len());
    for o in listed {
        let stored =
            crate::peer_io::stored_key(&claim.job.id, &o.key, claim.job.input_key.as_deref());
        // A presigned URL names the object's key: a key input goes through the object route,
        // so the peer never learns where it lies.
        let url = if st.cfg.steal.presign && stored == o.key {
            st.storage
                .presigned_get(stored, ttl)
                .await
                .map_err(storage_unavailable)?
        } else {
            None
        };
        out.push(PeerObject {
            key: o.key,
            size: o.size,
            url,
        });
    }
    Ok(out)
}

async fn renew(
    State(st): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(task): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let req: RenewRequest = json(body, st.cfg.max_json_bytes).await?;
    check_worker(&req.worker)?;
    let owner = lease_owner(&peer.name, &req.worker);
    let outcome = renew_peer(&st, &task, &owner, req.attempt, req.progress, req.eta_at).await?;
    let outcome = match outcome {
        RenewOutcome::Renewed => RenewAnswer::Renewed,
        RenewOutcome::Cancelled => RenewAnswer::Cancelled,
        RenewOutcome::LeaseLost => RenewAnswer::LeaseLost,
    };
    Ok(Json(OutcomeBody { outcome }).into_response())
}

async fn complete(
    State(st): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(task): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let req: CompleteRequest = json(body, COMPLETE_BODY_BYTES).await?;
    check_worker(&req.worker)?;
    let owner = lease_owner(&peer.name, &req.worker);
    let Held { kind, prefix, .. } = task_kind_prefix(&st, &task, req.attempt, &owner).await?;
    check_outputs_shape(&kind, &req.outputs)?;
    if !outputs_within(&prefix, &req.outputs) {
        return Err(ApiError::new(
            ErrorCode::OutputsOutsideAttempt,
            format!("every output key must lie under {prefix}/"),
        ));
    }
    let done = st
        .store
        .complete_task_timed(
            &task,
            &owner,
            req.attempt,
            req.outputs,
            req.timings.as_ref(),
        )
        .await?;
    let outcome = if done {
        count("completed");
        tracing::info!(task_id = %task, peer = %peer.name, "task completed by a peer");
        CompleteAnswer::Completed
    } else {
        count("lease_lost");
        // The files under `prefix` are left alone: a caller that does not hold the lease may
        // name any attempt of any task, and that prefix can hold a finished attempt's work —
        // the same peer worker's later attempt under the same number (a release hands the
        // number back), whose outputs may be the job's. A lapsed peer's own files there go
        // with the job's other intermediates when it ends (or with its outputs at retention).
        CompleteAnswer::LeaseLost
    };
    Ok(Json(OutcomeBody { outcome }).into_response())
}

/// A completion's `outputs` must have the shape its task kind records (`PEER_KINDS`): a
/// transcode's are the job's files, a piece's a [`SegmentResult`] the stitch reads. Anything
/// else would be refused later, as a broken worker's (a 500), when the job rolls up or stitches.
fn check_outputs_shape(kind: &str, outputs: &serde_json::Value) -> Result<(), ApiError> {
    let refused = |what: &str, e: serde_json::Error| {
        ApiError::new(
            ErrorCode::InvalidOutputs,
            format!("outputs of a {kind} task must be {what}: {e}"),
        )
    };
    if kind == crate::task_payloads::ENCODE_SEGMENT {
        let piece = serde_json::from_value::<SegmentResult>(outputs.clone())
            .map_err(|e| refused("an encoded piece", e))?;
        piece_problem(&piece).map_or(Ok(()), |why| {
            Err(ApiError::new(
                ErrorCode::InvalidOutputs,
                format!("outputs of a {kind} task: {why}"),
            ))
        })
    } else {
        serde_json::from_value::<Vec<StoredOutput>>(outputs.clone())
            .map(drop)
            .map_err(|e| refused("a list of output files", e))
    }
}

/// What is wrong with a peer's encoded piece, if anything. Its fields go verbatim into the
/// owner's live and final HLS playlists (segment URIs, durations, the master playlist's
/// `CODECS`), which viewers' players load from the owner's origin: a URI must be a plain file
/// name of the rung's directory (never `https://…`, never a second line), a codec an RFC 6381
/// string, every number finite and sane, and every file the result names one it lists.
fn piece_problem(piece: &SegmentResult) -> Option<String> {
    use crate::storage::valid_output_path;
    let listed = |path: &str| piece.files.iter().any(|f| f == path);
    let plain = |name: &str| valid_output_path(name) && !name.contains('/');
    if let Some(f) = piece.files.iter().find(|f| !valid_output_path(f)) {
        return Some(format!("{f:?} is not a file path of an output"));
    }
    for (rendition, path) in &piece.output.files {
        if !plain(rendition) || !listed(path) {
            return Some(format!(
                "file {path:?} of {rendition:?} is not among its files"
            ));
        }
    }
    for h in &piece.output.hls {
        if !plain(&h.rendition) {
            return Some(format!("{:?} is not a rendition name", h.rendition));
        }
        let codec_ok = (1..=64).contains(&h.codec.len())
            && h.codec
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b',' | b'-' | b'_'));
        if !codec_ok {
            return Some(format!("{:?} is not an RFC 6381 codec", h.codec));
        }
        if !(1..=16_384).contains(&h.width) || !(1..=16_384).contains(&h.height) {
            return Some(format!("a {}x{} picture", h.width, h.height));
        }
        for seg in &h.segments {
            let path = format!("{}/v{}/{}", h.rendition, h.rung, seg.uri);
            if !plain(&seg.uri) || !listed(&path) {
                return Some(format!("segment {:?} is not a file it stored", seg.uri));
            }
            if !(seg.duration.is_finite() && seg.duration > 0.0 && seg.duration <= 3600.0) {
                return Some(format!("segment {:?} lasts {} s", seg.uri, seg.duration));
            }
        }
    }
    None
}

async fn fail(
    State(st): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(task): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let req: FailRequest = json(body, st.cfg.max_json_bytes).await?;
    check_worker(&req.worker)?;
    let owner = lease_owner(&peer.name, &req.worker);
    let prefix = task_prefix(&st, &task, req.attempt, &owner).await?;
    // A peer's verdict that the task cannot succeed is not final: the task goes home (it never
    // moves again) and runs there, as it would have had it never moved. A failure peculiar to
    // the peer (its tools, its disk) then costs one attempt, not the job, and a hostile or
    // broken peer cannot fail other owners' jobs; a truly bad input fails at home, with home's
    // error. Only the attempts the job allows still bound it.
    let retry = Some(peer_retry(req.retry_after_ms).unwrap_or(Duration::ZERO));
    let outcome = match st
        .store
        .fail(&task, &owner, req.attempt, req.error, retry)
        .await?
    {
        FailOutcome::Requeued { .. } => FailAnswer::Requeued,
        FailOutcome::Failed => FailAnswer::Failed,
        FailOutcome::LeaseLost => FailAnswer::LeaseLost,
    };
    if outcome != FailAnswer::LeaseLost {
        let _ = st.storage.delete_prefix(&prefix).await;
    }
    count(match outcome {
        FailAnswer::Requeued => "requeued",
        FailAnswer::Failed => "failed",
        FailAnswer::LeaseLost => "lease_lost",
    });
    Ok(Json(OutcomeBody { outcome }).into_response())
}

/// The delay a transient failure of a peer asks for, at most what a home worker's backoff would wait
/// ([`reelay_jobs::RETRY_CAP`]): a peer reporting hours (or `u64::MAX` ms) cannot park the task.
fn peer_retry(ms: Option<u64>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(ms).min(reelay_jobs::RETRY_CAP))
}

/// `POST …/release`: the attempt hands the task back uncounted. `began: false` (its inputs
/// never arrived) also forgets that the task moved, so it may go to a peer again; otherwise
/// it stays at home from now on (a task moves at most once).
async fn release(
    State(st): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(task): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let req: ReleaseRequest = json(body, st.cfg.max_json_bytes).await?;
    check_worker(&req.worker)?;
    let owner = lease_owner(&peer.name, &req.worker);
    let prefix = task_prefix(&st, &task, req.attempt, &owner).await?;
    // Only the holder's own files: a lease lost meanwhile means someone else's attempt,
    // under another prefix.
    let outcome = renew_peer(&st, &task, &owner, req.attempt, None, None).await?;
    if outcome == RenewOutcome::Renewed {
        let _ = st.storage.delete_prefix(&prefix).await;
        if req.began {
            st.store.release(&task, &owner, req.attempt).await?;
        } else {
            st.store
                .release_unstarted(&task, &owner, req.attempt)
                .await?;
        }
        count("released");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn upload_url(
    State(st): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(task): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let req: UploadUrlRequest = json(body, st.cfg.max_json_bytes).await?;
    let at = Attempt {
        worker: req.worker,
        attempt: req.attempt,
    };
    let prefix = hold(&st, &peer, &task, &at).await?.prefix;
    if !may_write(&prefix, &req.key) {
        return Err(forbidden_key(&req.key));
    }
    // No URL (`[steal] presign = false`, or storage that cannot sign): the peer PUTs the
    // object through this api's `…/objects/` route instead. The URL lives no longer than the
    // lease it was asked under (the peer asks right before each PUT; the store checks the
    // expiry when the PUT starts): a URL kept past the attempt could overwrite the prefix
    // after the task completed, or after home took it back.
    let ttl = Duration::from_secs(st.cfg.presign_ttl_seconds).min(st.cfg.lease());
    let url = if st.cfg.steal.presign {
        st.storage
            .presigned_put(&req.key, ttl)
            .await
            .map_err(storage_unavailable)?
    } else {
        None
    };
    Ok(Json(UploadUrlAnswer { url }).into_response())
}

fn forbidden_key(key: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ForbiddenKey,
        format!("this attempt may not touch {key:?}"),
    )
}

/// The object routes' `?worker=&attempt=`: a missing or malformed one is the caller's mistake,
/// answered in JSON like every other error (axum's own rejection is plain text).
fn attempt_query(q: Result<Query<Attempt>, QueryRejection>) -> Result<Attempt, ApiError> {
    q.map(|Query(at)| at)
        .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))
}

/// `GET …/objects/{key}?worker=&attempt=`: one of the task's inputs, streamed.
async fn get_object(
    State(st): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path((task, key)): Path<(String, String)>,
    at: Result<Query<Attempt>, QueryRejection>,
) -> Result<Response, ApiError> {
    let at = attempt_query(at)?;
    let held = hold(&st, &peer, &task, &at).await?;
    let (job_id, _) = task
        .rsplit_once('.')
        .ok_or_else(|| ApiError::not_found("no such task"))?;
    if !may_read(job_id, &held.kind, &key) {
        return Err(forbidden_key(&key));
    }
    // The job's source is its stored input: the upload, or the key input it names (checked
    // against the prefix again, as a home worker does).
    let stored = crate::peer_io::stored_key(job_id, &key, held.input_key.as_deref());
    if stored != key && !st.cfg.key_inputs().may_serve(job_id, stored) {
        return Err(forbidden_key(&key));
    }
    let info = st.storage.head(stored).await.map_err(storage_error)?;
    let stream = st
        .storage
        .get_range(stored, None)
        .await
        .map_err(storage_error)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, info.size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

fn storage_error(e: crate::storage::StorageError) -> ApiError {
    match e {
        crate::storage::StorageError::NotFound(_) => ApiError::not_found("no such object"),
        other => storage_unavailable(other),
    }
}

/// A storage failure as a peer sees it: retryable (503 `storage_unavailable`), without the
/// detail, which names this cluster's paths, bucket endpoint and object keys (a key input's
/// location among them, which [`crate::peer_io::stored_key`] keeps from peers); the detail is
/// logged here.
fn storage_unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "object storage failed for a peer's request");
    ApiError::unavailable(
        ErrorCode::StorageUnavailable,
        "this cluster's object storage failed; retry later (the detail is in its log)",
    )
}

/// `PUT …/objects/{key}?worker=&attempt=`: one output file of the attempt, streamed into
/// this cluster's storage; at most the file-size limit of one ffmpeg, and no pause longer than
/// the body idle timeout.
async fn put_object(
    State(st): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path((task, key)): Path<(String, String)>,
    at: Result<Query<Attempt>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let at = attempt_query(at)?;
    let prefix = hold(&st, &peer, &task, &at).await?.prefix;
    if !may_write(&prefix, &key) {
        return Err(forbidden_key(&key));
    }
    let limit = st.cfg.tools.limits.file_size_bytes;
    let idle = Duration::from_secs(st.cfg.body_idle_timeout_seconds.max(1));
    let mut w = st.storage.writer(&key).await.map_err(storage_error)?;
    let mut stream = body.into_data_stream();
    loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(c))) => c,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                w.abort().await;
                return Err(ApiError::new(ErrorCode::BodyRead, e.to_string()));
            }
            Err(_) => {
                w.abort().await;
                return Err(ApiError::new(ErrorCode::BodyTimeout, "the body stalled"));
            }
        };
        if w.written() + chunk.len() as u64 > limit {
            w.abort().await;
            return Err(ApiError::too_large(format!(
                "an output file may be at most {limit} bytes"
            )));
        }
        if let Err(e) = w.write(&chunk).await {
            w.abort().await;
            return Err(storage_error(e));
        }
    }
    // The body may have streamed for minutes: the file is committed only if the attempt
    // still holds the task now, so an upload still in flight when the attempt completed,
    // failed, was released or lost its lease never lands in a prefix that is no longer its own.
    if let Err(e) = hold(&st, &peer, &task, &at).await {
        w.abort().await;
        return Err(e);
    }
    w.finish().await.map_err(storage_error)?;
    Ok(StatusCode::CREATED.into_response())
}

#[cfg(test)]
mod tests {
    use super::check_outputs_shape;
    use serde_json::json;

    #[test]
    fn a_completion_carries_the_outputs_its_kind_records() {
        let files = json!([{"name": "a.mp4", "key": "outputs/j/a1/a.mp4", "size": 1,
                            "content_type": "video/mp4"}]);
        let piece = json!({"prefix": "tasks/j/seg-00001-a1", "files": ["v.ts"],
                           "output": {"not": "a piece"}});
        assert!(check_outputs_shape("transcode", &files).is_ok());
        assert!(check_outputs_shape("transcode", &json!({"prefix": "x"})).is_err());
        // A piece's result is a map, not a file list (both directions refused).
        assert!(check_outputs_shape("encode_segment", &files).is_err());
        assert!(check_outputs_shape("encode_segment", &piece).is_err());
        let piece = json!({"prefix": "tasks/j/seg-00001-a1", "files": ["v/piece_00001.ts"],
                           "output": {"index": 1, "files": [["v", "v/piece_00001.ts"]],
                                      "hls": []}});
        assert!(check_outputs_shape("encode_segment", &piece).is_ok());
    }

    fn hls_piece(uri: &str, codec: &str, duration: f64, stored: &str) -> serde_json::Value {
        json!({"prefix": "tasks/j/seg-00001/a1", "files": ["v/piece_00001.ts", stored],
               "output": {"index": 1, "files": [["v", "v/piece_00001.ts"]],
                          "hls": [{"rendition": "hls", "rung": 0, "codec": codec,
                                   "width": 640, "height": 360,
                                   "segments": [{"uri": uri, "duration": duration}]}]}})
    }

    /// A piece's fields go into the owner's playlists: only plain names of files it stored,
    /// RFC 6381 codecs and sane durations pass.
    #[test]
    fn a_piece_names_only_its_own_files_and_plain_values() {
        let ok = hls_piece("seg_00003.ts", "avc1.64001f", 4.0, "hls/v0/seg_00003.ts");
        assert!(check_outputs_shape("encode_segment", &ok).is_ok());
        for bad in [
            // Another origin for viewers' players.
            hls_piece(
                "https://evil.example/s.ts",
                "avc1.64001f",
                4.0,
                "hls/v0/seg_00003.ts",
            ),
            // A second playlist line.
            hls_piece(
                "s.ts\n#EXT-X-KEY:METHOD=AES-128,URI=\"https://evil/k\"",
                "avc1.64001f",
                4.0,
                "hls/v0/seg_00003.ts",
            ),
            // A segment it did not store.
            hls_piece("seg_00004.ts", "avc1.64001f", 4.0, "hls/v0/seg_00003.ts"),
            hls_piece(
                "seg_00003.ts",
                "avc1\",RESOLUTION=1x1",
                4.0,
                "hls/v0/seg_00003.ts",
            ),
            hls_piece("seg_00003.ts", "", 4.0, "hls/v0/seg_00003.ts"),
            hls_piece("seg_00003.ts", "avc1.64001f", -1.0, "hls/v0/seg_00003.ts"),
            hls_piece("seg_00003.ts", "avc1.64001f", 1e9, "hls/v0/seg_00003.ts"),
            hls_piece("seg_00003.ts", "avc1.64001f", 4.0, "hls/v0/seg 00003.ts"),
        ] {
            assert!(
                check_outputs_shape("encode_segment", &bad).is_err(),
                "accepted {bad}"
            );
        }
        // An encoded piece file it does not list.
        let mut unlisted = ok.clone();
        unlisted["output"]["files"][0][1] = json!("v/piece_00009.ts");
        assert!(check_outputs_shape("encode_segment", &unlisted).is_err());
    }

    #[test]
    fn a_peers_retry_delay_is_capped_at_the_home_backoff() {
        use std::time::Duration;
        assert_eq!(super::peer_retry(None), None);
        assert_eq!(
            super::peer_retry(Some(1500)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            super::peer_retry(Some(u64::MAX)),
            Some(reelay_jobs::RETRY_CAP)
        );
    }
}
