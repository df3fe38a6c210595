//! Running nginx: checking a configuration, installing it, and keeping the master alive.
//!
//! The master runs in the foreground (`daemon off`) as our child, but in its own process group:
//! Ctrl-C on the terminal must not kill it behind the controller's back, and if the controller
//! itself dies, nginx keeps serving with its last configuration (placement then falls back to
//! the static weights). A restarted controller adopts the running master through the pid file
//! instead of starting a second one that could not bind the port.

use crate::process::{self, Signal};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    #[error("nginx -t rejected the configuration: {0}")]
    Rejected(String),
    #[error("cannot run {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("nginx is not running")]
    NotRunning,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NginxError {
    let context = context.into();
    move |source| NginxError::Io { context, source }
}

/// Where one edge keeps its nginx files, and which binary it runs.
#[derive(Debug, Clone)]
pub struct Nginx {
    pub bin: PathBuf,
    pub work_dir: PathBuf,
}

impl Nginx {
    pub fn new(bin: &Path, work_dir: &Path) -> Self {
        Nginx {
            bin: bin.to_path_buf(),
            work_dir: work_dir.to_path_buf(),
        }
    }

    pub fn conf_path(&self) -> PathBuf {
        self.work_dir.join("nginx.conf")
    }

    pub fn pid_path(&self) -> PathBuf {
        self.work_dir.join("nginx.pid")
    }

    /// Creates the log and temp directories the rendered file points at. When nginx runs as
    /// root its workers switch to an unprivileged user, which must be able to write the temp
    /// directories; they get /tmp's sticky world-writable mode rather than a chown to a user
    /// whose id we would have to look up.
    pub fn prepare_dirs(&self) -> Result<(), NginxError> {
        use std::os::unix::fs::PermissionsExt;
        let logs = self.work_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(io_err(format!("creating {}", logs.display())))?;
        for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            let dir = self.work_dir.join("tmp").join(sub);
            std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777))
                .map_err(io_err(format!("setting the mode of {}", dir.display())))?;
        }
        let tmp = self.work_dir.join("tmp");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("setting the mode of {}", tmp.display())))?;
        Ok(())
    }

    fn base_command(&self, conf: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        let mut prefix = self.work_dir.as_os_str().to_owned();
        prefix.push("/");
        cmd.arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            .args(["-e", "stderr"])
            .stdin(Stdio::null());
        cmd
    }

    /// `nginx -t` on a file; the error is nginx's own explanation.
    pub async fn test(&self, conf: &Path) -> Result<(), NginxError> {
        let out = self
            .base_command(conf)
            .arg("-t")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|source| NginxError::Spawn {
                bin: self.bin.display().to_string(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&out.stderr);
        let problems: Vec<&str> = text
            .lines()
            .filter(|l| {
                ["[emerg]", "[alert]", "[crit]", "[error]"]
                    .iter()
                    .any(|lvl| l.contains(lvl))
            })
            .map(|l| l.trim())
            .collect();
        let message = if problems.is_empty() {
            text.trim().to_string()
        } else {
            problems.join("; ")
        };
        Err(NginxError::Rejected(message))
    }

    /// Writes `text` next to the live file and tests it there, so that a rejected
    /// configuration never replaces the one nginx is serving.
    pub async fn stage(&self, text: &str) -> Result<PathBuf, NginxError> {
        let next = self.work_dir.join("nginx.conf.next");
        tokio::fs::write(&next, text)
            .await
            .map_err(io_err(format!("writing {}", next.display())))?;
        self.test(&next).await?;
        Ok(next)
    }

    /// Atomically replaces the live file with a staged one (rename within one directory).
    pub async fn install(&self, staged: &Path) -> Result<(), NginxError> {
        let conf = self.conf_path();
        tokio::fs::rename(staged, &conf)
            .await
            .map_err(io_err(format!("installing {}", conf.display())))
    }

    /// A master started from this work dir by an earlier controller, if one still runs.
    pub fn running_master(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.pid_path()).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        let cmd = process::cmdline(pid)?;
        let conf = self.conf_path();
        (process::alive(pid)
            && cmd.contains("nginx: master process")
            && cmd.contains(conf.to_str()?))
        .then_some(pid)
    }
}

/// nginx -t on text, in `work_dir` (which gets the directories the file needs).
pub async fn test_config_text(bin: &Path, work_dir: &Path, text: &str) -> Result<(), NginxError> {
    let n = Nginx::new(bin, work_dir);
    n.prepare_dirs()?;
    n.stage(text).await.map(|_| ())
}

/// What the status page shows about the nginx master.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MasterInfo {
    pub pid: Option<u32>,
    pub running: bool,
    /// Started by an earlier controller and taken over through the pid file.
    pub adopted: bool,
    pub restarts: u64,
    pub last_exit: Option<String>,
}

/// Keeps one nginx master running until told to stop.
pub struct Supervisor {
    nginx: Nginx,
    info: Mutex<MasterInfo>,
}

/// How long a graceful stop (SIGQUIT: finish in-flight requests) may take before SIGTERM.
const GRACEFUL_STOP: Duration = Duration::from_secs(10);

impl Supervisor {
    pub fn new(nginx: Nginx) -> Arc<Self> {
        Arc::new(Supervisor {
            nginx,
            info: Mutex::new(MasterInfo::default()),
        })
    }

    pub fn info(&self) -> MasterInfo {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MasterInfo> {
        // A panic while holding this lock cannot leave the plain data inconsistent.
        self.info.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SIGHUP to the master: nginx re-reads the installed file, starts new workers and lets the
    /// old ones finish their requests — which is why a reload drops nothing.
    pub fn reload(&self) -> Result<(), NginxError> {
        let pid = self.lock().pid.ok_or(NginxError::NotRunning)?;
        process::signal(pid, Signal::Hup).map_err(io_err(format!("signalling nginx {pid}")))
    }

    /// Runs until `stop` turns true; the master is then stopped gracefully and waited for.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            if *stop.borrow() {
                return;
            }
            let started = Instant::now();
            if let Some(pid) = self.nginx.running_master() {
                tracing::info!(
                    pid,
                    "adopting the nginx master left running by an earlier controller"
                );
                {
                    let mut info = self.lock();
                    info.pid = Some(pid);
                    info.running = true;
                    info.adopted = true;
                }
                // It may be serving an older file than the one just installed.
                if let Err(e) = process::signal(pid, Signal::Hup) {
                    tracing::warn!(pid, error = %e, "cannot signal the adopted nginx");
                }
                if self.watch_adopted(pid, &mut stop).await {
                    return;
                }
            } else {
                match self.spawn() {
                    Ok(child) => {
                        if self.watch_child(child, &mut stop).await {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start nginx");
                        self.lock().last_exit = Some(e.to_string());
                    }
                }
            }
            self.lock().restarts += 1;
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(250);
            }
            tracing::warn!(
                retry_in_ms = backoff.as_millis() as u64,
                "nginx is not running; restarting it"
            );
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    fn spawn(&self) -> Result<tokio::process::Child, NginxError> {
        let mut cmd = self.nginx.base_command(&self.nginx.conf_path());
        // nginx's own stderr (error_log stderr) lands in ours, next to the controller's logs.
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        process::isolate(&mut cmd, None);
        let child = cmd.spawn().map_err(|source| NginxError::Spawn {
            bin: self.nginx.bin.display().to_string(),
            source,
        })?;
        let pid = child.id();
        tracing::info!(pid, conf = %self.nginx.conf_path().display(), "nginx started");
        let mut info = self.lock();
        info.pid = pid;
        info.running = true;
        info.adopted = false;
        Ok(child)
    }

    /// Returns true when asked to stop (the master is then gone), false when nginx died.
    async fn watch_child(
        &self,
        mut child: tokio::process::Child,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let pid = child.id();
        tokio::select! {
            status = child.wait() => {
                let what = match status {
                    Ok(s) => format!("nginx exited: {s}"),
                    Err(e) => format!("waiting for nginx: {e}"),
                };
                tracing::error!(pid, "{what}");
                let mut info = self.lock();
                info.pid = None;
                info.running = false;
                info.last_exit = Some(what);
                false
            }
            _ = wait_for_stop(stop) => {
                if let Some(pid) = pid {
                    let _ = process::signal(pid, Signal::Quit);
                    let exited = tokio::time::timeout(GRACEFUL_STOP, child.wait()).await;
                    if exited.is_err() {
                        tracing::warn!(pid, "nginx did not finish within the grace period; terminating it");
                        let _ = process::signal(pid, Signal::Term);
                        if tokio::time::timeout(Duration::from_secs(3), child.wait()).await.is_err() {
                            let _ = child.kill().await;
                        }
                    }
                }
                let mut info = self.lock();
                info.pid = None;
                info.running = false;
                true
            }
        }
    }

    async fn watch_adopted(&self, pid: u32, stop: &mut watch::Receiver<bool>) -> bool {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    if !process::alive(pid) {
                        tracing::error!(pid, "the adopted nginx exited");
                        let mut info = self.lock();
                        info.pid = None;
                        info.running = false;
                        info.last_exit = Some("the adopted nginx exited".to_string());
                        return false;
                    }
                }
                _ = wait_for_stop(stop) => {
                    let _ = process::signal(pid, Signal::Quit);
                    let deadline = Instant::now() + GRACEFUL_STOP;
                    while process::alive(pid) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if process::alive(pid) {
                        let _ = process::signal(pid, Signal::Kill);
                    }
                    let mut info = self.lock();
                    info.pid = None;
                    info.running = false;
                    return true;
                }
            }
        }
    }
}

async fn wait_for_stop(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            // The sender is gone: nobody can ask us to stop any more, so this never completes.
            std::future::pending::<()>().await;
        }
    }
}

/// nginx's workers must not run as root; Debian names the unprivileged group `nogroup`, most
/// other systems `nobody`.
pub(crate) fn default_nginx_user() -> String {
    let has_nogroup = std::fs::read_to_string("/etc/group")
        .map(|g| g.lines().any(|l| l.starts_with("nogroup:")))
        .unwrap_or(false);
    if has_nogroup {
        "nobody nogroup".to_string()
    } else {
        "nobody nobody".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rejected_file_is_explained_and_never_installed() {
        if std::process::Command::new("nginx")
            .arg("-v")
            .output()
            .is_err()
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let n = Nginx::new(Path::new("nginx"), dir.path());
        n.prepare_dirs().unwrap();
        std::fs::write(n.conf_path(), "live").unwrap();
        let bad = format!(
            "daemon off;\npid {0}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{ client_max_body_size lots; }}\n",
            dir.path().display()
        );
        match n.stage(&bad).await {
            Err(NginxError::Rejected(msg)) => {
                assert!(msg.contains("client_max_body_size"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_to_string(n.conf_path()).unwrap(), "live");
        let missing = Nginx::new(Path::new("/nonexistent/nginx"), dir.path());
        assert!(matches!(
            missing.test(&n.conf_path()).await,
            Err(NginxError::Spawn { .. })
        ));
    }
}
