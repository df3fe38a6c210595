//! A [`Rendition`] plus the probed input becomes one ffmpeg command line. Pure, so every flag that
//! matters (allowlists, forced demuxer, scaling, keyframe alignment) is unit-tested without ffmpeg.

mod codec;
mod dash;
mod file;
mod hls;
mod ladder;
mod storyboard;

pub(crate) use codec::{muxer, video_codec_args};
pub use ladder::{ladder, rung_rate_control, rung_rate_control_for, RungRateControl};
pub use storyboard::tile_dims;

use crate::plan::{Container, Packaging, Rendition};
use crate::policy::InputPolicy;
use crate::probe::{FieldOrder, MediaInfo};
use crate::watermark::{Mark, WatermarkSpec};
use std::path::Path;

/// One ffmpeg run: its arguments (without the program name) and what progress is measured against.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub args: Vec<String>,
    /// Seconds of output expected, for progress = out_time / duration.
    pub duration: f64,
    /// Files or directories (relative to the output dir) this run creates.
    pub creates: String,
}

/// Fits the display size into an optional box, keeping the aspect ratio, never upscaling, and
/// rounding to even numbers because 4:2:0 chroma needs them.
pub fn fit_dims(w: u32, h: u32, max_w: Option<u32>, max_h: Option<u32>) -> (u32, u32) {
    let (wf, hf) = (w.max(1) as f64, h.max(1) as f64);
    let mut scale: f64 = 1.0;
    if let Some(mw) = max_w {
        scale = scale.min(mw as f64 / wf);
    }
    if let Some(mh) = max_h {
        scale = scale.min(mh as f64 / hf);
    }
    let even = |x: f64| ((x / 2.0).round() as u32 * 2).max(2);
    (even(wf * scale), even(hf * scale))
}

/// Scales so the shorter display side is at most `short`, whichever way the picture is turned:
/// "720p" means 1280x720 landscape and 720x1280 portrait. Never upscales (an odd size rounds
/// down to even, not up), keeps the aspect, and gives even sizes because 4:2:0 chroma needs them.
pub fn fit_short_side(w: u32, h: u32, short: u32) -> (u32, u32) {
    let even_down = |x: u32| (x & !1).max(2);
    let (w, h) = (w.max(1), h.max(1));
    let s = w.min(h);
    if s <= short {
        return (even_down(w), even_down(h));
    }
    let long = w.max(h);
    let scaled_long = (long as f64 * short as f64 / s as f64 / 2.0).round() as u32 * 2;
    let (new_short, new_long) = (even_down(short), even_down(scaled_long.min(long)));
    if w <= h {
        (new_short, new_long)
    } else {
        (new_long, new_short)
    }
}

/// Output paths are absolute paths we build ourselves (no `file:` prefix: the HLS muxer would then
/// fail to create its variant directories); being absolute, they can never parse as a protocol.
fn out_path(p: &Path) -> String {
    p.display().to_string()
}

fn s<T: ToString>(x: T) -> String {
    x.to_string()
}

/// Everything before the output options: the locked-down input, plus two bounds on the work
/// itself, because the policy checked only what the header and the first frames claim:
/// `-max_pixels` makes the decoders refuse any frame larger than the largest allowed picture
/// (a stream may switch sizes mid-way), and an input `-t` stops reading after the policy's
/// longest duration (a header may understate the length).
pub(crate) fn input_args(
    info: &MediaInfo,
    policy: &InputPolicy,
    input: &Path,
    start: f64,
) -> Vec<String> {
    let mut a: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-y",
        "-loglevel",
        "error",
        "-protocol_whitelist",
        "file,pipe",
    ]
    .map(String::from)
    .to_vec();
    a.extend([
        s("-format_whitelist"),
        policy.allowed_formats.join(","),
        s("-f"),
        s(info.demuxer()),
        s("-max_pixels"),
        s(policy.max_pixels()),
    ]);
    if start > 0.0 {
        a.extend([s("-ss"), format!("{start:.3}")]);
    }
    a.extend([
        s("-t"),
        format!("{:.3}", policy.max_duration_seconds),
        s("-i"),
        crate::file_url(input),
    ]);
    a
}

/// The deinterlacer for an interlaced input, `None` for progressive (or unknown: a stream whose
/// scan the probe and `idet` could not settle keeps what reelay always did, no filter).
///
/// `bwdif` (motion-adaptive, better than `yadif` on edges) with the parity stated, not read from
/// the frames' flags: a stream found interlaced by `idet` often carries progressive flags, and
/// `deint=all` for the same reason. It runs before any scaling, since scaling woven fields
/// smears the comb into every line.
///
/// `send_frame` (one frame per frame: 50i stays 25p, 59.94i stays 29.97p) unless the output asks
/// for more frames per second than the input has frames, where `send_field` (one frame per field,
/// 50p/59.94p) gives those extra frames real motion instead of `-r` duplicates. `send_frame` is the
/// default because every preset's bitrates, the HLS ladder's budget and its keyframe/segment
/// arithmetic assume the source's frame rate, and a progressive source of the same material
/// would come out at that rate too.
pub fn deinterlace_filter(info: &MediaInfo, out_fps: Option<f64>) -> Option<String> {
    let v = info.video()?;
    let parity = match v.field_order {
        FieldOrder::Tff => "tff",
        FieldOrder::Bff => "bff",
        FieldOrder::Progressive | FieldOrder::Unknown => return None,
    };
    let mode = match (out_fps, v.frame_rate) {
        (Some(out), Some(frames)) if out > frames * 1.01 => "send_field",
        _ => "send_frame",
    };
    Some(format!("bwdif=mode={mode}:parity={parity}:deint=all"))
}

/// Puts `filter` (a loudness correction worked out after measuring the input) into the audio
/// chain of every audio stream `inv` writes. The packagings map audio straight from the input, so
/// one output-wide `-af` reaches each of them (a file's track, every HLS variant's copy, the
/// DASH/CMAF track) without touching the video graph. Inserted among the output options, before
/// `-progress` and the target.
pub fn add_audio_filter(inv: &mut Invocation, filter: &str) {
    let at = inv
        .args
        .iter()
        .rposition(|a| a == "-progress")
        .unwrap_or(inv.args.len().saturating_sub(1));
    inv.args.insert(at, filter.to_string());
    inv.args.insert(at, s("-af"));
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArgvError(pub String);

/// Seconds of media an output covers: the input from the trim start, at most the trim length.
pub fn output_seconds(r: &Rendition, info: &MediaInfo) -> f64 {
    let total = info.best_duration().unwrap_or(0.0);
    let start = if r.container() == Some(Container::Jpeg) {
        (total / 2.0).min(1.0)
    } else {
        r.trim_start
    };
    let remaining = (total - start).max(0.0);
    match r.trim_duration {
        Some(d) => d.min(remaining),
        None => remaining,
    }
}

/// What a job adds to each of its renditions beyond the output spec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras<'a> {
    /// Laid over the picture of every video rendition: files, every rung of a ladder and every
    /// storyboard tile (a scrub preview is a picture of the video like any other).
    pub watermark: Option<Watermark<'a>>,
    /// Burn the caption script [`crate::captions::BURN_IN_FILE`] (in ffmpeg's working
    /// directory, named relatively so no path reaches the filter graph) into MP4 file outputs.
    pub burn_in: bool,
}

/// A checked watermark image and where it goes.
#[derive(Debug, Clone, Copy)]
pub struct Watermark<'a> {
    pub spec: WatermarkSpec,
    /// A file of the job's working directory, opened as ffmpeg's second input (`1:v`) with
    /// its probed demuxer forced and nothing else allowed.
    pub image: &'a Path,
    pub mark: Mark,
}

/// The watermark's input (`1:v`): the same fences as the main input, narrowed to the one
/// still-image demuxer the probe found, and the image size bound as the pixel bound.
fn watermark_input(w: &Watermark<'_>) -> Vec<String> {
    let side = u64::from(crate::watermark::MAX_IMAGE_SIDE);
    vec![
        s("-protocol_whitelist"),
        s("file"),
        s("-format_whitelist"),
        s(w.mark.demuxer),
        s("-f"),
        s(w.mark.demuxer),
        s("-max_pixels"),
        s(side * side),
        s("-i"),
        crate::file_url(w.image),
    ]
}

/// Builds the command for one rendition. `out_dir` is the job's output directory; the rendition
/// writes `out_dir/<primary_file>` (and, for a ladder, its playlists and segments beside it).
pub fn build(
    r: &Rendition,
    info: &MediaInfo,
    policy: &InputPolicy,
    input: &Path,
    out_dir: &Path,
) -> Result<Invocation, ArgvError> {
    build_with(r, info, policy, input, out_dir, Extras::default())
}

/// [`build`] with the job's [`Extras`].
pub fn build_with(
    r: &Rendition,
    info: &MediaInfo,
    policy: &InputPolicy,
    input: &Path,
    out_dir: &Path,
    extras: Extras<'_>,
) -> Result<Invocation, ArgvError> {
    let total = info.best_duration().unwrap_or(0.0);
    let is_thumb = r.container() == Some(Container::Jpeg);
    // A thumbnail comes from 1 s in, or the middle of a shorter clip.
    let start = if is_thumb {
        (total / 2.0).min(1.0)
    } else {
        r.trim_start
    };
    if start > 0.0 && start >= total && total > 0.0 {
        return Err(ArgvError(format!(
            "trim start {start:.3} s is past the end of the {total:.3} s input"
        )));
    }
    let duration = output_seconds(r, info);
    let mut a = input_args(info, policy, input, start);
    let mark = extras.watermark.filter(|_| r.video.is_some());
    if let Some(w) = &mark {
        a.extend(watermark_input(w));
    }
    if let Some(d) = r.trim_duration {
        a.extend([s("-t"), format!("{d:.3}")]);
    }
    // Each packaging adds its own maps, encoders and muxer, and names the path ffmpeg writes.
    let (target, creates) = match &r.packaging {
        Packaging::File(c) => (
            file::args(r, *c, info, mark.as_ref(), extras.burn_in, out_dir, &mut a)?,
            r.primary_file(),
        ),
        Packaging::Hls { ladder, segments } => (
            hls::args(r, ladder, *segments, info, mark.as_ref(), out_dir, &mut a)?,
            r.name.clone(),
        ),
        Packaging::Dash(ladder) => (
            dash::args(r, ladder, false, info, mark.as_ref(), out_dir, &mut a)?,
            r.name.clone(),
        ),
        Packaging::Cmaf(ladder) => (
            dash::args(r, ladder, true, info, mark.as_ref(), out_dir, &mut a)?,
            r.name.clone(),
        ),
        Packaging::Storyboard(sb) => (
            storyboard::args(r, sb, info, mark.as_ref(), out_dir, &mut a)?,
            r.name.clone(),
        ),
    };
    a.extend([s("-progress"), s("pipe:1"), s("-nostats"), target]);
    let duration = match &r.packaging {
        _ if is_thumb => 0.0,
        // ffmpeg times sheets, not frames: each lasts `per_sheet` intervals, so its out_time
        // reaches the end of the last sheet, which progress and the overrun bound must expect.
        Packaging::Storyboard(sb) => storyboard::sheets_span(sb, duration),
        _ => duration,
    };
    Ok(Invocation {
        args: a,
        duration,
        creates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{preset, VideoCodec};
    use crate::probe::parse_probe_json;

    fn info(w: u32, h: u32, rotate: i32, audio: bool) -> MediaInfo {
        let audio_stream = if audio {
            r#",{"index":1,"codec_type":"audio","codec_name":"aac","channels":2,"sample_rate":"48000"}"#
        } else {
            ""
        };
        parse_probe_json(&format!(
            r#"{{"streams":[{{"index":0,"codec_type":"video","codec_name":"h264","width":{w},"height":{h},
               "side_data_list":[{{"rotation":{rotate}}}]}}{audio_stream}],
               "format":{{"format_name":"mov,mp4,m4a","duration":"10.0"}}}}"#
        ))
        .unwrap()
    }

    /// A 25 fps stream with ffprobe's `field_order`.
    fn scanned(w: u32, h: u32, field_order: &str) -> MediaInfo {
        parse_probe_json(&format!(
            r#"{{"streams":[{{"index":0,"codec_type":"video","codec_name":"mpeg2video","width":{w},"height":{h},
               "avg_frame_rate":"25/1","field_order":"{field_order}"}},
               {{"index":1,"codec_type":"audio","codec_name":"mp2","channels":2,"sample_rate":"48000"}}],
               "format":{{"format_name":"mpegts","duration":"10.0"}}}}"#
        ))
        .unwrap()
    }

    fn argv(r: &Rendition, i: &MediaInfo) -> Vec<String> {
        build(
            r,
            i,
            &InputPolicy::default(),
            Path::new("/w/input"),
            Path::new("/w/out"),
        )
        .unwrap()
        .args
    }

    fn after<'a>(a: &'a [String], flag: &str) -> &'a str {
        let i = a
            .iter()
            .position(|x| x == flag)
            .unwrap_or_else(|| panic!("{flag} missing in {a:?}"));
        &a[i + 1]
    }

    #[test]
    fn fit_keeps_aspect_is_even_and_never_upscales() {
        assert_eq!(fit_dims(1920, 1080, None, Some(720)), (1280, 720));
        assert_eq!(fit_dims(320, 240, None, Some(1080)), (320, 240));
        assert_eq!(fit_dims(321, 241, None, None), (322, 242));
        assert_eq!(fit_dims(1080, 1920, None, Some(720)), (406, 720));
        assert_eq!(fit_dims(4000, 1000, Some(640), Some(640)), (640, 160));
        assert_eq!(fit_dims(1, 1, None, None), (2, 2));
    }

    #[test]
    fn ladder_keeps_rungs_up_to_input_height() {
        let rungs = preset("hls-abr").unwrap().ladder().unwrap().rungs.clone();
        let hs = |h| {
            ladder(&rungs, h)
                .iter()
                .map(|r| r.short_side)
                .collect::<Vec<_>>()
        };
        assert_eq!(hs(1080), vec![1080, 720, 480, 360]);
        assert_eq!(hs(720), vec![720, 480, 360]);
        assert_eq!(hs(480), vec![480, 360]);
        assert_eq!(hs(240), vec![240]);
    }

    #[test]
    fn input_is_locked_down_and_forced_to_the_probed_demuxer() {
        let a = argv(&preset("mp4-720p").unwrap(), &info(1920, 1080, 0, true));
        assert_eq!(after(&a, "-protocol_whitelist"), "file,pipe");
        assert!(after(&a, "-format_whitelist")
            .split(',')
            .all(|f| f != "hls" && f != "concat"));
        assert_eq!(after(&a, "-f"), "mov");
        assert_eq!(after(&a, "-i"), "file:/w/input");
        assert_eq!(after(&a, "-vf"), "scale=1280:720,setsar=1");
        assert_eq!(after(&a, "-c:v"), "libx264");
        assert_eq!(after(&a, "-movflags"), "+faststart");
        assert_eq!(a.last().unwrap(), "/w/out/mp4-720p.mp4");
        assert_eq!(after(&a, "-progress"), "pipe:1");
    }

    /// The work is bounded on every input, whatever the header claimed: reading stops after the
    /// policy's longest duration and no decoder accepts a frame above the largest picture.
    #[test]
    fn every_input_is_bounded_in_time_and_frame_size() {
        let policy = InputPolicy {
            max_duration_seconds: 90.0,
            max_width: 320,
            max_height: 240,
            ..InputPolicy::default()
        };
        for name in ["mp4-720p", "hls-abr", "thumbnail", "audio-aac"] {
            let a = build(
                &preset(name).unwrap(),
                &info(1920, 1080, 0, true),
                &policy,
                Path::new("/w/input"),
                Path::new("/w/out"),
            )
            .unwrap()
            .args;
            let input = a.iter().position(|x| x == "-i").unwrap();
            let before = |flag: &str| {
                a[..input]
                    .iter()
                    .position(|x| x == flag)
                    .map(|i| a[i + 1].as_str())
            };
            assert_eq!(before("-t"), Some("90.000"), "{name}: {a:?}");
            assert_eq!(before("-max_pixels"), Some("76800"), "{name}: {a:?}");
        }
    }

    #[test]
    fn rotated_input_scales_by_display_size() {
        // A phone's 1920x1080 stream with rotation metadata is a portrait picture.
        let a = argv(&preset("mp4-720p").unwrap(), &info(1920, 1080, -90, true));
        assert_eq!(after(&a, "-vf"), "scale=720:1280,setsar=1");
        let a = argv(&preset("mp4-720p").unwrap(), &info(1920, 1080, 90, true));
        assert_eq!(after(&a, "-vf"), "scale=720:1280,setsar=1");
    }

    #[test]
    fn short_side_bound_is_even_never_upscales_and_keeps_aspect() {
        assert_eq!(fit_short_side(1920, 1080, 720), (1280, 720));
        assert_eq!(fit_short_side(1080, 1920, 720), (720, 1280));
        assert_eq!(fit_short_side(1080, 1920, 1080), (1080, 1920));
        assert_eq!(fit_short_side(720, 1280, 1080), (720, 1280));
        // Odd sizes round down, never up past the input.
        assert_eq!(fit_short_side(321, 241, 720), (320, 240));
        assert_eq!(fit_short_side(1080, 1921, 720), (720, 1280));
        assert_eq!(fit_short_side(1000, 4000, 360), (360, 1440));
        assert_eq!(fit_short_side(1, 1, 720), (2, 2));
    }

    /// Every preset, the HLS rungs and the thumbnail bound the short side: a portrait clip gets
    /// the same number of pixels as the landscape one, turned.
    #[test]
    fn portrait_input_bounds_the_short_side_for_every_preset() {
        let portrait = info(1080, 1920, 0, true);
        for (name, scale) in [
            ("mp4-1080p", "scale=1080:1920,setsar=1"),
            ("mp4-720p", "scale=720:1280,setsar=1"),
            ("mp4-480p", "scale=480:854,setsar=1"),
            ("mp4-360p", "scale=360:640,setsar=1"),
            ("webm-vp9-720p", "scale=720:1280,setsar=1"),
            ("av1-720p", "scale=720:1280,setsar=1"),
            ("thumbnail", "scale=640:1138,setsar=1"),
        ] {
            let a = argv(&preset(name).unwrap(), &portrait);
            assert_eq!(after(&a, "-vf"), scale, "{name}");
        }
        let landscape = info(1920, 1080, 0, true);
        let a = argv(&preset("thumbnail").unwrap(), &landscape);
        assert_eq!(after(&a, "-vf"), "scale=1138:640,setsar=1");
        let a = argv(&preset("hls-abr").unwrap(), &portrait);
        let graph = after(&a, "-filter_complex");
        assert!(graph.contains("split=4"), "{graph}");
        for rung in ["1080:1920", "720:1280", "480:854", "360:640"] {
            assert!(graph.contains(&format!("scale={rung},")), "{rung}: {graph}");
        }
    }

    #[test]
    fn no_audio_input_gives_video_only_output() {
        let a = argv(&preset("mp4-480p").unwrap(), &info(640, 480, 0, false));
        assert!(!a.iter().any(|x| x == "-c:a"));
        let r = build(
            &preset("audio-aac").unwrap(),
            &info(640, 480, 0, false),
            &InputPolicy::default(),
            Path::new("/i"),
            Path::new("/o"),
        );
        assert!(r.is_err());
    }

    #[test]
    fn hls_builds_aligned_ladder_with_master() {
        let a = argv(&preset("hls-abr").unwrap(), &info(854, 480, 0, true));
        let graph = after(&a, "-filter_complex");
        assert!(graph.contains("split=2"), "{graph}");
        assert!(
            graph.contains("scale=854:480") && graph.contains("scale=640:360"),
            "{graph}"
        );
        assert_eq!(after(&a, "-var_stream_map"), "v:0,a:0 v:1,a:1");
        assert_eq!(after(&a, "-master_pl_name"), "master.m3u8");
        assert_eq!(after(&a, "-force_key_frames"), "expr:gte(t,n_forced*4)");
        assert_eq!(a.last().unwrap(), "/w/out/hls-abr/v%v/index.m3u8");
    }

    /// The ladder half is shared: HLS (TS or fMP4), DASH and CMAF get the same rungs, sizes,
    /// bitrates and keyframe grid; only the muxer half differs.
    #[test]
    fn every_packaging_shares_one_ladder() {
        let input = info(854, 480, 0, true);
        for name in ["hls-abr", "hls-cmaf", "dash", "cmaf"] {
            let a = argv(&preset(name).unwrap(), &input);
            let graph = after(&a, "-filter_complex");
            assert!(
                graph.starts_with("[0:0]split=2[s0][s1];"),
                "{name}: {graph}"
            );
            assert!(graph.contains("[s0]scale=854:480,") && graph.contains("[s1]scale=640:360,"));
            assert_eq!(after(&a, "-c:v"), "libx264", "{name}");
            // Capped CRF: the rung's bitrate (+7 %) is a cap, not a target.
            assert!(!a.iter().any(|x| x.starts_with("-b:v")), "{name}: {a:?}");
            assert_eq!(after(&a, "-crf:v:0"), "23", "{name}");
            assert_eq!(after(&a, "-maxrate:v:0"), "1498k", "{name}");
            assert_eq!(after(&a, "-bufsize:v:0"), "2100k", "{name}");
            assert_eq!(after(&a, "-maxrate:v:1"), "856k", "{name}");
            assert_eq!(
                after(&a, "-force_key_frames"),
                "expr:gte(t,n_forced*4)",
                "{name}"
            );
            assert_eq!(after(&a, "-progress"), "pipe:1", "{name}");
        }
    }

    #[test]
    fn hls_cmaf_writes_fmp4_segments_with_init_files() {
        let a = argv(&preset("hls-cmaf").unwrap(), &info(854, 480, 0, true));
        assert_eq!(after(&a, "-f"), "mov"); // the input's demuxer
        assert_eq!(after(&a, "-hls_segment_type"), "fmp4");
        assert_eq!(
            after(&a, "-hls_segment_filename"),
            "/w/out/hls-cmaf/v%v/seg_%05d.m4s"
        );
        assert_eq!(after(&a, "-hls_fmp4_init_filename"), "init.mp4");
        assert_eq!(after(&a, "-var_stream_map"), "v:0,a:0 v:1,a:1");
        assert_eq!(a.last().unwrap(), "/w/out/hls-cmaf/v%v/index.m3u8");
        assert!(after(&a, "-filter_complex").contains("setsar=1"));
    }

    /// DASH: the rungs in one adaptation set (one display aspect), ONE audio track; CMAF is
    /// the same run with HLS playlists over the same segments.
    #[test]
    fn dash_and_cmaf_share_segments_and_one_audio_track() {
        let input = info(854, 480, 0, true);
        let dash = argv(&preset("dash").unwrap(), &input);
        let graph = after(&dash, "-filter_complex");
        assert_eq!(graph.matches("setdar=854/480").count(), 2, "{graph}");
        let maps: Vec<&String> = dash
            .windows(2)
            .filter(|w| w[0] == "-map")
            .map(|w| &w[1])
            .collect();
        assert_eq!(maps, ["[v0]", "[v1]", "0:1"]);
        assert_eq!(after(&dash, "-b:a"), "96k");
        assert_eq!(
            after(&dash, "-adaptation_sets"),
            "id=0,streams=v id=1,streams=a"
        );
        assert_eq!(after(&dash, "-seg_duration"), "4");
        assert_eq!(
            after(&dash, "-media_seg_name"),
            "seg-$RepresentationID$-$Number%05d$.m4s"
        );
        assert!(!dash.iter().any(|x| x == "-hls_playlist"));
        assert_eq!(dash.last().unwrap(), "/w/out/dash/manifest.mpd");
        let cmaf = argv(&preset("cmaf").unwrap(), &input);
        assert_eq!(after(&cmaf, "-hls_playlist"), "1");
        assert_eq!(after(&cmaf, "-hls_master_name"), "master.m3u8");
        assert_eq!(cmaf.last().unwrap(), "/w/out/cmaf/manifest.mpd");
        // Without audio in the input: video alone, one adaptation set.
        let silent = argv(&preset("cmaf").unwrap(), &info(854, 480, 0, false));
        assert_eq!(after(&silent, "-adaptation_sets"), "id=0,streams=v");
        assert!(!silent.iter().any(|x| x == "-c:a"));
    }

    /// HEVC rungs are IDR-aligned without scene cuts; AV1 (SVT ignores forced keyframes)
    /// gets a fixed GOP of one segment at the source frame rate.
    #[test]
    fn hevc_and_av1_ladders_keep_keyframes_on_the_grid() {
        let mut r = preset("cmaf").unwrap();
        r.video.as_mut().unwrap().codec = VideoCodec::H265;
        let a = argv(&r, &scanned(1280, 720, "progressive"));
        assert_eq!(after(&a, "-c:v"), "libx265");
        assert_eq!(after(&a, "-tag:v"), "hvc1");
        assert_eq!(after(&a, "-forced-idr"), "1");
        assert!(after(&a, "-x265-params").contains("scenecut=0"));
        assert_eq!(after(&a, "-force_key_frames"), "expr:gte(t,n_forced*4)");
        r.video.as_mut().unwrap().codec = VideoCodec::Av1;
        let a = argv(&r, &scanned(1280, 720, "progressive"));
        assert_eq!(after(&a, "-c:v"), "libsvtav1");
        assert_eq!(after(&a, "-g"), "100");
        assert!(!a.iter().any(|x| x == "-maxrate:v:0"));
        // Interlaced sources are deinterlaced once, before the split, in every packaging.
        let a = argv(&preset("dash").unwrap(), &scanned(1920, 1080, "bb"));
        assert!(after(&a, "-filter_complex")
            .starts_with("[0:0]bwdif=mode=send_frame:parity=bff:deint=all,split=4"));
    }

    #[test]
    fn storyboard_tiles_one_frame_per_interval_into_sheets() {
        let a = argv(&preset("storyboard").unwrap(), &info(1920, 1080, 0, true));
        assert_eq!(
            after(&a, "-vf"),
            "fps=1000/2000,scale=160:90,setsar=1,tile=5x5"
        );
        assert!(a.iter().any(|x| x == "-an"));
        // 10 s at one frame every 2 s: 5 frames, one sheet of 25 tiles, spanning 50 s.
        let inv = build(
            &preset("storyboard").unwrap(),
            &info(1920, 1080, 0, true),
            &InputPolicy::default(),
            Path::new("/i"),
            Path::new("/o"),
        )
        .unwrap();
        assert_eq!(inv.duration, 50.0);
        assert_eq!(a.last().unwrap(), "/w/out/storyboard/sprite_%03d.jpg");
        let a = argv(&preset("storyboard").unwrap(), &scanned(720, 576, "tt"));
        assert!(after(&a, "-vf").starts_with("bwdif=mode=send_frame:parity=tff:deint=all,fps="));
    }

    #[test]
    fn thumbnail_seeks_and_writes_one_frame() {
        let inv = build(
            &preset("thumbnail").unwrap(),
            &info(1280, 720, 0, true),
            &InputPolicy::default(),
            Path::new("/i"),
            Path::new("/o"),
        )
        .unwrap();
        assert_eq!(after(&inv.args, "-ss"), "1.000");
        assert_eq!(after(&inv.args, "-frames:v"), "1");
        assert_eq!(after(&inv.args, "-vf"), "scale=1138:640,setsar=1");
        assert!(!inv.args.iter().any(|x| x == "-c:a"));
        assert_eq!(inv.creates, "thumbnail.jpg");
    }

    #[test]
    fn trim_past_the_end_is_an_error_and_trim_sets_duration() {
        let mut r = preset("mp4-360p").unwrap();
        r.trim_start = 20.0;
        assert!(build(
            &r,
            &info(640, 480, 0, true),
            &InputPolicy::default(),
            Path::new("/i"),
            Path::new("/o")
        )
        .is_err());
        r.trim_start = 2.0;
        r.trim_duration = Some(3.0);
        let inv = build(
            &r,
            &info(640, 480, 0, true),
            &InputPolicy::default(),
            Path::new("/i"),
            Path::new("/o"),
        )
        .unwrap();
        assert_eq!(inv.duration, 3.0);
        assert_eq!(after(&inv.args, "-ss"), "2.000");
        // The output -t (the trim), not the input's policy bound.
        let input = inv.args.iter().position(|x| x == "-i").unwrap();
        assert_eq!(after(&inv.args[input..], "-t"), "3.000");
    }

    /// Interlaced input is deinterlaced before scaling, in every output that encodes video,
    /// at the source frame rate; the parity is stated, never guessed from flags.
    #[test]
    fn interlaced_input_is_deinterlaced_before_scaling() {
        let tff = scanned(1920, 1080, "tt");
        let a = argv(&preset("mp4-720p").unwrap(), &tff);
        assert_eq!(
            after(&a, "-vf"),
            "bwdif=mode=send_frame:parity=tff:deint=all,scale=1280:720,setsar=1"
        );
        let a = argv(&preset("mp4-480p").unwrap(), &scanned(720, 480, "bb"));
        assert_eq!(
            after(&a, "-vf"),
            "bwdif=mode=send_frame:parity=bff:deint=all,scale=720:480,setsar=1"
        );
        let a = argv(&preset("thumbnail").unwrap(), &tff);
        assert!(after(&a, "-vf").starts_with("bwdif=mode=send_frame:parity=tff"));
        let a = argv(&preset("hls-abr").unwrap(), &tff);
        assert!(
            after(&a, "-filter_complex")
                .starts_with("[0:0]bwdif=mode=send_frame:parity=tff:deint=all,split=4"),
            "{a:?}"
        );
    }

    /// An output asking for more frames than the source has gets one frame per field.
    #[test]
    fn output_above_the_frame_rate_gets_a_frame_per_field() {
        let mut r = preset("mp4-720p").unwrap();
        r.video.as_mut().unwrap().fps = Some(50.0);
        let a = argv(&r, &scanned(1920, 1080, "tt"));
        assert!(after(&a, "-vf").starts_with("bwdif=mode=send_field:parity=tff"));
        assert_eq!(after(&a, "-r"), "50");
        r.video.as_mut().unwrap().fps = Some(25.0);
        let a = argv(&r, &scanned(1920, 1080, "tt"));
        assert!(after(&a, "-vf").starts_with("bwdif=mode=send_frame"));
    }

    /// Progressive input, and input whose scan nobody could settle, is never filtered; a copied
    /// stream cannot be.
    #[test]
    fn progressive_and_unknown_input_is_not_filtered() {
        for fo in ["progressive", "unknown", "tb"] {
            for name in ["mp4-720p", "hls-abr", "thumbnail", "webm-vp9-720p"] {
                let a = argv(&preset(name).unwrap(), &scanned(1920, 1080, fo));
                assert!(
                    !a.iter().any(|x| x.contains("bwdif") || x.contains("yadif")),
                    "{fo} {name}: {a:?}"
                );
            }
        }
        let mut copy = preset("mp4-720p").unwrap();
        copy.video.as_mut().unwrap().codec = VideoCodec::Copy;
        let a = argv(&copy, &scanned(1920, 1080, "tt"));
        assert!(!a.iter().any(|x| x.contains("bwdif")), "{a:?}");
    }

    /// The watermark is a second, fenced input, laid over a file once and over every rung of a
    /// ladder at that rung's size; a stream copy cannot carry it.
    #[test]
    fn watermark_is_a_fenced_second_input_on_every_rung() {
        let spec = WatermarkSpec::default();
        let mark = Watermark {
            spec,
            image: Path::new("/w/watermark"),
            mark: Mark {
                demuxer: "png_pipe",
                size: (100, 50),
            },
        };
        let extras = Extras {
            watermark: Some(mark),
            burn_in: false,
        };
        let run = |r: &Rendition| {
            build_with(
                r,
                &info(1920, 1080, 0, true),
                &InputPolicy::default(),
                Path::new("/w/input"),
                Path::new("/w/out"),
                extras,
            )
        };
        let a = run(&preset("hls-abr").unwrap()).unwrap().args;
        let inputs: Vec<usize> = (0..a.len()).filter(|i| a[*i] == "-i").collect();
        assert_eq!(inputs.len(), 2, "{a:?}");
        assert_eq!(a[inputs[1] + 1], "file:/w/watermark");
        let second = &a[inputs[0]..inputs[1]];
        assert_eq!(after(second, "-format_whitelist"), "png_pipe");
        assert_eq!(after(second, "-f"), "png_pipe");
        assert_eq!(after(second, "-protocol_whitelist"), "file");
        let graph = after(&a, "-filter_complex");
        assert!(graph.contains("[1:v]split=4[m0][m1][m2][m3]"), "{graph}");
        assert_eq!(graph.matches("overlay=").count(), 4, "{graph}");
        // Each rung's mark is scaled to that rung: 15% of 1920 and of 640.
        let big = spec.placement((1920, 1080), (100, 50));
        let small = spec.placement((640, 360), (100, 50));
        assert!(
            graph.contains(&format!("scale={}:{}", big.width, big.height)),
            "{graph}"
        );
        assert!(
            graph.contains(&format!("overlay=x={}:y={}", small.x, small.y)),
            "{graph}"
        );

        let f = run(&preset("mp4-720p").unwrap()).unwrap().args;
        assert!(!f.contains(&"-vf".to_string()), "{f:?}");
        assert_eq!(after(&f, "-map"), "[marked]");
        let mut copy = preset("mp4-720p").unwrap();
        copy.video.as_mut().unwrap().codec = VideoCodec::Copy;
        assert!(run(&copy).is_err());
        // A burn-in renders the caption script after scaling, in MP4 files only.
        let burn = Extras {
            watermark: None,
            burn_in: true,
        };
        let with = |name: &str| {
            let r = preset(name).unwrap();
            let i = info(1920, 1080, 0, true);
            let p = InputPolicy::default();
            build_with(&r, &i, &p, Path::new("/w/input"), Path::new("/w/out"), burn)
                .unwrap()
                .args
        };
        assert_eq!(
            after(&with("mp4-720p"), "-vf"),
            "scale=1280:720,setsar=1,ass=burn-in.ass"
        );
        assert!(!with("hls-abr").iter().any(|x| x.contains("ass=")));
        assert!(!with("webm-vp9-720p").iter().any(|x| x.contains("ass=")));
        // An audio-only output does not open the image at all.
        let a = run(&preset("audio-aac").unwrap()).unwrap().args;
        assert_eq!(a.iter().filter(|x| *x == "-i").count(), 1);
        // A storyboard marks each tile at the tile's size, before the sheet is laid out.
        let a = run(&preset("storyboard").unwrap()).unwrap().args;
        assert_eq!(a.iter().filter(|x| *x == "-i").count(), 2, "{a:?}");
        let tile = spec.placement((160, 90), (100, 50));
        let graph = after(&a, "-filter_complex");
        assert!(
            graph.starts_with("[0:0]fps=1000/2000,scale=160:90,setsar=1[base];"),
            "{graph}"
        );
        assert!(
            graph.contains(&format!("overlay=x={}:y={}", tile.x, tile.y)),
            "{graph}"
        );
        assert!(graph.ends_with("[marked]tile=5x5[sheet]"), "{graph}");
        assert_eq!(after(&a, "-map"), "[sheet]");
        assert!(!a.contains(&"-vf".to_string()), "{a:?}");
    }
}
