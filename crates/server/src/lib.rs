//! A reelay cluster: the HTTP API, the worker loop, object storage and configuration.

pub mod admission;
pub mod api;
pub mod auth;
pub mod body;
pub mod config;
pub mod conn_limit;
pub mod context;
pub mod cors;
pub mod deadline;
pub mod error;
pub mod fetch;
pub mod identity;
pub mod key_inputs;
pub mod load;
pub mod metrics;
pub mod offer_handle;
pub mod patch_lock;
pub mod peer_io;
pub mod progressive;
pub mod retention;
pub mod serve;
pub mod side_files;
pub mod split_graph;
pub mod state;
pub mod storage;
pub mod submit_timing;
pub mod task_payloads;
pub mod tus;
pub mod uploads;
pub mod view;
pub mod webhooks;
pub mod worker;

pub use config::{Config, ServeArgs};
pub use reelay_jobs::JobStore;

use state::AppState;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("job store: {0}")]
    Store(#[from] reelay_jobs::StoreError),
    #[error("object storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Whether ffmpeg and ffprobe can be executed.
pub async fn ffmpeg_available(tools: &reelay_media::Tools) -> bool {
    let mut ok = true;
    for bin in [&tools.ffmpeg, &tools.ffprobe] {
        let st = tokio::process::Command::new(bin)
            .arg("-version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await;
        ok &= st.map(|s| s.success()).unwrap_or(false);
    }
    ok
}

/// The job store named by `database_url` (SQLite in the data dir by default); migrations run here.
pub async fn open_store(cfg: &Config) -> Result<Arc<dyn JobStore>, ServeError> {
    let default = cfg.data_dir.join("reelay.db");
    Ok(reelay_jobs::open_store(cfg.database_url.as_deref(), &default).await?)
}

/// Opens the store, storage and metrics that every role needs.
pub async fn build_state(cfg: Config, capacity: u32) -> Result<AppState, ServeError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
        ServeError::Other(format!(
            "cannot create data dir {}: {e}",
            cfg.data_dir.display()
        ))
    })?;
    let store = open_store(&cfg).await?;
    let storage = storage::Storage::open(cfg.storage.as_deref(), &cfg.data_dir)?;
    let fetcher = fetch::Fetcher::new(
        cfg.allow_private_urls,
        Duration::from_secs(cfg.fetch_timeout_seconds),
    )
    .map_err(|e| ServeError::Other(format!("HTTP client: {e}")))?;
    let identity = identity::Identity::from_config(&cfg)
        .map_err(|e| ServeError::Other(format!("identity keys: {e}")))?;
    if let Some(id) = &identity {
        id.refresh_revocations(&*store).await?;
    }
    let auth = Arc::new(auth::Guard::with_identity(
        auth::is_loopback_listen(&cfg.listen),
        cfg.rate_limit_per_minute,
        identity,
        cfg.allow_anonymous,
    ));
    let notify_key = webhooks::dispatch::load_notify_key(&cfg)
        .map_err(|e| ServeError::Other(format!("webhook notify key: {e}")))?;
    Ok(AppState {
        notify_key: Arc::new(notify_key),
        auth,
        cfg: Arc::new(cfg),
        store,
        storage,
        fetcher,
        wake: Arc::new(tokio::sync::Notify::new()),
        accepting: Arc::new(AtomicBool::new(true)),
        metrics: metrics::handle(),
        capacity,
        stopping: tokio_util::sync::CancellationToken::new(),
        patch_locks: Arc::new(patch_lock::PatchLocks::default()),
        live_hls: Arc::new(progressive::LiveCache::default()),
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Which parts of a cluster this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// API and workers in one process (the embedded default).
    Serve,
    /// HTTP API only: no encoding.
    Api,
    /// Workers only; serves /healthz, /readyz and /metrics.
    Worker,
}

/// Runs `reelay serve`: API and workers in one process.
pub async fn run_serve(args: ServeArgs) -> Result<(), ServeError> {
    run_role(Role::Serve, args).await
}

/// Applies the job store's migrations and exits (`reelay migrate`).
pub async fn run_migrate(args: ServeArgs) -> Result<(), ServeError> {
    let cfg = Config::load(&args)?;
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
        ServeError::Other(format!(
            "cannot create data dir {}: {e}",
            cfg.data_dir.display()
        ))
    })?;
    open_store(&cfg).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Every `[[steal.peers]]` entry's files (token, CA, client certificate) are read now, so a
/// missing or unusable one stops the worker at start with the setting it came from, instead of
/// the peer being left out at runtime.
fn check_peers(steal: &peer_io::StealConfig) -> Result<(), ServeError> {
    for peer in &steal.peers {
        peer_io::PeerClient::new(peer, Duration::from_secs(1), false).map_err(|e| {
            config::ConfigError::Invalid {
                setting: "steal.peers",
                message: e.to_string(),
            }
        })?;
    }
    Ok(())
}

/// Runs one role until SIGINT/SIGTERM, then drains: stop claiming and accepting, give running
/// jobs the grace period, hand back what is left.
pub async fn run_role(role: Role, args: ServeArgs) -> Result<(), ServeError> {
    let cfg = Config::load(&args)?;
    let encodes = role != Role::Api;
    if encodes {
        check_peers(&cfg.steal)?;
    }
    if encodes && !ffmpeg_available(&cfg.tools).await {
        return Err(ServeError::Other(format!(
            "cannot run {} / {}: install ffmpeg (Debian: apt-get install ffmpeg) or set [tools] in the config",
            cfg.tools.ffmpeg.display(),
            cfg.tools.ffprobe.display()
        )));
    }
    let http_opts =
        serve::HttpOptions::from_config(&cfg).map_err(|e| ServeError::Other(e.to_string()))?;
    let bind = |addr: String| async move {
        tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| ServeError::Listen { addr, source })
    };
    let listener = bind(cfg.listen.clone()).await?;
    let ops_listener = match &cfg.ops_listen {
        Some(addr) => Some(bind(addr.clone()).await?),
        None => None,
    };
    let workers = if encodes { cfg.workers as u32 } else { 0 };
    let grace = Duration::from_secs(cfg.shutdown_grace_seconds);
    let state = build_state(cfg, workers).await?;
    tracing::info!(
        role = ?role,
        listen = %state.cfg.listen,
        cluster = %state.cfg.cluster,
        workers,
        data_dir = %state.cfg.data_dir.display(),
        storage = %state.storage.description,
        tls = http_opts.tls.is_some(),
        mutual_tls = state.cfg.tls_client_ca.is_some(),
        ops_listen = state.cfg.ops_listen.as_deref().unwrap_or(""),
        "reelay is up"
    );
    if role != Role::Worker {
        state.auth.announce(&*state.store, &state.cfg.listen).await;
        if let Some(id) = state.auth.identity.clone() {
            tokio::spawn(id.run(state.store.clone(), state.stopping.clone()));
        }
        // Webhooks: every api replica reads the outbox and delivers (rows and leases keep
        // them from doing the same work twice).
        match webhooks::dispatch::Dispatcher::new(
            state.store.clone(),
            state.cfg.clone(),
            state.notify_key.clone(),
        ) {
            Ok(d) => {
                tokio::spawn(d.run(state.stopping.clone()));
            }
            Err(e) => return Err(ServeError::Other(format!("webhook HTTP client: {e}"))),
        }
        // Unused uploads expire; every API process sweeps (idempotent deletes), a PATCH that
        // began before the expiry gets the body idle timeout and a minute more to end.
        tokio::spawn(uploads::run_sweeper(
            api::uploads::uploads(&state),
            Duration::from_secs(60),
            (state.cfg.body_idle_timeout_seconds as i64 + 60) * 1000,
            state.stopping.clone(),
        ));
        // Finished jobs' objects expire (`retention`); every API process sweeps, each due job
        // claimed in the store by one of them at a time.
        tokio::spawn(retention::run_sweeper(
            state.store.clone(),
            state.storage.clone(),
            state.cfg.retention,
            state.stopping.clone(),
        ));
    }
    let pool = encodes.then(|| worker::WorkerPool::new(state.clone()));
    if let Some(p) = &pool {
        // Advertise the slots before the first /v1/load can be asked, so the edge never sees a
        // freshly started cluster as one without workers.
        let ttl = state.cfg.lease().max(Duration::from_secs(3));
        if let Err(e) = state.store.heartbeat(&p.id, workers, ttl, None, &[]).await {
            tracing::warn!(error = %e, "first worker heartbeat failed; the heartbeat loop retries");
        }
    }
    let pool_task = pool.clone().map(|p| tokio::spawn(p.run()));
    let app = match role {
        Role::Worker => api::ops_router()
            .fallback(|| async {
                error::ApiError::not_found("a worker serves only /healthz, /readyz and /metrics")
            })
            .with_state(state.clone()),
        _ => api::router(state.clone()),
    };
    let http_stop = state.stopping.clone();
    let http = tokio::spawn(serve::serve(
        listener,
        app,
        http_opts.clone(),
        http_stop.clone(),
    ));
    if let Some(ops) = ops_listener {
        // Plain HTTP: probes and Prometheus scrapes come from inside the cluster network.
        let app = api::ops_router().with_state(state.clone());
        let opts = serve::HttpOptions {
            tls: None,
            ..http_opts
        };
        tokio::spawn(serve::serve(ops, app, opts, http_stop.clone()));
    }

    shutdown_signal().await;
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: no new jobs; running jobs get the grace period"
    );
    state
        .accepting
        .store(false, std::sync::atomic::Ordering::SeqCst);
    if let (Some(pool), Some(task)) = (pool, pool_task) {
        pool.shutdown(grace, async {
            let _ = task.await;
        })
        .await;
    }
    // Stop listening; requests in flight (uploads, downloads) finish within what is left of the
    // grace period, 5 s at least (with workers, their drain may have used it all). SSE streams
    // end at once (clients reconnect).
    http_stop.cancel();
    let left = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_secs(5));
    if tokio::time::timeout(left, http).await.is_err() {
        tracing::warn!(
            "requests still open after the grace period were cut off; clients retry (Idempotency-Key)"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
