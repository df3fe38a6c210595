//! The token format: `rly2.<claims>.<signature>`, both parts base64url.
//!
//! `claims` is JSON (`kid`, `jti`, `sub`, `scp`, `iat`, optional `exp` and `name`); the signature
//! is Ed25519 by the key `kid` over the ASCII text `rly2.<claims>`, so the version prefix is
//! signed too. Not a JWT on purpose: one algorithm, no header to negotiate it, no `alg: none`.
//! The key id sits inside the signed claims, so it cannot be swapped.
//!
//! `sub` is the **owner**: jobs belong to it, on every cluster. Several tokens may share an
//! owner (a token re-issued after a key rotation keeps its jobs).

use crate::keys::{SigningKey, TrustedKeys, VerifyError, MAX_KEY_ID};
use crate::revocation::RevocationSet;
use crate::scope::Scope;
use crate::{b64, random_hex, unb64, valid_name};
use serde::{Deserialize, Serialize};

pub const TOKEN_PREFIX: &str = "rly2.";
/// Owners are names like `team-a` or a token id; they are stored with every job.
pub const MAX_OWNER: usize = 64;
/// A token issued a little in the future is a clock difference between machines, not an attack.
pub const CLOCK_SKEW_SECONDS: u64 = 300;
/// A bound on what is parsed before the signature is checked.
const MAX_TOKEN_BYTES: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Key id of the issuer key that signed the token.
    pub kid: String,
    /// Token id (16 hex digits): what a revocation names.
    pub jti: String,
    /// Owner of the jobs submitted with the token.
    pub sub: String,
    pub scp: Vec<Scope>,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds; absent = until revoked or its key is retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// A label for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl Claims {
    pub fn has(&self, scope: Scope) -> bool {
        Scope::granted(&self.scp, scope)
    }
}

/// Why a token was refused. Never transient: the same token fails the same way until the
/// trusted keys change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("the token is signed with key {0:?}, which this service does not trust (retired or unknown)")]
    UnknownKey(String),
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is issued in the future (check the clocks)")]
    NotYetValid,
    #[error("the token was revoked")]
    Revoked,
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed_token",
            TokenError::UnknownKey(_) => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::Revoked => "token_revoked",
        }
    }

    pub fn is_transient(&self) -> bool {
        false
    }
}

/// What a new token should say; the rest (key id, token id, issue time) comes from issuing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClaims {
    /// Owner; None = the token's own id (a token of its own, like a per-cluster token).
    pub owner: Option<String>,
    pub scopes: Vec<Scope>,
    pub name: String,
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IssueError(pub String);

impl IssueError {
    pub fn code(&self) -> &'static str {
        "invalid_token_request"
    }

    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Checks a request for a new token (pure).
pub fn check_new(new: &NewClaims) -> Result<(), IssueError> {
    if new.scopes.is_empty() {
        return Err(IssueError(
            "give at least one scope (submit, read, admin)".into(),
        ));
    }
    if new.name.len() > 100 || new.name.chars().any(|c| c.is_control()) {
        return Err(IssueError(
            "the name must be at most 100 printable characters".into(),
        ));
    }
    if let Some(o) = &new.owner {
        if !valid_name(o, MAX_OWNER) {
            return Err(IssueError(format!(
                "owner {o:?}: 1-{MAX_OWNER} characters of A-Z a-z 0-9 . _ -"
            )));
        }
    }
    if new.ttl_seconds == Some(0) {
        return Err(IssueError(
            "the lifetime must be at least one second".into(),
        ));
    }
    Ok(())
}

/// Signs a new token at `now` (Unix seconds) with a fresh random id.
pub fn issue(key: &SigningKey, new: &NewClaims, now: u64) -> Result<(String, Claims), IssueError> {
    check_new(new)?;
    let jti = random_hex(8).map_err(|e| IssueError(format!("no randomness: {e}")))?;
    let mut scp = new.scopes.clone();
    scp.sort();
    scp.dedup();
    let claims = Claims {
        kid: key.kid().to_string(),
        sub: new.owner.clone().unwrap_or_else(|| jti.clone()),
        jti,
        scp,
        iat: now,
        exp: new.ttl_seconds.map(|t| now.saturating_add(t)),
        name: new.name.clone(),
    };
    Ok((sign(key, &claims), claims))
}

/// The token text for these claims (pure apart from the signature).
pub fn sign(key: &SigningKey, claims: &Claims) -> String {
    let body = b64(&serde_json::to_vec(claims).expect("claims serialize"));
    let signed = format!("{TOKEN_PREFIX}{body}");
    let sig = b64(&key.sign(signed.as_bytes()));
    format!("{signed}.{sig}")
}

/// Whether `token` looks like a signed token at all (as opposed to a per-cluster `rly_…` one).
pub fn is_signed_token(token: &str) -> bool {
    token.starts_with(TOKEN_PREFIX)
}

/// Verifies a token at `now` (Unix seconds): shape, key, signature, time, revocation.
pub fn verify(
    token: &str,
    trusted: &TrustedKeys,
    revoked: &RevocationSet,
    now: u64,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("too long"));
    }
    let rest = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(TokenError::Malformed("not a rly2. token"))?;
    let (body, sig) = rest
        .split_once('.')
        .ok_or(TokenError::Malformed("expected rly2.<claims>.<signature>"))?;
    let json = unb64(body).ok_or(TokenError::Malformed("claims are not base64url"))?;
    let sig = unb64(sig).ok_or(TokenError::Malformed("signature is not base64url"))?;
    let claims: Claims =
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed("unreadable claims"))?;
    if !valid_name(&claims.kid, MAX_KEY_ID) {
        return Err(TokenError::Malformed("bad key id"));
    }
    let signed_len = TOKEN_PREFIX.len() + body.len();
    trusted
        .verify(&claims.kid, &token.as_bytes()[..signed_len], &sig)
        .map_err(|e| match e {
            VerifyError::UnknownKey => TokenError::UnknownKey(claims.kid.clone()),
            VerifyError::BadSignature => TokenError::BadSignature,
        })?;
    // Signed, so these hold unless an issuer was broken; checked anyway since they name rows.
    if claims.jti.len() != 16 || !claims.jti.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Malformed("bad token id"));
    }
    if !valid_name(&claims.sub, MAX_OWNER) || claims.scp.is_empty() {
        return Err(TokenError::Malformed("bad owner or scopes"));
    }
    if claims.iat > now.saturating_add(CLOCK_SKEW_SECONDS) {
        return Err(TokenError::NotYetValid);
    }
    if claims.exp.is_some_and(|exp| now >= exp) {
        return Err(TokenError::Expired);
    }
    if revoked.contains(&claims.jti) {
        return Err(TokenError::Revoked);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SigningKey, TrustedKeys) {
        let key = SigningKey::from_seed("k1", &[7u8; 32]).unwrap();
        let trusted = TrustedKeys::from_keys([("k1".to_string(), key.public_key())]);
        (key, trusted)
    }

    fn new(owner: Option<&str>, scopes: &[Scope], ttl: Option<u64>) -> NewClaims {
        NewClaims {
            owner: owner.map(str::to_string),
            scopes: scopes.to_vec(),
            name: "ci".into(),
            ttl_seconds: ttl,
        }
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_owner() {
        let (key, trusted) = setup();
        let none = RevocationSet::default();
        let (t, c) = issue(
            &key,
            &new(
                Some("team-a"),
                &[Scope::Read, Scope::Submit, Scope::Read],
                None,
            ),
            1000,
        )
        .unwrap();
        assert!(t.starts_with("rly2.") && is_signed_token(&t));
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "header-safe: {t}"
        );
        let v = verify(&t, &trusted, &none, 1000).unwrap();
        assert_eq!(v, c);
        assert_eq!((v.sub.as_str(), v.kid.as_str()), ("team-a", "k1"));
        assert_eq!(v.scp, vec![Scope::Submit, Scope::Read]);
        // Without an owner the token owns its jobs itself.
        let (t, c) = issue(&key, &new(None, &[Scope::Read], None), 1000).unwrap();
        assert_eq!(c.sub, c.jti);
        assert_eq!(verify(&t, &trusted, &none, 5_000_000).unwrap().sub, c.jti);
    }

    #[test]
    fn expiry_clock_skew_and_revocation_with_time_passed_in() {
        let (key, trusted) = setup();
        let (t, c) = issue(&key, &new(None, &[Scope::Read], Some(60)), 1000).unwrap();
        let none = RevocationSet::default();
        assert!(verify(&t, &trusted, &none, 1059).is_ok());
        assert_eq!(verify(&t, &trusted, &none, 1060), Err(TokenError::Expired));
        assert!(verify(&t, &trusted, &none, 1000 - CLOCK_SKEW_SECONDS).is_ok());
        assert_eq!(
            verify(&t, &trusted, &none, 1000 - CLOCK_SKEW_SECONDS - 1),
            Err(TokenError::NotYetValid)
        );
        let mut revoked = RevocationSet::default();
        revoked.insert(&c.jti, 1010);
        let e = verify(&t, &trusted, &revoked, 1020).unwrap_err();
        assert_eq!((e.code(), e.is_transient()), ("token_revoked", false));
    }

    #[test]
    fn forgeries_and_tampering_are_refused() {
        let (key, trusted) = setup();
        let none = RevocationSet::default();
        let (t, _) = issue(&key, &new(Some("a"), &[Scope::Read], None), 1000).unwrap();
        // Another key with the same id: bad signature.
        let other = SigningKey::from_seed("k1", &[8u8; 32]).unwrap();
        let (forged, _) = issue(&other, &new(Some("a"), &[Scope::Admin], None), 1000).unwrap();
        assert_eq!(
            verify(&forged, &trusted, &none, 1000),
            Err(TokenError::BadSignature)
        );
        // An unknown key id.
        let k9 = SigningKey::from_seed("k9", &[9u8; 32]).unwrap();
        let (t9, _) = issue(&k9, &new(None, &[Scope::Read], None), 1000).unwrap();
        assert_eq!(
            verify(&t9, &trusted, &none, 1000),
            Err(TokenError::UnknownKey("k9".into()))
        );
        // Claims swapped under a valid signature (scope escalation).
        let (_, rest) = t.split_at(TOKEN_PREFIX.len());
        let (_, sig) = rest.split_once('.').unwrap();
        let mut claims: Claims =
            serde_json::from_slice(&unb64(rest.split_once('.').unwrap().0).unwrap()).unwrap();
        claims.scp = vec![Scope::Admin];
        let swapped = format!(
            "{TOKEN_PREFIX}{}.{sig}",
            b64(&serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(
            verify(&swapped, &trusted, &none, 1000),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "rly2.",
            "rly2.abc",
            "rly_0123456789ab_00",
            "rly2.!!!.AAAA",
            &format!("{t}x"),
            &"rly2.".repeat(1000),
        ] {
            assert!(verify(bad, &trusted, &none, 1000).is_err(), "{bad}");
        }
        // Unknown claim fields are refused, not ignored.
        let extra = br#"{"kid":"k1","jti":"0123456789abcdef","sub":"a","scp":["read"],"iat":1,"root":true}"#;
        let body = format!("{TOKEN_PREFIX}{}", b64(extra));
        let tok = format!("{body}.{}", b64(&key.sign(body.as_bytes())));
        assert!(matches!(
            verify(&tok, &trusted, &none, 1000),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn new_token_requests_are_checked() {
        assert!(check_new(&new(None, &[], None)).is_err());
        assert!(check_new(&new(Some("a b"), &[Scope::Read], None)).is_err());
        assert!(check_new(&new(Some(&"o".repeat(65)), &[Scope::Read], None)).is_err());
        assert!(check_new(&new(None, &[Scope::Read], Some(0))).is_err());
        assert!(check_new(&new(Some("team.a-1_x"), &[Scope::Read], Some(1))).is_ok());
    }
}
