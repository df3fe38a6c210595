//! ffprobe's JSON turned into a typed [`MediaInfo`].
//!
//! Parsing is a pure function so it can be tested on canned JSON; running ffprobe is a thin async
//! wrapper that applies the same protocol and demuxer allowlists as the encoder, because ffprobe
//! opens the file with the same demuxers ffmpeg would, and a hostile playlist can read local files
//! at probe time just as well as at encode time.

use crate::policy::InputPolicy;
use crate::sandbox::Tools;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// ffprobe's `format_name`, e.g. `mov,mp4,m4a,3gp,3g2,mj2`.
    pub format_name: String,
    pub duration: Option<f64>,
    pub bit_rate: Option<u64>,
    pub streams: Vec<StreamInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Video,
    Audio,
    Subtitle,
    Data,
    Attachment,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub index: u32,
    pub kind: StreamKind,
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frame_rate: Option<f64>,
    /// Display rotation in degrees, normalised to 0, 90, 180 or 270 (clockwise).
    pub rotation: u32,
    pub pix_fmt: Option<String>,
    pub channels: Option<u32>,
    pub sample_rate: Option<u32>,
    pub duration: Option<f64>,
    /// Cover art in audio files is a "video" stream that must not count as video.
    pub attached_pic: bool,
    /// How the pictures are scanned, from ffprobe's `field_order` and, where that is unsure,
    /// from the frames themselves ([`detect_scan`]). Interlaced pictures are deinterlaced before
    /// scaling, because scaling woven fields smears the comb into every line of the output.
    /// `default` so a probe cached before this field existed still parses (as unknown).
    #[serde(default)]
    pub field_order: FieldOrder,
    /// The stream's `language` tag (ISO 639, as the container wrote it), kept for subtitle and
    /// audio renditions.
    #[serde(default)]
    pub language: Option<String>,
    /// The stream's `title` tag (a subtitle track's name, e.g. "English SDH").
    #[serde(default)]
    pub title: Option<String>,
}

/// The scan of a video stream, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldOrder {
    Progressive,
    /// Interlaced, top field first (1080i/576i broadcast, most HD camcorders).
    Tff,
    /// Interlaced, bottom field first (DV, 480i camcorders).
    Bff,
    /// The probe does not say (or says something ambiguous): look at the frames.
    #[default]
    Unknown,
}

impl FieldOrder {
    pub fn is_interlaced(self) -> bool {
        matches!(self, FieldOrder::Tff | FieldOrder::Bff)
    }

    /// ffprobe's `field_order`. Only `progressive`, `tt` and `bb` are taken at their word: `tb`
    /// and `bt` (coded in one order, displayed in the other) are written inconsistently by
    /// muxers (Matroska from a TFF source says `tb`), so for them the frames decide the parity.
    pub fn from_ffprobe(s: &str) -> FieldOrder {
        match s {
            "progressive" => FieldOrder::Progressive,
            "tt" => FieldOrder::Tff,
            "bb" => FieldOrder::Bff,
            _ => FieldOrder::Unknown,
        }
    }
}

impl MediaInfo {
    /// The demuxer name ffmpeg's `-f` accepts (the first of ffprobe's comma list).
    pub fn demuxer(&self) -> &str {
        self.format_name.split(',').next().unwrap_or("")
    }

    pub fn video(&self) -> Option<&StreamInfo> {
        self.streams
            .iter()
            .find(|s| s.kind == StreamKind::Video && !s.attached_pic)
    }

    pub fn audio(&self) -> Option<&StreamInfo> {
        self.streams.iter().find(|s| s.kind == StreamKind::Audio)
    }

    /// Width and height as shown to a viewer, i.e. after applying the rotation ffmpeg autorotates by.
    pub fn display_dims(&self) -> Option<(u32, u32)> {
        let v = self.video()?;
        let (w, h) = (v.width?, v.height?);
        Some(if v.rotation % 180 == 90 {
            (h, w)
        } else {
            (w, h)
        })
    }

    /// The best-known duration: the container's, else the longest stream's.
    pub fn best_duration(&self) -> Option<f64> {
        self.duration
            .filter(|d| d.is_finite() && *d > 0.0)
            .or_else(|| {
                self.streams
                    .iter()
                    .filter_map(|s| s.duration)
                    .filter(|d| d.is_finite() && *d > 0.0)
                    .reduce(f64::max)
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The file is a format we refuse to open at all (a playlist, a concat list, ...).
    #[error("input format {0:?} is not allowed")]
    FormatNotAllowed(String),
    #[error("input is not a readable media file: {0}")]
    Unreadable(String),
    #[error("ffprobe could not be run: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("ffprobe timed out")]
    TimedOut,
    #[error("ffprobe output could not be parsed: {0}")]
    BadJson(String),
}

#[derive(Deserialize)]
struct RawProbe {
    format: Option<RawFormat>,
    #[serde(default)]
    streams: Vec<RawStream>,
}

#[derive(Deserialize)]
struct RawFormat {
    format_name: Option<String>,
    duration: Option<String>,
    bit_rate: Option<String>,
}

#[derive(Deserialize)]
struct RawStream {
    index: u32,
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    pix_fmt: Option<String>,
    channels: Option<u32>,
    sample_rate: Option<String>,
    duration: Option<String>,
    #[serde(default)]
    tags: std::collections::HashMap<String, String>,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
    #[serde(default)]
    disposition: std::collections::HashMap<String, i64>,
    field_order: Option<String>,
}

fn parse_rate(s: &str) -> Option<f64> {
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let (n, d): (f64, f64) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
    (d != 0.0 && n > 0.0)
        .then(|| n / d)
        .filter(|r| r.is_finite())
}

/// Rotation from the display matrix side data (ffmpeg ≥ 5) or the legacy `rotate` tag, as a
/// clockwise angle in {0, 90, 180, 270}. The display matrix states the counter-clockwise angle.
fn rotation_of(raw: &RawStream) -> u32 {
    let from_side = raw
        .side_data_list
        .iter()
        .find_map(|sd| sd.get("rotation").and_then(|r| r.as_f64()))
        .map(|ccw| -ccw);
    let from_tag = raw.tags.get("rotate").and_then(|r| r.parse::<f64>().ok());
    let deg = from_side.or(from_tag).unwrap_or(0.0);
    let quarter = (deg / 90.0).round() as i64;
    (quarter.rem_euclid(4) * 90) as u32
}

/// Parses `ffprobe -print_format json -show_format -show_streams` output.
pub fn parse_probe_json(json: &str) -> Result<MediaInfo, ProbeError> {
    let raw: RawProbe =
        serde_json::from_str(json).map_err(|e| ProbeError::BadJson(e.to_string()))?;
    let format = raw
        .format
        .ok_or_else(|| ProbeError::Unreadable("no container format detected".into()))?;
    let streams = raw
        .streams
        .iter()
        .map(|s| StreamInfo {
            index: s.index,
            kind: match s.codec_type.as_deref() {
                Some("video") => StreamKind::Video,
                Some("audio") => StreamKind::Audio,
                Some("subtitle") => StreamKind::Subtitle,
                Some("data") => StreamKind::Data,
                Some("attachment") => StreamKind::Attachment,
                _ => StreamKind::Other,
            },
            codec: s.codec_name.clone().unwrap_or_else(|| "unknown".into()),
            width: s.width.filter(|w| *w > 0),
            height: s.height.filter(|h| *h > 0),
            frame_rate: s
                .avg_frame_rate
                .as_deref()
                .and_then(parse_rate)
                .or_else(|| s.r_frame_rate.as_deref().and_then(parse_rate)),
            rotation: rotation_of(s),
            pix_fmt: s.pix_fmt.clone(),
            channels: s.channels,
            sample_rate: s.sample_rate.as_deref().and_then(|r| r.parse().ok()),
            duration: s.duration.as_deref().and_then(|d| d.parse().ok()),
            attached_pic: s.disposition.get("attached_pic").copied().unwrap_or(0) != 0,
            field_order: s
                .field_order
                .as_deref()
                .map(FieldOrder::from_ffprobe)
                .unwrap_or_default(),
            language: s.tags.get("language").cloned(),
            title: s.tags.get("title").cloned(),
        })
        .collect();
    Ok(MediaInfo {
        format_name: format.format_name.unwrap_or_default(),
        duration: format.duration.and_then(|d| d.parse().ok()),
        bit_rate: format.bit_rate.and_then(|b| b.parse().ok()),
        streams,
    })
}

/// Classifies ffprobe's stderr when it refused the file.
fn classify_failure(stderr: &str) -> ProbeError {
    // "[hls @ 0x...] Format not on whitelist '...'" names the refused demuxer.
    if let Some(line) = stderr.lines().find(|l| l.contains("not on whitelist")) {
        let name = line
            .strip_prefix('[')
            .and_then(|l| l.split_once(" @"))
            .map(|(n, _)| n.to_string())
            .unwrap_or_else(|| "unknown".into());
        return ProbeError::FormatNotAllowed(name);
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("unknown error");
    // Drop the "file:input: " prefix: it names our private path, not anything useful.
    let msg = last.rsplit_once(": ").map(|(_, m)| m).unwrap_or(last);
    ProbeError::Unreadable(msg.chars().take(200).collect())
}

/// Probes `path` (a file inside the job's working directory): in process for the common MP4
/// ([`crate::mp4probe`]), otherwise ffprobe with the policy's allowlists.
pub async fn probe(
    path: &Path,
    tools: &Tools,
    policy: &InputPolicy,
) -> Result<MediaInfo, ProbeError> {
    // The common upload (MP4/MOV, H.264 + AAC) is answered from its moov without a process:
    // ffprobe's start-up alone is ~74 ms of CPU per submission (issue 18). Only where the
    // policy lets ffprobe open mov at all, and only when the answer is certain.
    if policy.allowed_formats.iter().any(|f| f == "mov") {
        let owned = path.to_path_buf();
        if let Ok(Some(info)) =
            tokio::task::spawn_blocking(move || crate::mp4probe::probe_file(&owned)).await
        {
            tracing::debug!("probed in process");
            return Ok(info);
        }
    }
    let mut cmd = tokio::process::Command::new(&tools.ffprobe);
    cmd.args(["-v", "error", "-protocol_whitelist", "file"])
        .args(["-format_whitelist", &policy.allowed_formats.join(",")])
        .args([
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            "-i",
        ])
        .arg(crate::file_url(path))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tools.limits.apply(&mut cmd);
    let child = cmd.spawn()?;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| ProbeError::TimedOut)??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || stderr.contains("not on whitelist") {
        return Err(classify_failure(&stderr));
    }
    let info = parse_probe_json(&String::from_utf8_lossy(&out.stdout))?;
    if info.format_name.is_empty() {
        return Err(classify_failure(&stderr));
    }
    Ok(info)
}

/// Seconds of video `idet` looks at when the probe is unsure: a few seconds give it over a
/// hundred frames of a 25/30 fps source, plenty for a verdict, at a fraction of an encode's cost.
pub const IDET_SECONDS: f64 = 5.0;

/// Why looking at the frames gave no verdict. Never fatal: the encode proceeds without a
/// deinterlacer (what reelay did before), since a file idet cannot read fails the encode anyway.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("ffmpeg (idet) could not be run: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("ffmpeg (idet) timed out")]
    TimedOut,
    #[error("ffmpeg (idet) failed: {0}")]
    Failed(String),
    #[error("idet printed no frame counts")]
    NoVerdict,
}

impl ScanError {
    /// Stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ScanError::Spawn(_) => "scan_spawn_failed",
            ScanError::TimedOut => "scan_timed_out",
            ScanError::Failed(_) => "scan_failed",
            ScanError::NoVerdict => "scan_no_verdict",
        }
    }
}

/// Reads idet's "Multi frame detection" line (it uses neighbouring frames, so it is steadier than
/// the single-frame count). Interlaced only when woven frames clearly outnumber progressive ones
/// and there are enough of them to mean something: a false "interlaced" would soften a
/// progressive video, a false "progressive" only keeps what reelay did before.
pub fn scan_from_idet(stderr: &str) -> Option<FieldOrder> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("Multi frame detection:"))?;
    let count = |label: &str| -> Option<u64> {
        let rest = line.split(label).nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    };
    let (tff, bff, prog) = (count("TFF:")?, count("BFF:")?, count("Progressive:")?);
    let woven = tff + bff;
    Some(if woven >= 5 && woven > 2 * prog {
        if tff >= bff {
            FieldOrder::Tff
        } else {
            FieldOrder::Bff
        }
    } else {
        FieldOrder::Progressive
    })
}

/// Settles an unknown field order of the video stream by running ffmpeg's `idet` on the first
/// [`IDET_SECONDS`] of it (same allowlists, forced demuxer and limits as any encode). Does nothing
/// when the probe already said progressive, TFF or BFF, or when there is no video.
pub async fn detect_scan(
    info: &mut MediaInfo,
    path: &Path,
    tools: &Tools,
    policy: &InputPolicy,
) -> Result<(), ScanError> {
    let demuxer = info.demuxer().to_string();
    let Some(v) = info
        .streams
        .iter_mut()
        .find(|s| s.kind == StreamKind::Video && !s.attached_pic)
    else {
        return Ok(());
    };
    if v.field_order != FieldOrder::Unknown {
        return Ok(());
    }
    let mut cmd = tokio::process::Command::new(&tools.ffmpeg);
    cmd.args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"])
        .args(["-protocol_whitelist", "file"])
        .args(["-format_whitelist", &policy.allowed_formats.join(",")])
        .args(["-f", &demuxer])
        .args(["-max_pixels", &policy.max_pixels().to_string()])
        .args(["-t", &format!("{IDET_SECONDS:.3}"), "-i"])
        .arg(crate::file_url(path))
        .args(["-map", &format!("0:{}", v.index)])
        .args(["-vf", "idet", "-an", "-sn", "-dn", "-f", "null", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tools.limits.apply(&mut cmd);
    let child = cmd.spawn()?;
    let (status, stderr) = tokio::time::timeout(
        Duration::from_secs(120),
        crate::analysis::wait_keeping_stderr_tail(child),
    )
    .await
    .map_err(|_| ScanError::TimedOut)??;
    if !status.success() {
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(ScanError::Failed(
            last.unwrap_or("no message").chars().take(200).collect(),
        ));
    }
    v.field_order = scan_from_idet(&stderr).ok_or(ScanError::NoVerdict)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROTATED: &str = r#"{"streams":[
      {"index":0,"codec_name":"h264","codec_type":"video","width":1920,"height":1080,"pix_fmt":"yuv420p",
       "r_frame_rate":"30000/1001","avg_frame_rate":"30000/1001","duration":"2.002",
       "side_data_list":[{"side_data_type":"Display Matrix","rotation":-90}],"disposition":{"attached_pic":0}},
      {"index":1,"codec_name":"aac","codec_type":"audio","sample_rate":"48000","channels":2,
       "avg_frame_rate":"0/0","duration":"2.0"},
      {"index":2,"codec_name":"mjpeg","codec_type":"video","width":300,"height":300,"disposition":{"attached_pic":1}}],
     "format":{"format_name":"mov,mp4,m4a,3gp,3g2,mj2","duration":"2.002000","bit_rate":"1234567"}}"#;

    #[test]
    fn parses_streams_rotation_and_rates() {
        let info = parse_probe_json(ROTATED).unwrap();
        assert_eq!(info.demuxer(), "mov");
        assert_eq!(info.duration, Some(2.002));
        let v = info.video().unwrap();
        assert_eq!(
            (v.width, v.height, v.rotation),
            (Some(1920), Some(1080), 90)
        );
        assert!((v.frame_rate.unwrap() - 29.97).abs() < 0.01);
        assert_eq!(info.display_dims(), Some((1080, 1920)));
        let a = info.audio().unwrap();
        assert_eq!((a.channels, a.sample_rate), (Some(2), Some(48000)));
        assert_eq!(a.frame_rate, None);
        assert!(info.streams[2].attached_pic);
    }

    #[test]
    fn legacy_rotate_tag_and_negative_angles_normalise() {
        let json = r#"{"streams":[{"index":0,"codec_type":"video","codec_name":"h264","width":640,"height":480,
            "tags":{"rotate":"270"}}],"format":{"format_name":"mov"}}"#;
        assert_eq!(parse_probe_json(json).unwrap().streams[0].rotation, 270);
        let json = r#"{"streams":[{"index":0,"codec_type":"video","codec_name":"h264","width":640,"height":480,
            "side_data_list":[{"rotation":180}]}],"format":{"format_name":"mov"}}"#;
        assert_eq!(parse_probe_json(json).unwrap().streams[0].rotation, 180);
    }

    #[test]
    fn empty_probe_is_unreadable_and_garbage_is_bad_json() {
        assert!(matches!(
            parse_probe_json("{\n\n}"),
            Err(ProbeError::Unreadable(_))
        ));
        assert!(matches!(
            parse_probe_json("nope"),
            Err(ProbeError::BadJson(_))
        ));
    }

    #[test]
    fn classifies_whitelist_refusals_by_demuxer_name() {
        let e = classify_failure(
            "[hls @ 0x5621e5027280] Format not on whitelist 'mov'\nfile:input: Invalid argument\n",
        );
        assert!(
            matches!(e, ProbeError::FormatNotAllowed(ref n) if n == "hls"),
            "{e:?}"
        );
        let e = classify_failure("file:/tmp/x/input: Invalid data found when processing input\n");
        assert!(
            matches!(e, ProbeError::Unreadable(ref m) if m == "Invalid data found when processing input"),
            "{e:?}"
        );
    }

    #[test]
    fn field_order_is_taken_only_where_ffprobe_is_unambiguous() {
        let json = |fo: &str| {
            format!(
                r#"{{"streams":[{{"index":0,"codec_type":"video","codec_name":"mpeg2video","width":720,"height":576,
                    "field_order":"{fo}"}}],"format":{{"format_name":"mpegts"}}}}"#
            )
        };
        for (fo, want) in [
            ("progressive", FieldOrder::Progressive),
            ("tt", FieldOrder::Tff),
            ("bb", FieldOrder::Bff),
            ("tb", FieldOrder::Unknown),
            ("bt", FieldOrder::Unknown),
            ("unknown", FieldOrder::Unknown),
        ] {
            let info = parse_probe_json(&json(fo)).unwrap();
            assert_eq!(info.video().unwrap().field_order, want, "{fo}");
        }
        // No field_order at all (and a probe cached before the field existed) is unknown.
        let info = parse_probe_json(ROTATED).unwrap();
        assert_eq!(info.video().unwrap().field_order, FieldOrder::Unknown);
        let mut cached = serde_json::to_value(&info).unwrap();
        cached["streams"][0]
            .as_object_mut()
            .unwrap()
            .remove("field_order");
        let back: MediaInfo = serde_json::from_value(cached).unwrap();
        assert_eq!(back.video().unwrap().field_order, FieldOrder::Unknown);
    }

    #[test]
    fn idet_verdicts() {
        let line = |t: u64, b: u64, p: u64| {
            format!(
                "[Parsed_idet_0 @ 0x1] Repeated Fields: Neither: 50\n\
                 [Parsed_idet_0 @ 0x1] Single frame detection: TFF: 1 BFF: 1 Progressive: 1 Undetermined: 1\n\
                 [Parsed_idet_0 @ 0x1] Multi frame detection: TFF: {t:5} BFF: {b:5} Progressive: {p:5} Undetermined: 0\n"
            )
        };
        assert_eq!(scan_from_idet(&line(120, 0, 3)), Some(FieldOrder::Tff));
        assert_eq!(scan_from_idet(&line(2, 118, 0)), Some(FieldOrder::Bff));
        assert_eq!(
            scan_from_idet(&line(0, 0, 125)),
            Some(FieldOrder::Progressive)
        );
        // A few woven-looking frames among many progressive ones are not interlacing,
        assert_eq!(
            scan_from_idet(&line(30, 0, 95)),
            Some(FieldOrder::Progressive)
        );
        // nor is a handful of frames.
        assert_eq!(
            scan_from_idet(&line(3, 0, 0)),
            Some(FieldOrder::Progressive)
        );
        assert_eq!(scan_from_idet("no idet here"), None);
    }
}
