//! `/v1/jobs`: submit (JSON or streamed multipart), read, list, follow (SSE), cancel and delete.

use crate::admission::{self, AdmissionError};
use crate::auth::Principal;
use crate::body::{read_to_limit, BodyError, BodyTimeout};
use crate::context;
use crate::deadline::Deadline;
use crate::error::{ApiError, ErrorCode};
use crate::metrics as m;
use crate::side_files;
use crate::state::AppState;
use crate::storage::{input_key, valid_user_key};
use crate::submit_timing::{SubmitPhase, SubmitTimer};
use crate::view::job_view;
use axum::extract::{Extension, FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use reelay_jobs::{CancelOutcome, CreateOutcome, Job, NewJob, Purge};
use reelay_media::{Needs, Rendition};
use reelay_protocol::{JobId, JobList, JobSpec, JobStatus};
use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

pub async fn submit(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    if !st.is_accepting() {
        return Err(ApiError::unavailable(
            ErrorCode::ShuttingDown,
            "this cluster is shutting down and accepts no new jobs",
        ));
    }
    let principal = req
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::internal("authorizing the submission", "no principal"))?;
    let idem = idempotency_key(req.headers())?;
    let deadline = Deadline::from_headers(req.headers())?;
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ctype.starts_with("application/json") {
        // Only a real overflow is a 413; a stalled body is a 408, a broken one a 400.
        let body = read_to_limit(req.into_body(), st.cfg.max_json_bytes)
            .await
            .map_err(|e| e.into_api(ErrorCode::TooLarge))?;
        let spec = parse_spec(&body)?;
        admission::check_priority(&spec)?;
        admission::check_notify(&spec, st.cfg.webhooks.max_notify, st.cfg.allow_private_urls)?;
        submit_json(st, principal, spec, idem, deadline).await
    } else if ctype.starts_with("multipart/form-data") {
        let mp = Multipart::from_request(req, &st)
            .await
            .map_err(|e| ApiError::new(ErrorCode::MalformedMultipart, e.body_text()))?;
        submit_multipart(st, principal, mp, idem, deadline).await
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send application/json (input by url or key) or multipart/form-data (part spec, then part file)",
        ))
    }
}

pub(crate) fn idempotency_key(h: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = h.get("idempotency-key") else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .ok()
        .filter(|s| (1..=255).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()));
    s.map(|s| Some(s.to_string())).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidIdempotencyKey,
            "Idempotency-Key must be 1-255 visible ASCII characters",
        )
    })
}

pub use crate::admission::PRIORITY_RANGE;

/// Syntax errors are 400 (not JSON at all); well-formed JSON of the wrong shape is 422.
pub(crate) fn parse_spec(body: &[u8]) -> Result<JobSpec, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::new(
            ErrorCode::InvalidSpec,
            "the job spec must be a JSON object",
        ));
    }
    // Before typing, so that a wrong value is answered with the key it is under.
    crate::context::check_metadata(value.get("metadata"))?;
    serde_json::from_value::<JobSpec>(value)
        .map_err(|e| ApiError::new(ErrorCode::InvalidSpec, format!("invalid job spec: {e}")))
}

pub(crate) async fn submit_json(
    st: AppState,
    principal: Principal,
    spec: JobSpec,
    idem: Option<String>,
    deadline: Option<Deadline>,
) -> Result<Response, ApiError> {
    let renditions = admission::renditions(&spec)?;
    admission::split_request(&spec)?;
    side_files::watermark_spec(&spec)?;
    side_files::refuse_in_json(&spec)?;
    side_files::check_burn_in(&spec, None, &renditions)?;
    let input = spec.input.clone().ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidSpec, "input: required in a JSON submission ({\"url\": ...}, {\"key\": ...} or {\"upload\": ...}); or upload the file as multipart")
    })?;
    if let (None, None, Some(upload)) = (&input.url, &input.key, &input.upload) {
        return submit_upload(st, principal, &spec, upload, idem, deadline, &renditions).await;
    }
    let (input_key, input_url, name) = match (&input.url, &input.key) {
        (Some(url), None) if input.upload.is_none() => {
            admission::check_url(url, st.cfg.allow_private_urls)?;
            (None, Some(url.clone()), context::name_from_url(url))
        }
        (None, Some(key)) if input.upload.is_none() => {
            check_key_input(&st, &principal, key).await?;
            (Some(key.clone()), None, context::clean_name(key))
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidSpec,
                "input: give exactly one of url, key or upload",
            ))
        }
    };
    let id = new_job_id(&st);
    // Duration is unknown until the worker downloads the input.
    let estimate = admission::estimate(None, &renditions);
    create(
        &st,
        &principal,
        id,
        &spec,
        input_key,
        input_url,
        idem,
        deadline,
        estimate,
        &renditions,
        None,
        name,
    )
    .await
}

/// A finished tus upload as the input (`crate::api::uploads::take`): its bytes become the job's
/// input object; the upload is deleted once the job exists, released if it was not created.
#[allow(clippy::too_many_arguments)]
async fn submit_upload(
    st: AppState,
    principal: Principal,
    spec: &JobSpec,
    upload: &str,
    idem: Option<String>,
    deadline: Option<Deadline>,
    renditions: &[Rendition],
) -> Result<Response, ApiError> {
    let id = new_job_id(&st);
    let key = input_key(&id);
    let taken = crate::api::uploads::take(&st, &principal, upload, &id, &key).await?;
    let estimate = 60.0 * renditions.len() as f64;
    let resp = create(
        &st,
        &principal,
        id,
        spec,
        Some(key.clone()),
        None,
        idem,
        deadline,
        estimate,
        renditions,
        None,
        taken.name.clone(),
    )
    .await;
    let created = matches!(&resp, Ok(r) if r.status() == StatusCode::ACCEPTED);
    taken.settle(&st, created, &key).await;
    resp
}

/// A key input must be one the caller may read (`crate::key_inputs`) and must exist. Refused
/// and missing keys get the very same answer, and objects outside the caller's reach are never
/// even looked up, so nothing tells which of them exist.
async fn check_key_input(st: &AppState, who: &Principal, key: &str) -> Result<(), ApiError> {
    if !valid_user_key(key) {
        return Err(ApiError::new(
            ErrorCode::InvalidSpec,
            "input.key: must be a relative key of A-Z a-z 0-9 - _ . = + segments separated by /",
        ));
    }
    let rule = st.cfg.key_inputs();
    if !rule.enabled() {
        return Err(ApiError::new(
            ErrorCode::KeyInputsDisabled,
            "input.key: this cluster accepts no key inputs (no key_input_prefix is configured); \
             upload the file or give a URL",
        ));
    }
    let not_found = || {
        ApiError::new(
            ErrorCode::InputNotFound,
            "input.key: no object with this key that this client may read",
        )
    };
    if !rule.may_read(key, who.owner().as_deref(), who.is_admin()) {
        return Err(not_found());
    }
    match st.storage.head(key).await {
        Ok(_) => Ok(()),
        Err(crate::storage::StorageError::NotFound(_)) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

fn new_job_id(st: &AppState) -> String {
    JobId {
        cluster: st.cfg.cluster.clone(),
        ulid: ulid::Ulid::new().to_string(),
    }
    .to_string()
}

async fn submit_multipart(
    st: AppState,
    principal: Principal,
    mut mp: Multipart,
    idem: Option<String>,
    deadline: Option<Deadline>,
) -> Result<Response, ApiError> {
    let mut timer = SubmitTimer::start(std::time::Instant::now());
    // The spec part (and the file part's headers after it) must be in within the short body
    // deadline; only the file itself may take the upload deadline.
    let limits = st.cfg.body_limits();
    let spec_by = tokio::time::Instant::now() + limits.deadline;
    let spec_late = || {
        BodyError::TimedOut(BodyTimeout::Deadline(limits.deadline)).into_api(ErrorCode::TooLarge)
    };
    let first = tokio::time::timeout_at(spec_by, next_field(&mut mp))
        .await
        .map_err(|_| spec_late())??
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::MalformedMultipart,
                "empty multipart body: send part spec, then part file",
            )
        })?;
    if first.name() != Some("spec") {
        return Err(ApiError::new(
            ErrorCode::MalformedMultipart,
            "the first part must be named spec (the job spec JSON), followed by the file part",
        ));
    }
    let spec_bytes =
        tokio::time::timeout_at(spec_by, read_small_field(first, st.cfg.max_json_bytes))
            .await
            .map_err(|_| spec_late())??;
    let spec = parse_spec(&spec_bytes)?;
    admission::check_priority(&spec)?;
    admission::check_notify(&spec, st.cfg.webhooks.max_notify, st.cfg.allow_private_urls)?;
    if spec.input.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidSpec,
            "input: must be absent when the file is uploaded",
        ));
    }
    let renditions = admission::renditions(&spec)?;
    admission::split_request(&spec)?;
    let mark_spec = side_files::watermark_spec(&spec)?;
    side_files::check_declared(&spec)?;
    let uploads = st.cfg.data_dir.join("uploads");
    tokio::fs::create_dir_all(&uploads)
        .await
        .map_err(|e| ApiError::internal("creating the upload directory", e))?;
    // Side parts (caption files, the watermark image) come between spec and file, small and
    // read whole within the spec's deadline, each checked before the next part is read.
    let mut caption_files: Vec<TempFile> = Vec::new();
    let mut mark: Option<(TempFile, reelay_media::watermark::Mark)> = None;
    let field = loop {
        let field = tokio::time::timeout_at(spec_by, next_field(&mut mp))
            .await
            .map_err(|_| spec_late())??
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::MalformedMultipart,
                    "missing part file after spec",
                )
            })?;
        match field.name() {
            Some("file") => break field,
            Some(side_files::CAPTIONS_PART) => {
                let index = caption_files.len();
                if index >= side_files::declared_captions(&spec) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidSpec,
                        format!("captions part {index} is not declared in captions.files"),
                    ));
                }
                let limit = reelay_media::captions::MAX_CAPTION_BYTES as usize;
                let bytes = tokio::time::timeout_at(spec_by, read_small_field(field, limit))
                    .await
                    .map_err(|_| spec_late())?
                    .map_err(|e| {
                        side_part_too_large(
                            e,
                            "caption_too_large",
                            &format!("captions part {index}"),
                            limit,
                        )
                    })?;
                let vtt = side_files::caption_part(
                    &st.cfg.tools,
                    &st.cfg.policy,
                    index,
                    &bytes,
                    &uploads,
                )
                .await?;
                caption_files.push(TempFile(vtt));
            }
            Some(side_files::WATERMARK_PART) if mark.is_none() && mark_spec.is_some() => {
                let limit = reelay_media::watermark::MAX_IMAGE_BYTES as usize;
                let bytes = tokio::time::timeout_at(spec_by, read_small_field(field, limit))
                    .await
                    .map_err(|_| spec_late())?
                    .map_err(|e| {
                        side_part_too_large(e, "watermark_too_large", "the watermark part", limit)
                    })?;
                let tmp = TempFile(uploads.join(format!("{}.mark", ulid::Ulid::new())));
                tokio::fs::write(&tmp.0, &bytes)
                    .await
                    .map_err(|e| ApiError::internal("writing the watermark", e))?;
                let m = side_files::watermark_image(&st.cfg.tools, &st.cfg.policy, &tmp.0).await?;
                mark = Some((tmp, m));
            }
            Some(side_files::WATERMARK_PART) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidSpec,
                    "a watermark part is allowed once, and only with the spec's watermark field",
                ))
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::MalformedMultipart,
                    "after spec come the optional captions and watermark parts, then file",
                ))
            }
        }
    };
    let name = field.file_name().and_then(context::clean_name);
    side_files::check_parts(&spec, caption_files.len(), mark.is_some(), &renditions)?;
    side_files::check_burn_in(&spec, None, &renditions)?;
    let tmp = TempFile(uploads.join(ulid::Ulid::new().to_string()));
    let size = stream_to_file(field, &tmp.0, st.cfg.policy.max_bytes).await?;
    timer.lap(SubmitPhase::Receive, std::time::Instant::now());

    // Probe now so a bad file is refused while the client is still here.
    let policy = &st.cfg.policy;
    policy.check_size(size).map_err(AdmissionError::Policy)?;
    let info = reelay_media::probe(&tmp.0, &st.cfg.tools, policy)
        .await
        .map_err(admission::probe_error)?;
    let needs: Needs = reelay_media::needs(&renditions);
    policy
        .check(&info, size, needs)
        .map_err(AdmissionError::Policy)?;
    side_files::check_burn_in(&spec, Some(&info), &renditions)?;
    timer.lap(SubmitPhase::Probe, std::time::Instant::now());

    let id = new_job_id(&st);
    let key = input_key(&id);
    // The spooled upload is ours alone: a local store takes it by rename, not a second copy of
    // every byte (issue 18: on every multipart job's critical path).
    st.storage.put_scratch_file(&key, &tmp.0).await?;
    timer.lap(SubmitPhase::StoreInput, std::time::Instant::now());
    let stored_sides = async {
        for (n, f) in caption_files.iter().enumerate() {
            st.storage
                .put_file(&side_files::caption_key(&id, n), &f.0)
                .await?;
        }
        if let Some((f, _)) = &mark {
            st.storage
                .put_file(&side_files::watermark_key(&id), &f.0)
                .await?;
        }
        Ok::<_, crate::storage::StorageError>(())
    }
    .await;
    if let Err(e) = stored_sides {
        let _ = st.storage.delete_prefix(&format!("inputs/{id}")).await;
        return Err(e.into());
    }
    if let Ok(json) = serde_json::to_vec(&info) {
        // An optimisation only: without it the worker probes the input itself.
        if let Err(e) = st
            .storage
            .put_bytes(&crate::storage::probe_key(&id), json)
            .await
        {
            tracing::warn!(error = %e, "could not store the probe result");
        }
    }
    timer.lap(SubmitPhase::StoreExtras, std::time::Instant::now());
    let estimate = admission::estimate(info.best_duration(), &renditions);
    let job_id = id.clone();
    let resp = create(
        &st,
        &principal,
        id,
        &spec,
        Some(key.clone()),
        None,
        idem,
        deadline,
        estimate,
        &renditions,
        Some((&info, size)),
        name,
    )
    .await;
    timer.lap(SubmitPhase::Insert, std::time::Instant::now());
    timer.log(&job_id);
    if !matches!(&resp, Ok(r) if r.status() == StatusCode::ACCEPTED) {
        // Replayed or failed: the copy we just stored belongs to no job.
        let _ = st
            .storage
            .delete_prefix(key.trim_end_matches("/source"))
            .await;
    }
    resp
}

/// A side part over its limit is the 413 of its own kind; other read failures stay as they are.
fn side_part_too_large(e: ApiError, code: &'static str, what: &str, limit: usize) -> ApiError {
    if e.status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::coded(
            StatusCode::PAYLOAD_TOO_LARGE,
            code,
            format!("{what} is larger than the limit of {limit} bytes"),
        )
    } else {
        e
    }
}

/// A multipart error as the client should see it: a body that stalled (408) or broke off
/// (400 `body_incomplete`) is told apart from a malformed multipart framing (400).
fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if BodyError::is_read_failure(&e) {
        return BodyError::of(&e).into_api(ErrorCode::TooLarge);
    }
    ApiError::new(ErrorCode::MalformedMultipart, e.body_text())
}

async fn next_field(
    mp: &mut Multipart,
) -> Result<Option<axum::extract::multipart::Field<'_>>, ApiError> {
    mp.next_field().await.map_err(multipart_error)
}

async fn read_small_field(
    mut f: axum::extract::multipart::Field<'_>,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = f.chunk().await.map_err(multipart_error)? {
        buf.extend_from_slice(&chunk);
        if buf.len() > limit {
            return Err(ApiError::too_large(format!(
                "the spec part is limited to {limit} bytes"
            )));
        }
    }
    Ok(buf)
}

/// Removes the upload scratch file however the request ends.
struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn stream_to_file(
    mut f: axum::extract::multipart::Field<'_>,
    path: &std::path::Path,
    max: u64,
) -> Result<u64, ApiError> {
    let mut out = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::internal("creating the upload file", e))?;
    let mut n = 0u64;
    loop {
        // Idle time and the upload deadline are enforced by the listener's TimedBody.
        let Some(chunk) = f.chunk().await.map_err(multipart_error)? else {
            break;
        };
        n += chunk.len() as u64;
        if n > max {
            return Err(ApiError::new(
                ErrorCode::InputTooLarge,
                format!("the input is larger than the limit of {max} bytes"),
            ));
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal("writing the upload", e))?;
    }
    out.flush()
        .await
        .map_err(|e| ApiError::internal("writing the upload", e))?;
    Ok(n)
}

/// Stable FNV-1a over the canonical spec: equal specs hash equal across processes and versions.
fn spec_hash(canonical: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in canonical.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// The label for metrics: the first output's preset, or "custom".
pub fn preset_label(spec_json: &str) -> String {
    serde_json::from_str::<JobSpec>(spec_json)
        .ok()
        .and_then(|s| s.outputs.first().and_then(|o| o.preset.clone()))
        .unwrap_or_else(|| "custom".into())
}

#[allow(clippy::too_many_arguments)]
async fn create(
    st: &AppState,
    principal: &Principal,
    id: String,
    spec: &JobSpec,
    input_key: Option<String>,
    input_url: Option<String>,
    idem: Option<String>,
    deadline: Option<Deadline>,
    estimated_seconds: f64,
    renditions: &[Rendition],
    probed: Option<(&reelay_media::MediaInfo, u64)>,
    input_name: Option<String>,
) -> Result<Response, ApiError> {
    let info = probed.map(|(info, _)| info);
    // Every path (JSON, multipart, tus upload) ends here, so the endpoints are checked once.
    admission::check_notify(spec, st.cfg.webhooks.max_notify, st.cfg.allow_private_urls)?;
    let spec_json =
        serde_json::to_string(spec).map_err(|e| ApiError::internal("encoding the spec", e))?;
    // Validated whatever else the job has: a bad `split` is the client's mistake.
    let request = admission::split_request(spec)?;
    // The slots only matter to an input probed here (an upload); the others decide later.
    let settings = match info {
        Some(_) => st.split_settings(request).await,
        None => st.cfg.split,
    };
    let (split, tasks) =
        admission::decide(spec, estimated_seconds, renditions, info, settings, request);
    let new = NewJob {
        id,
        cluster: st.cfg.cluster.clone(),
        spec_hash: spec_hash(&spec_json),
        spec_json,
        input_key,
        input_url,
        priority: spec.priority,
        idempotency_key: idem,
        max_attempts: st.cfg.max_attempts,
        estimated_seconds,
        owner: principal.owner(),
        tasks,
        split_json: serde_json::to_string(&split).ok(),
        metadata: spec.metadata.clone(),
        input_name,
        input_facts: probed.map(|(info, size)| context::facts(info, size)),
    };
    // Last check before the job exists: the edge may have given up on this request already.
    if let Some(d) = deadline {
        d.check(crate::deadline::now_unix_ms())?;
    }
    let (status, job) = match st.store.create_job(new).await? {
        CreateOutcome::Created(job) => {
            metrics::counter!(m::SUBMITTED, "preset" => preset_label(&job.spec_json)).increment(1);
            tracing::info!(job_id = %job.id, cluster = %job.cluster, "job queued");
            st.wake.notify_waiters();
            (StatusCode::ACCEPTED, job)
        }
        // Idempotency keys are per owner in the store, so a replay is always the caller's own
        // job; kept as a second line of defence: another token's job is never revealed.
        CreateOutcome::Existing(job) if !principal.may_see(job.owner.as_deref()) => {
            return Err(ApiError::new(
                ErrorCode::IdempotencyConflict,
                "this Idempotency-Key was already used with a different spec",
            ))
        }
        CreateOutcome::Existing(job) => (StatusCode::OK, job),
    };
    let mut resp = (status, Json(job_view(&job))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// Loads a job of this cluster that `who` may see, or 404 for malformed ids, other clusters,
/// unknown jobs and other tokens' jobs (which are not admitted to exist).
pub async fn load(st: &AppState, who: &Principal, id: &str) -> Result<Job, ApiError> {
    let parsed: JobId = id.parse().map_err(|_| {
        ApiError::not_found(format!(
            "no job {:?}",
            id.chars().take(80).collect::<String>()
        ))
    })?;
    if parsed.cluster != st.cfg.cluster {
        return Err(ApiError::not_found(format!(
            "job {id} belongs to cluster {:?}, not {:?}",
            parsed.cluster, st.cfg.cluster
        )));
    }
    st.store
        .get_job(id)
        .await?
        .filter(|job| who.may_see(job.owner.as_deref()))
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

pub async fn get(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&st, &who, &id).await?;
    Ok(Json(job_view(&job)).into_response())
}

pub async fn list(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Json<JobList>, ApiError> {
    let (mut status, mut limit, mut cursor) = (None, 50u32, None);
    let mut metadata = Vec::new();
    for (k, v) in url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        if let Some(pair) = context::metadata_filter(&k, &v) {
            if !metadata.contains(&pair) {
                metadata.push(pair);
            }
            continue;
        }
        match k.as_ref() {
            // An empty `status=` is a malformed filter, not "no filter" (the OpenAPI document
            // allows only the five statuses).
            "status" => {
                status = Some(
                    v.parse::<JobStatus>()
                        .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e))?,
                )
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=500).contains(n))
                    .ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, "limit must be 1-500"))?
            }
            "cursor" if !v.is_empty() => cursor = Some(v.into_owned()),
            _ => {}
        }
    }
    // What the OpenAPI parameter can say (at most 16 pairs, values of at most 512 characters)
    // is refused as it says; what it cannot (the key alphabet, bytes rather than characters) is
    // a filter no job can match, and the store is not asked.
    if metadata.len() > context::MAX_KEYS {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("at most {} metadata filters", context::MAX_KEYS),
        ));
    }
    if let Some((k, _)) = metadata
        .iter()
        .find(|(_, v)| v.chars().count() > context::MAX_VALUE_BYTES)
    {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!(
                "metadata.{}: a metadata value is at most {} characters",
                k.chars().take(64).collect::<String>(),
                context::MAX_VALUE_BYTES
            ),
        ));
    }
    let impossible = metadata
        .iter()
        .any(|(k, v)| !context::valid_key(k) || v.len() > context::MAX_VALUE_BYTES);
    if impossible {
        return Ok(Json(JobList::complete(Vec::new(), None)));
    }
    let filter = reelay_jobs::JobFilter { status, metadata };
    let (jobs, next_cursor) = st
        .store
        .list_jobs_filtered(who.owner_filter(), &filter, limit, cursor.as_deref())
        .await?;
    Ok(Json(JobList::complete(
        jobs.iter().map(job_view).collect(),
        next_cursor,
    )))
}

/// `DELETE /v1/jobs/{id}`. An unfinished job is cancelled (200 with its view: what this route
/// always did, so existing clients keep working). A finished job (succeeded, failed, or
/// cancelled — so cancel-then-DELETE removes a running job entirely) has every object deleted
/// (`crate::retention::job_prefixes`) and stays as a tombstone with `deleted_at` set and no
/// outputs: 204. Deleting a deleted job again is 204 too (the deletes run again; nothing is
/// left). Another tenant's job is 404, as everywhere.
pub async fn delete(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&st, &who, &id).await?;
    if !job.status.is_terminal() {
        return cancel(&st, &id).await;
    }
    // Objects first, the record after: a failure in between leaves the job to be deleted again.
    crate::retention::delete_objects(&st.storage, &job, Purge::All).await?;
    match st.store.mark_purged(&id, Purge::All).await? {
        Some(job) => {
            tracing::info!(job_id = %job.id, "job deleted");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        None => Err(ApiError::not_found(format!("no job {id}"))),
    }
}

/// `POST /v1/jobs/{id}/cancel`: the explicit spelling of cancel. It never deletes files: a job
/// that already ended is a 409 `already_finished`.
pub async fn cancel_job(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    load(&st, &who, &id).await?;
    cancel(&st, &id).await
}

async fn cancel(st: &AppState, id: &str) -> Result<Response, ApiError> {
    match st.store.cancel(id).await? {
        CancelOutcome::Cancelled(job) => {
            metrics::counter!(m::FINISHED, "status" => "cancelled", "preset" => preset_label(&job.spec_json)).increment(1);
            tracing::info!(job_id = %job.id, cluster = %job.cluster, "job cancelled");
            Ok(Json(job_view(&job)).into_response())
        }
        // It ended between the read and the cancel: say so rather than delete files the
        // caller only meant to stop; a second DELETE deletes them.
        CancelOutcome::AlreadyFinished(job) => Err(ApiError::new(
            ErrorCode::AlreadyFinished,
            format!(
                "job {} ended as {} before it could be cancelled; DELETE it again to delete its files",
                job.id, job.status
            ),
        )),
        CancelOutcome::NotFound => Err(ApiError::not_found(format!("no job {id}"))),
    }
}

/// Server-sent events: the job view whenever it changes (event `job`), ending after a
/// terminal status; once a split job's HLS outputs are playable, one `playable` event
/// (`{"id", "playable_at"}`) just before the view that first carries `playable_at`.
///
/// Each event's `id` is the number of the job's latest status event (`job_events.seq`), so a
/// client that reconnects with `Last-Event-ID` after seeing the final status gets an empty,
/// closed stream instead of the same end again; any other reconnect starts with the current
/// view.
pub async fn events(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    load(&st, &who, &id).await?;
    let seen: Option<i64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok());
    let poll = Duration::from_millis(st.cfg.poll_interval_ms);
    let follow = Follow {
        st,
        id,
        last: String::new(),
        seq: 0,
        seen,
        done: false,
        playable_sent: false,
    };
    let stream = futures::stream::unfold(follow, move |mut f| async move {
        if f.done || f.st.stopping.is_cancelled() {
            return None;
        }
        loop {
            let read = async {
                let events = f.st.store.job_events(&f.id, f.seq, 1000).await?;
                let job = f.st.store.get_job(&f.id).await?;
                Ok::<_, reelay_jobs::StoreError>((events, job))
            };
            let (events, job) = match read.await {
                Ok((events, Some(job))) => (events, job),
                Ok((_, None)) => return None,
                Err(e) => {
                    f.done = true;
                    let ev = Event::default().event("error").data(e.to_string());
                    return Some((Ok(ev), f));
                }
            };
            if let Some(last) = events.last() {
                f.seq = last.seq;
            }
            let terminal = job.status.is_terminal();
            // Resumed after the end was already delivered: nothing new will ever come.
            if terminal && f.seen.is_some_and(|seen| seen >= f.seq) {
                return None;
            }
            let view = job_view(&job);
            // Progressive HLS can start: said once per stream, as its own event (before the
            // view that carries the same `playable_at`), so a player need not diff views.
            if let (false, Some(at)) = (f.playable_sent, view.playable_at.as_ref()) {
                f.playable_sent = true;
                let data = serde_json::json!({ "id": view.id, "playable_at": at });
                let ev = Event::default()
                    .event("playable")
                    .id(f.seq.to_string())
                    .data(data.to_string());
                return Some((Ok(ev), f));
            }
            let json = serde_json::to_string(&view).unwrap_or_default();
            if json != f.last {
                let ev = Event::default()
                    .event("job")
                    .id(f.seq.to_string())
                    .data(json.clone());
                f.last = json;
                f.done = terminal;
                return Some((Ok(ev), f));
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                // Shutting down: end the stream; EventSource clients reconnect elsewhere.
                _ = f.st.stopping.cancelled() => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Where one SSE follower is.
struct Follow {
    st: AppState,
    id: String,
    /// The last view sent (JSON), to send only changes.
    last: String,
    /// The job's latest event number read so far.
    seq: i64,
    /// `Last-Event-ID` of a reconnecting client.
    seen: Option<i64>,
    done: bool,
    /// The `playable` event was sent (a split job's HLS can be played while it encodes).
    playable_sent: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_errors_split_into_400_and_422() {
        assert_eq!(
            parse_spec(b"{not json").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_spec(br#"{"outputs": 5}"#).unwrap_err().status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            parse_spec(br#"{"outputs": [], "x": 1}"#)
                .unwrap_err()
                .status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert!(parse_spec(br#"{"outputs": [{"preset": "mp4-720p"}]}"#).is_ok());
    }

    #[test]
    fn spec_hash_is_stable() {
        assert_eq!(spec_hash(""), "cbf29ce484222325");
        assert_ne!(spec_hash("a"), spec_hash("b"));
        assert_eq!(
            preset_label(r#"{"outputs":[{"preset":"hls-abr"}]}"#),
            "hls-abr"
        );
        assert_eq!(
            preset_label(r#"{"outputs":[{"name":"x","container":"mp4"}]}"#),
            "custom"
        );
    }
}
