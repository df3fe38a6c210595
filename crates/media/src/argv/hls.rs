//! HLS packaging of a ladder: ffmpeg's HLS muxer, one variant (video rung + its audio) per
//! rung, MPEG-TS segments (HLS v3) or fMP4/CMAF segments (HLS v7, `EXT-X-MAP` init segments).

use super::ladder::{self, Aspect};
use super::{out_path, s, ArgvError, Watermark};
use crate::plan::{Ladder, Rendition, Segments, HLS_MASTER};
use crate::probe::MediaInfo;
use std::path::Path;

/// Adds the ladder, its audio and the HLS muxer; returns the media playlists' path pattern.
pub(super) fn args(
    r: &Rendition,
    l: &Ladder,
    segments: Segments,
    info: &MediaInfo,
    mark: Option<&Watermark<'_>>,
    out_dir: &Path,
    a: &mut Vec<String>,
) -> Result<String, ArgvError> {
    let rungs = ladder::video(r, l, info, Aspect::SquarePixels, mark, a)?;
    let n = rungs.len();
    let audio = info.audio().filter(|_| r.audio.is_some());
    if let Some(au) = audio {
        // Each variant carries its own audio (a rung of the ladder is one playable stream).
        for _ in 0..n {
            a.extend([s("-map"), format!("0:{}", au.index)]);
        }
        for (i, rung) in rungs.iter().enumerate() {
            a.extend([
                format!("-c:a:{i}"),
                s("aac"),
                format!("-b:a:{i}"),
                format!("{}k", rung.audio_kbps),
            ]);
        }
    }
    let (kind, ext) = match segments {
        Segments::Ts => ("mpegts", "ts"),
        Segments::Fmp4 => ("fmp4", "m4s"),
    };
    let dir = out_dir.join(&r.name);
    a.extend([
        s("-f"),
        s("hls"),
        s("-hls_time"),
        s(l.segment_seconds),
        s("-hls_playlist_type"),
        s("vod"),
        s("-hls_flags"),
        s("independent_segments"),
        s("-hls_segment_type"),
        s(kind),
        s("-hls_segment_filename"),
        out_path(&dir.join(format!("v%v/seg_%05d.{ext}"))),
    ]);
    if segments == Segments::Fmp4 {
        // Written as v<N>/init_<N>.mp4 (the muxer adds the variant number).
        a.extend([s("-hls_fmp4_init_filename"), s("init.mp4")]);
    }
    a.extend([
        s("-master_pl_name"),
        s(HLS_MASTER),
        s("-var_stream_map"),
        (0..n)
            .map(|i| match audio {
                Some(_) => format!("v:{i},a:{i}"),
                None => format!("v:{i}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
    ]);
    Ok(out_path(&dir.join("v%v/index.m3u8")))
}
