//! API tokens, scopes and the guard in front of every `/v1` route.
//!
//! Two kinds of token are accepted:
//! - **signed** `rly2.…` tokens (`reelay_identity`), valid on every cluster that trusts the key
//!   that signed them; checked statelessly against the trusted keys and the revocation set
//!   ([`crate::identity`]). Their owner (`sub`) owns the jobs they submit, on every cluster.
//! - **per-cluster** `rly_<id>_<secret>` tokens (the first design, kept for migration): `id`
//!   names a row in this cluster's store, which keeps only the SHA-256 of the secret; the
//!   presented secret is hashed and compared in constant time. Their owner is their id.
//!
//! Secure by default, like Redis' protected mode: the API runs open only while the server
//! listens on loopback alone, has no trusted keys, no token was ever created, and the request
//! came straight from a loopback client. A request forwarded by a proxy (it carries
//! `X-Forwarded-For`, `Forwarded` or `X-Real-IP`, as the edge's nginx always adds) is never
//! treated as local: on one host the edge is a loopback client too, so without this rule a
//! loopback cluster behind an edge would serve the internet anonymously.

use crate::error::{ApiError, ErrorCode};
use crate::identity::Identity;
use crate::state::AppState;
use axum::extract::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use reelay_jobs::{ApiToken, JobStore, NewToken};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a token may do (shared with the edge and the CLI).
pub use reelay_identity::Scope;

const PREFIX: &str = "rly_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf)?;
    Ok(hex(&buf))
}

/// Hex SHA-256 of a token's secret part: the only thing the store keeps.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Equal-length byte strings compared without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `rly_<id>_<secret>` → (id, secret), or None for anything of another shape.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hexish = |s: &str, n: usize| s.len() == n * 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexish(id, ID_BYTES) && hexish(secret, SECRET_BYTES)).then_some((id, secret))
}

/// A freshly created token: the full secret string is shown once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub stored: ApiToken,
}

/// Creates a token with these scopes in the store (`reelay token create`).
pub async fn issue_token(
    store: &dyn JobStore,
    name: &str,
    scopes: &[Scope],
) -> Result<IssuedToken, String> {
    if scopes.is_empty() {
        return Err("give at least one --scope (submit, read, admin)".into());
    }
    if name.len() > 100 || name.chars().any(|c| c.is_control()) {
        return Err("the name must be at most 100 printable characters".into());
    }
    let id = random_hex(ID_BYTES).map_err(|e| format!("no randomness: {e}"))?;
    let secret = random_hex(SECRET_BYTES).map_err(|e| format!("no randomness: {e}"))?;
    let stored = store
        .create_token(NewToken {
            id: id.clone(),
            name: name.to_string(),
            secret_hash: hash_secret(&secret),
            scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(IssuedToken {
        token: format!("{PREFIX}{id}_{secret}"),
        stored,
    })
}

/// Who is calling, as far as the handlers care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id (the rate limit's key); None in open mode.
    pub token_id: Option<String>,
    /// Who owns the jobs it submits: a signed token's `sub`, a per-cluster token's id.
    pub owner: Option<String>,
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// Open mode (loopback, no tokens): everything is allowed and every job is visible.
    pub fn open() -> Principal {
        Principal {
            token_id: None,
            owner: None,
            scopes: Scope::ALL.to_vec(),
        }
    }

    /// A per-cluster token: it owns its jobs itself.
    pub fn of_token(id: &str, scopes: Vec<Scope>) -> Principal {
        Principal {
            token_id: Some(id.to_string()),
            owner: Some(id.to_string()),
            scopes,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.token_id.is_none() || self.scopes.contains(&Scope::Admin)
    }

    /// `admin` (and open mode) implies every scope but `peer`, which a token must carry itself.
    pub fn has(&self, scope: Scope) -> bool {
        if scope == Scope::Peer {
            return self.token_id.is_some() && self.scopes.contains(&Scope::Peer);
        }
        self.is_admin() || self.scopes.contains(&scope)
    }

    /// The owner recorded on jobs this principal submits.
    pub fn owner(&self) -> Option<String> {
        self.owner.clone()
    }

    /// Listing filter: None (everything) for admins and open mode, else the owner.
    pub fn owner_filter(&self) -> Option<&str> {
        if self.is_admin() {
            None
        } else {
            self.owner.as_deref()
        }
    }

    /// Whether this principal may see a job with this owner.
    pub fn may_see(&self, owner: Option<&str>) -> bool {
        self.is_admin() || (owner.is_some() && owner == self.owner.as_deref())
    }
}

/// The scope a `/v1` request needs: reading is `read`, changing is `submit`.
pub fn required_scope(method: &Method) -> Scope {
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        Scope::Read
    } else {
        Scope::Submit
    }
}

/// Whether an address to listen on is loopback only.
pub fn is_loopback_listen(listen: &str) -> bool {
    listen
        .parse::<SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false)
}

/// Whether a request came straight from a loopback client: a loopback peer, and no header a
/// proxy adds. Without the peer address (no `ConnectInfo`), it did not.
pub fn is_direct_local(req: &Request) -> bool {
    let forwarded = ["x-forwarded-for", "forwarded", "x-real-ip"]
        .iter()
        .any(|h| req.headers().contains_key(*h));
    let peer_loopback = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    peer_loopback && !forwarded
}

/// Per-process authentication state and the rate limiter.
pub struct Guard {
    /// Listening on loopback only: the one case in which the API may run open.
    pub loopback_only: bool,
    /// Signed tokens: trusted keys, issuer key, revocations. With it, tokens are always required.
    pub identity: Option<Arc<Identity>>,
    /// Open mode also for forwarded requests (explicit opt-in for benchmarks and tests).
    pub allow_anonymous: bool,
    /// Set once a token is seen in the store; never cleared (tokens are never deleted).
    locked: AtomicBool,
    warned: AtomicBool,
    warned_forwarded: AtomicBool,
    pub limiter: RateLimiter,
}

impl Guard {
    pub fn new(loopback_only: bool, rate_limit_per_minute: u32) -> Guard {
        Self::with_identity(loopback_only, rate_limit_per_minute, None, false)
    }

    pub fn with_identity(
        loopback_only: bool,
        rate_limit_per_minute: u32,
        identity: Option<Arc<Identity>>,
        allow_anonymous: bool,
    ) -> Guard {
        Guard {
            loopback_only,
            locked: AtomicBool::new(!loopback_only || identity.is_some()),
            identity,
            allow_anonymous,
            warned: AtomicBool::new(false),
            warned_forwarded: AtomicBool::new(false),
            limiter: RateLimiter::new(rate_limit_per_minute),
        }
    }

    /// Whether `/v1` needs a token for a request that came straight from a loopback client
    /// (`direct_local`) or not. Open mode asks the store each time (a cheap EXISTS), so a token
    /// created with `reelay token create` locks a running server at once.
    pub async fn required(
        &self,
        store: &dyn JobStore,
        direct_local: bool,
    ) -> Result<bool, ApiError> {
        if self.locked.load(Ordering::Relaxed) {
            return Ok(true);
        }
        if store.any_tokens().await? {
            self.locked.store(true, Ordering::Relaxed);
            tracing::info!("an API token exists: every /v1 route now requires a token");
            return Ok(true);
        }
        if direct_local || self.allow_anonymous {
            return Ok(false);
        }
        if !self.warned_forwarded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a request forwarded by a proxy (X-Forwarded-For) arrived: open mode serves only \
                 direct loopback clients, so it needs a token (configure trusted_keys, or \
                 --allow-anonymous for a benchmark)"
            );
        }
        Ok(true)
    }

    /// Logs once at start-up how this server authenticates.
    pub async fn announce(&self, store: &dyn JobStore, listen: &str) {
        if let Some(id) = &self.identity {
            tracing::info!(
                trusted_keys = ?id.key_ids(),
                issuer = id.issuer().map(|k| k.kid().to_string()).unwrap_or_else(|| "-".into()),
                "signed tokens: /v1 requires a bearer token"
            );
            return;
        }
        match self.required(store, true).await {
            Ok(false) if !self.warned.swap(true, Ordering::Relaxed) => tracing::warn!(
                %listen,
                allow_anonymous = self.allow_anonymous,
                "OPEN MODE: no API token exists and the server listens on loopback only, so /v1 \
                 needs no token from local clients (local development). Requests forwarded by a \
                 proxy still need one unless --allow-anonymous. Configure trusted_keys or create a \
                 token with `reelay token create` to require tokens; a non-loopback --listen \
                 always requires them"
            ),
            Ok(true) if self.loopback_only => {
                tracing::info!("API tokens exist: /v1 requires a bearer token")
            }
            Ok(true) => tracing::info!(
                %listen,
                "listening beyond loopback: /v1 requires a bearer token (reelay token create)"
            ),
            _ => {}
        }
    }
}

fn unauthorized(message: impl Into<String>) -> Response {
    let mut resp = ApiError::new(ErrorCode::Unauthorized, message).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"reelay\""),
    );
    resp
}

/// The bearer token of an `Authorization` header, if it has that shape.
pub fn bearer(value: &HeaderValue) -> Option<&str> {
    let (scheme, rest) = value.to_str().ok()?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Looks up and checks the bearer token of a request.
pub(crate) async fn authenticate(
    store: &dyn JobStore,
    identity: Option<&Identity>,
    value: Option<&HeaderValue>,
) -> Result<(Principal, bool), Response> {
    let Some(value) = value else {
        return Err(unauthorized(
            "this API requires a token: send Authorization: Bearer <token> (reelay --token / REELAY_TOKEN)",
        ));
    };
    let presented = bearer(value)
        .ok_or_else(|| unauthorized("malformed Authorization header: expected Bearer <token>"))?;
    if reelay_identity::token::is_signed_token(presented) {
        let Some(identity) = identity else {
            return Err(unauthorized(
                "this cluster has no trusted keys configured, so it accepts no signed (rly2.) token",
            ));
        };
        let claims = identity
            .verify(presented)
            .map_err(|e| unauthorized(e.to_string()))?;
        let principal = Principal {
            token_id: Some(claims.jti),
            owner: Some(claims.sub),
            scopes: claims.scp,
        };
        return Ok((principal, false));
    }
    let invalid = || unauthorized("invalid, unknown or revoked token");
    let (id, secret) = parse_token(presented).ok_or_else(invalid)?;
    let token = store
        .get_token(id)
        .await
        .map_err(|e| ApiError::from(e).into_response())?
        .ok_or_else(invalid)?;
    let hash = hash_secret(secret);
    if !constant_time_eq(hash.as_bytes(), token.secret_hash.as_bytes()) || token.is_revoked() {
        return Err(invalid());
    }
    // last_used_at is for humans: a minute's precision spares a write per request.
    let stale = token
        .last_used_at
        .is_none_or(|t| reelay_jobs::now_millis() - t > 60_000);
    let principal = Principal::of_token(
        &token.id,
        token.scopes.iter().filter_map(|s| s.parse().ok()).collect(),
    );
    Ok((principal, stale))
}

/// The `/v1` middleware: authentication, scope, rate limit. Puts a [`Principal`] into the
/// request for the handlers.
pub async fn guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let required = match st.auth.required(&*st.store, is_direct_local(&req)).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let principal = if required {
        let identity = st.auth.identity.as_deref();
        match authenticate(
            &*st.store,
            identity,
            req.headers().get(header::AUTHORIZATION),
        )
        .await
        {
            Ok((p, stale)) => {
                if let (true, Some(id)) = (stale, p.token_id.clone()) {
                    let store = st.store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store.touch_token(&id).await {
                            tracing::debug!(error = %e, "recording token use");
                        }
                    });
                }
                p
            }
            Err(resp) => return resp,
        }
    } else {
        Principal::open()
    };
    let need = required_scope(req.method());
    if !principal.has(need) {
        return ApiError::new(
            ErrorCode::Forbidden,
            format!("this token lacks the {need} scope"),
        )
        .into_response();
    }
    // Per token. Open mode is not limited: it exists only on a loopback-only server, where every
    // client is local and one address cannot tell them apart.
    if let Some(id) = &principal.token_id {
        if let Err(wait) = st.auth.limiter.check(id) {
            let secs = wait.as_secs().max(1);
            return ApiError {
                retry_after: Some(secs),
                ..ApiError::new(
                    ErrorCode::RateLimited,
                    format!("too many requests; retry in {secs} s"),
                )
            }
            .into_response();
        }
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Token buckets per key (token id): `per_minute` requests a minute
/// sustained, bursts up to a minute's worth. 0 disables the limit.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Above this many keys, full (idle) buckets are dropped: they carry no information.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let cap = f64::from(self.per_minute);
        let rate = cap / 60.0;
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(key) {
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < cap);
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(cap);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate).max(Duration::from_secs(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_their_shape() {
        let id = "0123456789ab";
        let secret = "f".repeat(64);
        let t = format!("rly_{id}_{secret}");
        assert_eq!(parse_token(&t), Some((id, secret.as_str())));
        for bad in [
            "",
            "rly_",
            "rly__",
            &format!("rly_{id}"),
            &format!("xyz_{id}_{secret}"),
            &format!("rly_{id}_{}", "f".repeat(63)),
            &format!("rly_{id}_{}g", "f".repeat(63)),
            &format!("rly_{id}x_{secret}"),
            &format!("rly_{id}_{secret}_x"),
        ] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn hashes_and_comparison() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn principals_see_their_own_jobs_unless_admin() {
        let reader = Principal::of_token("t1", vec![Scope::Read]);
        assert!(reader.has(Scope::Read) && !reader.has(Scope::Submit));
        assert!(reader.may_see(Some("t1")));
        assert!(!reader.may_see(Some("t2")) && !reader.may_see(None));
        assert_eq!(reader.owner_filter(), Some("t1"));
        let admin = Principal::of_token("t9", vec![Scope::Admin]);
        assert!(admin.has(Scope::Submit) && admin.may_see(None) && admin.may_see(Some("t1")));
        assert_eq!(admin.owner_filter(), None);
        assert!(Principal::open().may_see(None));
        assert_eq!(required_scope(&Method::GET), Scope::Read);
        assert_eq!(required_scope(&Method::POST), Scope::Submit);
        assert_eq!(required_scope(&Method::DELETE), Scope::Submit);
    }

    #[test]
    fn loopback_listen_detection() {
        assert!(is_loopback_listen("127.0.0.1:8080"));
        assert!(is_loopback_listen("[::1]:8080"));
        assert!(!is_loopback_listen("0.0.0.0:8080"));
        assert!(!is_loopback_listen("[::]:8080"));
        assert!(!is_loopback_listen("10.0.0.5:8080"));
    }

    #[test]
    fn token_bucket_refills_over_time() {
        let l = RateLimiter::new(60); // one a second, bursts of 60
        let t0 = Instant::now();
        for _ in 0..60 {
            assert!(l.check_at("a", t0).is_ok());
        }
        let wait = l.check_at("a", t0).unwrap_err();
        assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2));
        assert!(l.check_at("b", t0).is_ok(), "buckets are per key");
        assert!(l.check_at("a", t0 + Duration::from_millis(1100)).is_ok());
        assert!(l.check_at("a", t0 + Duration::from_millis(1100)).is_err());
        let off = RateLimiter::new(0);
        for _ in 0..10_000 {
            assert!(off.check_at("a", t0).is_ok());
        }
    }
}
