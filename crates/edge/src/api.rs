//! The controller's HTTP listener (`control_listen`).
//!
//! nginx reaches it for placement (auth_request), the merged job list, status and metrics.
//! `/edge/reload` is only here, not proxied by nginx: changing the edge is an operator action,
//! not something a client of the API may trigger.

use crate::auth::Decision;
use crate::controller::{Controller, ReloadConfigError};
use crate::error::{error_chain, ApiError};
use crate::fleet::StealVerdict;
use crate::listing;
use crate::reconcile::Applied;
use axum::extract::{Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reelay_identity::Scope;
use reelay_protocol::{ErrorBody, ErrorDetail, JobList};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub const CLUSTER_HEADER: &str = "x-reelay-cluster";
pub const MISSING_HEADER: &str = "x-reelay-missing-clusters";

pub fn router(ctl: Arc<Controller>) -> Router {
    Router::new()
        .route("/internal/place", get(place))
        .route("/internal/auth", get(authorize))
        .route("/edge/status", get(status))
        .route("/edge/metrics", get(metrics))
        .route("/edge/steal", get(steal))
        .route(
            "/edge/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/edge/reload", post(reload))
        .route("/v1/jobs", get(list_jobs))
        // The operations dashboard; nginx proxies `/` and `/ui/` here.
        .merge(reelay_dashboard::router(reelay_dashboard::Mode::Edge))
        .fallback(|| async { ApiError::NotFound.into_response() })
        .with_state(ctl)
}

/// Every error answer of the controller: JSON with the error's code, and the headers its kind
/// calls for (`WWW-Authenticate` on 401, `Retry-After` when trying again can help).
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            Json(ErrorBody {
                error: ErrorDetail::new(self.code(), self.to_string()),
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"reelay\""),
            );
        }
        if self.is_transient() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(5));
        }
        resp
    }
}

pub const AUTH_ERROR_HEADER: &str = "x-reelay-auth-error";

/// The edge's token check, or None when `[auth]` is off (or the request passes).
fn auth_refusal(ctl: &Controller, headers: &HeaderMap, need: Scope) -> Option<Response> {
    let auth = ctl.auth.as_ref()?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let refusal = match auth.check(authorization, need) {
        Decision::Allow => return None,
        Decision::Unauthorized(m) => ApiError::Unauthorized(m),
        Decision::Forbidden(m) => ApiError::Forbidden(m),
    };
    let reason = HeaderValue::from_str(&crate::auth::header_safe(&refusal.to_string()));
    let mut resp = refusal.into_response();
    if let Ok(v) = reason {
        resp.headers_mut().insert(AUTH_ERROR_HEADER, v);
    }
    Some(resp)
}

fn original_method(headers: &HeaderMap) -> &str {
    headers
        .get("x-original-method")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("GET")
}

/// `auth_request` for every proxied `/v1` route when `[auth]` is on.
async fn authorize(State(ctl): State<Arc<Controller>>, headers: HeaderMap) -> Response {
    // nginx sends the client's URI: the remote claim's routes need the peer scope.
    let uri = headers.get("x-original-uri").and_then(|v| v.to_str().ok());
    let need = crate::auth::required_scope(original_method(&headers), uri);
    match auth_refusal(&ctl, &headers, need) {
        Some(refused) => refused,
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn place(State(ctl): State<Arc<Controller>>, headers: HeaderMap) -> Response {
    let need = Scope::for_method(original_method(&headers));
    if let Some(refused) = auth_refusal(&ctl, &headers, need) {
        return refused;
    }
    // Only a POST creates a job; anything else sent to /v1/jobs is routed the same way but
    // must not count as load on the chosen cluster.
    let creates_job = headers
        .get("x-original-method")
        .is_none_or(|m| m.as_bytes() == b"POST");
    match ctl.place(creates_job) {
        Some(name) => match HeaderValue::from_str(&name) {
            Ok(v) => (StatusCode::OK, [(CLUSTER_HEADER, v)]).into_response(),
            Err(_) => ApiError::BadClusterName.into_response(),
        },
        None => ApiError::NoCluster.into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct StealParams {
    thief: Option<String>,
    /// `1`: the asking slot is idle and its own cluster's claim just found nothing, which the
    /// decision then takes as the thief's state instead of its last load reading.
    idle: Option<String>,
}

/// `GET /edge/steal?thief={cluster}[&idle=1]`: whether an idle worker slot of `thief` should take a
/// waiting task from another cluster, and which (`stealing::choose` over the latest load
/// readings). With `[auth]` on, only `thief`'s own signed token with the `peer` scope may ask.
async fn steal(
    State(ctl): State<Arc<Controller>>,
    headers: HeaderMap,
    Query(p): Query<StealParams>,
) -> Response {
    let Some(thief) = p.thief.filter(|t| !t.is_empty()) else {
        return ApiError::InvalidQuery("thief is required: the cluster asking for work")
            .into_response();
    };
    if let Some(auth) = &ctl.auth {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match auth.check_peer(authorization, &thief) {
            Decision::Allow => {}
            Decision::Unauthorized(m) => return ApiError::Unauthorized(m).into_response(),
            Decision::Forbidden(m) => return ApiError::Forbidden(m).into_response(),
        }
    }
    let slot_idle = matches!(p.idle.as_deref(), Some("1" | "true"));
    match ctl.steal(&thief, slot_idle) {
        StealVerdict::UnknownCluster => ApiError::UnknownCluster(thief).into_response(),
        StealVerdict::NoReading => {
            Json(crate::stealing::stay_answer(crate::stealing::THIEF_UNKNOWN)).into_response()
        }
        StealVerdict::Decided(d) => Json(d.answer()).into_response(),
    }
}

async fn status(State(ctl): State<Arc<Controller>>) -> Response {
    Json(ctl.status()).into_response()
}

async fn metrics(State(ctl): State<Arc<Controller>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&ctl.metrics()),
    )
        .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct ReloadParams {
    #[serde(default)]
    force: bool,
}

/// Re-reads edge.toml (when started from a file) and applies it; `?force=true` reloads nginx
/// even when the rendered configuration did not change.
async fn reload(State(ctl): State<Arc<Controller>>, Query(p): Query<ReloadParams>) -> Response {
    let applied = match ctl.reload_config(p.force).await {
        Ok(a) => a,
        Err(ReloadConfigError::NoFile) => {
            ctl.apply("requested through /edge/reload", p.force).await
        }
        Err(e) => return ApiError::Config(e).into_response(),
    };
    let generation = ctl.status().generation;
    match applied {
        Applied::Unchanged => {
            Json(serde_json::json!({"result": "unchanged", "generation": generation}))
                .into_response()
        }
        Applied::Reloaded(r) => {
            Json(serde_json::json!({"result": "reloaded", "generation": generation, "reload": r}))
                .into_response()
        }
        Applied::Failed(r) => ApiError::ReloadFailed(
            r.error
                .unwrap_or_else(|| "the configuration was not applied".to_string()),
        )
        .into_response(),
    }
}

enum ListResult {
    Page(JobList),
    /// A 4xx from a cluster (a bad `status`, say): the client's mistake, passed on as is.
    Refused(StatusCode, String),
    Unavailable(String),
}

async fn fetch_list(
    http: &reqwest::Client,
    addrs: &[SocketAddr],
    host: &str,
    query: &str,
    authorization: Option<&HeaderValue>,
    forwarded_for: &HeaderValue,
    scheme: &str,
) -> ListResult {
    let mut last = "no address resolved".to_string();
    for addr in addrs {
        let mut req = http
            .get(format!("{scheme}://{addr}/v1/jobs?{query}"))
            .header(reqwest::header::HOST, host)
            .timeout(Duration::from_secs(10));
        // The client's credentials, unchanged: each cluster decides what this token may list.
        if let Some(auth) = authorization {
            req = req.header(reqwest::header::AUTHORIZATION, auth.as_bytes());
        }
        // A listing asked through the edge is a forwarded request like any other the edge
        // proxies: a loopback cluster must not take the controller for one of its own local
        // clients (open mode) and list every job to an anonymous caller.
        req = req.header("x-forwarded-for", forwarded_for.as_bytes());
        let resp = req.send().await;
        match resp {
            Ok(r) if r.status().is_success() => match r.json::<JobList>().await {
                Ok(page) => return ListResult::Page(page),
                Err(e) => last = format!("{addr}: unreadable job list: {e}"),
            },
            Ok(r) if r.status().is_client_error() => {
                let status =
                    StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_REQUEST);
                return ListResult::Refused(status, r.text().await.unwrap_or_default());
            }
            Ok(r) => last = format!("{addr}: answered {}", r.status()),
            Err(e) => last = format!("{addr}: {}", error_chain(&e)),
        }
    }
    ListResult::Unavailable(last)
}

/// The merged `GET /v1/jobs`: every reachable cluster's page, newest first; clusters that are
/// down or did not answer are named (`partial`, `missing_clusters`, and the
/// `x-reelay-missing-clusters` header). With no cluster answering at all: 503.
async fn list_jobs(
    State(ctl): State<Arc<Controller>>,
    client_headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if let Some(refused) = auth_refusal(&ctl, &client_headers, Scope::Read) {
        return refused;
    }
    let authorization = client_headers.get(header::AUTHORIZATION).cloned();
    let forwarded_for = client_headers
        .get("x-forwarded-for")
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("unknown"));
    let (mut status, mut limit, mut cursor) = (None, 50usize, None);
    // `metadata.<key>=<value>` (or `metadata[<key>]`) filters go to every cluster as they
    // came; each checks them.
    let mut metadata = Vec::new();
    for (k, v) in url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        if k.starts_with("metadata.") || k.starts_with("metadata[") {
            metadata.push((k.into_owned(), v.into_owned()));
            continue;
        }
        match k.as_ref() {
            "status" if !v.is_empty() => status = Some(v.into_owned()),
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=500).contains(&n) => limit = n,
                _ => return ApiError::InvalidQuery("limit must be 1-500").into_response(),
            },
            "cursor" if !v.is_empty() => cursor = Some(v.into_owned()),
            _ => {}
        }
    }
    let targets = ctl.listing_targets();
    let fetches = targets.ask.iter().map(|(name, addrs, host)| {
        let mut qs = url::form_urlencoded::Serializer::new(String::new());
        qs.append_pair("limit", &limit.to_string());
        if let Some(s) = &status {
            qs.append_pair("status", s);
        }
        if let Some(c) = &cursor {
            qs.append_pair("cursor", &listing::cluster_cursor(c, name));
        }
        for (k, v) in &metadata {
            qs.append_pair(k, v);
        }
        let query = qs.finish();
        let http = ctl.http().clone();
        let authorization = authorization.clone();
        let forwarded_for = forwarded_for.clone();
        let scheme = ctl.upstream_scheme();
        async move {
            fetch_list(
                &http,
                addrs,
                host,
                &query,
                authorization.as_ref(),
                &forwarded_for,
                scheme,
            )
            .await
        }
    });
    let results = futures::future::join_all(fetches).await;
    let mut pages = Vec::new();
    let mut more = false;
    let mut missing = targets.down.clone();
    for ((name, _, _), result) in targets.ask.iter().zip(results) {
        match result {
            ListResult::Page(p) => {
                more |= p.next_cursor.is_some();
                pages.push(p.jobs);
            }
            ListResult::Refused(code, body) => {
                let mut resp = (code, body).into_response();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                if code == StatusCode::UNAUTHORIZED {
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"reelay\""),
                    );
                }
                return resp;
            }
            ListResult::Unavailable(why) => {
                tracing::warn!(cluster = %name, error = %why, "cluster left out of the merged job list");
                missing.push(name.clone());
            }
        }
    }
    if pages.is_empty() && !missing.is_empty() {
        return ApiError::NoClusterAnswered(missing).into_response();
    }
    let list = listing::page(pages, missing, limit, more);
    let mut headers = HeaderMap::new();
    if list.partial {
        if let Ok(v) = HeaderValue::from_str(&list.missing_clusters.join(",")) {
            headers.insert(MISSING_HEADER, v);
        }
    }
    (headers, Json(list)).into_response()
}
