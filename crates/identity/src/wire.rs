//! The JSON of the identity endpoints of a cluster:
//!
//! - `POST /v1/tokens` (admin): [`CreateTokenRequest`] → 201 [`CreatedToken`]
//! - `DELETE /v1/tokens/{id}` (admin): → 200 [`RevokedToken`]
//! - `GET /v1/identity/revocations?after=N` (open): → [`RevocationPage`]
//! - `POST /v1/identity/revocations` (open; every statement must verify): [`RevocationPush`] →
//!   [`PushResult`]

use crate::revocation::Revocation;
use crate::scope::Scope;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub name: String,
    /// Owner of the jobs the token submits; absent = the token's own id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// The token itself: shown once, never stored anywhere.
    pub token: String,
    pub id: String,
    pub owner: String,
    pub scopes: Vec<Scope>,
    pub key_id: String,
    /// Unix seconds.
    pub issued_at: u64,
    pub expires_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedToken {
    pub id: String,
    /// Unix milliseconds.
    pub revoked_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationPage {
    pub revocations: Vec<Revocation>,
    /// Ask with `after=next_after` for what came later.
    pub next_after: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationPush {
    pub revocations: Vec<Revocation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResult {
    pub accepted: usize,
    pub refused: usize,
}
