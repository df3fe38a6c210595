//! DASH packaging of a ladder, and CMAF: ffmpeg's DASH muxer writes fMP4 segments (one video
//! adaptation set of the rungs, one audio adaptation set with a single AAC track) and
//! `manifest.mpd`; for CMAF it also writes an HLS master playlist and media playlists over the
//! SAME segment files (`-hls_playlist`), so HLS and DASH players share one copy of the media.

use super::ladder::{self, Aspect};
use super::{out_path, s, ArgvError, Watermark};
use crate::plan::{Ladder, Rendition, DASH_MANIFEST, HLS_MASTER};
use crate::probe::MediaInfo;
use std::path::Path;

/// Segment names (DASH templates): `init-<rep>.m4s`, `seg-<rep>-00001.m4s`.
pub const INIT_TEMPLATE: &str = "init-$RepresentationID$.m4s";
pub const MEDIA_TEMPLATE: &str = "seg-$RepresentationID$-$Number%05d$.m4s";

/// Adds the ladder, one audio track and the DASH muxer (`with_hls`: CMAF, both manifests);
/// returns the manifest's path. The output directory must exist (this muxer does not create
/// it; [`crate::package::prepare`] does).
pub(super) fn args(
    r: &Rendition,
    l: &Ladder,
    with_hls: bool,
    info: &MediaInfo,
    mark: Option<&Watermark<'_>>,
    out_dir: &Path,
    a: &mut Vec<String>,
) -> Result<String, ArgvError> {
    let rungs = ladder::video(r, l, info, Aspect::SourceDisplay, mark, a)?;
    let audio = info.audio().filter(|_| r.audio.is_some());
    if let Some(au) = audio {
        // One audio track for every rung: DASH and HLS players pair it with any video rung.
        let kbps = rungs.iter().map(|r| r.audio_kbps).max().unwrap_or(128);
        a.extend([
            s("-map"),
            format!("0:{}", au.index),
            s("-c:a"),
            s("aac"),
            s("-b:a"),
            format!("{kbps}k"),
        ]);
    }
    let sets = match audio {
        Some(_) => "id=0,streams=v id=1,streams=a",
        None => "id=0,streams=v",
    };
    a.extend([
        s("-f"),
        s("dash"),
        s("-seg_duration"),
        s(l.segment_seconds),
        s("-use_template"),
        s(1),
        s("-use_timeline"),
        s(1),
        s("-init_seg_name"),
        s(INIT_TEMPLATE),
        s("-media_seg_name"),
        s(MEDIA_TEMPLATE),
        s("-adaptation_sets"),
        s(sets),
    ]);
    if with_hls {
        a.extend([
            s("-hls_playlist"),
            s(1),
            s("-hls_master_name"),
            s(HLS_MASTER),
        ]);
    }
    Ok(out_path(&out_dir.join(&r.name).join(DASH_MANIFEST)))
}
