//! Presets, load, health, readiness, metrics and the OpenAPI document.

use crate::error::{ApiError, ErrorCode};
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
    // Shared through the store, so an api replica without workers still knows the cluster's
    // slots. Six small independent reads, asked together: edges poll this every second.
    // The steal offer and the peers' tasks our workers run are optional: a failure to read
    // either reports none rather than no load.
    let (base, offered, away) = tokio::join!(
        async {
            tokio::try_join!(
                st.store.counts(),
                st.store.live_capacity(),
                st.store.running_attempts(),
                st.store.live_speed(),
            )
        },
        st.store
            .peer_offer(crate::api::peer::offer_rules(&st, "", None)),
        st.store.live_away(),
    );
    let (c, capacity, mut running, speed) = base?;
    let now = reelay_jobs::now_millis();
    // A slot running a peer's task is busy, though no task row of ours says so. One whose
    // worker's heartbeat lapsed since the read is gone, not our queued work: dropped.
    match away {
        Ok(away) => running.extend(
            away.into_iter()
                .filter(|a| a.lease_expires_at.is_some_and(|l| l > now)),
        ),
        Err(e) => tracing::warn!(error = %e, "the peers' tasks our workers run could not be read"),
    }
    let offered = offered.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the steal offer could not be read; reporting none");
        None
    });
    // Named by a handle only this cluster opens: the route is open, and an id names a
    // tenant's job (`offer_handle`).
    let handle = offered.as_ref().and_then(|task| {
        let h = crate::offer_handle::seal(&st.notify_key, &st.cfg.cluster, &task.task_id);
        if h.is_none() {
            tracing::warn!("the random source failed; reporting no steal offer");
        }
        h
    });
    let offer = match (offered, handle) {
        (Some(task), Some(handle)) => {
            let (bytes, outputs) = transfer(&st, &task).await;
            let mut offer = crate::load::offer(&task, bytes, outputs, speed, now);
            offer.task_id = handle;
            Some(offer)
        }
        _ => None,
    };
    let report = crate::load::report(
        &st.cfg.cluster,
        capacity,
        speed,
        &c,
        &running,
        st.is_accepting(),
        now,
    );
    Ok(Json(crate::load::with_offer(report, offer)))
}

/// What a thief of the offered task reads, and how many outputs it writes back from that: a
/// piece (`encode_segment`) reads only its stored piece files (their sizes as the split task
/// recorded them; a storage HEAD only for a piece an older split did not record) and encodes
/// the split renditions; any other task reads the whole input for every output the job asked
/// for.
async fn transfer(st: &AppState, task: &reelay_jobs::PeerOffer) -> (u64, usize) {
    match crate::load::piece_plan(task) {
        Some(plan) => {
            let mut sizes = plan.sizes.clone();
            for (size, key) in sizes.iter_mut().zip(&plan.keys) {
                if size.is_none() {
                    *size = st.storage.head(key).await.ok().map(|o| o.size);
                }
            }
            let whole = if sizes.iter().all(Option::is_some) {
                0
            } else {
                input_bytes(st, task).await
            };
            (crate::load::piece_bytes(&plan, &sizes, whole), plan.outputs)
        }
        None => (input_bytes(st, task).await, task.outputs),
    }
}

/// The offered task's input size: as recorded at admission (or by the first probe), else the
/// stored upload's size, else 0 (a URL input: the thief fetches it itself, not from here).
async fn input_bytes(st: &AppState, task: &reelay_jobs::PeerOffer) -> u64 {
    if let Some(size) = task.input_size {
        return size;
    }
    match &task.input_key {
        Some(key) => st.storage.head(key).await.map_or(0, |o| o.size),
        None => 0,
    }
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
    if !ffmpeg_ok(&st).await {
        problems.push("ffmpeg/ffprobe cannot be run".to_string());
    }
    if !st.is_accepting() {
        problems.push("shutting down".to_string());
    }
    if problems.is_empty() {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::unavailable(ErrorCode::NotReady, problems.join("; ")).into_response()
    }
}

/// Running `ffmpeg -version` costs a few hundred ms, and the edge asks every second: the answer
/// is kept for a while (a process whose ffmpeg disappears is rare and not urgent). A stale answer
/// is served while a detached task refreshes it, and the first check also runs detached: on a
/// loaded machine `ffmpeg -version` can outlast the edge's probe timeout, which drops the
/// request, and a check run inside the request would then never finish, leaving the cluster
/// "not ready" for as long as the load lasts.
async fn ffmpeg_ok(st: &AppState) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static CACHE: std::sync::Mutex<Option<(std::time::Instant, bool)>> =
        std::sync::Mutex::new(None);
    static REFRESHING: AtomicBool = AtomicBool::new(false);
    const FOR: std::time::Duration = std::time::Duration::from_secs(30);
    let cached = CACHE.lock().ok().and_then(|g| *g);
    let check = {
        let tools = st.cfg.tools.clone();
        move || {
            tokio::spawn(async move {
                let ok = crate::ffmpeg_available(&tools).await;
                if let Ok(mut guard) = CACHE.lock() {
                    *guard = Some((std::time::Instant::now(), ok));
                }
                REFRESHING.store(false, Ordering::SeqCst);
                ok
            })
        }
    };
    match cached {
        Some((at, ok)) => {
            if at.elapsed() >= FOR && !REFRESHING.swap(true, Ordering::SeqCst) {
                drop(check());
            }
            ok
        }
        None => {
            REFRESHING.store(true, Ordering::SeqCst);
            check().await.unwrap_or(false)
        }
    }
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    let (counts, cap, speed) = tokio::join!(
        st.store.counts(),
        st.store.live_capacity(),
        st.store.live_speed()
    );
    if let (Ok(c), Ok(cap)) = (counts, cap) {
        metrics::gauge!(m::QUEUE_DEPTH).set(c.queued as f64);
        metrics::gauge!(m::RUNNING).set(c.running as f64);
        metrics::gauge!(m::CAPACITY).set(cap as f64);
        // The same figure /v1/load reports; a failed speed read counts as 1x real time.
        let speed = speed.ok().flatten();
        metrics::gauge!(m::BACKLOG).set(crate::load::backlog_seconds(
            c.queued_estimated_seconds,
            cap,
            speed,
        ));
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
