//! The control plane's wiring: one [`Fleet`] (what the edge knows about each cluster) under a
//! short lock, the [`probe`](crate::probe) and [`resolve`](crate::resolve) I/O that feeds it,
//! the [`Reconciler`] that turns it into nginx reloads, and the config reload that swaps
//! edge.toml underneath. The rules live in those modules; this one only connects them.
//!
//! Probing, resolving and placing only touch the fleet under its lock, never across a network
//! wait; turning the fleet into an nginx reload is the reconciler's job alone (see
//! [`crate::reconcile`]), woken through `changed`.

use crate::background::{self, Background};
use crate::config::EdgeConfig;
use crate::error::EdgeError;
pub use crate::error::ReloadConfigError;
use crate::fleet::{Fleet, ListingTargets, Resolved, StealVerdict, Target};
use crate::health::Health;
use crate::metrics::EdgeMetrics;
use crate::nginx::Nginx;
use crate::probe::{self, Probe};
use crate::reconcile::{Applied, Reconciler, Served};
use crate::render::Desired;
use crate::resolve;
use crate::status::EdgeStatus;
#[cfg(test)]
use reelay_protocol::LoadReport;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

pub struct Controller {
    fleet: Mutex<Fleet>,
    /// Why the last edge.toml reload was refused (cleared by the next good one).
    config_error: Mutex<Option<String>>,
    /// Woken when the fleet's routing changed: the reconciler renders again.
    pub(crate) changed: Notify,
    /// Requests to the clusters (probes, listings, revocations).
    http: reqwest::Client,
    pub(crate) reconciler: Reconciler,
    config_path: Option<PathBuf>,
    pub(crate) background: Background,
    /// `[auth]`: token checks and the revocations carried between clusters.
    pub(crate) auth: Option<Arc<crate::auth::EdgeAuth>>,
    pub(crate) revocations: Arc<crate::revocations::RevocationSync>,
    /// `GET /edge/steal` answers by outcome (`steal` or the reason to stay), for the metrics.
    steal_decisions: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Controller {
    pub fn new(cfg: EdgeConfig, config_path: Option<PathBuf>) -> Result<Arc<Self>, EdgeError> {
        let http = probe::cluster_client(&cfg)?;
        let reconciler = Reconciler::new(
            Nginx::new(&cfg.nginx, &cfg.work_dir),
            cfg.tls_cert.is_some(),
        )?;
        let auth = match &cfg.auth {
            Some(a) => Some(Arc::new(crate::auth::EdgeAuth::load(a)?)),
            None => None,
        };
        Ok(Arc::new(Controller {
            fleet: Mutex::new(Fleet::new(Arc::new(cfg))),
            config_error: Mutex::new(None),
            changed: Notify::new(),
            http,
            reconciler,
            config_path,
            background: Background::default(),
            auth,
            revocations: Arc::new(crate::revocations::RevocationSync::default()),
            steal_decisions: Mutex::new(Default::default()),
        }))
    }

    fn fleet(&self) -> MutexGuard<'_, Fleet> {
        // Every critical section leaves the state consistent, so a poisoned lock is still usable.
        self.fleet.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_config_error(&self, error: Option<String>) {
        *self.config_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    pub fn config(&self) -> Arc<EdgeConfig> {
        self.fleet().config().clone()
    }

    pub(crate) fn supervisor(&self) -> &Arc<crate::nginx::Supervisor> {
        &self.reconciler.supervisor
    }

    pub(crate) fn cluster_names(&self) -> Vec<String> {
        self.fleet()
            .clusters()
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    fn served(cfg: &EdgeConfig) -> Served {
        Served {
            listen: cfg.listen,
            tls: cfg.tls_cert.is_some(),
        }
    }

    /// Directories, first resolution, and a first configuration that nginx accepts. Nothing is
    /// running yet, so there is no last good configuration to keep: a rejected file is fatal.
    pub async fn prepare(&self) -> Result<(), EdgeError> {
        self.reconciler.nginx.prepare_dirs()?;
        self.resolve_all().await;
        // Collect the revocations every reachable cluster holds before serving anything, so a
        // restarted edge does not accept a revoked token while it catches up.
        if let Some(auth) = &self.auth {
            self.revocations.round(self, auth).await;
        }
        self.reconciler.install_first(self.desired()).await
    }

    /// Waits until the freshly started (or adopted) master serves the first generation.
    pub async fn confirm_start(&self) {
        let served = Self::served(&self.config());
        self.reconciler.confirm_start(served).await;
    }

    /// Starts probing, resolving and reconciling.
    pub fn spawn_background(self: &Arc<Self>) {
        background::spawn(self);
    }

    pub fn stop_background(&self) {
        self.background.stop();
    }

    /// Re-resolves every cluster; a failed resolution keeps the previous addresses.
    pub async fn resolve_all(&self) {
        let cfg = self.config();
        for c in &cfg.clusters {
            let result = resolve::resolve(c, cfg.hosts_file.as_deref())
                .await
                .map_err(|e| e.to_string());
            let error = result.as_ref().err().cloned();
            let to = result.as_ref().ok().cloned();
            let resolved = self.fleet().resolved(&c.name, result);
            match resolved {
                Resolved::Unchanged => {}
                Resolved::Changed { from } => {
                    tracing::info!(
                        cluster = %c.name,
                        from = ?from,
                        to = ?to.unwrap_or_default(),
                        "cluster addresses changed"
                    );
                    self.changed.notify_one();
                }
                Resolved::Failed { first } => {
                    if first {
                        tracing::warn!(cluster = %c.name, error = error.as_deref().unwrap_or(""), "cannot resolve the cluster; keeping its last addresses");
                    }
                }
            }
        }
    }

    /// One health check of `name`; the network wait holds no lock.
    pub async fn probe(&self, name: &str) {
        let Some(target) = self.fleet().probe_target(name) else {
            return;
        };
        let probe = probe::probe(&self.http, &target).await;
        self.observe(name, &probe);
    }

    fn observe(&self, name: &str, probe: &Probe) {
        let observed = self.fleet().observe(name, probe, Instant::now());
        match observed.health {
            Some(Health::Down) => tracing::warn!(
                cluster = name,
                error = probe.error.as_deref().unwrap_or(""),
                "cluster is DOWN"
            ),
            Some(Health::Up) => tracing::info!(cluster = name, "cluster is up"),
            _ => {}
        }
        if observed.started_draining {
            tracing::warn!(
                cluster = name,
                "cluster is not accepting new jobs (draining)"
            );
        }
        if observed.routing_changed {
            self.changed.notify_one();
        }
    }

    /// The placement decision for one submission (the auth_request answer); `record` counts
    /// it as pending load on the chosen cluster.
    pub fn place(&self, record: bool) -> Option<String> {
        self.fleet().place(Instant::now(), record)
    }

    /// The stealing decision for an idle slot of `thief`, now (see [`Fleet::steal`]); every
    /// decision is counted by outcome.
    pub fn steal(&self, thief: &str, slot_idle: bool) -> StealVerdict {
        let verdict = self.fleet().steal(thief, slot_idle, Instant::now());
        let outcome = match &verdict {
            StealVerdict::UnknownCluster => return verdict,
            StealVerdict::NoReading => crate::stealing::THIEF_UNKNOWN,
            StealVerdict::Decided(d) => d.outcome(),
        };
        *self
            .steal_decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome)
            .or_default() += 1;
        if let StealVerdict::Decided(d @ crate::stealing::Decision::Steal { .. }) = &verdict {
            tracing::info!(thief, decision = ?d, "an idle cluster takes a waiting task");
        }
        verdict
    }

    /// What nginx.conf should say now; also tracks (and logs) fail-open transitions.
    pub fn desired(&self) -> Desired {
        let mut fleet = self.fleet();
        let (views, fail_open_changed) = fleet.routing();
        match fail_open_changed {
            Some(true) => {
                tracing::error!("no cluster is up and accepting: failing open to all of them")
            }
            Some(false) => tracing::info!("a cluster is up again: fail-open ends"),
            None => {}
        }
        let cfg = fleet.config();
        let user = crate::process::is_root().then(|| {
            cfg.nginx_user
                .clone()
                .unwrap_or_else(crate::nginx::default_nginx_user)
        });
        Desired::build(cfg, &views, fleet.fail_open(), user)
    }

    /// One reconcile pass (see [`Reconciler::apply`]).
    pub async fn apply(&self, reason: &str, force: bool) -> Applied {
        let min_interval = Duration::from_millis(self.config().reload_min_interval_ms);
        self.reconciler
            .apply(reason, force, min_interval, || {
                let desired = self.desired();
                (desired, Self::served(&self.config()))
            })
            .await
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
                self.set_config_error(Some(msg.clone()));
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
                self.set_config_error(Some(msg.clone()));
                return Err(ReloadConfigError::NeedsRestart(msg));
            }
        }
        let epoch = {
            let mut fleet = self.fleet();
            fleet.reconfigure(Arc::new(new));
            self.set_config_error(None);
            self.background.next_epoch()
        };
        tracing::info!("edge.toml reloaded");
        background::spawn_pollers(self, epoch);
        self.resolve_all().await;
        Ok(self.apply("edge.toml reloaded", force).await)
    }

    pub fn status(&self) -> EdgeStatus {
        let nginx = self.supervisor().info();
        let reloads = self.reconciler.stats();
        let config_error = self
            .config_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let fleet = self.fleet();
        let cfg = fleet.config();
        EdgeStatus {
            mode: cfg.mode,
            listen: cfg.listen.to_string(),
            control_listen: cfg.control_listen.to_string(),
            generation: reloads.generation,
            fail_open: fleet.fail_open(),
            last_reload: reloads.last_reload,
            reloads: reloads.reloads,
            failed_reloads: reloads.failed_reloads,
            config_error,
            nginx,
            clusters: fleet.status(Instant::now()),
        }
    }

    /// A copy of everything `/edge/metrics` shows, taken without holding any lock while it
    /// is written out.
    pub fn metrics(&self) -> EdgeMetrics {
        let nginx = self.supervisor().info();
        let reloads = self.reconciler.stats();
        let fleet = self.fleet();
        let steal_decisions = self
            .steal_decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        let auth = self.auth.as_ref().map(|a| crate::metrics::AuthMetrics {
            checks: a.cache_stats(),
            revocations: a.revoked_count(),
        });
        EdgeMetrics {
            auth,
            steal_decisions,
            clusters: fleet.counters(),
            fail_open: fleet.fail_open(),
            reloads,
            nginx,
        }
    }

    /// See [`Fleet::listing_targets`].
    pub(crate) fn listing_targets(&self) -> ListingTargets {
        self.fleet().listing_targets()
    }

    /// See [`Fleet::all_targets`].
    pub(crate) fn all_targets(&self) -> Vec<Target> {
        self.fleet().all_targets()
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `https` when the clusters are reached over TLS (all or none, checked in the config).
    pub(crate) fn upstream_scheme(&self) -> &'static str {
        self.fleet().upstream_scheme()
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

/// What the unit tests below feed the controller in place of a probe over the network.
#[cfg(test)]
impl Controller {
    fn record_probe(
        &self,
        name: &str,
        started: Instant,
        ok: bool,
        error: Option<String>,
        load: Option<LoadReport>,
    ) {
        let probe = Probe {
            started,
            at_unix_ms: crate::status::unix_ms(std::time::SystemTime::now()),
            ok,
            error,
            load,
        };
        self.observe(name, &probe);
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
            offer: None,
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
