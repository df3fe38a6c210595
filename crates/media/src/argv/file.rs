//! A single-file output: one video stream (scaled once) and one audio stream in a container.

use super::codec::{audio_codec_args, muxer, video_codec_args};
use super::{deinterlace_filter, fit_dims, fit_short_side, out_path, s, ArgvError, Watermark};
use crate::plan::{Container, Rendition, VideoCodec};
use crate::probe::MediaInfo;
use std::path::Path;

/// Adds the maps, encoders and muxer of a file output; returns the path ffmpeg writes.
pub(super) fn args(
    r: &Rendition,
    container: Container,
    info: &MediaInfo,
    mark: Option<&Watermark<'_>>,
    burn_in: bool,
    out_dir: &Path,
    a: &mut Vec<String>,
) -> Result<String, ArgvError> {
    let is_thumb = container == Container::Jpeg;
    let (dw, dh) = info.display_dims().unwrap_or((0, 0));
    match (&r.video, info.video()) {
        (Some(vp), Some(vs)) => {
            let (w, h) = match vp.short_side.filter(|s| *s > 0) {
                Some(short) => fit_short_side(dw, dh, short),
                None => fit_dims(dw, dh, vp.max_width, vp.max_height.filter(|h| *h > 0)),
            };
            let deint = deinterlace_filter(info, vp.fps)
                .map(|f| format!("{f},"))
                .unwrap_or_default();
            // Captions are rendered at the output's size, under the watermark.
            let burn = if burn_in && container == Container::Mp4 {
                format!(",ass={}", crate::captions::BURN_IN_FILE)
            } else {
                String::new()
            };
            let chain = format!("{deint}scale={w}:{h},setsar=1{burn}");
            match (vp.codec, mark) {
                (VideoCodec::Copy, Some(_)) => {
                    return Err(ArgvError(
                        "a watermark cannot go on a stream copy (video codec copy)".into(),
                    ))
                }
                (VideoCodec::Copy, None) => a.extend([s("-map"), format!("0:{}", vs.index)]),
                (_, None) => a.extend([s("-map"), format!("0:{}", vs.index), s("-vf"), chain]),
                (_, Some(m)) => {
                    let overlay =
                        m.spec
                            .overlay_filter("1:v", "base", "marked", (w, h), m.mark.size);
                    a.extend([
                        s("-filter_complex"),
                        format!("[0:{}]{chain}[base];{overlay}", vs.index),
                        s("-map"),
                        s("[marked]"),
                    ]);
                }
            }
            video_codec_args(vp, a);
        }
        (Some(_), None) => return Err(ArgvError("this output needs a video stream".into())),
        (None, _) => {}
    }
    match (&r.audio, info.audio(), is_thumb) {
        (Some(ap), Some(au), false) => {
            a.extend([s("-map"), format!("0:{}", au.index)]);
            audio_codec_args(ap.codec, ap.bitrate_kbps, a);
        }
        (None, _, _) | (_, None, _) | (_, _, true) => {
            if r.video.is_none() {
                return Err(ArgvError("this output needs an audio stream".into()));
            }
        }
    }
    a.extend([s("-map_metadata"), s(-1), s("-map_chapters"), s(-1)]);
    match container {
        Container::Mp4 | Container::M4a | Container::Mov => {
            a.extend([s("-movflags"), s("+faststart")])
        }
        Container::Jpeg => a.extend([s("-update"), s(1)]),
        _ => {}
    }
    a.extend([
        s("-max_muxing_queue_size"),
        s(1024),
        s("-f"),
        s(muxer(container)),
    ]);
    Ok(out_path(&out_dir.join(r.primary_file())))
}
