//! Running ffmpeg to *measure* something (field order, loudness, quality) rather than to encode.
//!
//! A measurement reads the same untrusted bytes as an encode, so it gets the same fences: the
//! protocol allowlist, the demuxer allowlist with the demuxer forced to the probed one, the pixel
//! bound, the resource limits and a wall-clock timeout. What it reports is printed by ffmpeg's
//! filters on stderr, which is returned whole for the caller's pure parser.

use crate::policy::InputPolicy;
use crate::sandbox::Tools;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Why a measurement run gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("could not run ffmpeg: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("measurement timed out")]
    TimedOut,
    #[error("ffmpeg failed: {0}")]
    Failed(String),
    #[error("ffmpeg printed no {0} measurement")]
    NoResult(&'static str),
}

impl AnalysisError {
    /// Stable code for job errors and logs.
    pub fn code(&self) -> &'static str {
        match self {
            AnalysisError::Spawn(_) => "ffmpeg_unavailable",
            AnalysisError::TimedOut => "analysis_timeout",
            AnalysisError::Failed(_) | AnalysisError::NoResult(_) => "analysis_failed",
        }
    }

    /// A missing binary or a slow machine may be better next time; a file ffmpeg cannot measure
    /// will not be.
    pub fn is_transient(&self) -> bool {
        matches!(self, AnalysisError::Spawn(_) | AnalysisError::TimedOut)
    }
}

/// One input of a measurement run: a file and the demuxer the probe found for it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub path: &'a Path,
    pub demuxer: &'a str,
}

/// Runs `ffmpeg <fenced inputs> <args> -f null -` and returns its stderr (loglevel info, where
/// the measuring filters print). `args` must not name files: the output is always `null`.
pub async fn run(
    tools: &Tools,
    policy: &InputPolicy,
    inputs: &[Input<'_>],
    args: &[String],
    timeout: Duration,
) -> Result<String, AnalysisError> {
    let null = ["-f".to_string(), "null".to_string(), "-".to_string()];
    run_fenced(tools, policy, inputs, args, &null, timeout).await
}

/// Like [`run`], writing one small derived file (`format`, e.g. `webvtt`) to `output`, a path
/// of the caller's working directory, as a `file:` URL so its name is never read as a protocol.
pub async fn convert(
    tools: &Tools,
    policy: &InputPolicy,
    inputs: &[Input<'_>],
    args: &[String],
    format: &str,
    output: &Path,
    timeout: Duration,
) -> Result<String, AnalysisError> {
    let tail = [
        "-y".to_string(),
        "-f".to_string(),
        format.to_string(),
        crate::file_url(output),
    ];
    run_fenced(tools, policy, inputs, args, &tail, timeout).await
}

async fn run_fenced(
    tools: &Tools,
    policy: &InputPolicy,
    inputs: &[Input<'_>],
    args: &[String],
    tail: &[String],
    timeout: Duration,
) -> Result<String, AnalysisError> {
    let mut cmd = tokio::process::Command::new(&tools.ffmpeg);
    cmd.args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"]);
    for input in inputs {
        cmd.args(["-protocol_whitelist", "file"])
            .args(["-format_whitelist", &formats(policy, input.demuxer)])
            .args(["-f", input.demuxer])
            .args(["-max_pixels", &policy.max_pixels().to_string()])
            .args([
                "-t",
                &format!("{:.3}", policy.max_duration_seconds.max(1.0)),
                "-i",
            ])
            .arg(crate::file_url(input.path));
    }
    cmd.args(args)
        .args(tail)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tools.limits.apply(&mut cmd);
    let child = cmd.spawn()?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| AnalysisError::TimedOut)??;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(AnalysisError::Failed(
            last.unwrap_or("no message").chars().take(200).collect(),
        ));
    }
    Ok(stderr)
}

/// The demuxer allowlist for one input: the policy's, plus the input's own demuxer when it is
/// one of the few reelay opens itself for side files (subtitle and image parts), which read no
/// other file.
fn formats(policy: &InputPolicy, demuxer: &str) -> String {
    let mut list = policy.allowed_formats.join(",");
    if SIDE_FILE_FORMATS.contains(&demuxer) && !policy.allowed_formats.iter().any(|f| f == demuxer)
    {
        list.push(',');
        list.push_str(demuxer);
    }
    list
}

/// Demuxers for side files a job carries (captions, watermark images): text subtitle formats
/// and single images. None of them follows a reference to another file or URL.
pub const SIDE_FILE_FORMATS: &[&str] = &["srt", "ass", "webvtt", "png_pipe", "jpeg_pipe"];
