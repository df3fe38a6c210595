//! What the transcode task measures besides encoding: the input's loudness (first pass of
//! `audio.loudness`) and, after each file output is written, its loudness and its quality
//! (PSNR/SSIM against the source scaled to its size). These are the receipts a job view shows on
//! its outputs.
//!
//! Every run goes through `reelay_media::analysis`, fenced like an encode. The output files are
//! reelay's own, but they are read with the same fences: the demuxer is forced to the one reelay
//! wrote ([`demuxer_of`]), added to the allowlist for that run only.

use reelay_media::analysis::{AnalysisError, Input};
use reelay_media::loudness::{self, LoudnessMode, LoudnessStats};
use reelay_media::plan::{AudioCodec, Container, Rendition, VideoCodec};
use reelay_media::{InputPolicy, MediaInfo, Tools};
use reelay_protocol::{LoudnessAction, LoudnessReceipt, LoudnessValues, QualityReceipt};
use std::path::Path;
use std::time::Duration;

/// Whether this job's video file outputs get quality receipts: what the job asked, else on for
/// inputs up to `max_seconds` (an input of unknown length gets none: its cost is unknown).
pub fn wants_quality(asked: Option<bool>, input_seconds: Option<f64>, max_seconds: f64) -> bool {
    asked.unwrap_or_else(|| input_seconds.is_some_and(|d| d <= max_seconds))
}

/// Whether any output asked for loudness work, so the input is measured (once) at all.
pub fn wants_loudness(renditions: &[Rendition]) -> bool {
    renditions.iter().any(|r| loudness_mode(r).is_some())
}

/// The loudness mode of an output, if it asked for one.
pub fn loudness_mode(r: &Rendition) -> Option<LoudnessMode> {
    r.audio.as_ref().and_then(|a| a.loudness)
}

/// The demuxer that reads back a file reelay wrote in `c`; `None` for pictures.
pub fn demuxer_of(c: Container) -> Option<&'static str> {
    match c {
        Container::Mp4 | Container::M4a | Container::Mov => Some("mov"),
        Container::Mkv | Container::Webm => Some("matroska"),
        Container::Jpeg => None,
    }
}

/// The sample rate the encoder writes, which the second pass must resample back to
/// (`loudnorm` works at 192 kHz): Opus is always 48 kHz, AAC keeps the input's rate.
pub fn output_sample_rate(codec: AudioCodec, input_rate: Option<u32>) -> u32 {
    match codec {
        AudioCodec::Opus => 48_000,
        _ => input_rate.unwrap_or(48_000),
    }
}

/// The second-pass filter of an output, `None` when it only measures, has no audio, or the
/// input was silent.
pub fn normalize_filter(r: &Rendition, info: &MediaInfo, input: &LoudnessStats) -> Option<String> {
    let LoudnessMode::Normalize(target) = loudness_mode(r)? else {
        return None;
    };
    let audio = r.audio.as_ref()?;
    let src = info.audio()?;
    let rate = output_sample_rate(audio.codec, src.sample_rate);
    loudness::normalize_filter_for(target, input, rate, src.channels)
}

fn values(s: &LoudnessStats) -> LoudnessValues {
    LoudnessValues {
        integrated_lufs: s.integrated_lufs.map(round2),
        true_peak_dbtp: s.true_peak_dbtp.map(round2),
        range_lu: s.range_lu.map(round2),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The receipt of an output from the input's and (file outputs) the output's measurements.
pub fn loudness_receipt(
    mode: LoudnessMode,
    input: &LoudnessStats,
    output: Option<&LoudnessStats>,
) -> LoudnessReceipt {
    let (action, target) = match mode {
        LoudnessMode::Measure => (LoudnessAction::Measure, None),
        LoudnessMode::Normalize(t) => (LoudnessAction::Normalize, Some(t.integrated)),
    };
    LoudnessReceipt {
        mode: action,
        target_lufs: target,
        input: values(input),
        output: output.map(values),
    }
}

/// The measuring runs of one attempt: tools, the input policy and a time bound per run.
pub struct Meter<'a> {
    pub tools: &'a Tools,
    pub policy: &'a InputPolicy,
    pub timeout: Duration,
}

impl Meter<'_> {
    /// First pass: the input's loudness, `None` when it has no audio stream.
    pub async fn input_loudness(
        &self,
        input: &Path,
        info: &MediaInfo,
    ) -> Result<Option<LoudnessStats>, AnalysisError> {
        let Some(audio) = info.audio() else {
            return Ok(None);
        };
        let inp = Input {
            path: input,
            demuxer: info.demuxer(),
        };
        loudness::measure(
            self.tools,
            self.policy,
            inp,
            audio.index as usize,
            self.timeout,
        )
        .await
        .map(Some)
    }

    /// The policy for reading back an output in `demuxer`: the input policy, plus that demuxer.
    fn own_output_policy(&self, demuxer: &str) -> InputPolicy {
        let mut p = self.policy.clone();
        if !p.allowed_formats.iter().any(|f| f == demuxer) {
            p.allowed_formats.push(demuxer.to_string());
        }
        p
    }

    /// The loudness of the audio track of a file output reelay wrote (video first, then audio,
    /// so its audio is stream 1 when it has video).
    pub async fn output_loudness(
        &self,
        r: &Rendition,
        file: &Path,
        has_video: bool,
    ) -> Result<Option<LoudnessStats>, AnalysisError> {
        let Some(demuxer) = r.container().and_then(demuxer_of) else {
            return Ok(None);
        };
        let policy = self.own_output_policy(demuxer);
        let inp = Input {
            path: file,
            demuxer,
        };
        let stream = usize::from(has_video);
        loudness::measure(self.tools, &policy, inp, stream, self.timeout)
            .await
            .map(Some)
    }

    /// PSNR/SSIM of a video file output against the source, plus its bitrate. `None` for
    /// outputs without a re-encoded video (audio-only, thumbnails, `copy`). `written` is what
    /// the encode's own progress said it wrote (frames, seconds): the output is not probed
    /// again for it (a process start saved per output, issue 18).
    pub async fn quality(
        &self,
        r: &Rendition,
        file: &Path,
        source: &Path,
        info: &MediaInfo,
        written: &reelay_media::Progress,
    ) -> Result<Option<QualityReceipt>, AnalysisError> {
        let (Some(vp), Some(container), Some(src_video)) =
            (r.video.as_ref(), r.container(), info.video())
        else {
            return Ok(None);
        };
        if vp.codec == VideoCodec::Copy {
            return Ok(None);
        }
        let Some(demuxer) = demuxer_of(container) else {
            return Ok(None);
        };
        let policy = self.own_output_policy(demuxer);
        let duration = Some(written.out_time).filter(|d| d.is_finite() && *d > 0.0);
        let reference = reference_filter(r, info, vp.fps);
        let report = reelay_media::quality::measure(
            self.tools,
            &policy,
            Input {
                path: file,
                demuxer,
            },
            Input {
                path: source,
                demuxer: info.demuxer(),
            },
            src_video.index as usize,
            Some(&reference)
                .filter(|s| !s.is_empty())
                .map(|s| s.as_str()),
            written.frames,
            self.timeout,
        )
        .await?;
        let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        let bitrate_kbps = duration
            .filter(|d| *d > 0.0)
            .map(|d| round2(size as f64 * 8.0 / d / 1000.0));
        Ok(Some(QualityReceipt {
            psnr_db: report.psnr_db.map(round2),
            ssim: (report.ssim * 10_000.0).round() / 10_000.0,
            frames: report.frames,
            bitrate_kbps,
        }))
    }
}

/// The picture filters the encode applied to the source before scaling, so the reference frame
/// is the one each output frame was made from: the trim (the comparison reads the source from
/// its start) and the deinterlacer.
pub fn reference_filter(r: &Rendition, info: &MediaInfo, out_fps: Option<f64>) -> String {
    let mut parts = vec![];
    if r.trim_start > 0.0 || r.trim_duration.is_some() {
        let mut t = format!("trim=start={:.3}", r.trim_start);
        if let Some(d) = r.trim_duration {
            t.push_str(&format!(":duration={d:.3}"));
        }
        parts.push(t);
    }
    if let Some(d) = reelay_media::argv::deinterlace_filter(info, out_fps) {
        parts.push(d);
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reelay_media::loudness::{parse_mode, EBU_R128};
    use reelay_protocol::OutputSpec;

    fn custom(json: &str) -> Rendition {
        let o: OutputSpec = serde_json::from_str(json).unwrap();
        reelay_media::resolve_outputs(&[o]).unwrap().remove(0)
    }

    #[test]
    fn quality_is_on_for_short_inputs_unless_asked_otherwise() {
        assert!(wants_quality(None, Some(10.0), 600.0));
        assert!(!wants_quality(None, Some(601.0), 600.0));
        assert!(!wants_quality(None, None, 600.0));
        assert!(!wants_quality(Some(false), Some(1.0), 600.0));
        assert!(wants_quality(Some(true), Some(3600.0), 600.0));
    }

    #[test]
    fn only_outputs_that_ask_are_normalised() {
        let plain = custom(r#"{"name":"a","container":"mp4","video":{"codec":"h264"}}"#);
        let loud = custom(
            r#"{"name":"b","container":"webm","video":{"codec":"vp9"},"audio":{"codec":"opus","loudness":"ebu-r128"}}"#,
        );
        let measure = custom(
            r#"{"name":"c","container":"mp4","audio":{"codec":"aac","loudness":"measure"}}"#,
        );
        assert!(!wants_loudness(std::slice::from_ref(&plain)));
        assert!(wants_loudness(&[plain.clone(), measure.clone()]));
        assert_eq!(
            loudness_mode(&loud),
            Some(parse_mode(&"ebu-r128".into()).unwrap())
        );
        let info = reelay_media::probe::parse_probe_json(
            r#"{"streams":[{"index":0,"codec_type":"video","codec_name":"h264","width":64,"height":64},
               {"index":1,"codec_type":"audio","codec_name":"aac","channels":1,"sample_rate":"44100"}],
               "format":{"format_name":"mov,mp4,m4a","duration":"2.0"}}"#,
        )
        .unwrap();
        let stats = LoudnessStats {
            integrated_lufs: Some(-30.0),
            true_peak_dbtp: Some(-10.0),
            range_lu: Some(3.0),
            threshold_lufs: Some(-40.0),
        };
        assert_eq!(normalize_filter(&plain, &info, &stats), None);
        assert_eq!(normalize_filter(&measure, &info, &stats), None);
        // Opus writes 48 kHz whatever the input's rate.
        let f = normalize_filter(&loud, &info, &stats).unwrap();
        assert!(f.starts_with("loudnorm=I=-23.0:"), "{f}");
        assert!(
            f.ends_with("aformat=sample_rates=48000:channel_layouts=mono"),
            "{f}"
        );
        let r = loudness_receipt(LoudnessMode::Normalize(EBU_R128), &stats, None);
        assert_eq!(r.target_lufs, Some(-23.0));
        assert_eq!(r.input.integrated_lufs, Some(-30.0));
        assert!(r.output.is_none());
    }

    #[test]
    fn reference_follows_the_trim() {
        let r = custom(
            r#"{"name":"a","container":"mp4","video":{"codec":"h264"},"trim":{"start":1.5,"duration":2}}"#,
        );
        let info = reelay_media::probe::parse_probe_json(
            r#"{"streams":[{"index":0,"codec_type":"video","codec_name":"h264","width":64,"height":64}],
               "format":{"format_name":"mov,mp4,m4a","duration":"5.0"}}"#,
        )
        .unwrap();
        assert_eq!(
            reference_filter(&r, &info, None),
            "trim=start=1.500:duration=2.000"
        );
        assert_eq!(demuxer_of(Container::Webm), Some("matroska"));
        assert_eq!(demuxer_of(Container::Jpeg), None);
    }
}
