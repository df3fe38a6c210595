//! The task graph of a job and the split decision behind it, as pure functions shared by
//! admission (inputs it probes: multipart uploads) and the `transcode` task that probes the
//! others (URL, key and tus inputs) and grows the job's graph with the very same decision.
//! Neither side imports the other: this module knows no HTTP and no worker.

use crate::task_payloads::{
    segment_key, SplitPayload, TranscodePayload, ENCODE_AUDIO, ENCODE_SEGMENT, SPLIT, STITCH,
};
use reelay_jobs::{Growth, NewTask, TRANSCODE};
use reelay_media::split::plan::SplitMode;
use reelay_media::split::{self, NoSplit, SideFiles, SplitPlan, SplitRequest, SplitSettings};
use reelay_media::{MediaInfo, Rendition};
use reelay_protocol::{JobSpec, SplitView};

/// Media seconds assumed per output while the input's duration is unknown (URL and key inputs
/// are only probed by the worker).
const UNKNOWN_SECONDS_PER_OUTPUT: f64 = 60.0;

/// Expected encode work in media seconds: the input's duration (a minute when not known yet)
/// for each output.
pub fn estimate(duration: Option<f64>, renditions: &[Rendition]) -> f64 {
    let duration = duration
        .filter(|d| d.is_finite() && *d > 0.0)
        .unwrap_or(UNKNOWN_SECONDS_PER_OUTPUT);
    duration * renditions.len() as f64
}

/// The split decision for a job and the tasks it runs as, from one plan: what its view says
/// and its task list (`estimated_seconds` shared among them).
pub fn decide(
    spec: &JobSpec,
    estimated_seconds: f64,
    renditions: &[Rendition],
    info: Option<&MediaInfo>,
    settings: SplitSettings,
    request: SplitRequest,
) -> (SplitView, Vec<NewTask>) {
    let side = side_files(spec);
    (
        split_view(renditions, info, settings, request, &side),
        tasks(
            estimated_seconds,
            renditions,
            info,
            settings,
            request,
            &side,
        ),
    )
}

/// The job's side files as the plan weighs them: a watermark, caption files.
pub fn side_files(spec: &JobSpec) -> SideFiles {
    SideFiles {
        watermark: spec.watermark.is_some(),
        caption_files: crate::side_files::declared_captions(spec) > 0,
    }
}

/// Key of the `transcode` task of the outputs that stay whole beside a graph grown under the
/// job's first `transcode` task (which keeps the plain key).
pub const WHOLE_KEY: &str = "whole";

/// Share of the job's estimate the growing `transcode` task stands for once it has fetched and
/// probed: what it did, so the job's progress does not leap when it hands on.
const GROWER_SHARE: f64 = 0.02;

/// The graph a job's first `transcode` task adds once it has probed the input and the plan
/// splits it (None: the plan keeps it whole, and the task encodes everything itself): the
/// same tasks admission would have made for an upload, hung under the task (`grower`, its
/// key), with the job's new estimate, split view and stored input.
pub fn grown_tasks(
    grower: &str,
    spec: &JobSpec,
    renditions: &[Rendition],
    info: &MediaInfo,
    settings: SplitSettings,
    request: SplitRequest,
    input_key: Option<String>,
) -> Option<Growth> {
    let estimated_seconds = estimate(info.best_duration(), renditions);
    let (view, mut tasks) = decide(
        spec,
        estimated_seconds,
        renditions,
        Some(info),
        settings,
        request,
    );
    if !view.applied || tasks.len() < 2 {
        return None;
    }
    for t in &mut tasks {
        if t.kind == TRANSCODE {
            t.key = WHOLE_KEY.into();
        }
        if t.depends_on.is_empty() {
            t.depends_on.push(grower.to_string());
        }
    }
    Some(Growth {
        tasks,
        estimated_seconds,
        grower_weight: estimated_seconds * GROWER_SHARE,
        split_json: serde_json::to_string(&view).ok(),
        input_key,
    })
}

/// The claim position of the `encode_audio` tasks: after the `split` and the first range (0),
/// ahead of the second range (1; ties go by task id, and `audio-` sorts before `seg-`). At
/// position 0 they were claimed before the `split` (`audio-` sorts before `split` too), which
/// then started a whole audio encode late (14.4 s in the 600 s benchmark) and with it every
/// range; a player needs the audio and the first range, so both still come before the rest.
const AUDIO_POSITION: i64 = 1;

/// Share of the input's duration the cheap tasks are expected to take (stream copies, the
/// audio encode): their weights, relative to one video output encode of the whole input (1.0).
const SPLIT_WEIGHT: f64 = 0.02;
const AUDIO_WEIGHT: f64 = 0.05;
const STITCH_WEIGHT: f64 = 0.03;

/// The view's reason while the split of an input admission could not probe is undecided.
pub const PENDING: &str = "pending";

/// What the job view says of the split decision [`tasks`] makes (the same inputs, the same
/// plan), so a user whose job runs as one task learns why: the plan's [`NoSplit`] reason, or
/// `pending` for an input admission does not probe (URL, key, tus) until its first task has.
pub fn split_view(
    renditions: &[Rendition],
    info: Option<&MediaInfo>,
    settings: SplitSettings,
    request: SplitRequest,
    side: &SideFiles,
) -> SplitView {
    let not = |reason: &str, message: String| SplitView {
        applied: false,
        reason: Some(reason.into()),
        message: Some(message),
        ..SplitView::default()
    };
    let Some(info) = info else {
        // Side files known before the probe (a watermark, caption files) decide at once.
        if let (false, Some(why)) = (
            matches!(request, SplitRequest::Mode(SplitMode::Off)),
            side.keeps_whole(false),
        ) {
            return not(&reason_code(&why), no_split_message(&why));
        }
        return match request {
            SplitRequest::Mode(SplitMode::Off) => not("off", no_split_message(&NoSplit::Off)),
            _ if !renditions
                .iter()
                .any(|r| split::plan::rendition_split(r).is_ok()) =>
            {
                not(
                    "no_splittable_output",
                    no_split_message(&NoSplit::NoSplittableOutput),
                )
            }
            _ => not(
                PENDING,
                "the input is probed by the job's first task (URL, key and tus-upload inputs): \
                 it decides the split with the same plan, and this view shows the decision"
                    .into(),
            ),
        };
    };
    match split::plan(info, renditions, settings, request, side) {
        SplitPlan::Split(layout) => SplitView {
            applied: true,
            segment_seconds: Some(layout.segment_seconds),
            ranges: Some(layout.ranges.len() as u32),
            ..SplitView::default()
        },
        SplitPlan::Single(why) => not(&reason_code(&why), no_split_message(&why)),
    }
}

/// The stable snake_case code of a [`NoSplit`] (its serde tag).
fn reason_code(why: &NoSplit) -> String {
    serde_json::to_value(why)
        .ok()
        .and_then(|v| v["reason"].as_str().map(String::from))
        .unwrap_or_else(|| "not_split".into())
}

fn no_split_message(why: &NoSplit) -> String {
    match why {
        NoSplit::Off => "the job asked for \"split\": \"off\"".into(),
        NoSplit::TooShort { duration, needed } => format!(
            "the input ({duration:.1} s) is shorter than twice the range length ({needed:.0} s)"
        ),
        NoSplit::UnknownDuration => "the input's duration is unknown".into(),
        NoSplit::NoVideoStream => "the input has no video stream".into(),
        NoSplit::InputCodec { codec } => format!(
            "the input's video codec {codec} cannot be cut by stream copy (H.264, HEVC, MPEG-1/2 can)"
        ),
        NoSplit::NoSplittableOutput => "no output can be encoded piecewise (VP9/AV1/copy video, \
             trimmed, audio-only, thumbnail, DASH/CMAF and storyboard outputs stay whole)"
            .into(),
        NoSplit::SideFiles { what } => format!(
            "a job with {what} runs as one task: split-and-stitch does not apply captions or \
             watermarks yet"
        ),
    }
}

/// The tasks an admitted job runs as. One `transcode` task doing all of it, unless the input
/// was probed at admission (`info`: uploads) and [`split::plan`] splits it: then
/// `split` → one `encode_segment` per range (position = range index, so the start of the video
/// is ready first; weight ∝ range length) and one `encode_audio` per distinct audio plan →
/// `stitch`, plus one `transcode` task for the outputs that stay whole.
pub fn tasks(
    estimated_seconds: f64,
    renditions: &[Rendition],
    info: Option<&MediaInfo>,
    settings: SplitSettings,
    request: SplitRequest,
    side: &SideFiles,
) -> Vec<NewTask> {
    let single = || vec![NewTask::transcode(estimated_seconds)];
    let Some(info) = info else {
        // Not probed yet: the one task decides once it has (see [`grown_tasks`]).
        let decide = !matches!(request, SplitRequest::Mode(SplitMode::Off))
            && side.keeps_whole(false).is_none()
            && renditions
                .iter()
                .any(|r| split::plan::rendition_split(r).is_ok());
        if !decide {
            return single();
        }
        return vec![NewTask {
            payload: serde_json::to_value(TranscodePayload {
                renditions: None,
                decide_split: Some(request),
            })
            .unwrap_or_default(),
            ..NewTask::transcode(estimated_seconds)
        }];
    };
    let SplitPlan::Split(layout) = split::plan(info, renditions, settings, request, side) else {
        return single();
    };
    let duration = info.best_duration().unwrap_or(0.0).max(1.0);
    let split_renditions: Vec<Rendition> = renditions
        .iter()
        .filter(|r| layout.split.contains(&r.name))
        .cloned()
        .collect();
    let mut out = vec![NewTask {
        key: "split".into(),
        kind: SPLIT.into(),
        payload: serde_json::to_value(SplitPayload {
            layout: layout.clone(),
        })
        .unwrap_or_default(),
        depends_on: vec![],
        weight: duration * SPLIT_WEIGHT,
        position: 0,
    }];
    let mut stitch_deps = vec!["split".to_string()];
    for r in &layout.ranges {
        let key = segment_key(r.index);
        out.push(NewTask {
            key: key.clone(),
            kind: ENCODE_SEGMENT.into(),
            payload: serde_json::json!({ "index": r.index }),
            depends_on: vec!["split".into()],
            weight: (r.end - r.start).max(0.1) * split_renditions.len() as f64,
            position: r.index as i64,
        });
        stitch_deps.push(key);
    }
    for a in split::audio_tasks(&split_renditions, info) {
        let key = format!("audio-{}", a.kbps);
        out.push(NewTask {
            key: key.clone(),
            kind: ENCODE_AUDIO.into(),
            payload: serde_json::to_value(&a).unwrap_or_default(),
            depends_on: vec![],
            weight: duration * AUDIO_WEIGHT,
            position: AUDIO_POSITION,
        });
        stitch_deps.push(key);
    }
    out.push(NewTask {
        key: "stitch".into(),
        kind: STITCH.into(),
        payload: serde_json::json!({}),
        depends_on: stitch_deps,
        weight: duration * STITCH_WEIGHT,
        position: layout.ranges.len() as i64,
    });
    if !layout.whole.is_empty() {
        let names: Vec<String> = layout.whole.iter().map(|(n, _)| n.clone()).collect();
        out.push(NewTask {
            payload: serde_json::to_value(TranscodePayload {
                renditions: Some(names.clone()),
                decide_split: None,
            })
            .unwrap_or_default(),
            weight: duration * names.len() as f64,
            ..NewTask::transcode(0.0)
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(seconds: f64, subtitles: bool) -> MediaInfo {
        let sub = if subtitles {
            r#",{"index":2,"codec_type":"subtitle","codec_name":"mov_text"}"#
        } else {
            ""
        };
        reelay_media::probe::parse_probe_json(&format!(
            r#"{{"streams":[{{"index":0,"codec_type":"video","codec_name":"h264","width":640,"height":360,"avg_frame_rate":"25/1"}},
               {{"index":1,"codec_type":"audio","codec_name":"aac","channels":2,"sample_rate":"48000"}}{sub}],
               "format":{{"format_name":"mov,mp4,m4a","duration":"{seconds}"}}}}"#
        ))
        .expect("probe json")
    }

    fn spec(json: &str) -> (JobSpec, Vec<Rendition>) {
        let spec: JobSpec = serde_json::from_str(json).expect("spec");
        let r = reelay_media::resolve_outputs(&spec.outputs).expect("renditions");
        (spec, r)
    }

    #[test]
    fn an_unprobed_input_is_pending_and_its_one_task_decides() {
        let none = SideFiles::default();
        let (_, r) = spec(r#"{"outputs":[{"preset":"mp4-360p"},{"preset":"thumbnail"}]}"#);
        let settings = SplitSettings::default();
        let t = tasks(120.0, &r, None, settings, SplitRequest::default(), &none);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].kind, TRANSCODE);
        assert_eq!(t[0].payload, serde_json::json!({ "decide_split": "auto" }));
        let v = split_view(&r, None, settings, SplitRequest::default(), &none);
        assert_eq!(v.reason.as_deref(), Some(PENDING));
        // Off, or nothing that could split: decided now, no decision left to the task.
        let off: SplitRequest = serde_json::from_str(r#""off""#).expect("off");
        assert_eq!(
            tasks(120.0, &r, None, settings, off, &none)[0].payload,
            serde_json::json!({})
        );
        let (_, vp9) = spec(r#"{"outputs":[{"preset":"webm-vp9-720p"}]}"#);
        assert_eq!(
            tasks(120.0, &vp9, None, settings, SplitRequest::default(), &none)[0].payload,
            serde_json::json!({})
        );
        assert_eq!(
            split_view(&vp9, None, settings, SplitRequest::default(), &none)
                .reason
                .as_deref(),
            Some("no_splittable_output")
        );
    }

    #[test]
    fn side_files_known_at_admission_decide_there_and_the_probe_finds_the_rest() {
        let settings = SplitSettings::default();
        let auto = SplitRequest::default();
        let (marked, r) =
            spec(r#"{"outputs":[{"preset":"mp4-360p"}],"watermark":{"position":"top-left"}}"#);
        // Not probed yet, but a watermark keeps it whole anyway: no decision left to the task.
        let (view, t) = decide(&marked, 60.0, &r, None, settings, auto);
        assert_eq!(view.reason.as_deref(), Some("side_files"));
        assert!(view.message.unwrap_or_default().contains("a watermark"));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].payload, serde_json::json!({}));
        // Captions in the input are only known from the probe: the plan finds them.
        let (plain, r) = spec(r#"{"outputs":[{"preset":"mp4-360p"}]}"#);
        let (view, t) = decide(&plain, 60.0, &r, Some(&info(100.0, true)), settings, auto);
        assert_eq!(view.reason.as_deref(), Some("side_files"));
        assert!(view.message.unwrap_or_default().contains("captions"));
        assert_eq!(t.len(), 1);
        let (view, t) = decide(&plain, 60.0, &r, Some(&info(100.0, false)), settings, auto);
        assert!(view.applied);
        assert!(t.len() > 1);
    }

    #[test]
    fn the_split_goes_first_then_the_first_range_and_the_audio() {
        let (_, r) = spec(r#"{"outputs":[{"preset":"hls-abr"},{"preset":"mp4-360p"}]}"#);
        let t = tasks(
            400.0,
            &r,
            Some(&info(200.0, false)),
            SplitSettings::default(),
            SplitRequest::default(),
            &SideFiles::default(),
        );
        // The store's claim order among a job's tasks: position, then id (`{job}.{key}`).
        let mut order: Vec<(i64, &str)> = t.iter().map(|t| (t.position, t.key.as_str())).collect();
        order.sort();
        let keys: Vec<&str> = order.iter().map(|o| o.1).collect();
        let audio = t.iter().filter(|t| t.kind == ENCODE_AUDIO).count();
        assert!(audio > 0);
        assert_eq!(keys[..2], ["seg-00000", "split"]);
        assert!(
            keys[2..2 + audio].iter().all(|k| k.starts_with("audio-")),
            "{keys:?}"
        );
        assert_eq!(keys[2 + audio], "seg-00001");
        // The first range waits for the split; nothing waits for the audio but the stitch.
        let first = t.iter().find(|t| t.key == "seg-00000").expect("range 0");
        assert_eq!(first.depends_on, ["split"]);
        assert!(t
            .iter()
            .filter(|t| t.kind == ENCODE_AUDIO)
            .all(|a| a.depends_on.is_empty()));
    }

    #[test]
    fn the_grown_graph_is_the_upload_graph_hung_under_the_first_task() {
        let (s, r) = spec(r#"{"outputs":[{"preset":"mp4-360p"},{"preset":"thumbnail"}]}"#);
        let settings = SplitSettings::default();
        let auto = SplitRequest::default();
        let g = grown_tasks(
            "transcode",
            &s,
            &r,
            &info(100.0, false),
            settings,
            auto,
            Some("inputs/j/source".into()),
        )
        .expect("a long input splits");
        let upload = tasks(
            200.0,
            &r,
            Some(&info(100.0, false)),
            settings,
            auto,
            &SideFiles::default(),
        );
        assert_eq!(g.tasks.len(), upload.len());
        for (grown, up) in g.tasks.iter().zip(&upload) {
            assert_eq!(grown.kind, up.kind);
            if up.depends_on.is_empty() {
                assert_eq!(grown.depends_on, ["transcode"], "{}", grown.key);
            } else {
                assert_eq!(grown.depends_on, up.depends_on);
            }
        }
        let whole = g.tasks.last().expect("tasks");
        assert_eq!(
            (whole.kind.as_str(), whole.key.as_str()),
            (TRANSCODE, WHOLE_KEY)
        );
        assert_eq!(g.estimated_seconds, 200.0);
        assert!(g.grower_weight > 0.0 && g.grower_weight < 10.0);
        assert_eq!(g.input_key.as_deref(), Some("inputs/j/source"));
        let view: SplitView =
            serde_json::from_str(g.split_json.as_deref().expect("view")).expect("view json");
        assert!(view.applied);
        assert_eq!(view.ranges, Some(4));
        // Short, captions in the input, or a watermark: the task encodes everything itself.
        assert!(grown_tasks(
            "transcode",
            &s,
            &r,
            &info(40.0, false),
            settings,
            auto,
            None
        )
        .is_none());
        assert!(grown_tasks(
            "transcode",
            &s,
            &r,
            &info(100.0, true),
            settings,
            auto,
            None
        )
        .is_none());
        let (marked, mr) =
            spec(r#"{"outputs":[{"preset":"mp4-360p"}],"watermark":{"position":"top-left"}}"#);
        assert!(grown_tasks(
            "transcode",
            &marked,
            &mr,
            &info(100.0, false),
            settings,
            auto,
            None
        )
        .is_none());
    }
}
