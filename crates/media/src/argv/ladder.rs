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

/// The rate control of one rung: capped CRF. The encoder spends what the picture needs at the
/// codec's default CRF, up to the rung's bitrate (`maxrate` 107 % of it, a 1.5 s buffer), so the
/// rung's bitrate is its peak, which is what the master playlist's `BANDWIDTH` states.
///
/// Not ABR (`-b:v`): x264's ABR steers toward the average over everything encoded so far, so a
/// range of a split job (which starts a new encode) spent less at its start than the unsplit
/// encode spends at the same picture, and came out 0.45-0.56 dB lower at 4 s ranges (still
/// 0.17-0.2 dB with a pre-roll). Capped CRF decides each picture from the picture, which a
/// range encode reproduces (see `split::encode::PREROLL_SECONDS` for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RungRateControl {
    pub crf: u32,
    pub maxrate_kbps: u32,
    pub bufsize_kbps: u32,
}

impl RungRateControl {
    /// The flags of output video stream `k`.
    pub fn args(&self, k: usize) -> [String; 6] {
        [
            format!("-crf:v:{k}"),
            s(self.crf),
            format!("-maxrate:v:{k}"),
            format!("{}k", self.maxrate_kbps),
            format!("-bufsize:v:{k}"),
            format!("{}k", self.bufsize_kbps),
        ]
    }
}

/// The rate control of an H.264 rung (HEVC: [`rung_rate_control_for`]).
pub fn rung_rate_control(rung: &Rung) -> RungRateControl {
    rung_rate_control_for(VideoCodec::H264, rung)
}

/// The rate control of a rung of a ladder in `codec` (H.264 or HEVC; SVT-AV1 has no VBV).
pub fn rung_rate_control_for(codec: VideoCodec, rung: &Rung) -> RungRateControl {
    RungRateControl {
        crf: crate::compat::video_defaults(codec)
            .default_crf
            .unwrap_or(23),
        maxrate_kbps: rung.video_kbps * 107 / 100,
        bufsize_kbps: rung.video_kbps * 3 / 2,
    }
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
        if codec == VideoCodec::Av1 {
            // SVT-AV1 takes a target rate only (its VBR has no VBV buffer in this ffmpeg).
            a.extend([format!("-b:v:{i}"), format!("{}k", rung.video_kbps)]);
        } else {
            a.extend(rung_rate_control_for(codec, rung).args(i));
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
