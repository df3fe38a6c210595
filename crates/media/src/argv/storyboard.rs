//! A storyboard: one frame every interval, scaled to the tile size and laid out by ffmpeg's
//! `tile` filter into JPEG sprite sheets (`sprite_001.jpg`, ...). The WebVTT track over them is
//! written after the run ([`crate::package::finish`]), when the sheets exist.

use super::{deinterlace_filter, fit_short_side, out_path, s, ArgvError, Watermark};
use crate::plan::{Rendition, Storyboard};
use crate::probe::MediaInfo;
use crate::storyboard::SHEET_PATTERN;
use std::path::Path;

/// A tile's size for this input: the shorter display side bounded, aspect kept, even.
pub fn tile_dims(info: &MediaInfo, sb: &Storyboard) -> (u32, u32) {
    let (dw, dh) = info.display_dims().unwrap_or((0, 0));
    fit_short_side(dw, dh, sb.tile_short_side)
}

/// Seconds ffmpeg's out_time reaches for `duration` seconds of input: whole sheets, each
/// `columns x rows` intervals long (the `tile` filter times its frames that way).
pub(super) fn sheets_span(sb: &Storyboard, duration: f64) -> f64 {
    let interval = sb.interval_seconds.max(0.001);
    let per_sheet = f64::from((sb.columns * sb.rows).max(1));
    let frames = (duration / interval).ceil().max(1.0);
    (frames / per_sheet).ceil() * per_sheet * interval
}

pub(super) fn args(
    r: &Rendition,
    sb: &Storyboard,
    info: &MediaInfo,
    mark: Option<&Watermark<'_>>,
    out_dir: &Path,
    a: &mut Vec<String>,
) -> Result<String, ArgvError> {
    let v = info
        .video()
        .ok_or_else(|| ArgvError("a storyboard needs a video stream".into()))?;
    let (w, h) = tile_dims(info, sb);
    let deint = deinterlace_filter(info, None)
        .map(|f| format!("{f},"))
        .unwrap_or_default();
    // The frame rate as a rational of milliseconds: 1000/2500 is one frame every 2.5 s.
    let ms = ((sb.interval_seconds * 1000.0).round() as u64).max(1);
    let tiles = format!("{deint}fps=1000/{ms},scale={w}:{h},setsar=1");
    let tile = format!("tile={}x{}", sb.columns, sb.rows);
    match mark {
        None => a.extend([
            s("-map"),
            format!("0:{}", v.index),
            s("-vf"),
            format!("{tiles},{tile}"),
        ]),
        // Each tile is marked at its own size before the sheet is laid out, so the mark sits
        // at the same relative place in every tile as on every other output.
        Some(m) => {
            let overlay = m
                .spec
                .overlay_filter("1:v", "base", "marked", (w, h), m.mark.size);
            a.extend([
                s("-filter_complex"),
                format!(
                    "[0:{}]{tiles}[base];{overlay};[marked]{tile}[sheet]",
                    v.index
                ),
                s("-map"),
                s("[sheet]"),
            ]);
        }
    }
    a.extend([
        s("-an"),
        s("-c:v"),
        s("mjpeg"),
        s("-q:v"),
        s(4),
        s("-pix_fmt"),
        s("yuvj420p"),
        s("-map_metadata"),
        s(-1),
        s("-map_chapters"),
        s(-1),
        s("-f"),
        s("image2"),
    ]);
    Ok(out_path(&out_dir.join(&r.name).join(SHEET_PATTERN)))
}
