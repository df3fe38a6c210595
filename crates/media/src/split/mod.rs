//! Split-and-stitch: a long input is cut at keyframes into pieces (stream copy), each range of
//! the input is encoded to every video output by its own task, the audio is encoded once for
//! the whole input, and a stitch joins them without re-encoding.
//!
//! - [`plan`]: whether and where to split (pure).
//! - [`cut`]: the `split` task, pieces + [`Manifest`].
//! - [`encode`]: the `encode_segment` and `encode_audio` tasks.
//! - [`stitch`]: the `stitch` task (MP4/MOV/Matroska files, HLS playlists).
//! - [`playlist`]: HLS playlists from segment lists (pure).
//!
//! The timeline: 0 is the input's start (its format `start_time`), as in the unsplit encode,
//! where ffmpeg subtracts that start from every stream. Pieces keep their input timestamps
//! (`-copyts`), shifted by the TS muxer by a constant the manifest measures (`file_offset`).
//! Every encoded piece is written at [`BASE`] + its timeline time, so pieces and audio meet at
//! the joints with continuous timestamps and the stitch can concatenate without rewriting them.

pub mod cut;
pub mod encode;
pub mod plan;
pub mod playlist;
pub mod stitch;

pub use cut::{split, Manifest, Piece};
pub use encode::{
    audio_task_for, audio_tasks, encode_audio, encode_segment, segment_tasks, AudioOutput,
    AudioTask, HlsPiece, SegmentOutput, SegmentTask,
};
pub use plan::{
    plan, KeepWhole, NoSplit, Range, SideFiles, SplitLayout, SplitPlan, SplitRequest, SplitSettings,
};
pub use stitch::{hls_plan, stitch_file, stitch_hls, HlsPlan, HlsState};

use crate::run::RunError;

/// Seconds added to every encoded piece's and audio track's timestamps: the unsplit timeline
/// shifted away from 0, so that no piece (the first included, whose B-frames decode before
/// its first picture is shown) has a negative decode timestamp that a muxer would shift on
/// its own and break the alignment between pieces.
pub const BASE: f64 = 10.0;

/// How a split-and-stitch step failed; knows its code and whether a retry may help, like
/// [`RunError`].
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error(transparent)]
    Run(#[from] RunError),
    /// Reading or writing scratch files: the machine's fault, worth another attempt.
    #[error("scratch file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// ffprobe could not read the input's packets or a piece.
    #[error("ffprobe failed on {what}: {message}")]
    Probe { what: String, message: String },
    /// The input cannot be cut as planned (no keyframes, a piece missing, timestamps that do
    /// not line up): the same input fails the same way every time.
    #[error("cannot split this input: {0}")]
    Unsplittable(String),
    /// The task's inputs are not what it was given to expect (a piece or an encoded part
    /// missing from the work directory).
    #[error("missing {0}")]
    Missing(String),
}

impl SplitError {
    pub fn code(&self) -> &'static str {
        match self {
            SplitError::Run(e) => e.code(),
            SplitError::Io { .. } => "scratch_io",
            SplitError::Probe { .. } => "corrupt_input",
            SplitError::Unsplittable(_) => "split_failed",
            SplitError::Missing(_) => "missing_part",
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            SplitError::Run(e) => e.is_transient(),
            // A part that another task should have stored may appear once it is retried.
            SplitError::Io { .. } | SplitError::Missing(_) => true,
            SplitError::Probe { .. } | SplitError::Unsplittable(_) => false,
        }
    }
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SplitError + '_ {
    move |source| SplitError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_know_their_code_and_whether_a_retry_can_help() {
        let io = SplitError::Io {
            path: "x".into(),
            source: std::io::Error::other("disk"),
        };
        assert_eq!((io.code(), io.is_transient()), ("scratch_io", true));
        let u = SplitError::Unsplittable("no keyframes".into());
        assert_eq!((u.code(), u.is_transient()), ("split_failed", false));
        let r = SplitError::Run(RunError::Stalled(std::time::Duration::from_secs(1)));
        assert_eq!((r.code(), r.is_transient()), ("stalled", true));
    }
}
