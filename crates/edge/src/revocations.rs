//! Carrying revocations between clusters.
//!
//! Every `revocation_sync_ms` the controller asks each cluster for the revocations recorded
//! since the last answer (`GET /v1/identity/revocations?after=N`), checks each signed statement
//! against the trusted keys, adds it to the edge's own set (which [`crate::auth`] checks), and
//! hands every cluster the statements it has not got yet (`POST /v1/identity/revocations`),
//! over the same connection as the API traffic (mutual TLS across clouds). A revocation made on
//! one cluster so reaches the others within about one interval plus two requests; each cluster
//! re-reads its store every second for its other API replicas. Every edge does this, so with an
//! edge in each cloud, either one alone keeps the clusters in step.
//!
//! If no edge runs, a revocation is in force on the cluster where it was made and waits for an
//! edge; no client request reaches a cluster without passing an edge in the deployments this
//! project describes, and an edge starting up collects every cluster's list before it serves.

use crate::auth::EdgeAuth;
use crate::controller::Controller;
use crate::error::error_chain;
use reelay_identity::wire::{PushResult, RevocationPage, RevocationPush};
use reelay_identity::Revocation;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PUSH_BATCH: usize = 200;

#[derive(Default)]
struct ClusterSync {
    after: u64,
    /// Ids this cluster is known to have (it served them, or accepted our push).
    known: HashSet<String>,
}

/// What the edge knows: every verified statement, and per cluster what it has.
#[derive(Default)]
pub struct RevocationSync {
    statements: Mutex<HashMap<String, Revocation>>,
    clusters: Mutex<HashMap<String, ClusterSync>>,
}

impl RevocationSync {
    /// One round: collect from every cluster, then hand out what each lacks.
    pub async fn round(&self, ctl: &Controller, auth: &EdgeAuth) {
        auth.reload_keys();
        let targets = ctl.all_targets();
        let http = ctl.http().clone();
        let scheme = ctl.upstream_scheme();
        let pulls = targets.iter().map(|(name, addrs, host)| {
            let after = self.cursor(name);
            let http = http.clone();
            async move { pull(&http, scheme, addrs, host, after).await }
        });
        let pages = futures::future::join_all(pulls).await;
        let trusted = auth.trusted();
        for ((name, _, _), page) in targets.iter().zip(pages) {
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(cluster = %name, error = %e, "revocations not collected this round");
                    continue;
                }
            };
            let (added, refused) = auth.merge_revocations(&page.revocations, &trusted);
            for (id, e) in &refused {
                tracing::warn!(cluster = %name, token_id = %id, error = %e, "a cluster served a revocation that does not verify");
            }
            if !added.is_empty() {
                tracing::info!(cluster = %name, revoked = ?added, "revocations collected");
            }
            let mut statements = self.statements.lock().unwrap_or_else(|p| p.into_inner());
            let mut clusters = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
            let c = clusters.entry(name.clone()).or_default();
            c.after = c.after.max(page.next_after);
            for r in page.revocations {
                if r.verify(&trusted).is_ok() {
                    c.known.insert(r.id.clone());
                    statements.entry(r.id.clone()).or_insert(r);
                }
            }
        }
        for (name, addrs, host) in &targets {
            let missing: Vec<Revocation> = {
                let statements = self.statements.lock().unwrap_or_else(|p| p.into_inner());
                let clusters = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
                let known = clusters.get(name).map(|c| &c.known);
                let mut m: Vec<Revocation> = statements
                    .values()
                    .filter(|r| known.is_none_or(|k| !k.contains(&r.id)))
                    .cloned()
                    .collect();
                m.sort_by(|a, b| {
                    a.revoked_at
                        .cmp(&b.revoked_at)
                        .then_with(|| a.id.cmp(&b.id))
                });
                m
            };
            for batch in missing.chunks(PUSH_BATCH) {
                let t0 = Instant::now();
                match push(&http, scheme, addrs, host, batch).await {
                    Ok(res) => {
                        let mut clusters = self.clusters.lock().unwrap_or_else(|p| p.into_inner());
                        let c = clusters.entry(name.clone()).or_default();
                        c.known.extend(batch.iter().map(|r| r.id.clone()));
                        tracing::info!(
                            cluster = %name,
                            accepted = res.accepted,
                            refused = res.refused,
                            ms = t0.elapsed().as_millis() as u64,
                            "revocations handed to the cluster"
                        );
                    }
                    Err(e) => {
                        tracing::debug!(cluster = %name, error = %e, "revocations not delivered; next round");
                        break;
                    }
                }
            }
        }
    }

    fn cursor(&self, name: &str) -> u64 {
        self.clusters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map_or(0, |c| c.after)
    }

    /// Rounds every `every` until the task is aborted.
    pub async fn run(self: Arc<Self>, ctl: Arc<Controller>, auth: Arc<EdgeAuth>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.round(&ctl, &auth).await;
        }
    }
}

async fn pull(
    http: &reqwest::Client,
    scheme: &str,
    addrs: &[SocketAddr],
    host: &str,
    after: u64,
) -> Result<RevocationPage, String> {
    let mut last = "no address resolved".to_string();
    for addr in addrs {
        let r = http
            .get(format!(
                "{scheme}://{addr}/v1/identity/revocations?after={after}"
            ))
            .header(reqwest::header::HOST, host)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                return r.json().await.map_err(|e| format!("{addr}: {e}"));
            }
            Ok(r) => last = format!("{addr}: answered {}", r.status()),
            Err(e) => last = format!("{addr}: {}", error_chain(&e)),
        }
    }
    Err(last)
}

async fn push(
    http: &reqwest::Client,
    scheme: &str,
    addrs: &[SocketAddr],
    host: &str,
    batch: &[Revocation],
) -> Result<PushResult, String> {
    let body = RevocationPush {
        revocations: batch.to_vec(),
    };
    let mut last = "no address resolved".to_string();
    for addr in addrs {
        let r = http
            .post(format!("{scheme}://{addr}/v1/identity/revocations"))
            .header(reqwest::header::HOST, host)
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                return r.json().await.map_err(|e| format!("{addr}: {e}"));
            }
            Ok(r) => last = format!("{addr}: answered {}", r.status()),
            Err(e) => last = format!("{addr}: {}", error_chain(&e)),
        }
    }
    Err(last)
}
