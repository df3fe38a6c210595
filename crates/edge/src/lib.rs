//! The reelay edge: NGINX as the data plane, this crate as its control plane.
//!
//! nginx carries every byte (multi-gigabyte uploads, SSE, Range downloads) because it streams
//! them well and survives the controller; the controller decides, per submission, which cluster
//! gets the job (nginx asks it through `auth_request`), watches the clusters (active health
//! checks, `/v1/load`, re-resolving their names) and rewrites nginx.conf when that changes.
//!
//! | module | role |
//! |---|---|
//! | [`config`] | `edge.toml` |
//! | [`fleet`] | what the edge knows about each cluster (pure, time passed in) |
//! | [`placement`] | the pure placement policy and its memory of recent placements |
//! | [`stealing`] | the pure work-stealing policy behind `/edge/steal` |
//! | [`health`] | fall/rise state machine |
//! | [`probe`] | one health check of one cluster, as a value |
//! | [`resolve`] | cluster names to addresses (hosts-file override first) |
//! | [`render`] | nginx.conf from the embedded template |
//! | [`nginx`] | `nginx -t`, install, supervise the master |
//! | [`reconcile`] | render, test, reload, wait for the generation; reload statistics |
//! | [`background`] | the periodic loops (pollers, resolver, reconciler) |
//! | [`controller`] | wires the above together; config reload, status |
//! | [`metrics`] | `/edge/metrics` from a snapshot |
//! | [`error`] | the edge's error types |
//! | [`api`] | the controller's HTTP listener |
//! | [`listing`] | merging the clusters' job lists |
//! | [`auth`] | token checks at the edge (`[auth]`) |
//! | [`auth_cache`] | a few seconds' memory of allowed token checks |
//! | [`revocations`] | carrying revocations between clusters |
//! | [`up`] | `reelay up`: two clusters and the edge on one machine |

pub mod api;
pub mod auth;
pub mod auth_cache;
pub mod background;
pub mod config;
pub mod controller;
pub mod error;
pub mod fleet;
pub mod health;
pub mod listing;
pub mod metrics;
pub mod nginx;
pub mod placement;
pub mod probe;
pub mod process;
pub mod reconcile;
pub mod render;
pub mod resolve;
pub mod revocations;
pub mod status;
pub mod stealing;
pub mod up;

pub use config::{ConfigError, EdgeConfig, Mode};
pub use controller::Controller;
pub use error::EdgeError;
pub use status::EdgeStatus;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `reelay edge --config FILE`: runs until SIGINT/SIGTERM. SIGHUP re-reads the file.
pub async fn run(config_path: &Path) -> Result<(), EdgeError> {
    let cfg = EdgeConfig::load(config_path)?;
    run_with(cfg, Some(config_path.to_path_buf()), shutdown_signal()).await
}

/// Runs an edge from a configuration built in code — how a benchmark runs the same clusters
/// behind each [`Mode`] in turn. Returns once `shutdown` resolves and nginx has stopped.
pub async fn run_with(
    cfg: EdgeConfig,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EdgeError> {
    let mut cfg = cfg;
    cfg.validate()?;
    cfg.resolve_relative_paths(Path::new("."));
    let control = cfg.control_listen;
    let listener = tokio::net::TcpListener::bind(control)
        .await
        .map_err(|source| EdgeError::Listen {
            addr: control,
            source,
        })?;
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    let ctl = Controller::new(cfg, config_path)?;
    ctl.prepare().await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The controller answers before nginx starts, so that the first submission can be placed.
    let http = {
        let app = api::router(ctl.clone());
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(controller::stopped(stop))
                .await
        })
    };
    let supervisor = tokio::spawn(ctl.supervisor().clone().run(stop_rx.clone()));
    {
        let cfg = ctl.config();
        tracing::info!(
            listen = %cfg.listen,
            control_listen = %cfg.control_listen,
            mode = cfg.mode.as_str(),
            clusters = cfg.clusters.len(),
            work_dir = %cfg.work_dir.display(),
            "reelay edge starting"
        );
    }
    ctl.confirm_start().await;
    ctl.spawn_background();

    let hup = {
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: re-reading edge.toml");
                let _ = ctl.reload_config(false).await;
            }
        })
    };

    shutdown.await;
    tracing::info!("reelay edge stopping: nginx finishes in-flight requests, then exits");
    hup.abort();
    ctl.stop_background();
    let _ = stop_tx.send(true);
    let _ = supervisor.await;
    let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    tracing::info!("reelay edge stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// What `--check-config` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub config: EdgeConfig,
    /// nginx.conf as it would be rendered with every cluster healthy (names not resolved).
    pub rendered: String,
    /// `None` when the nginx binary could not be run, so only the TOML and template were checked.
    pub nginx_accepted: Option<bool>,
    /// Allowed but risky settings (no [auth] or no TLS beyond loopback).
    pub warnings: Vec<String>,
}

/// Validates edge.toml and renders the template without starting or resolving anything.
/// When the configured nginx binary is available, the rendered file is also put through
/// `nginx -t` in a scratch directory; host names are replaced by loopback placeholders there,
/// since resolving them is the running controller's job.
pub async fn check_config(path: &Path) -> Result<CheckReport, EdgeError> {
    let cfg = EdgeConfig::load(path)?;
    let views: Vec<render::ClusterView> = cfg
        .clusters
        .iter()
        .map(|c| {
            let addresses = match (&c.addresses, c.target()) {
                (Some(a), _) => a.clone(),
                (None, Ok(t)) => vec![std::net::SocketAddr::new(
                    t.host
                        .parse()
                        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
                    t.port,
                )],
                (None, Err(_)) => vec![],
            };
            render::ClusterView {
                addresses,
                reachable: true,
                accepting: true,
            }
        })
        .collect();
    let user = process::is_root().then(|| {
        cfg.nginx_user
            .clone()
            .unwrap_or_else(nginx::default_nginx_user)
    });
    let desired = render::Desired::build(&cfg, &views, false, user.clone());
    let rendered = render::render(&desired, 1)?;

    let nginx_runs = tokio::process::Command::new(&cfg.nginx)
        .arg("-v")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok();
    let nginx_accepted = if nginx_runs {
        let scratch = tempfile::tempdir().map_err(EdgeError::Scratch)?;
        let mut scratch_cfg = cfg.clone();
        scratch_cfg.work_dir = scratch.path().to_path_buf();
        // nginx_user names a user of the target machine, which need not exist here.
        let scratch_user = user.as_ref().map(|_| nginx::default_nginx_user());
        let d = render::Desired::build(&scratch_cfg, &views, false, scratch_user);
        let text = render::render(&d, 1)?;
        nginx::test_config_text(&cfg.nginx, scratch.path(), &text).await?;
        Some(true)
    } else {
        None
    };
    Ok(CheckReport {
        warnings: cfg.warnings(),
        config: cfg,
        rendered,
        nginx_accepted,
    })
}
