//! Where ffmpeg/ffprobe live and the resource limits every child runs under.
//!
//! FFmpeg parses untrusted bytes with a huge C attack surface; the limits make a decoder bomb or a
//! runaway process fail on its own instead of taking the node down with it.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    pub limits: Limits,
    /// Benchmarks only: read inputs at their native rate (`-re`), so a job lasts as long as its
    /// clip whatever the CPU does, and placement benchmarks measure placement, not CPU thrash.
    pub realtime_input: bool,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            ffmpeg: "ffmpeg".into(),
            ffprobe: "ffprobe".into(),
            limits: Limits::default(),
            realtime_input: false,
        }
    }
}

/// `setrlimit` values applied to every child; 0 leaves a limit unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Virtual address space of one ffmpeg, bytes.
    pub address_space_bytes: u64,
    /// Largest file one ffmpeg may write, bytes.
    pub file_size_bytes: u64,
    pub open_files: u64,
    /// CPU seconds of one ffmpeg (all threads).
    pub cpu_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            address_space_bytes: 8 << 30,
            file_size_bytes: 64 << 30,
            open_files: 256,
            cpu_seconds: 24 * 3600,
        }
    }
}

impl Limits {
    /// Installs the limits in the child between fork and exec.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        let limits = *self;
        // SAFETY: the closure runs in the forked child before exec and only calls setrlimit, which
        // is async-signal-safe; it allocates nothing and touches no locks.
        unsafe {
            cmd.pre_exec(move || {
                let set = |res, v: u64| {
                    if v > 0 {
                        let lim = libc::rlimit {
                            rlim_cur: v as libc::rlim_t,
                            rlim_max: v as libc::rlim_t,
                        };
                        if libc::setrlimit(res, &lim) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                };
                set(libc::RLIMIT_AS, limits.address_space_bytes)?;
                set(libc::RLIMIT_FSIZE, limits.file_size_bytes)?;
                set(libc::RLIMIT_NOFILE, limits.open_files)?;
                set(libc::RLIMIT_CPU, limits.cpu_seconds)?;
                Ok(())
            });
        }
    }
}
