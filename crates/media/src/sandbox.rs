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

/// Written to every child's `/proc/self/oom_score_adj` (the most a process may give itself).
const OOM_SCORE_ADJ: &[u8] = b"1000";

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
    /// Run each child in a network namespace of its own (no interfaces but loopback). FFmpeg
    /// never needs the network here (reelay downloads URL inputs itself); where the kernel
    /// refuses (no CAP_SYS_ADMIN, as in an unprivileged pod) the child runs unchanged and the
    /// pod's NetworkPolicy is the fence.
    pub isolate_network: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            address_space_bytes: 8 << 30,
            file_size_bytes: 64 << 30,
            open_files: 256,
            cpu_seconds: 24 * 3600,
            isolate_network: true,
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
                // Die with reelay: a kill -9 of the server must not leave an orphaned encoder
                // running (the job is re-run elsewhere once its lease expires).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // First in line for the OOM killer: when the pod (or the machine) runs out of
                // memory, the kernel kills an encoder, whose task is retried, rather than the
                // worker holding every slot's lease. Raising one's own score needs no
                // privilege; best effort, as a /proc without the file changes nothing else.
                let fd = libc::open(
                    c"/proc/self/oom_score_adj".as_ptr(),
                    libc::O_WRONLY | libc::O_CLOEXEC,
                );
                if fd >= 0 {
                    let _ = libc::write(fd, OOM_SCORE_ADJ.as_ptr().cast(), OOM_SCORE_ADJ.len());
                    libc::close(fd);
                }
                if limits.isolate_network {
                    // Best effort by design: EPERM leaves the child in the parent's namespace.
                    let _ = libc::unshare(libc::CLONE_NEWNET);
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interfaces visible to a child started under `limits`.
    async fn interfaces(limits: Limits) -> Vec<String> {
        let mut cmd = tokio::process::Command::new("cat");
        cmd.arg("/proc/self/net/dev");
        limits.apply(&mut cmd);
        let out = cmd.output().await.unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
            .collect()
    }

    #[tokio::test]
    async fn children_get_no_network_where_the_kernel_allows() {
        let isolated = interfaces(Limits::default()).await;
        let shared = interfaces(Limits {
            isolate_network: false,
            ..Limits::default()
        })
        .await;
        assert!(!shared.is_empty());
        if may_unshare_network() {
            assert_eq!(
                isolated,
                vec!["lo".to_string()],
                "this process may unshare: only loopback"
            );
        } else {
            eprintln!(
                "the kernel refuses a network namespace here (not root, or root without \
                 CAP_SYS_ADMIN as in a container): best effort, children saw {isolated:?}"
            );
        }
    }

    #[tokio::test]
    async fn children_are_the_oom_killers_first_choice() {
        let mut cmd = tokio::process::Command::new("cat");
        cmd.arg("/proc/self/oom_score_adj");
        Limits::default().apply(&mut cmd);
        let out = cmd.output().await.unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1000");
    }

    /// Whether a child of this process gets its own network namespace: asked of the kernel, since
    /// root in a container (no CAP_SYS_ADMIN, seccomp) is refused as a user is.
    fn may_unshare_network() -> bool {
        use std::os::unix::process::CommandExt;
        let mut probe = std::process::Command::new("true");
        // SAFETY: runs in the forked child before exec; unshare and errno only.
        unsafe {
            probe.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        probe.status().is_ok_and(|s| s.success())
    }
}
