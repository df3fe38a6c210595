//! The HTTP surface of a cluster. Every answer, including unknown routes, wrong methods, and
//! panics, is JSON.

pub mod drain;
pub mod jobs;
pub mod ops;
pub mod outputs;
pub mod peer;
pub mod tokens;
pub mod uploads;
pub mod webhooks;

use crate::error::{ApiError, ErrorCode};
use crate::metrics as m;
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::time::Instant;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/jobs", get(jobs::list).post(jobs::submit))
        .route("/jobs/{id}", get(jobs::get).delete(jobs::delete))
        .route("/jobs/{id}/cancel", axum::routing::post(jobs::cancel_job))
        .route("/jobs/{id}/events", get(jobs::events))
        .route("/jobs/{id}/outputs", get(outputs::list))
        .route(
            "/jobs/{id}/outputs/{*path}",
            get(outputs::get).head(outputs::get),
        )
        // tus 1.0 resumable uploads (api::uploads).
        .route(
            "/uploads",
            axum::routing::post(uploads::create).options(uploads::options),
        )
        .route(
            "/uploads/{id}",
            axum::routing::head(uploads::head)
                .patch(uploads::patch)
                .delete(uploads::delete)
                .options(uploads::options_of),
        )
        .route(
            "/uploads/{id}/job",
            axum::routing::post(uploads::submit_job),
        )
        .route("/jobs/{id}/webhooks", get(webhooks::list))
        .route(
            "/jobs/{id}/webhooks/{delivery}/redeliver",
            axum::routing::post(webhooks::redeliver),
        )
        .route("/webhooks/secret", get(webhooks::secret))
        .route("/presets", get(ops::presets))
        .route("/tokens", axum::routing::post(tokens::create))
        .route("/tokens/{id}", axum::routing::delete(tokens::revoke))
        // Authentication, scopes and the rate limit (crate::auth); matched routes only.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::guard,
        ))
        // The remote claim (issue 16): its own guard, which needs the peer scope, never open.
        .nest("/peer", peer::router(state.clone()))
        // Aggregate queue numbers only, read by the edge's health probes like /readyz.
        .route("/load", get(ops::load_report))
        // Signed revocation statements: open, each verified (see api::tokens).
        .route(
            "/identity/revocations",
            get(tokens::list_revocations).post(tokens::push_revocations),
        );
    // With a separate ops listener, /metrics is served there only.
    let ops = if state.cfg.ops_listen.is_some() {
        health_router()
    } else {
        ops_router()
    };
    Router::new()
        .nest("/v1", v1)
        .merge(ops)
        // The operations dashboard at `/` (static, embedded; its API calls go through /v1).
        .merge(reelay_dashboard::router(reelay_dashboard::Mode::Cluster))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not support that method",
            )
        })
        // Upload size is enforced by the handlers (streamed, per policy); JSON by max_json_bytes.
        .layer(DefaultBodyLimit::disable())
        // A refused request's unread body is read after the answer instead of the connection
        // being reset under it (which a proxy such as the edge takes for a failed cluster).
        .layer(middleware::from_fn(drain::finish_reading))
        // CORS for output files only (preflights answered here, before the token guard: a
        // preflight never carries a token); the job API gets none.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::cors::outputs,
        ))
        .layer(middleware::from_fn(track))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::new(ErrorCode::Internal, "internal error; see the server log").into_response()
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The routes a worker-only process serves too.
pub fn ops_router() -> Router<AppState> {
    health_router().route("/metrics", get(ops::metrics))
}

/// Health, readiness and the OpenAPI document: open on every listener.
pub fn health_router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(ops::openapi))
}

/// Request metrics and one log line per request, labelled by route template (not raw path, which
/// would explode label cardinality).
async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let secs = start.elapsed().as_secs_f64();
    metrics::counter!(m::HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status.clone()).increment(1);
    metrics::histogram!(m::HTTP_SECONDS, "route" => route.clone()).record(secs);
    tracing::debug!(%method, %route, %status, request_id, ms = secs * 1000.0, "request");
    resp
}
