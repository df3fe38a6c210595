//! `reelay up`: the whole multi-cloud system on one machine, as real processes.
//!
//! Each cluster is a `reelay serve` child and the edge a `reelay edge` child (same binary), so
//! what runs locally is what runs in production, minus the clouds. Every child gets its own
//! process group (Ctrl-C reaches only `reelay up`, which then stops them in order: the edge
//! first so that no new work arrives, then the clusters with a short drain) and is told by the
//! kernel to terminate if `reelay up` itself dies, so that nothing is left behind.
//!
//! Protected by default: on first start it generates an issuer key and a trusted keys file under
//! `<state_dir>/identity/`, gives both to the clusters and the trusted keys to the edge
//! (`[auth]`), and writes an admin token to `<state_dir>/admin.token` (mode 0600), kept across
//! restarts while it stays valid.

use crate::config::EdgeConfig;
use crate::nginx::Nginx;
use crate::process::{self, Signal};
use crate::render::connectable;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Cluster data dirs and the generated edge.toml go here (relative to the topology file).
    pub state_dir: PathBuf,
    /// A path to an edge.toml (relative to the topology file) or the edge config inline.
    pub edge: EdgeRef,
    /// How long clusters may drain running jobs when `reelay up` stops.
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: u64,
    /// Run without tokens (clusters `--allow-anonymous`, no edge `[auth]`). Off by default:
    /// `reelay up` is protected and writes the first admin token to `<state_dir>/admin.token`.
    #[serde(default)]
    pub anonymous: bool,
    /// Work stealing (issue 16): each cluster's idle workers take ready tasks of the other
    /// clusters through the edge (`[steal]` peers at `<edge>/clusters/{other}`, each cluster with
    /// a `peer` token minted here into `<state_dir>/identity/peer-{name}.token`). Needs tokens
    /// (the remote claim is never anonymous) and leaves `--config` to `reelay up`. Off by
    /// default.
    #[serde(default)]
    pub steal: bool,
    pub clusters: Vec<UpCluster>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EdgeRef {
    Path(PathBuf),
    Inline(Box<EdgeConfig>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpCluster {
    pub name: String,
    pub listen: SocketAddr,
    pub workers: u32,
    /// Extra `reelay serve` flags.
    #[serde(default)]
    pub args: Vec<String>,
}

fn default_grace() -> u64 {
    5
}

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Edge(#[from] crate::config::ConfigError),
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    /// The shared issuer key, trusted keys or first admin token could not be made.
    #[error("{0}")]
    Identity(#[from] reelay_identity::KeyError),
    #[error("{0}")]
    AdminToken(#[from] reelay_identity::token::IssueError),
    #[error("writing the edge config: {0}")]
    EdgeConfig(#[from] toml::ser::Error),
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("{what} exited while starting: {status}")]
    ExitedWhileStarting {
        what: String,
        status: std::process::ExitStatus,
    },
    #[error("{what} was not ready within {seconds}s ({url})")]
    NotReady {
        what: String,
        seconds: u64,
        url: String,
    },
    /// The edge died while everything ran: without it nothing is reachable, so `up` stops.
    #[error("the edge exited: {0}")]
    EdgeExited(std::process::ExitStatus),
    /// Found before anything starts, so `reelay up` never announces a system it cannot run.
    #[error("port {port} is taken ({addr}, wanted by {wanted_by}): {holder}; stop it or change the port in the topology/edge config")]
    PortTaken {
        addr: SocketAddr,
        port: u16,
        wanted_by: String,
        holder: String,
    },
}

impl UpError {
    /// A stable name for scripts and tests, whatever the message says.
    pub fn code(&self) -> &'static str {
        match self {
            UpError::Read { .. } => "read",
            UpError::Invalid { .. } => "invalid_topology",
            UpError::Edge(_) => "invalid_edge_config",
            UpError::Spawn { .. } => "spawn",
            UpError::Identity(_) | UpError::AdminToken(_) => "identity",
            UpError::EdgeConfig(_) => "invalid_edge_config",
            UpError::HttpClient(_) => "http_client",
            UpError::ExitedWhileStarting { .. } => "exited",
            UpError::NotReady { .. } => "not_ready",
            UpError::EdgeExited(_) => "edge_exited",
            UpError::PortTaken { .. } => "port_taken",
        }
    }

    /// Whether running `reelay up` again unchanged can succeed: a port whose holder exits, a
    /// machine too busy to start everything in time. Bad files and settings need a change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpError::PortTaken { .. } | UpError::NotReady { .. } | UpError::EdgeExited(_)
        )
    }
}

/// Every address `reelay up` will listen on, with who wants it: the clusters, the edge's data
/// plane, its control API and its HTTP redirect.
pub fn wanted_ports(plan: &Plan) -> Vec<(SocketAddr, String)> {
    let mut out: Vec<(SocketAddr, String)> = plan
        .topology
        .clusters
        .iter()
        .map(|c| (c.listen, format!("cluster {}", c.name)))
        .collect();
    out.push((plan.edge.listen, "the edge (listen)".into()));
    out.push((plan.edge.control_listen, "the edge (control_listen)".into()));
    if let Some(r) = plan.edge.http_redirect_listen {
        out.push((r, "the edge (http_redirect_listen)".into()));
    }
    out
}

/// Binds each address for a moment. A cluster's readiness probe would otherwise be answered
/// by whatever already holds its port (an old `reelay up`, say), and `reelay up` would print
/// "reelay is up" before its own children fail to bind.
pub fn check_ports(wanted: &[(SocketAddr, String)]) -> Result<(), UpError> {
    for (addr, who) in wanted {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            let holder = if e.kind() == std::io::ErrorKind::AddrInUse {
                port_holder(addr.port())
                    .map(|h| format!("held by {h}"))
                    .unwrap_or_else(|| {
                        "held by a process this user cannot see (try: ss -ltnp)".into()
                    })
            } else {
                format!("cannot bind: {e}")
            };
            return Err(UpError::PortTaken {
                addr: *addr,
                port: addr.port(),
                wanted_by: who.clone(),
                holder,
            });
        }
    }
    Ok(())
}

/// Who listens on a TCP port, from /proc (Linux): the socket's inode in /proc/net/tcp{,6},
/// then the process whose file descriptors include it. `None` when it is not ours to see.
fn port_holder(port: u16) -> Option<String> {
    let hex = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode is the tenth column.
            if f.len() > 9 && f[1].ends_with(&hex) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for proc_dir in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_dir
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                let cmd = std::fs::read(proc_dir.path().join("cmdline"))
                    .map(|b| {
                        String::from_utf8_lossy(&b)
                            .split('\0')
                            .filter(|a| !a.is_empty())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let cmd: String = cmd.chars().take(120).collect();
                return Some(format!("pid {pid} ({cmd})"));
            }
        }
    }
    None
}

/// A topology with its paths made absolute and its edge configuration loaded.
#[derive(Debug, Clone)]
pub struct Plan {
    pub topology: Topology,
    pub state_dir: PathBuf,
    pub edge: EdgeConfig,
    /// The edge.toml the edge child reads (the given file, or the inline table written out).
    pub edge_path: PathBuf,
    edge_inline: bool,
}

/// The identity files `reelay up` keeps under `<state_dir>/identity`, and the admin token.
#[derive(Debug, Clone)]
pub struct UpIdentity {
    pub issuer_key: PathBuf,
    pub trusted_keys: PathBuf,
    pub admin_token: PathBuf,
}

impl UpIdentity {
    /// Where cluster `name`'s `peer` token lives (with `steal = true`).
    pub fn peer_token(&self, name: &str) -> PathBuf {
        self.trusted_keys
            .with_file_name(format!("peer-{name}.token"))
    }

    /// Mints cluster `name`'s `peer` token (owner `name`, no expiry) unless the one on disk
    /// still verifies; the remote claim records the token's owner as the task's `ran_on`.
    pub fn ensure_peer_token(&self, name: &str) -> Result<PathBuf, UpError> {
        use reelay_identity::keys::{load_signing_key, load_trusted_keys};
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.peer_token(name);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let trusted = load_trusted_keys(&self.trusted_keys)?;
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        let valid =
            reelay_identity::token::verify(current.trim(), &trusted, &Default::default(), now)
                .is_ok_and(|c| c.has(reelay_identity::Scope::Peer) && c.sub == name);
        if valid {
            return Ok(path);
        }
        let issuer = load_signing_key(&self.issuer_key)?;
        let new = reelay_identity::token::NewClaims {
            owner: Some(name.to_string()),
            scopes: vec![reelay_identity::Scope::Peer],
            name: format!("reelay up: cluster {name} takes tasks of the others"),
            ttl_seconds: None,
        };
        let (token, _) = reelay_identity::token::issue(&issuer, &new, now)?;
        let io = |source| UpError::Read {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(path)
    }

    pub fn under(state_dir: &Path) -> UpIdentity {
        UpIdentity {
            issuer_key: state_dir.join("identity/issuer.key"),
            trusted_keys: state_dir.join("identity/trusted.keys"),
            admin_token: state_dir.join("admin.token"),
        }
    }

    /// Creates the keys once, and an admin token unless the one on disk still verifies.
    pub fn ensure(&self) -> Result<(), UpError> {
        use reelay_identity::keys::{load_signing_key, load_trusted_keys};
        use std::os::unix::fs::OpenOptionsExt;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| UpError::Read { path, source }
        };
        let dir = self.issuer_key.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let write = |path: &Path, text: &str, mode: u32| -> Result<(), UpError> {
            let tmp = path.with_extension("tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
                .map_err(io(&tmp))?;
            std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io(&tmp))?;
            std::fs::rename(&tmp, path).map_err(io(path))
        };
        if !self.issuer_key.exists() {
            let (key, file) = reelay_identity::SigningKey::generate("up1")?;
            write(&self.issuer_key, &file, 0o600)?;
            write(
                &self.trusted_keys,
                &format!(
                    "# Keys `reelay up` trusts (clusters and edge); add a key here to rotate.\n{}\n",
                    key.trusted_line()
                ),
                0o644,
            )?;
        }
        let issuer = load_signing_key(&self.issuer_key)?;
        let trusted = load_trusted_keys(&self.trusted_keys)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let current = std::fs::read_to_string(&self.admin_token).unwrap_or_default();
        let valid =
            reelay_identity::token::verify(current.trim(), &trusted, &Default::default(), now)
                .is_ok_and(|c| c.has(reelay_identity::Scope::Admin));
        if !valid {
            let new = reelay_identity::token::NewClaims {
                owner: Some("admin".into()),
                scopes: vec![reelay_identity::Scope::Admin],
                name: "reelay up".into(),
                ttl_seconds: None,
            };
            let (token, _) = reelay_identity::token::issue(&issuer, &new, now)?;
            write(&self.admin_token, &format!("{token}\n"), 0o600)?;
        }
        Ok(())
    }
}

impl Plan {
    pub fn load(path: &Path) -> Result<Plan, UpError> {
        let text = std::fs::read_to_string(path).map_err(|source| UpError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Plan, UpError> {
        let invalid = |message: String| UpError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let topology: Topology =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        // Absolute: `reelay serve` runs ffmpeg from per-job directories, so a relative data
        // dir would point somewhere else for it.
        let state_dir = crate::config::absolute(base, &topology.state_dir);
        let (edge, edge_path, edge_inline) = match &topology.edge {
            EdgeRef::Path(p) => {
                let p = crate::config::absolute(base, p);
                (EdgeConfig::load(&p)?, p, false)
            }
            EdgeRef::Inline(cfg) => {
                let mut cfg = (**cfg).clone();
                cfg.validate()?;
                cfg.resolve_relative_paths(base);
                (cfg, state_dir.join("edge.toml"), true)
            }
        };
        if topology.clusters.is_empty() {
            return Err(invalid(
                "at least one [[clusters]] entry is required".into(),
            ));
        }
        for c in &topology.clusters {
            if !reelay_protocol::valid_cluster_name(&c.name) {
                return Err(invalid(format!(
                    "cluster name {:?} must match [a-z0-9-]{{1,32}}",
                    c.name
                )));
            }
            if c.workers == 0 {
                return Err(invalid(format!(
                    "cluster {}: workers must be at least 1",
                    c.name
                )));
            }
            let Some(ec) = edge.cluster(&c.name) else {
                return Err(invalid(format!(
                    "cluster {} is not in the edge configuration, so the edge would never route to it",
                    c.name
                )));
            };
            if let Ok(t) = ec.target() {
                if t.port != c.listen.port() {
                    return Err(invalid(format!(
                        "cluster {} listens on port {} but the edge expects it on {}",
                        c.name,
                        c.listen.port(),
                        t.port
                    )));
                }
            }
        }
        if topology.steal {
            if topology.anonymous {
                return Err(invalid(
                    "steal needs tokens (the remote claim is never anonymous): drop anonymous = true"
                        .into(),
                ));
            }
            if let Some(c) = topology.clusters.iter().find(|c| {
                c.args
                    .iter()
                    .any(|a| a == "--config" || a.starts_with("--config="))
            }) {
                return Err(invalid(format!(
                    "cluster {}: with steal = true, reelay up writes the cluster's --config itself",
                    c.name
                )));
            }
        }
        Ok(Plan {
            topology,
            state_dir,
            edge,
            edge_path,
            edge_inline,
        })
    }
}

struct Running {
    what: String,
    child: Child,
    exited: bool,
}

impl Running {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM to the group, then SIGKILL after `grace`; always reaps.
    async fn stop(&mut self, grace: Duration) {
        if self.exited {
            return;
        }
        if let Some(pid) = self.pid() {
            let _ = process::signal_group(pid, Signal::Term);
            if tokio::time::timeout(grace, self.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(what = %self.what, "did not stop in time; killing it");
                let _ = process::signal_group(pid, Signal::Kill);
            }
        }
        let _ = self.child.wait().await;
        self.exited = true;
    }
}

fn spawn(exe: &Path, what: &str, args: &[String]) -> Result<Running, UpError> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(false);
    process::isolate(&mut cmd, Some(Signal::Term));
    let child = cmd.spawn().map_err(|source| UpError::Spawn {
        what: what.to_string(),
        source,
    })?;
    Ok(Running {
        what: what.to_string(),
        child,
        exited: false,
    })
}

/// Polls `url` until it answers 200 and `ok` accepts the body, failing early if `child` exits.
async fn wait_ready(
    http: &reqwest::Client,
    child: &mut Running,
    url: &str,
    timeout: Duration,
    ok: impl Fn(&str) -> bool,
) -> Result<(), UpError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.child.try_wait() {
            child.exited = true;
            return Err(UpError::ExitedWhileStarting {
                what: child.what.clone(),
                status,
            });
        }
        if let Ok(r) = http.get(url).timeout(Duration::from_secs(2)).send().await {
            if r.status().is_success() && r.text().await.is_ok_and(|b| ok(&b)) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(UpError::NotReady {
                what: child.what.clone(),
                seconds: timeout.as_secs(),
                url: url.to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts everything, prints where it is, and runs until `shutdown` resolves or the edge dies.
pub async fn run(
    plan: Plan,
    exe: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), UpError> {
    check_ports(&wanted_ports(&plan))?;
    std::fs::create_dir_all(&plan.state_dir).map_err(|source| UpError::Read {
        path: plan.state_dir.clone(),
        source,
    })?;
    let mut plan = plan;
    let identity = UpIdentity::under(&plan.state_dir);
    if !plan.topology.anonymous {
        identity.ensure()?;
        if plan.edge.auth.is_none() {
            plan.edge.auth = Some(crate::config::AuthConfig {
                trusted_keys: identity.trusted_keys.clone(),
                legacy_tokens: true,
                revocation_sync_ms: 1000,
            });
            // The edge reads the effective configuration, written beside the state.
            plan.edge_path = plan.state_dir.join("edge.toml");
            plan.edge_inline = true;
        }
    }
    if plan.edge_inline {
        let text = toml::to_string(&plan.edge)?;
        std::fs::write(&plan.edge_path, text).map_err(|source| UpError::Read {
            path: plan.edge_path.clone(),
            source,
        })?;
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(UpError::HttpClient)?;
    let grace = Duration::from_secs(plan.topology.shutdown_grace_seconds);
    let mut clusters: Vec<Running> = Vec::new();
    let mut edge: Option<Running> = None;

    let started = start_all(&plan, exe, &http, &mut clusters, &mut edge).await;
    let outcome = match started {
        Ok(()) => {
            print_urls(&plan, (!plan.topology.anonymous).then_some(&identity));
            watch(shutdown, &mut clusters, &mut edge).await
        }
        Err(e) => Err(e),
    };

    tracing::info!("stopping: the edge first, then the clusters");
    if let Some(e) = edge.as_mut() {
        e.stop(Duration::from_secs(15)).await;
    }
    // An edge killed hard leaves its nginx running on purpose (see nginx.rs); not here.
    let nginx = Nginx::new(&plan.edge.nginx, &plan.edge.work_dir);
    if let Some(pid) = nginx.running_master() {
        tracing::warn!(pid, "stopping the nginx the edge left behind");
        let _ = process::signal(pid, Signal::Term);
        let deadline = Instant::now() + Duration::from_secs(5);
        while process::alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if process::alive(pid) {
            let _ = process::signal(pid, Signal::Kill);
        }
    }
    futures::future::join_all(
        clusters
            .iter_mut()
            .map(|c| c.stop(grace + Duration::from_secs(10))),
    )
    .await;
    tracing::info!("everything stopped");
    outcome
}

async fn start_all(
    plan: &Plan,
    exe: &Path,
    http: &reqwest::Client,
    clusters: &mut Vec<Running>,
    edge: &mut Option<Running>,
) -> Result<(), UpError> {
    for c in &plan.topology.clusters {
        let data = plan.state_dir.join(&c.name);
        let mut args = vec![
            "serve".to_string(),
            "--listen".to_string(),
            c.listen.to_string(),
            "--data-dir".to_string(),
            data.display().to_string(),
            "--cluster".to_string(),
            c.name.clone(),
            "--workers".to_string(),
            c.workers.to_string(),
            "--shutdown-grace-seconds".to_string(),
            plan.topology.shutdown_grace_seconds.to_string(),
            // One webhook key for every cluster (the first to start makes it): an owner's
            // secret must not depend on which cluster the edge asks or which one signs.
            "--webhook-notify-key-file".to_string(),
            plan.state_dir
                .join("webhook-notify.key")
                .display()
                .to_string(),
        ];
        if plan.topology.anonymous {
            args.push("--allow-anonymous".to_string());
        } else {
            let id = UpIdentity::under(&plan.state_dir);
            args.extend([
                "--issuer-key".to_string(),
                id.issuer_key.display().to_string(),
                "--trusted-keys".to_string(),
                id.trusted_keys.display().to_string(),
            ]);
        }
        if plan.topology.steal {
            let config = write_steal_config(plan, &c.name)?;
            args.extend(["--config".to_string(), config.display().to_string()]);
        }
        args.extend(c.args.iter().cloned());
        clusters.push(spawn(exe, &format!("cluster {}", c.name), &args)?);
    }
    for (c, running) in plan.topology.clusters.iter().zip(clusters.iter_mut()) {
        let url = format!("http://{}/readyz", connectable(c.listen));
        wait_ready(http, running, &url, Duration::from_secs(60), |_| true).await?;
        tracing::info!(cluster = %c.name, "cluster ready");
    }
    let args = vec![
        "edge".to_string(),
        "--config".to_string(),
        plan.edge_path.display().to_string(),
    ];
    let running = edge.insert(spawn(exe, "the edge", &args)?);
    let url = format!("http://{}/edge/status", connectable(plan.edge.listen));
    wait_ready(http, running, &url, Duration::from_secs(30), |body| {
        serde_json::from_str::<crate::EdgeStatus>(body).is_ok_and(|s| {
            s.clusters
                .iter()
                .all(|c| c.health == crate::health::Health::Up)
        })
    })
    .await?;
    Ok(())
}

/// The `[steal]` section of cluster `name` with `steal = true`: every other cluster as a peer,
/// reached through the edge's `/clusters/{other}` path with `name`'s peer token.
pub fn steal_config(plan: &Plan, name: &str, token_file: &Path) -> String {
    let scheme = if plan.edge.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let edge = connectable(plan.edge.listen);
    let mut out = String::from(
        "# Written by `reelay up` (topology steal = true): this cluster's idle workers take ready\n\
         # tasks of the other clusters through the edge.\n[steal]\n",
    );
    // With the edge's `[stealing]` on, the edge decides which task pays for its move;
    // without it, idle slots ask the peers in turn.
    if plan.edge.stealing.enabled {
        out.push_str(&format!("edge = \"{scheme}://{edge}\"\n"));
    }
    for other in plan.topology.clusters.iter().filter(|o| o.name != name) {
        out.push_str(&format!(
            "\n[[steal.peers]]\nname = {:?}\nurl = \"{scheme}://{edge}/clusters/{}\"\ntoken_file = {:?}\n",
            other.name,
            other.name,
            token_file.display().to_string()
        ));
    }
    out
}

fn write_steal_config(plan: &Plan, name: &str) -> Result<PathBuf, UpError> {
    let token = UpIdentity::under(&plan.state_dir).ensure_peer_token(name)?;
    let path = plan.state_dir.join(format!("{name}.steal.toml"));
    std::fs::write(&path, steal_config(plan, name, &token)).map_err(|source| UpError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn print_urls(plan: &Plan, identity: Option<&UpIdentity>) {
    let edge = format!("http://{}", connectable(plan.edge.listen));
    let mut out = String::new();
    out.push_str("reelay is up\n");
    out.push_str(&format!("  API (through the edge)  {edge}\n"));
    out.push_str(&format!("  edge status             {edge}/edge/status\n"));
    out.push_str(&format!("  edge metrics            {edge}/edge/metrics\n"));
    for c in &plan.topology.clusters {
        out.push_str(&format!(
            "  cluster {:<16} http://{} ({} worker{}, data in {})\n",
            c.name,
            connectable(c.listen),
            c.workers,
            if c.workers == 1 { "" } else { "s" },
            plan.state_dir.join(&c.name).display()
        ));
    }
    match identity {
        Some(id) => {
            out.push_str(&format!(
                "  admin token             {} (protected mode: every request needs a token)\n",
                id.admin_token.display()
            ));
            out.push_str(&format!(
                "Try: export REELAY_TOKEN=$(cat {})\n     reelay --server {edge} submit clip.mov --preset mp4-720p --wait\n     reelay --server {edge} token create --scope submit --scope read --owner me\nCtrl-C stops everything.\n",
                id.admin_token.display()
            ));
        }
        None => out.push_str(&format!(
            "  ANONYMOUS: no tokens (topology anonymous = true)\nTry: reelay --server {edge} submit clip.mov --preset mp4-720p --wait\nCtrl-C stops everything.\n"
        )),
    }
    print!("{out}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

async fn watch(
    shutdown: impl std::future::Future<Output = ()>,
    clusters: &mut [Running],
    edge: &mut Option<Running>,
) -> Result<(), UpError> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        for c in clusters.iter_mut().filter(|c| !c.exited) {
            if let Ok(Some(status)) = c.child.try_wait() {
                c.exited = true;
                // The edge fails over; the rest keeps running (and this may be a failover drill).
                tracing::error!(what = %c.what, %status, "exited; the edge routes around it");
            }
        }
        if let Some(e) = edge.as_mut() {
            if let Ok(Some(status)) = e.child.try_wait() {
                e.exited = true;
                return Err(UpError::EdgeExited(status));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDGE: &str = r#"
listen = "127.0.0.1:8080"
control_listen = "127.0.0.1:9180"
work_dir = "state/edge"
[[clusters]]
name = "aws"
url = "http://127.0.0.1:8081"
weight = 3
[[clusters]]
name = "gcp"
url = "http://127.0.0.1:8082"
"#;

    #[test]
    fn topologies_with_a_file_or_an_inline_edge() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("edge.toml"), EDGE).unwrap();
        let topo = "state_dir = \"state\"\nedge = \"edge.toml\"\n[[clusters]]\nname = \"aws\"\nlisten = \"127.0.0.1:8081\"\nworkers = 3\n[[clusters]]\nname = \"gcp\"\nlisten = \"127.0.0.1:8082\"\nworkers = 1\n";
        let path = dir.path().join("topology.toml");
        std::fs::write(&path, topo).unwrap();
        let plan = Plan::load(&path).unwrap();
        assert_eq!(plan.state_dir, dir.path().join("state"));
        assert_eq!(plan.edge.work_dir, dir.path().join("state/edge"));
        assert_eq!(plan.topology.shutdown_grace_seconds, 5);

        let inline = format!(
            "state_dir = \"state\"\n[[clusters]]\nname = \"aws\"\nlisten = \"127.0.0.1:8081\"\nworkers = 3\n[edge]\n{}",
            EDGE.replace("[[clusters]]", "[[edge.clusters]]")
        );
        let plan = Plan::parse(&inline, &path).unwrap();
        assert!(plan.edge_inline);
        assert_eq!(plan.edge_path, dir.path().join("state/edge.toml"));
    }

    #[test]
    fn steal_lists_the_other_clusters_through_the_edge() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("edge.toml"), EDGE).unwrap();
        let path = dir.path().join("topology.toml");
        let topo = "state_dir = \"state\"\nedge = \"edge.toml\"\nsteal = true\n[[clusters]]\nname = \"aws\"\nlisten = \"127.0.0.1:8081\"\nworkers = 3\n[[clusters]]\nname = \"gcp\"\nlisten = \"127.0.0.1:8082\"\nworkers = 1\n";
        let plan = Plan::parse(topo, &path).unwrap();
        assert!(plan.topology.steal);
        let text = steal_config(&plan, "gcp", Path::new("/s/identity/peer-gcp.token"));
        #[derive(Deserialize)]
        struct Cluster {
            steal: Steal,
        }
        #[derive(Deserialize)]
        struct Steal {
            peers: Vec<Peer>,
            edge: Option<String>,
        }
        #[derive(Deserialize)]
        struct Peer {
            name: String,
            url: String,
            token_file: String,
        }
        let c: Cluster = toml::from_str(&text).unwrap();
        assert_eq!(c.steal.peers.len(), 1, "{text}");
        assert_eq!(c.steal.peers[0].name, "aws");
        assert_eq!(c.steal.peers[0].url, "http://127.0.0.1:8080/clusters/aws");
        assert_eq!(c.steal.peers[0].token_file, "/s/identity/peer-gcp.token");
        // The edge decides only when its `[stealing]` is on.
        assert_eq!(c.steal.edge, None, "{text}");
        std::fs::write(
            dir.path().join("edge.toml"),
            format!("{EDGE}\n[stealing]\nenabled = true\n"),
        )
        .unwrap();
        let deciding = Plan::parse(topo, &path).unwrap();
        let text = steal_config(&deciding, "gcp", Path::new("/s/identity/peer-gcp.token"));
        let c: Cluster = toml::from_str(&text).unwrap();
        assert_eq!(
            c.steal.edge.as_deref(),
            Some("http://127.0.0.1:8080"),
            "{text}"
        );

        // The remote claim is never anonymous, and reelay up owns the cluster's --config.
        let anon = topo.replace("steal = true", "steal = true\nanonymous = true");
        assert!(Plan::parse(&anon, &path)
            .unwrap_err()
            .to_string()
            .contains("anonymous"));
        let own = topo.replace(
            "workers = 1",
            "workers = 1\nargs = [\"--config\", \"x.toml\"]",
        );
        assert!(Plan::parse(&own, &path)
            .unwrap_err()
            .to_string()
            .contains("--config"));
        assert!(
            !Plan::parse(&topo.replace("steal = true\n", ""), &path)
                .unwrap()
                .topology
                .steal
        );
    }

    #[test]
    fn peer_tokens_are_minted_once_per_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let id = UpIdentity::under(dir.path());
        id.ensure().unwrap();
        let path = id.ensure_peer_token("gcp").unwrap();
        let token = std::fs::read_to_string(&path).unwrap();
        let trusted = reelay_identity::keys::load_trusted_keys(&id.trusted_keys).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims =
            reelay_identity::token::verify(token.trim(), &trusted, &Default::default(), now)
                .unwrap();
        assert!(claims.has(reelay_identity::Scope::Peer));
        assert!(!claims.has(reelay_identity::Scope::Read));
        assert_eq!(claims.sub, "gcp");
        // Kept while it verifies.
        id.ensure_peer_token("gcp").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), token);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn clusters_must_match_the_edge() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("edge.toml"), EDGE).unwrap();
        let path = dir.path().join("topology.toml");
        let bad_port = "state_dir = \"s\"\nedge = \"edge.toml\"\n[[clusters]]\nname = \"aws\"\nlisten = \"127.0.0.1:9999\"\nworkers = 3\n";
        assert!(Plan::parse(bad_port, &path)
            .unwrap_err()
            .to_string()
            .contains("9999"));
        let unknown = "state_dir = \"s\"\nedge = \"edge.toml\"\n[[clusters]]\nname = \"azure\"\nlisten = \"127.0.0.1:8083\"\nworkers = 1\n";
        assert!(Plan::parse(unknown, &path)
            .unwrap_err()
            .to_string()
            .contains("azure"));
        let no_workers = "state_dir = \"s\"\nedge = \"edge.toml\"\n[[clusters]]\nname = \"aws\"\nlisten = \"127.0.0.1:8081\"\nworkers = 0\n";
        assert!(Plan::parse(no_workers, &path)
            .unwrap_err()
            .to_string()
            .contains("workers"));
    }
}
