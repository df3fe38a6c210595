//! Wire types shared by the api, the workers, the edge and the CLI.
//!
//! Everything here is plain data with serde derives, so that every side of reelay agrees on the JSON
//! without depending on each other's internals. The shapes are the contracts of
//! `docs/architecture.md`; change them only together with every reader.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// What a user asks for: one input, one or more outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Absent when the input arrives as the multipart `file` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    /// Higher runs first; ties run oldest first.
    #[serde(default)]
    pub priority: i32,
    /// Split-and-stitch: `"auto"` (absent means auto), `"off"`, or `{"segment_seconds": N}`.
    /// Kept as JSON here (the protocol crate knows no media); admission reads it as
    /// `reelay_media::split::SplitRequest` and answers 422 naming `split` when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<serde_json::Value>,
    /// PSNR/SSIM receipts on every video file output. Absent: on for inputs up to the
    /// cluster's `quality_report_max_seconds`, off for longer ones; `false` turns them off,
    /// `true` asks for them whatever the length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_report: Option<bool>,
    /// Webhook endpoints told about this job's events (Standard Webhooks, signed with the
    /// owner's secret, `GET /v1/webhooks/secret`); at most a few, each through the SSRF guard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifySpec>,
    /// Caption files the job carries. The input's own text subtitle streams become caption
    /// tracks without asking; this adds files uploaded as multipart parts named `captions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captions: Option<CaptionsSpec>,
    /// A watermark laid over every video output: `{"position", "margin", "scale", "opacity"}`,
    /// the image itself being the multipart part `watermark`. Kept as JSON here (the protocol
    /// crate knows no media); admission reads it as `reelay_media::watermark::WatermarkSpec`
    /// and answers 422 naming the field when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<serde_json::Value>,
    /// The caller's own context (an order id, a user id, a title): string keys to string
    /// values, returned in every job view and webhook, and filterable (`GET
    /// /v1/jobs?metadata.<key>=<value>`). Bounded by the api (`reelay_server::context`).
    /// Sorted by key, so equal metadata hashes equal for idempotency.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The job's own caption files: one entry per multipart part named `captions`, in the order the
/// parts are sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CaptionsSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<CaptionFileSpec>,
    /// Burn the caption track of this language (a stream's or a file's) into the picture of
    /// every MP4 file output; the sidecars and renditions stay as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn_in: Option<String>,
}

/// What a caption part is: its language (BCP 47, e.g. `en`, `pt-BR`) and display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CaptionFileSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// One per-job webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    pub url: String,
}

/// Where the input comes from. Exactly one of `url`, `key` or `upload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A finished tus upload of this cluster (`/v1/uploads`), by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
}

/// One requested output: either a named preset, or a custom description.
///
/// Kept as one flat struct (instead of an untagged enum) so that validation can name the exact
/// offending field in its 422 answer instead of serde's "did not match any variant".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trim: Option<TrimSpec>,
    /// Only with `"container": "storyboard"`: the sprite sheets' layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storyboard: Option<StoryboardSpec>,
    /// Only with `preset`: loudness work on the preset's audio, the same values as a custom
    /// output's `audio.loudness` (a preset takes no `audio` section, so this is how a preset
    /// output asks for it). Kept as JSON like `audio.loudness`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loudness: Option<serde_json::Value>,
}

impl OutputSpec {
    pub fn preset(name: &str) -> Self {
        OutputSpec {
            preset: Some(name.to_string()),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VideoSpec {
    /// `h264`, `h265`, `vp9`, `av1`, `copy` or `none`.
    pub codec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crf: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AudioSpec {
    /// `aac`, `opus`, `copy` or `none`.
    pub codec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<u32>,
    /// `"ebu-r128"`, `"streaming"`, `"measure"` or a number of LUFS; kept as JSON here and read
    /// by `reelay_media::loudness::parse_mode`, so the 422 can say what is wrong with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loudness: Option<serde_json::Value>,
}

/// Scrub-preview sprite sheets: one frame every `interval_seconds`, `columns` x `rows` tiles per
/// JPEG sheet, each tile's shorter side `tile_short_side` pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoryboardSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tile_short_side: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrimSpec {
    /// Seconds from the start of the input.
    #[serde(default)]
    pub start: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
}

/// The lifecycle of a job as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// A terminal job never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?} (expected one of queued, running, succeeded, failed, cancelled)"))
    }
}

/// Every answer about a job, and the payload of its SSE events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    pub cluster: String,
    pub status: JobStatus,
    /// 0.0 ..= 1.0
    pub progress: f64,
    pub attempts: u32,
    /// RFC 3339 timestamps.
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<ErrorDetail>,
    pub outputs: Vec<OutputView>,
    /// When the job's files were deleted (`DELETE /v1/jobs/{id}` or retention); the job stays
    /// as a tombstone with no outputs. Absent while its files exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// When the job's HLS outputs became playable while it still encoded (progressive HLS of
    /// a split job: `EVENT` playlists served at the outputs' usual paths, `VOD` once it
    /// succeeds). Absent for every other job, and until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playable_at: Option<String>,
    /// Whether the job was split into tasks (split-and-stitch) and, if not, why. Absent for
    /// jobs made by older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitView>,
    /// The units of work the job runs as: one `transcode` task for a plain job, several for a
    /// split one. Absent from older servers' answers (read as empty).
    #[serde(default)]
    pub tasks: Vec<TaskView>,
    /// The caller's `metadata`, as submitted (`{}` when none).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// What the input is: its name from submission on, the probed facts once a worker (or the
    /// api, for multipart uploads) has read it. `None` only from older servers.
    #[serde(default)]
    pub input: Option<InputView>,
    /// The outputs the job asked for, in the spec's order, named as they will be stored, so a
    /// list can say what a job makes before it has made anything.
    #[serde(default)]
    pub requested_outputs: Vec<RequestedOutput>,
    /// Where the job's time went: phase → seconds, the sum of its tasks' `timings` (tasks that
    /// ran side by side each count whole). Absent until a task has succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<std::collections::BTreeMap<String, f64>>,
}

/// A job's input as people see it. Never a server path or storage key: the name is the
/// uploaded file's name, or the last segment of the input URL or key, cleaned of directories
/// and control characters. The other fields are `None` (JSON null) until the input is probed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InputView {
    pub name: Option<String>,
    pub size: Option<u64>,
    pub duration_seconds: Option<f64>,
    /// Displayed picture size (rotation applied: a portrait phone clip is 1080x1920).
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
}

impl InputView {
    /// The name with the probed facts, if any.
    pub fn new(name: Option<String>, facts: Option<&InputFacts>) -> InputView {
        let f = facts.cloned().unwrap_or_default();
        InputView {
            name,
            size: f.size,
            duration_seconds: f.duration_seconds,
            width: f.width,
            height: f.height,
            video_codec: f.video_codec,
            audio_codec: f.audio_codec,
        }
    }
}

/// What probing a job's input found, as the job store keeps it (one JSON column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InputFacts {
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub video_codec: Option<String>,
    #[serde(default)]
    pub audio_codec: Option<String>,
}

/// One output a job asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RequestedOutput {
    /// Its name under `/v1/jobs/{id}/outputs/`: a file's name as the job's `outputs` will list
    /// it (`mp4-720p.mp4`), or the directory of a ladder or storyboard (`hls-abr`).
    pub name: String,
    /// The preset it names, if it is one.
    pub preset: Option<String>,
}

/// Whether a job was split (decided at admission, or by the job's first task for inputs
/// admission does not probe; see the README's Split-and-stitch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SplitView {
    pub applied: bool,
    /// Why not, stable snake_case: `off`, `pending` (input not probed yet), `too_short`,
    /// `unknown_duration`, `no_video_stream`, `input_codec`, `no_splittable_output`,
    /// `side_files` (captions or a watermark: made by the one-task encode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The reason in words, with its numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When split: the range length (seconds) and how many ranges. Under `"auto"` the length
    /// is fitted to the cluster's worker slots (never above what the plan makes of
    /// `split.segment_seconds`), and a job
    /// with an HLS output starts with shorter ranges (4, 8, 16 s ...) so a player can start
    /// early; `ranges` counts them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<u32>,
}

/// One task of a job, as the job view shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    /// `transcode`, `split`, `encode_segment`, `encode_audio`, `stitch`.
    pub kind: String,
    /// `blocked` (waiting for other tasks), `queued`, `running`, `succeeded`, `failed`,
    /// `cancelled`.
    pub status: String,
    /// 0.0 ..= 1.0
    pub progress: f64,
    pub attempts: u32,
    /// Where the succeeded attempt's time went: phase (`claim`, `fetch`, `probe`, `analyse`,
    /// `encode`, `receipt`, `publish`) → seconds; repeated phases (one encode per output) add
    /// up. Absent until the task has succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<std::collections::BTreeMap<String, f64>>,
    /// The cluster whose worker ran the task's latest attempt: the job's own, or the peer
    /// cluster it moved to (issue 16). Absent until the task is first claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_on: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct OutputView {
    pub name: String,
    /// Absolute path under `/v1/jobs/{id}/outputs/`.
    pub url: String,
    pub size: u64,
    pub content_type: String,
    /// Loudness before and after, when the output asked for `audio.loudness`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loudness: Option<LoudnessReceipt>,
    /// PSNR/SSIM and bitrate of a video file output (see `JobSpec::quality_report`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityReceipt>,
    /// A streaming ladder's manifest (HLS/DASH/CMAF): the receipt of each rung, in the ladder's order (largest picture first).
    /// H.264 rungs are measured by the encoder, H.265/AV1 rungs with the filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<RungQuality>,
}

/// One loudness measurement (ITU-R BS.1770). `None` values: silence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct LoudnessValues {
    /// Integrated loudness, LUFS.
    pub integrated_lufs: Option<f64>,
    /// True peak, dBTP.
    pub true_peak_dbtp: Option<f64>,
    /// Loudness range, LU.
    pub range_lu: Option<f64>,
}

/// What an output's loudness was and became.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct LoudnessReceipt {
    /// `"measure"` or `"normalize"`.
    pub mode: LoudnessAction,
    /// Target integrated loudness, LUFS; absent for `measure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_lufs: Option<f64>,
    /// The input's audio, measured before encoding.
    pub input: LoudnessValues,
    /// The output's audio as written, measured again (file outputs; absent for ladders, whose
    /// audio went through the same filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<LoudnessValues>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LoudnessAction {
    #[default]
    Measure,
    Normalize,
}

/// What a video output is worth against its source scaled to the output's size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct QualityReceipt {
    /// Mean PSNR (dB) over frames and planes; absent when identical to the source (infinite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psnr_db: Option<f64>,
    /// Mean SSIM, 0..=1.
    pub ssim: f64,
    /// Frames compared.
    pub frames: u64,
    /// Mean bitrate of the whole file (all streams), kbit/s; for a ladder's rung, of its video
    /// stream (as the encoder counted it, or its files' size over the duration for a
    /// filter-measured rung; absent for an H.265/AV1 HLS variant, whose files hold its audio too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<f64>,
    /// How it was measured; absent in receipts written before this existed (`filters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<QualityMethod>,
}

/// Where a quality receipt's numbers come from. Both compare with the source after reelay's
/// filters and scaling; SSIM is luma in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QualityMethod {
    /// The encoder compared each frame it encoded with its reconstruction (libx264), during
    /// the encode: no second decode.
    Encoder,
    /// ffmpeg's `psnr` and `ssim` filters on the written output and the source decoded again.
    Filters,
}

/// The quality receipt of one rung of a streaming ladder.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct RungQuality {
    /// The rung's index (its `v{rung}` directory; 0 is the largest picture).
    pub rung: u32,
    pub width: u32,
    pub height: u32,
    pub quality: QualityReceipt,
}

/// `GET /v1/jobs` answer: newest first, `next_cursor` continues the listing.
///
/// Through the edge the page is merged from every cluster. A cluster that could not be asked
/// (marked down, or not answering) is named in `missing_clusters` and `partial` is true: its jobs
/// are absent from this page, not gone, and a reader must not take the page for the whole truth.
/// A cluster's own answer is never partial. Both fields default when absent, so older servers
/// read as complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    pub next_cursor: Option<String>,
    /// Some clusters' jobs could not be listed.
    #[serde(default)]
    pub partial: bool,
    /// The clusters whose jobs are missing from this page, by name, sorted.
    #[serde(default)]
    pub missing_clusters: Vec<String>,
}

impl JobList {
    /// A page with nothing missing.
    pub fn complete(jobs: Vec<JobView>, next_cursor: Option<String>) -> JobList {
        JobList::with_missing(jobs, next_cursor, Vec::new())
    }

    /// A page that lacks the jobs of `missing` (sorted and deduplicated here); partial unless
    /// that is empty.
    pub fn with_missing(
        jobs: Vec<JobView>,
        next_cursor: Option<String>,
        mut missing: Vec<String>,
    ) -> JobList {
        missing.sort();
        missing.dedup();
        JobList {
            jobs,
            next_cursor,
            partial: !missing.is_empty(),
            missing_clusters: missing,
        }
    }
}

/// `GET /v1/jobs/{id}/outputs` answer: every stored file of a finished job (HLS segments included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputFiles {
    pub files: Vec<OutputView>,
}

/// `GET /v1/load`: what the edge needs to place new work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub cluster: String,
    /// Concurrent job slots of the live workers.
    pub capacity: u32,
    pub running: u32,
    pub queued: u32,
    /// Estimated seconds of encoding work waiting in the queue, divided over capacity.
    pub backlog_seconds: f64,
    pub accepting: bool,
    /// Estimated seconds each running job has left, ascending: when the next slots free up.
    /// Absent from older clusters (the edge then assumes a default job length).
    #[serde(default)]
    pub running_remaining_seconds: Vec<f64>,
    /// The workers' recent encode speed (media seconds per wall second) that turned the queued
    /// media into `backlog_seconds`; `None` until a worker has finished a job.
    #[serde(default)]
    pub encode_speed: Option<f64>,
    /// The task this cluster would hand a peer's worker now (issue 16): of the first ready
    /// tasks in line of a kind that may move and that never moved, the one with the most work,
    /// named by an opaque handle. `None` when there is none (or from older clusters). The
    /// edge's stealing policy weighs it against its transfer cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<StealOffer>,
}

/// The task at the front of a cluster's queue a peer might take (`LoadReport::offer`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StealOffer {
    pub task_id: String,
    /// Seconds since it became ready (all its dependencies done).
    pub ready_seconds: f64,
    /// Bytes a thief must fetch to run it (its inputs).
    pub input_bytes: u64,
    /// Bytes it is expected to write (an estimate; a thief sends them back).
    pub output_bytes: u64,
    /// Estimated seconds of encoding it takes once started.
    pub expected_seconds: f64,
}

/// The edge's answer to `GET /edge/steal?thief={cluster}` (issue 16): which cluster an idle
/// worker of `thief` should take a task from, and which task, or `from: null` with the reason
/// to take nothing now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StealDecision {
    /// The cluster to claim from; `None` (`null`): take nothing.
    pub from: Option<String>,
    /// The task to claim there (the claim names it, so the decision and the claim agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Seconds the move is expected to save: the task's wait at home less its transfer and
    /// egress price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_seconds: Option<f64>,
    /// What the move costs, in seconds: transfer time plus the egress price as waiting time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_seconds: Option<f64>,
    /// Why nothing moves: `disabled`, `thief_busy`, `nothing_ready`, `not_worth_it`,
    /// `short_wait` (the head has not waited, nor would wait, `min_wait_seconds` in all),
    /// `cooldown` (the offering cluster just took a task from the thief), `thief_unknown` (the
    /// edge has no load reading of the thief yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One entry of `GET /v1/presets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresetInfo {
    pub name: String,
    pub description: String,
    pub container: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresetList {
    pub presets: Vec<PresetInfo>,
}

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable, snake_case, stable.
    pub code: String,
    /// For people; never contains file contents or secrets.
    pub message: String,
}

impl ErrorDetail {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorDetail {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// What a steal offer's opaque task handle starts with (the owner seals the task id into it;
/// see the server's `offer_handle`). No task id starts so: ids start with a cluster name.
pub const OFFER_HANDLE_PREFIX: &str = "o_";

/// Whether `task` names a task by an owner's opaque offer handle rather than by its id: a thief
/// cannot check such a claim answer's id against what it asked for.
pub fn is_offer_handle(task: &str) -> bool {
    task.starts_with(OFFER_HANDLE_PREFIX)
}

/// Cluster names appear in job ids and in nginx.conf, so they are kept to a safe alphabet.
pub fn valid_cluster_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A job id is `{cluster}.{ULID}`; the edge routes on the part before the dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobId {
    pub cluster: String,
    pub ulid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job id {0:?}: expected {{cluster}}.{{ULID}}")]
pub struct InvalidJobId(pub String);

impl FromStr for JobId {
    type Err = InvalidJobId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidJobId(s.chars().take(80).collect());
        let (cluster, ulid) = s.split_once('.').ok_or_else(bad)?;
        let ulid_ok = ulid.len() == 26
            && ulid
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
        if !valid_cluster_name(cluster) || !ulid_ok {
            return Err(bad());
        }
        Ok(JobId {
            cluster: cluster.to_string(),
            ulid: ulid.to_string(),
        })
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.cluster, self.ulid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_lists_say_what_they_miss_and_old_answers_read_as_complete() {
        let old: JobList = serde_json::from_str(r#"{"jobs": [], "next_cursor": null}"#).unwrap();
        assert_eq!(old, JobList::complete(vec![], None));
        assert!(!old.partial);
        let l = JobList::with_missing(vec![], None, vec!["gcp".into(), "aws".into(), "gcp".into()]);
        assert!(l.partial);
        assert_eq!(l.missing_clusters, ["aws", "gcp"]);
        // Always written out, so that a script can rely on the field being there.
        let v = serde_json::to_value(JobList::complete(vec![], None)).unwrap();
        assert_eq!(v["partial"], false);
        assert_eq!(v["missing_clusters"], serde_json::json!([]));
    }

    #[test]
    fn job_id_round_trips_and_rejects_garbage() {
        let id: JobId = "aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2".parse().unwrap();
        assert_eq!(id.cluster, "aws");
        assert_eq!(id.to_string(), "aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2");
        for bad in [
            "",
            "aws",
            "aws.",
            ".01JDQ7Z3K4M5N6P7Q8R9S0T1V2",
            "AWS.01JDQ7Z3K4M5N6P7Q8R9S0T1V2",
            "aws.01jdq7z3k4m5n6p7q8r9s0t1v2",
            "a/b.01JDQ7Z3K4M5N6P7Q8R9S0T1V2",
            "aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2/../x",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn spec_rejects_unknown_fields_and_accepts_contract_shape() {
        let spec: JobSpec = serde_json::from_str(
            r#"{"input":{"url":"https://x/y.mp4"},"outputs":[{"preset":"mp4-720p"},
               {"name":"small","container":"mp4","video":{"codec":"h264","height":240,"crf":28},
                "audio":{"codec":"aac","bitrate_kbps":96}}],"priority":3}"#,
        )
        .unwrap();
        assert_eq!(spec.outputs.len(), 2);
        assert_eq!(spec.priority, 3);
        assert!(serde_json::from_str::<JobSpec>(r#"{"outputs":[],"bogus":1}"#).is_err());
    }

    #[test]
    fn status_parses_and_knows_terminal_states() {
        assert_eq!("running".parse::<JobStatus>().unwrap(), JobStatus::Running);
        assert!("done".parse::<JobStatus>().is_err());
        assert!(JobStatus::Cancelled.is_terminal());
        assert!(!JobStatus::Queued.is_terminal());
        assert_eq!(
            serde_json::to_string(&JobStatus::Succeeded).unwrap(),
            "\"succeeded\""
        );
    }
}
