//! The control plane: what the edge knows about each cluster, and keeping nginx in line with it.
//!
//! Probing, resolving and placing only touch in-memory state under a short lock; turning that
//! state into an nginx reload is the reconciler's job alone, serialized and rate-limited, so a
//! flapping cluster costs at most one reload per `reload_min_interval_ms` and two events in the
//! same instant cost one reload.

use crate::config::{ClusterConfig, EdgeConfig};
use crate::health::{Health, HealthTracker};
use crate::nginx::{Nginx, NginxError, Supervisor};
use crate::placement::{self, Candidate, Load, Policy};
use crate::render::{self, ClusterView, Desired};
use crate::resolve;
use crate::status::{unix_ms, CheckRecord, ClusterStatus, EdgeStatus, ReloadRecord};
use reelay_protocol::LoadReport;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// How long nginx may take to serve a new generation after SIGHUP before the reload counts as
/// failed (it normally takes milliseconds; a reload that cannot bind a new listen address never
/// completes).
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Placements never confirmed by a load reading (the cluster stopped answering) are forgotten
/// after this long, so the pending count cannot grow without bound.
const PENDING_MAX_AGE: Duration = Duration::from_secs(120);

pub(crate) struct ClusterRuntime {
    pub name: String,
    pub addresses: Vec<SocketAddr>,
    pub resolve_error: Option<String>,
    pub health: HealthTracker,
    pub last_check: Option<CheckRecord>,
    /// When a health check last passed.
    pub last_ok: Option<Instant>,
    pub load: Option<LoadReport>,
    pub load_read_at: Option<Instant>,
    pub pending: Vec<Instant>,
    pub placements: u64,
    pub checks_ok: u64,
    pub checks_failed: u64,
}

impl ClusterRuntime {
    fn new(c: &ClusterConfig, cfg: &EdgeConfig) -> Self {
        ClusterRuntime {
            name: c.name.clone(),
            addresses: Vec::new(),
            resolve_error: None,
            health: HealthTracker::new(cfg.health.fall, cfg.health.rise),
            last_check: None,
            last_ok: None,
            load: None,
            load_read_at: None,
            pending: Vec::new(),
            placements: 0,
            checks_ok: 0,
            checks_failed: 0,
        }
    }

    /// Owned routes are served unless the checks say down (an unprobed cluster gets the benefit
    /// of the doubt: the first probe follows within one interval).
    pub fn reachable(&self) -> bool {
        self.health.state() != Health::Down
    }

    pub fn accepting(&self) -> bool {
        self.reachable() && self.load.as_ref().is_none_or(|l| l.accepting)
    }

    fn view(&self) -> ClusterView {
        ClusterView {
            addresses: self.addresses.clone(),
            reachable: self.reachable(),
            accepting: self.accepting(),
        }
    }
}

/// Reload latency buckets, in seconds.
pub(crate) const RELOAD_BUCKETS: [f64; 8] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

pub(crate) struct Inner {
    pub cfg: Arc<EdgeConfig>,
    pub clusters: Vec<ClusterRuntime>,
    pub generation: u64,
    pub last_reload: Option<ReloadRecord>,
    pub reloads: u64,
    pub failed_reloads: u64,
    pub reload_bucket_counts: [u64; RELOAD_BUCKETS.len()],
    pub reload_seconds_sum: f64,
    pub config_error: Option<String>,
    pub fail_open: bool,
    epoch: u64,
}

impl Inner {
    fn cluster_mut(&mut self, name: &str) -> Option<&mut ClusterRuntime> {
        self.clusters.iter_mut().find(|c| c.name == name)
    }

    fn candidates(&self, now: Instant) -> Vec<Candidate> {
        self.cfg
            .clusters
            .iter()
            .zip(&self.clusters)
            .map(|(c, rt)| Candidate {
                load: rt.load.as_ref().map(Load::from),
                age_seconds: rt
                    .load_read_at
                    .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64()),
                pending: rt
                    .pending
                    .iter()
                    .filter(|p| now.duration_since(**p) < PENDING_MAX_AGE)
                    .count() as u32,
                cost: c.cost,
                local: self.cfg.local_cluster.as_deref() == Some(c.name.as_str()),
                eligible: rt.accepting(),
            })
            .collect()
    }
}

#[derive(Default)]
struct ApplyState {
    applied: Option<Desired>,
    /// The last configuration nginx refused, with the record of that refusal.
    rejected: Option<(Desired, ReloadRecord)>,
    last_attempt: Option<Instant>,
}

/// The outcome of one reconcile pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// nginx already serves what the state asks for.
    Unchanged,
    Reloaded(ReloadRecord),
    Failed(ReloadRecord),
}

pub struct Controller {
    inner: Mutex<Inner>,
    changed: Notify,
    probes: reqwest::Client,
    /// No connection reuse: a kept-alive connection would stay on an old nginx worker and keep
    /// answering the old generation.
    fresh: reqwest::Client,
    pub(crate) nginx: Nginx,
    pub(crate) supervisor: Arc<Supervisor>,
    config_path: Option<PathBuf>,
    apply_state: tokio::sync::Mutex<ApplyState>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// `[auth]`: token checks and the revocations carried between clusters.
    pub(crate) auth: Option<Arc<crate::auth::EdgeAuth>>,
    pub(crate) revocations: Arc<crate::revocations::RevocationSync>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NeedsRestart(String),
    #[error("the edge was not started from a config file")]
    NoFile,
}

impl Controller {
    pub fn new(
        cfg: EdgeConfig,
        config_path: Option<PathBuf>,
    ) -> Result<Arc<Self>, crate::EdgeError> {
        let probes = upstream_tls(
            reqwest::Client::builder()
                .no_proxy()
                .pool_idle_timeout(Duration::from_secs(30)),
            &cfg,
        )?
        .build()
        .map_err(|e| crate::EdgeError::Http(e.to_string()))?;
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            // Only ever asks this edge's own nginx, on loopback, which generation it serves.
            .danger_accept_invalid_certs(cfg.tls_cert.is_some())
            .build()
            .map_err(|e| crate::EdgeError::Http(e.to_string()))?;
        let nginx = Nginx::new(&cfg.nginx, &cfg.work_dir);
        let auth = match &cfg.auth {
            Some(a) => Some(Arc::new(crate::auth::EdgeAuth::load(a).map_err(|e| {
                crate::EdgeError::Other(format!("[auth] trusted_keys: {e}"))
            })?)),
            None => None,
        };
        let clusters = cfg
            .clusters
            .iter()
            .map(|c| ClusterRuntime::new(c, &cfg))
            .collect();
        Ok(Arc::new(Controller {
            inner: Mutex::new(Inner {
                cfg: Arc::new(cfg),
                clusters,
                generation: 0,
                last_reload: None,
                reloads: 0,
                failed_reloads: 0,
                reload_bucket_counts: [0; RELOAD_BUCKETS.len()],
                reload_seconds_sum: 0.0,
                config_error: None,
                fail_open: false,
                epoch: 0,
            }),
            changed: Notify::new(),
            probes,
            fresh,
            supervisor: Supervisor::new(nginx.clone()),
            nginx,
            config_path,
            apply_state: tokio::sync::Mutex::new(ApplyState::default()),
            tasks: Mutex::new(Vec::new()),
            auth,
            revocations: Arc::new(crate::revocations::RevocationSync::default()),
        }))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the state consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> Arc<EdgeConfig> {
        self.lock().cfg.clone()
    }

    /// Directories, first resolution, and a first configuration that nginx accepts. Nothing is
    /// running yet, so there is no last good configuration to keep: a rejected file is fatal.
    pub async fn prepare(&self) -> Result<(), crate::EdgeError> {
        self.nginx.prepare_dirs()?;
        self.resolve_all().await;
        // Collect the revocations every reachable cluster holds before serving anything, so a
        // restarted edge does not accept a revoked token while it catches up.
        if let Some(auth) = &self.auth {
            self.revocations.round(self, auth).await;
        }
        let desired = self.desired();
        let text = render::render(&desired, 1)?;
        let staged = self.nginx.stage(&text).await?;
        self.nginx.install(&staged).await?;
        let mut st = self.apply_state.lock().await;
        st.applied = Some(desired);
        st.last_attempt = Some(Instant::now());
        Ok(())
    }

    /// Waits until the freshly started (or adopted) master serves the first generation.
    pub async fn confirm_start(&self) {
        let t0 = Instant::now();
        let result = self.wait_for_generation(1, APPLY_TIMEOUT).await;
        let record = ReloadRecord {
            generation: 1,
            ok: result.is_ok(),
            error: result.as_ref().err().cloned(),
            reason: "start".to_string(),
            at_unix_ms: unix_ms(SystemTime::now()),
            latency_ms: t0.elapsed().as_millis() as u64,
        };
        match &result {
            Ok(()) => tracing::info!(
                latency_ms = record.latency_ms,
                "nginx is serving generation 1"
            ),
            Err(e) => {
                tracing::error!(error = %e, "nginx did not come up with the first configuration")
            }
        }
        let ok = record.ok;
        self.record_reload(record, t0.elapsed(), ok);
        // Generation 1 is installed either way; the supervisor keeps retrying to run it.
        self.lock().generation = 1;
    }

    /// Starts probing, resolving and reconciling.
    pub fn spawn_background(self: &Arc<Self>) {
        let epoch = self.lock().epoch;
        self.spawn_pollers(epoch);
        let me = self.clone();
        let resolver = tokio::spawn(async move { me.resolve_loop().await });
        let me = self.clone();
        let reconciler = tokio::spawn(async move { me.reconcile_loop().await });
        self.tasks_lock().extend([resolver, reconciler]);
        if let Some(auth) = self.auth.clone() {
            let every = Duration::from_millis(
                self.config()
                    .auth
                    .as_ref()
                    .map_or(1000, |a| a.revocation_sync_ms),
            );
            let sync = tokio::spawn(self.revocations.clone().run(self.clone(), auth, every));
            self.tasks_lock().push(sync);
        }
    }

    fn tasks_lock(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stop_background(&self) {
        for t in self.tasks_lock().drain(..) {
            t.abort();
        }
    }

    fn spawn_pollers(self: &Arc<Self>, epoch: u64) {
        let names: Vec<String> = self
            .lock()
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let mut tasks = self.tasks_lock();
        tasks.retain(|t| !t.is_finished());
        for name in names {
            let me = self.clone();
            tasks.push(tokio::spawn(async move { me.poll_loop(name, epoch).await }));
        }
    }

    async fn poll_loop(self: Arc<Self>, name: String, epoch: u64) {
        let interval = Duration::from_millis(self.config().health.interval_ms);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.lock().epoch != epoch {
                return;
            }
            self.probe(&name).await;
        }
    }

    async fn resolve_loop(self: Arc<Self>) {
        loop {
            let every = Duration::from_millis(self.config().health.resolve_interval_ms);
            tokio::time::sleep(every).await;
            self.resolve_all().await;
        }
    }

    async fn reconcile_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.changed.notified() => {}
                // A safety net: nothing should be missed, but a stuck state must not last.
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
            self.apply("cluster addresses or health changed", false)
                .await;
        }
    }

    /// Re-resolves every cluster; a failed resolution keeps the previous addresses (a DNS
    /// hiccup must not take a healthy cluster out of nginx).
    pub async fn resolve_all(&self) {
        let cfg = self.config();
        for c in &cfg.clusters {
            let result = resolve::resolve(c, cfg.hosts_file.as_deref()).await;
            let mut inner = self.lock();
            let Some(rt) = inner.cluster_mut(&c.name) else {
                continue;
            };
            match result {
                Ok(addrs) => {
                    rt.resolve_error = None;
                    if addrs != rt.addresses {
                        tracing::info!(
                            cluster = %c.name,
                            from = ?rt.addresses,
                            to = ?addrs,
                            "cluster addresses changed"
                        );
                        rt.addresses = addrs;
                        self.changed.notify_one();
                    }
                }
                Err(e) => {
                    if rt.resolve_error.is_none() {
                        tracing::warn!(cluster = %c.name, error = %e, "cannot resolve the cluster; keeping its last addresses");
                    }
                    rt.resolve_error = Some(e.to_string());
                }
            }
        }
    }

    /// One health check: `/readyz` and `/v1/load` on every address of the cluster.
    pub async fn probe(&self, name: &str) {
        let (addrs, host, timeout) = {
            let inner = self.lock();
            let Some(rt) = inner.clusters.iter().find(|c| c.name == name) else {
                return;
            };
            let host = inner
                .cfg
                .cluster(name)
                .and_then(|c| c.target().ok())
                .map(|t| format!("{}:{}", t.host, t.port))
                .unwrap_or_default();
            (
                rt.addresses.clone(),
                host,
                Duration::from_millis(inner.cfg.health.timeout_ms),
            )
        };
        let started = Instant::now();
        let (ok, error, load) = if addrs.is_empty() {
            (false, Some("no address resolved".to_string()), None)
        } else {
            let results = futures::future::join_all(
                addrs.iter().map(|a| self.probe_address(*a, &host, timeout)),
            )
            .await;
            let load = results.iter().find_map(|r| r.load.clone());
            match results.iter().find(|r| r.ok) {
                Some(_) => (true, None, load),
                None => (false, results.into_iter().find_map(|r| r.error), load),
            }
        };
        self.record_probe(name, started, ok, error, load);
    }

    async fn probe_address(&self, addr: SocketAddr, host: &str, timeout: Duration) -> AddrProbe {
        let get = |path: &str| {
            self.probes
                .get(format!("{}://{addr}{path}", self.upstream_scheme()))
                .header(reqwest::header::HOST, host)
                .timeout(timeout)
                .send()
        };
        let (ready, load) = tokio::join!(get("/readyz"), async {
            let resp = get("/v1/load").await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            resp.json::<LoadReport>().await.ok()
        });
        let draining = load.as_ref().is_some_and(|l| !l.accepting);
        let (ok, error) = match ready {
            Ok(r) if r.status().is_success() => (true, None),
            // Shutting down: /readyz says no, but the API still serves its jobs until it exits.
            Ok(_) if draining => (true, None),
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                let body: String = body.chars().take(200).collect();
                (
                    false,
                    Some(format!("{addr}: /readyz answered {status}: {body}")),
                )
            }
            Err(e) if e.is_timeout() => (false, Some(format!("{addr}: /readyz timed out"))),
            Err(e) => (false, Some(format!("{addr}: /readyz: {}", error_chain(&e)))),
        };
        AddrProbe { ok, error, load }
    }

    fn record_probe(
        &self,
        name: &str,
        started: Instant,
        ok: bool,
        error: Option<String>,
        load: Option<LoadReport>,
    ) {
        let mut inner = self.lock();
        let settle = Duration::from_millis(inner.cfg.placement.settle_ms);
        let Some(rt) = inner.cluster_mut(name) else {
            return;
        };
        let before = (rt.reachable(), rt.accepting());
        rt.last_check = Some(CheckRecord {
            at_unix_ms: unix_ms(SystemTime::now()),
            ok,
            latency_ms: started.elapsed().as_millis() as u64,
            error: error.clone(),
        });
        if ok {
            rt.checks_ok += 1;
            rt.last_ok = Some(Instant::now());
        } else {
            rt.checks_failed += 1;
        }
        match rt.health.observe(ok) {
            Some(Health::Down) => {
                tracing::warn!(
                    cluster = name,
                    error = error.as_deref().unwrap_or(""),
                    "cluster is DOWN"
                )
            }
            Some(Health::Up) => tracing::info!(cluster = name, "cluster is up"),
            _ => {}
        }
        if let Some(load) = load {
            if rt.load.as_ref().map(|l| l.accepting) != Some(load.accepting) && !load.accepting {
                tracing::warn!(
                    cluster = name,
                    "cluster is not accepting new jobs (draining)"
                );
            }
            rt.load = Some(load);
            rt.load_read_at = Some(started);
            // Jobs placed well before this reading started are in it now; later ones may not be.
            rt.pending
                .retain(|p| p.checked_add(settle).is_none_or(|t| t > started));
        }
        let now = Instant::now();
        rt.pending
            .retain(|p| now.duration_since(*p) < PENDING_MAX_AGE);
        if (rt.reachable(), rt.accepting()) != before {
            self.changed.notify_one();
        }
    }

    /// The placement decision for one submission (the auth_request answer); `record` counts
    /// it as pending load on the chosen cluster.
    pub fn place(&self, record: bool) -> Option<String> {
        let mut inner = self.lock();
        let now = Instant::now();
        let mut cands = inner.candidates(now);
        if !cands.iter().any(|c| c.eligible) {
            for c in &mut cands {
                c.eligible = true;
            }
        }
        let policy = Policy::from(&inner.cfg.placement);
        let i = placement::choose(&cands, &policy)?;
        let rt = inner.clusters.get_mut(i)?;
        if record {
            rt.pending.push(now);
            rt.placements += 1;
        }
        Some(rt.name.clone())
    }

    /// What nginx.conf should say now; also tracks (and logs) fail-open transitions.
    pub fn desired(&self) -> Desired {
        let mut inner = self.lock();
        let views: Vec<ClusterView> = inner.clusters.iter().map(|c| c.view()).collect();
        let fail_open = !views.iter().any(|v| v.reachable && v.accepting);
        if fail_open != inner.fail_open {
            if fail_open {
                tracing::error!("no cluster is up and accepting: failing open to all of them");
            } else {
                tracing::info!("a cluster is up again: fail-open ends");
            }
            inner.fail_open = fail_open;
        }
        let user = crate::process::is_root().then(|| {
            inner
                .cfg
                .nginx_user
                .clone()
                .unwrap_or_else(default_nginx_user)
        });
        Desired::build(&inner.cfg, &views, fail_open, user)
    }

    /// Renders, tests and (if it changed, or `force`) reloads. Never faster than
    /// `reload_min_interval_ms`; a configuration nginx rejected is not retried until the state
    /// changes again. The served configuration is untouched unless `nginx -t` accepts the new one.
    pub async fn apply(&self, reason: &str, force: bool) -> Applied {
        let mut st = self.apply_state.lock().await;
        let min_interval = Duration::from_millis(self.config().reload_min_interval_ms);
        if let Some(last) = st.last_attempt {
            let since = last.elapsed();
            if since < min_interval {
                tokio::time::sleep(min_interval - since).await;
            }
        }
        // Computed after the wait, so that every change that arrived meanwhile is included.
        let desired = self.desired();
        if !force {
            if st.applied.as_ref() == Some(&desired) {
                return Applied::Unchanged;
            }
            // Already refused (perhaps by a concurrent pass): the caller hears why, again.
            if let Some((_, record)) = st.rejected.as_ref().filter(|(d, _)| *d == desired) {
                return Applied::Failed(record.clone());
            }
        }
        st.last_attempt = Some(Instant::now());
        let t0 = Instant::now();
        let generation = self.lock().generation + 1;
        let result = self.try_apply(&desired, generation).await;
        let elapsed = t0.elapsed();
        let record = ReloadRecord {
            generation,
            ok: result.is_ok(),
            error: result.as_ref().err().cloned(),
            reason: reason.to_string(),
            at_unix_ms: unix_ms(SystemTime::now()),
            latency_ms: elapsed.as_millis() as u64,
        };
        match &result {
            Ok(()) => {
                tracing::info!(
                    generation,
                    reason,
                    latency_ms = record.latency_ms,
                    "nginx reloaded"
                );
                st.applied = Some(desired);
                st.rejected = None;
            }
            Err(e) => {
                tracing::error!(generation, reason, error = %e, "configuration not applied; nginx keeps serving the previous one");
                st.rejected = Some((desired, record.clone()));
            }
        }
        self.record_reload(record.clone(), elapsed, result.is_ok());
        if result.is_ok() {
            Applied::Reloaded(record)
        } else {
            Applied::Failed(record)
        }
    }

    async fn try_apply(&self, desired: &Desired, generation: u64) -> Result<(), String> {
        let text = render::render(desired, generation).map_err(|e| e.to_string())?;
        let staged = self.nginx.stage(&text).await.map_err(|e| e.to_string())?;
        self.nginx
            .install(&staged)
            .await
            .map_err(|e| e.to_string())?;
        let old_workers = self
            .supervisor
            .info()
            .pid
            .map(crate::process::children)
            .unwrap_or_default();
        match self.supervisor.reload() {
            Ok(()) => {
                let deadline = Instant::now() + APPLY_TIMEOUT;
                self.wait_for_generation(generation, APPLY_TIMEOUT).await?;
                self.wait_for_old_workers(&old_workers, deadline).await;
                Ok(())
            }
            // The supervisor starts the next master from the installed file.
            Err(NginxError::NotRunning) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Until the master has told the previous workers to finish, they still accept new
    /// connections with the previous configuration; a reload is only complete once they have
    /// stopped accepting ("worker process is shutting down") or exited.
    async fn wait_for_old_workers(&self, old: &[u32], deadline: Instant) {
        while Instant::now() < deadline {
            let accepting = old.iter().any(|pid| {
                crate::process::alive(*pid)
                    && crate::process::cmdline(*pid).is_some_and(|c| {
                        c.contains("worker process") && !c.contains("shutting down")
                    })
            });
            if !accepting {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!("previous nginx workers still accept connections after the reload");
    }

    fn record_reload(&self, record: ReloadRecord, elapsed: Duration, success: bool) {
        let mut inner = self.lock();
        if success {
            inner.generation = record.generation;
            inner.reloads += 1;
            let secs = elapsed.as_secs_f64();
            inner.reload_seconds_sum += secs;
            for (i, le) in RELOAD_BUCKETS.iter().enumerate() {
                if secs <= *le {
                    inner.reload_bucket_counts[i] += 1;
                }
            }
        } else {
            inner.failed_reloads += 1;
        }
        inner.last_reload = Some(record);
    }

    /// Polls nginx (new connection each time, so a new worker answers) until it serves
    /// `generation`.
    async fn wait_for_generation(&self, generation: u64, timeout: Duration) -> Result<(), String> {
        let listen = render::connectable(self.config().listen);
        let scheme = if self.config().tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{listen}/_reelay/generation");
        let want = generation.to_string();
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            match self
                .fresh
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                Ok(r) => match r.text().await {
                    Ok(t) if t.trim() == want => return Ok(()),
                    Ok(t) => last = format!("still serving generation {}", t.trim()),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = error_chain(&e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "nginx did not serve generation {generation} within {}s ({last}); see {}",
            timeout.as_secs(),
            self.nginx.work_dir.join("logs/error.log").display()
        ))
    }

    /// Re-reads edge.toml. Settings the running process is built around (its own listener, the
    /// work dir, the nginx binary) cannot change without a restart and are refused.
    pub async fn reload_config(
        self: &Arc<Self>,
        force: bool,
    ) -> Result<Applied, ReloadConfigError> {
        let path = self.config_path.clone().ok_or(ReloadConfigError::NoFile)?;
        let new = match EdgeConfig::load(&path) {
            Ok(c) => c,
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "edge.toml not reloaded; keeping the running configuration");
                self.lock().config_error = Some(msg.clone());
                return Err(ReloadConfigError::Invalid(msg));
            }
        };
        let old = self.config();
        for (what, same) in [
            ("control_listen", new.control_listen == old.control_listen),
            ("work_dir", new.work_dir == old.work_dir),
            ("nginx", new.nginx == old.nginx),
            ("[auth]", new.auth == old.auth),
        ] {
            if !same {
                let msg = format!("changing {what} needs a restart of reelay edge");
                self.lock().config_error = Some(msg.clone());
                return Err(ReloadConfigError::NeedsRestart(msg));
            }
        }
        let epoch = {
            let mut inner = self.lock();
            let mut old_rt: Vec<ClusterRuntime> = std::mem::take(&mut inner.clusters);
            inner.clusters = new
                .clusters
                .iter()
                .map(|c| match old_rt.iter().position(|r| r.name == c.name) {
                    Some(i) => {
                        let mut rt = old_rt.swap_remove(i);
                        rt.health.retune(new.health.fall, new.health.rise);
                        rt
                    }
                    None => ClusterRuntime::new(c, &new),
                })
                .collect();
            inner.cfg = Arc::new(new);
            inner.config_error = None;
            inner.epoch += 1;
            inner.epoch
        };
        tracing::info!("edge.toml reloaded");
        self.spawn_pollers(epoch);
        self.resolve_all().await;
        Ok(self.apply("edge.toml reloaded", force).await)
    }

    pub fn status(&self) -> EdgeStatus {
        let nginx = self.supervisor.info();
        let inner = self.lock();
        let now = Instant::now();
        let cands = inner.candidates(now);
        let policy = Policy::from(&inner.cfg.placement);
        let has_local = inner.cfg.local_cluster.is_some();
        let clusters = inner
            .cfg
            .clusters
            .iter()
            .zip(&inner.clusters)
            .zip(&cands)
            .map(|((c, rt), cand)| {
                let score = placement::score(cand, &policy, has_local);
                ClusterStatus {
                    name: c.name.clone(),
                    url: c.url.clone(),
                    addresses: rt.addresses.iter().map(|a| a.to_string()).collect(),
                    resolve_error: rt.resolve_error.clone(),
                    health: rt.health.state(),
                    accepting: rt.accepting(),
                    last_check: rt.last_check.clone(),
                    last_seen_age_ms: rt
                        .last_ok
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    load: rt.load.clone(),
                    load_age_ms: rt
                        .load_read_at
                        .map(|t| now.duration_since(t).as_millis() as u64),
                    pending_placements: cand.pending,
                    placements: rt.placements,
                    estimated_start_seconds: score.estimated_start_seconds,
                    score: score.score,
                    weight: c.weight,
                    cost: c.cost,
                    local: cand.local,
                }
            })
            .collect();
        EdgeStatus {
            mode: inner.cfg.mode,
            listen: inner.cfg.listen.to_string(),
            control_listen: inner.cfg.control_listen.to_string(),
            generation: inner.generation,
            fail_open: inner.fail_open,
            last_reload: inner.last_reload.clone(),
            reloads: inner.reloads,
            failed_reloads: inner.failed_reloads,
            config_error: inner.config_error.clone(),
            nginx,
            clusters,
        }
    }

    /// Which clusters a merged listing asks (all of them when failing open), and which it
    /// leaves out because the health checks say they are down: asking those would only make
    /// every listing wait for their timeouts. The listing names the left-out ones as missing.
    pub(crate) fn listing_targets(&self) -> ListingTargets {
        let inner = self.lock();
        let any_up = inner.clusters.iter().any(|c| c.reachable());
        let mut targets = ListingTargets::default();
        for (c, rt) in inner.cfg.clusters.iter().zip(&inner.clusters) {
            if any_up && !rt.reachable() {
                targets.down.push(c.name.clone());
                continue;
            }
            let host = c
                .target()
                .map(|t| format!("{}:{}", t.host, t.port))
                .unwrap_or_default();
            targets
                .ask
                .push((c.name.clone(), rt.addresses.clone(), host));
        }
        targets
    }

    /// Every cluster with its addresses and Host header, reachable or not (revocations are
    /// offered to all of them; an unreachable one simply fails this round).
    pub(crate) fn all_targets(&self) -> Vec<(String, Vec<SocketAddr>, String)> {
        let inner = self.lock();
        inner
            .cfg
            .clusters
            .iter()
            .zip(&inner.clusters)
            .map(|(c, rt)| {
                let host = c
                    .target()
                    .map(|t| format!("{}:{}", t.host, t.port))
                    .unwrap_or_default();
                (c.name.clone(), rt.addresses.clone(), host)
            })
            .collect()
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.probes
    }

    /// `https` when the clusters are reached over TLS (all or none, checked in the config).
    pub(crate) fn upstream_scheme(&self) -> &'static str {
        if self
            .config()
            .clusters
            .iter()
            .any(|c| c.url.starts_with("https://"))
        {
            "https"
        } else {
            "http"
        }
    }
}

/// The controller's own requests to `https://` clusters (health probes, the merged listing) use
/// the same client certificate and CA as nginx. They connect to resolved addresses, so the
/// certificate's name is not compared with the address; its chain to `upstream_ca` is checked.
fn upstream_tls(
    mut b: reqwest::ClientBuilder,
    cfg: &EdgeConfig,
) -> Result<reqwest::ClientBuilder, crate::EdgeError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| crate::EdgeError::Http(format!("{}: {e}", p.display())))
    };
    if let Some(ca) = &cfg.upstream_ca {
        let pem = read(ca)?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| crate::EdgeError::Http(format!("{}: {e}", ca.display())))?;
        b = b
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .danger_accept_invalid_hostnames(true);
    }
    if let (Some(cert), Some(key)) = (&cfg.upstream_client_cert, &cfg.upstream_client_key) {
        let mut pem = read(cert)?;
        pem.push(b'\n');
        pem.extend(read(key)?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| crate::EdgeError::Http(format!("{}: {e}", cert.display())))?;
        b = b.identity(identity);
    }
    Ok(b)
}

/// See [`Controller::listing_targets`].
#[derive(Debug, Default)]
pub(crate) struct ListingTargets {
    /// Name, addresses and `Host` of each cluster to ask.
    pub ask: Vec<(String, Vec<SocketAddr>, String)>,
    /// Clusters not asked because they are down.
    pub down: Vec<String>,
}

struct AddrProbe {
    ok: bool,
    error: Option<String>,
    load: Option<LoadReport>,
}

/// reqwest's top-level message hides the cause ("error sending request"); the chain names it.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    msg
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

/// Waits for `stop` to become true (or its sender to go away).
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> Arc<Controller> {
        let cfg = EdgeConfig::parse(
            r#"
listen = "127.0.0.1:1"
control_listen = "127.0.0.1:2"
work_dir = "/tmp/reelay-edge-controller-test"
[[clusters]]
name = "aws"
url = "http://127.0.0.1:3"
[[clusters]]
name = "gcp"
url = "http://127.0.0.1:4"
"#,
        )
        .unwrap();
        Controller::new(cfg, None).unwrap()
    }

    fn load(name: &str, capacity: u32, running: u32, accepting: bool) -> LoadReport {
        LoadReport {
            cluster: name.into(),
            capacity,
            running,
            queued: 0,
            backlog_seconds: 0.0,
            running_remaining_seconds: Vec::new(),
            encode_speed: None,
            accepting,
        }
    }

    #[tokio::test]
    async fn placements_stay_pending_until_a_later_reading_includes_them() {
        let ctl = controller();
        let t = Instant::now();
        ctl.record_probe("aws", t, true, None, Some(load("aws", 1, 0, true)));
        ctl.record_probe("gcp", t, true, None, Some(load("gcp", 1, 0, true)));
        let placed: Vec<String> = (0..4).filter_map(|_| ctl.place(true)).collect();
        assert_eq!(
            placed,
            ["aws", "gcp", "aws", "gcp"],
            "pending load spreads a burst"
        );
        assert_eq!(ctl.status().clusters[0].pending_placements, 2);
        // A reading that started right away may predate the jobs: they stay pending...
        ctl.record_probe(
            "aws",
            Instant::now(),
            true,
            None,
            Some(load("aws", 1, 1, true)),
        );
        assert_eq!(ctl.status().clusters[0].pending_placements, 2);
        // ...one started after the settle time includes them.
        let later = Instant::now() + Duration::from_secs(2);
        ctl.record_probe("aws", later, true, None, Some(load("aws", 1, 1, true)));
        let s = ctl.status();
        assert_eq!(s.clusters[0].pending_placements, 0);
        assert_eq!(s.clusters[0].placements, 2);
        // Requests that create no job are routed but not counted.
        ctl.place(false);
        assert_eq!(
            ctl.status()
                .clusters
                .iter()
                .map(|c| c.placements)
                .sum::<u64>(),
            4
        );
    }

    #[tokio::test]
    async fn draining_clusters_keep_their_routes_but_get_no_jobs() {
        let ctl = controller();
        let t = Instant::now();
        ctl.record_probe("aws", t, true, None, Some(load("aws", 8, 0, false)));
        ctl.record_probe("gcp", t, true, None, Some(load("gcp", 1, 1, true)));
        let d = ctl.desired();
        assert!(d.clusters[0].reachable && !d.clusters[0].accepting);
        assert!(!d.fail_open);
        assert_eq!(ctl.place(true).as_deref(), Some("gcp"));
    }

    #[tokio::test]
    async fn every_cluster_down_fails_open() {
        let ctl = controller();
        let t = Instant::now();
        for _ in 0..2 {
            ctl.record_probe("aws", t, false, Some("refused".into()), None);
            ctl.record_probe("gcp", t, false, Some("refused".into()), None);
        }
        let d = ctl.desired();
        assert!(d.fail_open);
        assert!(d.clusters.iter().all(|c| c.reachable && c.accepting));
        let s = ctl.status();
        assert!(s.fail_open);
        assert_eq!(s.clusters[0].health, Health::Down);
        assert_eq!(s.clusters[0].last_seen_age_ms, None, "never seen up");
        assert_eq!(
            s.clusters[0].last_check.as_ref().unwrap().error.as_deref(),
            Some("refused")
        );
        assert!(
            ctl.place(true).is_some(),
            "still answers: any cluster beats none"
        );
        // One cluster back ends it.
        ctl.record_probe("gcp", t, true, None, None);
        ctl.record_probe("gcp", t, true, None, None);
        assert!(!ctl.desired().fail_open);
        assert_eq!(ctl.place(true).as_deref(), Some("gcp"));
    }

    #[tokio::test]
    async fn a_down_cluster_says_when_it_was_last_seen() {
        let ctl = controller();
        let t = Instant::now();
        ctl.record_probe("aws", t, true, None, Some(load("aws", 3, 3, true)));
        std::thread::sleep(Duration::from_millis(30));
        for _ in 0..2 {
            ctl.record_probe("aws", t, false, Some("refused".into()), None);
        }
        let aws = ctl.status().clusters.remove(0);
        assert_eq!(aws.health, Health::Down);
        let age = aws.last_seen_age_ms.expect("seen once");
        assert!((30..5_000).contains(&age), "{age}");
        // The last load reading is still there (with its age); the dashboard does not show it.
        assert_eq!(aws.load.map(|l| l.running), Some(3));
    }
}
