//! A job's webhook deliveries (`GET /v1/jobs/{id}/webhooks`), redelivery by hand
//! (`POST /v1/jobs/{id}/webhooks/{delivery}/redeliver`) and the caller's notify secret
//! (`GET /v1/webhooks/secret`). A non-admin sees its own jobs' `notify` deliveries only: the
//! cluster's subscriptions are the operator's.

use crate::api::jobs::load;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;
use crate::view::rfc3339;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use reelay_jobs::{now_millis, Delivery, DeliveryAttempt};
use serde::Serialize;

#[derive(Serialize)]
struct AttemptView {
    n: u32,
    at: String,
    /// None when no answer came (refused, timed out).
    status_code: Option<u16>,
    latency_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct DeliveryView {
    /// The `webhook-id` header: the same on every attempt.
    id: String,
    endpoint: String,
    url: String,
    event_type: String,
    seq: i64,
    /// `pending`, `delivered` or `failed` (retries used up).
    state: String,
    attempts: u32,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<String>,
    attempt_log: Vec<AttemptView>,
}

fn delivery_view(d: Delivery, attempts: Vec<DeliveryAttempt>) -> DeliveryView {
    DeliveryView {
        next_attempt_at: (d.state == "pending").then(|| rfc3339(d.next_at)),
        id: d.id,
        endpoint: d.endpoint,
        url: d.url,
        event_type: d.kind,
        seq: d.seq,
        state: d.state,
        attempts: d.attempts,
        created_at: rfc3339(d.created_at),
        attempt_log: attempts
            .into_iter()
            .map(|a| AttemptView {
                n: a.n,
                at: rfc3339(a.at),
                status_code: a.status_code,
                latency_ms: a.latency_ms,
                error: a.error,
            })
            .collect(),
    }
}

async fn visible(
    st: &AppState,
    who: &Principal,
    id: &str,
) -> Result<Vec<(Delivery, Vec<DeliveryAttempt>)>, ApiError> {
    let job = load(st, who, id).await?;
    let all = st.store.job_deliveries(&job.id).await?;
    Ok(all
        .into_iter()
        .filter(|(d, _)| who.is_admin() || d.endpoint.starts_with("notify:"))
        .collect())
}

pub async fn list(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let deliveries: Vec<DeliveryView> = visible(&st, &who, &id)
        .await?
        .into_iter()
        .map(|(d, a)| delivery_view(d, a))
        .collect();
    Ok(Json(serde_json::json!({ "deliveries": deliveries })).into_response())
}

pub async fn redeliver(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let found = visible(&st, &who, &id)
        .await?
        .into_iter()
        .any(|(d, _)| d.id == delivery);
    if !found || !st.store.redeliver(&id, &delivery, now_millis()).await? {
        return Err(ApiError::not_found(format!(
            "job {id} has no webhook delivery {:?}",
            delivery.chars().take(80).collect::<String>()
        )));
    }
    let (d, a) = visible(&st, &who, &id)
        .await?
        .into_iter()
        .find(|(d, _)| d.id == delivery)
        .ok_or_else(|| ApiError::not_found(format!("no webhook delivery {delivery}")))?;
    Ok((StatusCode::ACCEPTED, Json(delivery_view(d, a))).into_response())
}

pub async fn secret(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Response, ApiError> {
    let owner = who.owner().unwrap_or_default();
    Ok(Json(serde_json::json!({
        "secret": crate::webhooks::sign::owner_secret(&st.notify_key, &owner),
    }))
    .into_response())
}
