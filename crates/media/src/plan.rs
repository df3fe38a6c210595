//! Presets and custom outputs, validated into [`Rendition`]s: the encoder-independent description
//! of one output that [`crate::argv`] turns into an ffmpeg command line.
//!
//! An output has two independent dimensions: what is encoded (`video`, `audio`: codecs and
//! their settings) and how it is packaged ([`Packaging`]: one file, or a ladder of rungs cut
//! into segments behind HLS and/or DASH manifests). What may go with what is one table,
//! [`crate::compat`].

use crate::compat::{self, FormatKind, FormatRow};
use reelay_protocol::{OutputSpec, PresetInfo};

/// A single-file container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Mp4,
    Mov,
    Mkv,
    Webm,
    M4a,
    Jpeg,
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
    /// `audio.loudness`: measured by the worker first, then (normalise) a `loudnorm` filter
    /// with the measured values in this output's audio chain. Custom outputs only.
    pub loudness: Option<crate::loudness::LoudnessMode>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rung {
    /// The rung's shorter display side (720 is 1280x720 landscape, 720x1280 portrait).
    pub short_side: u32,
    pub video_kbps: u32,
    pub audio_kbps: u32,
}

/// The rungs of an adaptive-bitrate output and the length of its segments. Every rung is cut
/// at the same instants (keyframes forced on the segment grid), so a player can switch rungs
/// at any segment boundary.
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    pub rungs: Vec<Rung>,
    pub segment_seconds: u32,
}

/// How HLS segments are stored: MPEG-TS (HLS v3, every player) or fragmented MP4 (CMAF,
/// HLS v7, needed for HEVC/AV1 and shared with DASH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segments {
    Ts,
    Fmp4,
}

/// Scrub-preview sprite sheets (see [`crate::storyboard`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Storyboard {
    pub interval_seconds: f64,
    pub columns: u32,
    pub rows: u32,
    /// Each tile's shorter side (90: 160x90 landscape, 90x160 portrait).
    pub tile_short_side: u32,
}

/// How an output is packaged: the dimension independent of codecs.
#[derive(Debug, Clone, PartialEq)]
pub enum Packaging {
    /// One file in a container.
    File(Container),
    /// An HLS ladder: `master.m3u8`, a media playlist and segments per rung.
    Hls { ladder: Ladder, segments: Segments },
    /// A DASH ladder: `manifest.mpd` over fMP4 segments (video rungs, one audio track).
    Dash(Ladder),
    /// CMAF: ONE set of fMP4 segments that both an HLS master playlist (`master.m3u8`) and a
    /// DASH manifest (`manifest.mpd`) reference, so both kinds of player are served without a
    /// second copy of the media.
    Cmaf(Ladder),
    /// JPEG sprite sheets and `storyboard.vtt`, the WebVTT thumbnails track over them.
    Storyboard(Storyboard),
}

impl Packaging {
    pub fn ladder(&self) -> Option<&Ladder> {
        match self {
            Packaging::File(_) | Packaging::Storyboard(_) => None,
            Packaging::Hls { ladder, .. } | Packaging::Dash(ladder) | Packaging::Cmaf(ladder) => {
                Some(ladder)
            }
        }
    }

    /// The name users see for it (`reelay presets`, a custom output's `container`).
    pub fn format_name(&self) -> &'static str {
        match self {
            Packaging::File(Container::Jpeg) => "jpeg",
            Packaging::File(c) => c.ext(),
            Packaging::Hls {
                segments: Segments::Ts,
                ..
            } => "hls",
            Packaging::Hls {
                segments: Segments::Fmp4,
                ..
            } => "hls-cmaf",
            Packaging::Dash(_) => "dash",
            Packaging::Cmaf(_) => "cmaf",
            Packaging::Storyboard(_) => "storyboard",
        }
    }
}

/// The HLS master playlist of a ladder output, inside its directory.
pub const HLS_MASTER: &str = "master.m3u8";
/// The DASH manifest of a ladder output, inside its directory.
pub const DASH_MANIFEST: &str = "manifest.mpd";

/// One validated output.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    /// File name for single-file outputs (`mp4-720p.mp4`), directory name for ladders (`hls-abr`).
    pub name: String,
    pub packaging: Packaging,
    /// The video encode: for a file its settings, for a ladder its codec (the rungs set sizes
    /// and bitrates). `None` drops video (audio-only files).
    pub video: Option<VideoPlan>,
    /// Audio is always optional at run time: an input without audio simply gives none.
    pub audio: Option<AudioPlan>,
    pub trim_start: f64,
    pub trim_duration: Option<f64>,
}

impl Rendition {
    pub fn needs_video(&self) -> bool {
        self.video.is_some()
    }
    /// Audio-only outputs cannot do without audio.
    pub fn needs_audio(&self) -> bool {
        !self.needs_video()
    }
    /// The container of a single-file output; `None` for ladders.
    pub fn container(&self) -> Option<Container> {
        match self.packaging {
            Packaging::File(c) => Some(c),
            _ => None,
        }
    }
    pub fn ladder(&self) -> Option<&Ladder> {
        self.packaging.ladder()
    }
    /// The files a user opens first: the file itself, or a ladder's manifests (both the HLS
    /// master playlist and the DASH manifest for CMAF). These are the job's listed outputs.
    pub fn primary_files(&self) -> Vec<String> {
        let inside = |f: &str| format!("{}/{f}", self.name);
        match &self.packaging {
            Packaging::File(c) => vec![format!("{}.{}", self.name, c.ext())],
            Packaging::Hls { .. } => vec![inside(HLS_MASTER)],
            Packaging::Dash(_) => vec![inside(DASH_MANIFEST)],
            Packaging::Cmaf(_) => vec![inside(HLS_MASTER), inside(DASH_MANIFEST)],
            Packaging::Storyboard(_) => vec![inside(crate::storyboard::TRACK)],
        }
    }
    /// The first of [`Rendition::primary_files`]: the file, or the HLS master playlist where
    /// there is one.
    pub fn primary_file(&self) -> String {
        self.primary_files().remove(0)
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

fn h264(short_side: u32, crf: Option<u32>, maxrate: Option<u32>) -> VideoPlan {
    VideoPlan {
        codec: VideoCodec::H264,
        max_width: None,
        max_height: None,
        short_side: Some(short_side),
        crf,
        bitrate_kbps: None,
        maxrate_kbps: maxrate,
        fps: None,
    }
}

fn aac(kbps: u32) -> AudioPlan {
    AudioPlan {
        codec: AudioCodec::Aac,
        bitrate_kbps: kbps,
        loudness: None,
    }
}

fn mp4(name: &str, short_side: u32, maxrate: u32) -> Rendition {
    Rendition {
        name: name.into(),
        packaging: Packaging::File(Container::Mp4),
        video: Some(h264(short_side, Some(23), Some(maxrate))),
        audio: Some(aac(128)),
        trim_start: 0.0,
        trim_duration: None,
    }
}

/// The H.264 ladder every streaming preset uses: rungs with short side 1080/720/480/360 (none
/// above the input's), 4 s segments. Other codecs scale its bitrates (see [`compat`]).
pub fn default_ladder() -> Ladder {
    Ladder {
        rungs: vec![
            Rung {
                short_side: 1080,
                video_kbps: 5000,
                audio_kbps: 128,
            },
            Rung {
                short_side: 720,
                video_kbps: 2800,
                audio_kbps: 128,
            },
            Rung {
                short_side: 480,
                video_kbps: 1400,
                audio_kbps: 96,
            },
            Rung {
                short_side: 360,
                video_kbps: 800,
                audio_kbps: 96,
            },
        ],
        segment_seconds: 4,
    }
}

pub fn default_storyboard() -> Storyboard {
    Storyboard {
        interval_seconds: 2.0,
        columns: 5,
        rows: 5,
        tile_short_side: 90,
    }
}

/// A ladder output: the codec is the video plan's, the rungs the ladder's.
fn streaming(name: &str, codec: VideoCodec, packaging: Packaging) -> Rendition {
    Rendition {
        name: name.into(),
        packaging,
        video: Some(VideoPlan {
            codec,
            short_side: None,
            crf: None,
            maxrate_kbps: None,
            ..h264(0, None, None)
        }),
        audio: Some(aac(128)),
        trim_start: 0.0,
        trim_duration: None,
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
        description: "HLS ladder (rungs with short side 1080/720/480/360, none above the input's), 4 s keyframe-aligned MPEG-TS segments, master.m3u8",
        build: || {
            streaming(
                "hls-abr",
                VideoCodec::H264,
                Packaging::Hls { ladder: default_ladder(), segments: Segments::Ts },
            )
        },
    },
    Preset {
        name: "hls-cmaf",
        description: "HLS v7 ladder in fMP4 (CMAF) segments (H.264 rungs with short side 1080/720/480/360, none above the input's), 4 s keyframe-aligned, master.m3u8",
        build: || {
            streaming(
                "hls-cmaf",
                VideoCodec::H264,
                Packaging::Hls { ladder: default_ladder(), segments: Segments::Fmp4 },
            )
        },
    },
    Preset {
        name: "dash",
        description: "MPEG-DASH ladder (H.264 rungs with short side 1080/720/480/360, none above the input's, one AAC track), 4 s keyframe-aligned fMP4 segments, manifest.mpd",
        build: || streaming("dash", VideoCodec::H264, Packaging::Dash(default_ladder())),
    },
    Preset {
        name: "cmaf",
        description: "ONE set of fMP4 (CMAF) segments for HLS and DASH: H.264 rungs with short side 1080/720/480/360 (none above the input's), one AAC track, master.m3u8 and manifest.mpd",
        build: || streaming("cmaf", VideoCodec::H264, Packaging::Cmaf(default_ladder())),
    },
    Preset {
        name: "storyboard",
        description: "Scrub previews: JPEG sprite sheets of 5x5 tiles (one frame every 2 s, tile short side 90) and storyboard.vtt, the WebVTT thumbnails track (#xywh=)",
        build: || Rendition {
            name: "storyboard".into(),
            packaging: Packaging::Storyboard(default_storyboard()),
            video: Some(VideoPlan {
                codec: VideoCodec::Mjpeg,
                ..h264(90, None, None)
            }),
            audio: None,
            trim_start: 0.0,
            trim_duration: None,
        },
    },
    Preset {
        name: "webm-vp9-720p",
        description: "VP9 + Opus in WebM, short side at most 720",
        build: || Rendition {
            packaging: Packaging::File(Container::Webm),
            video: Some(VideoPlan {
                codec: VideoCodec::Vp9,
                ..h264(720, Some(33), None)
            }),
            audio: Some(AudioPlan { codec: AudioCodec::Opus, bitrate_kbps: 96, loudness: None }),
            ..mp4("webm-vp9-720p", 720, 0)
        },
    },
    Preset {
        name: "av1-720p",
        description: "AV1 (SVT-AV1) + AAC in MP4, short side at most 720, faststart",
        build: || Rendition {
            video: Some(VideoPlan {
                codec: VideoCodec::Av1,
                ..h264(720, Some(35), None)
            }),
            ..mp4("av1-720p", 720, 0)
        },
    },
    Preset {
        name: "thumbnail",
        description: "One JPEG frame from the first second (or the middle of shorter clips), short side at most 640",
        build: || Rendition {
            name: "thumbnail".into(),
            packaging: Packaging::File(Container::Jpeg),
            video: Some(VideoPlan {
                codec: VideoCodec::Mjpeg,
                ..h264(640, None, None)
            }),
            audio: None,
            trim_start: 0.0,
            trim_duration: None,
        },
    },
    Preset {
        name: "audio-aac",
        description: "The audio alone, AAC 128 kb/s in M4A",
        build: || Rendition {
            packaging: Packaging::File(Container::M4a),
            video: None,
            ..mp4("audio-aac", 0, 0)
        },
    },
];

pub fn preset_list() -> Vec<PresetInfo> {
    PRESETS
        .iter()
        .map(|p| PresetInfo {
            name: p.name.into(),
            description: p.description.into(),
            container: (p.build)().packaging.format_name().into(),
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
            ("storyboard", o.storyboard.is_some()),
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
        if let Some(v) = &o.loudness {
            preset_loudness(&mut r, v, name, &format!("{at}.loudness"))?;
        }
        return Ok(r);
    }
    if o.loudness.is_some() {
        return Err(err(
            format!("{at}.loudness"),
            "only with a preset; a custom output sets audio.loudness",
        ));
    }
    custom(o, at)
}

/// A preset output's `loudness`: the preset's own audio, normalised or measured. A preset
/// without audio (a thumbnail, a storyboard, a video-only one) cannot carry it.
fn preset_loudness(
    r: &mut Rendition,
    v: &serde_json::Value,
    preset: &str,
    at: &str,
) -> Result<(), SpecError> {
    let mode = crate::loudness::parse_mode(v).map_err(|m| err(at.to_string(), m))?;
    match r.audio.as_mut() {
        Some(a) if a.codec != AudioCodec::Copy => {
            a.loudness = Some(mode);
            Ok(())
        }
        _ => Err(err(
            at.to_string(),
            format!("preset {preset:?} has no encoded audio to measure or normalise"),
        )),
    }
}

const NAME_RULE: &str =
    "must be 1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit, without '..'";

fn parse_video_codec(s: &str) -> Option<VideoCodec> {
    Some(match s {
        "h264" => VideoCodec::H264,
        "h265" => VideoCodec::H265,
        "vp9" => VideoCodec::Vp9,
        "av1" => VideoCodec::Av1,
        "copy" => VideoCodec::Copy,
        _ => return None,
    })
}

fn parse_audio_codec(s: &str) -> Option<AudioCodec> {
    Some(match s {
        "aac" => AudioCodec::Aac,
        "opus" => AudioCodec::Opus,
        "copy" => AudioCodec::Copy,
        _ => return None,
    })
}

/// The packaging a custom output's `container` names, with the ladder scaled for the codec.
fn packaging_of(row: &FormatRow, codec: Option<VideoCodec>) -> Packaging {
    let Some(container) = Container::parse(row.name) else {
        let mut ladder = default_ladder();
        let pct = compat::video_defaults(codec.unwrap_or(VideoCodec::H264)).ladder_percent;
        for r in &mut ladder.rungs {
            r.video_kbps = r.video_kbps * pct / 100;
        }
        return match row.name {
            "hls" => Packaging::Hls {
                ladder,
                segments: Segments::Ts,
            },
            "hls-cmaf" => Packaging::Hls {
                ladder,
                segments: Segments::Fmp4,
            },
            "dash" => Packaging::Dash(ladder),
            _ => Packaging::Cmaf(ladder),
        };
    };
    Packaging::File(container)
}

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
            format!("required: one of {}", compat::format_names()),
        )
    })?;
    let row = compat::format(container_s).ok_or_else(|| {
        err(
            format!("{at}.container"),
            format!("must be one of {}", compat::format_names()),
        )
    })?;

    if row.kind == FormatKind::Storyboard {
        return custom_storyboard(o, name, at);
    }
    if o.storyboard.is_some() {
        return Err(err(
            format!("{at}.storyboard"),
            "only with \"container\": \"storyboard\"",
        ));
    }
    let video = match &o.video {
        // A ladder without a video section gets the default codec; a file keeps no video.
        None if row.is_ladder() => Some(VideoPlan {
            codec: VideoCodec::H264,
            ..h264(0, None, None)
        }),
        None => None,
        Some(v) if v.codec == "none" => {
            if row.is_ladder() {
                return Err(err(
                    format!("{at}.video.codec"),
                    format!("{container_s} is a video ladder: it needs a video codec"),
                ));
            }
            None
        }
        Some(v) => Some(custom_video(v, row, &format!("{at}.video"))?),
    };

    let audio = match &o.audio {
        Some(a) if a.codec == "none" => None,
        Some(a) => {
            let f = |x: &str| format!("{at}.audio.{x}");
            let codec = parse_audio_codec(&a.codec)
                .ok_or_else(|| err(f("codec"), "must be one of aac, opus, copy, none"))?;
            if !row.audio.contains(&codec) {
                return Err(err(
                    f("codec"),
                    format!("{} cannot go in {container_s}", a.codec),
                ));
            }
            if codec == AudioCodec::Copy && a.bitrate_kbps.is_some() {
                return Err(err(f("bitrate_kbps"), "not allowed with codec copy"));
            }
            if row.is_ladder() && a.bitrate_kbps.is_some() {
                return Err(err(
                    f("bitrate_kbps"),
                    format!("not allowed for {container_s}: the ladder's rungs set the bitrates"),
                ));
            }
            let bitrate = a.bitrate_kbps.unwrap_or(128);
            if !(16..=512).contains(&bitrate) {
                return Err(err(f("bitrate_kbps"), "must be between 16 and 512"));
            }
            let loudness = match &a.loudness {
                None => None,
                Some(_) if codec == AudioCodec::Copy => {
                    return Err(err(
                        f("loudness"),
                        "not allowed with codec copy: copied audio is not filtered",
                    ))
                }
                Some(v) => Some(crate::loudness::parse_mode(v).map_err(|m| err(f("loudness"), m))?),
            };
            Some(AudioPlan {
                codec,
                bitrate_kbps: bitrate,
                loudness,
            })
        }
        // No audio section: keep the audio, in the format's usual codec.
        None => row.default_audio.map(|codec| AudioPlan {
            codec,
            bitrate_kbps: 128,
            loudness: None,
        }),
    };

    if video.is_none() && audio.is_none() {
        return Err(err(at.to_string(), "an output needs video, audio or both"));
    }

    let (trim_start, trim_duration) = trim(o, at)?;
    Ok(Rendition {
        name: name.to_string(),
        packaging: packaging_of(row, video.as_ref().map(|v| v.codec)),
        video,
        audio,
        trim_start,
        trim_duration,
    })
}

/// A custom storyboard: the layout from `storyboard`, no video or audio section.
fn custom_storyboard(o: &OutputSpec, name: &str, at: &str) -> Result<Rendition, SpecError> {
    for (field, set) in [("video", o.video.is_some()), ("audio", o.audio.is_some())] {
        if set {
            return Err(err(
                format!("{at}.{field}"),
                "not allowed for a storyboard (JPEG tiles; set its layout in storyboard)",
            ));
        }
    }
    let d = default_storyboard();
    let spec = o.storyboard.clone().unwrap_or_default();
    let f = |x: &str| format!("{at}.storyboard.{x}");
    let interval = spec.interval_seconds.unwrap_or(d.interval_seconds);
    if !(interval.is_finite() && (0.5..=600.0).contains(&interval)) {
        return Err(err(f("interval_seconds"), "must be between 0.5 and 600"));
    }
    let columns = spec.columns.unwrap_or(d.columns);
    if !(1..=20).contains(&columns) {
        return Err(err(f("columns"), "must be between 1 and 20"));
    }
    let rows = spec.rows.unwrap_or(d.rows);
    if !(1..=20).contains(&rows) {
        return Err(err(f("rows"), "must be between 1 and 20"));
    }
    let short = spec.tile_short_side.unwrap_or(d.tile_short_side);
    if !(16..=720).contains(&short) {
        return Err(err(f("tile_short_side"), "must be between 16 and 720"));
    }
    let (trim_start, trim_duration) = trim(o, at)?;
    Ok(Rendition {
        name: name.to_string(),
        packaging: Packaging::Storyboard(Storyboard {
            interval_seconds: interval,
            columns,
            rows,
            tile_short_side: short,
        }),
        video: Some(VideoPlan {
            codec: VideoCodec::Mjpeg,
            ..h264(short, None, None)
        }),
        audio: None,
        trim_start,
        trim_duration,
    })
}

fn trim(o: &OutputSpec, at: &str) -> Result<(f64, Option<f64>), SpecError> {
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
    Ok((trim_start, trim_duration))
}

fn custom_video(
    v: &reelay_protocol::VideoSpec,
    row: &FormatRow,
    at: &str,
) -> Result<VideoPlan, SpecError> {
    let f = |x: &str| format!("{at}.{x}");
    if row.video.is_empty() {
        return Err(err(
            at.to_string(),
            format!(
                "{} holds audio only: omit video or use codec none",
                row.name
            ),
        ));
    }
    let codec = parse_video_codec(&v.codec).ok_or_else(|| {
        err(
            f("codec"),
            "must be one of h264, h265, vp9, av1, copy, none",
        )
    })?;
    if !row.video.contains(&codec) {
        return Err(err(
            f("codec"),
            format!("{} cannot go in {}", v.codec, row.name),
        ));
    }
    let fixed = [
        ("width", v.width.is_some()),
        ("height", v.height.is_some()),
        ("crf", v.crf.is_some()),
        ("bitrate_kbps", v.bitrate_kbps.is_some()),
        ("fps", v.fps.is_some()),
    ];
    if codec == VideoCodec::Copy || row.is_ladder() {
        if let Some((x, _)) = fixed.iter().find(|(_, set)| *set) {
            return Err(err(
                f(x),
                if row.is_ladder() {
                    format!(
                        "not allowed for {}: the ladder's rungs set sizes and bitrates",
                        row.name
                    )
                } else {
                    "not allowed with codec copy".to_string()
                },
            ));
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
    let defaults = compat::video_defaults(codec);
    if let Some(c) = v.crf {
        if c > defaults.max_crf {
            return Err(err(
                f("crf"),
                format!("must be between 0 and {} for {}", defaults.max_crf, v.codec),
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
    Ok(VideoPlan {
        codec,
        max_width: v.width,
        max_height: v.height,
        short_side: None,
        crf: if v.bitrate_kbps.is_some() || row.is_ladder() {
            None
        } else {
            v.crf.or(defaults.default_crf)
        },
        bitrate_kbps: v.bitrate_kbps,
        maxrate_kbps: None,
        fps: v.fps,
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
            "hls-cmaf",
            "dash",
            "cmaf",
            "storyboard",
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
                loudness: None,
            }),
            ..custom_spec(v("none"))
        };
        assert_eq!(field_of(&[nothing]), "outputs[0]");
        let opus_mp4 = OutputSpec {
            audio: Some(AudioSpec {
                codec: "opus".into(),
                bitrate_kbps: None,
                loudness: None,
            }),
            ..custom_spec(v("h264"))
        };
        assert_eq!(field_of(&[opus_mp4]), "outputs[0].audio.codec");
    }

    /// A preset output asks for loudness with its own `loudness` field; a preset without
    /// encoded audio, a bad value, or the field on a custom output names `loudness`.
    #[test]
    fn preset_outputs_take_loudness() {
        let loud = |preset: &str, v: serde_json::Value| OutputSpec {
            loudness: Some(v),
            ..OutputSpec::preset(preset)
        };
        for p in ["mp4-720p", "hls-abr", "cmaf", "audio-aac"] {
            let r = resolve_outputs(&[loud(p, serde_json::json!("streaming"))]).unwrap();
            assert_eq!(
                r[0].audio.as_ref().unwrap().loudness,
                Some(crate::loudness::LoudnessMode::Normalize(
                    crate::loudness::STREAMING
                )),
                "{p}"
            );
        }
        let r = resolve_outputs(&[loud("mp4-360p", serde_json::json!("measure"))]).unwrap();
        assert_eq!(
            r[0].audio.as_ref().unwrap().loudness,
            Some(crate::loudness::LoudnessMode::Measure)
        );
        // Without the field a preset does no loudness work.
        let r = resolve_outputs(&[OutputSpec::preset("mp4-720p")]).unwrap();
        assert_eq!(r[0].audio.as_ref().unwrap().loudness, None);
        for bad in [
            loud("thumbnail", serde_json::json!("streaming")),
            loud("storyboard", serde_json::json!("ebu-r128")),
            loud("mp4-720p", serde_json::json!("loud")),
            loud("mp4-720p", serde_json::json!(-100)),
            OutputSpec {
                loudness: Some(serde_json::json!("streaming")),
                ..custom_spec(VideoSpec {
                    codec: "h264".into(),
                    ..Default::default()
                })
            },
        ] {
            assert_eq!(field_of(&[bad]), "outputs[0].loudness");
        }
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

    /// Packaging is its own dimension: each streaming preset is one `Packaging` value with
    /// the H.264 ladder, and CMAF lists both manifests as its outputs.
    #[test]
    fn streaming_presets_are_packagings_of_one_ladder() {
        let p = |n: &str| preset(n).unwrap();
        assert!(matches!(
            p("hls-abr").packaging,
            Packaging::Hls {
                segments: Segments::Ts,
                ..
            }
        ));
        assert!(matches!(
            p("hls-cmaf").packaging,
            Packaging::Hls {
                segments: Segments::Fmp4,
                ..
            }
        ));
        assert!(matches!(p("dash").packaging, Packaging::Dash(_)));
        assert!(matches!(p("cmaf").packaging, Packaging::Cmaf(_)));
        for n in ["hls-abr", "hls-cmaf", "dash", "cmaf"] {
            let r = p(n);
            assert_eq!(r.ladder(), Some(&default_ladder()), "{n}");
            assert_eq!(r.video.as_ref().unwrap().codec, VideoCodec::H264, "{n}");
            assert!(r.needs_video() && r.container().is_none(), "{n}");
        }
        assert_eq!(p("dash").primary_files(), vec!["dash/manifest.mpd"]);
        assert_eq!(
            p("cmaf").primary_files(),
            vec!["cmaf/master.m3u8", "cmaf/manifest.mpd"]
        );
        let list = preset_list();
        let container = |n: &str| list.iter().find(|p| p.name == n).unwrap().container.clone();
        assert_eq!(container("hls-abr"), "hls");
        assert_eq!(container("cmaf"), "cmaf");
        assert_eq!(container("thumbnail"), "jpeg");
    }

    /// HEVC and AV1 ladders are custom outputs of the fMP4 packagings, with bitrates from the
    /// compatibility table; MPEG-TS HLS stays H.264 and a ladder refuses per-file settings.
    #[test]
    fn custom_ladders_take_hevc_and_av1_in_fmp4_only() {
        let ladder = |container: &str, codec: &str| OutputSpec {
            name: Some("l".into()),
            container: Some(container.into()),
            video: Some(VideoSpec {
                codec: codec.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = resolve_outputs(&[ladder("cmaf", "h265")])
            .unwrap()
            .remove(0);
        assert_eq!(r.video.as_ref().unwrap().codec, VideoCodec::H265);
        assert_eq!(r.ladder().unwrap().rungs[0].video_kbps, 3000);
        let r = resolve_outputs(&[ladder("dash", "av1")]).unwrap().remove(0);
        assert!(matches!(r.packaging, Packaging::Dash(_)));
        assert_eq!(r.ladder().unwrap().rungs[0].video_kbps, 2500);
        let r = resolve_outputs(&[ladder("hls-cmaf", "av1")])
            .unwrap()
            .remove(0);
        assert!(matches!(
            r.packaging,
            Packaging::Hls {
                segments: Segments::Fmp4,
                ..
            }
        ));
        assert_eq!(field_of(&[ladder("hls", "h265")]), "outputs[0].video.codec");
        assert_eq!(field_of(&[ladder("cmaf", "vp9")]), "outputs[0].video.codec");
        assert_eq!(
            field_of(&[ladder("cmaf", "copy")]),
            "outputs[0].video.codec"
        );
        assert_eq!(
            field_of(&[ladder("cmaf", "none")]),
            "outputs[0].video.codec"
        );
        let sized = OutputSpec {
            video: Some(VideoSpec {
                codec: "h264".into(),
                height: Some(480),
                ..Default::default()
            }),
            ..ladder("cmaf", "h264")
        };
        let e = resolve_outputs(&[sized]).unwrap_err();
        assert_eq!(e.field, "outputs[0].video.height");
        assert!(e.message.contains("rungs"), "{e}");
        let opus = OutputSpec {
            audio: Some(AudioSpec {
                codec: "opus".into(),
                bitrate_kbps: None,
                loudness: None,
            }),
            ..ladder("dash", "h264")
        };
        assert_eq!(field_of(&[opus]), "outputs[0].audio.codec");
        // No video section: the default H.264 ladder.
        let bare = OutputSpec {
            video: None,
            ..ladder("cmaf", "h264")
        };
        let r = resolve_outputs(&[bare]).unwrap().remove(0);
        assert_eq!(r.video.as_ref().unwrap().codec, VideoCodec::H264);
        assert_eq!(r.ladder(), Some(&default_ladder()));
    }

    #[test]
    fn storyboards_take_a_layout_and_refuse_media_sections() {
        let r = preset("storyboard").unwrap();
        assert_eq!(r.primary_files(), vec!["storyboard/storyboard.vtt"]);
        assert!(r.needs_video() && r.audio.is_none());
        let spec = |sb: reelay_protocol::StoryboardSpec| OutputSpec {
            name: Some("scrub".into()),
            container: Some("storyboard".into()),
            storyboard: Some(sb),
            ..Default::default()
        };
        let r = resolve_outputs(&[spec(reelay_protocol::StoryboardSpec {
            interval_seconds: Some(1.0),
            columns: Some(4),
            rows: Some(3),
            tile_short_side: Some(72),
        })])
        .unwrap()
        .remove(0);
        assert_eq!(
            r.packaging,
            Packaging::Storyboard(Storyboard {
                interval_seconds: 1.0,
                columns: 4,
                rows: 3,
                tile_short_side: 72
            })
        );
        let bad = spec(reelay_protocol::StoryboardSpec {
            columns: Some(0),
            ..Default::default()
        });
        assert_eq!(field_of(&[bad]), "outputs[0].storyboard.columns");
        let with_video = OutputSpec {
            video: Some(VideoSpec {
                codec: "h264".into(),
                ..Default::default()
            }),
            ..spec(Default::default())
        };
        assert_eq!(field_of(&[with_video]), "outputs[0].video");
        let stray = OutputSpec {
            storyboard: Some(Default::default()),
            ..custom_spec(VideoSpec {
                codec: "h264".into(),
                ..Default::default()
            })
        };
        assert_eq!(field_of(&[stray]), "outputs[0].storyboard");
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
