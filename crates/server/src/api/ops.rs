//! Presets, load, health, readiness, metrics and the OpenAPI document.

use crate::error::ApiError;
use crate::metrics as m;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use reelay_protocol::{LoadReport, PresetList};

pub async fn presets() -> Json<PresetList> {
    Json(PresetList {
        presets: reelay_media::preset_list(),
    })
}

pub async fn load_report(State(st): State<AppState>) -> Result<Json<LoadReport>, ApiError> {
    let c = st.store.counts().await?;
    let capacity = st.capacity.max(1);
    Ok(Json(LoadReport {
        cluster: st.cfg.cluster.clone(),
        capacity: st.capacity,
        running: c.running,
        queued: c.queued,
        backlog_seconds: (c.queued_estimated_seconds / capacity as f64 * 10.0).round() / 10.0,
        accepting: st.is_accepting(),
    }))
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready when the job store, the object storage and ffmpeg can all be used.
pub async fn readyz(State(st): State<AppState>) -> Response {
    let mut problems = vec![];
    if let Err(e) = st.store.ping().await {
        problems.push(format!("job store: {e}"));
    }
    if let Err(e) = st.storage.check().await {
        problems.push(format!("object storage: {e}"));
    }
    if !crate::ffmpeg_available(&st.cfg.tools).await {
        problems.push("ffmpeg/ffprobe cannot be run".to_string());
    }
    if !st.is_accepting() {
        problems.push("shutting down".to_string());
    }
    if problems.is_empty() {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::unavailable("not_ready", problems.join("; ")).into_response()
    }
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    if let Ok(c) = st.store.counts().await {
        metrics::gauge!(m::QUEUE_DEPTH).set(c.queued as f64);
        metrics::gauge!(m::RUNNING).set(c.running as f64);
        metrics::gauge!(m::BACKLOG).set(c.queued_estimated_seconds / st.capacity.max(1) as f64);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

pub const OPENAPI: &str = include_str!("../../openapi.json");

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
