//! The transcode task's side inputs: the job's caption tracks as WebVTT files in the working
//! directory (the input's text subtitle streams converted, then the job's caption files as
//! admission stored them), and its watermark image, probed again before ffmpeg opens it.

use super::transcode::TranscodeError;
use crate::side_files::{caption_key, watermark_image, watermark_key};
use crate::state::AppState;
use crate::storage::StorageError;
use reelay_media::analysis::Input;
use reelay_media::captions::{self, CaptionError};
use reelay_media::package::CaptionFile;
use reelay_media::watermark::{Mark, WatermarkSpec};
use reelay_media::MediaInfo;
use reelay_protocol::JobSpec;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The job's caption tracks, each converted to WebVTT under `dir`: the input's streams first
/// (a stream with no cues, or one ffmpeg cannot convert, is skipped and logged: the video is
/// good without it), then the job's caption files (which admission converted already).
pub(super) async fn caption_files(
    st: &AppState,
    job_id: &str,
    spec: &JobSpec,
    info: &MediaInfo,
    input: &Path,
    dir: &Path,
) -> Result<Vec<CaptionFile>, TranscodeError> {
    let cfg = &st.cfg;
    let streams = captions::tracks_from_probe(info);
    let files = spec.captions.as_ref().map_or(&[][..], |c| &c.files[..]);
    if streams.is_empty() && files.is_empty() {
        return Ok(vec![]);
    }
    let scratch = |e: std::io::Error| TranscodeError::Scratch(format!("caption files: {e}"));
    std::fs::create_dir_all(dir.join("captions")).map_err(scratch)?;
    let timeout = Duration::from_secs(cfg.job_timeout_seconds.min(300));
    let mut out = Vec::new();
    for t in streams {
        let captions::CaptionSource::Stream { index } = t.source else {
            continue;
        };
        let vtt = dir.join(&t.file);
        let source = Input {
            path: input,
            demuxer: info.demuxer(),
        };
        match captions::to_webvtt(&cfg.tools, &cfg.policy, source, Some(index), &vtt, timeout).await
        {
            Ok(_) => out.push((t, vtt)),
            Err(e) if e.is_transient() => return Err(TranscodeError::Captions(e)),
            Err(e) => {
                tracing::warn!(job_id, stream = index, code = e.code(), error = %e, "subtitle stream skipped")
            }
        }
    }
    let first = out.len();
    for (n, f) in files.iter().enumerate().take(captions::MAX_TRACKS) {
        let t = captions::part_track(first, n, f.language.as_deref(), f.label.as_deref());
        let vtt: PathBuf = dir.join(&t.file);
        st.storage
            .get_to_file(&caption_key(job_id, n), &vtt)
            .await
            .map_err(|e| match e {
                StorageError::NotFound(_) => {
                    TranscodeError::InputNotFound(format!("caption file {n} is gone"))
                }
                other => TranscodeError::Storage(format!("reading caption file {n}: {other}")),
            })?;
        let text = std::fs::read_to_string(&vtt)
            .map_err(|_| TranscodeError::Captions(CaptionError::NotText))?;
        if captions::cue_count(&text) == 0 {
            return Err(TranscodeError::Captions(CaptionError::NoCues));
        }
        out.push((t, vtt));
    }
    Ok(out)
}

/// A watermark ready for the encodes: its options, the image in the working directory and
/// what the probe found.
pub(super) struct Watermark {
    pub spec: WatermarkSpec,
    pub image: PathBuf,
    pub mark: Mark,
}

impl Watermark {
    pub fn as_extra(&self) -> reelay_media::Watermark<'_> {
        reelay_media::Watermark {
            spec: self.spec,
            image: &self.image,
            mark: self.mark,
        }
    }
}

/// The job's watermark, when it has one.
pub(super) async fn watermark(
    st: &AppState,
    job_id: &str,
    spec: &JobSpec,
    dir: &Path,
) -> Result<Option<Watermark>, TranscodeError> {
    let parsed = crate::side_files::watermark_spec(spec)
        .map_err(|e| TranscodeError::InvalidSpec(e.to_string()))?;
    let Some(wm) = parsed else {
        return Ok(None);
    };
    let image = dir.join("watermark");
    st.storage
        .get_to_file(&watermark_key(job_id), &image)
        .await
        .map_err(|e| match e {
            StorageError::NotFound(_) => {
                TranscodeError::InputNotFound("the watermark image is gone".into())
            }
            other => TranscodeError::Storage(format!("reading the watermark image: {other}")),
        })?;
    let mark = watermark_image(&st.cfg.tools, &st.cfg.policy, &image)
        .await
        .map_err(TranscodeError::Watermark)?;
    Ok(Some(Watermark {
        spec: wm,
        image,
        mark,
    }))
}

/// The `captions.burn_in` track as the ASS script the MP4 encodes burn in
/// ([`captions::BURN_IN_FILE`] in the working directory, ffmpeg's cwd); `false` when not asked.
pub(super) async fn burn_in(
    cfg: &crate::config::Config,
    spec: &JobSpec,
    tracks: &[CaptionFile],
    dir: &Path,
) -> Result<bool, TranscodeError> {
    let Some(language) = spec.captions.as_ref().and_then(|c| c.burn_in.as_deref()) else {
        return Ok(false);
    };
    let (_, vtt) = tracks
        .iter()
        .find(|(t, _)| captions::is_burn_in(t, language))
        .ok_or_else(|| {
            TranscodeError::Captions(CaptionError::NoSuchTrack(
                language.chars().take(35).collect(),
            ))
        })?;
    let timeout = Duration::from_secs(cfg.job_timeout_seconds.min(300));
    captions::to_ass(
        &cfg.tools,
        &cfg.policy,
        vtt,
        &dir.join(captions::BURN_IN_FILE),
        timeout,
    )
    .await
    .map_err(TranscodeError::Captions)?;
    Ok(true)
}
