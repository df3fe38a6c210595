//! The one table of what goes with what: which video and audio codecs each output format
//! (a single-file container or a streaming package) may carry, the audio codec it gets when the
//! spec does not say, and each video codec's defaults. Validation ([`crate::plan`]) and the ladder
//! bitrates ([`crate::argv`]) both read it, so a new format or codec is one row here.

use crate::plan::{AudioCodec, VideoCodec};

/// One row: an output format as a custom output names it in `container`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatRow {
    /// The `container` value of a custom output (`mp4`, `cmaf`, ...).
    pub name: &'static str,
    /// Video codecs it may carry; empty for audio-only formats.
    pub video: &'static [VideoCodec],
    /// Audio codecs it may carry.
    pub audio: &'static [AudioCodec],
    /// Audio when the spec has no `audio` section (`None`: the format holds no audio).
    pub default_audio: Option<AudioCodec>,
    pub kind: FormatKind,
}

/// What a format makes of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatKind {
    /// One file.
    File,
    /// A ladder: several rungs, segments and manifests.
    Ladder,
    /// JPEG sprite sheets and a WebVTT thumbnails track.
    Storyboard,
}

impl FormatRow {
    pub fn is_ladder(&self) -> bool {
        self.kind == FormatKind::Ladder
    }
}

use AudioCodec as A;
use VideoCodec as V;

/// Every format a custom output may name. `copy` is allowed for files only: a ladder re-encodes
/// every rung. MPEG-TS HLS is H.264 only (what every HLS player decodes from TS); the fMP4
/// packages also carry HEVC and AV1, whose players read them from fMP4 alone.
pub const FORMATS: &[FormatRow] = &[
    FormatRow {
        name: "mp4",
        video: &[V::H264, V::H265, V::Vp9, V::Av1, V::Copy],
        audio: &[A::Aac, A::Copy],
        default_audio: Some(A::Aac),
        kind: FormatKind::File,
    },
    FormatRow {
        name: "mov",
        video: &[V::H264, V::H265, V::Vp9, V::Av1, V::Copy],
        audio: &[A::Aac, A::Copy],
        default_audio: Some(A::Aac),
        kind: FormatKind::File,
    },
    FormatRow {
        name: "mkv",
        video: &[V::H264, V::H265, V::Vp9, V::Av1, V::Copy],
        audio: &[A::Aac, A::Opus, A::Copy],
        default_audio: Some(A::Aac),
        kind: FormatKind::File,
    },
    FormatRow {
        name: "webm",
        video: &[V::Vp9, V::Av1, V::Copy],
        audio: &[A::Opus, A::Copy],
        default_audio: Some(A::Opus),
        kind: FormatKind::File,
    },
    FormatRow {
        name: "m4a",
        video: &[],
        audio: &[A::Aac, A::Copy],
        default_audio: Some(A::Aac),
        kind: FormatKind::File,
    },
    FormatRow {
        name: "hls",
        video: &[V::H264],
        audio: &[A::Aac],
        default_audio: Some(A::Aac),
        kind: FormatKind::Ladder,
    },
    FormatRow {
        name: "hls-cmaf",
        video: &[V::H264, V::H265, V::Av1],
        audio: &[A::Aac],
        default_audio: Some(A::Aac),
        kind: FormatKind::Ladder,
    },
    FormatRow {
        name: "dash",
        video: &[V::H264, V::H265, V::Av1],
        audio: &[A::Aac],
        default_audio: Some(A::Aac),
        kind: FormatKind::Ladder,
    },
    FormatRow {
        name: "cmaf",
        video: &[V::H264, V::H265, V::Av1],
        audio: &[A::Aac],
        default_audio: Some(A::Aac),
        kind: FormatKind::Ladder,
    },
    FormatRow {
        name: "storyboard",
        video: &[V::Mjpeg],
        audio: &[],
        default_audio: None,
        kind: FormatKind::Storyboard,
    },
];

pub fn format(name: &str) -> Option<&'static FormatRow> {
    FORMATS.iter().find(|f| f.name == name)
}

/// The names custom outputs may give, for error messages.
pub fn format_names() -> String {
    FORMATS
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per video codec: the CRF a custom file output gets when it names none, the largest CRF the
/// encoder takes, and how much of the H.264 ladder's bitrate a rung needs for the same picture
/// (HEVC and AV1 compress better; the usual rule of thumb is 60 % and 50 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoDefaults {
    pub default_crf: Option<u32>,
    pub max_crf: u32,
    pub ladder_percent: u32,
}

pub fn video_defaults(codec: VideoCodec) -> VideoDefaults {
    let (default_crf, max_crf, ladder_percent) = match codec {
        V::H264 => (Some(23), 51, 100),
        V::H265 => (Some(28), 51, 60),
        V::Vp9 => (Some(33), 63, 60),
        V::Av1 => (Some(35), 63, 50),
        V::Mjpeg | V::Copy => (None, 63, 100),
    };
    VideoDefaults {
        default_crf,
        max_crf,
        ladder_percent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_has_its_default_audio_and_names_are_unique() {
        for f in FORMATS {
            if let Some(a) = f.default_audio {
                assert!(f.audio.contains(&a), "{}", f.name);
            }
            assert_eq!(FORMATS.iter().filter(|g| g.name == f.name).count(), 1);
            // A ladder re-encodes every rung: copying a stream cannot make several sizes.
            if f.is_ladder() {
                assert!(!f.video.contains(&V::Copy), "{}", f.name);
                assert!(!f.video.is_empty(), "{}", f.name);
            }
        }
    }

    #[test]
    fn ts_hls_is_h264_only_and_fmp4_packages_take_hevc_and_av1() {
        assert_eq!(format("hls").unwrap().video, &[V::H264]);
        for p in ["hls-cmaf", "dash", "cmaf"] {
            let f = format(p).unwrap();
            assert!(
                f.video.contains(&V::H265) && f.video.contains(&V::Av1),
                "{p}"
            );
        }
        assert!(format("webm").unwrap().video.iter().all(|c| *c != V::H264));
        assert!(format("nope").is_none());
    }
}
