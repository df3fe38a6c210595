//! This cluster's part of the identity shared by every cloud: the trusted keys it verifies
//! signed tokens with, the issuer key it signs new tokens and revocations with, and the set of
//! revoked token ids.
//!
//! Verification is stateless (a signature check and a hash-set lookup, no store query). The
//! revocation set is the store's `revocations` table held in memory: revocations made here or
//! pushed by the edge are added at once, and every `identity_refresh_ms` the table is read
//! again from the last `seq` seen, so that other API replicas of the same cluster (sharing the
//! Postgres store) pick them up within that interval. The key files are re-read on the same
//! tick: rotating keys is editing files, no restart. A file that no longer parses is logged and
//! the keys already loaded stay in force.

use crate::config::Config;
use reelay_identity::keys::{check_issuer_is_trusted, load_signing_key, load_trusted_keys};
use reelay_identity::token::{self, Claims, TokenError};
use reelay_identity::{KeyError, RevocationSet, SigningKey, TrustedKeys};
use reelay_jobs::{now_millis, JobStore};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How far back each refresh looks again for rows that committed out of `seq` order.
const RECHECK_WINDOW_MS: i64 = 30_000;
const PAGE: u32 = 1000;

#[derive(Debug)]
struct Keys {
    issuer: Option<SigningKey>,
    trusted: TrustedKeys,
    /// The file contents these keys came from, to notice changes.
    source: (String, String),
    /// The last reload error reported, so a broken file is logged once, not every second.
    last_error: Option<String>,
}

#[derive(Debug)]
pub struct Identity {
    issuer_path: Option<PathBuf>,
    trusted_path: PathBuf,
    keys: RwLock<Keys>,
    revoked: RwLock<RevocationSet>,
    cursor: AtomicI64,
    refresh: Duration,
}

fn read_text(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn load_keys(
    issuer_path: Option<&std::path::Path>,
    trusted_path: &std::path::Path,
) -> Result<(Option<SigningKey>, TrustedKeys), KeyError> {
    let trusted = load_trusted_keys(trusted_path)?;
    if trusted.is_empty() {
        return Err(KeyError::Invalid(format!(
            "{}: no key: no token could ever be accepted",
            trusted_path.display()
        )));
    }
    let issuer = issuer_path.map(load_signing_key).transpose()?;
    if let Some(i) = &issuer {
        check_issuer_is_trusted(i, &trusted)?;
    }
    Ok((issuer, trusted))
}

impl Identity {
    /// The identity configured for this cluster, or None when it has no trusted keys (then only
    /// per-cluster `rly_…` tokens exist).
    pub fn from_config(cfg: &Config) -> Result<Option<Arc<Identity>>, KeyError> {
        let Some(trusted_path) = cfg.trusted_keys.clone() else {
            return Ok(None);
        };
        let issuer_path = cfg.issuer_key.clone();
        let (issuer, trusted) = load_keys(issuer_path.as_deref(), &trusted_path)?;
        let source = (
            issuer_path.as_deref().map(read_text).unwrap_or_default(),
            read_text(&trusted_path),
        );
        Ok(Some(Arc::new(Identity {
            issuer_path,
            trusted_path,
            keys: RwLock::new(Keys {
                issuer,
                trusted,
                source,
                last_error: None,
            }),
            revoked: RwLock::new(RevocationSet::default()),
            cursor: AtomicI64::new(0),
            refresh: Duration::from_millis(cfg.identity_refresh_ms),
        })))
    }

    fn keys(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a `rly2.` token now.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let now = (now_millis() / 1000).max(0) as u64;
        let keys = self.keys();
        let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
        token::verify(token, &keys.trusted, &revoked, now)
    }

    pub fn issuer(&self) -> Option<SigningKey> {
        self.keys().issuer.clone()
    }

    pub fn trusted(&self) -> TrustedKeys {
        self.keys().trusted.clone()
    }

    pub fn key_ids(&self) -> Vec<String> {
        self.keys().trusted.ids().map(str::to_string).collect()
    }

    /// Takes a revocation into force in this process (the store has it already).
    pub fn note_revoked(&self, id: &str, revoked_at: u64) {
        self.revoked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, revoked_at);
    }

    pub fn revoked_count(&self) -> usize {
        self.revoked.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Reads revocations recorded since the last call (by any replica of this cluster).
    pub async fn refresh_revocations(
        &self,
        store: &dyn JobStore,
    ) -> Result<usize, reelay_jobs::StoreError> {
        let mut added = 0;
        loop {
            let after = self.cursor.load(Ordering::SeqCst);
            let rows = store
                .revocations_since(after, now_millis() - RECHECK_WINDOW_MS, PAGE)
                .await?;
            let newer = rows.iter().filter(|r| r.seq > after).count();
            {
                let mut set = self.revoked.write().unwrap_or_else(|p| p.into_inner());
                for r in &rows {
                    if set.insert(&r.token_id, r.revoked_at.max(0) as u64) {
                        added += 1;
                    }
                }
            }
            if let Some(max) = rows.iter().map(|r| r.seq).max() {
                self.cursor.fetch_max(max, Ordering::SeqCst);
            }
            if newer < PAGE as usize {
                return Ok(added);
            }
        }
    }

    /// Re-reads the key files if they changed. A broken file keeps the previous keys in force.
    pub fn reload_keys(&self) {
        let source = (
            self.issuer_path
                .as_deref()
                .map(read_text)
                .unwrap_or_default(),
            read_text(&self.trusted_path),
        );
        if self.keys().source == source {
            return;
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        match load_keys(self.issuer_path.as_deref(), &self.trusted_path) {
            Ok((issuer, trusted)) => {
                tracing::info!(
                    trusted = ?trusted.ids().collect::<Vec<_>>(),
                    issuer = issuer.as_ref().map(|i| i.kid()).unwrap_or("-"),
                    "identity keys reloaded"
                );
                keys.issuer = issuer;
                keys.trusted = trusted;
                keys.source = source;
                keys.last_error = None;
            }
            Err(e) => {
                let msg = e.to_string();
                if keys.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(error = %msg, code = e.code(), "identity key files changed but cannot be used; the previous keys stay in force");
                    keys.last_error = Some(msg);
                }
            }
        }
    }

    /// Keeps the revocation set and the keys current until `stop`.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn JobStore>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.reload_keys();
            match self.refresh_revocations(&*store).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(
                            added = n,
                            total = self.revoked_count(),
                            "revocations picked up from the store"
                        );
                    }
                    failing = false;
                }
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "reading revocations failed; retrying");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}
