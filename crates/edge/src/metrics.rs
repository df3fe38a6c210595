//! `/edge/metrics` in the Prometheus text format.
//!
//! Written out directly from the controller's state rather than through a global recorder: the
//! numbers already live there, and a process-wide recorder would clash when several edges run
//! in one process (tests, a benchmark comparing modes).

use crate::controller::{Controller, RELOAD_BUCKETS};
use crate::health::Health;
use std::fmt::Write;

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

pub fn render(ctl: &Controller) -> String {
    let nginx = ctl.supervisor.info();
    let inner = ctl.lock();
    let mut out = String::new();

    header(
        &mut out,
        "reelay_edge_cluster_up",
        "gauge",
        "1 when the cluster passes its health checks (unknown counts as up).",
    );
    for c in &inner.clusters {
        let up = u8::from(c.health.state() != Health::Down);
        let _ = writeln!(out, "reelay_edge_cluster_up{{cluster=\"{}\"}} {up}", c.name);
    }
    header(
        &mut out,
        "reelay_edge_cluster_accepting",
        "gauge",
        "1 when the cluster is up and takes new jobs.",
    );
    for c in &inner.clusters {
        let _ = writeln!(
            out,
            "reelay_edge_cluster_accepting{{cluster=\"{}\"}} {}",
            c.name,
            u8::from(c.accepting())
        );
    }
    header(
        &mut out,
        "reelay_edge_health_checks_total",
        "counter",
        "Active health checks by result.",
    );
    for c in &inner.clusters {
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
    for c in &inner.clusters {
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
    for c in &inner.clusters {
        if let Some(l) = &c.load {
            let _ = writeln!(
                out,
                "reelay_edge_cluster_queued{{cluster=\"{}\"}} {}",
                c.name, l.queued
            );
        }
    }
    header(
        &mut out,
        "reelay_edge_fail_open",
        "gauge",
        "1 when no cluster is healthy and all of them are used.",
    );
    let _ = writeln!(out, "reelay_edge_fail_open {}", u8::from(inner.fail_open));
    header(
        &mut out,
        "reelay_edge_config_generation",
        "gauge",
        "Generation of the nginx configuration being served.",
    );
    let _ = writeln!(out, "reelay_edge_config_generation {}", inner.generation);
    header(
        &mut out,
        "reelay_edge_reloads_total",
        "counter",
        "Successful nginx configuration reloads (the first start included).",
    );
    let _ = writeln!(out, "reelay_edge_reloads_total {}", inner.reloads);
    header(
        &mut out,
        "reelay_edge_reload_failures_total",
        "counter",
        "Configurations not applied (rejected by nginx -t, or not picked up).",
    );
    let _ = writeln!(
        out,
        "reelay_edge_reload_failures_total {}",
        inner.failed_reloads
    );
    header(
        &mut out,
        "reelay_edge_reload_duration_seconds",
        "histogram",
        "From rendering to nginx serving the new generation.",
    );
    for (le, count) in RELOAD_BUCKETS.iter().zip(inner.reload_bucket_counts) {
        let _ = writeln!(
            out,
            "reelay_edge_reload_duration_seconds_bucket{{le=\"{le}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "reelay_edge_reload_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        inner.reloads
    );
    let _ = writeln!(
        out,
        "reelay_edge_reload_duration_seconds_sum {}",
        inner.reload_seconds_sum
    );
    let _ = writeln!(
        out,
        "reelay_edge_reload_duration_seconds_count {}",
        inner.reloads
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
