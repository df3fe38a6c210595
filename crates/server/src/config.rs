//! Configuration: defaults, then the TOML file, then `REELAY_*` variables and flags (clap reads
//! both), each layer overriding the one before.

use clap::Args;
use reelay_media::{InputPolicy, Tools};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Flags of `reelay serve` (and the other server roles). Every flag has a `REELAY_*` variable.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file; flags and REELAY_* variables override it.
    #[arg(long, env = "REELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "REELAY_LISTEN")]
    pub listen: Option<String>,
    /// Directory for the SQLite job store, local object storage and scratch space [default: ./data].
    #[arg(long, env = "REELAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Name of this cluster; the prefix of every job id [default: local].
    #[arg(long, env = "REELAY_CLUSTER")]
    pub cluster: Option<String>,
    /// Concurrent jobs on this process [default: half the cores, at least 1].
    #[arg(long, env = "REELAY_WORKERS")]
    pub workers: Option<usize>,
    /// Object storage URL: s3://bucket/prefix, gs://bucket/prefix, or file:///dir [default: <data-dir>/storage].
    #[arg(long, env = "REELAY_STORAGE")]
    pub storage: Option<String>,
    /// Job store URL: sqlite:/path/file.db or postgres://user:pass@host/db [default: sqlite in <data-dir>/reelay.db].
    #[arg(long, env = "REELAY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Allow URL inputs on loopback, private and link-local addresses (off: SSRF protection).
    #[arg(long, env = "REELAY_ALLOW_PRIVATE_URLS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_private_urls: Option<bool>,
    /// Seconds a worker's claim on a job lasts without renewal [default: 30].
    #[arg(long, env = "REELAY_LEASE_SECONDS")]
    pub lease_seconds: Option<u64>,
    /// Kill and retry an ffmpeg that makes no progress for this long [default: 120].
    #[arg(long, env = "REELAY_STALL_TIMEOUT_SECONDS")]
    pub stall_timeout_seconds: Option<u64>,
    /// Fail a job whose encoding takes longer than this [default: 21600].
    #[arg(long, env = "REELAY_JOB_TIMEOUT_SECONDS")]
    pub job_timeout_seconds: Option<u64>,
    /// Quality receipts (PSNR/SSIM) by default for inputs up to this many seconds [default: 600].
    #[arg(long, env = "REELAY_QUALITY_REPORT_MAX_SECONDS")]
    pub quality_report_max_seconds: Option<f64>,
    /// On SIGTERM, let running jobs finish for this long before handing them back [default: 30].
    #[arg(long, env = "REELAY_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
    /// Attempts per job before it fails for good [default: 3].
    #[arg(long, env = "REELAY_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// Answer output downloads from S3/GCS with a redirect to a presigned URL instead of streaming.
    #[arg(long, env = "REELAY_PRESIGN_DOWNLOADS", num_args = 0..=1, default_missing_value = "true")]
    pub presign_downloads: Option<bool>,
    /// Largest accepted input, bytes (uploads and URL downloads) [default: 21474836480].
    #[arg(long, env = "REELAY_MAX_INPUT_BYTES")]
    pub max_input_bytes: Option<u64>,
    /// Also serve /healthz, /readyz and /metrics on this address; /metrics then leaves --listen.
    #[arg(long, env = "REELAY_OPS_LISTEN")]
    pub ops_listen: Option<String>,
    /// PEM certificate chain: serve HTTPS on --listen (needs --tls-key).
    #[arg(long, env = "REELAY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "REELAY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): require clients to present a certificate signed by one (mutual TLS).
    #[arg(long, env = "REELAY_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Key inputs ({"input": {"key": ...}}) may name objects under this storage prefix only, a
    /// non-admin token only under PREFIX/<its owner>/ [default: none, key inputs refused].
    #[arg(long, env = "REELAY_KEY_INPUT_PREFIX", value_name = "PREFIX")]
    pub key_input_prefix: Option<String>,
    /// Issuer key file (`reelay token keygen`): this cluster signs tokens and revocations with it.
    #[arg(long, env = "REELAY_ISSUER_KEY", value_name = "FILE")]
    pub issuer_key: Option<PathBuf>,
    /// Trusted keys file: the public keys tokens may be signed with (every cluster and the edge).
    #[arg(long, env = "REELAY_TRUSTED_KEYS", value_name = "FILE")]
    pub trusted_keys: Option<PathBuf>,
    /// Serve /v1 without tokens even to requests forwarded by a proxy (the edge). Loopback only,
    /// never with keys or tokens; for benchmarks and tests.
    #[arg(long, env = "REELAY_ALLOW_ANONYMOUS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_anonymous: Option<bool>,
    /// Requests a minute per token (per client address in open mode); 0 = unlimited [default: 600].
    #[arg(long, env = "REELAY_RATE_LIMIT_PER_MINUTE")]
    pub rate_limit_per_minute: Option<u32>,
    /// Origins whose pages may read output files (CORS), comma-separated: `*`, or exact origins
    /// like https://player.example.com; empty = none. Never applies to the job API [default: *].
    #[arg(long, env = "REELAY_CORS_ALLOWED_ORIGINS", value_delimiter = ',', num_args = 0..)]
    pub cors_allowed_origins: Option<Vec<String>>,
    /// File holding the key owners' webhook secrets derive from (`whsec_…`), created there if
    /// missing. Every replica and every cluster behind one edge must read the same one
    /// [default: <data-dir>/webhook-notify.key].
    #[arg(long, env = "REELAY_WEBHOOK_NOTIFY_KEY_FILE", value_name = "FILE")]
    pub webhook_notify_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub cluster: String,
    pub workers: usize,
    pub storage: Option<String>,
    pub database_url: Option<String>,
    pub allow_private_urls: bool,
    pub lease_seconds: u64,
    pub stall_timeout_seconds: u64,
    pub job_timeout_seconds: u64,
    /// Jobs that do not say `quality_report` get PSNR/SSIM receipts when their input lasts at
    /// most this long: the comparison decodes the output and the source once more, which is
    /// cheap for a clip and an hour's extra work for a film.
    pub quality_report_max_seconds: f64,
    pub shutdown_grace_seconds: u64,
    pub max_attempts: u32,
    /// Redirect output downloads to presigned S3/GCS URLs (valid `presign_ttl_seconds`).
    pub presign_downloads: bool,
    pub presign_ttl_seconds: u64,
    /// Total time allowed for downloading a URL input.
    pub fetch_timeout_seconds: u64,
    /// Largest JSON request body.
    pub max_json_bytes: usize,
    /// How often idle workers and SSE streams look at the store.
    pub poll_interval_ms: u64,
    /// Input limits and allowed formats (`[policy]` table).
    pub policy: InputPolicy,
    /// How long finished jobs' objects are kept (`[retention]` table, `crate::retention`).
    pub retention: crate::retention::Retention,
    /// ffmpeg/ffprobe paths and child resource limits (`[tools]` table).
    pub tools: Tools,
    /// Separate listener for /healthz, /readyz and /metrics.
    pub ops_listen: Option<String>,
    /// TLS on the main listener: certificate chain and key (PEM).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: client certificates must chain to this CA (PEM).
    pub tls_client_ca: Option<PathBuf>,
    /// Per-token (or per-address, in open mode) request budget; 0 = unlimited.
    pub rate_limit_per_minute: u32,
    /// A client must send a request's headers within this long (slow-loris protection).
    pub header_read_timeout_seconds: u64,
    /// Storage prefix that key inputs must lie under (see `key_inputs`); None refuses them.
    pub key_input_prefix: Option<String>,
    /// A request body being read may send nothing for this long (`body`).
    pub body_idle_timeout_seconds: u64,
    /// A JSON body, and an upload's spec part, must be complete this long after the headers.
    pub body_deadline_seconds: u64,
    /// A multipart upload must be complete this long after the headers.
    pub upload_deadline_seconds: u64,
    /// An unused resumable upload (`/v1/uploads`) is deleted this long after its creation.
    pub upload_expiry_seconds: u64,
    /// Open connections per client address (IPv4 address or IPv6 /64) before only health and
    /// load routes are served to it (`conn_limit`); 0 = no limit.
    pub max_connections_per_client: usize,
    /// Signs tokens and revocations (Ed25519 issuer key file, mode 0600).
    pub issuer_key: Option<PathBuf>,
    /// Public keys signed tokens are verified with; with it, /v1 always requires a token.
    pub trusted_keys: Option<PathBuf>,
    /// Open mode also for requests forwarded by a proxy (benchmarks, tests); loopback only.
    pub allow_anonymous: bool,
    /// How often revocations recorded by other replicas and changed key files are picked up.
    pub identity_refresh_ms: u64,
    /// Origins whose pages may read output files cross-origin (`cors`): `["*"]` (the default:
    /// outputs are media a player on the customer's site must load, and still need a token unless
    /// the cluster runs open), exact origins, or `[]` for none. The job API never gets CORS.
    pub cors_allowed_origins: Vec<String>,
    /// Split-and-stitch (`[split]` table): `segment_seconds` (30), the longest range a job with
    /// `"split": "auto"` is cut into (the plan fits shorter ones to the live slots and starts
    /// HLS jobs with a ramp), `max_segments` (500), beyond which ranges lengthen, and
    /// `vod_grace_margin_seconds` (5): a succeeded split job served progressively keeps its
    /// intermediates twice its HLS target duration plus this long (EVENT players still reload).
    pub split: reelay_media::split::SplitSettings,
    /// Webhooks (`[webhooks]`): delivery timing, the per-job limit, cluster subscriptions.
    pub webhooks: crate::webhooks::WebhookConfig,
    /// Remote claim (`[steal]`, `crate::peer_io::StealConfig`): peers this cluster's idle
    /// workers take tasks from, and how long a task waits at home before peers are offered it.
    pub steal: crate::peer_io::StealConfig,
}

pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .max(1)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: "data".into(),
            cluster: "local".into(),
            workers: default_workers(),
            storage: None,
            database_url: None,
            allow_private_urls: false,
            lease_seconds: 30,
            stall_timeout_seconds: 120,
            job_timeout_seconds: 6 * 3600,
            quality_report_max_seconds: 600.0,
            shutdown_grace_seconds: 30,
            max_attempts: 3,
            presign_downloads: false,
            presign_ttl_seconds: 3600,
            fetch_timeout_seconds: 3600,
            max_json_bytes: 64 * 1024,
            poll_interval_ms: 250,
            policy: InputPolicy::default(),
            retention: crate::retention::Retention::default(),
            tools: Tools::default(),
            ops_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            rate_limit_per_minute: 600,
            header_read_timeout_seconds: 30,
            key_input_prefix: None,
            body_idle_timeout_seconds: 30,
            body_deadline_seconds: 60,
            upload_deadline_seconds: 3600,
            upload_expiry_seconds: 24 * 3600,
            max_connections_per_client: 128,
            issuer_key: None,
            trusted_keys: None,
            split: reelay_media::split::SplitSettings::default(),
            allow_anonymous: false,
            identity_refresh_ms: 1000,
            cors_allowed_origins: vec!["*".into()],
            webhooks: Default::default(),
            steal: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

impl Config {
    /// Reads the file named by `--config` (if any), then applies flags and environment.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let base = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        let mut cfg = base.with_overrides(args);
        cfg.validate()?;
        // ffmpeg runs inside per-job directories, so every path handed to it must be absolute.
        cfg.data_dir = std::path::absolute(&cfg.data_dir).map_err(|e| ConfigError::Invalid {
            setting: "data_dir",
            message: e.to_string(),
        })?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Pure merge of flags/env over this config.
    pub fn with_overrides(mut self, a: &ServeArgs) -> Config {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &a.$f { self.$f = v.clone(); } )* };
        }
        set!(
            listen,
            data_dir,
            cluster,
            workers,
            allow_private_urls,
            lease_seconds,
            stall_timeout_seconds,
            job_timeout_seconds,
            quality_report_max_seconds,
            shutdown_grace_seconds,
            max_attempts,
            presign_downloads,
            rate_limit_per_minute,
            allow_anonymous
        );
        for (dst, src) in [
            (&mut self.tls_cert, &a.tls_cert),
            (&mut self.tls_key, &a.tls_key),
            (&mut self.tls_client_ca, &a.tls_client_ca),
            (&mut self.issuer_key, &a.issuer_key),
            (&mut self.trusted_keys, &a.trusted_keys),
        ] {
            if src.is_some() {
                *dst = src.clone();
            }
        }
        if a.ops_listen.is_some() {
            self.ops_listen = a.ops_listen.clone();
        }
        if a.storage.is_some() {
            self.storage = a.storage.clone();
        }
        if a.key_input_prefix.is_some() {
            self.key_input_prefix = a.key_input_prefix.clone();
        }
        if a.database_url.is_some() {
            self.database_url = a.database_url.clone();
        }
        if a.webhook_notify_key_file.is_some() {
            self.webhooks.notify_key_file = a.webhook_notify_key_file.clone();
        }
        if let Some(origins) = &a.cors_allowed_origins {
            // `--cors-allowed-origins ''` (or an empty variable) turns CORS off.
            self.cors_allowed_origins = origins.iter().filter(|o| !o.is_empty()).cloned().collect();
        }
        if let Some(b) = a.max_input_bytes {
            self.policy.max_bytes = b;
        }
        self
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |setting, message: &str| {
            Err(ConfigError::Invalid {
                setting,
                message: message.into(),
            })
        };
        if !reelay_protocol::valid_cluster_name(&self.cluster) {
            return bad("cluster", "must be 1-32 characters of a-z, 0-9 and -");
        }
        if !(self.steal.offer_after_seconds.is_finite() && self.steal.offer_after_seconds >= 0.0) {
            return bad(
                "steal.offer_after_seconds",
                "must be a number of seconds, 0 or more",
            );
        }
        if self.steal.max_peer_hold_seconds == 0 {
            return bad(
                "steal.max_peer_hold_seconds",
                "must be 1 or more (0 would refuse every peer's first renewal)",
            );
        }
        if self.steal.peers.iter().any(|p| p.name == self.cluster) {
            return bad("steal.peers", "a cluster cannot be its own peer");
        }
        if let Some(edge) = &self.steal.edge {
            if !(edge.starts_with("http://") || edge.starts_with("https://")) {
                return bad(
                    "steal.edge",
                    "must be the edge's base URL (http:// or https://)",
                );
            }
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "listen",
                "must be an address like 127.0.0.1:8080 or [::]:8080",
            );
        }
        if let Some(ops) = &self.ops_listen {
            if ops.parse::<std::net::SocketAddr>().is_err() {
                return bad("ops_listen", "must be an address like 127.0.0.1:9090");
            }
            if *ops == self.listen {
                return bad("ops_listen", "must differ from listen");
            }
        }
        if let Err((setting, message)) = self.webhooks.validate() {
            return bad(setting, &message);
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert", "tls_cert and tls_key go together");
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return bad(
                "tls_client_ca",
                "mutual TLS needs the server's own tls_cert and tls_key",
            );
        }
        if let Some(prefix) = &self.key_input_prefix {
            if let Err(e) = crate::key_inputs::normalize_prefix(prefix) {
                return Err(ConfigError::Invalid {
                    setting: "key_input_prefix",
                    message: e.to_string(),
                });
            }
        }
        if self.issuer_key.is_some() && self.trusted_keys.is_none() {
            return bad(
                "issuer_key",
                "needs trusted_keys too (the issuer's public key must be among them)",
            );
        }
        if self.allow_anonymous {
            if self.trusted_keys.is_some() {
                return bad(
                    "allow_anonymous",
                    "cannot serve anonymous requests with trusted_keys set (tokens are required then)",
                );
            }
            if !crate::auth::is_loopback_listen(&self.listen) {
                return bad(
                    "allow_anonymous",
                    "only on a loopback listener: anonymous access beyond this machine is never allowed",
                );
            }
        }
        if let Err(e) = crate::cors::AllowedOrigins::parse(&self.cors_allowed_origins) {
            return Err(ConfigError::Invalid {
                setting: "cors_allowed_origins",
                message: e.to_string(),
            });
        }
        if self.identity_refresh_ms == 0 {
            return bad("identity_refresh_ms", "must be at least 1");
        }
        if self.header_read_timeout_seconds == 0 {
            return bad("header_read_timeout_seconds", "must be at least 1");
        }
        for (setting, v) in [
            ("body_idle_timeout_seconds", self.body_idle_timeout_seconds),
            ("body_deadline_seconds", self.body_deadline_seconds),
            ("upload_deadline_seconds", self.upload_deadline_seconds),
            ("upload_expiry_seconds", self.upload_expiry_seconds),
        ] {
            if v == 0 {
                return bad(setting, "must be at least 1");
            }
        }
        if self.retention.sweep_interval_seconds == 0 {
            return bad("retention.sweep_interval_seconds", "must be at least 1");
        }
        if self.workers == 0 || self.workers > 256 {
            return bad("workers", "must be between 1 and 256");
        }
        if self.lease_seconds < 1 {
            return bad("lease_seconds", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if !(2..=3600).contains(&self.split.segment_seconds) {
            return bad("split.segment_seconds", "must be between 2 and 3600");
        }
        if !(2..=10_000).contains(&self.split.max_segments) {
            return bad("split.max_segments", "must be between 2 and 10000");
        }
        if !(1..=3600).contains(&self.split.vod_grace_margin_seconds) {
            return bad(
                "split.vod_grace_margin_seconds",
                "must be between 1 and 3600",
            );
        }
        if let Some(db) = &self.database_url {
            let known = ["sqlite:", "postgres://", "postgresql://"];
            if !known.iter().any(|p| db.starts_with(p)) {
                return bad(
                    "database_url",
                    "must start with sqlite:, postgres:// or postgresql://",
                );
            }
        }
        Ok(())
    }

    /// The time limits on request bodies.
    pub fn body_limits(&self) -> crate::body::BodyLimits {
        crate::body::BodyLimits {
            idle: std::time::Duration::from_secs(self.body_idle_timeout_seconds),
            deadline: std::time::Duration::from_secs(self.body_deadline_seconds),
            upload_deadline: std::time::Duration::from_secs(self.upload_deadline_seconds),
        }
    }

    /// The rule key inputs are checked against.
    pub fn key_inputs(&self) -> crate::key_inputs::KeyInputs {
        crate::key_inputs::KeyInputs::new(self.key_input_prefix.as_deref())
    }

    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let file: Config = toml::from_str(
            "cluster = \"aws\"\nworkers = 3\n[policy]\nmax_duration_seconds = 60.0\n",
        )
        .unwrap();
        assert_eq!(file.listen, "127.0.0.1:8080");
        assert_eq!(file.policy.max_duration_seconds, 60.0);
        let args = ServeArgs {
            workers: Some(5),
            allow_private_urls: Some(true),
            max_input_bytes: Some(10),
            ..Default::default()
        };
        let cfg = file.with_overrides(&args);
        assert_eq!((cfg.cluster.as_str(), cfg.workers), ("aws", 5));
        assert!(cfg.allow_private_urls);
        assert_eq!(cfg.policy.max_bytes, 10);
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn steal_is_off_by_default_and_read_from_its_table() {
        assert!(Config::default().steal.peers.is_empty());
        let cfg: Config = toml::from_str(
            "cluster = \"gcp\"\n[steal]\npoll_ms = 200\noffer_after_seconds = 2.5\n\
             [[steal.peers]]\nname = \"aws\"\nurl = \"https://aws:8443\"\n\
             token_file = \"/etc/reelay/peer.token\"\n",
        )
        .unwrap();
        assert_eq!(cfg.steal.poll_ms, 200);
        assert_eq!(cfg.steal.offer_after_seconds, 2.5);
        assert_eq!(cfg.steal.peers[0].name, "aws");
        assert!(cfg.validate().is_ok());
        let mut own = cfg.clone();
        own.steal.peers[0].name = "gcp".into();
        assert!(matches!(
            own.validate(),
            Err(ConfigError::Invalid {
                setting: "steal.peers",
                ..
            })
        ));
        let mut no_hold = cfg.clone();
        no_hold.steal.max_peer_hold_seconds = 0;
        assert!(matches!(
            no_hold.validate(),
            Err(ConfigError::Invalid {
                setting: "steal.max_peer_hold_seconds",
                ..
            })
        ));
        let mut negative = cfg;
        negative.steal.offer_after_seconds = -1.0;
        assert!(matches!(
            negative.validate(),
            Err(ConfigError::Invalid {
                setting: "steal.offer_after_seconds",
                ..
            })
        ));
        assert!(toml::from_str::<Config>("[steal]\nbogus = 1\n").is_err());
    }

    #[test]
    fn steal_asks_the_edge_when_one_is_named() {
        assert_eq!(Config::default().steal.edge, None);
        let cfg: Config = toml::from_str(
            "cluster = \"gcp\"\n[steal]\nedge = \"http://edge:8080\"\n\
             token_file = \"/etc/reelay/edge.token\"\n",
        )
        .unwrap();
        assert_eq!(cfg.steal.edge.as_deref(), Some("http://edge:8080"));
        assert_eq!(
            cfg.steal.token_file.as_deref(),
            Some(std::path::Path::new("/etc/reelay/edge.token"))
        );
        assert!(cfg.validate().is_ok());
        let mut bad = cfg;
        bad.steal.edge = Some("edge:8080".into());
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                setting: "steal.edge",
                ..
            })
        ));
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |c: Config| match c.validate() {
            Err(ConfigError::Invalid { setting, .. }) => setting,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err(Config {
                cluster: "AWS!".into(),
                ..Default::default()
            }),
            "cluster"
        );
        assert_eq!(
            err(Config {
                listen: "nope".into(),
                ..Default::default()
            }),
            "listen"
        );
        assert_eq!(
            err(Config {
                workers: 0,
                ..Default::default()
            }),
            "workers"
        );
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        for prefix in ["inputs", "outputs/tenants", "", "../x"] {
            assert_eq!(
                err(Config {
                    key_input_prefix: Some(prefix.into()),
                    ..Default::default()
                }),
                "key_input_prefix",
                "{prefix:?}"
            );
        }
        assert_eq!(
            err(Config {
                cors_allowed_origins: vec!["*".into(), "https://a.example".into()],
                ..Default::default()
            }),
            "cors_allowed_origins"
        );
        let cfg = Config {
            key_input_prefix: Some("imports/".into()),
            ..Default::default()
        };
        assert!(cfg.validate().is_ok());
        assert!(cfg.key_inputs().within_prefix("imports/a/b.mp4"));
    }
}
