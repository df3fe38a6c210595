//! The `encode_segment` task (one range of the input to every split video output) and the
//! `encode_audio` task (the whole audio track once per distinct audio plan).
//!
//! A range is decoded from the pieces that cover it, including the next piece's first GOP (the
//! leading pictures of an open GOP are decoded after their keyframe), trimmed frame-exactly to
//! `[start, end)` on the timeline, and written at [`BASE`] + its timeline time. HLS rungs get a
//! keyframe at every multiple of the segment duration counted from the input's start, exactly
//! like the unsplit encode, and their segments are written directly with global numbers.

use super::cut::Manifest;
use super::plan::{pieces_for, preroll_of, ts_ladder, SplitLayout};
use super::playlist::{avc1_codec, parse_segments, Segment};
use super::{io_err, SplitError, BASE};
use crate::argv::{
    deinterlace_filter, fit_short_side, input_args, ladder, rung_rate_control, video_codec_args,
};
use crate::plan::{AudioCodec, Rendition, VideoCodec};
use crate::policy::InputPolicy;
use crate::probe::MediaInfo;
use crate::quality::EncoderQuality;
use crate::run::{run_ffmpeg, RunLimits};
use crate::sandbox::Tools;
use crate::{file_url, CancellationToken, Invocation, Progress};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Payload of one `encode_segment` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentTask {
    pub index: usize,
    pub start: f64,
    pub end: f64,
    /// The last range runs to the end of the video, whatever the probed duration said.
    pub last: bool,
    /// Piece files to read, in order (from [`Manifest::pieces`]).
    pub pieces: Vec<String>,
    pub file_offset: f64,
    pub frame_rate: f64,
}

/// The `encode_segment` tasks of a split job, earliest first (the start of the video is
/// ready first when they are claimed in this order).
pub fn segment_tasks(layout: &SplitLayout, manifest: &Manifest) -> Vec<SegmentTask> {
    let starts = manifest.piece_starts();
    let n = layout.ranges.len();
    layout
        .ranges
        .iter()
        .map(|r| SegmentTask {
            index: r.index,
            start: r.start,
            end: r.end,
            last: r.index + 1 == n,
            pieces: pieces_for(&starts, r.start - preroll_of(r), r.end)
                .filter_map(|i| manifest.pieces.get(i).map(|p| p.file.clone()))
                .collect(),
            file_offset: manifest.file_offset,
            frame_rate: manifest.frame_rate,
        })
        .collect()
}

/// One HLS rung's share of a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HlsPiece {
    pub rendition: String,
    pub rung: usize,
    /// Segments, URIs relative to the rung's directory (`<rendition>/v<rung>/`).
    pub segments: Vec<Segment>,
    /// RFC 6381 video codec, for the master playlist.
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// What the encoder measured on this rung's range (quality receipts on, libx264).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<EncoderQuality>,
}

/// Result of one `encode_segment` task; paths relative to the task's output directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentOutput {
    pub index: usize,
    /// (rendition name, path of its encoded piece, `<name>/piece_00003.ts`).
    pub files: Vec<(String, String)>,
    pub hls: Vec<HlsPiece>,
    /// (rendition name, what its encoder measured on this range) for the H.264 file outputs,
    /// when quality receipts are on; the stitch [`crate::quality::combine`]s the ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_quality: Vec<(String, EncoderQuality)>,
}

/// Which rendition each libx264 stream of a range's encode belongs to, in output-stream order
/// (the order x264's summaries come in): `(rendition, Some(rung))` per ladder rung,
/// `(rendition, None)` per H.264 file output.
pub fn x264_streams(renditions: &[Rendition], display_short: u32) -> Vec<(String, Option<usize>)> {
    let mut v = vec![];
    for r in renditions {
        if let Some(hls) = ts_ladder(r) {
            for k in 0..ladder(&hls.rungs, display_short).len() {
                v.push((r.name.clone(), Some(k)));
            }
        } else if r
            .video
            .as_ref()
            .is_some_and(|v| v.codec == VideoCodec::H264)
        {
            v.push((r.name.clone(), None));
        }
    }
    v
}

fn s<T: ToString>(x: T) -> String {
    x.to_string()
}

/// Keyframes at every multiple of `seg` seconds of the range's time, which is the timeline time
/// minus a multiple of `seg`: the same pictures as the unsplit encode's `gte(t,n_forced*seg)`.
/// With a pre-roll (whole pictures) the range starts `preroll` seconds into the encode: half a
/// frame of slack, so the range's first picture is the one forced whatever the rounding of its
/// timestamp to ffmpeg's frame grid.
fn hls_keyframes(seg: u32, preroll: f64, frame_rate: f64) -> [String; 4] {
    let expr = if preroll > 0.0 {
        let at = preroll - 0.5 / frame_rate.max(1.0);
        format!("expr:gte(t,{at:.6}+n_forced*{seg})")
    } else {
        format!("expr:gte(t,n_forced*{seg})")
    };
    [s("-force_key_frames"), expr, s("-sc_threshold"), s(0)]
}

/// The pre-roll of a task's range: [`super::plan::preroll`] rounded down to whole pictures, so
/// the range's first picture lies a whole number of frame intervals into the encode, where the
/// keyframe expression (on ffmpeg's frame grid) finds it half a frame from its neighbours.
pub fn preroll(task: &SegmentTask) -> f64 {
    let fps = task.frame_rate.max(1.0);
    let frames = (super::plan::preroll(task.index, task.start) * fps).floor();
    frames / fps
}

/// Drops the pre-roll's packets after the encoder, before the muxer: everything before the
/// second keyframe (the first is the pre-roll's own first picture, the second the keyframe
/// forced at the range start; a range's pre-roll has no other, since scene-cut keyframes are
/// off). Counted with the expression's own register (`st`/`ld`, kept between packets), not by
/// timestamp: ffmpeg 5.1 hands the filter packets in another time base than its `tb`.
const DROP_PREROLL: &str = "noise=drop=lt(st(0\\,ld(0)+key)\\,2)";

/// The initial VBV occupancy (`-rc_init_occupancy`, bits) of a capped encode after its pre-roll:
/// 70 % of the buffer instead of the 90 % x264 starts a stream with; a capped encode that hits
/// its cap runs with less. Measured at 4 s ranges with the pre-roll, split vs unsplit rung
/// size: 90 % (x264's default) -1.0 % on light noise, +4.3 % on heavy noise; 50 % -4.1 % and
/// -0.3 %, and -7.9 % through the service on the split test's clip; 70 % -2.3 % and +2.6 %.
fn initial_buffer_bits(bufsize_kbps: u32) -> String {
    (u64::from(bufsize_kbps) * 1000 * 7 / 10).to_string()
}

/// Timestamps of every output: `BASE` + timeline. The MPEG-TS muxer adds twice its
/// `-muxdelay` to every timestamp, so the offset takes that back out. Video gives each frame
/// its own PES packet whatever the delay (0 is used); audio needs a delay, because the muxer
/// packs audio frames into one PES only while they span less than half of it, and at 0 every
/// AAC frame of ~200 bytes would take two 188-byte TS packets (audio HLS segments 25 % larger).
fn placed(start: f64, mux_delay: f64) -> [String; 6] {
    [
        s("-output_ts_offset"),
        format!("{:.6}", BASE + start - 2.0 * mux_delay),
        s("-muxdelay"),
        format!("{mux_delay}"),
        s("-muxpreload"),
        s(0),
    ]
}

/// ffmpeg's default `-muxdelay`, for audio (see [`placed`]).
const AUDIO_MUX_DELAY: f64 = 0.7;

/// The ffmpeg command for one range (pure). `src` is the concatenation of the task's pieces.
pub fn segment_argv(
    renditions: &[Rendition],
    info: &MediaInfo,
    policy: &InputPolicy,
    task: &SegmentTask,
    src: &Path,
    out_dir: &Path,
) -> Result<Invocation, SplitError> {
    let (dw, dh) = info
        .display_dims()
        .ok_or_else(|| SplitError::Unsplittable("the video has no dimensions".into()))?;
    let mut a: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-y",
        "-loglevel",
        "error",
        "-progress",
        "pipe:1",
        "-nostats",
        "-protocol_whitelist",
        "file,pipe",
        "-format_whitelist",
        "mpegts",
        "-f",
        "mpegts",
    ]
    .map(String::from)
    .to_vec();
    a.extend([s("-max_pixels"), s(policy.max_pixels()), s("-copyts")]);
    a.extend([s("-i"), file_url(src)]);

    // A quarter frame of slack on both ends, the same at every joint, so each picture lands in
    // exactly one range whatever the rounding of the timestamps.
    let slack = 0.25 / task.frame_rate.max(1.0);
    let pre = preroll(task);
    let from = task.start + task.file_offset - pre;
    let mut trim = format!("trim=start={:.6}", from - slack);
    if !task.last {
        trim.push_str(&format!(":end={:.6}", task.end + task.file_offset - slack));
    }
    let deint = deinterlace_filter(info, None)
        .map(|f| format!("{f},"))
        .unwrap_or_default();

    // The scaled size of every picture stream, in the order the outputs map them.
    struct Out {
        w: u32,
        h: u32,
        /// A file output: its picture stream starts at the range, without the pre-roll.
        file: bool,
    }
    let mut outs: Vec<Out> = vec![];
    for r in renditions {
        if let Some(hls) = ts_ladder(r) {
            for rung in ladder(&hls.rungs, dw.min(dh)) {
                let (w, h) = fit_short_side(dw, dh, rung.short_side);
                outs.push(Out { w, h, file: false });
            }
        } else if let Some(v) = &r.video {
            let (w, h) = match v.short_side.filter(|s| *s > 0) {
                Some(short) => fit_short_side(dw, dh, short),
                None => crate::argv::fit_dims(dw, dh, v.max_width, v.max_height.filter(|h| *h > 0)),
            };
            outs.push(Out { w, h, file: true });
        }
    }
    if outs.is_empty() {
        return Err(SplitError::Unsplittable("no video output to encode".into()));
    }
    let mut graph = format!(
        "[0:v:0]{deint}{trim},setpts=PTS-{from:.6}/TB,split={}",
        outs.len()
    );
    for i in 0..outs.len() {
        graph.push_str(&format!("[s{i}]"));
    }
    for (i, o) in outs.iter().enumerate() {
        // File outputs get no pre-roll: their encoder (scene cuts on, no keyframe forced at
        // the range start) gives no packet to drop it up to, and capped CRF files already
        // matched their unsplit encode without one. Their pictures are trimmed back to the
        // range and re-timed from its start.
        let cut = if o.file && pre > 0.0 {
            format!("trim=start={:.6},setpts=PTS-{pre:.6}/TB,", pre - slack)
        } else {
            String::new()
        };
        graph.push_str(&format!(";[s{i}]{cut}scale={}:{},setsar=1[o{i}]", o.w, o.h));
    }
    a.extend([s("-filter_complex"), graph]);

    let mut i = 0;
    for r in renditions {
        if let Some(hls) = ts_ladder(r) {
            let rungs = ladder(&hls.rungs, dw.min(dh));
            for _ in &rungs {
                a.extend([s("-map"), format!("[o{i}]")]);
                i += 1;
            }
            a.extend(
                ["-c:v", "libx264", "-preset", "fast", "-pix_fmt", "yuv420p"].map(String::from),
            );
            for (k, rung) in rungs.iter().enumerate() {
                // The rate control of the unsplit ladder, written once (`argv::ladder`).
                let rc = rung_rate_control(rung);
                a.extend(rc.args(k));
                if pre > 0.0 {
                    a.extend([
                        format!("-rc_init_occupancy:v:{k}"),
                        initial_buffer_bits(rc.bufsize_kbps),
                    ]);
                }
            }
            let seg = hls.segment_seconds.max(1);
            let first_number = (task.start / seg as f64).round() as u64;
            a.extend(hls_keyframes(seg, pre, task.frame_rate));
            if pre > 0.0 {
                a.extend([s("-bsf:v"), s(DROP_PREROLL)]);
            }
            a.extend(placed(task.start - pre, 0.0));
            a.extend([
                s("-map_metadata"),
                s(-1),
                s("-f"),
                s("hls"),
                s("-hls_time"),
                s(seg),
                s("-hls_playlist_type"),
                s("vod"),
                s("-hls_flags"),
                s("independent_segments"),
                s("-hls_segment_type"),
                s("mpegts"),
                s("-start_number"),
                s(first_number),
                s("-hls_segment_filename"),
                out_dir
                    .join(&r.name)
                    .join("v%v/seg_%05d.ts")
                    .display()
                    .to_string(),
                s("-var_stream_map"),
                (0..rungs.len())
                    .map(|k| format!("v:{k}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                out_dir
                    .join(&r.name)
                    .join(format!("v%v/piece_{:05}.m3u8", task.index))
                    .display()
                    .to_string(),
            ]);
        } else if let Some(v) = &r.video {
            a.extend([s("-map"), format!("[o{i}]")]);
            i += 1;
            video_codec_args(v, &mut a);
            a.extend(placed(task.start, 0.0));
            a.extend([
                s("-map_metadata"),
                s(-1),
                s("-f"),
                s("mpegts"),
                out_dir
                    .join(piece_path(r, task.index))
                    .display()
                    .to_string(),
            ]);
        }
    }
    Ok(Invocation {
        args: a,
        duration: task.end - task.start,
        creates: String::new(),
    })
}

/// The pictures a rung kept of its encode: its segments' video packets, counted. The encoder
/// also counted the pre-roll's, which were dropped after it, so its receipt's frame count (the
/// weight `quality::combine` gives the range) is replaced by this one; its means include the
/// pre-roll (half a second of the range before). `None` (no receipt for this rung: a wrong
/// weight is worse than none) when ffprobe cannot count them.
async fn kept_frames(tools: &Tools, dir: &Path, segments: &[Segment]) -> Option<u64> {
    let mut n = 0;
    for seg in segments {
        let mut cmd = tokio::process::Command::new(&tools.ffprobe);
        cmd.args(["-v", "error", "-protocol_whitelist", "file"])
            .args(["-format_whitelist", "mpegts", "-f", "mpegts"])
            .args(["-select_streams", "v:0", "-count_packets"])
            .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
            .arg(file_url(&within(dir, &seg.uri).ok()?))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        tools.limits.apply(&mut cmd);
        let out = cmd.output().await.ok()?;
        if !out.status.success() {
            return None;
        }
        // The stream's count (ffprobe prints it again under the TS program).
        n += String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().trim_end_matches(','))
            .find(|l| !l.is_empty())?
            .parse::<u64>()
            .ok()?;
    }
    Some(n)
}

fn piece_path(r: &Rendition, index: usize) -> String {
    format!("{}/piece_{index:05}.ts", r.name)
}

/// Concatenates piece files byte for byte (MPEG-TS allows it; the pieces were written with a
/// discontinuity mark on their first packets, so the reader does not flag the joint corrupt).
fn concat_pieces(pieces_dir: &Path, pieces: &[String], dest: &Path) -> Result<(), SplitError> {
    let mut out = std::fs::File::create(dest).map_err(io_err(dest))?;
    for p in pieces {
        let path = pieces_dir.join(p);
        let mut f = std::fs::File::open(&path)
            .map_err(|_| SplitError::Missing(format!("piece {}", path.display())))?;
        std::io::copy(&mut f, &mut out).map_err(io_err(&path))?;
    }
    out.flush().map_err(io_err(dest))
}

/// Encodes one range to every split video output of the job (`renditions`: those
/// [`super::plan::SplitLayout::split`] names). Pieces are read from `pieces_dir`; outputs go to
/// `out_dir` under each rendition's name.
#[allow(clippy::too_many_arguments)]
pub async fn encode_segment(
    tools: &Tools,
    policy: &InputPolicy,
    info: &MediaInfo,
    renditions: &[Rendition],
    task: &SegmentTask,
    pieces_dir: &Path,
    out_dir: &Path,
    limits: RunLimits,
    cancel: &CancellationToken,
    measure_quality: bool,
    on_progress: impl FnMut(Progress),
) -> Result<SegmentOutput, SplitError> {
    let src = out_dir.join(format!(".source_{:05}.ts", task.index));
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    concat_pieces(pieces_dir, &task.pieces, &src)?;
    let (dw, dh) = info.display_dims().unwrap_or((0, 0));
    for r in renditions {
        let dir = out_dir.join(&r.name);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        if let Some(hls) = ts_ladder(r) {
            for k in 0..ladder(&hls.rungs, dw.min(dh)).len() {
                let d = dir.join(format!("v{k}"));
                std::fs::create_dir_all(&d).map_err(io_err(&d))?;
            }
        }
    }
    let mut inv = segment_argv(renditions, info, policy, task, &src, out_dir)?;
    let measuring = measure_quality && crate::quality::request_x264_stats(&mut inv.args);
    let run = run_ffmpeg(tools, &inv.args, out_dir, limits, cancel, on_progress).await;
    let _ = std::fs::remove_file(&src);
    let stats = run?;
    // Each libx264 stream's summary, matched to its rendition (and rung) by order; none at all
    // when the count differs from the streams (a guess could swap two receipts).
    let streams = x264_streams(renditions, dw.min(dh));
    let measured = crate::quality::parse_x264_stats(&stats.encoder_summaries);
    let pre = preroll(task);
    let quality: Vec<((String, Option<usize>), EncoderQuality)> =
        if measuring && measured.len() == streams.len() {
            streams.into_iter().zip(measured).collect()
        } else {
            vec![]
        };
    let quality_of = |name: &str, rung: Option<usize>| {
        quality
            .iter()
            .find(|((n, k), _)| n == name && *k == rung)
            .map(|(_, q)| *q)
    };

    let mut out = SegmentOutput {
        index: task.index,
        files: vec![],
        hls: vec![],
        file_quality: vec![],
    };
    for r in renditions {
        if let Some(hls) = ts_ladder(r) {
            for (k, rung) in ladder(&hls.rungs, dw.min(dh)).iter().enumerate() {
                let dir = out_dir.join(&r.name).join(format!("v{k}"));
                let pl = dir.join(format!("piece_{:05}.m3u8", task.index));
                let text = std::fs::read_to_string(&pl).map_err(io_err(&pl))?;
                let _ = std::fs::remove_file(&pl);
                let segments = parse_segments(&text)
                    .into_iter()
                    .map(|s| Segment {
                        uri: Path::new(&s.uri)
                            .file_name()
                            .map(|f| f.to_string_lossy().into_owned())
                            .unwrap_or(s.uri),
                        duration: s.duration,
                    })
                    .collect::<Vec<_>>();
                let first = segments.first().ok_or_else(|| {
                    SplitError::Unsplittable(format!(
                        "range {} gave {} rung {k} no segment",
                        task.index, r.name
                    ))
                })?;
                // The pre-roll is dropped up to the keyframe forced at the range start; a
                // range whose pre-roll held no picture (a hole in the input) would lose its
                // first segment instead: refused, never stitched with a hole.
                let seg = hls.segment_seconds.max(1);
                let want = format!("seg_{:05}.ts", (task.start / seg as f64).round() as u64);
                if first.uri != want {
                    return Err(SplitError::Unsplittable(format!(
                        "range {} of {} rung {k} starts with {} instead of {want}",
                        task.index, r.name, first.uri
                    )));
                }
                let bytes = std::fs::read(dir.join(&first.uri)).map_err(io_err(&dir))?;
                let (w, h) = fit_short_side(dw, dh, rung.short_side);
                let quality = match (quality_of(&r.name, Some(k)), pre > 0.0) {
                    (Some(q), true) => kept_frames(tools, &dir, &segments)
                        .await
                        .map(|frames| EncoderQuality { frames, ..q }),
                    (q, _) => q,
                };
                out.hls.push(HlsPiece {
                    rendition: r.name.clone(),
                    rung: k,
                    codec: avc1_codec(&bytes).unwrap_or_else(|| "avc1.640028".into()),
                    segments,
                    width: w,
                    height: h,
                    quality,
                });
            }
        } else if r.video.is_some() {
            let p = piece_path(r, task.index);
            if !out_dir.join(&p).exists() {
                return Err(SplitError::Missing(p));
            }
            out.files.push((r.name.clone(), p));
            if let Some(q) = quality_of(&r.name, None) {
                out.file_quality.push((r.name.clone(), q));
            }
        }
    }
    Ok(out)
}

/// Payload of one `encode_audio` task: one distinct audio plan of the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioTask {
    pub kbps: u32,
    /// Also cut into HLS segments of this length (for HLS rungs with this plan).
    pub hls_segment_seconds: Option<u32>,
}

impl AudioTask {
    /// Directory (relative) of this plan's files: `audio/aac_128`.
    pub fn dir(&self) -> String {
        format!("audio/aac_{}", self.kbps)
    }
    /// The group id of its HLS audio rendition.
    pub fn group(&self) -> String {
        format!("a{}", self.kbps)
    }
}

/// The audio plan of one split output (and, for HLS, one per rung), AAC only (others stay whole).
fn audio_plans(r: &Rendition, info: &MediaInfo) -> Vec<(u32, Option<u32>)> {
    if let Some(hls) = ts_ladder(r) {
        let short = info.display_dims().map(|(w, h)| w.min(h)).unwrap_or(0);
        return ladder(&hls.rungs, short)
            .iter()
            .map(|rung| (rung.audio_kbps, Some(hls.segment_seconds)))
            .collect();
    }
    match &r.audio {
        Some(a) if a.codec == AudioCodec::Aac => vec![(a.bitrate_kbps, None)],
        _ => vec![],
    }
}

/// The `encode_audio` tasks: one per distinct AAC bitrate among the split outputs (none if the
/// input has no audio).
pub fn audio_tasks(renditions: &[Rendition], info: &MediaInfo) -> Vec<AudioTask> {
    if info.audio().is_none() {
        return vec![];
    }
    let mut tasks: Vec<AudioTask> = vec![];
    for (kbps, hls) in renditions.iter().flat_map(|r| audio_plans(r, info)) {
        match tasks.iter_mut().find(|t| t.kbps == kbps) {
            Some(t) => t.hls_segment_seconds = t.hls_segment_seconds.or(hls),
            None => tasks.push(AudioTask {
                kbps,
                hls_segment_seconds: hls,
            }),
        }
    }
    tasks
}

/// The audio plan of a file output, as the [`AudioTask`] that made its track.
pub fn audio_task_for(r: &Rendition, tasks: &[AudioTask]) -> Option<AudioTask> {
    let kbps = match &r.audio {
        Some(a) if a.codec == AudioCodec::Aac && r.container().is_some() => a.bitrate_kbps,
        _ => return None,
    };
    tasks.iter().find(|t| t.kbps == kbps).cloned()
}

/// Result of an `encode_audio` task; paths relative to its output directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioOutput {
    pub kbps: u32,
    /// The whole track, AAC in MP4 (`audio/aac_128/audio.m4a`), timeline 0 at its start.
    pub track: String,
    /// HLS segments, URIs relative to `hls_dir`.
    pub hls_dir: Option<String>,
    pub hls: Vec<Segment>,
}

/// Encodes the whole audio track once (no joints, so no priming gap or click anywhere), and
/// cuts it into HLS segments by stream copy when HLS rungs use it.
#[allow(clippy::too_many_arguments)]
pub async fn encode_audio(
    tools: &Tools,
    policy: &InputPolicy,
    info: &MediaInfo,
    input: &Path,
    task: &AudioTask,
    out_dir: &Path,
    limits: RunLimits,
    cancel: &CancellationToken,
    mut on_progress: impl FnMut(Progress),
) -> Result<AudioOutput, SplitError> {
    let au = info
        .audio()
        .ok_or_else(|| SplitError::Unsplittable("the input has no audio".into()))?;
    let dir_rel = task.dir();
    let dir = out_dir.join(&dir_rel);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let track_rel = format!("{dir_rel}/audio.m4a");
    let mut a = input_args(info, policy, input, 0.0);
    // The video's ranges end at the probed length: so does the audio (a header understating
    // the length must not make this one task encode hours).
    super::cut::bound_to_probed_length(&mut a, info, policy);
    a.extend([
        s("-map"),
        format!("0:{}", au.index),
        s("-vn"),
        s("-c:a"),
        s("aac"),
        s("-b:a"),
        format!("{}k", task.kbps),
        s("-map_metadata"),
        s(-1),
        s("-f"),
        s("mp4"),
        s("-progress"),
        s("pipe:1"),
        s("-nostats"),
        out_dir.join(&track_rel).display().to_string(),
    ]);
    run_ffmpeg(tools, &a, out_dir, limits, cancel, &mut on_progress).await?;
    let mut out = AudioOutput {
        kbps: task.kbps,
        track: track_rel.clone(),
        hls_dir: None,
        hls: vec![],
    };
    if let Some(seg) = task.hls_segment_seconds {
        let hls_rel = format!("{dir_rel}/hls");
        let hls_dir = out_dir.join(&hls_rel);
        std::fs::create_dir_all(&hls_dir).map_err(io_err(&hls_dir))?;
        let pl = hls_dir.join("index.m3u8");
        let mut c: Vec<String> = [
            "-hide_banner",
            "-nostdin",
            "-y",
            "-loglevel",
            "error",
            "-protocol_whitelist",
            "file,pipe",
            "-format_whitelist",
            "mov",
            "-f",
            "mov",
            "-copyts",
            "-i",
        ]
        .map(String::from)
        .to_vec();
        c.push(file_url(&out_dir.join(&track_rel)));
        c.extend(["-map", "0:a:0", "-c", "copy"].map(String::from));
        c.extend(placed(0.0, AUDIO_MUX_DELAY));
        c.extend([
            s("-f"),
            s("hls"),
            s("-hls_time"),
            s(seg),
            s("-hls_playlist_type"),
            s("vod"),
            s("-hls_segment_type"),
            s("mpegts"),
            s("-hls_segment_filename"),
            hls_dir.join("seg_%05d.ts").display().to_string(),
            s("-progress"),
            s("pipe:1"),
            s("-nostats"),
            pl.display().to_string(),
        ]);
        run_ffmpeg(tools, &c, out_dir, limits, cancel, on_progress).await?;
        let text = std::fs::read_to_string(&pl).map_err(io_err(&pl))?;
        out.hls = parse_segments(&text)
            .into_iter()
            .map(|s| Segment {
                uri: Path::new(&s.uri)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or(s.uri),
                duration: s.duration,
            })
            .collect();
        out.hls_dir = Some(hls_rel);
    }
    Ok(out)
}

/// Where a relative output path lies, refusing `..` and absolute paths (payloads are data).
pub(crate) fn within(dir: &Path, rel: &str) -> Result<PathBuf, SplitError> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(SplitError::Missing(format!(
            "{rel:?} is not a relative path"
        )));
    }
    Ok(dir.join(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::preset;
    use crate::probe::parse_probe_json;
    use crate::split::cut::Piece;
    use crate::split::plan::Range;

    fn info() -> MediaInfo {
        parse_probe_json(
            r#"{"streams":[{"index":0,"codec_type":"video","codec_name":"h264","width":1280,"height":720,"avg_frame_rate":"25/1"},
               {"index":1,"codec_type":"audio","codec_name":"aac","channels":2,"sample_rate":"48000"}],
               "format":{"format_name":"mov,mp4,m4a","duration":"70.0"}}"#,
        )
        .unwrap()
    }

    fn after<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.iter()
            .enumerate()
            .filter(|(_, x)| *x == flag)
            .map(|(i, _)| a[i + 1].as_str())
            .collect()
    }

    #[test]
    fn tasks_read_their_pieces_plus_the_next_and_only_the_last_runs_to_the_end() {
        let layout = SplitLayout {
            segment_seconds: 32,
            ranges: vec![
                Range {
                    index: 0,
                    start: 0.0,
                    end: 32.0,
                },
                Range {
                    index: 1,
                    start: 32.0,
                    end: 70.0,
                },
            ],
            split: vec!["hls-abr".into()],
            whole: vec![],
        };
        let piece = |n: usize, start: f64| Piece {
            file: format!("piece_{n:05}.ts"),
            start,
            keyframes: vec![start],
            bytes: None,
        };
        let manifest = Manifest {
            origin: 0.0,
            file_offset: 1.4,
            frame_rate: 25.0,
            pieces: vec![piece(0, 0.0), piece(1, 30.0)],
        };
        let t = segment_tasks(&layout, &manifest);
        assert_eq!(t[0].pieces, vec!["piece_00000.ts", "piece_00001.ts"]);
        assert_eq!(t[1].pieces, vec!["piece_00001.ts"]);
        assert_eq!((t[0].last, t[1].last), (false, true));
    }

    #[test]
    fn a_range_is_trimmed_on_the_piece_timeline_and_placed_at_its_own_time() {
        let renditions = vec![preset("hls-abr").unwrap(), preset("mp4-720p").unwrap()];
        let task = SegmentTask {
            index: 2,
            start: 64.0,
            end: 96.0,
            last: false,
            pieces: vec![],
            file_offset: 1.4,
            frame_rate: 25.0,
        };
        let a = segment_argv(
            &renditions,
            &info(),
            &InputPolicy::default(),
            &task,
            Path::new("/w/src.ts"),
            Path::new("/w/out"),
        )
        .unwrap()
        .args;
        assert_eq!(after(&a, "-f")[0], "mpegts");
        assert_eq!(after(&a, "-protocol_whitelist"), ["file,pipe"]);
        assert!(a.contains(&"-copyts".to_string()));
        let graph = after(&a, "-filter_complex")[0];
        // A quarter frame (10 ms) of slack on both ends, re-timed from the range start.
        // The range is preceded by 12 pictures (0.48 s) of pre-roll, dropped after the encoder.
        assert!(
            graph.starts_with(
                "[0:v:0]trim=start=64.910000:end=97.390000,setpts=PTS-64.920000/TB,split=4"
            ),
            "{graph}"
        );
        assert_eq!(
            after(&a, "-bsf:v"),
            ["noise=drop=lt(st(0\\,ld(0)+key)\\,2)"]
        );
        // The MP4 is trimmed back to the range and encoded without pre-roll.
        assert!(
            graph.ends_with(
                ";[s3]trim=start=0.470000,setpts=PTS-0.480000/TB,scale=1280:720,setsar=1[o3]"
            ),
            "{graph}"
        );
        // Capped CRF rungs, starting with a 70 % full buffer after the pre-roll.
        assert_eq!(after(&a, "-crf:v:0"), ["23"]);
        assert_eq!(after(&a, "-maxrate:v:2"), ["856k"]);
        assert_eq!(after(&a, "-rc_init_occupancy:v:0"), ["2940000"]);
        assert!(!a.iter().any(|x| x.starts_with("-b:v")), "{a:?}");
        // The 720p input gives the 720/480/360 rungs and the MP4.
        assert!(graph.contains("scale=1280:720") && graph.contains("scale=640:360"));
        assert_eq!(after(&a, "-start_number"), ["16"]);
        // The range's first picture (12 pictures in, half a frame of slack) is the first
        // forced.
        assert_eq!(
            after(&a, "-force_key_frames"),
            ["expr:gte(t,0.460000+n_forced*4)"]
        );
        assert_eq!(after(&a, "-output_ts_offset"), ["73.520000", "74.000000"]);
        assert_eq!(after(&a, "-muxdelay"), ["0", "0"]);
        assert_eq!(after(&a, "-var_stream_map"), ["v:0 v:1 v:2"]);
        assert_eq!(a.last().unwrap(), "/w/out/mp4-720p/piece_00002.ts");
        // The last range has no end: whatever the video holds past the probed duration.
        let last = SegmentTask {
            last: true,
            ..task.clone()
        };
        let a = segment_argv(
            &renditions,
            &info(),
            &InputPolicy::default(),
            &last,
            Path::new("/w/src.ts"),
            Path::new("/w/out"),
        )
        .unwrap()
        .args;
        assert!(!after(&a, "-filter_complex")[0].contains(":end="));
        // The first range starts where the unsplit encode starts: no pre-roll to drop.
        let first = SegmentTask {
            index: 0,
            start: 0.0,
            end: 32.0,
            ..task
        };
        let a = segment_argv(
            &renditions,
            &info(),
            &InputPolicy::default(),
            &first,
            Path::new("/w/src.ts"),
            Path::new("/w/out"),
        )
        .unwrap()
        .args;
        assert!(after(&a, "-filter_complex")[0].starts_with("[0:v:0]trim=start=1.390000:"));
        assert_eq!(after(&a, "-force_key_frames"), ["expr:gte(t,n_forced*4)"]);
        assert!(after(&a, "-bsf:v").is_empty() && after(&a, "-rc_init_occupancy:v:0").is_empty());
        assert_eq!(after(&a, "-output_ts_offset"), ["10.000000", "10.000000"]);
    }

    #[test]
    fn audio_is_encoded_once_per_distinct_bitrate() {
        let renditions = vec![
            preset("hls-abr").unwrap(),
            preset("mp4-720p").unwrap(),
            preset("mp4-480p").unwrap(),
        ];
        let t = audio_tasks(&renditions, &info());
        // Rungs 720/480/360: 128, 96, 96; the MP4s 128.
        assert_eq!(
            t,
            vec![
                AudioTask {
                    kbps: 128,
                    hls_segment_seconds: Some(4)
                },
                AudioTask {
                    kbps: 96,
                    hls_segment_seconds: Some(4)
                },
            ]
        );
        assert_eq!(
            audio_task_for(&renditions[1], &t).map(|t| t.dir()),
            Some("audio/aac_128".to_string())
        );
        assert_eq!(audio_task_for(&renditions[0], &t), None);
    }
}
