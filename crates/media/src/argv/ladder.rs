//! The half every ladder shares, whichever manifests package it (HLS, DASH, CMAF): the source
//! deinterlaced once, split, each rung scaled, every rung encoded with keyframes on the same
//! segment grid. Written once so HLS and DASH rungs cannot drift apart.

use super::codec::X265_LADDER_PARAMS;
use super::{deinterlace_filter, fit_short_side, s, ArgvError, Watermark};
use crate::plan::{Ladder, Rendition, Rung, VideoCodec};
use crate::probe::MediaInfo;

/// The HLS rungs for an input: every rung whose short side is not above the input's; an input
/// below the smallest rung still gets one rung at its own size.
pub fn ladder(rungs: &[Rung], display_short: u32) -> Vec<Rung> {
    let fitting: Vec<Rung> = rungs
        .iter()
        .copied()
        .filter(|r| r.short_side <= display_short)
        .collect();
    if !fitting.is_empty() {
        return fitting;
    }
    rungs
        .iter()
        .min_by_key(|r| r.short_side)
        .map(|r| Rung {
            short_side: display_short,
            ..*r
        })
        .into_iter()
        .collect()
}

/// How each rung states its pixel shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Aspect {
    /// `setsar=1`: square pixels, each rung's even size as it is (HLS).
    SquarePixels,
    /// `setdar` to the source's display aspect: DASH puts the rungs in one adaptation set,
    /// which must share one picture aspect, and even sizes (854x480 next to 640x360) differ
    /// from it by a hair; the sample aspect absorbs the difference.
    SourceDisplay,
}

/// Frames per second the GOP arithmetic assumes when the probe found no rate.
const FALLBACK_FPS: f64 = 25.0;

/// Adds the filter graph, the video maps (`[v0]`, `[v1]`, ... in rung order: output video
/// streams `v:0`, `v:1`, ...) and the video encoder flags; returns the rungs this input gets.
pub(super) fn video(
    r: &Rendition,
    l: &Ladder,
    info: &MediaInfo,
    aspect: Aspect,
    mark: Option<&Watermark<'_>>,
    a: &mut Vec<String>,
) -> Result<Vec<Rung>, ArgvError> {
    let v = info
        .video()
        .ok_or_else(|| ArgvError("a streaming ladder needs a video stream".into()))?;
    let codec = r.video.as_ref().map_or(VideoCodec::H264, |v| v.codec);
    let (dw, dh) = info.display_dims().unwrap_or((0, 0));
    let rungs = ladder(&l.rungs, dw.min(dh));
    let n = rungs.len();
    let deint = deinterlace_filter(info, None)
        .map(|f| format!("{f},"))
        .unwrap_or_default();
    let shape = match aspect {
        Aspect::SquarePixels => "setsar=1".to_string(),
        Aspect::SourceDisplay => format!("setdar={}/{}", dw.max(1), dh.max(1)),
    };
    let mut graph = format!("[0:{}]{deint}split={n}", v.index);
    for i in 0..n {
        graph.push_str(&format!("[s{i}]"));
    }
    if mark.is_some() {
        // One copy of the image per rung, each scaled to its own rung's width.
        graph.push_str(&format!(";[1:v]split={n}"));
        for i in 0..n {
            graph.push_str(&format!("[m{i}]"));
        }
    }
    for (i, rung) in rungs.iter().enumerate() {
        let (w, h) = fit_short_side(dw, dh, rung.short_side);
        match mark {
            None => graph.push_str(&format!(";[s{i}]scale={w}:{h},{shape}[v{i}]")),
            Some(m) => {
                graph.push_str(&format!(";[s{i}]scale={w}:{h},{shape}[b{i}];"));
                graph.push_str(&m.spec.overlay_filter(
                    &format!("m{i}"),
                    &format!("b{i}"),
                    &format!("v{i}"),
                    (w, h),
                    m.mark.size,
                ));
            }
        }
    }
    a.extend([s("-filter_complex"), graph]);
    for i in 0..n {
        a.extend([s("-map"), format!("[v{i}]")]);
    }
    let seg = l.segment_seconds;
    match codec {
        VideoCodec::H264 => a.extend([s("-c:v"), s("libx264"), s("-preset"), s("fast")]),
        VideoCodec::H265 => a.extend([
            s("-c:v"),
            s("libx265"),
            s("-preset"),
            s("fast"),
            s("-tag:v"),
            s("hvc1"),
            s("-x265-params"),
            s(X265_LADDER_PARAMS),
            // A forced keyframe must be an IDR (not x265's default open-GOP CRA), so every
            // segment starts with a picture a player can decode alone.
            s("-forced-idr"),
            s(1),
        ]),
        VideoCodec::Av1 => {
            // SVT-AV1 ignores forced keyframes: a fixed GOP of one segment puts them on the grid.
            let fps = v.frame_rate.filter(|f| *f > 0.0).unwrap_or(FALLBACK_FPS);
            let gop = ((fps * seg as f64).round() as u32).max(1);
            a.extend([
                s("-c:v"),
                s("libsvtav1"),
                s("-preset"),
                s(10),
                s("-g"),
                s(gop),
            ]);
        }
        other => {
            return Err(ArgvError(format!(
                "{other:?} cannot encode a streaming ladder"
            )))
        }
    }
    a.extend([s("-pix_fmt"), s("yuv420p")]);
    for (i, rung) in rungs.iter().enumerate() {
        a.extend([format!("-b:v:{i}"), format!("{}k", rung.video_kbps)]);
        // SVT-AV1 takes a target rate only (its VBR has no VBV buffer in this ffmpeg).
        if codec != VideoCodec::Av1 {
            a.extend([
                format!("-maxrate:v:{i}"),
                format!("{}k", rung.video_kbps * 107 / 100),
                format!("-bufsize:v:{i}"),
                format!("{}k", rung.video_kbps * 3 / 2),
            ]);
        }
    }
    if codec != VideoCodec::Av1 {
        a.extend([
            s("-force_key_frames"),
            format!("expr:gte(t,n_forced*{seg})"),
            s("-sc_threshold"),
            s(0),
        ]);
    }
    a.extend([s("-map_metadata"), s(-1), s("-map_chapters"), s(-1)]);
    Ok(rungs)
}
