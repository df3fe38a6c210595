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
}

#[derive(Deserialize)]
struct Packet {
    pts_time: Option<String>,
}

/// An ffprobe of `path` through `demuxer` only, with `args` (what to report), under the
/// sandbox's limits.
fn ffprobe(
    tools: &Tools,
    demuxer: &str,
    formats: &str,
    path: &Path,
    args: &[&str],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&tools.ffprobe);
    cmd.args(["-v", "error", "-protocol_whitelist", "file"])
        .args(["-format_whitelist", formats, "-f", demuxer])
        .args(args)
        .arg("-i")
        .arg(file_url(path))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tools.limits.apply(&mut cmd);
    cmd
}

/// An ffprobe's JSON report (`-print_format json` and `args`), parsed.
async fn ffprobe_json<T: serde::de::DeserializeOwned>(
    tools: &Tools,
    demuxer: &str,
    formats: &str,
    path: &Path,
    args: &[&str],
) -> Result<T, SplitError> {
    let args = [&["-print_format", "json"], args].concat();
    let mut cmd = ffprobe(tools, demuxer, formats, path, &args);
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

/// The first video packet of a piece file (its timestamp).
async fn packets(
    tools: &Tools,
    demuxer: &str,
    formats: &str,
    path: &Path,
) -> Result<ProbeOut, SplitError> {
    let args = [
        "-select_streams",
        "v:0",
        "-show_entries",
        "packet=pts_time",
        "-read_intervals",
        "%+#1",
    ];
    ffprobe_json(tools, demuxer, formats, path, &args).await
}

/// Video packets per second of the longest input the policy admits that a split reads the
/// keyframes of. A header may claim any frame rate (an MP4 of one-byte samples at a million
/// per second is a few hundred MB): past this the input is refused as unsplittable rather
/// than held. 120 per second is twice the fastest frame rate any preset keeps.
const MAX_PACKETS_PER_SECOND: f64 = 120.0;

/// Most keyframe times one piece records in the manifest (stored with the job): an
/// intra-only input has a keyframe per picture, and nothing reads past the first.
const MAX_PIECE_KEYFRAMES: usize = 1000;

/// The refusal of a video with more packets than the cap, whichever way they were counted.
fn too_many_packets(max_packets: usize) -> SplitError {
    SplitError::Unsplittable(format!(
        "the video has more than {max_packets} packets ({MAX_PACKETS_PER_SECOND} a second of the longest input allowed)"
    ))
}

/// The keyframes of the first video stream as ffprobe reports them one packet a line
/// (`-print_format csv`: `packet,<pts_time>,<flags>`, then `format,<start_time>`), holding
/// only the keyframes and a count: the whole report of a long or hostile input is never kept.
#[derive(Debug, Default, PartialEq)]
struct KeyScan {
    /// Video packets seen so far (the segment muxer cuts by this count).
    packets: usize,
    /// (packet index, pts) of each keyframe, in demux order.
    keys: Vec<(usize, f64)>,
    start_time: Option<f64>,
}

impl KeyScan {
    /// One line of the report; `Err` once more than `max_packets` packets came.
    fn feed(&mut self, line: &str, max_packets: usize) -> Result<(), SplitError> {
        let mut f = line.trim_end().split(',');
        match f.next() {
            Some("packet") => {
                let (pts, flags) = (f.next(), f.next().unwrap_or(""));
                if flags.contains('K') {
                    if let Some(t) = pts
                        .and_then(|v| v.parse::<f64>().ok())
                        .filter(|t| t.is_finite())
                    {
                        self.keys.push((self.packets, t));
                    }
                }
                self.packets += 1;
                if self.packets > max_packets {
                    return Err(too_many_packets(max_packets));
                }
            }
            Some("format") => {
                self.start_time = f
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|t| t.is_finite());
            }
            _ => {}
        }
        Ok(())
    }
}

/// Scans `path`'s video packets for keyframes ([`KeyScan`]), streaming ffprobe's report, with
/// at most `max_packets` packets, and stopping when `cancel` fires. Its stderr is kept to its
/// first 4 KiB (a corrupt input can make it write without end).
async fn scan_keyframes(
    tools: &Tools,
    demuxer: &str,
    formats: &str,
    path: &Path,
    max_packets: usize,
    cancel: &CancellationToken,
) -> Result<KeyScan, SplitError> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut cmd = ffprobe(
        tools,
        demuxer,
        formats,
        path,
        &[
            "-select_streams",
            "v:0",
            "-print_format",
            "csv",
            "-show_entries",
            "packet=pts_time,flags:format=start_time",
        ],
    );
    let what = path.display().to_string();
    let mut child = cmd.spawn().map_err(io_err(path))?;
    let stderr = child.stderr.take();
    let errors = tokio::spawn(async move {
        let mut kept = Vec::new();
        if let Some(mut e) = stderr {
            let mut buf = [0u8; 4096];
            while let Ok(n) = e.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = 4096usize.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
        String::from_utf8_lossy(&kept).trim().to_string()
    });
    let stdout = child.stdout.take().ok_or_else(|| SplitError::Probe {
        what: what.clone(),
        message: "no output pipe".into(),
    })?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut scan = KeyScan::default();
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l.map_err(io_err(path))?,
            _ = cancel.cancelled() => return Err(SplitError::Run(crate::run::RunError::Cancelled)),
        };
        match line {
            Some(l) => scan.feed(&l, max_packets)?,
            None => break,
        }
    }
    let status = child.wait().await.map_err(io_err(path))?;
    if !status.success() {
        return Err(SplitError::Probe {
            what,
            message: errors.await.unwrap_or_default(),
        });
    }
    Ok(scan)
}

/// The keyframes of an MP4/MOV input read from its sample tables
/// ([`crate::mp4probe::keyframes_file`]) instead of by [`scan_keyframes`], which reads every
/// byte: `None` when the tables are not fully understood (then the scan runs). The format's
/// start time, which ffmpeg takes from every stream's first timestamps, still comes from
/// ffprobe, reading only the header.
async fn moov_keyframes(
    tools: &Tools,
    info: &MediaInfo,
    formats: &str,
    path: &Path,
    max_packets: usize,
) -> Result<Option<KeyScan>, SplitError> {
    if info.demuxer() != "mov" {
        return Ok(None);
    }
    let owned = path.to_path_buf();
    let Ok(Some(table)) =
        tokio::task::spawn_blocking(move || crate::mp4probe::keyframes_file(&owned)).await
    else {
        return Ok(None);
    };
    if table.packets > max_packets {
        return Err(too_many_packets(max_packets));
    }
    tracing::debug!(
        keyframes = table.keys.len(),
        packets = table.packets,
        "keyframes read from the sample tables, no packet scan"
    );
    let start = start_time(tools, info.demuxer(), formats, path).await?;
    Ok(Some(KeyScan {
        packets: table.packets,
        keys: table.keys,
        start_time: start,
    }))
}

/// The format's `start_time` as ffprobe reports it, from the header and the first packets.
async fn start_time(
    tools: &Tools,
    demuxer: &str,
    formats: &str,
    path: &Path,
) -> Result<Option<f64>, SplitError> {
    #[derive(Deserialize)]
    struct Out {
        format: Option<Format>,
    }
    #[derive(Deserialize)]
    struct Format {
        start_time: Option<String>,
    }
    let args = ["-show_entries", "format=start_time"];
    let out: Out = ffprobe_json(tools, demuxer, formats, path, &args).await?;
    Ok(out.format.and_then(|f| num(&f.start_time)))
}

fn num(s: &Option<String>) -> Option<f64> {
    s.as_deref()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// Reads no more of the input than its probed length allows
/// ([`InputPolicy::out_time_limit`], as the unsplit transcode's overrun kill does), instead of
/// the policy's longest duration: the ranges cover the probed length, so a header that
/// understates a 4 h input as 4 s would otherwise put the hours into the last piece (and its
/// encode). Unknown length: the policy's bound stays.
pub(crate) fn bound_to_probed_length(args: &mut [String], info: &MediaInfo, policy: &InputPolicy) {
    let Some(d) = info.best_duration().filter(|d| d.is_finite() && *d > 0.0) else {
        return;
    };
    let limit = policy.out_time_limit(d).min(policy.max_duration_seconds);
    if let Some(i) = args.iter().position(|a| a == "-t") {
        if let Some(v) = args.get_mut(i + 1) {
            *v = format!("{limit:.3}");
        }
    }
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
    let max_packets = (policy.max_duration_seconds.max(1.0) * MAX_PACKETS_PER_SECOND) as usize;
    let scan = match moov_keyframes(tools, info, &formats, input, max_packets).await? {
        Some(scan) => scan,
        None => scan_keyframes(tools, info.demuxer(), &formats, input, max_packets, cancel).await?,
    };
    let origin = scan.start_time.unwrap_or(0.0);
    // Keyframes with their index among the video packets: the segment muxer cuts by packet
    // count, which no timestamp shift or rounding can move.
    let keys: Vec<(usize, f64)> = scan.keys.iter().map(|(i, t)| (*i, t - origin)).collect();
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
    bound_to_probed_length(&mut a, info, policy);
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
        let first = packets(tools, "mpegts", "mpegts", &path).await?;
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
                .take(MAX_PIECE_KEYFRAMES)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_keeps_only_keyframes_with_their_packet_index() {
        let mut scan = KeyScan::default();
        for l in [
            "packet,0.000000,K_",
            "packet,0.160000,__",
            "packet,0.080000,__",
            "packet,2.000000,K_",
            "packet,N/A,K_",
            "format,1.400000",
        ] {
            scan.feed(l, 10).unwrap();
        }
        assert_eq!(scan.packets, 5);
        assert_eq!(scan.keys, vec![(0, 0.0), (3, 2.0)]);
        assert_eq!(scan.start_time, Some(1.4));
    }

    /// A header claiming a million pictures a second: refused at the cap, never held.
    #[test]
    fn a_scan_refuses_more_packets_than_the_cap() {
        let mut scan = KeyScan::default();
        for _ in 0..3 {
            scan.feed("packet,0.1,K_", 3).unwrap();
        }
        assert!(matches!(
            scan.feed("packet,0.2,K_", 3),
            Err(SplitError::Unsplittable(_))
        ));
        assert_eq!(scan.keys.len(), 4);
    }

    #[test]
    fn the_cut_reads_no_more_than_the_probed_length_allows() {
        let policy = InputPolicy::default();
        let mut info = MediaInfo {
            format_name: "matroska,webm".into(),
            duration: Some(4.0),
            bit_rate: None,
            streams: vec![],
        };
        let mut a: Vec<String> = ["-t", "14400.000", "-i", "x"].map(String::from).to_vec();
        bound_to_probed_length(&mut a, &info, &policy);
        assert_eq!(a[1], format!("{:.3}", policy.out_time_limit(4.0)));
        // Unknown length: the policy's bound stays.
        info.duration = None;
        let mut b: Vec<String> = ["-t", "14400.000", "-i", "x"].map(String::from).to_vec();
        bound_to_probed_length(&mut b, &info, &policy);
        assert_eq!(b[1], "14400.000");
    }
}
