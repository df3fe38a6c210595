//! The media engine: probing, input policy, outputs → ffmpeg argv, and running ffmpeg.
//!
//! FFmpeg runs as a subprocess (a crash or a hostile file cannot take the service down), always
//! with a protocol allowlist, a demuxer allowlist and the demuxer forced to the probed one, so a
//! playlist disguised as a video cannot make it read other files or reach the network.

pub mod analysis;
pub mod argv;
pub mod captions;
pub mod codecs;
pub mod compat;
pub mod loudness;
pub mod manifest;
pub mod mp4probe;
pub mod package;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod progress;
pub mod quality;
pub mod run;
pub mod sandbox;
pub mod split;
pub mod storyboard;
pub mod watermark;

pub use argv::{build, build_with, Extras, Invocation, Watermark};
pub use package::PackageError;
pub use plan::{preset_list, resolve_outputs, Packaging, Rendition, SpecError};
pub use policy::{InputPolicy, Needs, Rejection};
pub use probe::{
    detect_scan, probe, FieldOrder, MediaInfo, ProbeError, ScanError, StreamInfo, StreamKind,
};
pub use progress::Progress;
pub use run::{run_ffmpeg, RunError, RunLimits, RunStats};
pub use sandbox::{Limits, Tools};
pub use tokio_util::sync::CancellationToken;

use std::path::Path;

/// `file:` URL of a path, so a name like `a:b` can never be read as another protocol.
pub fn file_url(path: &Path) -> String {
    format!("file:{}", path.display())
}

/// What a set of outputs requires of the input.
pub fn needs(renditions: &[Rendition]) -> Needs {
    Needs {
        video: renditions.iter().any(|r| r.needs_video()),
        audio: !renditions.is_empty() && renditions.iter().all(|r| r.needs_audio()),
    }
}
