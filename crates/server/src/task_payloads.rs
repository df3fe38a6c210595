//! What the tasks of a job carry: the kinds of a split job and each kind's payload, shared by
//! admission (which writes them) and the worker's handlers (which read them), so neither imports
//! the other.

use reelay_media::split::{AudioOutput, Manifest, SegmentOutput, SplitLayout};
use reelay_media::MediaInfo;
use serde::{Deserialize, Serialize};

/// Task kinds of a split job (the `transcode` kind is [`reelay_jobs::TRANSCODE`]).
pub const SPLIT: &str = "split";
pub const ENCODE_SEGMENT: &str = "encode_segment";
pub const ENCODE_AUDIO: &str = "encode_audio";
pub const STITCH: &str = "stitch";

/// Payload of the `split` task: the plan it cuts for (the other tasks read it back from the
/// split task's output, with the manifest).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SplitPayload {
    pub layout: SplitLayout,
}

/// Payload of an `encode_segment` task: which range (the pieces it reads are only known once
/// the `split` task has cut, so it finds them in that task's output).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct SegmentPayload {
    pub index: usize,
}

/// Payload of a `transcode` task: the outputs it makes, by name; absent (every output) for a
/// job that is not split.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TranscodePayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renditions: Option<Vec<String>>,
    /// Set on the one task of a job whose input admission could not probe (URL, key, tus): the
    /// job's split request, which the task decides with [`crate::split_graph::grown_tasks`]
    /// once it has probed the input, growing the job's graph if the plan splits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decide_split: Option<reelay_media::split::SplitRequest>,
}

/// Task key of the `encode_segment` task of range `index`.
pub fn segment_key(index: usize) -> String {
    format!("seg-{index:05}")
}

/// What the `split` task records: the plan, the pieces and the probed input, for the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitResult {
    /// Storage prefix holding the piece files named by the manifest.
    pub prefix: String,
    pub layout: SplitLayout,
    pub manifest: Manifest,
    pub info: MediaInfo,
}

/// What an `encode_segment` task records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentResult {
    pub prefix: String,
    pub output: SegmentOutput,
    /// Every file it stored, relative to `prefix`.
    pub files: Vec<String>,
}

/// What an `encode_audio` task records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AudioResult {
    pub prefix: String,
    pub output: AudioOutput,
    pub files: Vec<String>,
}
