//! Side files a job carries beside its input: caption files (multipart parts named `captions`)
//! and a watermark image (the part `watermark`), sent after the `spec` part and before `file`.
//!
//! They are user bytes like the input and get the same treatment, at admission, while the
//! client is still there to hear a 4xx: bounded in size while read, recognised by content
//! (never by a name or a declared type), and opened by ffmpeg only with the one demuxer their
//! content showed forced and nothing else allowed. A caption file is stored as the WebVTT it
//! converted to (so the worker never parses the user's original again); an image as sent,
//! re-probed by the worker before use.

use crate::error::ErrorCode;
use reelay_media::captions::{self, CaptionError};
use reelay_media::watermark::{self, ImageError, Mark, WatermarkSpec};
use reelay_media::{InputPolicy, ProbeError, Rendition, Tools};
use reelay_protocol::JobSpec;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The multipart part names of side files.
pub const CAPTIONS_PART: &str = "captions";
pub const WATERMARK_PART: &str = "watermark";

/// How long converting one caption file may take (a 2 MiB text file takes milliseconds).
const CAPTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Where caption part `n` of a job is kept (as WebVTT), beside the job's input.
pub fn caption_key(job_id: &str, n: usize) -> String {
    format!("inputs/{job_id}/captions/{n}.vtt")
}

/// Where a job's watermark image is kept, beside its input.
pub fn watermark_key(job_id: &str) -> String {
    format!("inputs/{job_id}/watermark")
}

/// Why a side file or the spec fields describing it were refused.
#[derive(Debug, thiserror::Error)]
pub enum SideFileError {
    #[error("captions part {index}: {error}")]
    Caption { index: usize, error: CaptionError },
    #[error("watermark part: {0}")]
    Image(ImageError),
    /// The spec and the parts disagree (a declared file missing, a part not declared).
    #[error("{0}")]
    Mismatch(String),
    /// A `watermark` field out of range or unknown.
    #[error("watermark.{0}: {1}")]
    Spec(String, String),
    /// `captions.burn_in` names no language, no track, or nothing to burn into.
    #[error("{0}")]
    BurnIn(CaptionError),
    /// The caption tracks as a whole (too many).
    #[error("captions: {0}")]
    Captions(CaptionError),
    #[error("captions.burn_in: {0}")]
    BurnInSpec(String),
    /// ffprobe itself failed on the image: our problem, maybe not for long.
    #[error("probing the watermark image: {0}")]
    Probe(String),
    #[error("writing a side file: {0}")]
    Scratch(std::io::Error),
}

impl SideFileError {
    pub fn code(&self) -> &'static str {
        match self {
            SideFileError::Caption { error, .. } => error.code(),
            SideFileError::Image(e) => e.code(),
            SideFileError::BurnIn(e) | SideFileError::Captions(e) => e.code(),
            SideFileError::Mismatch(_) | SideFileError::Spec(..) | SideFileError::BurnInSpec(_) => {
                ErrorCode::InvalidSpec.as_str()
            }
            SideFileError::Probe(_) => ErrorCode::ProbeFailed.as_str(),
            SideFileError::Scratch(_) => ErrorCode::ScratchError.as_str(),
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            SideFileError::Caption { error, .. } => error.is_transient(),
            SideFileError::Probe(_) | SideFileError::Scratch(_) => true,
            _ => false,
        }
    }

    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            SideFileError::Caption {
                error: CaptionError::TooLarge,
                ..
            }
            | SideFileError::Image(ImageError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            e if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

impl From<SideFileError> for crate::error::ApiError {
    fn from(e: SideFileError) -> Self {
        crate::error::ApiError::coded(e.status(), e.code(), e.to_string())
    }
}

/// The spec's `watermark` options, read and range-checked (`None`: no watermark).
pub fn watermark_spec(spec: &JobSpec) -> Result<Option<WatermarkSpec>, SideFileError> {
    let Some(v) = &spec.watermark else {
        return Ok(None);
    };
    let parsed: WatermarkSpec = serde_json::from_value(v.clone()).map_err(|e| {
        SideFileError::Spec(
            "*".into(),
            format!(
                "{e} (expected {{\"position\": top-left|top-right|bottom-left|bottom-right|center, \
                 \"margin\", \"scale\", \"opacity\"}})"
            ),
        )
    })?;
    parsed
        .validate()
        .map_err(|(field, msg)| SideFileError::Spec(field.into(), msg))?;
    Ok(Some(parsed))
}

/// Caption parts the spec declares (`captions.files`).
pub fn declared_captions(spec: &JobSpec) -> usize {
    spec.captions.as_ref().map_or(0, |c| c.files.len())
}

/// A JSON submission (input by URL, key or tus upload) has no parts to carry side files.
pub fn refuse_in_json(spec: &JobSpec) -> Result<(), SideFileError> {
    if declared_captions(spec) > 0 || spec.watermark.is_some() {
        return Err(SideFileError::Mismatch(
            "captions.files and watermark need their files as multipart parts \
             (spec, then captions/watermark parts, then file)"
                .into(),
        ));
    }
    Ok(())
}

/// At most [`captions::MAX_TRACKS`] caption files, refused before any part is read.
pub fn check_declared(spec: &JobSpec) -> Result<(), SideFileError> {
    if declared_captions(spec) > captions::MAX_TRACKS {
        return Err(SideFileError::Captions(CaptionError::TooMany));
    }
    Ok(())
}

/// The spec's declarations against what came: every declared caption file sent, no more; a
/// watermark image exactly when `watermark` is set; every video output able to carry it.
pub fn check_parts(
    spec: &JobSpec,
    captions_sent: usize,
    watermark_sent: bool,
    renditions: &[Rendition],
) -> Result<(), SideFileError> {
    check_declared(spec)?;
    let declared = declared_captions(spec);
    if declared != captions_sent {
        return Err(SideFileError::Mismatch(format!(
            "captions.files declares {declared} caption files but {captions_sent} captions parts were sent"
        )));
    }
    match (spec.watermark.is_some(), watermark_sent) {
        (true, false) => {
            return Err(SideFileError::Mismatch(
                "watermark: set, but no watermark part (the PNG or JPEG image) was sent".into(),
            ))
        }
        (false, true) => {
            return Err(SideFileError::Mismatch(
                "a watermark part was sent but the spec has no watermark field".into(),
            ))
        }
        _ => {}
    }
    if spec.watermark.is_some() {
        let copy = renditions.iter().position(|r| {
            r.video
                .as_ref()
                .is_some_and(|v| v.codec == reelay_media::plan::VideoCodec::Copy)
        });
        if let Some(i) = copy {
            return Err(SideFileError::Mismatch(format!(
                "outputs[{i}].video.codec: copy cannot carry a watermark (the picture is not re-encoded)"
            )));
        }
    }
    Ok(())
}

/// `captions.burn_in`: a language tag, at least one MP4 output to burn it into, and (when the
/// input was probed at admission, `info`) a caption track of that language among the input's
/// subtitle streams and the job's caption files. URL and key inputs are checked by the worker.
pub fn check_burn_in(
    spec: &JobSpec,
    info: Option<&reelay_media::MediaInfo>,
    renditions: &[Rendition],
) -> Result<(), SideFileError> {
    let Some(c) = &spec.captions else {
        return Ok(());
    };
    let Some(language) = &c.burn_in else {
        return Ok(());
    };
    if captions::clean_language(language).is_none() {
        return Err(SideFileError::BurnInSpec(
            "must be a language tag (en, pt-BR) of one of the job's caption tracks".into(),
        ));
    }
    let mp4 = renditions.iter().any(|r| {
        r.container() == Some(reelay_media::plan::Container::Mp4)
            && r.video
                .as_ref()
                .is_some_and(|v| v.codec != reelay_media::plan::VideoCodec::Copy)
    });
    if !mp4 {
        return Err(SideFileError::BurnInSpec(
            "needs an MP4 output that re-encodes its video to burn the captions into".into(),
        ));
    }
    if let Some(info) = info {
        let streams = captions::tracks_from_probe(info);
        let parts = c
            .files
            .iter()
            .enumerate()
            .map(|(n, f)| captions::part_track(0, n, f.language.as_deref(), None));
        if !streams
            .into_iter()
            .chain(parts)
            .any(|t| captions::is_burn_in(&t, language))
        {
            return Err(SideFileError::BurnIn(CaptionError::NoSuchTrack(
                language.clone(),
            )));
        }
    }
    Ok(())
}

/// Caption part `index` as WebVTT in `dir`: recognised by content, converted by ffmpeg with
/// that format's demuxer forced, and refused unless it yields cues.
pub async fn caption_part(
    tools: &Tools,
    policy: &InputPolicy,
    index: usize,
    bytes: &[u8],
    dir: &Path,
) -> Result<PathBuf, SideFileError> {
    let bad = |error| SideFileError::Caption { index, error };
    let demuxer = captions::sniff_format(bytes).map_err(bad)?;
    let id = ulid::Ulid::new().to_string();
    let raw = dir.join(format!("{id}.caption"));
    let vtt = dir.join(format!("{id}.vtt"));
    std::fs::write(&raw, bytes).map_err(SideFileError::Scratch)?;
    let input = reelay_media::analysis::Input {
        path: &raw,
        demuxer,
    };
    let converted = captions::to_webvtt(tools, policy, input, None, &vtt, CAPTION_TIMEOUT).await;
    let _ = std::fs::remove_file(&raw);
    match converted {
        Ok(_) => Ok(vtt),
        Err(error) => {
            let _ = std::fs::remove_file(&vtt);
            Err(bad(error))
        }
    }
}

/// The watermark image at `path`, probed with the image policy (the two still-image demuxers
/// only) and checked.
pub async fn watermark_image(
    tools: &Tools,
    policy: &InputPolicy,
    path: &Path,
) -> Result<Mark, SideFileError> {
    let info = reelay_media::probe(path, tools, &watermark::image_policy(policy))
        .await
        .map_err(|e| match e {
            ProbeError::FormatNotAllowed(_) | ProbeError::Unreadable(_) => {
                SideFileError::Image(ImageError::NotAnImage)
            }
            other => SideFileError::Probe(other.to_string()),
        })?;
    watermark::check_image(&info).map_err(SideFileError::Image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> JobSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn watermark_fields_are_named_when_wrong() {
        let ok = spec(r#"{"outputs":[],"watermark":{"position":"top-left","opacity":0.5}}"#);
        assert_eq!(
            watermark_spec(&ok).unwrap().unwrap().position,
            watermark::Position::TopLeft
        );
        let bad = spec(r#"{"outputs":[],"watermark":{"opacity":2}}"#);
        let e = watermark_spec(&bad).unwrap_err();
        assert_eq!(e.to_string(), "watermark.opacity: must be between 0 and 1");
        assert_eq!(e.status().as_u16(), 422);
        let unknown = spec(r#"{"outputs":[],"watermark":{"corner":"x"}}"#);
        assert_eq!(watermark_spec(&unknown).unwrap_err().code(), "invalid_spec");
        assert!(watermark_spec(&spec(r#"{"outputs":[]}"#))
            .unwrap()
            .is_none());
    }

    #[test]
    fn parts_must_match_the_declarations() {
        let r = reelay_media::resolve_outputs(&[reelay_protocol::OutputSpec::preset("mp4-360p")])
            .unwrap();
        let two = spec(r#"{"outputs":[],"captions":{"files":[{"language":"en"},{}]}}"#);
        assert!(check_parts(&two, 2, false, &r).is_ok());
        assert!(check_parts(&two, 1, false, &r).is_err());
        assert!(check_parts(&two, 2, true, &r).is_err());
        let wm = spec(r#"{"outputs":[],"watermark":{}}"#);
        assert!(check_parts(&wm, 0, false, &r).is_err());
        assert!(check_parts(&wm, 0, true, &r).is_ok());
        let copy = reelay_media::resolve_outputs(&[reelay_protocol::OutputSpec {
            name: Some("c".into()),
            container: Some("mkv".into()),
            video: Some(reelay_protocol::VideoSpec {
                codec: "copy".into(),
                ..Default::default()
            }),
            ..Default::default()
        }])
        .unwrap();
        let e = check_parts(&wm, 0, true, &copy).unwrap_err();
        assert!(e.to_string().starts_with("outputs[0].video.codec"), "{e}");
        assert!(refuse_in_json(&wm).is_err() && refuse_in_json(&two).is_err());
        let many: JobSpec = serde_json::from_value(serde_json::json!({
            "outputs": [], "captions": {"files": vec![serde_json::json!({}); 17]}
        }))
        .unwrap();
        let e = check_declared(&many).unwrap_err();
        assert_eq!((e.code(), e.status().as_u16()), ("too_many_captions", 422));
        let big = SideFileError::Caption {
            index: 0,
            error: CaptionError::TooLarge,
        };
        assert_eq!(big.status().as_u16(), 413);
        assert_eq!(big.code(), "caption_too_large");
    }
}
