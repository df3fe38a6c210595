//! What inputs reelay accepts. A rejection is permanent: retrying cannot make a file acceptable.

use crate::probe::MediaInfo;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InputPolicy {
    pub max_bytes: u64,
    pub max_duration_seconds: f64,
    pub max_width: u32,
    pub max_height: u32,
    pub max_streams: usize,
    /// An encode whose output runs past the probed duration by more than this share of it, plus
    /// `duration_overrun_seconds`, is killed (`duration_mismatch`): the input holds more media
    /// than its header said, and the probe-time checks were made against the header.
    pub duration_overrun_ratio: f64,
    pub duration_overrun_seconds: f64,
    /// Demuxers ffprobe/ffmpeg may open. Playlist-like demuxers (hls, concat, image2, ...) are
    /// deliberately absent: they follow references to other files or URLs.
    pub allowed_formats: Vec<String>,
}

impl Default for InputPolicy {
    fn default() -> Self {
        InputPolicy {
            max_bytes: 20 << 30,
            max_duration_seconds: 4.0 * 3600.0,
            max_width: 7680,
            max_height: 4320,
            max_streams: 16,
            // Generous on purpose: some formats' durations are estimates (VBR MP3 without a
            // header, streams with gaps), and a real file must not fail for that.
            duration_overrun_ratio: 0.25,
            duration_overrun_seconds: 10.0,
            allowed_formats: [
                "mov", "matroska", "avi", "flv", "mpegts", "mpeg", "ogg", "wav", "mp3", "aac",
                "flac", "asf", "ivf", "m4v", "h264", "hevc",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        }
    }
}

/// Why an input was refused: a stable machine-readable `code` and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

/// What the requested outputs need from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    pub video: bool,
    pub audio: bool,
}

impl InputPolicy {
    /// The decoder's `-max_pixels`: no frame may be larger than the largest allowed picture.
    /// The probe only sees the first frames' size, and a stream may change it later.
    pub fn max_pixels(&self) -> u64 {
        u64::from(self.max_width) * u64::from(self.max_height)
    }

    /// Seconds of output past which an encode expected to last `expected` seconds is killed.
    pub fn out_time_limit(&self, expected: f64) -> f64 {
        let expected = if expected.is_finite() {
            expected.max(0.0)
        } else {
            0.0
        };
        expected * (1.0 + self.duration_overrun_ratio.max(0.0))
            + self.duration_overrun_seconds.max(0.0)
    }

    /// The byte-size check alone, usable before anything is probed (uploads, downloads).
    pub fn check_size(&self, size: u64) -> Result<(), Rejection> {
        if size == 0 {
            return Err(Rejection::new("empty_input", "the input file is empty"));
        }
        if size > self.max_bytes {
            return Err(Rejection::new(
                "input_too_large",
                format!(
                    "the input is {size} bytes; the limit is {} bytes",
                    self.max_bytes
                ),
            ));
        }
        Ok(())
    }

    pub fn check(&self, info: &MediaInfo, size: u64, needs: Needs) -> Result<(), Rejection> {
        self.check_size(size)?;
        let allowed = info
            .format_name
            .split(',')
            .any(|n| self.allowed_formats.iter().any(|a| a == n));
        if !allowed {
            return Err(Rejection::new(
                "unsupported_format",
                format!("input format {:?} is not allowed", info.demuxer()),
            ));
        }
        if info.streams.is_empty() {
            return Err(Rejection::new("corrupt_input", "the input has no streams"));
        }
        if info.streams.len() > self.max_streams {
            return Err(Rejection::new(
                "too_many_streams",
                format!(
                    "the input has {} streams; the limit is {}",
                    info.streams.len(),
                    self.max_streams
                ),
            ));
        }
        match info.best_duration() {
            None => {
                return Err(Rejection::new(
                    "corrupt_input",
                    "the input's duration cannot be determined",
                ))
            }
            Some(d) if d > self.max_duration_seconds => {
                return Err(Rejection::new(
                    "input_too_long",
                    format!(
                        "the input lasts {d:.1} s; the limit is {:.0} s",
                        self.max_duration_seconds
                    ),
                ))
            }
            Some(_) => {}
        }
        if needs.video {
            let Some(v) = info.video() else {
                return Err(Rejection::new(
                    "no_video_stream",
                    "the input has no video stream, and a requested output needs one",
                ));
            };
            let (Some(w), Some(h)) = (v.width, v.height) else {
                return Err(Rejection::new(
                    "corrupt_input",
                    "the video stream has no dimensions",
                ));
            };
            if w > self.max_width || h > self.max_height {
                return Err(Rejection::new(
                    "dimensions_too_large",
                    format!(
                        "the video is {w}x{h}; the limit is {}x{}",
                        self.max_width, self.max_height
                    ),
                ));
            }
        }
        if needs.audio && info.audio().is_none() {
            return Err(Rejection::new(
                "no_audio_stream",
                "the input has no audio stream, and a requested output is audio-only",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{StreamInfo, StreamKind};

    fn stream(kind: StreamKind, w: u32, h: u32) -> StreamInfo {
        StreamInfo {
            index: 0,
            kind,
            codec: "h264".into(),
            width: (w > 0).then_some(w),
            height: (h > 0).then_some(h),
            frame_rate: Some(25.0),
            rotation: 0,
            pix_fmt: None,
            channels: None,
            sample_rate: None,
            duration: None,
            attached_pic: false,
            field_order: Default::default(),
            language: None,
            title: None,
        }
    }

    fn info(format: &str, duration: f64, streams: Vec<StreamInfo>) -> MediaInfo {
        MediaInfo {
            format_name: format.into(),
            duration: Some(duration),
            bit_rate: None,
            streams,
        }
    }

    const V: Needs = Needs {
        video: true,
        audio: false,
    };

    #[test]
    fn accepts_a_normal_file() {
        let i = info("mov,mp4", 10.0, vec![stream(StreamKind::Video, 1920, 1080)]);
        assert_eq!(InputPolicy::default().check(&i, 1000, V), Ok(()));
    }

    #[test]
    fn each_rule_has_its_code() {
        let p = InputPolicy::default();
        let code = |i: &MediaInfo, size, needs| p.check(i, size, needs).unwrap_err().code;
        let ok = info("mov,mp4", 10.0, vec![stream(StreamKind::Video, 640, 480)]);
        assert_eq!(code(&ok, 0, V), "empty_input");
        assert_eq!(code(&ok, p.max_bytes + 1, V), "input_too_large");
        assert_eq!(
            code(&info("hls", 10.0, ok.streams.clone()), 10, V),
            "unsupported_format"
        );
        assert_eq!(
            code(&info("mov", 1e9, ok.streams.clone()), 10, V),
            "input_too_long"
        );
        assert_eq!(code(&info("mov", 10.0, vec![]), 10, V), "corrupt_input");
        let audio_only = info("mov", 10.0, vec![stream(StreamKind::Audio, 0, 0)]);
        assert_eq!(code(&audio_only, 10, V), "no_video_stream");
        assert_eq!(
            p.check(
                &audio_only,
                10,
                Needs {
                    video: false,
                    audio: true
                }
            ),
            Ok(())
        );
        assert_eq!(
            code(
                &ok,
                10,
                Needs {
                    video: false,
                    audio: true
                }
            ),
            "no_audio_stream"
        );
        let huge = info(
            "mov",
            10.0,
            vec![stream(StreamKind::Video, 100_000, 100_000)],
        );
        assert_eq!(code(&huge, 10, V), "dimensions_too_large");
        let many = info("mov", 10.0, vec![stream(StreamKind::Audio, 0, 0); 300]);
        assert_eq!(code(&many, 10, V), "too_many_streams");
        let mut nodur = ok.clone();
        nodur.duration = None;
        assert_eq!(code(&nodur, 10, V), "corrupt_input");
    }

    #[test]
    fn work_bounds_follow_the_policy() {
        let p = InputPolicy::default();
        assert_eq!(p.max_pixels(), 7680 * 4320);
        assert_eq!(p.out_time_limit(100.0), 135.0);
        assert_eq!(p.out_time_limit(0.0), 10.0);
        assert_eq!(p.out_time_limit(f64::NAN), 10.0);
        assert_eq!(p.out_time_limit(-5.0), 10.0);
    }

    #[test]
    fn cover_art_is_not_video() {
        let mut art = stream(StreamKind::Video, 300, 300);
        art.attached_pic = true;
        let i = info("mp3", 10.0, vec![stream(StreamKind::Audio, 0, 0), art]);
        assert_eq!(
            InputPolicy::default().check(&i, 10, V).unwrap_err().code,
            "no_video_stream"
        );
    }
}
