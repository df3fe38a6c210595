//! Watermarks: an image (PNG or JPEG) laid over every video rendition at the same relative place.
//!
//! Sizes and margins are fractions of the rendition's width, so a 240p rung and a 1080p rung of
//! one ladder carry the same-looking mark; the pixel positions are computed here (a pure function)
//! rather than with ffmpeg expressions, so tests can say where the mark must be.

use crate::policy::InputPolicy;
use crate::probe::{MediaInfo, StreamKind};
use serde::{Deserialize, Serialize};

/// Where the mark sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Position {
    TopLeft,
    TopRight,
    BottomLeft,
    #[default]
    BottomRight,
    Center,
}

/// The job's `"watermark"` options (the image itself is a multipart part named `watermark`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatermarkSpec {
    pub position: Position,
    /// Gap to the nearest edges, as a fraction of the video width (0..=0.25).
    pub margin: f64,
    /// Width of the mark as a fraction of the video width (0.01..=1).
    pub scale: f64,
    /// 0 (invisible) ..= 1 (opaque).
    pub opacity: f64,
}

impl Default for WatermarkSpec {
    fn default() -> Self {
        WatermarkSpec {
            position: Position::BottomRight,
            margin: 0.03,
            scale: 0.15,
            opacity: 0.8,
        }
    }
}

/// Largest watermark image accepted, bytes: a logo, not a video.
pub const MAX_IMAGE_BYTES: u64 = 2 << 20;
/// Largest watermark image side, pixels.
pub const MAX_IMAGE_SIDE: u32 = 4096;
/// Demuxers a watermark image may be opened with (ffprobe's names for PNG and JPEG files).
pub const IMAGE_FORMATS: &[&str] = &["png_pipe", "jpeg_pipe"];

impl WatermarkSpec {
    /// The first field out of range, as (field, message) for a 422 answer.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let check = |ok: bool, field: &'static str, msg: &str| {
            if ok {
                Ok(())
            } else {
                Err((field, msg.to_string()))
            }
        };
        check(
            (0.0..=0.25).contains(&self.margin),
            "margin",
            "must be between 0 and 0.25 of the video width",
        )?;
        check(
            (0.01..=1.0).contains(&self.scale),
            "scale",
            "must be between 0.01 and 1 of the video width",
        )?;
        check(
            (0.0..=1.0).contains(&self.opacity),
            "opacity",
            "must be between 0 and 1",
        )
    }

    /// The mark's size and top-left corner on a `video_w`×`video_h` picture, for a mark image of
    /// `image_w`×`image_h`. Sizes are even (yuv420p chroma) and at least 2; the mark never
    /// leaves the picture.
    pub fn placement(
        &self,
        (video_w, video_h): (u32, u32),
        (image_w, image_h): (u32, u32),
    ) -> Placement {
        let even = |v: f64| ((v / 2.0).round() as u32 * 2).max(2);
        let w = even(video_w as f64 * self.scale).min(video_w & !1);
        let h = even(w as f64 * image_h.max(1) as f64 / image_w.max(1) as f64).min(video_h & !1);
        let m = (video_w as f64 * self.margin).round() as u32;
        let (free_x, free_y) = (video_w.saturating_sub(w), video_h.saturating_sub(h));
        let (x, y) = match self.position {
            Position::TopLeft => (m, m),
            Position::TopRight => (free_x.saturating_sub(m), m),
            Position::BottomLeft => (m, free_y.saturating_sub(m)),
            Position::BottomRight => (free_x.saturating_sub(m), free_y.saturating_sub(m)),
            Position::Center => (free_x / 2, free_y / 2),
        };
        Placement {
            x: x.min(free_x),
            y: y.min(free_y),
            width: w,
            height: h,
        }
    }

    /// Filter-graph text that lays input `image` (a label such as `1:v`) over `base` and names
    /// the result `out`, for a picture of `video` size.
    pub fn overlay_filter(
        &self,
        image: &str,
        base: &str,
        out: &str,
        video: (u32, u32),
        image_size: (u32, u32),
    ) -> String {
        let p = self.placement(video, image_size);
        format!(
            "[{image}]scale={w}:{h},format=rgba,colorchannelmixer=aa={a:.3}[{out}_wm];\
             [{base}][{out}_wm]overlay=x={x}:y={y}:format=auto[{out}]",
            w = p.width,
            h = p.height,
            a = self.opacity,
            x = p.x,
            y = p.y,
        )
    }
}

/// Why a watermark image was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("the watermark image is larger than {MAX_IMAGE_BYTES} bytes")]
    TooLarge,
    #[error("the watermark is not a PNG or JPEG image")]
    NotAnImage,
    #[error("the watermark image is {0}x{1}; at most {MAX_IMAGE_SIDE} pixels a side")]
    TooManyPixels(u32, u32),
}

impl ImageError {
    pub fn code(&self) -> &'static str {
        match self {
            ImageError::TooLarge => "watermark_too_large",
            ImageError::NotAnImage => "watermark_unsupported",
            ImageError::TooManyPixels(..) => "watermark_too_large",
        }
    }
}

/// The policy a watermark image is probed (and later decoded) with: the two still-image
/// demuxers only, and pictures no larger than [`MAX_IMAGE_SIDE`] a side, whatever the
/// cluster allows for videos.
pub fn image_policy(base: &InputPolicy) -> InputPolicy {
    InputPolicy {
        allowed_formats: IMAGE_FORMATS.iter().map(|f| f.to_string()).collect(),
        max_width: MAX_IMAGE_SIDE,
        max_height: MAX_IMAGE_SIDE,
        max_bytes: MAX_IMAGE_BYTES,
        max_streams: 1,
        ..base.clone()
    }
}

/// A probed image as a watermark: one PNG or JPEG picture of at most [`MAX_IMAGE_SIDE`] a side.
pub fn check_image(info: &MediaInfo) -> Result<Mark, ImageError> {
    let demuxer = IMAGE_FORMATS
        .iter()
        .find(|f| info.format_name == **f)
        .ok_or(ImageError::NotAnImage)?;
    let [v] = info.streams.as_slice() else {
        return Err(ImageError::NotAnImage);
    };
    if v.kind != StreamKind::Video || !matches!(v.codec.as_str(), "png" | "mjpeg") {
        return Err(ImageError::NotAnImage);
    }
    let (w, h) = (v.width.unwrap_or(0), v.height.unwrap_or(0));
    if w == 0 || h == 0 {
        return Err(ImageError::NotAnImage);
    }
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(ImageError::TooManyPixels(w, h));
    }
    Ok(Mark {
        demuxer,
        size: (w, h),
    })
}

/// A checked watermark image: the demuxer to force when ffmpeg opens it, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub demuxer: &'static str,
    pub size: (u32, u32),
}

/// Where a mark lands, in pixels of the output picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_relative_place_on_every_rung() {
        let spec = WatermarkSpec::default();
        let big = spec.placement((1920, 1080), (400, 100));
        let small = spec.placement((640, 360), (400, 100));
        assert_eq!((big.width, big.height), (288, 72));
        assert_eq!((big.x, big.y), (1920 - 288 - 58, 1080 - 72 - 58));
        // One third of the size, one third of the distances (to the pixel).
        assert_eq!((small.width, small.height), (96, 24));
        assert!((small.x as i64 - big.x as i64 / 3).abs() <= 1);
        assert!((small.y as i64 - big.y as i64 / 3).abs() <= 1);
    }

    #[test]
    fn corners_and_centre_stay_inside() {
        for position in [
            Position::TopLeft,
            Position::TopRight,
            Position::BottomLeft,
            Position::BottomRight,
            Position::Center,
        ] {
            for scale in [0.01, 0.5, 1.0] {
                let spec = WatermarkSpec {
                    position,
                    margin: 0.25,
                    scale,
                    opacity: 1.0,
                };
                let p = spec.placement((320, 240), (50, 400));
                assert!(p.x + p.width <= 320 && p.y + p.height <= 240, "{p:?}");
                assert!(p.width.is_multiple_of(2) && p.height.is_multiple_of(2) && p.width >= 2);
            }
        }
        let c = WatermarkSpec {
            position: Position::Center,
            ..WatermarkSpec::default()
        }
        .placement((200, 100), (10, 10));
        assert_eq!((c.x, c.y, c.width), (85, 35, 30));
    }

    #[test]
    fn validation_names_the_field() {
        assert!(WatermarkSpec::default().validate().is_ok());
        let bad = |f: fn(&mut WatermarkSpec)| {
            let mut s = WatermarkSpec::default();
            f(&mut s);
            s.validate().unwrap_err().0
        };
        assert_eq!(bad(|s| s.opacity = 1.5), "opacity");
        assert_eq!(bad(|s| s.scale = 0.0), "scale");
        assert_eq!(bad(|s| s.margin = -0.1), "margin");
        assert_eq!(bad(|s| s.margin = f64::NAN), "margin");
        let parsed: Result<WatermarkSpec, _> =
            serde_json::from_str(r#"{"position":"top-left","opacity":0.5,"bogus":1}"#);
        assert!(parsed.is_err(), "unknown fields are refused");
        let parsed: WatermarkSpec =
            serde_json::from_str(r#"{"position":"top-left","opacity":0.5}"#).unwrap();
        assert_eq!(parsed.position, Position::TopLeft);
        assert_eq!(parsed.scale, 0.15);
    }

    #[test]
    fn only_one_small_png_or_jpeg_picture_is_a_mark() {
        let probe = |format: &str, codec: &str, w: u32, h: u32| {
            crate::probe::parse_probe_json(&format!(
                r#"{{"streams":[{{"index":0,"codec_type":"video","codec_name":"{codec}","width":{w},"height":{h}}}],
                   "format":{{"format_name":"{format}"}}}}"#
            ))
            .unwrap()
        };
        assert_eq!(
            check_image(&probe("png_pipe", "png", 80, 40)),
            Ok(Mark {
                demuxer: "png_pipe",
                size: (80, 40)
            })
        );
        assert!(check_image(&probe("jpeg_pipe", "mjpeg", 4096, 4096)).is_ok());
        assert_eq!(
            check_image(&probe("png_pipe", "png", 4097, 8)),
            Err(ImageError::TooManyPixels(4097, 8))
        );
        assert_eq!(
            check_image(&probe("mov,mp4,m4a,3gp,3g2,mj2", "h264", 80, 40)),
            Err(ImageError::NotAnImage)
        );
        assert_eq!(
            check_image(&probe("png_pipe", "h264", 80, 40)),
            Err(ImageError::NotAnImage)
        );
        let policy = image_policy(&InputPolicy::default());
        assert_eq!(policy.allowed_formats, ["png_pipe", "jpeg_pipe"]);
        assert_eq!(
            (policy.max_width, policy.max_bytes),
            (MAX_IMAGE_SIDE, MAX_IMAGE_BYTES)
        );
    }

    #[test]
    fn filter_text() {
        let f = WatermarkSpec::default().overlay_filter("1:v", "v0", "v0w", (640, 360), (100, 100));
        assert_eq!(
            f,
            "[1:v]scale=96:96,format=rgba,colorchannelmixer=aa=0.800[v0w_wm];\
             [v0][v0w_wm]overlay=x=525:y=245:format=auto[v0w]"
        );
    }
}
