//! The `stitch` task: encoded pieces and the audio track joined without re-encoding.
//!
//! Files (MP4/MOV with `+faststart`, Matroska): the pieces are MPEG-TS written at their
//! timeline times, so their bytes concatenate into one continuous stream; one remux with the
//! audio track, both placed on the same timeline, makes the file.
//!
//! HLS: the segments already are the output (global numbers, continuous timestamps); the stitch
//! writes one media playlist per rung and per audio group, and the master playlist. Called with
//! the first pieces only, it writes `EVENT` playlists a player can start on (progressive HLS);
//! with all of them, `VOD` playlists with `EXT-X-ENDLIST`.

use super::encode::{within, AudioOutput, SegmentOutput};
use super::playlist::{
    master_playlist, media_playlist, target_duration, AudioRendition, PlaylistKind, Segment,
    Variant,
};
use super::{io_err, SplitError, BASE};
use crate::argv::{ladder, muxer};
use crate::plan::{Container, Rendition};
use crate::probe::MediaInfo;
use crate::run::{run_ffmpeg, RunLimits};
use crate::sandbox::Tools;
use crate::{file_url, CancellationToken, Progress};
use std::io::Write;
use std::path::Path;

fn s<T: ToString>(x: T) -> String {
    x.to_string()
}

/// Joins the pieces of one file output (in range order) and its audio track into
/// `out_dir/<primary_file>`. `work_dir` holds the parts at the relative paths the
/// `encode_segment` and `encode_audio` results name.
#[allow(clippy::too_many_arguments)]
pub async fn stitch_file(
    tools: &Tools,
    r: &Rendition,
    pieces: &[SegmentOutput],
    audio: Option<&AudioOutput>,
    work_dir: &Path,
    out_dir: &Path,
    limits: RunLimits,
    cancel: &CancellationToken,
    on_progress: impl FnMut(Progress),
) -> Result<String, SplitError> {
    let container = r.container().ok_or_else(|| {
        SplitError::Unsplittable(format!("{} is not a single-file output", r.name))
    })?;
    let mut ordered: Vec<&SegmentOutput> = pieces.iter().collect();
    ordered.sort_by_key(|p| p.index);
    if ordered.iter().enumerate().any(|(i, p)| p.index != i) {
        return Err(SplitError::Missing(format!(
            "a piece of {}: have ranges {:?}",
            r.name,
            ordered.iter().map(|p| p.index).collect::<Vec<_>>()
        )));
    }
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let video = out_dir.join(format!(".{}.video.ts", r.name));
    {
        let mut w = std::fs::File::create(&video).map_err(io_err(&video))?;
        for p in &ordered {
            let rel = p
                .files
                .iter()
                .find(|(name, _)| *name == r.name)
                .map(|(_, f)| f.as_str())
                .ok_or_else(|| SplitError::Missing(format!("piece {} of {}", p.index, r.name)))?;
            let path = within(work_dir, rel)?;
            let mut f = std::fs::File::open(&path)
                .map_err(|_| SplitError::Missing(path.display().to_string()))?;
            std::io::copy(&mut f, &mut w).map_err(io_err(&path))?;
        }
        w.flush().map_err(io_err(&video))?;
    }
    let file = r.primary_file();
    let mut a: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-y",
        "-loglevel",
        "error",
        "-protocol_whitelist",
        "file,pipe",
        "-format_whitelist",
        "mpegts,mov",
        // Both inputs keep their timestamps (video at BASE + timeline, audio moved there by
        // -itsoffset) so the audio starts where the unsplit encode's does, then all of it is
        // shifted back by BASE.
        "-copyts",
        "-f",
        "mpegts",
        "-i",
    ]
    .map(String::from)
    .to_vec();
    a.push(file_url(&video));
    if let Some(au) = audio {
        a.extend([
            s("-itsoffset"),
            format!("{BASE:.6}"),
            s("-f"),
            s("mov"),
            s("-i"),
        ]);
        a.push(file_url(&within(work_dir, &au.track)?));
    }
    a.extend(["-map", "0:v:0"].map(String::from));
    if audio.is_some() {
        a.extend(["-map", "1:a:0"].map(String::from));
    }
    a.extend([
        s("-c"),
        s("copy"),
        s("-output_ts_offset"),
        format!("{:.6}", -BASE),
        s("-map_metadata"),
        s(-1),
        s("-map_chapters"),
        s(-1),
    ]);
    if matches!(container, Container::Mp4 | Container::Mov | Container::M4a) {
        a.extend([s("-movflags"), s("+faststart")]);
    }
    a.extend([
        s("-f"),
        s(muxer(container)),
        s("-progress"),
        s("pipe:1"),
        s("-nostats"),
        out_dir.join(&file).display().to_string(),
    ]);
    let run = run_ffmpeg(tools, &a, out_dir, limits, cancel, on_progress).await;
    let _ = std::fs::remove_file(&video);
    run?;
    Ok(file)
}

/// How far an HLS stitch got.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HlsState {
    /// Ranges (a contiguous prefix) in the playlists.
    pub ranges: usize,
    /// `true` once the playlists are VOD (every range in).
    pub complete: bool,
    /// Files written, relative to `out_dir`.
    pub files: Vec<String>,
}

/// The playlists of one HLS output over the ranges encoded so far, and where each segment they
/// list comes from: what [`stitch_hls`] writes, and what an api serves for a job still encoding
/// (progressive HLS) without writing anything. Pure.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HlsPlan {
    /// Ranges (a contiguous prefix from range 0) the playlists cover.
    pub ranges: usize,
    /// `true` once every range is in: the playlists are VOD, else EVENT.
    pub complete: bool,
    /// Playlists: path relative to the output directory (`<name>/v0/index.m3u8`, …, the
    /// master `<name>.m3u8` path last), and text. Empty while no range is in.
    pub playlists: Vec<(String, String)>,
    /// Segments listed: (path relative to the output directory, path relative to the parts'
    /// directory, i.e. as the `encode_segment` / `encode_audio` results name their files).
    pub segments: Vec<(String, String)>,
}

impl HlsPlan {
    /// The source (relative to the parts) of the output file `rel`, if it is a listed segment.
    pub fn source_of(&self, rel: &str) -> Option<&str> {
        self.segments
            .iter()
            .find(|(dst, _)| dst == rel)
            .map(|(_, src)| src.as_str())
    }

    /// The text of the playlist at `rel`, if it is one of them.
    pub fn playlist(&self, rel: &str) -> Option<&str> {
        self.playlists
            .iter()
            .find(|(p, _)| p == rel)
            .map(|(_, t)| t.as_str())
    }
}

/// Plans the playlists of one HLS output from the ranges encoded so far: the longest
/// contiguous prefix of `pieces` from range 0. With all `total_ranges` in, the playlists are
/// VOD; before, EVENT. Video segments come from `<name>/v<k>/` of the parts, audio ones from
/// their task's `hls_dir`; they are listed under `<name>/v<k>/` and `<name>/a<kbps>/`.
pub fn hls_plan(
    r: &Rendition,
    info: &MediaInfo,
    pieces: &[SegmentOutput],
    total_ranges: usize,
    audio: &[AudioOutput],
) -> Result<HlsPlan, SplitError> {
    let hls = super::plan::ts_ladder(r)
        .ok_or_else(|| SplitError::Unsplittable(format!("{} is not HLS", r.name)))?;
    let mut ordered: Vec<&SegmentOutput> = pieces.iter().collect();
    ordered.sort_by_key(|p| p.index);
    let prefix = ordered
        .iter()
        .enumerate()
        .take_while(|(i, p)| p.index == *i)
        .count();
    let complete = prefix == total_ranges;
    let kind = if complete {
        PlaylistKind::Vod
    } else {
        PlaylistKind::Event
    };
    let mut plan = HlsPlan {
        ranges: prefix,
        complete,
        ..HlsPlan::default()
    };
    if prefix == 0 {
        return Ok(plan);
    }
    let short = info.display_dims().map(|(w, h)| w.min(h)).unwrap_or(0);
    let rungs = ladder(&hls.rungs, short);
    let seg_target = hls.segment_seconds.max(1);
    let mut variants = vec![];
    let mut groups: Vec<AudioRendition> = vec![];
    let mut video_end = 0.0;
    for (k, rung) in rungs.iter().enumerate() {
        let parts: Vec<_> = ordered[..prefix]
            .iter()
            .filter_map(|p| p.hls.iter().find(|h| h.rendition == r.name && h.rung == k))
            .collect();
        if parts.len() != prefix {
            return Err(SplitError::Missing(format!(
                "{} rung {k} of a range",
                r.name
            )));
        }
        let segments: Vec<Segment> = parts.iter().flat_map(|h| h.segments.clone()).collect();
        for seg in &segments {
            let rel = format!("{}/v{k}/{}", r.name, seg.uri);
            plan.segments.push((rel.clone(), rel));
        }
        video_end = segments.iter().map(|s| s.duration).sum::<f64>();
        let target = target_duration(&segments).max(seg_target);
        plan.playlists.push((
            format!("{}/v{k}/index.m3u8", r.name),
            media_playlist(&segments, target, kind),
        ));
        let au = audio
            .iter()
            .find(|a| a.kbps == rung.audio_kbps && a.hls_dir.is_some());
        let (w, h, codec) = parts
            .first()
            .map(|p| (p.width, p.height, p.codec.clone()))
            .unwrap_or((0, 0, "avc1.640028".into()));
        let vkbps = rung.video_kbps as u64 * 107 / 100;
        let akbps = if au.is_some() {
            rung.audio_kbps as u64
        } else {
            0
        };
        variants.push(Variant {
            uri: format!("v{k}/index.m3u8"),
            // As ffmpeg's HLS muxer: the streams' peak rates plus a tenth.
            bandwidth: (vkbps + akbps) * 1000 * 11 / 10,
            width: w,
            height: h,
            codecs: if au.is_some() {
                format!("{codec},mp4a.40.2")
            } else {
                codec
            },
            audio_group: au.map(|a| format!("a{}", a.kbps)),
        });
        if let Some(a) = au {
            let group = format!("a{}", a.kbps);
            if !groups.iter().any(|g| g.group == group) {
                groups.push(AudioRendition {
                    group: group.clone(),
                    uri: format!("{group}/index.m3u8"),
                });
            }
        }
    }
    // Audio: the whole track exists from the start; an EVENT playlist lists what the video has.
    for g in &groups {
        let Some(a) = audio.iter().find(|a| format!("a{}", a.kbps) == g.group) else {
            continue;
        };
        let src_dir = a.hls_dir.as_deref().unwrap_or("");
        let mut listed = vec![];
        let mut t = 0.0;
        for seg in &a.hls {
            if !complete && t >= video_end {
                break;
            }
            t += seg.duration;
            listed.push(seg.clone());
        }
        for seg in &listed {
            plan.segments.push((
                format!("{}/{}/{}", r.name, g.group, seg.uri),
                format!("{src_dir}/{}", seg.uri),
            ));
        }
        let target = target_duration(&a.hls).max(seg_target);
        plan.playlists.push((
            format!("{}/{}/index.m3u8", r.name, g.group),
            media_playlist(&listed, target, kind),
        ));
    }
    plan.playlists
        .push((r.primary_file(), master_playlist(&variants, &groups)));
    Ok(plan)
}

/// Writes the playlists of one HLS output from the ranges encoded so far ([`hls_plan`]), the
/// segments they list copied from `work_dir` to `out_dir` (none when a worker uploads segments
/// straight to the output and passes the same directory for both).
pub fn stitch_hls(
    r: &Rendition,
    info: &MediaInfo,
    pieces: &[SegmentOutput],
    total_ranges: usize,
    audio: &[AudioOutput],
    work_dir: &Path,
    out_dir: &Path,
) -> Result<HlsState, SplitError> {
    let plan = hls_plan(r, info, pieces, total_ranges, audio)?;
    for (dst, src) in &plan.segments {
        let to = within(out_dir, dst)?;
        if !to.exists() {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let from = within(work_dir, src)?;
            std::fs::copy(&from, &to)
                .map_err(|_| SplitError::Missing(from.display().to_string()))?;
        }
    }
    let mut files = vec![];
    for (rel, text) in &plan.playlists {
        let path = within(out_dir, rel)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        // Written beside and renamed, so a player never reads half a playlist.
        let tmp = path.with_extension("m3u8.tmp");
        std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        files.push(rel.clone());
    }
    Ok(HlsState {
        ranges: plan.ranges,
        complete: plan.complete,
        files,
    })
}
