//! The shapes of `GET /edge/status`, shared with the tests and anything that scrapes it.

use crate::config::Mode;
use crate::health::Health;
use crate::nginx::MasterInfo;
use reelay_protocol::LoadReport;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeStatus {
    pub mode: Mode,
    pub listen: String,
    pub control_listen: String,
    /// Generation of the configuration nginx serves.
    pub generation: u64,
    /// True when no cluster passes its checks (or all are draining) and every one is used.
    pub fail_open: bool,
    pub last_reload: Option<ReloadRecord>,
    pub reloads: u64,
    pub failed_reloads: u64,
    /// Why the last edge.toml reload was refused (cleared by the next good one).
    pub config_error: Option<String>,
    pub nginx: MasterInfo,
    pub clusters: Vec<ClusterStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadRecord {
    /// The generation that was tried; equals `EdgeStatus::generation` only when it succeeded.
    pub generation: u64,
    pub ok: bool,
    pub error: Option<String>,
    pub reason: String,
    pub at_unix_ms: u64,
    /// From the start of the attempt until nginx served the new generation.
    pub latency_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub name: String,
    pub url: String,
    pub addresses: Vec<String>,
    pub resolve_error: Option<String>,
    pub health: Health,
    /// Reachable and not draining: eligible for new jobs.
    pub accepting: bool,
    pub last_check: Option<CheckRecord>,
    /// Milliseconds since the cluster last passed a health check; None if it has not since
    /// this edge started. What a down cluster's card shows instead of its last (stale) load.
    pub last_seen_age_ms: Option<u64>,
    pub load: Option<LoadReport>,
    pub load_age_ms: Option<u64>,
    /// Placements since the last load reading (counted on top of it).
    pub pending_placements: u32,
    pub placements: u64,
    /// What the policy would compute for this cluster now.
    pub estimated_start_seconds: f64,
    pub score: f64,
    pub weight: u32,
    pub cost: f64,
    pub local: bool,
    /// The edge's last answer to this cluster's idle slots asking for work elsewhere
    /// (`GET /edge/steal`); None until it asks (it asks only with `[steal] edge` set).
    #[serde(default)]
    pub steal_answer: Option<StealAnswer>,
    /// Clusters this one may not take work from now: each took a task from it within
    /// `[stealing] cooldown_seconds` (so work does not go back and forth).
    #[serde(default)]
    pub steal_cooldowns: Vec<StealCooldown>,
}

/// One remembered `GET /edge/steal` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StealAnswer {
    /// Milliseconds since the edge gave it.
    pub age_ms: u64,
    pub answer: reelay_protocol::StealDecision,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StealCooldown {
    /// The cluster not to take from (it just took from this one).
    pub cluster: String,
    /// Until the cooldown ends, rounded up to a tenth.
    pub seconds_left: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub at_unix_ms: u64,
    pub ok: bool,
    pub latency_ms: u64,
    pub error: Option<String>,
}

pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
