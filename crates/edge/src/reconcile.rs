//! Keeping nginx in line with what the fleet says: render, `nginx -t`, install, reload, and wait
//! until nginx serves the new generation; with the reload statistics this produces.
//!
//! Passes are serialized and rate-limited, so a flapping cluster costs at most one reload per
//! `reload_min_interval_ms` and two events in the same instant cost one reload. The served
//! configuration is untouched unless `nginx -t` accepts the new one, and a configuration nginx
//! refused is not tried again until the desired state changes.

use crate::error::{error_chain, ApplyError, EdgeError};
use crate::nginx::{Nginx, NginxError, Supervisor};
use crate::render::{self, Desired};
use crate::status::{unix_ms, ReloadRecord};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// How long nginx may take to serve a new generation after SIGHUP before the reload counts as
/// failed (it normally takes milliseconds; a reload that cannot bind a new listen address never
/// completes).
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reload latency buckets, in seconds.
pub const RELOAD_BUCKETS: [f64; 8] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// The outcome of one reconcile pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// nginx already serves what the state asks for.
    Unchanged,
    Reloaded(ReloadRecord),
    Failed(ReloadRecord),
}

/// Where this edge's own nginx answers `/_reelay/generation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub listen: SocketAddr,
    pub tls: bool,
}

/// Counts of what the reconciler did, for `/edge/status` and `/edge/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReloadStats {
    /// Generation of the configuration nginx serves.
    pub generation: u64,
    pub last_reload: Option<ReloadRecord>,
    pub reloads: u64,
    pub failed_reloads: u64,
    pub bucket_counts: [u64; RELOAD_BUCKETS.len()],
    pub seconds_sum: f64,
}

impl ReloadStats {
    fn record(&mut self, record: ReloadRecord, elapsed: Duration, success: bool) {
        if success {
            self.generation = record.generation;
            self.reloads += 1;
            let secs = elapsed.as_secs_f64();
            self.seconds_sum += secs;
            for (i, le) in RELOAD_BUCKETS.iter().enumerate() {
                if secs <= *le {
                    self.bucket_counts[i] += 1;
                }
            }
        } else {
            self.failed_reloads += 1;
        }
        self.last_reload = Some(record);
    }
}

#[derive(Default)]
struct ApplyState {
    applied: Option<Desired>,
    /// The last configuration nginx refused, with the record of that refusal.
    rejected: Option<(Desired, ReloadRecord)>,
    last_attempt: Option<Instant>,
}

pub struct Reconciler {
    pub(crate) nginx: Nginx,
    pub(crate) supervisor: Arc<Supervisor>,
    /// No connection reuse: a kept-alive connection would stay on an old nginx worker and keep
    /// answering the old generation.
    fresh: reqwest::Client,
    state: tokio::sync::Mutex<ApplyState>,
    stats: Mutex<ReloadStats>,
}

impl Reconciler {
    /// `tls`: nginx listens with TLS (its own certificate, asked on loopback only).
    pub fn new(nginx: Nginx, tls: bool) -> Result<Self, EdgeError> {
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            // Only ever asks this edge's own nginx, on loopback, which generation it serves.
            .danger_accept_invalid_certs(tls)
            .build()
            .map_err(EdgeError::HttpClient)?;
        Ok(Reconciler {
            supervisor: Supervisor::new(nginx.clone()),
            nginx,
            fresh,
            state: tokio::sync::Mutex::new(ApplyState::default()),
            stats: Mutex::new(ReloadStats::default()),
        })
    }

    fn stats_lock(&self) -> MutexGuard<'_, ReloadStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> ReloadStats {
        self.stats_lock().clone()
    }

    /// A first configuration that nginx accepts (the directories exist). Nothing is running
    /// yet, so there is no last good configuration to keep: a rejected file is fatal.
    pub async fn install_first(&self, desired: Desired) -> Result<(), EdgeError> {
        let text = render::render(&desired, 1)?;
        let staged = self.nginx.stage(&text).await?;
        self.nginx.install(&staged).await?;
        let mut st = self.state.lock().await;
        st.applied = Some(desired);
        st.last_attempt = Some(Instant::now());
        Ok(())
    }

    /// Waits until the freshly started (or adopted) master serves the first generation.
    pub async fn confirm_start(&self, served: Served) {
        let t0 = Instant::now();
        let result = self.wait_for_generation(served, 1, APPLY_TIMEOUT).await;
        let record = ReloadRecord {
            generation: 1,
            ok: result.is_ok(),
            error: result.as_ref().err().map(|e| e.to_string()),
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
        let mut stats = self.stats_lock();
        stats.record(record, t0.elapsed(), ok);
        // Generation 1 is installed either way; the supervisor keeps retrying to run it.
        stats.generation = 1;
    }

    /// Renders, tests and (if it changed, or `force`) reloads. Never faster than `min_interval`;
    /// `desired` is asked after that wait, so every change that arrived meanwhile is included.
    pub async fn apply(
        &self,
        reason: &str,
        force: bool,
        min_interval: Duration,
        desired: impl FnOnce() -> (Desired, Served),
    ) -> Applied {
        let mut st = self.state.lock().await;
        if let Some(last) = st.last_attempt {
            let since = last.elapsed();
            if since < min_interval {
                tokio::time::sleep(min_interval - since).await;
            }
        }
        let (desired, served) = desired();
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
        let generation = self.stats_lock().generation + 1;
        let result = self.try_apply(&desired, served, generation).await;
        let elapsed = t0.elapsed();
        let record = ReloadRecord {
            generation,
            ok: result.is_ok(),
            error: result.as_ref().err().map(|e| e.to_string()),
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
                tracing::error!(generation, reason, code = e.code(), error = %e, "configuration not applied; nginx keeps serving the previous one");
                st.rejected = Some((desired, record.clone()));
            }
        }
        self.stats_lock()
            .record(record.clone(), elapsed, result.is_ok());
        if result.is_ok() {
            Applied::Reloaded(record)
        } else {
            Applied::Failed(record)
        }
    }

    async fn try_apply(
        &self,
        desired: &Desired,
        served: Served,
        generation: u64,
    ) -> Result<(), ApplyError> {
        let text = render::render(desired, generation)?;
        let staged = self.nginx.stage(&text).await?;
        self.nginx.install(&staged).await?;
        let old_workers = self
            .supervisor
            .info()
            .pid
            .map(crate::process::children)
            .unwrap_or_default();
        match self.supervisor.reload() {
            Ok(()) => {
                let deadline = Instant::now() + APPLY_TIMEOUT;
                self.wait_for_generation(served, generation, APPLY_TIMEOUT)
                    .await?;
                self.wait_for_old_workers(&old_workers, deadline).await;
                Ok(())
            }
            // The supervisor starts the next master from the installed file.
            Err(NginxError::NotRunning) => Ok(()),
            Err(e) => Err(e.into()),
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

    /// Polls nginx (new connection each time, so a new worker answers) until it serves
    /// `generation`.
    async fn wait_for_generation(
        &self,
        served: Served,
        generation: u64,
        timeout: Duration,
    ) -> Result<(), ApplyError> {
        let listen = render::connectable(served.listen);
        let scheme = if served.tls { "https" } else { "http" };
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
        Err(ApplyError::NotServed {
            generation,
            timeout_secs: timeout.as_secs(),
            last,
            log: self.nginx.work_dir.join("logs/error.log"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(generation: u64, ok: bool) -> ReloadRecord {
        ReloadRecord {
            generation,
            ok,
            error: (!ok).then(|| "refused".into()),
            reason: "test".into(),
            at_unix_ms: 0,
            latency_ms: 0,
        }
    }

    #[test]
    fn stats_count_successes_into_buckets_and_failures_apart() {
        let mut s = ReloadStats::default();
        s.record(record(1, true), Duration::from_millis(30), true);
        s.record(record(2, false), Duration::from_millis(5), false);
        assert_eq!(
            s.generation, 1,
            "a failed reload keeps the served generation"
        );
        assert_eq!((s.reloads, s.failed_reloads), (1, 1));
        assert_eq!(s.bucket_counts, [0, 0, 1, 1, 1, 1, 1, 1]);
        assert!((s.seconds_sum - 0.03).abs() < 1e-9);
        assert_eq!(s.last_reload.map(|r| r.generation), Some(2));
    }
}
