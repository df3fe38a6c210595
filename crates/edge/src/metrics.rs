//! `/edge/metrics` in the Prometheus text format.
//!
//! Written out from a snapshot of the controller's state ([`EdgeMetrics`], copied under its
//! locks by [`crate::Controller::metrics`]) rather than through a global recorder: the numbers
//! already live there, and a process-wide recorder would clash when several edges run in one
//! process (tests, a benchmark comparing modes). Rendering is a pure function of the snapshot.

use crate::fleet::ClusterCounters;
use crate::nginx::MasterInfo;
use crate::reconcile::{ReloadStats, RELOAD_BUCKETS};
use std::fmt::Write;

/// Everything `/edge/metrics` shows, copied at one moment.
#[derive(Debug, Clone)]
pub struct EdgeMetrics {
    pub clusters: Vec<ClusterCounters>,
    pub fail_open: bool,
    pub reloads: ReloadStats,
    pub nginx: MasterInfo,
    /// `GET /edge/steal` answers by outcome (`steal`, `not_worth_it`, …), in label order.
    pub steal_decisions: Vec<(&'static str, u64)>,
    /// With `[auth]`: the token checks and the revocations the edge holds.
    pub auth: Option<AuthMetrics>,
}

#[derive(Debug, Clone, Copy)]
pub struct AuthMetrics {
    pub checks: crate::auth_cache::CacheStats,
    pub revocations: usize,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

pub fn render(m: &EdgeMetrics) -> String {
    let nginx = &m.nginx;
    let mut out = String::new();

    header(
        &mut out,
        "reelay_edge_cluster_up",
        "gauge",
        "1 when the cluster passes its health checks (unknown counts as up).",
    );
    for c in &m.clusters {
        let up = u8::from(c.up);
        let _ = writeln!(out, "reelay_edge_cluster_up{{cluster=\"{}\"}} {up}", c.name);
    }
    header(
        &mut out,
        "reelay_edge_cluster_accepting",
        "gauge",
        "1 when the cluster is up and takes new jobs.",
    );
    for c in &m.clusters {
        let _ = writeln!(
            out,
            "reelay_edge_cluster_accepting{{cluster=\"{}\"}} {}",
            c.name,
            u8::from(c.accepting)
        );
    }
    header(
        &mut out,
        "reelay_edge_health_checks_total",
        "counter",
        "Active health checks by result.",
    );
    for c in &m.clusters {
        let _ = writeln!(
            out,
            "reelay_edge_health_checks_total{{cluster=\"{}\",result=\"ok\"}} {}",
            c.name, c.checks_ok
        );
        let _ = writeln!(
            out,
            "reelay_edge_health_checks_total{{cluster=\"{}\",result=\"failed\"}} {}",
            c.name, c.checks_failed
        );
    }
    header(
        &mut out,
        "reelay_edge_placements_total",
        "counter",
        "Submissions placed by the controller.",
    );
    for c in &m.clusters {
        let _ = writeln!(
            out,
            "reelay_edge_placements_total{{cluster=\"{}\"}} {}",
            c.name, c.placements
        );
    }
    header(
        &mut out,
        "reelay_edge_cluster_queued",
        "gauge",
        "Queued jobs in the cluster's last load report.",
    );
    for c in &m.clusters {
        if let Some(queued) = c.queued {
            let _ = writeln!(
                out,
                "reelay_edge_cluster_queued{{cluster=\"{}\"}} {}",
                c.name, queued
            );
        }
    }
    header(
        &mut out,
        "reelay_edge_steal_decisions_total",
        "counter",
        "Stealing decisions answered to idle clusters, by outcome (steal, or the reason to stay).",
    );
    for (outcome, n) in &m.steal_decisions {
        let _ = writeln!(
            out,
            "reelay_edge_steal_decisions_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    if let Some(a) = &m.auth {
        header(
            &mut out,
            "reelay_edge_token_checks_total",
            "counter",
            "Token checks for nginx: answered from the seconds-long memory of allowed checks (cached) or checked in full.",
        );
        let _ = writeln!(
            out,
            "reelay_edge_token_checks_total{{answer=\"cached\"}} {}",
            a.checks.hits
        );
        let _ = writeln!(
            out,
            "reelay_edge_token_checks_total{{answer=\"checked\"}} {}",
            a.checks.misses
        );
        header(
            &mut out,
            "reelay_edge_revocations",
            "gauge",
            "Revoked token ids the edge refuses (collected from the clusters).",
        );
        let _ = writeln!(out, "reelay_edge_revocations {}", a.revocations);
    }
    header(
        &mut out,
        "reelay_edge_fail_open",
        "gauge",
        "1 when no cluster is healthy and all of them are used.",
    );
    let _ = writeln!(out, "reelay_edge_fail_open {}", u8::from(m.fail_open));
    header(
        &mut out,
        "reelay_edge_config_generation",
        "gauge",
        "Generation of the nginx configuration being served.",
    );
    let _ = writeln!(
        out,
        "reelay_edge_config_generation {}",
        m.reloads.generation
    );
    header(
        &mut out,
        "reelay_edge_reloads_total",
        "counter",
        "Successful nginx configuration reloads (the first start included).",
    );
    let _ = writeln!(out, "reelay_edge_reloads_total {}", m.reloads.reloads);
    header(
        &mut out,
        "reelay_edge_reload_failures_total",
        "counter",
        "Configurations not applied (rejected by nginx -t, or not picked up).",
    );
    let _ = writeln!(
        out,
        "reelay_edge_reload_failures_total {}",
        m.reloads.failed_reloads
    );
    header(
        &mut out,
        "reelay_edge_reload_duration_seconds",
        "histogram",
        "From rendering to nginx serving the new generation.",
    );
    for (le, count) in RELOAD_BUCKETS.iter().zip(m.reloads.bucket_counts) {
        let _ = writeln!(
            out,
            "reelay_edge_reload_duration_seconds_bucket{{le=\"{le}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "reelay_edge_reload_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        m.reloads.reloads
    );
    let _ = writeln!(
        out,
        "reelay_edge_reload_duration_seconds_sum {}",
        m.reloads.seconds_sum
    );
    let _ = writeln!(
        out,
        "reelay_edge_reload_duration_seconds_count {}",
        m.reloads.reloads
    );
    header(
        &mut out,
        "reelay_edge_nginx_up",
        "gauge",
        "1 while the nginx master runs.",
    );
    let _ = writeln!(out, "reelay_edge_nginx_up {}", u8::from(nginx.running));
    header(
        &mut out,
        "reelay_edge_nginx_restarts_total",
        "counter",
        "Times the supervisor had to start nginx again.",
    );
    let _ = writeln!(out, "reelay_edge_nginx_restarts_total {}", nginx.restarts);
    out
}
