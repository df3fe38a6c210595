//! Token checks at the edge (`[auth]` in edge.toml).
//!
//! nginx asks the controller (`auth_request`) before it forwards a `/v1` request; the answer
//! comes from [`decide`], a pure function of the `Authorization` header, the method, the trusted
//! keys, the revocations the edge has collected and the time. The edge holds only public keys:
//! it can check tokens but not mint them. Clusters check every token again themselves and never
//! trust anything the edge asserts, so a request that slips past the edge (say, while the
//! controller is down and nginx forwards without asking) still meets a full check.

use crate::auth_cache::{cache_key, AuthCache};
use crate::config::AuthConfig;
use reelay_identity::keys::load_trusted_keys;
use reelay_identity::token::{self, is_signed_token};
use reelay_identity::{RevocationSet, Scope, TrustedKeys};
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

/// What nginx should do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 401: no token, or one that is not valid.
    Unauthorized(String),
    /// 403: a valid token without the scope.
    Forbidden(String),
}

/// The scope a request needs, from its method and the URI the client sent (`$request_uri`):
/// the remote claim (`/clusters/{cluster}/v1/peer/…`, issue 16) needs `peer`, which no other
/// scope implies; every other `/v1` route is `read` to read and `submit` to change. A URI the
/// edge cannot recognise as a peer route (say, one percent-encoded oddly) needs `read`/`submit`,
/// which a peer token lacks: a mismatch refuses, never lets through.
pub fn required_scope(method: &str, original_uri: Option<&str>) -> Scope {
    let path = original_uri
        .map(|u| u.split(['?', '#']).next().unwrap_or_default())
        .unwrap_or_default();
    let peer_route = path
        .strip_prefix("/clusters/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(cluster, rest)| {
            reelay_protocol::valid_cluster_name(cluster) && rest.starts_with("v1/peer/")
        });
    if peer_route {
        Scope::Peer
    } else {
        Scope::for_method(method)
    }
}

/// The pure check: `authorization` is the raw header, `need` the scope the request needs (see
/// [`required_scope`]), `now` Unix seconds.
pub fn decide(
    authorization: Option<&str>,
    need: Scope,
    trusted: &TrustedKeys,
    revoked: &RevocationSet,
    legacy_tokens: bool,
    now: u64,
) -> Decision {
    verdict(authorization, need, trusted, revoked, legacy_tokens, now).0
}

/// [`decide`], and for an allowed signed token the Unix second it stops being valid
/// (`u64::MAX` if it has no expiry): how long the answer may be remembered (see
/// [`crate::auth_cache`]). `None` for everything else: refusals, and per-cluster tokens the edge
/// lets through without checking (nothing to save there).
pub fn verdict(
    authorization: Option<&str>,
    need: Scope,
    trusted: &TrustedKeys,
    revoked: &RevocationSet,
    legacy_tokens: bool,
    now: u64,
) -> (Decision, Option<u64>) {
    let Some(value) = authorization else {
        return (
            Decision::Unauthorized(
                "this API requires a token: send Authorization: Bearer <token>".into(),
            ),
            None,
        );
    };
    let Some(presented) = value
        .trim()
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
    else {
        return (
            Decision::Unauthorized(
                "malformed Authorization header: expected Bearer <token>".into(),
            ),
            None,
        );
    };
    if !is_signed_token(presented) {
        let decision = if legacy_tokens && presented.starts_with("rly_") {
            // A per-cluster token: only the cluster that issued it can check it.
            Decision::Allow
        } else {
            Decision::Unauthorized("invalid, unknown or revoked token".into())
        };
        return (decision, None);
    }
    match token::verify(presented, trusted, revoked, now) {
        Ok(claims) => {
            if claims.has(need) {
                (Decision::Allow, Some(claims.exp.unwrap_or(u64::MAX)))
            } else {
                (
                    Decision::Forbidden(format!("this token lacks the {need} scope")),
                    None,
                )
            }
        }
        Err(e) => (Decision::Unauthorized(e.to_string()), None),
    }
}

/// The check of `GET /edge/steal`: a signed token with the `peer` scope whose owner is the
/// asking cluster `thief` (a cluster asks for its own slots only). Per-cluster `rly_…` tokens
/// are refused whatever `legacy_tokens` says: no cluster stands behind this route to check
/// them. `now` Unix seconds.
pub fn decide_peer(
    authorization: Option<&str>,
    thief: &str,
    trusted: &TrustedKeys,
    revoked: &RevocationSet,
    now: u64,
) -> Decision {
    let presented = authorization.and_then(|value| {
        value
            .trim()
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
    });
    let Some(presented) = presented.filter(|t| is_signed_token(t)) else {
        return Decision::Unauthorized(
            "a stealing decision needs a signed token with the peer scope".into(),
        );
    };
    match token::verify(presented, trusted, revoked, now) {
        Ok(claims) if !claims.has(Scope::Peer) => {
            Decision::Forbidden("this token lacks the peer scope".into())
        }
        Ok(claims) if claims.sub != thief => Decision::Forbidden(format!(
            "this peer token is {:?}'s: it may ask for that cluster only",
            claims.sub
        )),
        Ok(_) => Decision::Allow,
        Err(e) => Decision::Unauthorized(e.to_string()),
    }
}

/// The message travels to nginx in a header and is pasted into a JSON string there: keep it to
/// characters that need no escaping.
pub fn header_safe(message: &str) -> String {
    message
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '?',
        })
        .take(300)
        .collect()
}

/// The trusted keys (re-read when the file changes), the revocations collected from the
/// clusters, and the short memory of allowed checks that depends on both: every change to
/// either goes through a method here that also forgets that memory.
pub struct EdgeAuth {
    path: PathBuf,
    pub legacy_tokens: bool,
    keys: RwLock<(TrustedKeys, String)>,
    revoked: RwLock<RevocationSet>,
    cache: Mutex<AuthCache>,
}

impl EdgeAuth {
    pub fn load(cfg: &AuthConfig) -> Result<EdgeAuth, reelay_identity::KeyError> {
        let trusted = load_trusted_keys(&cfg.trusted_keys)?;
        let source = std::fs::read_to_string(&cfg.trusted_keys).unwrap_or_default();
        Ok(EdgeAuth {
            path: cfg.trusted_keys.clone(),
            legacy_tokens: cfg.legacy_tokens,
            keys: RwLock::new((trusted, source)),
            revoked: RwLock::new(RevocationSet::default()),
            cache: Mutex::new(AuthCache::default()),
        })
    }

    pub fn trusted(&self) -> TrustedKeys {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, AuthCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`decide`] with the loaded keys and revocations, now; an allowed answer given less than
    /// [`crate::auth_cache::TTL_MS`] ago for the same header and scope is reused.
    pub fn check(&self, authorization: Option<&str>, need: Scope) -> Decision {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.check_at(authorization, need, now_ms)
    }

    /// [`check`](Self::check) at `now_ms` (Unix milliseconds).
    pub fn check_at(&self, authorization: Option<&str>, need: Scope, now_ms: u64) -> Decision {
        let key = authorization.map(|a| cache_key(a, need));
        // Read before the keys and revocations: an invalidation after this point voids the
        // answer computed below (see `AuthCache::insert`).
        let generation = {
            let mut cache = self.cache();
            if cache.lookup(key.as_ref(), now_ms) {
                return Decision::Allow;
            }
            cache.generation()
        };
        let (decision, valid_until) = {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
            verdict(
                authorization,
                need,
                &keys.0,
                &revoked,
                self.legacy_tokens,
                now_ms / 1000,
            )
        };
        if let (Some(key), Some(until)) = (key, valid_until) {
            self.cache().insert(key, generation, until, now_ms);
        }
        decision
    }

    /// Adds the statements that verify against `trusted` to the revocations (see
    /// [`RevocationSet::merge_verified`]); any addition forgets every remembered answer, so the
    /// next request with a revoked token is checked, and refused.
    pub fn merge_revocations(
        &self,
        statements: &[reelay_identity::Revocation],
        trusted: &TrustedKeys,
    ) -> (
        Vec<String>,
        Vec<(String, reelay_identity::revocation::RevocationError)>,
    ) {
        let mut set = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        let merged = set.merge_verified(statements, trusted);
        if !merged.0.is_empty() {
            self.cache().invalidate();
        }
        merged
    }

    /// [`decide_peer`] with the loaded keys and revocations, now.
    pub fn check_peer(&self, authorization: Option<&str>, thief: &str) -> Decision {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
        decide_peer(authorization, thief, &keys.0, &revoked, now)
    }

    /// Re-reads the trusted keys if the file changed; a broken file keeps the loaded keys.
    pub fn reload_keys(&self) {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        if self.keys.read().unwrap_or_else(|p| p.into_inner()).1 == text {
            return;
        }
        match load_trusted_keys(&self.path) {
            Ok(t) if !t.is_empty() => {
                tracing::info!(trusted = ?t.ids().collect::<Vec<_>>(), "trusted keys reloaded");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = (t, text);
                self.cache().invalidate();
            }
            Ok(_) => {
                tracing::error!(path = %self.path.display(), "the trusted keys file is empty; keeping the previous keys")
            }
            Err(e) => {
                tracing::error!(error = %e, "the trusted keys file cannot be used; keeping the previous keys");
                // Remember it, so that the same broken file is reported once.
                self.keys.write().unwrap_or_else(|p| p.into_inner()).1 = text;
            }
        }
    }

    /// Token checks answered from memory and in full, since start.
    pub fn cache_stats(&self) -> crate::auth_cache::CacheStats {
        self.cache().stats()
    }

    pub fn revoked_count(&self) -> usize {
        self.revoked.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reelay_identity::token::{issue, NewClaims};
    use reelay_identity::SigningKey;

    fn setup() -> (SigningKey, TrustedKeys) {
        let key = SigningKey::from_seed("k1", &[5u8; 32]).unwrap();
        let trusted = TrustedKeys::from_keys([("k1".to_string(), key.public_key())]);
        (key, trusted)
    }

    fn token(key: &SigningKey, scopes: &[Scope]) -> (String, String) {
        owned_token(key, None, scopes)
    }

    fn owned_token(key: &SigningKey, owner: Option<&str>, scopes: &[Scope]) -> (String, String) {
        let (t, c) = issue(
            key,
            &NewClaims {
                owner: owner.map(str::to_string),
                scopes: scopes.to_vec(),
                name: String::new(),
                ttl_seconds: Some(100),
            },
            1000,
        )
        .unwrap();
        (format!("Bearer {t}"), c.jti)
    }

    #[test]
    fn the_edge_refuses_anonymous_invalid_revoked_and_unscoped_requests() {
        let (key, trusted) = setup();
        let none = RevocationSet::default();
        let (reader, reader_id) = token(&key, &[Scope::Read]);
        let d = |h: Option<&str>, m: &str, revoked: &RevocationSet, legacy: bool, now: u64| {
            decide(h, Scope::for_method(m), &trusted, revoked, legacy, now)
        };
        assert!(matches!(
            d(None, "GET", &none, true, 1000),
            Decision::Unauthorized(_)
        ));
        assert!(matches!(
            d(Some("Basic abc"), "GET", &none, true, 1000),
            Decision::Unauthorized(_)
        ));
        assert_eq!(d(Some(&reader), "GET", &none, true, 1000), Decision::Allow);
        assert!(matches!(
            d(Some(&reader), "POST", &none, true, 1000),
            Decision::Forbidden(_)
        ));
        assert!(
            matches!(d(Some(&reader), "GET", &none, true, 1100), Decision::Unauthorized(m) if m.contains("expired"))
        );
        let mut revoked = RevocationSet::default();
        revoked.insert(&reader_id, 1);
        assert!(
            matches!(d(Some(&reader), "GET", &revoked, true, 1000), Decision::Unauthorized(m) if m.contains("revoked"))
        );
        // Per-cluster tokens: forwarded for their cluster to check, unless turned off.
        let legacy = format!("Bearer rly_0123456789ab_{}", "0".repeat(64));
        assert_eq!(d(Some(&legacy), "POST", &none, true, 1000), Decision::Allow);
        assert!(matches!(
            d(Some(&legacy), "POST", &none, false, 1000),
            Decision::Unauthorized(_)
        ));
        assert!(matches!(
            d(Some("Bearer nonsense"), "GET", &none, true, 1000),
            Decision::Unauthorized(_)
        ));
        let (admin, _) = token(&key, &[Scope::Admin]);
        assert_eq!(
            d(Some(&admin), "DELETE", &none, false, 1000),
            Decision::Allow
        );
    }

    #[test]
    fn the_remote_claim_through_the_edge_needs_the_peer_scope() {
        let uri = |u| required_scope("POST", Some(u));
        assert_eq!(uri("/clusters/aws/v1/peer/tasks/claim"), Scope::Peer);
        assert_eq!(
            required_scope("GET", Some("/clusters/aws/v1/peer/tasks/aws.x.transcode/objects/inputs/aws.x/source?worker=w&attempt=1")),
            Scope::Peer
        );
        assert_eq!(uri("/v1/jobs"), Scope::Submit);
        assert_eq!(required_scope("GET", Some("/v1/jobs/aws.x")), Scope::Read);
        assert_eq!(uri("/clusters/AWS/v1/peer/tasks/claim"), Scope::Submit);
        assert_eq!(uri("/clusters/aws/v1/peers"), Scope::Submit);
        assert_eq!(uri("/v1/jobs?x=/clusters/aws/v1/peer/"), Scope::Submit);
        assert_eq!(required_scope("GET", None), Scope::Read);

        let (key, trusted) = setup();
        let none = RevocationSet::default();
        let (peer, _) = token(&key, &[Scope::Peer]);
        let (submit, _) = token(&key, &[Scope::Submit, Scope::Read]);
        let (admin, _) = token(&key, &[Scope::Admin]);
        let need = uri("/clusters/aws/v1/peer/tasks/claim");
        let d = |h: &str, need| decide(Some(h), need, &trusted, &none, false, 1000);
        assert_eq!(d(&peer, need), Decision::Allow);
        assert!(matches!(d(&submit, need), Decision::Forbidden(m) if m.contains("peer")));
        assert!(matches!(d(&admin, need), Decision::Forbidden(_)));
        // And the peer token is nothing else at the edge.
        assert!(matches!(d(&peer, Scope::Submit), Decision::Forbidden(_)));
        assert!(matches!(d(&peer, Scope::Read), Decision::Forbidden(_)));
    }

    #[test]
    fn a_stealing_decision_needs_the_thiefs_own_peer_token() {
        let (key, trusted) = setup();
        let none = RevocationSet::default();
        let d = |h: Option<&str>, revoked: &RevocationSet, now: u64| {
            decide_peer(h, "gcp", &trusted, revoked, now)
        };
        let (gcp, gcp_id) = owned_token(&key, Some("gcp"), &[Scope::Peer]);
        assert_eq!(d(Some(&gcp), &none, 1000), Decision::Allow);
        assert!(matches!(d(None, &none, 1000), Decision::Unauthorized(_)));
        assert!(matches!(
            d(Some("Basic abc"), &none, 1000),
            Decision::Unauthorized(_)
        ));
        // Expired or revoked.
        assert!(matches!(
            d(Some(&gcp), &none, 1100),
            Decision::Unauthorized(_)
        ));
        let mut revoked = RevocationSet::default();
        revoked.insert(&gcp_id, 1);
        assert!(matches!(
            d(Some(&gcp), &revoked, 1000),
            Decision::Unauthorized(_)
        ));
        // Another scope (admin included), or another cluster's peer token.
        for scopes in [&[Scope::Admin][..], &[Scope::Read, Scope::Submit][..]] {
            let (t, _) = owned_token(&key, Some("gcp"), scopes);
            assert!(matches!(d(Some(&t), &none, 1000), Decision::Forbidden(_)));
        }
        let (aws, _) = owned_token(&key, Some("aws"), &[Scope::Peer]);
        assert!(matches!(d(Some(&aws), &none, 1000), Decision::Forbidden(m) if m.contains("aws")));
        // A per-cluster token cannot be checked here: refused.
        let legacy = format!("Bearer rly_0123456789ab_{}", "0".repeat(64));
        assert!(matches!(
            d(Some(&legacy), &none, 1000),
            Decision::Unauthorized(_)
        ));
    }

    fn edge_auth(trusted: TrustedKeys) -> EdgeAuth {
        EdgeAuth {
            path: PathBuf::from("/nonexistent/trusted-keys"),
            legacy_tokens: false,
            keys: RwLock::new((trusted, String::new())),
            revoked: RwLock::new(RevocationSet::default()),
            cache: Mutex::new(AuthCache::default()),
        }
    }

    #[test]
    fn a_remembered_answer_ends_with_a_revocation_or_a_key_change() {
        let (key, trusted) = setup();
        let auth = edge_auth(trusted.clone());
        // Issued at 1000 s for 100 s.
        let (reader, reader_id) = token(&key, &[Scope::Read]);
        let at = |s: u64| s * 1000;
        assert_eq!(
            auth.check_at(Some(&reader), Scope::Read, at(1000)),
            Decision::Allow
        );
        assert_eq!(auth.cache().len(), 1, "the allowed answer is remembered");
        // Refusals are not remembered, and a remembered read says nothing about submit.
        assert!(matches!(
            auth.check_at(Some(&reader), Scope::Submit, at(1000)),
            Decision::Forbidden(_)
        ));
        assert!(matches!(
            auth.check_at(Some("Bearer nonsense"), Scope::Read, at(1000)),
            Decision::Unauthorized(_)
        ));
        assert_eq!(auth.cache().len(), 1);
        // Never past the token's expiry (1100 s), even within the TTL of a check at 1099.5 s.
        assert_eq!(
            auth.check_at(Some(&reader), Scope::Read, 1_099_500),
            Decision::Allow
        );
        assert!(matches!(
            auth.check_at(Some(&reader), Scope::Read, at(1100)),
            Decision::Unauthorized(m) if m.contains("expired")
        ));

        // Revoked: refused on the very next check, though it was allowed a moment ago.
        assert_eq!(
            auth.check_at(Some(&reader), Scope::Read, at(1001)),
            Decision::Allow
        );
        let statement = reelay_identity::Revocation::sign(&key, &reader_id, 1001).unwrap();
        let (added, refused) = auth.merge_revocations(std::slice::from_ref(&statement), &trusted);
        assert_eq!((added.len(), refused.len()), (1, 0));
        assert!(matches!(
            auth.check_at(Some(&reader), Scope::Read, at(1001)),
            Decision::Unauthorized(m) if m.contains("revoked")
        ));
        // Merging a statement the edge already has changes nothing and forgets nothing.
        let (other, _) = token(&key, &[Scope::Read]);
        auth.check_at(Some(&other), Scope::Read, at(1001));
        auth.merge_revocations(&[statement], &trusted);
        assert_eq!(auth.cache().len(), 1);

        // A new keys file forgets everything too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trusted.keys");
        let mut auth = edge_auth(trusted);
        auth.path = path.clone();
        assert_eq!(
            auth.check_at(Some(&other), Scope::Read, at(1001)),
            Decision::Allow
        );
        let new_key = SigningKey::from_seed("k2", &[6u8; 32]).unwrap();
        std::fs::write(&path, format!("{}\n", new_key.trusted_line())).unwrap();
        auth.reload_keys();
        assert!(auth.cache().is_empty());
        assert!(matches!(
            auth.check_at(Some(&other), Scope::Read, at(1001)),
            Decision::Unauthorized(_)
        ));
    }

    #[test]
    fn messages_fit_in_a_json_string() {
        assert_eq!(header_safe("key \"k9\" \\ é\n"), "key 'k9' / ??");
    }
}
