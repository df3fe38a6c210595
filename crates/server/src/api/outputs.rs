//! Serving a job's outputs straight from object storage, with Range support so players can seek
//! and stream (HLS segments, progressive MP4).

use crate::api::jobs::load;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use crate::storage::{content_type, output_prefix, valid_output_path};
use crate::view::output_url;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use reelay_jobs::Job;
use reelay_protocol::{JobStatus, OutputFiles, OutputView};
use std::ops::Range;

/// A parsed `Range` header against an object of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeReq {
    Full,
    Partial(Range<u64>),
    Unsatisfiable,
}

/// Single ranges only (`bytes=a-b`, `bytes=a-`, `bytes=-n`); anything else is served whole, as
/// RFC 9110 allows.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeReq {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return RangeReq::Full;
        };
        if n == 0 {
            return RangeReq::Unsatisfiable;
        }
        size.saturating_sub(n)..size
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return RangeReq::Full;
        };
        let end = if b.is_empty() {
            size
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e.saturating_add(1).min(size),
                _ => return RangeReq::Full,
            }
        };
        start..end
    };
    if range.start >= size {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Partial(range)
}

fn finished(job: &Job) -> Result<Vec<String>, ApiError> {
    if job.status != JobStatus::Succeeded {
        return Err(ApiError::new(
            ErrorCode::NotReady,
            format!(
                "job {} is {}; outputs exist once it succeeded",
                job.id, job.status
            ),
        ));
    }
    Ok(outputs_prefixes(job))
}

/// Every storage prefix the job's outputs lie under: one for a job run as one task; a split job
/// has the stitch's and, for outputs that stay whole, the `transcode` task's (first the one of
/// the first output). Names never collide: each output's files are under its own name.
fn outputs_prefixes(job: &Job) -> Vec<String> {
    let mut out = vec![outputs_prefix(job)];
    for o in &job.outputs {
        let parts: Vec<&str> = o.key.splitn(4, '/').collect();
        if parts.len() == 4 && parts[0] == "outputs" && parts[1] == job.id {
            let p = parts[..3].join("/");
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The storage prefix of the attempt whose files the job's outputs are: read from the stored
/// keys (`outputs/{job}/a{n}/…`), since with several tasks the job's attempt count is that of
/// its most-retried task, not necessarily of the one that wrote the outputs; the attempt count
/// for a job without outputs.
fn outputs_prefix(job: &Job) -> String {
    job.outputs
        .first()
        .and_then(|o| {
            let parts: Vec<&str> = o.key.splitn(4, '/').collect();
            (parts.len() == 4 && parts[0] == "outputs" && parts[1] == job.id)
                .then(|| parts[..3].join("/"))
        })
        .unwrap_or_else(|| output_prefix(&job.id, job.attempts))
}

pub async fn list(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<OutputFiles>, ApiError> {
    let job = load(&st, &who, &id).await?;
    let mut files = vec![];
    for prefix in finished(&job)? {
        files.extend(st.storage.list(&prefix).await?.into_iter().filter_map(|o| {
            let name = o
                .key
                .strip_prefix(&prefix)?
                .trim_start_matches('/')
                .to_string();
            Some(OutputView {
                url: output_url(&job.id, &name),
                content_type: content_type(&name).into(),
                size: o.size,
                name,
                ..Default::default()
            })
        }));
    }
    Ok(Json(OutputFiles { files }))
}

/// What a running split job serves early at an output path.
enum Live {
    Playlist(String),
    /// The storage key of a listed segment (under the job's intermediate prefix).
    Segment(String),
}

/// The progressive view of `path` for a job not ended yet that became playable (`queued`
/// too: between two of its tasks), from the job's view made in the last second if any
/// (`progressive::LiveCache`: a player's many requests read the task outputs once).
async fn live(st: &AppState, job: &Job, path: &str) -> Result<Option<Live>, ApiError> {
    if job.status.is_terminal() || job.playable_at.is_none() {
        return Ok(None);
    }
    let now = std::time::Instant::now();
    let hls = match st.live_hls.get(&job.id, now) {
        Some(hls) => hls,
        None => {
            let outputs = st.store.task_outputs(&job.id).await?;
            let Some(hls) = crate::progressive::LiveHls::new(&job.spec_json, &outputs) else {
                return Ok(None);
            };
            st.live_hls.put(&job.id, hls, now)
        }
    };
    if let Some(text) = hls.playlist(path) {
        return Ok(Some(Live::Playlist(text.to_string())));
    }
    Ok(hls.segment_key(path).map(|k| Live::Segment(k.to_string())))
}

/// A playlist that still grows: players must fetch it again, caches must not keep it.
fn live_playlist(method: &Method, path: &str, text: String) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type(path)),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    if *method == Method::HEAD {
        let len = text.len().to_string();
        let mut r = (StatusCode::OK, headers).into_response();
        if let Ok(v) = HeaderValue::from_str(&len) {
            r.headers_mut().insert(header::CONTENT_LENGTH, v);
        }
        return r;
    }
    (StatusCode::OK, headers, text).into_response()
}

pub async fn get(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    method: Method,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !valid_output_path(&path) {
        return Err(ApiError::not_found("no such output"));
    }
    let job = load(&st, &who, &id).await?;
    let keys = match finished(&job) {
        Ok(prefixes) => prefixes
            .iter()
            .map(|prefix| format!("{prefix}/{path}"))
            .collect(),
        // A split job still encoding: its HLS outputs, once playable (progressive HLS).
        Err(not_ready) => match live(&st, &job, &path).await? {
            Some(Live::Playlist(text)) => return Ok(live_playlist(&method, &path, text)),
            Some(Live::Segment(key)) => vec![key],
            None => return Err(not_ready),
        },
    };
    let mut found = None;
    for key in keys {
        match st.storage.head(&key).await {
            Ok(o) => {
                found = Some((key, o.size));
                break;
            }
            Err(crate::storage::StorageError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let Some((key, size)) = found else {
        return Err(ApiError::not_found(format!(
            "job {id} has no output {path}"
        )));
    };
    if st.cfg.presign_downloads && method == Method::GET {
        let ttl = std::time::Duration::from_secs(st.cfg.presign_ttl_seconds);
        if let Some(url) = st.storage.presigned_get(&key, ttl).await? {
            let loc =
                HeaderValue::from_str(&url).map_err(|e| ApiError::internal("presigned URL", e))?;
            return Ok((StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, loc)]).into_response());
        }
    }
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    );
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Outputs of a finished job never change. Fetched with a token they are the owner's
    // alone: `private`, or a shared cache (a CDN before the edge) would store the answer to
    // an authorised request and serve it to anyone asking the same URL (RFC 9111 §3.5).
    let cache = if headers.contains_key(header::AUTHORIZATION) {
        "private, max-age=86400, immutable"
    } else {
        "public, max-age=86400, immutable"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    let (status, range) = match range {
        RangeReq::Unsatisfiable => {
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}"))
                    .map_err(|e| ApiError::internal("header", e))?,
            );
            let mut r = ApiError::new(
                ErrorCode::RangeNotSatisfiable,
                format!("the output has {size} bytes"),
            )
            .into_response();
            r.headers_mut().extend(h);
            return Ok(r);
        }
        RangeReq::Full => (StatusCode::OK, None),
        RangeReq::Partial(r) => {
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end - 1))
                    .map_err(|e| ApiError::internal("header", e))?,
            );
            (StatusCode::PARTIAL_CONTENT, Some(r))
        }
    };
    let len = range.as_ref().map(|r| r.end - r.start).unwrap_or(size);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if method == Method::HEAD || len == 0 {
        return Ok((status, h).into_response());
    }
    let stream = st.storage.get_range(&key, range).await?;
    Ok((status, h, Body::from_stream(stream)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefix comes from the stored keys (the attempt that wrote them), else the job's
    /// attempt count.
    #[test]
    fn outputs_prefix_follows_the_stored_keys() {
        let mut job = Job {
            status: JobStatus::Succeeded,
            progress: 1.0,
            attempts: 3,
            ..Job::for_test("aws.01J")
        };
        assert_eq!(outputs_prefix(&job), "outputs/aws.01J/a3");
        job.outputs.push(reelay_jobs::StoredOutput {
            name: "master.m3u8".into(),
            key: "outputs/aws.01J/a1/hls/master.m3u8".into(),
            size: 1,
            content_type: "application/vnd.apple.mpegurl".into(),
            ..Default::default()
        });
        assert_eq!(outputs_prefix(&job), "outputs/aws.01J/a1");
        // A key of another shape is not trusted.
        job.outputs[0].key = "elsewhere/x.mp4".into();
        assert_eq!(outputs_prefix(&job), "outputs/aws.01J/a3");
    }

    #[test]
    fn ranges() {
        use RangeReq::*;
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Partial(0..10));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Partial(90..100));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Partial(90..100));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), Partial(0..100));
        assert_eq!(parse_range(Some("bytes=50-5000"), 100), Partial(50..100));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=9-3"), 100), Full);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Full);
        assert_eq!(parse_range(Some("items=0-1"), 100), Full);
        assert_eq!(parse_range(Some("bytes=x-y"), 100), Full);
    }
}
