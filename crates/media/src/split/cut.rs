//! The `split` task: the input's video cut at keyframes into MPEG-TS pieces by stream copy
//! (nothing re-encoded, input timestamps kept), plus the [`Manifest`] the other tasks read.
//!
//! Each piece starts at the last keyframe at or before a range start, so the encode of a range
//! decodes from its piece's first picture. Only video is cut: the audio is encoded once from
//! the original input (`encode_audio`), so no piece joint can click or gap in the sound.

use super::plan::{cut_points, Range};
use super::{io_err, SplitError};
use crate::policy::InputPolicy;
use crate::probe::MediaInfo;
use crate::run::{run_ffmpeg, RunLimits};
use crate::sandbox::Tools;
use crate::{file_url, CancellationToken, Progress};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Stdio;

/// One piece file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Piece {
    /// File name inside the pieces directory (`piece_00003.ts`).
    pub file: String,
    /// Timeline time of its first picture (a keyframe).
    pub start: f64,
    /// Timeline times of its keyframes, the first included.
    pub keyframes: Vec<f64>,
    /// The file's size, recorded by the `split` task once the file is written, so that a load
    /// reading can price a piece's move without asking storage; `None` in manifests written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// What `split` produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The input's `start_time`: timeline 0 in the input's own timestamps.
    pub origin: f64,
    /// A piece file's timestamp minus the timeline time of the same picture (the TS muxer's
    /// shift plus the origin), identical for every piece: checked, not assumed.
    pub file_offset: f64,
    /// Nominal frame rate of the video, for frame-exact trims (half a frame of slack).
    pub frame_rate: f64,
    pub pieces: Vec<Piece>,
}

impl Manifest {
    pub fn piece_starts(&self) -> Vec<f64> {
        self.pieces.iter().map(|p| p.start).collect()
    }
}

#[derive(Deserialize)]
struct ProbeOut {
    #[serde(default)]
    packets: Vec<Packet>,
    format: Option<Format>,
}

#[derive(Deserialize)]
struct Packet {
    pts_time: Option<String>,
    flags: Option<String>,
}

#[derive(Deserialize)]
struct Format {
    start_time: Option<String>,
}

/// ffprobe's packet list for the first video stream (and the format's start), in demux order.
async fn packets(
    tools: &Tools,
    demuxer: &str,
    formats: &str,
    path: &Path,
    first_only: bool,
) -> Result<ProbeOut, SplitError> {
    let mut cmd = tokio::process::Command::new(&tools.ffprobe);
    cmd.args(["-v", "error", "-protocol_whitelist", "file"])
        .args(["-format_whitelist", formats, "-f", demuxer])
        .args(["-select_streams", "v:0", "-print_format", "json"])
        .args(["-show_entries", "packet=pts_time,flags:format=start_time"]);
    if first_only {
        cmd.args(["-read_intervals", "%+#1"]);
    }
    cmd.arg("-i")
        .arg(file_url(path))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tools.limits.apply(&mut cmd);
    let what = path.display().to_string();
    let out = cmd.output().await.map_err(io_err(path))?;
    if !out.status.success() {
        return Err(SplitError::Probe {
            what,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| SplitError::Probe {
        what,
        message: e.to_string(),
    })
}

fn num(s: &Option<String>) -> Option<f64> {
    s.as_deref()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// Cuts `input` into pieces in `pieces_dir` at the keyframes that serve `ranges` (from
/// [`super::plan::plan`]). Pure stream copy: fast (I/O bound), and deterministic.
#[allow(clippy::too_many_arguments)]
pub async fn split(
    tools: &Tools,
    policy: &InputPolicy,
    info: &MediaInfo,
    input: &Path,
    ranges: &[Range],
    pieces_dir: &Path,
    limits: RunLimits,
    cancel: &CancellationToken,
    on_progress: impl FnMut(Progress),
) -> Result<Manifest, SplitError> {
    let formats = policy.allowed_formats.join(",");
    let probed = packets(tools, info.demuxer(), &formats, input, false).await?;
    let origin = probed
        .format
        .as_ref()
        .and_then(|f| num(&f.start_time))
        .unwrap_or(0.0);
    // Keyframes with their index among the video packets: the segment muxer cuts by packet
    // count, which no timestamp shift or rounding can move.
    let mut keys: Vec<(usize, f64)> = vec![];
    for (i, p) in probed.packets.iter().enumerate() {
        if p.flags.as_deref().is_some_and(|f| f.contains('K')) {
            if let Some(t) = num(&p.pts_time) {
                keys.push((i, t - origin));
            }
        }
    }
    if keys.is_empty() {
        return Err(SplitError::Unsplittable(
            "the video stream has no keyframes".into(),
        ));
    }
    let key_times: Vec<f64> = keys.iter().map(|k| k.1).collect();
    let cuts = cut_points(&key_times, ranges);
    let cut_index: Vec<usize> = cuts
        .iter()
        .filter_map(|c| keys.iter().find(|k| (k.1 - c).abs() < 1e-6).map(|k| k.0))
        .collect();
    std::fs::create_dir_all(pieces_dir).map_err(io_err(pieces_dir))?;
    let video = info
        .video()
        .ok_or_else(|| SplitError::Unsplittable("no video stream".into()))?;
    let mut a = crate::argv::input_args(info, policy, input, 0.0);
    a.insert(0, "-copyts".into());
    a.extend(
        [
            "-map",
            &format!("0:{}", video.index),
            "-c",
            "copy",
            "-map_metadata",
            "-1",
            "-f",
            "segment",
            "-segment_format",
            "mpegts",
            // Lets the pieces be concatenated byte for byte: a reader takes the restarted
            // continuity counters of the next piece as intended, not as lost packets.
            "-segment_format_options",
            "mpegts_flags=+initial_discontinuity",
        ]
        .map(String::from),
    );
    if cut_index.len() > 1 {
        a.extend([
            "-segment_frames".into(),
            cut_index[1..]
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ]);
    } else {
        a.extend(["-segment_time".into(), "1e9".into()]);
    }
    a.extend(
        ["-progress", "pipe:1", "-nostats"]
            .map(String::from)
            .into_iter()
            .chain([pieces_dir.join("piece_%05d.ts").display().to_string()]),
    );
    run_ffmpeg(tools, &a, pieces_dir, limits, cancel, on_progress).await?;

    let mut pieces = vec![];
    let mut file_offset = None;
    for (n, start) in cuts.iter().enumerate() {
        let file = format!("piece_{n:05}.ts");
        let path = pieces_dir.join(&file);
        // Its size goes into the manifest: a thief's transfer is priced from it (the load
        // report's offers), without a storage HEAD per piece file on every poll.
        let Ok(meta) = tokio::fs::metadata(&path).await else {
            return Err(SplitError::Unsplittable(format!(
                "the cut made no {file} (keyframe at {start:.3} s)"
            )));
        };
        let first = packets(tools, "mpegts", "mpegts", &path, true).await?;
        let pts = first
            .packets
            .first()
            .and_then(|p| num(&p.pts_time))
            .ok_or_else(|| SplitError::Unsplittable(format!("{file} has no timestamps")))?;
        let off = pts - start;
        match file_offset {
            None => file_offset = Some(off),
            Some(o) if (o - off).abs() > 0.002 => {
                return Err(SplitError::Unsplittable(format!(
                    "{file} is shifted by {off:.3} s, the first piece by {o:.3} s"
                )))
            }
            Some(_) => {}
        }
        let end = cuts.get(n + 1).copied().unwrap_or(f64::INFINITY);
        pieces.push(Piece {
            file,
            start: *start,
            keyframes: key_times
                .iter()
                .copied()
                .filter(|k| *k >= start - 1e-6 && *k < end - 1e-6)
                .collect(),
            bytes: Some(meta.len()),
        });
    }
    Ok(Manifest {
        origin,
        file_offset: file_offset.unwrap_or(0.0),
        frame_rate: video.frame_rate.filter(|r| *r > 0.0).unwrap_or(25.0),
        pieces,
    })
}
