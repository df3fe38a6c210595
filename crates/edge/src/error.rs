//! The edge's errors, in one place. Each enum knows, per variant, a stable `code` (for logs,
//! scripts and the control API's JSON) and whether trying again can help (`is_transient`): a
//! file that is missing stays missing, a port that is busy or an nginx that is restarting may
//! not be.

use crate::config::ConfigError;
use crate::nginx::NginxError;
use crate::render::RenderError;
use std::path::PathBuf;

/// What stops the edge from starting, or a config check from finishing.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Nginx(#[from] NginxError),
    #[error("cannot listen on {addr} (control_listen): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// A certificate or key the controller uses to reach the clusters over TLS (`upstream_ca`,
    /// `upstream_client_cert`/`_key`) cannot be read or parsed.
    #[error("HTTP client: {}: {reason}", path.display())]
    UpstreamTls { path: PathBuf, reason: String },
    /// The HTTP client itself cannot be built (its TLS back end failed to initialise).
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// `[auth] trusted_keys` cannot be loaded.
    #[error("[auth] trusted_keys: {0}")]
    TrustedKeys(#[from] reelay_identity::KeyError),
    /// `--check-config` could not make the scratch directory `nginx -t` runs in.
    #[error("creating a scratch directory: {0}")]
    Scratch(#[source] std::io::Error),
}

impl EdgeError {
    pub fn code(&self) -> &'static str {
        match self {
            EdgeError::Config(_) => "invalid_config",
            EdgeError::Render(_) => "render_failed",
            EdgeError::Nginx(e) => e.code(),
            EdgeError::Listen { .. } => "listen_failed",
            EdgeError::UpstreamTls { .. } => "upstream_tls",
            EdgeError::HttpClient(_) => "http_client",
            EdgeError::TrustedKeys(_) => "trusted_keys",
            EdgeError::Scratch(_) => "scratch_dir",
        }
    }

    /// Whether starting again (unchanged) can succeed: a port held by a process that exits, an
    /// nginx that was restarting, a full disk. A bad file or setting needs a change first.
    pub fn is_transient(&self) -> bool {
        match self {
            EdgeError::Nginx(e) => e.is_transient(),
            EdgeError::Listen { source, .. } => source.kind() == std::io::ErrorKind::AddrInUse,
            EdgeError::Scratch(_) => true,
            EdgeError::Config(_)
            | EdgeError::Render(_)
            | EdgeError::UpstreamTls { .. }
            | EdgeError::HttpClient(_)
            | EdgeError::TrustedKeys(_) => false,
        }
    }
}

impl NginxError {
    pub fn code(&self) -> &'static str {
        match self {
            NginxError::Rejected(_) => "nginx_rejected",
            NginxError::Spawn { .. } => "nginx_spawn",
            NginxError::Io { .. } => "nginx_io",
            NginxError::NotRunning => "nginx_not_running",
        }
    }

    /// A rejected configuration or a missing binary stay that way; file-system trouble and a
    /// master that is between restarts may pass.
    pub fn is_transient(&self) -> bool {
        matches!(self, NginxError::Io { .. } | NginxError::NotRunning)
    }
}

/// Why one reconcile pass did not leave nginx serving the new configuration. nginx keeps
/// serving the previous one in every case; the message goes into the reload record.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Render(#[from] RenderError),
    /// Staging, `nginx -t` or signalling the master failed.
    #[error(transparent)]
    Nginx(#[from] NginxError),
    /// nginx accepted the file and was told to reload, but never served the new generation (a
    /// reload that cannot bind a new listen address never completes).
    #[error("nginx did not serve generation {generation} within {timeout_secs}s ({last}); see {}", log.display())]
    NotServed {
        generation: u64,
        timeout_secs: u64,
        /// What the last poll saw.
        last: String,
        /// nginx's error log, where the reason is.
        log: PathBuf,
    },
}

impl ApplyError {
    pub fn code(&self) -> &'static str {
        match self {
            ApplyError::Render(_) => "render_failed",
            ApplyError::Nginx(e) => e.code(),
            ApplyError::NotServed { .. } => "reload_not_served",
        }
    }

    /// Whether the same configuration can succeed on a later pass. The reconciler does not
    /// retry a configuration nginx rejected until the desired state changes.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Render(_) => false,
            ApplyError::Nginx(e) => e.is_transient(),
            ApplyError::NotServed { .. } => true,
        }
    }
}

/// Why `/edge/reload` or SIGHUP did not take a new edge.toml.
#[derive(Debug, thiserror::Error)]
pub enum ReloadConfigError {
    /// The file does not parse or validate; the running configuration stays.
    #[error("{0}")]
    Invalid(String),
    /// It changes a setting the running process is built around.
    #[error("{0}")]
    NeedsRestart(String),
    #[error("the edge was not started from a config file")]
    NoFile,
}

impl ReloadConfigError {
    pub fn code(&self) -> &'static str {
        match self {
            ReloadConfigError::Invalid(_) => "invalid_config",
            ReloadConfigError::NeedsRestart(_) => "needs_restart",
            ReloadConfigError::NoFile => "no_config_file",
        }
    }

    /// None of these pass without someone changing the file or restarting the edge.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Every error the controller's HTTP listener answers (as JSON `{"error": {"code",
/// "message"}}`, see `api.rs`), with its status and code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no such route on the edge controller")]
    NotFound,
    /// No token, or one that does not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token without the scope this request needs.
    #[error("{0}")]
    Forbidden(String),
    #[error("no cluster is configured")]
    NoCluster,
    /// The chosen cluster's name cannot be a header value (config validation prevents it).
    #[error("bad cluster name")]
    BadClusterName,
    #[error("{0}")]
    InvalidQuery(&'static str),
    /// A request names a cluster this edge does not front (`/edge/steal?thief=`).
    #[error("no cluster named {0:?} behind this edge")]
    UnknownCluster(String),
    /// A merged listing that no cluster answered; names the ones missing.
    #[error("no cluster answered the listing ({})", .0.join(", "))]
    NoClusterAnswered(Vec<String>),
    #[error(transparent)]
    Config(#[from] ReloadConfigError),
    /// nginx did not take the new configuration; the reload record's message.
    #[error("{0}")]
    ReloadFailed(String),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::NotFound | ApiError::UnknownCluster(_) => 404,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NoCluster | ApiError::NoClusterAnswered(_) => 503,
            ApiError::BadClusterName => 500,
            ApiError::InvalidQuery(_) => 400,
            ApiError::Config(ReloadConfigError::NeedsRestart(_)) => 409,
            ApiError::Config(_) | ApiError::ReloadFailed(_) => 422,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound => "not_found",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NoCluster => "no_cluster",
            ApiError::BadClusterName => "internal",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::UnknownCluster(_) => "unknown_cluster",
            ApiError::NoClusterAnswered(_) => "cluster_unavailable",
            ApiError::Config(e) => e.code(),
            ApiError::ReloadFailed(_) => "reload_failed",
        }
    }

    /// Whether the same request can succeed later unchanged (clusters come back; a bad query
    /// or token does not fix itself). A transient answer carries `Retry-After`.
    pub fn is_transient(&self) -> bool {
        matches!(self, ApiError::NoClusterAnswered(_))
    }
}

/// reqwest's top-level message hides the cause ("error sending request"); the chain names it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_transience_follow_the_cause() {
        let busy = EdgeError::Listen {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(busy.code(), "listen_failed");
        assert!(busy.is_transient());
        let denied = EdgeError::Listen {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(!denied.is_transient());
        let tls = EdgeError::UpstreamTls {
            path: "/etc/ca.pem".into(),
            reason: "No such file".into(),
        };
        assert_eq!(tls.to_string(), "HTTP client: /etc/ca.pem: No such file");
        assert!(!tls.is_transient());
        let rejected = ApplyError::from(NginxError::Rejected("unknown directive".into()));
        assert_eq!(rejected.code(), "nginx_rejected");
        assert!(!rejected.is_transient());
        assert!(
            rejected.to_string().contains("unknown directive"),
            "the record keeps nginx's words"
        );
        let slow = ApplyError::NotServed {
            generation: 3,
            timeout_secs: 10,
            last: "still serving generation 2".into(),
            log: "/w/logs/error.log".into(),
        };
        assert_eq!(slow.code(), "reload_not_served");
        assert!(slow.is_transient());
        assert_eq!(
            slow.to_string(),
            "nginx did not serve generation 3 within 10s (still serving generation 2); see /w/logs/error.log"
        );
        assert_eq!(
            ReloadConfigError::NeedsRestart("x".into()).code(),
            "needs_restart"
        );
        let restart = ApiError::from(ReloadConfigError::NeedsRestart("x".into()));
        assert_eq!((restart.status(), restart.code()), (409, "needs_restart"));
        let invalid = ApiError::from(ReloadConfigError::Invalid("x".into()));
        assert_eq!((invalid.status(), invalid.code()), (422, "invalid_config"));
        let none = ApiError::NoClusterAnswered(vec!["aws".into(), "gcp".into()]);
        assert_eq!(
            none.to_string(),
            "no cluster answered the listing (aws, gcp)"
        );
        assert!(none.is_transient() && !ApiError::InvalidQuery("x").is_transient());
        let unknown = ApiError::UnknownCluster("azure".into());
        assert_eq!((unknown.status(), unknown.code()), (404, "unknown_cluster"));
        assert!(!unknown.is_transient());
    }
}
