//! Admission: what a submitted spec becomes before it is queued.
//!
//! The api decides here, once, whether a job may run: its priority, its outputs (spec →
//! renditions), its input (a URL that may be fetched, or an uploaded file that probes clean
//! against the input policy), its estimate, and the tasks it will run as. Every refusal is an
//! [`AdmissionError`] that knows its code and HTTP status (one map, [`AdmissionError::code`]),
//! so the JSON and multipart paths cannot answer the same mistake differently. The worker runs
//! what was admitted and does not import this module.

use crate::error::{ApiError, ErrorCode};
use crate::fetch::FetchError;
use axum::http::StatusCode;
use reelay_media::split::SplitRequest;
use reelay_media::{ProbeError, Rejection, Rendition};
use reelay_protocol::JobSpec;

pub use crate::split_graph::{decide, estimate, split_view, tasks};

/// Lowest and highest job priority a spec may ask for: higher priorities are claimed
/// first, and owners take turns among equal priorities (the job store's claim order).
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -100..=100;

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
            AdmissionError::InvalidSpec(_) => ErrorCode::InvalidSpec.as_str(),
            AdmissionError::ForbiddenUrl(_) | AdmissionError::ForbiddenNotifyUrl(..) => {
                "forbidden_url"
            }
            AdmissionError::InvalidUrl(_) | AdmissionError::InvalidNotifyUrl(..) => "invalid_url",
            AdmissionError::TooManyNotify(_) => ErrorCode::InvalidSpec.as_str(),
            AdmissionError::UnsupportedFormat(_) => ErrorCode::UnsupportedFormat.as_str(),
            AdmissionError::CorruptInput(_) => ErrorCode::CorruptInput.as_str(),
            AdmissionError::Policy(r) => r.code,
            AdmissionError::Probe(_) => ErrorCode::Internal.as_str(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AdmissionError::Priority(_) => StatusCode::BAD_REQUEST,
            AdmissionError::Policy(r) if r.code == ErrorCode::InputTooLarge.as_str() => {
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
            other => ApiError::coded(other.status(), other.code(), other.to_string()),
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

/// The spec's `split` field (absent: `auto`).
pub fn split_request(spec: &JobSpec) -> Result<SplitRequest, AdmissionError> {
    let Some(v) = &spec.split else {
        return Ok(SplitRequest::default());
    };
    let bad = || {
        AdmissionError::InvalidSpec(
            "split: must be \"auto\", \"off\" or {\"segment_seconds\": N}".into(),
        )
    };
    if v.as_object()
        .is_some_and(|o| o.keys().any(|k| k != "segment_seconds"))
    {
        return Err(bad());
    }
    let req: SplitRequest = serde_json::from_value(v.clone()).map_err(|_| {
        AdmissionError::InvalidSpec(
            "split: must be \"auto\", \"off\" or {\"segment_seconds\": N}".into(),
        )
    })?;
    if let SplitRequest::Seconds { segment_seconds } = req {
        if !SEGMENT_SECONDS.contains(&segment_seconds) {
            return Err(AdmissionError::InvalidSpec(format!(
                "split.segment_seconds: must be between {} and {}, got {segment_seconds}",
                SEGMENT_SECONDS.start(),
                SEGMENT_SECONDS.end()
            )));
        }
    }
    Ok(req)
}

/// Range lengths a job may ask for: below 2 s a range holds too few frames to be worth a task.
pub const SEGMENT_SECONDS: std::ops::RangeInclusive<u32> = 2..=3600;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task_payloads::{ENCODE_SEGMENT, STITCH};
    use reelay_media::split::{SideFiles, SplitSettings};
    use reelay_media::MediaInfo;

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
        let tasks = tasks(
            20.0,
            &r,
            None,
            SplitSettings::default(),
            SplitRequest::default(),
            &SideFiles::default(),
        );
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].kind, "transcode");
        assert_eq!(tasks[0].weight, 20.0);
    }

    fn info(seconds: f64) -> MediaInfo {
        reelay_media::probe::parse_probe_json(&format!(
            r#"{{"streams":[{{"index":0,"codec_type":"video","codec_name":"h264","width":640,"height":360,"avg_frame_rate":"25/1"}},
               {{"index":1,"codec_type":"audio","codec_name":"aac","channels":2,"sample_rate":"48000"}}],
               "format":{{"format_name":"mov,mp4,m4a","duration":"{seconds}"}}}}"#
        ))
        .expect("probe json")
    }

    #[test]
    fn a_long_upload_becomes_the_split_graph_and_a_short_one_stays_one_task() {
        let spec: JobSpec = serde_json::from_str(
            r#"{"outputs":[{"preset":"mp4-360p"},{"preset":"hls-abr"},{"preset":"thumbnail"}]}"#,
        )
        .expect("spec");
        let r = renditions(&spec).expect("renditions");
        let settings = SplitSettings::default();
        let t = tasks(
            300.0,
            &r,
            Some(&info(100.0)),
            settings,
            SplitRequest::default(),
            &SideFiles::default(),
        );
        let kinds: Vec<&str> = t.iter().map(|t| t.kind.as_str()).collect();
        // 100 s: the HLS start ramp (4, 8, 16 s), then 32 s ranges (30 rounded up to the 4 s
        // HLS grid): 4, 8, 16, 32, 32, 8.
        assert_eq!(
            kinds,
            [
                "split",
                "encode_segment",
                "encode_segment",
                "encode_segment",
                "encode_segment",
                "encode_segment",
                "encode_segment",
                "encode_audio",
                "encode_audio",
                "stitch",
                "transcode"
            ]
        );
        let seg: Vec<_> = t.iter().filter(|t| t.kind == ENCODE_SEGMENT).collect();
        assert_eq!(
            seg.iter().map(|t| t.position).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
        assert!(
            seg[3].weight > seg[2].weight && seg[2].weight > seg[0].weight,
            "weight follows range length"
        );
        assert_eq!(seg[3].weight, seg[4].weight);
        assert!(seg.iter().all(|t| t.depends_on == ["split"]));
        let stitch = t.iter().find(|t| t.kind == STITCH).expect("stitch");
        // The split, 6 ranges, audio at 128k (the MP4) and 96k (the 360p rung).
        assert_eq!(stitch.depends_on.len(), 1 + 6 + 2);
        let whole = t.last().expect("transcode");
        assert_eq!(
            whole.payload["renditions"],
            serde_json::json!(["thumbnail"])
        );
        assert!(whole.depends_on.is_empty());
        // Short, off, or not probed: one transcode task for everything (not probed: it
        // decides, having probed; see split_graph).
        for (info, req, payload) in [
            (
                Some(info(50.0)),
                SplitRequest::default(),
                serde_json::json!({}),
            ),
            (
                Some(info(100.0)),
                serde_json::from_str(r#""off""#).expect("off"),
                serde_json::json!({}),
            ),
            (
                None,
                SplitRequest::default(),
                serde_json::json!({"decide_split": "auto"}),
            ),
        ] {
            let t = tasks(
                300.0,
                &r,
                info.as_ref(),
                settings,
                req,
                &SideFiles::default(),
            );
            assert_eq!(t.len(), 1);
            assert_eq!(t[0].kind, "transcode");
            assert_eq!(t[0].payload, payload);
        }
    }

    #[test]
    fn the_job_view_says_whether_and_why_not_split_as_tasks_decides() {
        let spec: JobSpec =
            serde_json::from_str(r#"{"outputs":[{"preset":"mp4-360p"},{"preset":"hls-abr"}]}"#)
                .expect("spec");
        let r = renditions(&spec).expect("renditions");
        let webm: JobSpec =
            serde_json::from_str(r#"{"outputs":[{"preset":"webm-vp9-720p"}]}"#).expect("spec");
        let vp9 = renditions(&webm).expect("renditions");
        let off: SplitRequest = serde_json::from_str(r#""off""#).expect("off");
        let settings = SplitSettings::default();
        let auto = SplitRequest::default();
        let view = |r: &[Rendition], info: Option<&MediaInfo>, req: SplitRequest| {
            let v = split_view(r, info, settings, req, &SideFiles::default());
            // The same decision as the task list.
            let split = tasks(300.0, r, info, settings, req, &SideFiles::default()).len() > 1;
            assert_eq!(v.applied, split, "{v:?}");
            v
        };
        let long = info(100.0);
        let yes = view(&r, Some(&long), auto);
        assert_eq!(
            (yes.reason, yes.segment_seconds, yes.ranges),
            (None, Some(32), Some(6))
        );
        let cases = [
            (view(&r, None, auto), "pending", "first task"),
            (view(&r, None, off), "off", "\"off\""),
            (view(&r, Some(&long), off), "off", "\"off\""),
            (view(&r, Some(&info(50.0)), auto), "too_short", "50.0 s"),
            (view(&vp9, Some(&long), auto), "no_splittable_output", "VP9"),
        ];
        for (v, reason, words) in cases {
            assert!(!v.applied);
            assert_eq!(v.reason.as_deref(), Some(reason), "{v:?}");
            let message = v.message.expect("a message");
            assert!(message.contains(words), "{message}");
            assert_eq!((v.segment_seconds, v.ranges), (None, None));
        }
    }

    #[test]
    fn the_split_field_is_read_or_refused_naming_it() {
        let spec = |split: &str| -> JobSpec {
            serde_json::from_str(&format!(
                r#"{{"outputs":[{{"preset":"mp4-720p"}}],"split":{split}}}"#
            ))
            .expect("spec")
        };
        assert!(split_request(&spec(r#""auto""#)).is_ok());
        assert!(split_request(&spec(r#"{"segment_seconds":8}"#)).is_ok());
        for bad in [
            r#""never""#,
            r#"{"segment_seconds":1}"#,
            r#"{"segment_seconds":8,"x":1}"#,
            "3",
        ] {
            let e = split_request(&spec(bad)).expect_err(bad);
            assert_eq!(e.code(), "invalid_spec");
            assert!(e.to_string().starts_with("split"), "{e}");
        }
    }
}
