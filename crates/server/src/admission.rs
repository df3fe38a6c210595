//! Admission: what a submitted spec becomes before it is queued.
//!
//! The api decides here, once, whether a job may run: its priority, its outputs (spec →
//! renditions), its input (a URL that may be fetched, or an uploaded file that probes clean
//! against the input policy), its estimate, and the tasks it will run as. Every refusal is an
//! [`AdmissionError`] that knows its code and HTTP status (one map, [`AdmissionError::code`]),
//! so the JSON and multipart paths cannot answer the same mistake differently. The worker runs
//! what was admitted and does not import this module.

use crate::error::ApiError;
use crate::fetch::FetchError;
use axum::http::StatusCode;
use reelay_jobs::NewTask;
use reelay_media::{ProbeError, Rejection, Rendition};
use reelay_protocol::JobSpec;

/// Lowest and highest job priority a spec may ask for: higher priorities are claimed
/// first, and owners take turns among equal priorities (the job store's claim order).
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -100..=100;

/// Media seconds assumed per output while the input's duration is unknown (URL and key inputs
/// are only probed by the worker).
const UNKNOWN_SECONDS_PER_OUTPUT: f64 = 60.0;

/// Why a submission is refused. Client mistakes only, except [`AdmissionError::Probe`].
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("priority: must be between {low} and {high}, got {0}", low = PRIORITY_RANGE.start(), high = PRIORITY_RANGE.end())]
    Priority(i32),
    #[error("{0}")]
    InvalidSpec(String),
    #[error("input.url: {0}")]
    ForbiddenUrl(String),
    #[error("input.url: {0}")]
    InvalidUrl(String),
    #[error("input format {0:?} is not allowed")]
    UnsupportedFormat(String),
    #[error("the file is not a readable media file ({0})")]
    CorruptInput(String),
    /// The input policy refused the file (size, duration, resolution, streams...).
    #[error("{}", .0.message)]
    Policy(Rejection),
    /// A `notify` entry (its index) whose URL the guard refuses.
    #[error("notify[{0}].url: {1}")]
    ForbiddenNotifyUrl(usize, String),
    #[error("notify[{0}].url: {1}")]
    InvalidNotifyUrl(usize, String),
    #[error("notify: at most {0} endpoints per job")]
    TooManyNotify(usize),
    /// ffprobe itself failed: our problem, not the client's.
    #[error("probing the upload: {0}")]
    Probe(String),
}

impl AdmissionError {
    /// The machine-readable code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            AdmissionError::Priority(_) => "invalid_priority",
            AdmissionError::InvalidSpec(_) => "invalid_spec",
            AdmissionError::ForbiddenUrl(_) | AdmissionError::ForbiddenNotifyUrl(..) => {
                "forbidden_url"
            }
            AdmissionError::InvalidUrl(_) | AdmissionError::InvalidNotifyUrl(..) => "invalid_url",
            AdmissionError::TooManyNotify(_) => "invalid_spec",
            AdmissionError::UnsupportedFormat(_) => "unsupported_format",
            AdmissionError::CorruptInput(_) => "corrupt_input",
            AdmissionError::Policy(r) => r.code,
            AdmissionError::Probe(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AdmissionError::Priority(_) => StatusCode::BAD_REQUEST,
            AdmissionError::Policy(r) if r.code == "input_too_large" => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            AdmissionError::Probe(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

impl From<AdmissionError> for ApiError {
    fn from(e: AdmissionError) -> ApiError {
        match e {
            AdmissionError::Probe(m) => ApiError::internal("probing the upload", m),
            other => ApiError::new(other.status(), other.code(), other.to_string()),
        }
    }
}

/// A priority outside [`PRIORITY_RANGE`] is refused, naming the field.
pub fn check_priority(spec: &JobSpec) -> Result<(), AdmissionError> {
    if PRIORITY_RANGE.contains(&spec.priority) {
        Ok(())
    } else {
        Err(AdmissionError::Priority(spec.priority))
    }
}

/// The spec's outputs as renditions.
pub fn renditions(spec: &JobSpec) -> Result<Vec<Rendition>, AdmissionError> {
    reelay_media::resolve_outputs(&spec.outputs)
        .map_err(|e| AdmissionError::InvalidSpec(e.to_string()))
}

/// A URL input the worker may fetch.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), AdmissionError> {
    crate::fetch::check_url(url, allow_private)
        .map(drop)
        .map_err(|e| match e {
            FetchError::Forbidden(m) => AdmissionError::ForbiddenUrl(m),
            other => AdmissionError::InvalidUrl(other.to_string()),
        })
}

/// The spec's webhook endpoints: at most `max`, each URL one the guard lets reelay call (the
/// same check as a URL input; the resolver checks the addresses again at delivery).
pub fn check_notify(spec: &JobSpec, max: usize, allow_private: bool) -> Result<(), AdmissionError> {
    if spec.notify.len() > max {
        return Err(AdmissionError::TooManyNotify(max));
    }
    for (i, n) in spec.notify.iter().enumerate() {
        crate::fetch::check_url(&n.url, allow_private).map_err(|e| match e {
            FetchError::Forbidden(m) => AdmissionError::ForbiddenNotifyUrl(i, m),
            other => AdmissionError::InvalidNotifyUrl(i, other.to_string()),
        })?;
    }
    Ok(())
}

/// An upload's probe failure.
pub fn probe_error(e: ProbeError) -> AdmissionError {
    match e {
        ProbeError::FormatNotAllowed(f) => AdmissionError::UnsupportedFormat(f),
        ProbeError::Unreadable(m) => AdmissionError::CorruptInput(m),
        other => AdmissionError::Probe(other.to_string()),
    }
}

/// Expected encode work in media seconds: the input's duration (a minute when not known yet)
/// for each output.
pub fn estimate(duration: Option<f64>, renditions: &[Rendition]) -> f64 {
    let duration = duration
        .filter(|d| d.is_finite() && *d > 0.0)
        .unwrap_or(UNKNOWN_SECONDS_PER_OUTPUT);
    duration * renditions.len() as f64
}

/// The tasks an admitted job runs as. Today one `transcode` task doing all of it; the
/// split-and-stitch graph (`split` → `encode_segment`… + `encode_audio` → `stitch`) is built
/// here too once the media functions exist.
pub fn tasks(estimated_seconds: f64, _renditions: &[Rendition]) -> Vec<NewTask> {
    vec![NewTask::transcode(estimated_seconds)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_one_code_and_status() {
        let cases = [
            (AdmissionError::Priority(101), "invalid_priority", 400),
            (AdmissionError::InvalidSpec("x".into()), "invalid_spec", 422),
            (
                AdmissionError::ForbiddenUrl("x".into()),
                "forbidden_url",
                422,
            ),
            (AdmissionError::InvalidUrl("x".into()), "invalid_url", 422),
            (
                AdmissionError::UnsupportedFormat("x".into()),
                "unsupported_format",
                422,
            ),
            (
                AdmissionError::CorruptInput("x".into()),
                "corrupt_input",
                422,
            ),
            (AdmissionError::Probe("x".into()), "internal", 500),
        ];
        for (e, code, status) in cases {
            assert_eq!(e.code(), code);
            assert_eq!(e.status().as_u16(), status, "{code}");
        }
        let too_large = Rejection {
            code: "input_too_large",
            message: "big".into(),
        };
        assert_eq!(AdmissionError::Policy(too_large).status().as_u16(), 413);
    }

    #[test]
    fn priority_bounds_are_inclusive() {
        let spec = |p| JobSpec {
            priority: p,
            ..serde_json::from_str(r#"{"outputs":[{"preset":"mp4-720p"}]}"#).expect("spec")
        };
        assert!(check_priority(&spec(100)).is_ok());
        assert!(check_priority(&spec(-100)).is_ok());
        assert_eq!(
            check_priority(&spec(101)).unwrap_err().to_string(),
            "priority: must be between -100 and 100, got 101"
        );
    }

    #[test]
    fn estimates_are_duration_times_outputs() {
        let spec: JobSpec =
            serde_json::from_str(r#"{"outputs":[{"preset":"mp4-720p"},{"preset":"mp4-480p"}]}"#)
                .expect("spec");
        let r = renditions(&spec).expect("renditions");
        assert_eq!(estimate(Some(10.0), &r), 20.0);
        assert_eq!(estimate(None, &r), 120.0);
        assert_eq!(estimate(Some(f64::NAN), &r), 120.0);
        let tasks = tasks(20.0, &r);
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].kind, "transcode");
        assert_eq!(tasks[0].weight, 20.0);
    }
}
