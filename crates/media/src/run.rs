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
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("ffmpeg could not be started: {0}")]
    Spawn(std::io::Error),
    #[error("ffmpeg failed ({status}): {stderr_tail}")]
    Failed {
        status: String,
        killed_by_signal: bool,
        stderr_tail: String,
    },
    #[error("ffmpeg made no progress for {0:?}")]
    Stalled(Duration),
    #[error("ffmpeg exceeded the time limit of {0:?}")]
    TimedOut(Duration),
    #[error("cancelled")]
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunStats {
    pub last: Progress,
}

const TAIL_LINES: usize = 20;

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

    let stderr_task = tokio::spawn(async move {
        let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.chars().take(500).collect());
        }
        tail.into_iter().collect::<Vec<_>>().join("\n")
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
                        on_progress(p);
                    }
                }
                _ => stdout_open = false,
            },
            status = child.wait(), if !stdout_open => {
                break match status {
                    Ok(st) if st.success() => Ok(()),
                    Ok(st) => {
                        use std::os::unix::process::ExitStatusExt;
                        let tail = stderr_task.await.unwrap_or_default();
                        return Err(RunError::Failed {
                            status: st.to_string(),
                            killed_by_signal: st.signal().is_some(),
                            stderr_tail: tail,
                        });
                    }
                    Err(e) => Err(RunError::Spawn(e)),
                };
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
