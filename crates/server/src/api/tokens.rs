//! Tokens and revocations over HTTP (see `reelay_identity::wire` for the bodies).
//!
//! Creating and revoking need an `admin` token and this cluster's issuer key. The revocation
//! list is open: it names revoked token ids only (not secrets), and every statement in it is
//! signed, so the edge can carry it between clusters, and a cluster accepts a pushed statement
//! only if it verifies against its trusted keys.

use crate::auth::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::identity::Identity;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use reelay_identity::revocation::valid_token_id;
use reelay_identity::token::{self, NewClaims};
use reelay_identity::wire::{
    CreateTokenRequest, CreatedToken, PushResult, RevocationPage, RevocationPush, RevokedToken,
};
use reelay_identity::{Revocation, SigningKey};
use reelay_jobs::now_millis;
use std::sync::Arc;

/// A push carries at most this many statements (the edge sends batches of 200).
const MAX_PUSH: usize = 1000;
/// Rows re-read below the cursor, like the in-process refresh (out-of-order commits).
const RECHECK_WINDOW_MS: i64 = 30_000;

fn identity(st: &AppState) -> Result<Arc<Identity>, ApiError> {
    st.auth.identity.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NoIdentity,
            "this cluster has no trusted keys configured (trusted_keys), so it has no signed tokens",
        )
    })
}

fn issuer(id: &Identity) -> Result<SigningKey, ApiError> {
    id.issuer().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotAnIssuer,
            "this cluster has no issuer key (issuer_key): create and revoke tokens on a cluster \
             that has one, or offline with `reelay token create --issuer-key FILE`",
        )
    })
}

fn admin_only(who: &Principal) -> Result<(), ApiError> {
    // Open mode never coexists with an identity, but say it plainly: only a real admin token.
    if who.token_id.is_some() && who.has(crate::auth::Scope::Admin) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "creating and revoking tokens needs an admin token",
        ))
    }
}

/// 1000 statements of about 200 bytes each.
const PUSH_BODY_BYTES: usize = 256 * 1024;

async fn read_body(body: axum::body::Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(format!("the body is larger than {limit} bytes")))
}

fn now_seconds() -> u64 {
    (now_millis() / 1000).max(0) as u64
}

/// `POST /v1/tokens`: signs a new token with this cluster's issuer key.
pub async fn create(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    admin_only(&who)?;
    let id = identity(&st)?;
    let key = issuer(&id)?;
    let body = read_body(body, st.cfg.max_json_bytes).await?;
    let req: CreateTokenRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("token request: {e}")))?;
    let new = NewClaims {
        owner: req.owner,
        scopes: req.scopes,
        name: req.name,
        ttl_seconds: req.expires_in_seconds,
    };
    let (text, claims) = token::issue(&key, &new, now_seconds())
        .map_err(|e| ApiError::coded(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string()))?;
    tracing::info!(
        token_id = %claims.jti,
        owner = %claims.sub,
        scopes = ?claims.scp,
        key_id = %claims.kid,
        by = who.token_id.as_deref().unwrap_or(""),
        "token issued"
    );
    let created = CreatedToken {
        token: text,
        id: claims.jti,
        owner: claims.sub,
        scopes: claims.scp,
        key_id: claims.kid,
        issued_at: claims.iat,
        expires_at: claims.exp,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `DELETE /v1/tokens/{id}`: revokes a signed token everywhere (through the edge's
/// propagation) and, if this cluster has a per-cluster token with that id, that one too.
pub async fn revoke(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(token_id): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(&who)?;
    let token_id = token_id.to_ascii_lowercase();
    let revoked_at = now_millis().max(0) as u64;
    if valid_token_id(&token_id) {
        let id = identity(&st)?;
        // Only an issuer revokes: its key signs the statement other clusters will check.
        issuer(&id)?;
        st.store
            .add_revocation(&token_id, revoked_at as i64)
            .await?;
        id.note_revoked(&token_id, revoked_at);
        tracing::info!(%token_id, by = who.token_id.as_deref().unwrap_or(""), "token revoked");
    } else if crate::auth::parse_token(&format!("rly_{token_id}_{}", "0".repeat(64))).is_some() {
        if !st.store.revoke_token(&token_id).await? {
            return Err(ApiError::not_found(format!(
                "no active per-cluster token {token_id} on this cluster"
            )));
        }
        tracing::info!(%token_id, "per-cluster token revoked");
    } else {
        return Err(ApiError::new(
            ErrorCode::InvalidTokenId,
            "a token id is 16 hex digits (signed tokens) or 12 (per-cluster tokens)",
        ));
    }
    Ok(Json(RevokedToken {
        id: token_id,
        revoked_at,
    })
    .into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct AfterQuery {
    #[serde(default)]
    after: u64,
}

/// `GET /v1/identity/revocations?after=N`: this cluster's revocations after `N`, each signed now
/// with the current issuer key (so they stay verifiable after the key that first signed them is
/// retired).
pub async fn list_revocations(
    State(st): State<AppState>,
    q: Result<Query<AfterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    // A malformed cursor is the caller's mistake, answered in JSON like every other error.
    let Query(q) = q.map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))?;
    let id = identity(&st)?;
    let key = issuer(&id)?;
    let after = i64::try_from(q.after).unwrap_or(i64::MAX);
    let rows = st
        .store
        .revocations_since(after, now_millis() - RECHECK_WINDOW_MS, 1000)
        .await?;
    let next_after = rows.iter().map(|r| r.seq).max().unwrap_or(after).max(after);
    let revocations = rows
        .iter()
        .filter_map(|r| Revocation::sign(&key, &r.token_id, r.revoked_at.max(0) as u64).ok())
        .collect();
    Ok(Json(RevocationPage {
        revocations,
        next_after: next_after.max(0) as u64,
    })
    .into_response())
}

/// `POST /v1/identity/revocations`: statements from the edge (or an operator); each must verify
/// against this cluster's trusted keys, so nobody can revoke someone else's token by pushing.
pub async fn push_revocations(
    State(st): State<AppState>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let id = identity(&st)?;
    let body = read_body(body, PUSH_BODY_BYTES).await?;
    let push: RevocationPush = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("revocations: {e}")))?;
    if push.revocations.len() > MAX_PUSH {
        return Err(ApiError::too_large(format!(
            "at most {MAX_PUSH} revocations per request"
        )));
    }
    let trusted = id.trusted();
    let (mut accepted, mut refused) = (0, 0);
    for r in &push.revocations {
        match r.verify(&trusted) {
            Ok(()) => {
                st.store.add_revocation(&r.id, r.revoked_at as i64).await?;
                id.note_revoked(&r.id, r.revoked_at);
                accepted += 1;
            }
            Err(e) => {
                tracing::warn!(token_id = %r.id, error = %e, "refused a revocation statement");
                refused += 1;
            }
        }
    }
    if accepted > 0 {
        tracing::debug!(accepted, refused, "revocations received");
    }
    Ok(Json(PushResult { accepted, refused }).into_response())
}
