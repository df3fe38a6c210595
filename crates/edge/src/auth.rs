//! Token checks at the edge (`[auth]` in edge.toml).
//!
//! nginx asks the controller (`auth_request`) before it forwards a `/v1` request; the answer
//! comes from [`decide`], a pure function of the `Authorization` header, the method, the trusted
//! keys, the revocations the edge has collected and the time. The edge holds only public keys:
//! it can check tokens but not mint them. Clusters check every token again themselves and never
//! trust anything the edge asserts, so a request that slips past the edge (say, while the
//! controller is down and nginx forwards without asking) still meets a full check.

use crate::config::AuthConfig;
use reelay_identity::keys::load_trusted_keys;
use reelay_identity::token::{self, is_signed_token};
use reelay_identity::{RevocationSet, Scope, TrustedKeys};
use std::path::PathBuf;
use std::sync::RwLock;

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
    let Some(value) = authorization else {
        return Decision::Unauthorized(
            "this API requires a token: send Authorization: Bearer <token>".into(),
        );
    };
    let Some(presented) = value
        .trim()
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
    else {
        return Decision::Unauthorized(
            "malformed Authorization header: expected Bearer <token>".into(),
        );
    };
    if !is_signed_token(presented) {
        return if legacy_tokens && presented.starts_with("rly_") {
            // A per-cluster token: only the cluster that issued it can check it.
            Decision::Allow
        } else {
            Decision::Unauthorized("invalid, unknown or revoked token".into())
        };
    }
    match token::verify(presented, trusted, revoked, now) {
        Ok(claims) => {
            if claims.has(need) {
                Decision::Allow
            } else {
                Decision::Forbidden(format!("this token lacks the {need} scope"))
            }
        }
        Err(e) => Decision::Unauthorized(e.to_string()),
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

/// The trusted keys (re-read when the file changes) and the revocations collected from the
/// clusters.
pub struct EdgeAuth {
    path: PathBuf,
    pub legacy_tokens: bool,
    keys: RwLock<(TrustedKeys, String)>,
    pub(crate) revoked: RwLock<RevocationSet>,
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
        })
    }

    pub fn trusted(&self) -> TrustedKeys {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    pub fn check(&self, authorization: Option<&str>, need: Scope) -> Decision {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
        decide(
            authorization,
            need,
            &keys.0,
            &revoked,
            self.legacy_tokens,
            now,
        )
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

    #[test]
    fn messages_fit_in_a_json_string() {
        assert_eq!(header_safe("key \"k9\" \\ é\n"), "key 'k9' / ??");
    }
}
