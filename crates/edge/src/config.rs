//! `edge.toml`: what the controller and the rendered nginx.conf are built from.
//!
//! Everything that ends up inside nginx.conf is checked here against a strict alphabet, because
//! the template pastes values verbatim: a `;` or `{` smuggled through a path or a size would
//! otherwise change the meaning of the rendered file instead of failing loudly. The one
//! deliberate exception is `nginx_http_snippet`, which is operator-written nginx syntax by
//! definition and is therefore only ever applied after `nginx -t` accepts it.

use reelay_protocol::valid_cluster_name;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// How `POST /v1/jobs` is spread over the clusters.
///
/// Only `reelay` uses the controller; the others are plain nginx balancing, kept so that a
/// benchmark can compare the placement policy against what nginx does on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Per-submission placement by the controller (auth_request), weighted fallback.
    #[default]
    Reelay,
    /// nginx round robin over every accepting cluster address.
    RoundRobin,
    /// nginx round robin weighted by each cluster's `weight`.
    Weighted,
    /// nginx `least_conn` over every accepting cluster address.
    LeastConn,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Reelay => "reelay",
            Mode::RoundRobin => "round_robin",
            Mode::Weighted => "weighted",
            Mode::LeastConn => "least_conn",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Where nginx listens for clients.
    pub listen: SocketAddr,
    /// The controller's own HTTP listener.
    pub control_listen: SocketAddr,
    #[serde(default = "default_nginx")]
    pub nginx: PathBuf,
    #[serde(default = "default_work_dir")]
    pub work_dir: PathBuf,
    #[serde(default = "default_body_size")]
    pub client_max_body_size: String,
    /// A client that sends nothing of its request body for this long is disconnected (nginx
    /// `client_body_timeout`, between two reads). nginx closes such a client without an answer,
    /// so keep it above the clusters' body read timeout (60 s for uploads): then the stalled
    /// client hears the cluster's JSON 408 through the edge, and this is only the backstop.
    #[serde(default = "default_client_body_timeout_seconds")]
    pub client_body_timeout_seconds: u32,
    /// A JSON submission (input by URL, key or finished upload) waits this long for a TCP
    /// connection to its cluster before nginx moves it to the next one: a cluster whose packets
    /// vanish costs one submission this much, not a failure.
    #[serde(default = "default_submit_connect_timeout_ms")]
    pub submit_connect_timeout_ms: u64,
    /// ...and this long for the answer once its body is sent. A cluster that accepted the
    /// connection but does not answer (a stopped process) is then left for another cluster, and
    /// it refuses the request itself if it reads it later (`X-Reelay-Deadline`), so the
    /// abandoned attempt never becomes a job. Multipart uploads are not cut: the cluster probes
    /// the file while the client waits, and their body cannot be replayed.
    #[serde(default = "default_submit_answer_timeout_ms")]
    pub submit_answer_timeout_ms: u64,
    #[serde(default = "default_reload_min_interval_ms")]
    pub reload_min_interval_ms: u64,
    #[serde(default)]
    pub local_cluster: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    /// Consulted before the system resolver (same format as /etc/hosts).
    #[serde(default)]
    pub hosts_file: Option<PathBuf>,
    /// The `user` directive, rendered only when the edge runs as root. Default: `nobody` with
    /// the system's unprivileged group.
    #[serde(default)]
    pub nginx_user: Option<String>,
    /// `worker_processes`; default `auto`.
    #[serde(default)]
    pub nginx_worker_processes: Option<u32>,
    /// Raw directives appended to the `http` block (tuning); applied only if `nginx -t` agrees.
    #[serde(default)]
    pub nginx_http_snippet: Option<String>,
    /// Let clients reuse connections. Off by default: on every reload nginx closes idle
    /// kept-alive connections, and a request sent on one at that instant is reset — which the
    /// client may not be able to retry (a submission). Without keep-alive a reload drops nothing.
    #[serde(default)]
    pub client_keepalive: bool,
    /// Who may read `/edge/status`, `/edge/metrics` and the dashboard on the public listener:
    /// addresses or CIDR blocks (`10.0.0.0/8`, `::1`). Empty (the default): everyone. They
    /// show cluster addresses and load; the control listener always serves them.
    #[serde(default)]
    pub status_allow: Vec<String>,
    /// Serve HTTPS to clients with this certificate chain and key (PEM); both or neither.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS towards `https://` clusters: the edge's client certificate and key (PEM), and
    /// the CA that cluster certificates must chain to.
    #[serde(default)]
    pub upstream_client_cert: Option<PathBuf>,
    #[serde(default)]
    pub upstream_client_key: Option<PathBuf>,
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// The name every cluster certificate carries (SNI and verification), since one nginx
    /// upstream spans several clusters. Required with `https://` clusters.
    #[serde(default)]
    pub upstream_server_name: Option<String>,
    /// With TLS: a plain-HTTP listener that only redirects to the HTTPS one (308).
    #[serde(default)]
    pub http_redirect_listen: Option<SocketAddr>,
    /// Per-client-address request rate (nginx `limit_req`); unset = no limit.
    #[serde(default)]
    pub rate_limit_per_second: Option<u32>,
    /// Requests beyond the rate answered at once before 429s start.
    #[serde(default = "default_rate_limit_burst")]
    pub rate_limit_burst: u32,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub placement: PlacementConfig,
    /// Token checks at the edge (`[auth]`); without it the edge forwards whatever it gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// Whether, and when, an idle cluster takes a waiting task from another (`[stealing]`).
    #[serde(default)]
    pub stealing: StealingConfig,
    pub clusters: Vec<ClusterConfig>,
}

/// `[stealing]`: the edge's answer to `GET /edge/steal` (see `stealing.rs` for the model).
/// Off by default; when on, the defaults are conservative: a move must save a minute after its
/// transfer and its egress, priced at the clouds' internet list price and a waiting hour worth
/// one dollar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StealingConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The smallest saving, after transfer time and egress price, worth a move.
    #[serde(default = "default_min_seconds_saved")]
    pub min_seconds_saved: f64,
    /// Throughput assumed between two clouds for a task's input and outputs, in MB/s.
    #[serde(default = "default_link_mb_per_second")]
    pub link_mb_per_second: f64,
    /// What an hour of one task's waiting is worth in USD: turns an egress price into seconds.
    #[serde(default = "default_wait_usd_per_hour")]
    pub wait_usd_per_hour: f64,
    /// Egress price per GB between clouds not listed in `egress`.
    #[serde(default = "default_egress_usd_per_gb")]
    pub egress_usd_per_gb: f64,
    /// Prices of particular cloud pairs (`from` is where the task's bytes live).
    #[serde(default)]
    pub egress: Vec<EgressPrice>,
    /// After cluster `a` is told to take a task from `b`, `b` takes nothing from `a` for this
    /// many seconds: work that just came one way does not go straight back (balanced load).
    #[serde(default = "default_cooldown_seconds")]
    pub cooldown_seconds: f64,
    /// A queue's head moves only once its wait so far plus its wait still to come at home
    /// reaches this many seconds: busy queues stay, queues that went wrong are relieved.
    #[serde(default = "default_min_wait_seconds")]
    pub min_wait_seconds: f64,
}

/// `[[stealing.egress]]`: the price of one GB from cloud `from` to cloud `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPrice {
    pub from: String,
    pub to: String,
    pub usd_per_gb: f64,
}

impl Default for StealingConfig {
    fn default() -> Self {
        StealingConfig {
            enabled: false,
            min_seconds_saved: default_min_seconds_saved(),
            link_mb_per_second: default_link_mb_per_second(),
            wait_usd_per_hour: default_wait_usd_per_hour(),
            egress_usd_per_gb: default_egress_usd_per_gb(),
            egress: Vec::new(),
            cooldown_seconds: default_cooldown_seconds(),
            min_wait_seconds: default_min_wait_seconds(),
        }
    }
}

impl StealingConfig {
    /// The pure policy these settings describe.
    pub fn policy(&self) -> crate::stealing::StealingPolicy {
        crate::stealing::StealingPolicy {
            enabled: self.enabled,
            min_seconds_saved: self.min_seconds_saved,
            link_bytes_per_second: self.link_mb_per_second * 1e6,
            wait_usd_per_hour: self.wait_usd_per_hour,
            egress_usd_per_gb: self
                .egress
                .iter()
                .map(|e| ((e.from.clone(), e.to.clone()), e.usd_per_gb))
                .collect(),
            default_egress_usd_per_gb: self.egress_usd_per_gb,
            cooldown_seconds: self.cooldown_seconds,
            min_wait_seconds: self.min_wait_seconds,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let non_negative = |field: &str, v: f64| -> Result<(), ConfigError> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(invalid(field, "must be a number, 0 or more"))
            }
        };
        non_negative("stealing.min_seconds_saved", self.min_seconds_saved)?;
        non_negative("stealing.egress_usd_per_gb", self.egress_usd_per_gb)?;
        non_negative("stealing.cooldown_seconds", self.cooldown_seconds)?;
        non_negative("stealing.min_wait_seconds", self.min_wait_seconds)?;
        for (name, v) in [
            ("stealing.link_mb_per_second", self.link_mb_per_second),
            ("stealing.wait_usd_per_hour", self.wait_usd_per_hour),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(name, "must be a positive number"));
            }
        }
        let mut pairs = HashSet::new();
        for (i, e) in self.egress.iter().enumerate() {
            let field = format!("stealing.egress[{i}]");
            if !valid_cluster_name(&e.from) || !valid_cluster_name(&e.to) {
                return Err(invalid(
                    field,
                    "from and to must be cloud names ([a-z0-9-]{1,32})",
                ));
            }
            non_negative(&format!("{field}.usd_per_gb"), e.usd_per_gb)?;
            if !pairs.insert((e.from.as_str(), e.to.as_str())) {
                return Err(invalid(
                    field,
                    format!("{} -> {} is priced twice", e.from, e.to),
                ));
            }
        }
        Ok(())
    }
}

fn default_cooldown_seconds() -> f64 {
    60.0
}

/// Two minutes: longer than `min_seconds_saved`, so at the defaults a head must both save a
/// minute and have waited (or be about to wait) two in all, the scale at which MediaConvert
/// hops queues.
fn default_min_wait_seconds() -> f64 {
    120.0
}

fn default_min_seconds_saved() -> f64 {
    60.0
}
fn default_link_mb_per_second() -> f64 {
    50.0
}
fn default_wait_usd_per_hour() -> f64 {
    1.0
}
fn default_egress_usd_per_gb() -> f64 {
    // Internet egress list price of both AWS and GCP at the first tier.
    0.09
}

/// `[auth]`: the edge verifies signed tokens itself (with the public keys only: it cannot mint
/// any), refuses requests without a token before they reach a cluster, and carries revocations
/// between the clusters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The trusted keys file (same format and contents as the clusters'); re-read on change.
    pub trusted_keys: PathBuf,
    /// Forward per-cluster `rly_…` tokens unverified (the cluster that issued one checks it):
    /// the migration path. Turn off once every client has a signed token.
    #[serde(default = "default_true")]
    pub legacy_tokens: bool,
    /// How often revocations are collected from every cluster and handed to the others.
    #[serde(default = "default_revocation_sync_ms")]
    pub revocation_sync_ms: u64,
}

fn default_true() -> bool {
    true
}
fn default_revocation_sync_ms() -> u64 {
    1000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_fall")]
    pub fall: u32,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_resolve_interval_ms")]
    pub resolve_interval_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            fall: default_fall(),
            rise: default_rise(),
            resolve_interval_ms: default_resolve_interval_ms(),
        }
    }
}

/// Knobs of the placement score (see `placement.rs` for how they combine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementConfig {
    /// Assumed encode time of a job when the load report gives no better estimate.
    #[serde(default = "default_job_seconds")]
    pub default_job_seconds: f64,
    /// Added to every cluster other than `local_cluster`.
    #[serde(default = "default_remote_penalty")]
    pub remote_penalty_seconds: f64,
    /// Seconds of expected waiting that one unit of `cost` is worth.
    #[serde(default = "default_cost_weight")]
    pub cost_weight_seconds: f64,
    /// How long after a placement a load report is assumed to include that job.
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            default_job_seconds: default_job_seconds(),
            remote_penalty_seconds: default_remote_penalty(),
            cost_weight_seconds: default_cost_weight(),
            settle_ms: default_settle_ms(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    /// `http://host:port`; the host is re-resolved every `resolve_interval_ms`.
    pub url: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default = "default_cost")]
    pub cost: f64,
    /// Fixed addresses instead of resolving the url's host.
    #[serde(default)]
    pub addresses: Option<Vec<SocketAddr>>,
    /// The cloud it runs in, for `[stealing]` egress prices; default: the cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<String>,
}

/// The host and port a cluster URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTarget {
    pub host: String,
    pub port: u16,
}

impl ClusterConfig {
    /// The cloud egress prices are looked up by (`cloud`, else the cluster's name).
    pub fn cloud(&self) -> &str {
        self.cloud.as_deref().unwrap_or(&self.name)
    }

    /// Host and port of `url`; validated at load time, so failing here means an unchecked config.
    pub fn target(&self) -> Result<ClusterTarget, ConfigError> {
        parse_cluster_url(&self.url).map_err(|message| ConfigError::Invalid {
            field: format!("clusters[{}].url", self.name),
            message,
        })
    }
}

fn default_nginx() -> PathBuf {
    PathBuf::from("nginx")
}
fn default_work_dir() -> PathBuf {
    PathBuf::from("/tmp/reelay-edge")
}
fn default_body_size() -> String {
    "20g".to_string()
}
fn default_client_body_timeout_seconds() -> u32 {
    90
}
fn default_submit_connect_timeout_ms() -> u64 {
    500
}
fn default_submit_answer_timeout_ms() -> u64 {
    1500
}
fn default_reload_min_interval_ms() -> u64 {
    1000
}
fn default_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    800
}
fn default_fall() -> u32 {
    2
}
fn default_rise() -> u32 {
    2
}
fn default_resolve_interval_ms() -> u64 {
    5000
}
fn default_job_seconds() -> f64 {
    60.0
}
fn default_remote_penalty() -> f64 {
    5.0
}
fn default_cost_weight() -> f64 {
    10.0
}
fn default_settle_ms() -> u64 {
    1000
}
fn default_rate_limit_burst() -> u32 {
    20
}
fn default_weight() -> u32 {
    1
}
fn default_cost() -> f64 {
    1.0
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

/// An address or CIDR block, checked by parsing so nothing else can reach nginx.conf.
fn valid_cidr(s: &str) -> Result<(), &'static str> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = ip.parse().map_err(|_| "not an IP address")?;
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the prefix length is not a number");
        }
        let p: u8 = p.parse().map_err(|_| "the prefix length is not a number")?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if p > max {
            return Err("the prefix length is too long for the address");
        }
    }
    Ok(())
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl EdgeConfig {
    /// Reads and validates a file. Relative paths inside it (`work_dir`, `hosts_file`) are taken
    /// relative to the file's directory, so that the same file works from any current directory.
    pub fn load(path: &Path) -> Result<EdgeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_relative_paths(base);
        Ok(cfg)
    }

    /// Parses and validates TOML text (relative paths are left as they are).
    pub fn parse(text: &str) -> Result<EdgeConfig, ConfigError> {
        let cfg: EdgeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("edge.toml"),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Makes `work_dir` and `hosts_file` absolute (nginx resolves relative paths against its
    /// prefix, not against our current directory), taking relative ones from `base`.
    pub fn resolve_relative_paths(&mut self, base: &Path) {
        self.work_dir = absolute(base, &self.work_dir);
        if let Some(h) = &self.hosts_file {
            self.hosts_file = Some(absolute(base, h));
        }
        if let Some(a) = &mut self.auth {
            a.trusted_keys = absolute(base, &a.trusted_keys);
        }
        for p in [
            &mut self.tls_cert,
            &mut self.tls_key,
            &mut self.upstream_client_cert,
            &mut self.upstream_client_key,
            &mut self.upstream_ca,
        ]
        .into_iter()
        .flatten()
        {
            *p = absolute(base, p);
        }
    }

    /// What is risky but allowed, for the log and `--check-config`.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.auth.is_none() && !self.listen.ip().is_loopback() {
            w.push(format!(
                "the edge listens on {} (beyond loopback) without [auth]: it forwards requests \
                 without a token to the clusters, which are then the only check. Add [auth] \
                 with trusted_keys",
                self.listen
            ));
        }
        if self.tls_cert.is_none() && !self.listen.ip().is_loopback() {
            w.push(format!(
                "the edge listens on {} without TLS: bearer tokens and uploads travel in clear \
                 unless a load balancer in front terminates TLS",
                self.listen
            ));
        }
        w
    }

    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.clusters.is_empty() {
            return Err(invalid(
                "clusters",
                "at least one [[clusters]] entry is required",
            ));
        }
        if self.listen == self.control_listen {
            return Err(invalid(
                "control_listen",
                "must differ from listen (nginx listens there)",
            ));
        }
        if self.nginx.as_os_str().is_empty() {
            return Err(invalid("nginx", "must name the nginx binary"));
        }
        nginx_safe_path(&self.work_dir).map_err(|m| invalid("work_dir", m))?;
        for a in &self.status_allow {
            valid_cidr(a).map_err(|m| invalid("status_allow", format!("{a:?}: {m}")))?;
        }
        valid_nginx_size(&self.client_max_body_size)
            .map_err(|m| invalid("client_max_body_size", m))?;
        if !(100..=10_000).contains(&self.submit_connect_timeout_ms) {
            return Err(invalid(
                "submit_connect_timeout_ms",
                "must be between 100 and 10000",
            ));
        }
        if !(500..=60_000).contains(&self.submit_answer_timeout_ms) {
            return Err(invalid(
                "submit_answer_timeout_ms",
                "must be between 500 and 60000",
            ));
        }
        if !(1..=3600).contains(&self.client_body_timeout_seconds) {
            return Err(invalid(
                "client_body_timeout_seconds",
                "must be between 1 and 3600",
            ));
        }
        if let Some(user) = &self.nginx_user {
            let ok = !user.trim().is_empty()
                && user.split(' ').count() <= 2
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._- ".contains(&b));
            if !ok {
                return Err(invalid(
                    "nginx_user",
                    "expected \"user\" or \"user group\" (letters, digits, . _ -)",
                ));
            }
        }
        if self.nginx_worker_processes == Some(0) {
            return Err(invalid("nginx_worker_processes", "must be at least 1"));
        }
        let h = &self.health;
        if h.interval_ms == 0 || h.timeout_ms == 0 || h.resolve_interval_ms == 0 {
            return Err(invalid(
                "health",
                "interval_ms, timeout_ms and resolve_interval_ms must be positive",
            ));
        }
        if h.fall == 0 || h.rise == 0 {
            return Err(invalid("health", "fall and rise must be at least 1"));
        }
        let p = &self.placement;
        for (field, v) in [
            ("placement.default_job_seconds", p.default_job_seconds),
            ("placement.remote_penalty_seconds", p.remote_penalty_seconds),
            ("placement.cost_weight_seconds", p.cost_weight_seconds),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid(field, "must be a non-negative number"));
            }
        }
        if p.default_job_seconds <= 0.0 {
            return Err(invalid("placement.default_job_seconds", "must be positive"));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid("tls_cert", "tls_cert and tls_key go together"));
        }
        if self.upstream_client_cert.is_some() != self.upstream_client_key.is_some() {
            return Err(invalid(
                "upstream_client_cert",
                "upstream_client_cert and upstream_client_key go together",
            ));
        }
        for (field, path) in [
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("upstream_client_cert", &self.upstream_client_cert),
            ("upstream_client_key", &self.upstream_client_key),
            ("upstream_ca", &self.upstream_ca),
        ] {
            if let Some(p) = path {
                nginx_safe_path(p).map_err(|m| invalid(field, m))?;
            }
        }
        if let Some(r) = self.http_redirect_listen {
            if self.tls_cert.is_none() {
                return Err(invalid(
                    "http_redirect_listen",
                    "redirects to HTTPS, so it needs tls_cert and tls_key",
                ));
            }
            if r == self.listen || r == self.control_listen {
                return Err(invalid(
                    "http_redirect_listen",
                    "must differ from listen and control_listen",
                ));
            }
        }
        if let Some(a) = &self.auth {
            if a.revocation_sync_ms == 0 {
                return Err(invalid("auth.revocation_sync_ms", "must be at least 1"));
            }
            nginx_safe_path(&a.trusted_keys).map_err(|m| invalid("auth.trusted_keys", m))?;
        }
        if self.rate_limit_per_second == Some(0) {
            return Err(invalid(
                "rate_limit_per_second",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        let https = self.clusters.iter().any(|c| c.url.starts_with("https://"));
        if https && self.clusters.iter().any(|c| !c.url.starts_with("https://")) {
            return Err(invalid(
                "clusters",
                "mix of http:// and https:// cluster URLs: nginx upstreams span clusters, use one scheme",
            ));
        }
        if https {
            let name_ok = self.upstream_server_name.as_deref().is_some_and(|n| {
                !n.is_empty()
                    && n.len() <= 253
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
            });
            if !name_ok {
                return Err(invalid(
                    "upstream_server_name",
                    "https:// clusters need the DNS name their certificates carry (letters, digits, . -)",
                ));
            }
            if self.upstream_ca.is_none() {
                return Err(invalid(
                    "upstream_ca",
                    "https:// clusters need the CA their certificates chain to",
                ));
            }
        }
        let mut seen = HashSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let field = |f: &str| format!("clusters[{i}].{f}");
            if !valid_cluster_name(&c.name) {
                return Err(invalid(
                    field("name"),
                    format!("{:?} must match [a-z0-9-]{{1,32}}", c.name),
                ));
            }
            if !seen.insert(c.name.as_str()) {
                return Err(invalid(
                    field("name"),
                    format!("{:?} appears twice", c.name),
                ));
            }
            parse_cluster_url(&c.url).map_err(|m| invalid(field("url"), m))?;
            if c.weight == 0 || c.weight > 1000 {
                return Err(invalid(field("weight"), "must be between 1 and 1000"));
            }
            if !c.cost.is_finite() || c.cost <= 0.0 {
                return Err(invalid(field("cost"), "must be a positive number"));
            }
            if c.cloud.as_deref().is_some_and(|cl| !valid_cluster_name(cl)) {
                return Err(invalid(field("cloud"), "must match [a-z0-9-]{1,32}"));
            }
            if let Some(addrs) = &c.addresses {
                if addrs.is_empty() {
                    return Err(invalid(
                        field("addresses"),
                        "must list at least one address (or be left out)",
                    ));
                }
                if let Some(a) = addrs.iter().find(|a| a.port() == 0) {
                    return Err(invalid(field("addresses"), format!("{a}: port 0")));
                }
            }
        }
        self.stealing.validate()?;
        if let Some(local) = &self.local_cluster {
            if self.cluster(local).is_none() {
                return Err(invalid(
                    "local_cluster",
                    format!("{local:?} is not one of the clusters"),
                ));
            }
        }
        Ok(())
    }
}

/// `base/p` (or `p` if absolute), anchored at the current directory and with `.`/`..` folded.
pub fn absolute(base: &Path, p: &Path) -> PathBuf {
    use std::path::Component;
    let joined = base.join(p);
    let anchored = if joined.is_absolute() {
        joined
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(joined)
    };
    let mut out = PathBuf::new();
    for c in anchored.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `http://host:port` with nothing after the authority; an explicit port is required because
/// a default port silently chosen for a cluster is a classic misrouting.
pub fn parse_cluster_url(raw: &str) -> Result<ClusterTarget, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{raw:?}: cluster URLs are http://host:port or https://host:port"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{raw:?}: credentials are not allowed in the URL"));
    }
    if !(url.path().is_empty() || url.path() == "/")
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(format!(
            "{raw:?}: must be just http(s)://host:port (no path or query)"
        ));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(format!("{raw:?} has no host")),
    };
    // The url crate drops an explicit default port (":80"), so look at the text for that case.
    let default_port = if url.scheme() == "https" { 443 } else { 80 };
    let port = match url.port() {
        Some(p) => p,
        None if raw
            .trim_end_matches('/')
            .ends_with(&format!(":{default_port}")) =>
        {
            default_port
        }
        None => return Err(format!("{raw:?}: a port is required (http(s)://host:port)")),
    };
    Ok(ClusterTarget { host, port })
}

/// nginx size syntax: digits with an optional k/m/g suffix.
pub fn valid_nginx_size(s: &str) -> Result<(), String> {
    let digits = s.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
    let suffixes = s.len() - digits.len();
    if digits.is_empty() || suffixes > 1 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{s:?} is not an nginx size (digits with an optional k, m or g suffix, e.g. \"20g\")"
        ));
    }
    Ok(())
}

/// Paths go into nginx.conf unquoted.
pub fn nginx_safe_path(p: &Path) -> Result<(), String> {
    let s = p
        .to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", p.display()))?;
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || ";{}'\"$#\\".contains(*c))
    {
        return Err(format!(
            "{s:?} contains {c:?}, which nginx.conf cannot carry unquoted"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:8080"
control_listen = "127.0.0.1:9180"
nginx = "nginx"
work_dir = "/tmp/reelay-edge"
client_max_body_size = "20g"
reload_min_interval_ms = 1000
local_cluster = "aws"

[health]
interval_ms = 1000
timeout_ms = 800
fall = 2
rise = 2
resolve_interval_ms = 5000

[[clusters]]
name = "aws"
url = "http://127.0.0.1:8081"
weight = 3
cost = 1.0

[[clusters]]
name = "gcp"
url = "http://gcp.internal:8082"
weight = 1
cost = 0.6
addresses = ["127.0.0.1:8082"]
"#;

    fn with(replace: &str, by: &str) -> Result<EdgeConfig, ConfigError> {
        assert!(GOOD.contains(replace), "{replace}");
        EdgeConfig::parse(&GOOD.replacen(replace, by, 1))
    }

    fn err(replace: &str, by: &str) -> String {
        with(replace, by).unwrap_err().to_string()
    }

    #[test]
    fn the_documented_example_parses() {
        let cfg = EdgeConfig::parse(GOOD).unwrap();
        assert_eq!(cfg.mode, Mode::Reelay);
        assert_eq!(cfg.clusters.len(), 2);
        assert_eq!(cfg.clusters[1].addresses.as_ref().unwrap().len(), 1);
        assert_eq!(cfg.health.fall, 2);
        assert_eq!(cfg.placement, PlacementConfig::default());
        assert_eq!(
            cfg.clusters[1].target().unwrap(),
            ClusterTarget {
                host: "gcp.internal".into(),
                port: 8082
            }
        );
    }

    #[test]
    fn defaults_fill_in_the_optional_settings() {
        let cfg = EdgeConfig::parse(
            "listen = \"127.0.0.1:8080\"\ncontrol_listen = \"127.0.0.1:9180\"\n[[clusters]]\nname = \"a\"\nurl = \"http://h:1\"\n",
        )
        .unwrap();
        assert_eq!(cfg.client_max_body_size, "20g");
        assert_eq!(cfg.client_body_timeout_seconds, 90);
        assert_eq!(cfg.health, HealthConfig::default());
        assert_eq!(cfg.clusters[0].weight, 1);
        assert_eq!(cfg.clusters[0].cost, 1.0);
        assert_eq!(cfg.work_dir, PathBuf::from("/tmp/reelay-edge"));
    }

    #[test]
    fn modes_parse() {
        for (text, mode) in [
            ("round_robin", Mode::RoundRobin),
            ("weighted", Mode::Weighted),
            ("least_conn", Mode::LeastConn),
            ("reelay", Mode::Reelay),
        ] {
            let cfg = with(
                "local_cluster",
                &format!("mode = \"{text}\"\nlocal_cluster"),
            )
            .unwrap();
            assert_eq!(cfg.mode, mode);
            assert_eq!(cfg.mode.as_str(), text);
        }
        assert!(err("local_cluster", "mode = \"random\"\nlocal_cluster").contains("random"));
    }

    #[test]
    fn parse_errors_name_the_problem() {
        assert!(err("name = \"aws\"", "name = \"AWS\"").contains("clusters[0].name"));
        assert!(err("name = \"gcp\"", "name = \"aws\"").contains("appears twice"));
        assert!(err("http://127.0.0.1:8081", "http://127.0.0.1").contains("port is required"));
        assert!(err("http://127.0.0.1:8081", "https://127.0.0.1:8081").contains("http://"));
        assert!(err("http://127.0.0.1:8081", "http://127.0.0.1:8081/api").contains("no path"));
        assert!(err("http://127.0.0.1:8081", "nonsense").contains("not a URL"));
        assert!(err("weight = 3", "weight = 0").contains("weight"));
        assert!(err("cost = 0.6", "cost = -1.0").contains("cost"));
        assert!(err("\"20g\"", "\"lots\"").contains("client_max_body_size"));
        assert!(err("\"20g\"", "\"1g;\"").contains("client_max_body_size"));
        assert!(err("\"20g\"", "\"20gg\"").contains("client_max_body_size"));
        assert!(err("local_cluster = \"aws\"", "local_cluster = \"azure\"").contains("azure"));
        assert!(err("fall = 2", "fall = 0").contains("fall"));
        for bad in ["0", "3601"] {
            let e = err(
                "reload_min_interval_ms",
                &format!("client_body_timeout_seconds = {bad}\nreload_min_interval_ms"),
            );
            assert!(e.contains("client_body_timeout_seconds"), "{e}");
        }
        assert!(err("/tmp/reelay-edge", "/tmp/my edge").contains("work_dir"));
        assert!(err("/tmp/reelay-edge", "/tmp/x;y").contains("work_dir"));
        assert!(err("9180", "8080").contains("control_listen"));
        assert!(err("[\"127.0.0.1:8082\"]", "[]").contains("addresses"));
        assert!(err("listen = \"127.0.0.1:8080\"", "listen = \"nowhere\"").contains("listen"));
        // Unknown keys are typos, not silently ignored settings.
        assert!(err("rise = 2", "rise = 2\nrize = 3").contains("rize"));
        let no_clusters = GOOD.split("[[clusters]]").next().unwrap();
        assert!(EdgeConfig::parse(no_clusters)
            .unwrap_err()
            .to_string()
            .contains("clusters"));
    }

    #[test]
    fn status_allow_takes_only_addresses_and_cidrs() {
        for ok in ["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8", "0.0.0.0/0"] {
            assert!(valid_cidr(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "all",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/x",
            "10.0.0.0/+8",
            "10.0.0.0/255.0.0.0",
            "1.2.3.4; deny all",
            "1.2.3.4/8 ",
            "host.example",
        ] {
            assert!(valid_cidr(bad).is_err(), "{bad}");
        }
        let with = |v: &str| {
            let text = format!("status_allow = {v}\n{GOOD}");
            EdgeConfig::parse(&text).map(|c| c.status_allow)
        };
        assert_eq!(
            with(r#"["10.0.0.0/8", "::1"]"#).unwrap(),
            vec!["10.0.0.0/8".to_string(), "::1".to_string()]
        );
        let e = with(r#"["10.0.0.0/8; allow all"]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("status_allow"), "{e}");
    }

    #[test]
    fn sizes_follow_nginx_syntax() {
        for ok in ["0", "1", "512k", "20g", "10M"] {
            assert!(valid_nginx_size(ok).is_ok(), "{ok}");
        }
        for bad in ["", "g", "1.5g", "20 g", "lots", "-1", "1t"] {
            assert!(valid_nginx_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        std::fs::write(
            &path,
            GOOD.replace("/tmp/reelay-edge", "state/edge")
                .replace("local_cluster", "hosts_file = \"hosts\"\nlocal_cluster"),
        )
        .unwrap();
        let cfg = EdgeConfig::load(&path).unwrap();
        assert_eq!(cfg.work_dir, dir.path().join("state/edge"));
        assert_eq!(
            absolute(Path::new("/a/b"), Path::new("../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert!(absolute(Path::new("rel"), Path::new("x")).is_absolute());
        assert_eq!(cfg.hosts_file, Some(dir.path().join("hosts")));
        let missing = EdgeConfig::load(&dir.path().join("nope.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
    }

    const STEALING_BASE: &str = "listen = \"127.0.0.1:1\"\ncontrol_listen = \"127.0.0.1:2\"\n";
    const STEALING_CLUSTERS: &str = "[[clusters]]\nname = \"aws\"\nurl = \"http://127.0.0.1:3\"\n\
         [[clusters]]\nname = \"gcp-eu\"\nurl = \"http://127.0.0.1:4\"\ncloud = \"gcp\"\n";

    #[test]
    fn stealing_is_off_and_conservative_by_default() {
        let cfg = EdgeConfig::parse(&format!("{STEALING_BASE}{STEALING_CLUSTERS}")).unwrap();
        let p = cfg.stealing.policy();
        assert_eq!(p, crate::stealing::StealingPolicy::default());
        assert!(!p.enabled);
        assert_eq!(cfg.clusters[0].cloud(), "aws");
        assert_eq!(cfg.clusters[1].cloud(), "gcp");
    }

    #[test]
    fn stealing_is_read_from_its_table() {
        let cfg = EdgeConfig::parse(&format!(
            "{STEALING_BASE}[stealing]\nenabled = true\nmin_seconds_saved = 5\n\
             link_mb_per_second = 100\nwait_usd_per_hour = 2.5\negress_usd_per_gb = 0.12\n\
             cooldown_seconds = 15\nmin_wait_seconds = 45\n\
             [[stealing.egress]]\nfrom = \"aws\"\nto = \"gcp\"\nusd_per_gb = 0.02\n\
             {STEALING_CLUSTERS}"
        ))
        .unwrap();
        let p = cfg.stealing.policy();
        assert!(p.enabled);
        assert_eq!(p.min_seconds_saved, 5.0);
        assert_eq!(p.link_bytes_per_second, 100e6);
        assert_eq!(p.wait_usd_per_hour, 2.5);
        assert_eq!(p.default_egress_usd_per_gb, 0.12);
        assert_eq!(p.cooldown_seconds, 15.0);
        assert_eq!(p.min_wait_seconds, 45.0);
        assert_eq!(
            p.egress_usd_per_gb,
            vec![(("aws".to_string(), "gcp".to_string()), 0.02)]
        );
    }

    #[test]
    fn bad_stealing_values_are_named() {
        for (table, field) in [
            ("min_seconds_saved = -1", "stealing.min_seconds_saved"),
            ("min_seconds_saved = nan", "stealing.min_seconds_saved"),
            ("link_mb_per_second = 0", "stealing.link_mb_per_second"),
            ("wait_usd_per_hour = 0", "stealing.wait_usd_per_hour"),
            ("wait_usd_per_hour = inf", "stealing.wait_usd_per_hour"),
            ("egress_usd_per_gb = -0.1", "stealing.egress_usd_per_gb"),
            ("cooldown_seconds = -1", "stealing.cooldown_seconds"),
            ("cooldown_seconds = inf", "stealing.cooldown_seconds"),
            ("min_wait_seconds = -3", "stealing.min_wait_seconds"),
            (
                "[[stealing.egress]]\nfrom = \"AWS\"\nto = \"gcp\"\nusd_per_gb = 1",
                "stealing.egress[0]",
            ),
            (
                "[[stealing.egress]]\nfrom = \"aws\"\nto = \"gcp\"\nusd_per_gb = -1",
                "stealing.egress[0].usd_per_gb",
            ),
            (
                "[[stealing.egress]]\nfrom = \"aws\"\nto = \"gcp\"\nusd_per_gb = 1\n\
                 [[stealing.egress]]\nfrom = \"aws\"\nto = \"gcp\"\nusd_per_gb = 2",
                "stealing.egress[1]",
            ),
        ] {
            let text = format!("{STEALING_BASE}[stealing]\n{table}\n{STEALING_CLUSTERS}");
            match EdgeConfig::parse(&text) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{table}"),
                other => panic!("{table}: {other:?}"),
            }
        }
        assert!(matches!(
            EdgeConfig::parse(&format!(
                "{STEALING_BASE}[stealing]\nbogus = 1\n{STEALING_CLUSTERS}"
            )),
            Err(ConfigError::Parse { .. })
        ));
        let bad_cloud = STEALING_CLUSTERS.replace("cloud = \"gcp\"", "cloud = \"G C P\"");
        assert!(matches!(
            EdgeConfig::parse(&format!("{STEALING_BASE}{bad_cloud}")),
            Err(ConfigError::Invalid { field, .. }) if field == "clusters[1].cloud"
        ));
    }
}
