//! Encoder flags for one video or audio codec, and the muxer of each single-file container.

use super::s;
use crate::plan::{AudioCodec, Container, VideoCodec, VideoPlan};

/// `-x265-params` of a ladder's HEVC encode: quiet, and no scene-cut keyframes, which x265
/// decides per resolution and would misalign the rungs (forced IDR frames set the GOPs instead).
pub(super) const X265_LADDER_PARAMS: &str = "log-level=error:scenecut=0";

pub(crate) fn video_codec_args(v: &VideoPlan, a: &mut Vec<String>) {
    let rate = |a: &mut Vec<String>, kbps: u32| {
        a.extend([
            s("-b:v"),
            format!("{kbps}k"),
            s("-maxrate"),
            format!("{}k", kbps * 3 / 2),
            s("-bufsize"),
            format!("{}k", kbps * 2),
        ])
    };
    match v.codec {
        VideoCodec::H264 | VideoCodec::H265 => {
            let h265 = v.codec == VideoCodec::H265;
            a.extend([
                s("-c:v"),
                s(if h265 { "libx265" } else { "libx264" }),
                s("-preset"),
                s("fast"),
            ]);
            if h265 {
                a.extend([
                    s("-tag:v"),
                    s("hvc1"),
                    s("-x265-params"),
                    s("log-level=error"),
                ]);
            }
            if let Some(kbps) = v.bitrate_kbps {
                rate(a, kbps);
            } else if let Some(crf) = v.crf {
                a.extend([s("-crf"), s(crf)]);
                if let Some(m) = v.maxrate_kbps {
                    a.extend([
                        s("-maxrate"),
                        format!("{m}k"),
                        s("-bufsize"),
                        format!("{}k", m * 2),
                    ]);
                }
            }
            a.extend([s("-pix_fmt"), s("yuv420p")]);
        }
        VideoCodec::Vp9 => {
            a.extend([
                s("-c:v"),
                s("libvpx-vp9"),
                s("-deadline"),
                s("good"),
                s("-cpu-used"),
                s(4),
                s("-row-mt"),
                s(1),
            ]);
            match (v.bitrate_kbps, v.crf) {
                (Some(kbps), _) => a.extend([s("-b:v"), format!("{kbps}k")]),
                (None, Some(crf)) => a.extend([s("-crf"), s(crf), s("-b:v"), s(0)]),
                _ => {}
            }
            a.extend([s("-pix_fmt"), s("yuv420p")]);
        }
        VideoCodec::Av1 => {
            a.extend([s("-c:v"), s("libsvtav1"), s("-preset"), s(10)]);
            match (v.bitrate_kbps, v.crf) {
                (Some(kbps), _) => a.extend([s("-b:v"), format!("{kbps}k")]),
                (None, Some(crf)) => a.extend([s("-crf"), s(crf)]),
                _ => {}
            }
            a.extend([s("-pix_fmt"), s("yuv420p")]);
        }
        VideoCodec::Mjpeg => {
            a.extend([
                s("-c:v"),
                s("mjpeg"),
                s("-q:v"),
                s(3),
                s("-pix_fmt"),
                s("yuvj420p"),
                s("-frames:v"),
                s(1),
            ]);
        }
        VideoCodec::Copy => a.extend([s("-c:v"), s("copy")]),
    }
    if let Some(fps) = v.fps {
        a.extend([s("-r"), format!("{fps}")]);
    }
}

pub(super) fn audio_codec_args(codec: AudioCodec, kbps: u32, a: &mut Vec<String>) {
    match codec {
        AudioCodec::Aac => a.extend([s("-c:a"), s("aac"), s("-b:a"), format!("{kbps}k")]),
        AudioCodec::Opus => a.extend([s("-c:a"), s("libopus"), s("-b:a"), format!("{kbps}k")]),
        AudioCodec::Copy => a.extend([s("-c:a"), s("copy")]),
    }
}

pub(crate) fn muxer(c: Container) -> &'static str {
    match c {
        Container::Mp4 | Container::M4a => "mp4",
        Container::Mov => "mov",
        Container::Mkv => "matroska",
        Container::Webm => "webm",
        Container::Jpeg => "image2",
    }
}
