//! What the transcode task measures besides encoding: the input's loudness (first pass of
//! `audio.loudness`) and, after each file output is written, its loudness and its quality
//! (PSNR/SSIM against the source scaled to its size). These are the receipts a job view shows on
//! its outputs.
//!
//! Quality comes from the encoder itself where it can say (libx264: files and every rung of a
//! ladder, [`in_encode`]), read from the encode's own log, so it costs no second decode; other
//! encoders' files are measured after the encode with ffmpeg's filters ([`Meter::quality`]),
//! and their ladders rung by rung the same way ([`Meter::ladder_quality`]).
//!
//! Every run goes through `reelay_media::analysis`, fenced like an encode. The output files are
//! reelay's own, but they are read with the same fences: the demuxer is forced to the one reelay
//! wrote ([`demuxer_of`]), added to the allowlist for that run only.

use reelay_media::analysis::{AnalysisError, Input};
use reelay_media::loudness::{self, LoudnessMode, LoudnessStats};
use reelay_media::plan::{
    AudioCodec, Container, Packaging, Rendition, Segments, VideoCodec, DASH_MANIFEST,
};
use reelay_media::quality::EncoderQuality;
use reelay_media::split::SegmentOutput;
use reelay_media::{InputPolicy, MediaInfo, Tools};
use reelay_protocol::{
    LoudnessAction, LoudnessReceipt, LoudnessValues, QualityMethod, QualityReceipt, RungQuality,
};
use std::path::Path;
use std::time::Duration;

/// Whether this job's video file outputs get quality receipts: what the job asked, else on for
/// inputs up to `max_seconds` (an input of unknown length gets none: its cost is unknown).
pub fn wants_quality(asked: Option<bool>, input_seconds: Option<f64>, max_seconds: f64) -> bool {
    asked.unwrap_or_else(|| input_seconds.is_some_and(|d| d <= max_seconds))
}

/// The libx264 streams an output's encode writes, which report their own quality.
#[derive(Debug, Clone, PartialEq)]
pub enum InEncode {
    /// An H.264 file: one stream.
    File,
    /// An H.264 ladder: one stream per rung, these sizes, in output-stream order.
    Ladder(Vec<(u32, u32)>),
}

/// Whether (and how) `r` is measured in its own encode: H.264 video, re-encoded, from an input
/// with a picture. `None`: files and other ladders fall back to the filters.
pub fn in_encode(r: &Rendition, info: &MediaInfo) -> Option<InEncode> {
    info.video()?;
    if r.packaging.ladder().is_some() {
        let codec = r.video.as_ref().map_or(VideoCodec::H264, |v| v.codec);
        if codec != VideoCodec::H264 {
            return None;
        }
        return ladder_dims(r, info).map(InEncode::Ladder);
    }
    let v = r.video.as_ref()?;
    (v.codec == VideoCodec::H264 && r.container().and_then(demuxer_of).is_some())
        .then_some(InEncode::File)
}

/// The picture size of each rung of a ladder output, in output-stream order (largest first,
/// the `v<rung>` directories); `None` for files.
pub fn ladder_dims(r: &Rendition, info: &MediaInfo) -> Option<Vec<(u32, u32)>> {
    let l = r.packaging.ladder()?;
    let (dw, dh) = info.display_dims().unwrap_or((0, 0));
    Some(
        reelay_media::argv::ladder(&l.rungs, dw.min(dh))
            .iter()
            .map(|rung| reelay_media::argv::fit_short_side(dw, dh, rung.short_side))
            .collect(),
    )
}

/// How a ladder's rungs are found on disk to be measured with the filters (the fallback for
/// ladders whose encoders report no quality: libx265, libsvtav1): each HLS variant's media
/// playlist, or the DASH manifest's video representations (DASH and CMAF; CMAF's HLS
/// playlists name the same files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RungListing {
    /// `v<rung>/index.m3u8`, segments of this kind; each variant carries its audio too.
    Hls(Segments),
    /// `manifest.mpd`, one video representation per rung.
    Mpd,
}

impl RungListing {
    /// The listing of a ladder packaging; `None` for files and storyboards.
    pub fn of(p: &Packaging) -> Option<Self> {
        match p {
            Packaging::Hls { segments, .. } => Some(RungListing::Hls(*segments)),
            Packaging::Dash(_) | Packaging::Cmaf(_) => Some(RungListing::Mpd),
            Packaging::File(_) | Packaging::Storyboard(_) => None,
        }
    }

    /// The demuxer that reads a rung's files concatenated, and the scratch file's extension.
    pub fn demuxer(self) -> (&'static str, &'static str) {
        match self {
            RungListing::Hls(Segments::Ts) => ("mpegts", "ts"),
            RungListing::Hls(Segments::Fmp4) | RungListing::Mpd => ("mov", "mp4"),
        }
    }

    /// Whether a rung's files hold its video alone, so their size over the duration is the
    /// video bitrate a rung reports (an HLS variant muxes its audio in).
    pub fn video_only(self, has_audio: bool) -> bool {
        self == RungListing::Mpd || !has_audio
    }

    /// The files of each of `rungs` rungs (relative to the output's directory, init segment
    /// first, then the media segments in play order), from the manifests `read` returns by
    /// their name in that directory. `None` when a manifest is missing or unreadable, names a
    /// file outside the directory, or the count of rungs differs: a rung measured from the
    /// wrong files would be a receipt for something else.
    pub fn files(
        self,
        rungs: usize,
        read: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Vec<Vec<String>>> {
        use reelay_media::manifest::{hls_variant_files, mpd_video_files};
        let files: Vec<Vec<String>> = match self {
            RungListing::Hls(_) => (0..rungs)
                .map(|i| {
                    let playlist = format!("v{i}/index.m3u8");
                    hls_variant_files(&playlist, &read(&playlist)?)
                })
                .collect::<Option<_>>()?,
            RungListing::Mpd => mpd_video_files(&read(DASH_MANIFEST)?)
                .ok()?
                .into_iter()
                .collect::<Option<_>>()?,
        };
        (files.len() == rungs && rungs > 0).then_some(files)
    }
}

/// A receipt from what the encoder measured; `bitrate_kbps` as the caller knows it (a file's
/// size over its duration; a rung's encoder count).
pub fn encoder_receipt(q: &EncoderQuality, bitrate_kbps: Option<f64>) -> QualityReceipt {
    QualityReceipt {
        psnr_db: q.psnr_db.map(round2),
        ssim: round4(q.ssim),
        frames: q.frames,
        bitrate_kbps: bitrate_kbps.map(round2),
        method: Some(QualityMethod::Encoder),
    }
}

/// The rungs' receipts, when the encode reported one per rung (else `None`: which summary
/// belongs to which rung would be a guess).
pub fn rung_receipts(dims: &[(u32, u32)], measured: &[EncoderQuality]) -> Option<Vec<RungQuality>> {
    (dims.len() == measured.len() && !dims.is_empty()).then(|| {
        dims.iter()
            .zip(measured)
            .enumerate()
            .map(|(i, ((w, h), q))| RungQuality {
                rung: i as u32,
                width: *w,
                height: *h,
                quality: encoder_receipt(q, q.kbps),
            })
            .collect()
    })
}

/// A split file output's quality over the whole file: its ranges' encoder measurements
/// combined (exactly: summed squared error, frame-weighted SSIM). `None` unless every range
/// measured it, since a partial sum would pass for the whole.
pub fn stitched_file_quality(name: &str, ranges: &[&SegmentOutput]) -> Option<EncoderQuality> {
    let parts: Vec<EncoderQuality> = ranges
        .iter()
        .filter_map(|s| {
            s.file_quality
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, q)| *q)
        })
        .collect();
    (parts.len() == ranges.len())
        .then(|| reelay_media::quality::combine(&parts))
        .flatten()
}

/// A split ladder's rung receipts, each rung's ranges combined; empty unless every range
/// measured every rung.
pub fn stitched_rungs(name: &str, ranges: &[&SegmentOutput]) -> Vec<RungQuality> {
    let mut by_rung: std::collections::BTreeMap<usize, (u32, u32, Vec<Option<EncoderQuality>>)> =
        Default::default();
    for s in ranges {
        for h in s.hls.iter().filter(|h| h.rendition == name) {
            by_rung
                .entry(h.rung)
                .or_insert_with(|| (h.width, h.height, vec![]))
                .2
                .push(h.quality);
        }
    }
    let mut out = vec![];
    for (rung, (width, height, parts)) in by_rung {
        let parts: Option<Vec<EncoderQuality>> = parts.into_iter().collect();
        let Some(q) = parts
            .filter(|p| p.len() == ranges.len())
            .and_then(|p| reelay_media::quality::combine(&p))
        else {
            return vec![];
        };
        out.push(RungQuality {
            rung: rung as u32,
            width,
            height,
            quality: encoder_receipt(&q, q.kbps),
        });
    }
    out
}

/// Mean bitrate of `bytes` over `seconds`, kbit/s.
pub fn bitrate_kbps(bytes: u64, seconds: f64) -> Option<f64> {
    (seconds.is_finite() && seconds > 0.0).then(|| bytes as f64 * 8.0 / seconds / 1000.0)
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
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
        let bitrate_kbps = duration.and_then(|d| bitrate_kbps(size, d)).map(round2);
        Ok(Some(QualityReceipt {
            psnr_db: report.psnr_db.map(round2),
            ssim: round4(report.ssim),
            frames: report.frames,
            bitrate_kbps,
            method: Some(QualityMethod::Filters),
        }))
    }
}

/// Why a ladder's rungs could not be measured with the filters (logged; the output is kept).
#[derive(Debug, thiserror::Error)]
pub enum RungQualityError {
    #[error("the ladder's manifests do not list {0} rungs of its own files")]
    Listing(usize),
    #[error("assembling rung {rung} for measuring: {error}")]
    Scratch { rung: usize, error: std::io::Error },
    #[error(transparent)]
    Measure(#[from] AnalysisError),
}

impl RungQualityError {
    pub fn code(&self) -> &'static str {
        match self {
            RungQualityError::Listing(_) => "rung_listing",
            RungQualityError::Scratch { .. } => "scratch_error",
            RungQualityError::Measure(e) => e.code(),
        }
    }
    /// A full scratch disk or a slow machine may pass; a manifest that does not list the
    /// rungs will not.
    pub fn is_transient(&self) -> bool {
        match self {
            RungQualityError::Listing(_) => false,
            RungQualityError::Scratch { .. } => true,
            RungQualityError::Measure(e) => e.is_transient(),
        }
    }
}

/// Writes `files` (relative to `dir`) one after another into `dest`: an fMP4 rung's init
/// segment and fragments make one fragmented MP4, a TS rung's segments one TS.
fn concatenate(dir: &Path, files: &[String], dest: &Path) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(dest)?);
    let mut n = 0;
    for f in files {
        n += std::io::copy(&mut std::fs::File::open(dir.join(f))?, &mut out)?;
    }
    std::io::Write::flush(&mut out)?;
    Ok(n)
}

impl Meter<'_> {
    /// PSNR/SSIM of every rung of a ladder output whose encoders reported none (H.265, AV1),
    /// with the filters: each rung's files (from its manifest, [`RungListing::files`])
    /// concatenated into one scratch file in `scratch` (not the output directory, which is
    /// published), read back with its demuxer forced, and compared with the source scaled to
    /// the rung's size, through the same trim and deinterlacer as a file output. `dims` are
    /// the rungs' sizes in ladder order; every rung has the encode's frame count (the rungs
    /// share the frame rate). All rungs or none: a partial list would read as the whole ladder.
    #[allow(clippy::too_many_arguments)]
    pub async fn ladder_quality(
        &self,
        r: &Rendition,
        dims: &[(u32, u32)],
        dir: &Path,
        scratch: &Path,
        source: &Path,
        info: &MediaInfo,
        written: &reelay_media::Progress,
    ) -> Result<Vec<RungQuality>, RungQualityError> {
        let (Some(listing), Some(vp), Some(src_video)) = (
            RungListing::of(&r.packaging),
            r.video.as_ref(),
            info.video(),
        ) else {
            return Ok(vec![]);
        };
        if vp.codec == VideoCodec::Copy {
            return Ok(vec![]);
        }
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let files = listing
            .files(dims.len(), &read)
            .ok_or(RungQualityError::Listing(dims.len()))?;
        let (demuxer, ext) = listing.demuxer();
        let policy = self.own_output_policy(demuxer);
        let reference = reference_filter(r, info, vp.fps);
        let duration = Some(written.out_time).filter(|d| d.is_finite() && *d > 0.0);
        let video_only = listing.video_only(r.audio.is_some() && info.audio().is_some());
        let mut out = vec![];
        for (i, ((w, h), rung_files)) in dims.iter().zip(&files).enumerate() {
            let joined = scratch.join(format!("rung-quality-{i}.{ext}"));
            let scratch_err = |error| RungQualityError::Scratch { rung: i, error };
            let size = concatenate(dir, rung_files, &joined).map_err(scratch_err)?;
            let report = reelay_media::quality::measure(
                self.tools,
                &policy,
                Input {
                    path: &joined,
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
            .await;
            // Scratch only: the measurement is all that is kept of it.
            let _ = std::fs::remove_file(&joined);
            let report = report?;
            out.push(RungQuality {
                rung: i as u32,
                width: *w,
                height: *h,
                quality: QualityReceipt {
                    psnr_db: report.psnr_db.map(round2),
                    ssim: round4(report.ssim),
                    frames: report.frames,
                    bitrate_kbps: duration
                        .filter(|_| video_only)
                        .and_then(|d| bitrate_kbps(size, d))
                        .map(round2),
                    method: Some(QualityMethod::Filters),
                },
            });
        }
        Ok(out)
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

    fn probe(w: u32, h: u32) -> MediaInfo {
        reelay_media::probe::parse_probe_json(&format!(
            r#"{{"streams":[{{"index":0,"codec_type":"video","codec_name":"h264","width":{w},"height":{h}}}],
               "format":{{"format_name":"mov,mp4,m4a","duration":"5.0"}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn h264_files_and_ladders_are_measured_in_the_encode() {
        let info = probe(1280, 720);
        let h264 = custom(r#"{"name":"a","container":"mp4","video":{"codec":"h264"}}"#);
        assert_eq!(in_encode(&h264, &info), Some(InEncode::File));
        let vp9 = custom(r#"{"name":"b","container":"webm","video":{"codec":"vp9"}}"#);
        assert_eq!(in_encode(&vp9, &info), None);
        let audio = custom(r#"{"name":"c","container":"m4a","audio":{"codec":"aac"}}"#);
        assert_eq!(in_encode(&audio, &info), None);
        let hls: OutputSpec = serde_json::from_str(r#"{"preset":"hls-abr"}"#).unwrap();
        let hls = reelay_media::resolve_outputs(&[hls]).unwrap().remove(0);
        let Some(InEncode::Ladder(dims)) = in_encode(&hls, &info) else {
            panic!("hls-abr is an H.264 ladder");
        };
        assert!(dims.len() >= 2, "{dims:?}");
        // The ladder's order: largest rung first.
        assert_eq!(dims.first(), Some(&(1280, 720)));
        // No picture in the input: nothing to measure.
        let silent = reelay_media::probe::parse_probe_json(
            r#"{"streams":[{"index":0,"codec_type":"audio","codec_name":"aac","channels":1,"sample_rate":"44100"}],
               "format":{"format_name":"mov,mp4,m4a","duration":"2.0"}}"#,
        )
        .unwrap();
        assert_eq!(in_encode(&h264, &silent), None);
    }

    #[test]
    fn rungs_get_receipts_only_when_every_rung_reported() {
        let q = |p: f64| EncoderQuality {
            frames: 50,
            psnr_db: Some(p),
            ssim: 0.987654,
            kbps: Some(336.494),
        };
        let dims = [(640, 360), (1280, 720)];
        let got = rung_receipts(&dims, &[q(40.123), q(42.0)]).unwrap();
        assert_eq!(got[1].rung, 1);
        assert_eq!((got[1].width, got[1].height), (1280, 720));
        assert_eq!(got[0].quality.psnr_db, Some(40.12));
        assert_eq!(got[0].quality.ssim, 0.9877);
        assert_eq!(got[0].quality.bitrate_kbps, Some(336.49));
        assert_eq!(got[0].quality.method, Some(QualityMethod::Encoder));
        assert_eq!(rung_receipts(&dims, &[q(40.0)]), None);
        assert_eq!(rung_receipts(&[], &[]), None);
        assert_eq!(bitrate_kbps(1000, 2.0), Some(4.0));
        assert_eq!(bitrate_kbps(1000, 0.0), None);
    }

    #[test]
    fn split_ranges_combine_into_one_receipt_per_output_and_rung() {
        use reelay_media::split::HlsPiece;
        let q = |frames, p| EncoderQuality {
            frames,
            psnr_db: Some(p),
            ssim: 0.99,
            kbps: Some(100.0),
        };
        let piece = |rung, quality| HlsPiece {
            rendition: "hls".into(),
            rung,
            segments: vec![],
            codec: "avc1.640028".into(),
            width: 320 * (rung as u32 + 1),
            height: 180 * (rung as u32 + 1),
            quality,
        };
        let range = |i, p| SegmentOutput {
            index: i,
            files: vec![("f".into(), format!("f/piece_{i:05}.ts"))],
            hls: vec![piece(0, Some(q(30, p))), piece(1, Some(q(30, p + 3.0)))],
            file_quality: vec![("f".into(), q(30, p))],
        };
        let (a, b) = (range(0, 40.0), range(1, 30.0));
        let f = stitched_file_quality("f", &[&a, &b]).unwrap();
        assert_eq!(f.frames, 60);
        // MSE 1e-4 and 1e-3 over equal frames: 5.5e-4.
        assert!((f.psnr_db.unwrap() - (-10.0 * 5.5e-4f64.log10())).abs() < 1e-9);
        let rungs = stitched_rungs("hls", &[&a, &b]);
        assert_eq!(rungs.len(), 2);
        assert_eq!(
            (rungs[1].rung, rungs[1].width, rungs[1].height),
            (1, 640, 360)
        );
        assert_eq!(rungs[1].quality.frames, 60);
        assert_eq!(rungs[0].quality.psnr_db, Some(round2(f.psnr_db.unwrap())));
        // A range that did not measure leaves the output without a receipt, not a partial one.
        let mut c = range(2, 35.0);
        c.file_quality.clear();
        c.hls[1].quality = None;
        assert_eq!(stitched_file_quality("f", &[&a, &c]), None);
        assert!(stitched_rungs("hls", &[&a, &c]).is_empty());
        assert!(stitched_rungs("other", &[&a]).is_empty());
    }

    #[test]
    fn rung_listings_read_each_rungs_own_files_or_nothing() {
        use std::collections::HashMap;
        let hls = custom(r#"{"name":"x","container":"hls-cmaf","video":{"codec":"h265"}}"#);
        let listing = RungListing::of(&hls.packaging).unwrap();
        assert_eq!(listing, RungListing::Hls(Segments::Fmp4));
        assert_eq!(listing.demuxer(), ("mov", "mp4"));
        assert!(!listing.video_only(true));
        assert!(listing.video_only(false));
        let variant = |i: usize| {
            format!("#EXTM3U\n#EXT-X-MAP:URI=\"init_{i}.mp4\"\n#EXTINF:2,\nseg_00000.m4s\n#EXTINF:1,\nseg_00001.m4s\n")
        };
        let disk: HashMap<String, String> = (0..2)
            .map(|i| (format!("v{i}/index.m3u8"), variant(i)))
            .collect();
        let read = |n: &str| disk.get(n).cloned();
        let files = listing.files(2, &read).unwrap();
        assert_eq!(
            files[1],
            ["v1/init_1.mp4", "v1/seg_00000.m4s", "v1/seg_00001.m4s"]
        );
        // A rung whose playlist is missing: no rung is measured.
        assert_eq!(listing.files(3, &read), None);

        let dash = custom(r#"{"name":"d","container":"dash","video":{"codec":"av1"}}"#);
        let listing = RungListing::of(&dash.packaging).unwrap();
        assert_eq!(listing, RungListing::Mpd);
        assert!(listing.video_only(true));
        let rep = |id: u32| {
            format!(
                r#"<Representation id="{id}" mimeType="video/mp4" codecs="av01" bandwidth="1" width="320" height="240">
<SegmentTemplate timescale="1000" initialization="init-$RepresentationID$.m4s" media="seg-$RepresentationID$-$Number%05d$.m4s" startNumber="1">
<SegmentTimeline><S t="0" d="1000" r="1" /></SegmentTimeline></SegmentTemplate></Representation>"#
            )
        };
        let mpd = format!(
            r#"<MPD><Period><AdaptationSet contentType="video">{}{}</AdaptationSet>
<AdaptationSet contentType="audio"><Representation id="2" mimeType="audio/mp4" codecs="mp4a.40.2" bandwidth="1">
<SegmentTemplate timescale="1000" initialization="init-$RepresentationID$.m4s" media="seg-$RepresentationID$-$Number%05d$.m4s" startNumber="1">
<SegmentTimeline><S t="0" d="2000" /></SegmentTimeline></SegmentTemplate></Representation></AdaptationSet></Period></MPD>"#,
            rep(0),
            rep(1)
        );
        let read = |n: &str| (n == DASH_MANIFEST).then(|| mpd.clone());
        let files = listing.files(2, &read).unwrap();
        assert_eq!(
            files,
            [
                ["init-0.m4s", "seg-0-00001.m4s", "seg-0-00002.m4s"],
                ["init-1.m4s", "seg-1-00001.m4s", "seg-1-00002.m4s"]
            ]
        );
        // The audio representation is no rung; a count that differs is no guess.
        assert_eq!(listing.files(3, &read), None);
        let audio_only = custom(r#"{"name":"a","container":"m4a","audio":{"codec":"aac"}}"#);
        assert_eq!(RungListing::of(&audio_only.packaging), None);
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
