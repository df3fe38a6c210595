//! Running one ffmpeg: progress from stdout, stderr drained concurrently (a full pipe would block
//! ffmpeg), a stall watchdog, a wall-clock limit, and cancellation that kills the process group.

use crate::progress::{Progress, ProgressParser};
use crate::sandbox::Tools;
use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunLimits {
    /// Killed if out_time does not advance for this long.
    pub stall_timeout: Duration,
    /// Killed if the whole run takes longer.
    pub time_limit: Duration,
    /// Killed once out_time passes this many seconds: the input holds more media than it was
    /// probed to hold (see `InputPolicy::out_time_limit`). `None` = no such bound.
    pub max_out_time: Option<f64>,
}

/// How one ffmpeg run failed. Each kind knows its stable error code and whether another attempt
/// could succeed, so the worker never has to guess.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("ffmpeg could not be started: {0}")]
    Spawn(std::io::Error),
    /// ffmpeg exited unsuccessfully, or was killed by the signal `signal`.
    #[error("ffmpeg failed ({status}): {stderr_tail}")]
    Failed {
        status: String,
        signal: Option<i32>,
        stderr_tail: String,
    },
    #[error("ffmpeg made no progress for {0:?}")]
    Stalled(Duration),
    #[error("ffmpeg exceeded the time limit of {0:?}")]
    TimedOut(Duration),
    /// The output ran past `limit` seconds, so the input is longer than probed.
    #[error(
        "the output reached {out_time:.1} s; the input was probed to yield at most {limit:.1} s"
    )]
    Overran { out_time: f64, limit: f64 },
    /// A decoder refused a frame above `-max_pixels`: the stream grew past the size limit after
    /// the frames the probe looked at.
    #[error("the input contains frames larger than the policy allows")]
    FrameTooLarge,
    #[error("cancelled")]
    Cancelled,
}

impl RunError {
    /// The stable code a failed job carries.
    pub fn code(&self) -> &'static str {
        match self {
            RunError::Spawn(_) => "ffmpeg_unavailable",
            RunError::Failed {
                signal: Some(libc::SIGXFSZ),
                ..
            } => "output_too_large",
            RunError::Failed {
                signal: Some(_), ..
            } => "transcode_crashed",
            RunError::Failed { signal: None, .. } => "transcode_failed",
            RunError::Stalled(_) => "stalled",
            RunError::TimedOut(_) => "job_timeout",
            RunError::Overran { .. } => "duration_mismatch",
            RunError::FrameTooLarge => "dimensions_too_large",
            RunError::Cancelled => "cancelled",
        }
    }

    /// Whether another attempt may succeed. A crash by some signal (OOM killer, a node going
    /// away) or a stall can be the machine's fault; SIGXFSZ is the output hitting the file size
    /// limit, which the same input hits every time, and everything about the input is permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            RunError::Spawn(_) | RunError::Stalled(_) => true,
            RunError::Failed {
                signal: Some(sig), ..
            } => *sig != libc::SIGXFSZ,
            RunError::Failed { signal: None, .. }
            | RunError::TimedOut(_)
            | RunError::Overran { .. }
            | RunError::FrameTooLarge
            | RunError::Cancelled => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunStats {
    pub last: Progress,
    /// The encoders' closing summaries (libx264's `frame`, `SSIM Mean`, `PSNR Mean` lines), for
    /// [`crate::quality::parse_x264_stats`]; empty unless the run asked for them
    /// ([`crate::quality::request_x264_stats`]).
    pub encoder_summaries: Vec<String>,
}

const TAIL_LINES: usize = 20;

/// What libavutil logs when a decoder meets a frame above `-max_pixels`.
const PIXEL_LIMIT_MESSAGE: &str = "exceeds specified max pixel count";

/// Summary lines kept at most (a ladder of 8 rungs prints about 5 each).
const MAX_SUMMARY_LINES: usize = 512;

/// What stderr said: its last lines, and whether a frame was refused for its size.
#[derive(Default)]
struct StderrSummary {
    tail: String,
    frame_too_large: bool,
    encoder_summaries: Vec<String>,
}

/// How a stderr line counts, given `-loglevel level+…` marks each line with its level: chatter
/// (info and below, warnings) is left out of the error tail, so a run that raised the level for
/// encoder summaries fails with the same message as one at `error`; unmarked lines are kept.
/// Returns the line to keep in the tail, markers removed.
fn tail_line(line: &str) -> Option<String> {
    const CHATTER: [&str; 5] = [
        "[info] ",
        "[verbose] ",
        "[debug] ",
        "[trace] ",
        "[warning] ",
    ];
    const SERIOUS: [&str; 3] = ["[error] ", "[fatal] ", "[panic] "];
    if CHATTER.iter().any(|m| line.contains(m)) {
        return None;
    }
    let mut l = line.to_string();
    for m in SERIOUS {
        if let Some(i) = l.find(m) {
            l.replace_range(i..i + m.len(), "");
        }
    }
    Some(l)
}

/// Whether a line is part of an x264 encoder's closing summary.
fn is_encoder_summary(line: &str) -> bool {
    line.contains("[libx264 @ ")
        && (line.contains("] frame ") || line.contains("SSIM Mean") || line.contains("PSNR Mean"))
}

/// Kills the child's whole process group, so helpers it may have spawned die with it.
fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a negative pid signals the process group we created for the child.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

pub async fn run_ffmpeg(
    tools: &Tools,
    args: &[String],
    cwd: &Path,
    limits: RunLimits,
    cancel: &CancellationToken,
    mut on_progress: impl FnMut(Progress),
) -> Result<RunStats, RunError> {
    let mut cmd = tokio::process::Command::new(&tools.ffmpeg);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    tools.limits.apply(&mut cmd);
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| RunError::Spawn(std::io::Error::other("no stdout")))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| RunError::Spawn(std::io::Error::other("no stderr")))?;

    let mut stderr_task = tokio::spawn(async move {
        let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
        let mut frame_too_large = false;
        let mut encoder_summaries = vec![];
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            frame_too_large |= line.contains(PIXEL_LIMIT_MESSAGE);
            if is_encoder_summary(&line) && encoder_summaries.len() < MAX_SUMMARY_LINES {
                encoder_summaries.push(line.chars().take(500).collect());
                continue;
            }
            let Some(line) = tail_line(&line) else {
                continue;
            };
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.chars().take(500).collect());
        }
        StderrSummary {
            tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
            frame_too_large,
            encoder_summaries,
        }
    });

    let mut lines = BufReader::new(stdout).lines();
    let mut parser = ProgressParser::default();
    let mut stats = RunStats::default();
    let deadline = tokio::time::Instant::now() + limits.time_limit;
    let mut last_advance = tokio::time::Instant::now();
    let mut stdout_open = true;
    let outcome: Result<(), RunError> = loop {
        let stall_at = last_advance + limits.stall_timeout;
        tokio::select! {
            _ = cancel.cancelled() => break Err(RunError::Cancelled),
            _ = tokio::time::sleep_until(deadline) => break Err(RunError::TimedOut(limits.time_limit)),
            _ = tokio::time::sleep_until(stall_at) => break Err(RunError::Stalled(limits.stall_timeout)),
            line = lines.next_line(), if stdout_open => match line {
                Ok(Some(line)) => {
                    if let Some(p) = parser.feed(&line) {
                        if p.out_time > stats.last.out_time || p.done {
                            last_advance = tokio::time::Instant::now();
                        }
                        stats.last = p;
                        if let Some(limit) = limits.max_out_time.filter(|l| p.out_time > *l) {
                            break Err(RunError::Overran { out_time: p.out_time, limit });
                        }
                        on_progress(p);
                    }
                }
                _ => stdout_open = false,
            },
            status = child.wait(), if !stdout_open => {
                let status = match status {
                    Ok(st) => st,
                    Err(e) => break Err(RunError::Spawn(e)),
                };
                // stderr closes when ffmpeg exits; the bound only guards against a helper
                // process that inherited it.
                let said = tokio::time::timeout(Duration::from_secs(5), &mut stderr_task)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                // Checked on success too: with few oversized frames ffmpeg drops them and exits
                // 0, and the output silently lacks part of the input.
                if said.frame_too_large {
                    return Err(RunError::FrameTooLarge);
                }
                if status.success() {
                    stats.encoder_summaries = said.encoder_summaries;
                    break Ok(());
                }
                use std::os::unix::process::ExitStatusExt;
                return Err(RunError::Failed {
                    status: status.to_string(),
                    signal: status.signal(),
                    stderr_tail: said.tail,
                });
            }
        }
    };
    if outcome.is_err() {
        kill_group(&child);
        let _ = child.wait().await;
    }
    stderr_task.abort();
    outcome.map(|_| stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_tail_keeps_errors_and_drops_chatter() {
        assert_eq!(
            tail_line("plain error text").as_deref(),
            Some("plain error text")
        );
        assert_eq!(
            tail_line("[mov @ 0x1] [error] moov atom not found").as_deref(),
            Some("[mov @ 0x1] moov atom not found")
        );
        assert_eq!(
            tail_line("[fatal] No such file").as_deref(),
            Some("No such file")
        );
        assert_eq!(tail_line("[info] Stream mapping:"), None);
        assert_eq!(
            tail_line(
                "[libx264 @ 0x1] [warning] --psnr used with psy on: results will be invalid!"
            ),
            None
        );
        assert!(is_encoder_summary(
            "[libx264 @ 0x1] [info] SSIM Mean Y:0.99 (20db)"
        ));
        assert!(is_encoder_summary(
            "[libx264 @ 0x1] [info] frame I:1 Avg QP:2"
        ));
        assert!(!is_encoder_summary("[libx264 @ 0x1] [info] profile High"));
        assert!(!is_encoder_summary("[aac @ 0x2] [info] Qavg: 1030"));
    }

    #[test]
    fn errors_know_their_code_and_whether_a_retry_can_help() {
        let failed = |signal| RunError::Failed {
            status: "x".into(),
            signal,
            stderr_tail: String::new(),
        };
        let cases = [
            (failed(Some(libc::SIGXFSZ)), "output_too_large", false),
            (failed(Some(libc::SIGKILL)), "transcode_crashed", true),
            (failed(Some(libc::SIGSEGV)), "transcode_crashed", true),
            (failed(None), "transcode_failed", false),
            (RunError::Stalled(Duration::ZERO), "stalled", true),
            (RunError::TimedOut(Duration::ZERO), "job_timeout", false),
            (
                RunError::Overran {
                    out_time: 20.0,
                    limit: 11.0,
                },
                "duration_mismatch",
                false,
            ),
            (RunError::FrameTooLarge, "dimensions_too_large", false),
            (
                RunError::Spawn(std::io::Error::other("x")),
                "ffmpeg_unavailable",
                true,
            ),
        ];
        for (e, code, transient) in cases {
            assert_eq!((e.code(), e.is_transient()), (code, transient), "{e:?}");
        }
    }
}
