use crate::config::Config;
use crate::fetch::Fetcher;
use crate::storage::Storage;
use reelay_jobs::JobStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// What every handler and worker shares.
#[derive(Clone)]
pub struct AppState {
    pub cfg: Arc<Config>,
    pub store: Arc<dyn JobStore>,
    pub storage: Storage,
    pub fetcher: Fetcher,
    /// Poked on every submission so an idle worker claims at once instead of at its next poll.
    pub wake: Arc<Notify>,
    /// False once shutdown began: /v1/load says so and the edge stops sending work.
    pub accepting: Arc<AtomicBool>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Job slots of the workers in this process.
    pub capacity: u32,
    /// Token authentication mode and the per-token rate limiter.
    pub auth: Arc<crate::auth::Guard>,
    /// Cancelled when the HTTP listeners stop: long-lived responses (SSE) end so the process can
    /// exit once the requests in flight are done.
    pub stopping: tokio_util::sync::CancellationToken,
    /// The key owners' webhook secrets derive from (`webhooks::sign::owner_secret`).
    pub notify_key: Arc<Vec<u8>>,
    /// tus PATCHes in flight, one per upload (`crate::patch_lock`).
    pub patch_locks: Arc<crate::patch_lock::PatchLocks>,
    /// Running split jobs' progressive HLS views, reused for a second (`crate::progressive`).
    pub live_hls: Arc<crate::progressive::LiveCache>,
}

impl AppState {
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// The cluster's split settings with the worker slots it has now, for a split decision
    /// under `"auto"` (the plan fits the range length to them). A failed read of the slots
    /// leaves them unknown: the configured length stands, which is what every decision did
    /// before, so it is logged and not an error.
    pub async fn split_settings(
        &self,
        request: reelay_media::split::SplitRequest,
    ) -> reelay_media::split::SplitSettings {
        let mut settings = self.cfg.split;
        if request == reelay_media::split::SplitRequest::default() {
            match self.store.live_capacity().await {
                Ok(slots) => settings.live_slots = Some(slots),
                Err(e) => {
                    tracing::warn!(error = %e, "live slots unknown; the configured range length stands")
                }
            }
        }
        settings
    }
}
