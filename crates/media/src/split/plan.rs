//! Whether a job is split, and where: a pure function of the probed input, the renditions, the
//! cluster's settings and the job's `split` field, so every rule is unit-tested without ffmpeg.
//!
//! Boundaries are multiples of every HLS rung's segment duration: the unsplit encode forces a
//! keyframe (and the HLS muxer cuts) at each multiple of the segment duration, so pieces that
//! start there make the same segments, numbered and timed as unsplit.

use crate::plan::{AudioCodec, Container, Ladder, Packaging, Rendition, Segments, VideoCodec};
use crate::probe::MediaInfo;
use serde::{Deserialize, Serialize};

/// The job spec's `"split"`: `"auto"` (default), `"off"`, or `{"segment_seconds": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SplitRequest {
    #[serde(with = "auto_or_off")]
    Mode(SplitMode),
    Seconds {
        segment_seconds: u32,
    },
}

impl Default for SplitRequest {
    fn default() -> Self {
        SplitRequest::Mode(SplitMode::Auto)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitMode {
    #[default]
    Auto,
    Off,
}

mod auto_or_off {
    use super::SplitMode;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(m: &SplitMode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match m {
            SplitMode::Auto => "auto",
            SplitMode::Off => "off",
        })
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SplitMode, D::Error> {
        match String::deserialize(d)?.as_str() {
            "auto" => Ok(SplitMode::Auto),
            "off" => Ok(SplitMode::Off),
            other => Err(serde::de::Error::custom(format!(
                "split must be \"auto\", \"off\" or {{\"segment_seconds\": N}}, not {other:?}"
            ))),
        }
    }
}

/// Cluster settings `split.segment_seconds` and `split.max_segments`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitSettings {
    pub segment_seconds: u32,
    pub max_segments: u32,
    /// Seconds added to twice a split job's longest HLS target duration to make the time its
    /// intermediates are kept after it succeeded: a player still on the progressive `EVENT`
    /// playlist reloads it within a target duration or two, and every segment URL it resolved
    /// while the job ran must stay readable that long (`split.vod_grace_margin_seconds`).
    pub vod_grace_margin_seconds: u32,
    /// Not configured: the worker slots the cluster has now (its live workers' slots), filled in
    /// where the decision is made. Under `"auto"` the plan shortens the ranges (down to
    /// [`MIN_FITTED_SECONDS`]) when that fills these slots in fewer rounds ([`fitted_length`]).
    /// `None`: unknown, the configured length stands.
    #[serde(skip)]
    pub live_slots: Option<u32>,
}

impl Default for SplitSettings {
    fn default() -> Self {
        SplitSettings {
            segment_seconds: 30,
            max_segments: 500,
            vod_grace_margin_seconds: 5,
            live_slots: None,
        }
    }
}

/// How long a succeeded split job's intermediates stay after it ended when its HLS outputs
/// were served progressively: twice the longest target duration of its MPEG-TS HLS outputs
/// (a segment may run a second past the nominal length) plus the configured margin.
pub fn vod_grace_seconds(renditions: &[Rendition], settings: SplitSettings) -> u32 {
    let target = renditions
        .iter()
        .filter_map(|r| ts_ladder(r).map(|l| l.segment_seconds + 1))
        .max()
        .unwrap_or(0);
    2 * target + settings.vod_grace_margin_seconds
}

/// Input video codecs that can be cut by stream copy into MPEG-TS pieces (the piece container:
/// 90 kHz timestamps, byte-concatenable, every one of these codecs is native to it).
pub const SPLITTABLE_INPUT_CODECS: &[&str] = &["h264", "hevc", "mpeg2video", "mpeg1video"];

/// Why a job (or one of its outputs) keeps the single-task path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NoSplit {
    /// The job said `"split": "off"`.
    Off,
    /// Shorter than twice the segment length: splitting would cost more than it saves.
    TooShort {
        duration: f64,
        needed: f64,
    },
    /// The probe gave no duration, so there is nothing to cut against.
    UnknownDuration,
    NoVideoStream,
    /// The input's video codec cannot be cut into the piece container by stream copy.
    InputCodec {
        codec: String,
    },
    /// No output can be encoded piecewise (see [`RenditionSplit`]).
    NoSplittableOutput,
    /// Captions (caption files, or subtitle streams in the input) or a watermark: only the
    /// one-task encode applies them (split pieces would each need the overlay and the cue
    /// offsets re-based). `what` names it: `captions` or `a watermark`.
    SideFiles {
        what: String,
    },
}

/// What a job brings beside its input and outputs that only the one-task encode applies (the
/// input's own subtitle streams [`plan`] finds in the probe).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideFiles {
    pub watermark: bool,
    /// Caption files uploaded with the job.
    pub caption_files: bool,
}

impl SideFiles {
    /// What keeps the job whole, given whether the input carries subtitle streams.
    pub fn keeps_whole(&self, input_subtitles: bool) -> Option<NoSplit> {
        let what = if self.watermark {
            "a watermark"
        } else if self.caption_files || input_subtitles {
            "captions"
        } else {
            return None;
        };
        Some(NoSplit::SideFiles { what: what.into() })
    }
}

/// Why one output is not encoded piecewise (it runs as a single task beside the split graph).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum KeepWhole {
    /// Audio only (or a thumbnail): nothing to gain, `encode_audio` or one short task does it.
    NoVideo,
    /// A trimmed output covers a part of the input: it runs alone, on just that part.
    Trimmed,
    /// Video codecs whose pieces would need another piece container (VP9, AV1 in Matroska)
    /// and stream copy: not split yet.
    Codec { codec: String },
    /// `fps` resamples the frame grid, which would not line up at piece joints.
    FrameRate,
    /// Audio copied from the input, a codec `encode_audio` does not make, or loudness work
    /// (measured and normalised over the whole track by the one-task encode).
    Audio,
    /// Packagings the stitch does not assemble yet (fMP4 HLS, DASH, CMAF, storyboards): they
    /// run whole beside the split outputs.
    Packaging { packaging: String },
}

/// The ladder of an MPEG-TS HLS output, the one ladder packaging split-and-stitch assembles.
pub fn ts_ladder(r: &Rendition) -> Option<&Ladder> {
    match &r.packaging {
        Packaging::Hls {
            ladder,
            segments: Segments::Ts,
        } => Some(ladder),
        _ => None,
    }
}

/// One piece of work: `[start, end)` seconds on the input timeline (0 is the input's start).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub index: usize,
    pub start: f64,
    pub end: f64,
}

/// The graph for a split job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitLayout {
    /// Length of every range but the last and the short ones of the start ramp (see
    /// [`FIRST_RANGE_SECONDS`]), a multiple of every HLS segment duration.
    pub segment_seconds: u32,
    pub ranges: Vec<Range>,
    /// Outputs encoded piecewise (by name).
    pub split: Vec<String>,
    /// Outputs that run as single tasks, with why.
    pub whole: Vec<(String, KeepWhole)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "plan", rename_all = "snake_case")]
pub enum SplitPlan {
    Single(NoSplit),
    Split(SplitLayout),
}

/// Whether one output can be encoded piecewise.
pub fn rendition_split(r: &Rendition) -> Result<(), KeepWhole> {
    if !r.needs_video() || r.container() == Some(Container::Jpeg) {
        return Err(KeepWhole::NoVideo);
    }
    if r.container().is_none() && ts_ladder(r).is_none() {
        return Err(KeepWhole::Packaging {
            packaging: r.packaging.format_name().to_string(),
        });
    }
    if r.trim_start > 0.0 || r.trim_duration.is_some() {
        return Err(KeepWhole::Trimmed);
    }
    if let Some(v) = &r.video {
        match v.codec {
            VideoCodec::H264 | VideoCodec::H265 => {}
            other => {
                return Err(KeepWhole::Codec {
                    codec: format!("{other:?}").to_lowercase(),
                })
            }
        }
        if v.fps.is_some() {
            return Err(KeepWhole::FrameRate);
        }
    }
    if let Some(a) = &r.audio {
        // Loudness is measured and normalised over the whole track by the transcode path.
        if a.codec != AudioCodec::Aac || a.loudness.is_some() {
            return Err(KeepWhole::Audio);
        }
    }
    Ok(())
}

/// Least common multiple of the HLS segment durations of the split outputs (1 without HLS).
fn alignment(renditions: &[&Rendition]) -> u32 {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    renditions
        .iter()
        .filter_map(|r| ts_ladder(r).map(|h| h.segment_seconds.max(1)))
        .fold(1, |acc, s| acc / gcd(acc, s) * s)
}

/// A final range shorter than this joins the one before it: the probed duration can exceed the
/// video's by a little (audio runs longer), and a range must hold frames.
const MIN_LAST_RANGE: f64 = 2.0;

/// The length of the first range of an `"auto"` job with an HLS output (rounded up to the
/// segment grid): the ranges then double (4, 8, 16 s ...) up to the job's range length. A player can
/// start once the first range and the audio are encoded, so a short first range makes the
/// progressive playlist playable in the time of a few seconds of encode instead of a whole
/// range's (measured: 195.6 s for a 32 s range of noisy 1080p to four rungs, about 6.4
/// core-seconds per input second; docs/benchmarks.md). The ramp costs two or three more
/// ranges, each with its half second of pre-roll.
pub const FIRST_RANGE_SECONDS: u32 = 4;

/// The shortest range `"auto"` fits to the cluster's slots ([`fitted_length`]): shorter ranges
/// fill more slots at once, but each pays [`PREROLL_SECONDS`] of extra encode (6 % at 8 s) and
/// a task's fixed costs (fetching its pieces, starting ffmpeg, a claim).
pub const MIN_FITTED_SECONDS: u32 = 8;

/// How much longer than the best a fitted schedule may be and still keep the longer ranges
/// (fewer tasks, less pre-roll): a shorter range length must win by more than this.
const FIT_TOLERANCE: f64 = 0.05;

/// The ranges of `duration` seconds at `seg` seconds each, after a start ramp from `ramp`
/// seconds (doubling while shorter than `seg`; none when `None`); a last range shorter than
/// [`MIN_LAST_RANGE`] joins the one before.
fn ranges_of(duration: f64, seg: u32, ramp: Option<u32>) -> Vec<Range> {
    let seg = seg.max(1);
    let mut next = ramp.filter(|r| *r > 0 && *r < seg).unwrap_or(seg);
    let mut ranges: Vec<Range> = vec![];
    let mut start = 0.0;
    while start < duration {
        let end = (start + next as f64).min(duration);
        ranges.push(Range {
            index: ranges.len(),
            start,
            end,
        });
        start += next as f64;
        next = (next * 2).min(seg);
    }
    if ranges.len() > 1
        && ranges[ranges.len() - 1].end - ranges[ranges.len() - 1].start < MIN_LAST_RANGE
    {
        ranges.pop();
        if let Some(last) = ranges.last_mut() {
            last.end = duration;
        }
    }
    ranges
}

/// When the ranges would all be encoded on `slots` slots, each taken in order by the first
/// free slot (list scheduling), in media seconds of encode: every range costs its length and
/// its pre-roll. The model behind [`fitted_length`]; it leaves out what every length pays
/// alike (the split, the audio, the stitch).
pub fn list_makespan(ranges: &[Range], slots: u32) -> f64 {
    // Slots beyond one per range never change the schedule (and a huge count must not
    // allocate or scan that many).
    let slots = (slots.max(1) as usize).min(ranges.len().max(1));
    let mut free = vec![0.0f64; slots];
    for r in ranges {
        let cost = r.end - r.start + preroll_of(r);
        if let Some(first) = free.iter_mut().min_by(|a, b| a.total_cmp(b)) {
            *first += cost;
        }
    }
    free.into_iter().fold(0.0, f64::max)
}

/// The range length `"auto"` uses on a cluster of `slots` slots: of the lengths on the `grid`
/// from [`MIN_FITTED_SECONDS`] up to `longest` (the configured one) that stay within
/// `max_segments`, the longest whose [`list_makespan`] is within [`FIT_TOLERANCE`] of the best.
/// With HLS (4 s grid, the start ramp) and a 600 s input: two slots keep 32 s ranges (21 of
/// them); eight take 28 s (24 ranges, three rounds where 32 s would take three and a half);
/// 32 take 20 s (32 ranges, one round, where 32 s ranges would leave 11 slots idle).
pub fn fitted_length(
    duration: f64,
    longest: u32,
    grid: u32,
    slots: u32,
    max_segments: u32,
    ramp: Option<u32>,
) -> u32 {
    let grid = grid.max(1);
    let shortest = MIN_FITTED_SECONDS.div_ceil(grid) * grid;
    let candidates: Vec<(u32, f64)> = (1..)
        .map(|k| longest.saturating_sub(grid * (k - 1)))
        .take_while(|l| *l >= shortest && *l > 0)
        .filter_map(|l| {
            let ranges = ranges_of(duration, l, ramp);
            (ranges.len() <= max_segments as usize).then(|| (l, list_makespan(&ranges, slots)))
        })
        .collect();
    let Some(best) = candidates.iter().map(|c| c.1).reduce(f64::min) else {
        return longest;
    };
    candidates
        .iter()
        .find(|c| c.1 <= best * (1.0 + FIT_TOLERANCE))
        .map_or(longest, |c| c.0)
}

/// The one decision: whether the job splits, and where. `"off"` first, then side files (which
/// only the one-task encode applies), then the input, then the outputs.
pub fn plan(
    info: &MediaInfo,
    renditions: &[Rendition],
    settings: SplitSettings,
    request: SplitRequest,
    side: &SideFiles,
) -> SplitPlan {
    let wanted = match request {
        SplitRequest::Mode(SplitMode::Off) => return SplitPlan::Single(NoSplit::Off),
        SplitRequest::Mode(SplitMode::Auto) => settings.segment_seconds,
        SplitRequest::Seconds { segment_seconds } => segment_seconds,
    }
    .max(1);
    let subtitles = !crate::captions::tracks_from_probe(info).is_empty();
    if let Some(why) = side.keeps_whole(subtitles) {
        return SplitPlan::Single(why);
    }
    let Some(video) = info.video() else {
        return SplitPlan::Single(NoSplit::NoVideoStream);
    };
    if !SPLITTABLE_INPUT_CODECS.contains(&video.codec.as_str()) {
        return SplitPlan::Single(NoSplit::InputCodec {
            codec: video.codec.clone(),
        });
    }
    let Some(duration) = info.best_duration() else {
        return SplitPlan::Single(NoSplit::UnknownDuration);
    };
    let (mut split, mut whole) = (vec![], vec![]);
    for r in renditions {
        match rendition_split(r) {
            Ok(()) => split.push(r),
            Err(why) => whole.push((r.name.clone(), why)),
        }
    }
    if split.is_empty() {
        return SplitPlan::Single(NoSplit::NoSplittableOutput);
    }
    let align = alignment(&split);
    let round_up = |s: u32| s.div_ceil(align) * align;
    let mut seg = round_up(wanted);
    let needed = 2.0 * seg as f64;
    if duration < needed {
        return SplitPlan::Single(NoSplit::TooShort { duration, needed });
    }
    let max = settings.max_segments.max(2) as f64;
    if duration / seg as f64 > max {
        seg = round_up((duration / max).ceil() as u32);
    }
    // Under auto: the start ramp, for jobs a player can watch while they encode (HLS), unless
    // it would take the job past `max_segments`; then the length fitted to the cluster. A
    // length the job asked for is every range's length.
    let auto = request == SplitRequest::Mode(SplitMode::Auto);
    let hls = split.iter().any(|r| ts_ladder(r).is_some());
    let mut ramp = (auto && hls).then(|| round_up(FIRST_RANGE_SECONDS));
    if ranges_of(duration, seg, ramp).len() > max as usize {
        ramp = None;
    }
    if let (true, Some(slots)) = (auto, settings.live_slots.filter(|s| *s > 0)) {
        seg = fitted_length(duration, seg, align, slots, max as u32, ramp);
    }
    let ranges = ranges_of(duration, seg, ramp);
    SplitPlan::Split(SplitLayout {
        segment_seconds: seg,
        ranges,
        split: split.iter().map(|r| r.name.clone()).collect(),
        whole,
    })
}

/// The pieces (by index into `piece_starts`, ascending keyframe times of the cut points) an
/// encode of `[start, end)` must read: from the piece holding `start` through the piece whose
/// first keyframe is the first at or after `end`, because with open GOPs the pictures shown just
/// before that keyframe are decoded after it, from its piece.
pub fn pieces_for(piece_starts: &[f64], start: f64, end: f64) -> std::ops::RangeInclusive<usize> {
    let eps = 1e-6;
    let first = piece_starts
        .iter()
        .rposition(|s| *s <= start + eps)
        .unwrap_or(0);
    let last = piece_starts
        .iter()
        .position(|s| *s >= end - eps)
        .unwrap_or(piece_starts.len().saturating_sub(1))
        .max(first);
    first..=last
}

/// Seconds of the input before a range (every range but the first) that are encoded ahead of
/// it and dropped: the encoder's rate control then starts the range as the unsplit encode does
/// there. Without it, x264 gives the range's first keyframe the quantiser of a stream's first
/// picture instead of the one it derives from the P-frames before (about 3 QP worse: the
/// keyframe came out ~35 % smaller and every picture referencing it lower), and a capped
/// encode starts with a nearly full VBV buffer. Measured at 4 s ranges (854x480 and 640x360
/// rungs, capped CRF 23): the PSNR gap to the unsplit rung fell from 0.05-0.08 dB to 0.01-0.04
/// dB, the size gap on noisy input from +9 % to within ±1.5 %; it costs half a second of encode
/// per range (1.6 % at the default 32 s ranges). docs/architecture.md, split-and-stitch.
pub const PREROLL_SECONDS: f64 = 0.5;

/// The pre-roll of range `index` starting at `start`: none for the first (the unsplit encode
/// starts there too), never more than the input before it. The cut points and the pieces a
/// range reads include it.
pub fn preroll(index: usize, start: f64) -> f64 {
    if index == 0 {
        0.0
    } else {
        PREROLL_SECONDS.min(start.max(0.0))
    }
}

pub fn preroll_of(r: &Range) -> f64 {
    preroll(r.index, r.start)
}

/// The cut points of the split: for every range start (less its pre-roll), the last keyframe at
/// or before it (so the piece can decode from it), deduplicated (a GOP longer than a range
/// serves both).
pub fn cut_points(keyframes: &[f64], ranges: &[Range]) -> Vec<f64> {
    let eps = 1e-6;
    let mut cuts: Vec<f64> = vec![];
    for r in ranges {
        let k = keyframes
            .iter()
            .copied()
            .filter(|k| *k <= r.start - preroll_of(r) + eps)
            .reduce(f64::max)
            .or_else(|| keyframes.first().copied());
        if let Some(k) = k {
            if cuts.last().is_none_or(|l| (k - l).abs() > eps) {
                cuts.push(k);
            }
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::preset;
    use crate::probe::parse_probe_json;

    fn info(codec: &str, duration: f64) -> MediaInfo {
        parse_probe_json(&format!(
            r#"{{"streams":[{{"index":0,"codec_type":"video","codec_name":"{codec}","width":640,"height":360}},
               {{"index":1,"codec_type":"audio","codec_name":"aac","channels":2,"sample_rate":"48000"}}],
               "format":{{"format_name":"mov,mp4,m4a","duration":"{duration}"}}}}"#
        ))
        .unwrap()
    }

    fn layout(p: SplitPlan) -> SplitLayout {
        match p {
            SplitPlan::Split(l) => l,
            other => panic!("not split: {other:?}"),
        }
    }

    #[test]
    fn split_field_parses_all_three_forms_and_names_a_bad_one() {
        let p = |s: &str| serde_json::from_str::<SplitRequest>(s);
        assert_eq!(p(r#""auto""#).unwrap(), SplitRequest::Mode(SplitMode::Auto));
        assert_eq!(p(r#""off""#).unwrap(), SplitRequest::Mode(SplitMode::Off));
        assert_eq!(
            p(r#"{"segment_seconds": 8}"#).unwrap(),
            SplitRequest::Seconds { segment_seconds: 8 }
        );
        assert!(p(r#""sometimes""#).is_err());
        assert_eq!(
            serde_json::to_string(&SplitRequest::default()).unwrap(),
            r#""auto""#
        );
    }

    #[test]
    fn auto_splits_only_inputs_at_least_twice_the_segment_length() {
        let r = vec![preset("mp4-720p").unwrap()];
        let s = SplitSettings::default();
        assert_eq!(
            plan(
                &info("h264", 59.0),
                &r,
                s,
                SplitRequest::default(),
                &SideFiles::default()
            ),
            SplitPlan::Single(NoSplit::TooShort {
                duration: 59.0,
                needed: 60.0
            })
        );
        let l = layout(plan(
            &info("h264", 95.0),
            &r,
            s,
            SplitRequest::default(),
            &SideFiles::default(),
        ));
        assert_eq!(l.segment_seconds, 30);
        let bounds: Vec<(f64, f64)> = l.ranges.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(
            bounds,
            vec![(0.0, 30.0), (30.0, 60.0), (60.0, 90.0), (90.0, 95.0)]
        );
        assert_eq!(
            plan(
                &info("h264", 95.0),
                &r,
                s,
                SplitRequest::Mode(SplitMode::Off),
                &SideFiles::default(),
            ),
            SplitPlan::Single(NoSplit::Off)
        );
    }

    #[test]
    fn boundaries_are_multiples_of_the_hls_segment_duration() {
        let r = vec![preset("hls-abr").unwrap(), preset("mp4-360p").unwrap()];
        let l = layout(plan(
            &info("h264", 100.0),
            &r,
            SplitSettings::default(),
            SplitRequest::Seconds {
                segment_seconds: 30,
            },
            &SideFiles::default(),
        ));
        assert_eq!(l.segment_seconds, 32);
        assert!(l.ranges.iter().all(|r| r.start % 4.0 == 0.0));
        // A 1 s tail joins the last range.
        let l = layout(plan(
            &info("h264", 65.0),
            &r,
            SplitSettings::default(),
            SplitRequest::Seconds {
                segment_seconds: 32,
            },
            &SideFiles::default(),
        ));
        assert_eq!(l.ranges.len(), 2);
        assert_eq!(l.ranges[1].end, 65.0);
        // Under auto the start ramp comes first, and the tail still joins the last range.
        let l = layout(plan(
            &info("h264", 93.0),
            &r,
            SplitSettings::default(),
            SplitRequest::default(),
            &SideFiles::default(),
        ));
        assert_eq!(l.ranges.len(), 5);
        assert_eq!((l.ranges[4].start, l.ranges[4].end), (60.0, 93.0));
    }

    fn bounds(l: &SplitLayout) -> Vec<(f64, f64)> {
        l.ranges.iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn a_job_with_hls_starts_with_short_ranges_that_double_up_to_the_length() {
        let hls = vec![preset("hls-abr").unwrap(), preset("mp4-720p").unwrap()];
        let l = layout(plan(
            &info("h264", 100.0),
            &hls,
            SplitSettings::default(),
            SplitRequest::default(),
            &SideFiles::default(),
        ));
        assert_eq!(l.segment_seconds, 32);
        assert_eq!(
            bounds(&l),
            vec![
                (0.0, 4.0),
                (4.0, 12.0),
                (12.0, 28.0),
                (28.0, 60.0),
                (60.0, 92.0),
                (92.0, 100.0)
            ]
        );
        assert!(l.ranges.iter().enumerate().all(|(i, r)| r.index == i));
        // Without HLS nothing is watched early: no ramp.
        let mp4 = vec![preset("mp4-720p").unwrap()];
        let l = layout(plan(
            &info("h264", 100.0),
            &mp4,
            SplitSettings::default(),
            SplitRequest::default(),
            &SideFiles::default(),
        ));
        assert_eq!(l.ranges[0].end, 30.0);
        // A length the job asked for is every range's length.
        let l = layout(plan(
            &info("h264", 100.0),
            &hls,
            SplitSettings::default(),
            SplitRequest::Seconds {
                segment_seconds: 32,
            },
            &SideFiles::default(),
        ));
        assert_eq!(l.ranges.len(), 4);
        assert_eq!(l.ranges[0].end, 32.0);
        // Ranges already as short as the first one: nothing to ramp.
        let s = SplitSettings {
            segment_seconds: 4,
            ..SplitSettings::default()
        };
        let l = layout(plan(
            &info("h264", 20.0),
            &hls,
            s,
            SplitRequest::default(),
            &SideFiles::default(),
        ));
        assert_eq!(l.ranges.len(), 5);
        assert!(l.ranges.iter().all(|r| r.end - r.start == 4.0));
    }

    #[test]
    fn auto_fits_the_range_length_to_the_clusters_slots() {
        let hls = vec![preset("hls-abr").unwrap(), preset("mp4-720p").unwrap()];
        let at = |slots: Option<u32>, request: SplitRequest| {
            let s = SplitSettings {
                live_slots: slots,
                ..SplitSettings::default()
            };
            layout(plan(
                &info("h264", 600.0),
                &hls,
                s,
                request,
                &SideFiles::default(),
            ))
        };
        let auto = SplitRequest::default();
        let count = |l: &SplitLayout| (l.segment_seconds, l.ranges.len());
        // Unknown slots, one, two: the configured length (32 s on the 4 s grid).
        assert_eq!(count(&at(None, auto)), (32, 21));
        assert_eq!(count(&at(Some(1), auto)), (32, 21));
        assert_eq!(count(&at(Some(2), auto)), (32, 21));
        assert_eq!(count(&at(Some(8), auto)), (28, 24));
        assert_eq!(count(&at(Some(32), auto)), (20, 32));
        // Never below the shortest fitted length, however many slots.
        assert_eq!(count(&at(Some(1000), auto)).0, MIN_FITTED_SECONDS);
        // A length the job asked for is kept, with no ramp.
        let asked = SplitRequest::Seconds {
            segment_seconds: 32,
        };
        assert_eq!(count(&at(Some(32), asked)), (32, 19));
        // The fitted schedule is the better one, as the model counts it.
        let fitted = at(Some(32), auto);
        let kept = at(None, auto);
        assert!(list_makespan(&fitted.ranges, 32) < 0.7 * list_makespan(&kept.ranges, 32));
        // max_segments still bounds the count.
        let s = SplitSettings {
            live_slots: Some(1000),
            max_segments: 40,
            ..SplitSettings::default()
        };
        let l = layout(plan(
            &info("h264", 600.0),
            &hls,
            s,
            auto,
            &SideFiles::default(),
        ));
        assert!(l.ranges.len() <= 40, "{}", l.ranges.len());
    }

    #[test]
    fn list_makespan_fills_the_first_free_slot_in_order() {
        let r = |index: usize, start: f64, end: f64| Range { index, start, end };
        // 4 s, then 8 s and 8 s with half a second of pre-roll each.
        let ranges = [r(0, 0.0, 4.0), r(1, 4.0, 12.0), r(2, 12.0, 20.0)];
        assert_eq!(list_makespan(&ranges, 1), 4.0 + 8.5 + 8.5);
        assert_eq!(list_makespan(&ranges, 2), 4.0 + 8.5);
        assert_eq!(list_makespan(&ranges, 3), 8.5);
        assert_eq!(list_makespan(&ranges, 0), list_makespan(&ranges, 1));
        assert_eq!(list_makespan(&ranges, u32::MAX), 8.5);
        assert_eq!(list_makespan(&[], 4), 0.0);
    }

    #[test]
    fn the_vod_grace_covers_two_target_durations_and_the_margin() {
        let hls = preset("hls-abr").unwrap();
        let target = ts_ladder(&hls).unwrap().segment_seconds + 1;
        let s = SplitSettings::default();
        assert_eq!(
            vod_grace_seconds(std::slice::from_ref(&hls), s),
            2 * target + 5
        );
        let s = SplitSettings {
            vod_grace_margin_seconds: 0,
            ..s
        };
        assert_eq!(
            vod_grace_seconds(&[preset("mp4-720p").unwrap(), hls], s),
            2 * target
        );
        // Nothing served progressively: no grace beyond the margin.
        assert_eq!(vod_grace_seconds(&[preset("mp4-720p").unwrap()], s), 0);
    }

    #[test]
    fn side_files_keep_the_job_whole() {
        let r = vec![preset("hls-abr").unwrap()];
        let s = SplitSettings::default();
        let long = info("h264", 300.0);
        let mark = SideFiles {
            watermark: true,
            ..SideFiles::default()
        };
        let captions = SideFiles {
            caption_files: true,
            ..SideFiles::default()
        };
        let single = |side: &SideFiles| match plan(&long, &r, s, SplitRequest::default(), side) {
            SplitPlan::Single(why) => why,
            other => panic!("split: {other:?}"),
        };
        assert_eq!(
            single(&mark),
            NoSplit::SideFiles {
                what: "a watermark".into()
            }
        );
        assert_eq!(
            single(&captions),
            NoSplit::SideFiles {
                what: "captions".into()
            }
        );
        // Subtitle streams in the input are captions too.
        let mut subtitled = long.clone();
        subtitled.streams.push(crate::probe::StreamInfo {
            index: 2,
            kind: crate::probe::StreamKind::Subtitle,
            codec: "mov_text".into(),
            ..subtitled.streams[0].clone()
        });
        assert!(matches!(
            plan(
                &subtitled,
                &r,
                s,
                SplitRequest::default(),
                &SideFiles::default()
            ),
            SplitPlan::Single(NoSplit::SideFiles { .. })
        ));
        assert!(matches!(
            plan(&long, &r, s, SplitRequest::default(), &SideFiles::default()),
            SplitPlan::Split(_)
        ));
    }

    #[test]
    fn max_segments_lengthens_the_ranges() {
        let r = vec![preset("hls-abr").unwrap()];
        let s = SplitSettings {
            segment_seconds: 4,
            max_segments: 10,
            ..SplitSettings::default()
        };
        let l = layout(plan(
            &info("h264", 200.0),
            &r,
            s,
            SplitRequest::default(),
            &SideFiles::default(),
        ));
        assert!(l.ranges.len() <= 10, "{}", l.ranges.len());
        assert_eq!(l.segment_seconds, 20);
    }

    #[test]
    fn inputs_and_outputs_that_cannot_be_split_say_why() {
        let s = SplitSettings::default();
        let mp4 = vec![preset("mp4-720p").unwrap()];
        assert_eq!(
            plan(
                &info("vp9", 300.0),
                &mp4,
                s,
                SplitRequest::default(),
                &SideFiles::default()
            ),
            SplitPlan::Single(NoSplit::InputCodec {
                codec: "vp9".into()
            })
        );
        let only_whole = vec![
            preset("webm-vp9-720p").unwrap(),
            preset("audio-aac").unwrap(),
            preset("thumbnail").unwrap(),
        ];
        assert_eq!(
            plan(
                &info("h264", 300.0),
                &only_whole,
                s,
                SplitRequest::default(),
                &SideFiles::default(),
            ),
            SplitPlan::Single(NoSplit::NoSplittableOutput)
        );
        let mut trimmed = preset("mp4-360p").unwrap();
        trimmed.name = "t".into();
        trimmed.trim_duration = Some(10.0);
        let mixed = vec![
            preset("mp4-720p").unwrap(),
            trimmed,
            preset("av1-720p").unwrap(),
        ];
        let l = layout(plan(
            &info("hevc", 300.0),
            &mixed,
            s,
            SplitRequest::default(),
            &SideFiles::default(),
        ));
        assert_eq!(l.split, vec!["mp4-720p".to_string()]);
        assert_eq!(l.whole[0], ("t".into(), KeepWhole::Trimmed));
        assert_eq!(
            l.whole[1],
            (
                "av1-720p".into(),
                KeepWhole::Codec {
                    codec: "av1".into()
                }
            )
        );
        // Loudness needs the whole track in one pass: the output stays whole.
        let mut loud = preset("mp4-720p").unwrap();
        loud.audio.as_mut().unwrap().loudness = Some(crate::loudness::LoudnessMode::Measure);
        assert_eq!(rendition_split(&loud), Err(KeepWhole::Audio));
    }

    #[test]
    fn cuts_are_the_keyframes_before_each_range_and_encodes_read_one_piece_past_the_end() {
        let ranges: Vec<Range> = (0..4)
            .map(|i| Range {
                index: i,
                start: 4.0 * i as f64,
                end: 4.0 * (i + 1) as f64,
            })
            .collect();
        let keys = [0.0, 1.92, 3.84, 5.76, 7.68, 9.6, 11.52, 13.44];
        // Every range but the first reads its half second of pre-roll too.
        let cuts = cut_points(&keys, &ranges);
        assert_eq!(cuts, vec![0.0, 1.92, 5.76, 9.6]);
        assert_eq!(pieces_for(&cuts, 0.0, 4.0), 0..=2);
        assert_eq!(pieces_for(&cuts, 4.0 - preroll(1, 4.0), 8.0), 1..=3);
        assert_eq!(pieces_for(&cuts, 12.0 - preroll(3, 12.0), 16.0), 3..=3);
        // GOPs longer than a range: the keyframe at 0 serves the ranges at 0, 4 and 8.
        assert_eq!(cut_points(&[0.0, 10.0], &ranges), vec![0.0, 10.0]);
        // Keyframes exactly on the boundaries: the pre-roll starts in the piece before.
        let cuts = cut_points(&[0.0, 4.0, 8.0, 12.0], &ranges);
        assert_eq!(cuts, vec![0.0, 4.0, 8.0]);
        assert_eq!(pieces_for(&cuts, 3.5, 8.0), 0..=2);
    }
}
