//! Signals and process groups for the children the edge (and `reelay up`) supervise.
//!
//! Children are started in their own process groups so that a Ctrl-C on the terminal reaches
//! only the supervisor, which then stops them in order (edge before clusters, gracefully before
//! forcefully) instead of everything dying at once mid-request.

use std::io;

/// The signals the supervisors send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Hup,
    Int,
    Quit,
    Term,
    Kill,
    Stop,
    Cont,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Hup => libc::SIGHUP,
            Signal::Int => libc::SIGINT,
            Signal::Quit => libc::SIGQUIT,
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
        }
    }
}

fn to_pid(pid: u32) -> io::Result<libc::pid_t> {
    libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad pid {pid}")))
}

/// Sends `sig` to one process.
pub fn signal(pid: u32, sig: Signal) -> io::Result<()> {
    let pid = to_pid(pid)?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig.raw()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `sig` to every process of the group led by `pgid`.
pub fn signal_group(pgid: u32, sig: Signal) -> io::Result<()> {
    let pid = to_pid(pgid)?;
    // SAFETY: as above; a negative pid addresses the process group.
    if unsafe { libc::kill(-pid, sig.raw()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `pid` is a live process. A zombie (dead, not yet reaped by its parent — common for
/// an nginx whose controller was killed and whose new parent does not reap) counts as dead.
pub fn alive(pid: u32) -> bool {
    let Ok(raw) = to_pid(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    let exists = unsafe { libc::kill(raw, 0) } == 0
        || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

/// The command line of `pid` (NUL separators turned into spaces), if readable.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim()
            .to_string(),
    )
}

/// Direct children of `pid` (a scan of /proc: works without CONFIG_PROC_CHILDREN).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Puts the child in a new process group and, if `parent_death` is set, has the kernel send it
/// that signal when the spawning thread's process dies — so a `reelay up` killed with SIGKILL
/// still takes its clusters with it.
pub fn isolate(cmd: &mut tokio::process::Command, parent_death: Option<Signal>) {
    cmd.process_group(0);
    if let Some(sig) = parent_death {
        let raw = sig.raw();
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, raw as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn liveness_follows_the_process_and_ignores_zombies() {
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("30");
        isolate(&mut cmd, Some(Signal::Term));
        let mut child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        assert!(alive(pid));
        assert!(cmdline(pid).unwrap().starts_with("sleep 30"));
        assert!(children(std::process::id()).contains(&pid));
        signal_group(pid, Signal::Kill).unwrap();
        // Not reaped yet: a zombie, which counts as dead.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!alive(pid));
        child.wait().await.unwrap();
        assert!(!alive(pid));
        assert!(signal(0, Signal::Term).is_err());
    }
}
