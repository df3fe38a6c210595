//! Running ffmpeg to *measure* something (field order, loudness, quality) rather than to encode.
//!
//! A measurement reads the same untrusted bytes as an encode, so it gets the same fences: the
//! protocol allowlist, the demuxer allowlist with the demuxer forced to the probed one, the pixel
//! bound, the resource limits and a wall-clock timeout. What it reports is printed by ffmpeg's
//! filters on stderr. Every parser reads a summary ffmpeg prints at the end, so only the last
//! [`STDERR_TAIL_BYTES`] are kept: a crafted input can make ffmpeg warn once per packet
//! (millions of lines), which held whole would put gigabytes into the worker.

use crate::policy::InputPolicy;
use crate::sandbox::Tools;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How much of a measurement's stderr is kept: its end, where the summaries are (a loudnorm or
/// PSNR/SSIM summary is a few KiB; idet's is one line).
pub const STDERR_TAIL_BYTES: usize = 1 << 20;

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
    let (status, stderr) = tokio::time::timeout(timeout, wait_keeping_stderr_tail(child))
        .await
        .map_err(|_| AnalysisError::TimedOut)??;
    if !status.success() {
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(AnalysisError::Failed(
            last.unwrap_or("no message").chars().take(200).collect(),
        ));
    }
    Ok(stderr)
}

/// Waits for `child` (stderr piped) and returns its exit status and the last
/// [`STDERR_TAIL_BYTES`] of its stderr. Dropping the future kills the child when it was spawned
/// with `kill_on_drop`.
pub async fn wait_keeping_stderr_tail(
    mut child: tokio::process::Child,
) -> std::io::Result<(std::process::ExitStatus, String)> {
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| std::io::Error::other("stderr was not piped"))?;
    let (tail, status) = tokio::join!(read_tail(stderr, STDERR_TAIL_BYTES), child.wait());
    Ok((status?, tail?))
}

/// Reads `reader` to its end keeping only its last `keep` bytes, as text (a line cut at the
/// start of the window, or a character cut in half, is harmless to the summary parsers).
async fn read_tail<R: AsyncRead + Unpin>(mut reader: R, keep: usize) -> std::io::Result<String> {
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&chunk[..n]);
        // Trim only once twice the window is held, so the copy is amortised.
        if tail.len() > 2 * keep {
            tail.drain(..tail.len() - keep);
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    Ok(String::from_utf8_lossy(&tail).into_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_only_the_end_of_a_long_stream() {
        let mut text = "warning: non monotonic DTS\n".repeat(10_000);
        text.push_str("SUMMARY I: -23.0 LUFS\n");
        let tail = read_tail(text.as_bytes(), 1000).await.unwrap();
        assert_eq!(tail.len(), 1000);
        assert!(tail.ends_with("SUMMARY I: -23.0 LUFS\n"), "{tail}");
        // A short stream comes back whole.
        let short = read_tail(&b"one line\n"[..], 1000).await.unwrap();
        assert_eq!(short, "one line\n");
    }

    /// A child that floods stderr (5 MB of warnings, then its summary) is waited for with at
    /// most the window held, and the summary is still there.
    #[tokio::test]
    async fn a_flooding_child_is_read_to_its_end_keeping_the_tail() {
        let child = tokio::process::Command::new("sh")
            .args([
                "-c",
                "yes 'warning: frame out of order' | head -c 5000000 >&2; echo 'summary 42' >&2; exit 3",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (status, tail) = wait_keeping_stderr_tail(child).await.unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(tail.len() <= STDERR_TAIL_BYTES, "{}", tail.len());
        assert!(tail.len() > STDERR_TAIL_BYTES / 2, "{}", tail.len());
        assert!(tail.ends_with("summary 42\n"));
    }
}
