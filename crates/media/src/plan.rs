//! Presets and custom outputs, validated into [`Rendition`]s: the encoder-independent description
//! of one output that [`crate::argv`] turns into an ffmpeg command line.

use reelay_protocol::{OutputSpec, PresetInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Mp4,
    Mov,
    Mkv,
    Webm,
    M4a,
    Jpeg,
    Hls,
}

impl Container {
    pub fn ext(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Mov => "mov",
            Container::Mkv => "mkv",
            Container::Webm => "webm",
            Container::M4a => "m4a",
            Container::Jpeg => "jpg",
            Container::Hls => "m3u8",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "mp4" => Container::Mp4,
            "mov" => Container::Mov,
            "mkv" => Container::Mkv,
            "webm" => Container::Webm,
            "m4a" => Container::M4a,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
    Vp9,
    Av1,
    Mjpeg,
    Copy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Aac,
    Opus,
    Copy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VideoPlan {
    pub codec: VideoCodec,
    /// Box the output must fit in; never upscaled, aspect kept. Custom outputs give it.
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
    /// Bound on the shorter display side: what "720p" means to users and platforms, so a
    /// portrait phone clip becomes 720x1280 rather than 406x720. Presets give it.
    pub short_side: Option<u32>,
    pub crf: Option<u32>,
    pub bitrate_kbps: Option<u32>,
    /// Cap on the bitrate of a CRF encode, so a preset stays streamable.
    pub maxrate_kbps: Option<u32>,
    pub fps: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AudioPlan {
    pub codec: AudioCodec,
    pub bitrate_kbps: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rung {
    /// The rung's shorter display side (720 is 1280x720 landscape, 720x1280 portrait).
    pub short_side: u32,
    pub video_kbps: u32,
    pub audio_kbps: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HlsPlan {
    pub rungs: Vec<Rung>,
    pub segment_seconds: u32,
}

/// One validated output.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    /// File name for single-file outputs (`mp4-720p.mp4`), directory name for HLS (`hls-abr`).
    pub name: String,
    pub container: Container,
    /// `None` drops video.
    pub video: Option<VideoPlan>,
    /// Audio is always optional at run time: an input without audio simply gives none.
    pub audio: Option<AudioPlan>,
    pub trim_start: f64,
    pub trim_duration: Option<f64>,
    pub hls: Option<HlsPlan>,
}

impl Rendition {
    pub fn needs_video(&self) -> bool {
        self.video.is_some() || self.hls.is_some()
    }
    /// Audio-only outputs cannot do without audio.
    pub fn needs_audio(&self) -> bool {
        !self.needs_video()
    }
    /// The file a user opens first: the file itself, or the HLS master playlist.
    pub fn primary_file(&self) -> String {
        match self.container {
            Container::Hls => format!("{}/master.m3u8", self.name),
            c => format!("{}.{}", self.name, c.ext()),
        }
    }
}

/// A spec field that is wrong, named by its JSON path so the 422 answer can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

const MAX_OUTPUTS: usize = 16;

struct Preset {
    name: &'static str,
    description: &'static str,
    build: fn() -> Rendition,
}

fn mp4(name: &str, short_side: u32, maxrate: u32) -> Rendition {
    Rendition {
        name: name.into(),
        container: Container::Mp4,
        video: Some(VideoPlan {
            codec: VideoCodec::H264,
            max_width: None,
            max_height: None,
            short_side: Some(short_side),
            crf: Some(23),
            bitrate_kbps: None,
            maxrate_kbps: Some(maxrate),
            fps: None,
        }),
        audio: Some(AudioPlan {
            codec: AudioCodec::Aac,
            bitrate_kbps: 128,
        }),
        trim_start: 0.0,
        trim_duration: None,
        hls: None,
    }
}

const PRESETS: &[Preset] = &[
    Preset {
        name: "mp4-1080p",
        description: "H.264 + AAC in MP4, short side at most 1080 (portrait too), faststart",
        build: || mp4("mp4-1080p", 1080, 6000),
    },
    Preset {
        name: "mp4-720p",
        description: "H.264 + AAC in MP4, short side at most 720 (portrait too), faststart",
        build: || mp4("mp4-720p", 720, 3500),
    },
    Preset {
        name: "mp4-480p",
        description: "H.264 + AAC in MP4, short side at most 480 (portrait too), faststart",
        build: || mp4("mp4-480p", 480, 1500),
    },
    Preset {
        name: "mp4-360p",
        description: "H.264 + AAC in MP4, short side at most 360 (portrait too), faststart",
        build: || mp4("mp4-360p", 360, 900),
    },
    Preset {
        name: "hls-abr",
        description: "HLS ladder (rungs with short side 1080/720/480/360, none above the input's), 4 s keyframe-aligned segments, master.m3u8",
        build: || Rendition {
            hls: Some(HlsPlan {
                rungs: vec![
                    Rung { short_side: 1080, video_kbps: 5000, audio_kbps: 128 },
                    Rung { short_side: 720, video_kbps: 2800, audio_kbps: 128 },
                    Rung { short_side: 480, video_kbps: 1400, audio_kbps: 96 },
                    Rung { short_side: 360, video_kbps: 800, audio_kbps: 96 },
                ],
                segment_seconds: 4,
            }),
            container: Container::Hls,
            video: None,
            ..mp4("hls-abr", 1080, 5000)
        },
    },
    Preset {
        name: "webm-vp9-720p",
        description: "VP9 + Opus in WebM, short side at most 720",
        build: || Rendition {
            container: Container::Webm,
            video: Some(VideoPlan {
                codec: VideoCodec::Vp9,
                crf: Some(33),
                maxrate_kbps: None,
                ..mp4("", 720, 0).video.unwrap_or_else(|| unreachable!())
            }),
            audio: Some(AudioPlan { codec: AudioCodec::Opus, bitrate_kbps: 96 }),
            ..mp4("webm-vp9-720p", 720, 0)
        },
    },
    Preset {
        name: "av1-720p",
        description: "AV1 (SVT-AV1) + AAC in MP4, short side at most 720, faststart",
        build: || Rendition {
            video: Some(VideoPlan {
                codec: VideoCodec::Av1,
                crf: Some(35),
                maxrate_kbps: None,
                ..mp4("", 720, 0).video.unwrap_or_else(|| unreachable!())
            }),
            ..mp4("av1-720p", 720, 0)
        },
    },
    Preset {
        name: "thumbnail",
        description: "One JPEG frame from the first second (or the middle of shorter clips), short side at most 640",
        build: || Rendition {
            name: "thumbnail".into(),
            container: Container::Jpeg,
            video: Some(VideoPlan {
                codec: VideoCodec::Mjpeg,
                max_width: None,
                max_height: None,
                short_side: Some(640),
                crf: None,
                bitrate_kbps: None,
                maxrate_kbps: None,
                fps: None,
            }),
            audio: None,
            trim_start: 0.0,
            trim_duration: None,
            hls: None,
        },
    },
    Preset {
        name: "audio-aac",
        description: "The audio alone, AAC 128 kb/s in M4A",
        build: || Rendition {
            container: Container::M4a,
            video: None,
            ..mp4("audio-aac", 0, 0)
        },
    },
];

pub fn preset_list() -> Vec<PresetInfo> {
    PRESETS
        .iter()
        .map(|p| {
            let r = (p.build)();
            PresetInfo {
                name: p.name.into(),
                description: p.description.into(),
                container: r
                    .container
                    .ext()
                    .replace("m3u8", "hls")
                    .replace("jpg", "jpeg"),
            }
        })
        .collect()
}

pub fn preset(name: &str) -> Option<Rendition> {
    PRESETS.iter().find(|p| p.name == name).map(|p| (p.build)())
}

/// Output names end up in storage keys and URLs: a strict alphabet rules out traversal.
pub fn valid_output_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.contains("..")
}

/// Validates every output of a spec. Errors name the first offending field.
pub fn resolve_outputs(outputs: &[OutputSpec]) -> Result<Vec<Rendition>, SpecError> {
    if outputs.is_empty() {
        return Err(err("outputs", "at least one output is required"));
    }
    if outputs.len() > MAX_OUTPUTS {
        return Err(err(
            "outputs",
            format!("at most {MAX_OUTPUTS} outputs per job"),
        ));
    }
    let mut out: Vec<Rendition> = Vec::with_capacity(outputs.len());
    for (i, o) in outputs.iter().enumerate() {
        let r = resolve_one(o, &format!("outputs[{i}]"))?;
        if out.iter().any(|p| p.name == r.name) {
            return Err(err(
                format!("outputs[{i}].name"),
                format!("duplicate output name {:?}", r.name),
            ));
        }
        out.push(r);
    }
    Ok(out)
}

fn resolve_one(o: &OutputSpec, at: &str) -> Result<Rendition, SpecError> {
    if let Some(name) = &o.preset {
        for (field, set) in [
            ("container", o.container.is_some()),
            ("video", o.video.is_some()),
            ("audio", o.audio.is_some()),
            ("trim", o.trim.is_some()),
        ] {
            if set {
                return Err(err(
                    format!("{at}.{field}"),
                    "not allowed together with a preset",
                ));
            }
        }
        let mut r = preset(name).ok_or_else(|| {
            err(
                format!("{at}.preset"),
                format!(
                    "unknown preset {:?}; known: {}",
                    name.chars().take(64).collect::<String>(),
                    PRESETS
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if let Some(n) = &o.name {
            if !valid_output_name(n) {
                return Err(err(format!("{at}.name"), NAME_RULE));
            }
            r.name = n.clone();
        }
        return Ok(r);
    }
    custom(o, at)
}

const NAME_RULE: &str =
    "must be 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit, without '..'";

fn custom(o: &OutputSpec, at: &str) -> Result<Rendition, SpecError> {
    let name = o.name.as_deref().ok_or_else(|| {
        err(
            format!("{at}.name"),
            "required for a custom output (or give a preset)",
        )
    })?;
    if !valid_output_name(name) {
        return Err(err(format!("{at}.name"), NAME_RULE));
    }
    let container_s = o.container.as_deref().ok_or_else(|| {
        err(
            format!("{at}.container"),
            "required: mp4, mov, mkv, webm or m4a",
        )
    })?;
    let container = Container::parse(container_s).ok_or_else(|| {
        err(
            format!("{at}.container"),
            "must be one of mp4, mov, mkv, webm, m4a",
        )
    })?;

    let video = match &o.video {
        None => None,
        Some(v) if v.codec == "none" => None,
        Some(v) => {
            let f = |x: &str| format!("{at}.video.{x}");
            let codec = match v.codec.as_str() {
                "h264" => VideoCodec::H264,
                "h265" => VideoCodec::H265,
                "vp9" => VideoCodec::Vp9,
                "av1" => VideoCodec::Av1,
                "copy" => VideoCodec::Copy,
                _ => {
                    return Err(err(
                        f("codec"),
                        "must be one of h264, h265, vp9, av1, copy, none",
                    ))
                }
            };
            let allowed = match container {
                Container::Webm => {
                    matches!(codec, VideoCodec::Vp9 | VideoCodec::Av1 | VideoCodec::Copy)
                }
                Container::M4a => false,
                _ => true,
            };
            if !allowed {
                return Err(err(
                    f("codec"),
                    format!("{} cannot go in {container_s}", v.codec),
                ));
            }
            if codec == VideoCodec::Copy {
                for (x, set) in [
                    ("width", v.width.is_some()),
                    ("height", v.height.is_some()),
                    ("crf", v.crf.is_some()),
                    ("bitrate_kbps", v.bitrate_kbps.is_some()),
                    ("fps", v.fps.is_some()),
                ] {
                    if set {
                        return Err(err(f(x), "not allowed with codec copy"));
                    }
                }
            }
            if let Some(w) = v.width {
                if !(16..=7680).contains(&w) {
                    return Err(err(f("width"), "must be between 16 and 7680"));
                }
            }
            if let Some(h) = v.height {
                if !(16..=4320).contains(&h) {
                    return Err(err(f("height"), "must be between 16 and 4320"));
                }
            }
            if let Some(c) = v.crf {
                let max = if matches!(codec, VideoCodec::H264 | VideoCodec::H265) {
                    51
                } else {
                    63
                };
                if c > max {
                    return Err(err(
                        f("crf"),
                        format!("must be between 0 and {max} for {}", v.codec),
                    ));
                }
            }
            if v.crf.is_some() && v.bitrate_kbps.is_some() {
                return Err(err(f("bitrate_kbps"), "give crf or bitrate_kbps, not both"));
            }
            if let Some(b) = v.bitrate_kbps {
                if !(50..=100_000).contains(&b) {
                    return Err(err(f("bitrate_kbps"), "must be between 50 and 100000"));
                }
            }
            if let Some(r) = v.fps {
                if !(r.is_finite() && (1.0..=120.0).contains(&r)) {
                    return Err(err(f("fps"), "must be between 1 and 120"));
                }
            }
            let default_crf = match codec {
                VideoCodec::H264 => Some(23),
                VideoCodec::H265 => Some(28),
                VideoCodec::Vp9 => Some(33),
                VideoCodec::Av1 => Some(35),
                _ => None,
            };
            Some(VideoPlan {
                codec,
                max_width: v.width,
                max_height: v.height,
                short_side: None,
                crf: if v.bitrate_kbps.is_some() {
                    None
                } else {
                    v.crf.or(default_crf)
                },
                bitrate_kbps: v.bitrate_kbps,
                maxrate_kbps: None,
                fps: v.fps,
            })
        }
    };

    let audio = match &o.audio {
        Some(a) if a.codec == "none" => None,
        Some(a) => {
            let f = |x: &str| format!("{at}.audio.{x}");
            let codec = match a.codec.as_str() {
                "aac" => AudioCodec::Aac,
                "opus" => AudioCodec::Opus,
                "copy" => AudioCodec::Copy,
                _ => return Err(err(f("codec"), "must be one of aac, opus, copy, none")),
            };
            let allowed = match container {
                Container::Webm => matches!(codec, AudioCodec::Opus | AudioCodec::Copy),
                Container::Mp4 | Container::M4a | Container::Mov => {
                    matches!(codec, AudioCodec::Aac | AudioCodec::Copy)
                }
                _ => true,
            };
            if !allowed {
                return Err(err(
                    f("codec"),
                    format!("{} cannot go in {container_s}", a.codec),
                ));
            }
            if codec == AudioCodec::Copy && a.bitrate_kbps.is_some() {
                return Err(err(f("bitrate_kbps"), "not allowed with codec copy"));
            }
            let bitrate = a.bitrate_kbps.unwrap_or(128);
            if !(16..=512).contains(&bitrate) {
                return Err(err(f("bitrate_kbps"), "must be between 16 and 512"));
            }
            Some(AudioPlan {
                codec,
                bitrate_kbps: bitrate,
            })
        }
        // No audio section: keep the audio, in the container's usual codec.
        None => Some(AudioPlan {
            codec: if container == Container::Webm {
                AudioCodec::Opus
            } else {
                AudioCodec::Aac
            },
            bitrate_kbps: 128,
        }),
    };

    if container == Container::M4a && video.is_some() {
        return Err(err(
            format!("{at}.video"),
            "m4a holds audio only: omit video or use codec none",
        ));
    }
    if video.is_none() && audio.is_none() {
        return Err(err(at.to_string(), "an output needs video, audio or both"));
    }
    if container == Container::Webm && video.is_none() && o.video.is_none() {
        // webm without a video section is allowed (audio-only webm), nothing to do.
    }

    let (mut trim_start, mut trim_duration) = (0.0, None);
    if let Some(t) = &o.trim {
        if !(t.start.is_finite() && t.start >= 0.0) {
            return Err(err(
                format!("{at}.trim.start"),
                "must be a number of seconds >= 0",
            ));
        }
        if let Some(d) = t.duration {
            if !(d.is_finite() && d > 0.0) {
                return Err(err(
                    format!("{at}.trim.duration"),
                    "must be a number of seconds > 0",
                ));
            }
        }
        trim_start = t.start;
        trim_duration = t.duration;
    }
    Ok(Rendition {
        name: name.to_string(),
        container,
        video,
        audio,
        trim_start,
        trim_duration,
        hls: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reelay_protocol::{AudioSpec, TrimSpec, VideoSpec};

    fn field_of(outputs: &[OutputSpec]) -> String {
        resolve_outputs(outputs).unwrap_err().field
    }

    #[test]
    fn every_listed_preset_resolves() {
        let list = preset_list();
        for required in [
            "mp4-1080p",
            "mp4-720p",
            "mp4-480p",
            "mp4-360p",
            "hls-abr",
            "webm-vp9-720p",
            "av1-720p",
            "thumbnail",
            "audio-aac",
        ] {
            assert!(
                list.iter().any(|p| p.name == required),
                "{required} missing"
            );
            let r = resolve_outputs(&[OutputSpec::preset(required)]).unwrap();
            assert_eq!(r[0].name, required);
        }
        assert_eq!(
            preset("hls-abr").unwrap().primary_file(),
            "hls-abr/master.m3u8"
        );
        // `reelay presets` shows these descriptions: each picture preset says what it bounds.
        for p in list.iter().filter(|p| p.name != "audio-aac") {
            assert!(p.description.contains("short side"), "{}", p.description);
        }
        assert!(preset("audio-aac").unwrap().needs_audio());
        assert!(!preset("mp4-720p").unwrap().needs_audio());
    }

    #[test]
    fn unknown_preset_and_mixed_fields_name_the_field() {
        assert_eq!(
            field_of(&[OutputSpec::preset("mp4-9000p")]),
            "outputs[0].preset"
        );
        let mixed = OutputSpec {
            container: Some("mp4".into()),
            ..OutputSpec::preset("mp4-720p")
        };
        assert_eq!(field_of(&[mixed]), "outputs[0].container");
        assert_eq!(field_of(&[]), "outputs");
        let dup = [
            OutputSpec::preset("thumbnail"),
            OutputSpec::preset("thumbnail"),
        ];
        assert_eq!(field_of(&dup), "outputs[1].name");
    }

    fn custom_spec(video: VideoSpec) -> OutputSpec {
        OutputSpec {
            name: Some("c".into()),
            container: Some("mp4".into()),
            video: Some(video),
            ..Default::default()
        }
    }

    #[test]
    fn custom_output_validation_names_each_bad_field() {
        let v = |codec: &str| VideoSpec {
            codec: codec.into(),
            ..Default::default()
        };
        assert_eq!(
            field_of(&[custom_spec(v("mpeg2"))]),
            "outputs[0].video.codec"
        );
        assert_eq!(
            field_of(&[custom_spec(VideoSpec {
                crf: Some(99),
                ..v("h264")
            })]),
            "outputs[0].video.crf"
        );
        assert_eq!(
            field_of(&[custom_spec(VideoSpec {
                width: Some(5),
                ..v("h264")
            })]),
            "outputs[0].video.width"
        );
        assert_eq!(
            field_of(&[custom_spec(VideoSpec {
                crf: Some(20),
                bitrate_kbps: Some(900),
                ..v("h264")
            })]),
            "outputs[0].video.bitrate_kbps"
        );
        assert_eq!(
            field_of(&[custom_spec(VideoSpec {
                fps: Some(f64::NAN),
                ..v("h264")
            })]),
            "outputs[0].video.fps"
        );
        assert_eq!(
            field_of(&[custom_spec(VideoSpec {
                height: Some(240),
                ..v("copy")
            })]),
            "outputs[0].video.height"
        );
        let webm_h264 = OutputSpec {
            container: Some("webm".into()),
            ..custom_spec(v("h264"))
        };
        assert_eq!(field_of(&[webm_h264]), "outputs[0].video.codec");
        let bad_name = OutputSpec {
            name: Some("../etc/passwd".into()),
            ..custom_spec(v("h264"))
        };
        assert_eq!(field_of(&[bad_name]), "outputs[0].name");
        let no_container = OutputSpec {
            container: None,
            ..custom_spec(v("h264"))
        };
        assert_eq!(field_of(&[no_container]), "outputs[0].container");
        let neg_trim = OutputSpec {
            trim: Some(TrimSpec {
                start: -1.0,
                duration: None,
            }),
            ..custom_spec(v("h264"))
        };
        assert_eq!(field_of(&[neg_trim]), "outputs[0].trim.start");
        let nothing = OutputSpec {
            audio: Some(AudioSpec {
                codec: "none".into(),
                bitrate_kbps: None,
            }),
            ..custom_spec(v("none"))
        };
        assert_eq!(field_of(&[nothing]), "outputs[0]");
        let opus_mp4 = OutputSpec {
            audio: Some(AudioSpec {
                codec: "opus".into(),
                bitrate_kbps: None,
            }),
            ..custom_spec(v("h264"))
        };
        assert_eq!(field_of(&[opus_mp4]), "outputs[0].audio.codec");
    }

    #[test]
    fn valid_custom_output_keeps_its_settings() {
        let spec = OutputSpec {
            trim: Some(TrimSpec {
                start: 0.5,
                duration: Some(1.0),
            }),
            ..custom_spec(VideoSpec {
                codec: "h265".into(),
                height: Some(240),
                bitrate_kbps: Some(500),
                fps: Some(15.0),
                ..Default::default()
            })
        };
        let r = resolve_outputs(&[spec]).unwrap().remove(0);
        assert_eq!(r.primary_file(), "c.mp4");
        let v = r.video.unwrap();
        assert_eq!(
            (v.codec, v.max_height, v.crf, v.bitrate_kbps),
            (VideoCodec::H265, Some(240), None, Some(500))
        );
        assert_eq!((r.trim_start, r.trim_duration), (0.5, Some(1.0)));
        assert_eq!(r.audio.unwrap().codec, AudioCodec::Aac);
    }

    #[test]
    fn output_names_reject_traversal_and_odd_bytes() {
        for bad in [
            "",
            ".hidden",
            "a/b",
            "a\\b",
            "..",
            "a..b",
            "x y",
            "ü",
            &"a".repeat(65),
        ] {
            assert!(!valid_output_name(bad), "{bad:?} accepted");
        }
        for good in ["a", "mp4-720p", "clip_1.small"] {
            assert!(valid_output_name(good));
        }
    }
}
