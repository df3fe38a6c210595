//! `/v1/uploads`: tus 1.0 resumable uploads (core, creation, termination, expiration). The
//! protocol's rules are in `crate::tus`, the bytes in `crate::uploads`; this module answers.
//!
//! Every answer carries `Tus-Resumable: 1.0.0`; errors are the API's usual JSON. An upload
//! belongs to the token that created it: another owner's upload is a 404, as if it did not exist.

use crate::auth::Principal;
use crate::body::BodyError;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use crate::tus::{self, TusError};
use crate::uploads::{UploadError, UploadInfo, Uploads};
use axum::extract::{Extension, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// How long an upload may stay unused: the tus `expiration` extension's `Upload-Expires`.
fn ttl(st: &AppState) -> u64 {
    st.cfg.upload_expiry_seconds
}

pub fn uploads(st: &AppState) -> Uploads {
    Uploads::new(st.storage.clone(), st.cfg.cluster.clone())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Adds the headers every tus answer carries (errors included).
fn tus_answer(result: Result<Response, ApiError>) -> Response {
    let mut resp = result.unwrap_or_else(|e| {
        let version = e.code == "tus_version";
        let mut r = e.into_response();
        if version {
            r.headers_mut()
                .insert("tus-version", HeaderValue::from_static(tus::VERSION));
        }
        r
    });
    resp.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(tus::VERSION));
    resp
}

fn protocol(e: TusError) -> ApiError {
    UploadError::from(e).into()
}

fn set(resp: &mut Response, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        resp.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

/// `OPTIONS /v1/uploads`: what this server supports.
pub async fn options(State(st): State<AppState>) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    set(&mut resp, "tus-version", tus::VERSION);
    set(&mut resp, "tus-extension", tus::EXTENSIONS);
    set(&mut resp, "tus-max-size", st.cfg.policy.max_bytes);
    tus_answer(Ok(resp))
}

/// `OPTIONS /v1/uploads/{id}`: the same, for a well-formed id of this cluster (404 otherwise).
pub async fn options_of(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match crate::uploads::parse_id(&st.cfg.cluster, &id) {
        Ok(_) => options(State(st)).await,
        Err(e) => tus_answer(Err(e.into())),
    }
}

/// `POST /v1/uploads` (creation): `Upload-Length` required, `Upload-Metadata` optional, no body.
pub async fn create(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
) -> Response {
    tus_answer(create_inner(&st, &who, &headers).await)
}

async fn create_inner(st: &AppState, who: &Principal, h: &HeaderMap) -> Result<Response, ApiError> {
    if !st.is_accepting() {
        return Err(ApiError::unavailable(
            ErrorCode::ShuttingDown,
            "this cluster is shutting down and accepts no new uploads",
        ));
    }
    tus::check_resumable(h).map_err(protocol)?;
    let length = tus::upload_length(h, st.cfg.policy.max_bytes).map_err(protocol)?;
    let metadata = tus::upload_metadata(h).map_err(protocol)?;
    tus::check_empty_creation_body(h).map_err(protocol)?;
    let info = uploads(st)
        .create(who.owner(), length, metadata, now_ms(), ttl(st))
        .await?;
    tracing::info!(upload = %info.id, length, "upload created");
    let mut resp = StatusCode::CREATED.into_response();
    set(&mut resp, "location", format!("/v1/uploads/{}", info.id));
    set(&mut resp, "upload-offset", 0);
    set(&mut resp, "upload-expires", tus::http_date(info.expires_ms));
    Ok(resp)
}

async fn load(st: &AppState, who: &Principal, id: &str) -> Result<UploadInfo, ApiError> {
    Ok(uploads(st)
        .load(id, |owner| who.may_see(owner), now_ms())
        .await?)
}

/// `HEAD /v1/uploads/{id}`: where to resume.
pub async fn head(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    tus_answer(
        async {
            tus::check_resumable(&headers).map_err(protocol)?;
            let info = load(&st, &who, &id).await?;
            let offset = uploads(&st).offset(&info.id).await?;
            let mut resp = StatusCode::OK.into_response();
            set(&mut resp, "upload-offset", offset);
            set(&mut resp, "upload-length", info.length);
            set(&mut resp, "upload-expires", tus::http_date(info.expires_ms));
            if let Some(m) = &info.metadata {
                set(&mut resp, "upload-metadata", m);
            }
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(resp)
        }
        .await,
    )
}

/// `PATCH /v1/uploads/{id}`: appends the body at `Upload-Offset`, streamed to storage.
pub async fn patch(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    tus_answer(patch_inner(&st, &who, &id, req).await)
}

async fn patch_inner(
    st: &AppState,
    who: &Principal,
    id: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let h = req.headers();
    tus::check_resumable(h).map_err(protocol)?;
    tus::check_patch_content_type(h).map_err(protocol)?;
    let offset = tus::upload_offset(h).map_err(protocol)?;
    let info = load(st, who, id).await?;
    let Some(_patching) = st.patch_locks.try_acquire(&info.id) else {
        return Err(ApiError::new(
            ErrorCode::UploadBusy,
            "another PATCH of this upload is in progress; HEAD it for the offset and resume",
        ));
    };
    if offset > info.length {
        return Err(protocol(TusError::PastLength {
            length: info.length,
        }));
    }
    let body = req.into_body().into_data_stream();
    let (new_offset, body_error) = uploads(st).append(&info, offset, body).await?;
    if let Some(e) = body_error {
        // What arrived is committed; the client HEADs and resumes from `new_offset`.
        tracing::info!(upload = %info.id, offset = new_offset, error = %e, "upload PATCH broke off");
        let mut err = BodyError::of(&e).into_api(ErrorCode::TooLarge);
        err.message = format!(
            "{}; {new_offset} bytes are stored, resume there",
            err.message
        );
        return Err(err);
    }
    if new_offset == info.length {
        tracing::info!(upload = %info.id, length = info.length, "upload complete");
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    set(&mut resp, "upload-offset", new_offset);
    set(&mut resp, "upload-expires", tus::http_date(info.expires_ms));
    Ok(resp)
}

/// `DELETE /v1/uploads/{id}` (termination).
pub async fn delete(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    tus_answer(
        async {
            tus::check_resumable(&headers).map_err(protocol)?;
            let info = load(&st, &who, &id).await?;
            uploads(&st).delete(&info.id).await?;
            tracing::info!(upload = %info.id, "upload terminated");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

/// A finished upload of `who`'s becoming the input of job `job_id`: its bytes are copied to
/// `dest` (the job's input key) and the upload is marked used. Call [`Taken::settle`] once the
/// job exists or failed to.
pub async fn take(
    st: &AppState,
    who: &Principal,
    id: &str,
    job_id: &str,
    dest: &str,
) -> Result<Taken, ApiError> {
    let info = load(st, who, id).await.map_err(|e| {
        // In a job spec, a missing upload is the spec's fault: name the field.
        ApiError::coded(
            if e.status == StatusCode::NOT_FOUND || e.status == StatusCode::GONE {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                e.status
            },
            if e.status == StatusCode::NOT_FOUND {
                ErrorCode::InputNotFound.as_str()
            } else {
                e.code
            },
            format!("input.upload: {}", e.message),
        )
    })?;
    uploads(st).take(&info, job_id, dest).await.map_err(|e| {
        let mut api = ApiError::from(e);
        api.message = format!("input.upload: {}", api.message);
        api
    })?;
    let name = info
        .metadata
        .as_deref()
        .and_then(crate::tus::metadata_file_name)
        .and_then(|n| crate::context::clean_name(&n));
    Ok(Taken { id: info.id, name })
}

/// An upload copied into a job's input, not yet settled.
pub struct Taken {
    id: String,
    /// The file name the tus client gave, cleaned: the job's input name.
    pub name: Option<String>,
}

impl Taken {
    /// Created: the upload is deleted. Not created (an error, or an idempotent replay whose
    /// job already has its input): the mark is released and the copy deleted, so nothing is
    /// lost and the client may use the upload again.
    pub async fn settle(self, st: &AppState, created: bool, dest: &str) {
        let up = uploads(st);
        if created {
            if let Err(e) = up.delete(&self.id).await {
                tracing::warn!(upload = %self.id, error = %e, "used upload not deleted; the sweeper will");
            }
        } else {
            let _ = st.storage.delete(dest).await;
            up.release(&self.id).await;
        }
    }
}

/// `POST /v1/uploads/{id}/job`: a job from a finished upload, at the upload's own address. The
/// same as `POST /v1/jobs` with `{"input": {"upload": id}}` (the body is a job spec whose input
/// is absent or names this upload), but routed by the edge like every `/v1/uploads/{id}` request
/// to the cluster that holds the upload, where `POST /v1/jobs` would be placed anywhere.
pub async fn submit_job(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    if !st.is_accepting() {
        return Err(ApiError::unavailable(
            ErrorCode::ShuttingDown,
            "this cluster is shutting down and accepts no new jobs",
        ));
    }
    let idem = super::jobs::idempotency_key(req.headers())?;
    let deadline = crate::deadline::Deadline::from_headers(req.headers())?;
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the job spec as application/json",
        ));
    }
    let body = crate::body::read_to_limit(req.into_body(), st.cfg.max_json_bytes)
        .await
        .map_err(|e| e.into_api(ErrorCode::TooLarge))?;
    let mut spec = super::jobs::parse_spec(&body)?;
    crate::admission::check_priority(&spec)?;
    match &spec.input {
        None => {}
        Some(i) if i.url.is_none() && i.key.is_none() && i.upload.as_deref() == Some(&id) => {}
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidSpec,
                "input: leave it out (the upload in the URL is the input) or give {\"upload\": <this id>}",
            ))
        }
    }
    spec.input = Some(reelay_protocol::InputSpec {
        upload: Some(id),
        ..Default::default()
    });
    super::jobs::submit_json(st, who, spec, idem, deadline).await
}
