//! nginx.conf from the embedded template and the controller's view of the clusters.
//!
//! Rendering is pure: the same [`Desired`] always gives the same text, so the controller can
//! compare what it wants with what it last applied and reload nginx only when they differ.

use crate::config::EdgeConfig;
use minijinja::Environment;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The template ships inside the binary so that a deployed edge cannot drift from its code.
pub const TEMPLATE: &str = include_str!("../templates/nginx.conf.j2");

#[derive(Debug, thiserror::Error)]
#[error("rendering nginx.conf: {0:#}")]
pub struct RenderError(#[from] minijinja::Error);

/// One cluster as nginx should see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderCluster {
    pub name: String,
    pub weight: u32,
    pub addresses: Vec<String>,
    /// Owned routes are proxied (otherwise 503).
    pub reachable: bool,
    /// Takes new jobs: primary in its own upstream, backup in the others, in the fallback.
    pub accepting: bool,
}

/// Everything nginx.conf depends on; equality decides whether a reload is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desired {
    pub listen: String,
    pub control_addr: String,
    pub work_dir: String,
    pub client_max_body_size: String,
    /// nginx `client_body_timeout`, e.g. `60s`.
    pub client_body_timeout: String,
    pub mode: String,
    pub user: Option<String>,
    pub worker_processes: String,
    pub http_snippet: Option<String>,
    pub keepalive_timeout: String,
    pub retry_after_seconds: u64,
    /// JSON submissions: connect and answer timeouts (ms), and how long after nginx forwards
    /// one the cluster may still create its job (`X-Reelay-Deadline`, see [`deadline_budget_ms`]).
    pub submit_connect_timeout_ms: u64,
    pub submit_answer_timeout_ms: u64,
    pub submit_deadline_ms: u64,
    pub fail_open: bool,
    pub clusters: Vec<RenderCluster>,
    /// HTTPS towards clients: certificate and key paths.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// `http` or `https` towards the clusters.
    pub upstream_scheme: String,
    pub upstream_client_cert: Option<String>,
    pub upstream_client_key: Option<String>,
    pub upstream_ca: Option<String>,
    pub upstream_server_name: Option<String>,
    /// `limit_req` per client address: rate (r/s) and burst.
    pub rate_limit_per_second: Option<u32>,
    pub rate_limit_burst: u32,
    /// Addresses allowed to read status, metrics and the dashboard; empty = everyone.
    pub status_allow: Vec<String>,
    /// `[auth]`: refuse requests without a token, ask the controller about every other one.
    pub auth: bool,
    /// A plain-HTTP listener that only redirects to HTTPS.
    pub http_redirect_listen: Option<String>,
}

/// How long after forwarding a JSON submission its cluster may still create the job: the
/// answer timeout less a margin, so that a job created just in time still has its answer back
/// at nginx before nginx gives up and sends the request elsewhere. The margin (a quarter of the
/// timeout, at most 300 ms) also absorbs clock skew between edge and clusters (NTP keeps it to
/// milliseconds); a cluster whose clock runs ahead by more refuses submissions with 503
/// `deadline_passed` instead of creating jobs nobody hears of.
pub fn deadline_budget_ms(answer_timeout_ms: u64) -> u64 {
    answer_timeout_ms - (answer_timeout_ms / 4).min(300)
}

/// A JSON submission's answer timeout when fewer than two clusters take new jobs: the same
/// 600 s a multipart upload waits. Cutting the answer short only helps when another cluster can
/// take the retry; with none, it turned a slow answer from the one cluster left into a failure.
/// Measured (bench/edge.sh --parts silent, aws's packets dropped, gcp busy encoding on a loaded
/// machine): gcp answered some submissions after 1.5-3 s, nginx gave up at 1.5 s, the retry
/// upstream had no server, and the client got 502 `cluster_unavailable`.
pub const SOLE_CLUSTER_ANSWER_TIMEOUT_MS: u64 = 600_000;

/// The answer timeout JSON submissions get: the configured one while a retry has somewhere to
/// go (two or more clusters accept new jobs), otherwise [`SOLE_CLUSTER_ANSWER_TIMEOUT_MS`].
pub fn submit_answer_timeout_ms(configured_ms: u64, accepting_clusters: usize) -> u64 {
    if accepting_clusters >= 2 {
        configured_ms
    } else {
        configured_ms.max(SOLE_CLUSTER_ANSWER_TIMEOUT_MS)
    }
}

/// How long nginx waits for the next bytes of a cluster's answer on a job's own routes (status,
/// cancel, outputs). They answer at once, so this only matters when the cluster is gone: a
/// request sent on a kept-alive connection whose packets then vanish (a cut link; no reset ever
/// comes) was held for the 300 s of the other routes, and now gets its 503 after this.
pub const OWNER_READ_TIMEOUT: &str = "15s";

#[derive(Serialize)]
struct Context<'a> {
    #[serde(flatten)]
    desired: &'a Desired,
    generation: u64,
    any_address: bool,
    owner_read_timeout: &'static str,
}

/// What the health checks found about one cluster, as far as nginx.conf cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub addresses: Vec<SocketAddr>,
    pub reachable: bool,
    pub accepting: bool,
}

impl Desired {
    /// Combines the static config with each cluster's view (same order as `cfg.clusters`).
    /// `fail_open` renders every cluster as reachable and accepting: sending traffic to clusters
    /// that may be down beats refusing all of it because the health checks might be wrong.
    pub fn build(
        cfg: &EdgeConfig,
        views: &[ClusterView],
        fail_open: bool,
        user: Option<String>,
    ) -> Desired {
        let clusters = cfg
            .clusters
            .iter()
            .zip(views)
            .map(|(c, v)| RenderCluster {
                name: c.name.clone(),
                weight: c.weight,
                addresses: v.addresses.iter().map(|a| a.to_string()).collect(),
                reachable: fail_open || v.reachable,
                accepting: fail_open || (v.reachable && v.accepting),
            })
            .collect::<Vec<RenderCluster>>();
        let interval_s = cfg.health.interval_ms.div_ceil(1000).max(1);
        let answer_ms = submit_answer_timeout_ms(
            cfg.submit_answer_timeout_ms,
            clusters.iter().filter(|c| c.accepting).count(),
        );
        Desired {
            listen: cfg.listen.to_string(),
            control_addr: connectable(cfg.control_listen).to_string(),
            work_dir: cfg.work_dir.display().to_string(),
            client_max_body_size: cfg.client_max_body_size.clone(),
            client_body_timeout: format!("{}s", cfg.client_body_timeout_seconds),
            mode: cfg.mode.as_str().to_string(),
            user,
            worker_processes: cfg
                .nginx_worker_processes
                .map_or("auto".to_string(), |n| n.to_string()),
            http_snippet: cfg.nginx_http_snippet.clone(),
            keepalive_timeout: if cfg.client_keepalive { "65s" } else { "0" }.to_string(),
            retry_after_seconds: interval_s * u64::from(cfg.health.rise + 1),
            submit_connect_timeout_ms: cfg.submit_connect_timeout_ms,
            submit_answer_timeout_ms: answer_ms,
            submit_deadline_ms: deadline_budget_ms(answer_ms),
            fail_open,
            clusters,
            tls_cert: path_string(&cfg.tls_cert),
            tls_key: path_string(&cfg.tls_key),
            upstream_scheme: if cfg.clusters.iter().any(|c| c.url.starts_with("https://")) {
                "https"
            } else {
                "http"
            }
            .to_string(),
            upstream_client_cert: path_string(&cfg.upstream_client_cert),
            upstream_client_key: path_string(&cfg.upstream_client_key),
            upstream_ca: path_string(&cfg.upstream_ca),
            upstream_server_name: cfg.upstream_server_name.clone(),
            rate_limit_per_second: cfg.rate_limit_per_second,
            rate_limit_burst: cfg.rate_limit_burst,
            status_allow: cfg.status_allow.clone(),
            auth: cfg.auth.is_some(),
            http_redirect_listen: cfg.http_redirect_listen.map(|a| a.to_string()),
        }
    }
}

fn path_string(p: &Option<std::path::PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

/// An address a local client can connect to: listening on 0.0.0.0 means reachable on loopback.
pub fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

pub fn render(desired: &Desired, generation: u64) -> Result<String, RenderError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("nginx.conf", TEMPLATE)?;
    let ctx = Context {
        desired,
        generation,
        any_address: desired.clusters.iter().any(|c| !c.addresses.is_empty()),
        owner_read_timeout: OWNER_READ_TIMEOUT,
    };
    Ok(env.get_template("nginx.conf")?.render(&ctx)?)
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_deadline_leaves_a_margin_before_nginx_gives_up() {
        assert_eq!(deadline_budget_ms(1500), 1200);
        assert_eq!(deadline_budget_ms(500), 375);
        assert_eq!(deadline_budget_ms(60_000), 59_700);
    }

    use super::*;
    use crate::config::Mode;

    pub(crate) fn sample(mode: Mode) -> (EdgeConfig, Vec<ClusterView>) {
        let mut cfg = EdgeConfig::parse(
            r#"
listen = "127.0.0.1:18080"
control_listen = "0.0.0.0:19180"
work_dir = "/tmp/reelay-edge-render"
client_max_body_size = "20g"
local_cluster = "aws"
[[clusters]]
name = "aws"
url = "http://127.0.0.1:18081"
weight = 3
[[clusters]]
name = "gcp"
url = "http://gcp.test:18082"
weight = 1
cost = 0.5
"#,
        )
        .unwrap();
        cfg.mode = mode;
        let views = vec![
            ClusterView {
                addresses: vec!["127.0.0.1:18081".parse().unwrap()],
                reachable: true,
                accepting: true,
            },
            ClusterView {
                addresses: vec![
                    "127.0.0.2:18082".parse().unwrap(),
                    "127.0.0.3:18082".parse().unwrap(),
                ],
                reachable: true,
                accepting: true,
            },
        ];
        (cfg, views)
    }

    fn block<'a>(text: &'a str, header: &str) -> &'a str {
        let start = text
            .find(header)
            .unwrap_or_else(|| panic!("{header} missing"));
        let end = text[start..].find("\n    }").unwrap() + start;
        &text[start..end]
    }

    #[test]
    fn each_cluster_gets_its_upstreams_with_the_others_as_backups() {
        let (cfg, views) = sample(Mode::Reelay);
        let text = render(&Desired::build(&cfg, &views, false, None), 7).unwrap();
        assert!(text.contains("generation 7"));
        let aws = block(&text, "upstream cluster_aws {");
        assert!(aws.contains("server 127.0.0.1:18081 max_fails=0;"));
        assert!(aws.contains("server 127.0.0.2:18082 backup"));
        assert!(aws.contains("server 127.0.0.3:18082 backup"));
        let gcp = block(&text, "upstream cluster_gcp {");
        assert!(gcp.contains("server 127.0.0.2:18082 max_fails"));
        assert!(gcp.contains("server 127.0.0.1:18081 backup"));
        // Owned routes have no backup: only the owner has the job.
        let owner = block(&text, "upstream owner_aws {");
        assert!(owner.contains("server 127.0.0.1:18081 max_fails=0;"));
        assert!(!owner.contains("backup"));
        let fallback = block(&text, "upstream reelay_fallback {");
        assert!(fallback.contains("server 127.0.0.1:18081 weight=3"));
        assert!(fallback.contains("server 127.0.0.3:18082 weight=1"));
        assert!(text.contains("aws cluster_aws;"));
        assert!(text.contains("gcp up;"));
        assert!(
            text.contains("server 127.0.0.1:19180;"),
            "controller on loopback"
        );
        assert!(text.contains("auth_request /_reelay/place;"));
        assert!(text.contains("proxy_pass http://$reelay_submit_upstream;"));
        assert!(text.contains("error_page 500 = @reelay_submit_fallback;"));
        assert!(text.contains("proxy_next_upstream error timeout;"));
        assert!(
            !text.contains("http_5"),
            "5xx answers are never retried elsewhere"
        );
        assert!(!text.contains("non_idempotent"));
        assert!(text.contains("client_max_body_size 20g;"));
        assert!(text.contains("proxy_request_buffering off;"));
        assert!(text.contains("daemon off;"));
        assert!(text.contains("keepalive_timeout 0;"));
        assert!(!text.contains("\nuser "));
    }

    #[test]
    fn only_retry_safe_upstreams_keep_connections_alive() {
        let (cfg, views) = sample(Mode::Reelay);
        let text = render(&Desired::build(&cfg, &views, false, None), 1).unwrap();
        for name in ["owner_aws", "owner_gcp", "reelay_any", "reelay_controller"] {
            let b = block(&text, &format!("upstream {name} {{"));
            assert!(b.contains("keepalive "), "{name}: {b}");
            assert!(b.contains("keepalive_timeout 10s;"), "{name}: {b}");
        }
        // A POST on a kept-alive connection the cluster just closed could not be retried.
        for name in [
            "cluster_aws",
            "cluster_gcp",
            "peer_aws",
            "peer_gcp",
            "reelay_fallback",
            "reelay_round_robin",
            "reelay_least_conn",
        ] {
            let b = block(&text, &format!("upstream {name} {{"));
            assert!(!b.contains("keepalive"), "{name}: {b}");
            assert!(b.contains(&format!("zone {name} 64k;")), "{name}: {b}");
        }
        // Keep-alive needs HTTP/1.1 without "Connection: close", in the placement call too.
        assert!(text.contains("proxy_http_version 1.1;"));
        let place = &text[text.find("location = /_reelay/place").unwrap()..];
        let place = &place[..place.find("\n        }").unwrap()];
        assert!(
            place.contains("proxy_set_header Connection \"\";"),
            "{place}"
        );
        assert!(place.contains("proxy_next_upstream error;"), "{place}");
    }

    #[test]
    fn error_pages_are_json() {
        let (cfg, views) = sample(Mode::Reelay);
        let text = render(&Desired::build(&cfg, &views, false, None), 1).unwrap();
        assert!(text.contains("default_type application/json;"));
        for code in ["400", "404", "413", "414", "500", "502", "503", "504"] {
            let loc = block(&text, &format!("location = /_reelay/error/{code} {{"));
            assert!(loc.contains("internal;"), "{loc}");
            assert!(
                loc.contains(&format!("return {code} '{{\"error\":{{\"code\":\"")),
                "{loc}"
            );
        }
        // A client's broken request is its own 400, even where nginx would say 501 or 505.
        for code in ["494", "495", "497", "501", "505"] {
            let loc = block(&text, &format!("location = /_reelay/error/{code} {{"));
            assert!(loc.contains("return 400 '{"), "{loc}");
        }
        assert!(text.contains("error_page 501 =400 /_reelay/error/501;"));
        assert!(text.contains("error_page 502 504 = @reelay_owner_down;"));
        let owner_down = block(&text, "location @reelay_owner_down {");
        assert!(owner_down.contains("Retry-After 3 always"), "{owner_down}");
        // Every page an error_page names exists. Only requests with a URI ever reach a named
        // location (nginx answers a request it could not parse with its HTML 500 instead).
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("error_page "))
        {
            let target = line
                .trim()
                .trim_end_matches(';')
                .rsplit(' ')
                .next()
                .unwrap();
            if let Some(named) = target.strip_prefix('@') {
                // 401/403 carry the token check's message, which a URI redirect would reset
                // (the template says why); the others are fallbacks, not error pages.
                assert!(
                    [
                        "reelay_owner_down",
                        "reelay_submit_retry",
                        "reelay_submit_fallback",
                        "reelay_401",
                        "reelay_403",
                        "reelay_owner_unverified",
                        "reelay_events_unverified",
                        "reelay_any_unverified",
                        "reelay_output_preflight",
                        "reelay_peer_down",
                        "reelay_peer_unverified",
                    ]
                    .contains(&named),
                    "{line}"
                );
                assert!(!line.contains(" 400 "), "{line}");
            } else {
                assert!(
                    text.contains(&format!("location = {target} {{")),
                    "{line}: no such location"
                );
            }
        }
        // Every JSON body in the file parses once nginx variables are filled in.
        for line in text
            .lines()
            .filter(|l| l.contains("return ") && l.contains("'{\"error"))
        {
            let body = line.split('\'').nth(1).unwrap();
            let filled = body
                .replace("$reelay_owner", "aws")
                .replace("$request_id", "x");
            serde_json::from_str::<reelay_protocol::ErrorBody>(&filled)
                .unwrap_or_else(|e| panic!("{e}: {body}"));
        }
    }

    /// Issue 12, finding 4: with nginx's passive checks (max_fails=1) one client's broken
    /// upload took a cluster out of rotation for everyone. Only the controller decides health.
    #[test]
    fn no_request_can_take_a_cluster_out_of_rotation() {
        let (cfg, views) = sample(Mode::Reelay);
        let text = render(&Desired::build(&cfg, &views, false, None), 1).unwrap();
        let servers: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("server ") && l.contains(":1808"))
            .collect();
        assert!(servers.len() > 10, "{servers:?}");
        for line in servers {
            assert!(line.contains(" max_fails=0"), "{line}");
            assert!(!line.contains("fail_timeout"), "{line}");
        }
        assert!(text.contains("client_body_timeout 90s;"));
        assert!(text.contains("uninitialized_variable_warn off;"));
    }

    /// Issue 16 part 4: JSON submissions get short timeouts, a retry on the other clusters
    /// and a deadline; nothing else carries a client's X-Reelay-Deadline to a cluster.
    #[test]
    fn json_submissions_are_bounded_and_retried_elsewhere_with_a_deadline() {
        let (cfg, views) = sample(Mode::Reelay);
        let text = render(&Desired::build(&cfg, &views, false, None), 1).unwrap();
        let submit = text
            .split("location = /_reelay/submit {")
            .nth(1)
            .and_then(|s| s.split("\n        }\n").next())
            .unwrap();
        for line in [
            "proxy_connect_timeout 500ms;",
            "proxy_read_timeout 1500ms;",
            "proxy_request_buffering on;",
            "proxy_set_header X-Reelay-Deadline \"$msec+1200\";",
            "error_page 504 = @reelay_submit_retry;",
        ] {
            assert!(submit.contains(line), "{line} in {submit}");
        }
        assert!(text.contains("proxy_set_header X-Reelay-Deadline \"\";"));
        // Uploads (the rest of /v1/jobs) connect within the same 500 ms, then the next server.
        let uploads = location(&text, "location = /v1/jobs {");
        assert!(
            uploads.contains("proxy_connect_timeout 500ms;"),
            "{uploads}"
        );
        // With one cluster taking new jobs there is nowhere to retry: its answer is awaited
        // as long as an upload's (and the deadline moves with it), not cut at 1.5 s.
        let mut sole = views.clone();
        sole[1].reachable = false;
        let alone = render(&Desired::build(&cfg, &sole, false, None), 2).unwrap();
        let alone_submit = alone
            .split("location = /_reelay/submit {")
            .nth(1)
            .and_then(|s| s.split("\n        }\n").next())
            .unwrap();
        assert!(
            alone_submit.contains("proxy_read_timeout 600000ms;"),
            "{alone_submit}"
        );
        assert!(
            alone_submit.contains("X-Reelay-Deadline \"$msec+599700\";"),
            "{alone_submit}"
        );
        assert!(block(&alone, "upstream retry_aws {").contains("server 127.0.0.1:1 down;"));
        sole[1].reachable = true;
        sole[1].accepting = false;
        let draining = Desired::build(&cfg, &sole, false, None);
        assert_eq!(
            draining.submit_answer_timeout_ms,
            SOLE_CLUSTER_ANSWER_TIMEOUT_MS
        );
        assert_eq!(submit_answer_timeout_ms(1500, 2), 1500);
        assert_eq!(submit_answer_timeout_ms(1500, 1), 600_000);
        assert_eq!(submit_answer_timeout_ms(1500, 0), 600_000);
        // Each cluster's retry upstream lists only the others.
        let retry_aws = text
            .split("upstream retry_aws {")
            .nth(1)
            .and_then(|s| s.split('}').next())
            .unwrap();
        assert!(!retry_aws.contains("# aws"), "{retry_aws}");
        assert!(retry_aws.contains("# gcp"), "{retry_aws}");
    }

    /// The text of the location (or named location) that starts with `header`.
    fn location<'a>(text: &'a str, header: &str) -> &'a str {
        let start = text
            .find(header)
            .unwrap_or_else(|| panic!("{header} missing"));
        let end = text[start..].find("\n        }").unwrap() + start;
        &text[start..end]
    }

    /// Issue 16 part 4, measured with aws's packets dropped (bench/edge.sh --parts silent): a
    /// status read sent on a kept-alive connection to aws just before the link died hung until
    /// the link came back (up to proxy_read_timeout, 300 s). A job's own routes now give up after
    /// OWNER_READ_TIMEOUT and answer 503; the event stream and uploads keep their long timeouts.
    #[test]
    fn job_routes_give_up_on_a_silent_owner_quickly() {
        for auth in [false, true] {
            let (mut cfg, views) = sample(Mode::Reelay);
            if auth {
                cfg.auth = Some(crate::config::AuthConfig {
                    trusted_keys: "/k".into(),
                    legacy_tokens: true,
                    revocation_sync_ms: 1000,
                });
            }
            let text = render(&Desired::build(&cfg, &views, false, None), 1).unwrap();
            let mut owner_routes = vec![
                "location ~ \"^/v1/jobs/(?<reelay_job_owner>[a-z0-9-]{1,32})\\.\" {",
                "location ~ \"^/v1/jobs/(?<reelay_job_owner>[a-z0-9-]{1,32})\\.[^/]+/outputs/.\" {",
                "location @reelay_output_preflight {",
            ];
            if auth {
                owner_routes.push("location @reelay_owner_unverified {");
            }
            for header in owner_routes {
                let loc = location(&text, header);
                assert!(
                    loc.contains(&format!("proxy_read_timeout {OWNER_READ_TIMEOUT};")),
                    "auth {auth}: {loc}"
                );
                assert!(
                    loc.contains("error_page 502 504 = @reelay_owner_down;"),
                    "{loc}"
                );
            }
            let events = location(&text, "/events$\" {");
            assert!(events.contains("proxy_read_timeout 1h;"), "{events}");
            let uploads = location(&text, "location ~ \"^/v1/uploads/");
            assert!(uploads.contains("proxy_read_timeout 600s;"), "{uploads}");
        }
        assert_eq!(OWNER_READ_TIMEOUT, "15s");
    }

    #[test]
    fn health_shows_up_as_down_servers_and_owner_states() {
        let (cfg, mut views) = sample(Mode::Reelay);
        views[1].reachable = false;
        let text = render(&Desired::build(&cfg, &views, false, None), 2).unwrap();
        assert!(text.contains("gcp down;"));
        assert!(block(&text, "upstream owner_gcp {").contains("127.0.0.2:18082 max_fails=0 down;"));
        assert!(
            block(&text, "upstream cluster_gcp {").contains("127.0.0.2:18082 max_fails=0 down;")
        );
        assert!(
            !block(&text, "upstream cluster_aws {").contains("backup"),
            "no backup that is down"
        );

        // Draining: owned routes still work, new jobs go elsewhere.
        views[1].reachable = true;
        views[1].accepting = false;
        let text = render(&Desired::build(&cfg, &views, false, None), 3).unwrap();
        assert!(text.contains("gcp up;"));
        assert!(block(&text, "upstream reelay_fallback {")
            .contains("127.0.0.2:18082 weight=1 max_fails=0 down;"));

        // Fail-open renders everything as available and says so.
        views[0].reachable = false;
        views[1].reachable = false;
        let text = render(&Desired::build(&cfg, &views, true, None), 4).unwrap();
        assert!(text.contains("FAIL-OPEN"));
        assert!(!text.contains(" down;"), "{text}");
    }

    #[test]
    fn modes_choose_the_submission_upstream() {
        for (mode, pass) in [
            (Mode::RoundRobin, "proxy_pass http://reelay_round_robin;"),
            (Mode::Weighted, "proxy_pass http://reelay_fallback;"),
            (Mode::LeastConn, "proxy_pass http://reelay_least_conn;"),
        ] {
            let (cfg, views) = sample(mode);
            let d = Desired::build(&cfg, &views, false, None);
            assert_eq!(d.mode, mode.as_str());
            let text = render(&d, 1).unwrap();
            let jobs = block(&text, "location = /v1/jobs {");
            assert!(jobs.contains(pass), "{mode:?}: {jobs}");
            assert!(!jobs.contains("auth_request"));
        }
    }

    #[test]
    fn uploads_go_to_the_cluster_in_their_id() {
        let (cfg, views) = sample(Mode::Reelay);
        let text = render(&Desired::build(&cfg, &views, false, None), 1).unwrap();
        let uploads = block(
            &text,
            "location ~ \"^/v1/uploads/(?<reelay_job_owner>[a-z0-9-]{1,32})\\.\" {",
        );
        assert!(
            uploads.contains("proxy_pass http://owner_$reelay_owner;"),
            "{uploads}"
        );
        assert!(
            uploads.contains("$reelay_owner_state = unknown"),
            "{uploads}"
        );
    }

    /// The remote claim through the edge (issue 16): `/clusters/{c}/v1/peer/…` goes to that
    /// cluster only, with the prefix stripped, and nowhere else; `/v1/peer/…` goes nowhere.
    #[test]
    fn peer_routes_go_to_the_cluster_they_name_and_nowhere_else() {
        let (cfg, mut views) = sample(Mode::Reelay);
        let text = render(&Desired::build(&cfg, &views, false, None), 1).unwrap();
        let peer = location(
            &text,
            "location ~ \"^/clusters/(?<reelay_job_owner>[a-z0-9-]{1,32})/v1/peer/\" {",
        );
        for want in [
            "rewrite \"^/clusters/[a-z0-9-]{1,32}(/v1/peer/.*)$\" $1 break;",
            "proxy_pass http://peer_$reelay_owner;",
            "if ($reelay_owner_state = unknown) {",
            "return 404 '{\"error\":{\"code\":\"unknown_cluster\"",
            "if ($reelay_owner_state = down) {",
            "return 503 '{\"error\":{\"code\":\"cluster_unavailable\"",
            "error_page 502 504 = @reelay_peer_down;",
            "error_page 413 /_reelay/error/413;",
            "proxy_request_buffering off;",
            "proxy_next_upstream error;",
        ] {
            assert!(peer.contains(want), "missing {want:?} in {peer}");
        }
        // The unknown/down checks come before the rewrite (which ends the rewrite phase).
        assert!(peer.find("unknown").unwrap() < peer.find("rewrite").unwrap());
        // Never retried after a timeout, never on another cluster.
        assert!(!peer.contains("non_idempotent") && !peer.contains("error timeout"));
        assert!(
            !peer.contains("auth_request"),
            "no [auth]: the owner checks"
        );
        let down = location(&text, "location @reelay_peer_down {");
        assert!(down.contains("return 503"), "{down}");
        // Each peer upstream holds only its cluster's addresses: no backup, no keepalive.
        let aws = block(&text, "upstream peer_aws {");
        assert!(aws.contains("server 127.0.0.1:18081 max_fails=0;"), "{aws}");
        assert!(!aws.contains("18082") && !aws.contains("backup"), "{aws}");
        let gcp = block(&text, "upstream peer_gcp {");
        assert!(gcp.contains("server 127.0.0.2:18082 max_fails=0;"), "{gcp}");
        assert!(gcp.contains("server 127.0.0.3:18082 max_fails=0;"), "{gcp}");
        assert!(!gcp.contains("18081"), "{gcp}");
        // The generic /v1/ route would send a claim to any cluster: refused instead.
        let direct = location(&text, "location /v1/peer/ {");
        assert!(direct.contains("return 404"), "{direct}");

        // A cluster the health checks find down: its peer route says 503, its servers are down.
        views[1].reachable = false;
        let text = render(&Desired::build(&cfg, &views, false, None), 2).unwrap();
        assert!(block(&text, "upstream peer_gcp {").contains("127.0.0.2:18082 max_fails=0 down;"));
        assert!(!block(&text, "upstream peer_aws {").contains("down"));

        // [auth]: the edge asks the controller (which wants the peer scope on these URIs); if it
        // does not answer, the owner checks alone.
        let mut cfg = cfg;
        cfg.auth = Some(crate::config::AuthConfig {
            trusted_keys: "/x/trusted.keys".into(),
            legacy_tokens: false,
            revocation_sync_ms: 1000,
        });
        let text = render(&Desired::build(&cfg, &views, false, None), 3).unwrap();
        let peer = location(
            &text,
            "location ~ \"^/clusters/(?<reelay_job_owner>[a-z0-9-]{1,32})/v1/peer/\" {",
        );
        for want in [
            "if ($http_authorization = \"\") {",
            "auth_request /_reelay/auth;",
            "error_page 500 = @reelay_peer_unverified;",
        ] {
            assert!(peer.contains(want), "missing {want:?} in {peer}");
        }
        let unverified = location(&text, "location @reelay_peer_unverified {");
        assert!(
            unverified.contains("proxy_pass http://peer_$reelay_owner;"),
            "{unverified}"
        );
        assert!(
            unverified.contains("error_page 502 504 = @reelay_peer_down;"),
            "{unverified}"
        );
    }

    #[test]
    fn unresolved_clusters_still_render_a_valid_upstream() {
        let (cfg, mut views) = sample(Mode::Reelay);
        views[0].addresses.clear();
        views[1].addresses.clear();
        let text = render(
            &Desired::build(&cfg, &views, false, Some("nobody nogroup".into())),
            1,
        )
        .unwrap();
        assert!(block(&text, "upstream owner_aws {").contains("server 127.0.0.1:1 down;"));
        assert!(block(&text, "upstream reelay_fallback {").contains("server 127.0.0.1:1 down;"));
        assert!(text.contains("\nuser nobody nogroup;"));
    }

    /// The real check: nginx itself accepts what the template produces (skipped without nginx).
    #[tokio::test]
    async fn nginx_accepts_the_rendered_file() {
        if std::process::Command::new("nginx")
            .arg("-v")
            .output()
            .is_err()
        {
            eprintln!("nginx not installed; skipping");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for mode in [
            Mode::Reelay,
            Mode::RoundRobin,
            Mode::Weighted,
            Mode::LeastConn,
        ] {
            let (mut cfg, mut views) = sample(mode);
            cfg.work_dir = dir.path().to_path_buf();
            cfg.nginx_http_snippet = Some("proxy_buffers 8 16k;".into());
            views[1].reachable = false;
            let text = render(&Desired::build(&cfg, &views, false, None), 1).unwrap();
            let out =
                crate::nginx::test_config_text(std::path::Path::new("nginx"), dir.path(), &text)
                    .await;
            assert!(out.is_ok(), "{mode:?}: {out:?}");
        }
    }

    /// `status_allow` guards status, metrics and the dashboard (not the API), and nginx accepts it.
    #[tokio::test]
    async fn status_allow_limits_who_reads_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cfg, views) = sample(Mode::Reelay);
        cfg.work_dir = dir.path().to_path_buf();
        let open = render(&Desired::build(&cfg, &views, false, None), 1).unwrap();
        let status = &open[open.find("location = /edge/status {").unwrap()..];
        assert!(
            !status[..status.find("\n        }").unwrap()].contains("deny"),
            "open by default"
        );
        cfg.status_allow = vec!["10.0.0.0/8".into(), "::1".into()];
        let text = render(&Desired::build(&cfg, &views, false, None), 1).unwrap();
        for loc in [
            "location = /edge/status {",
            "location = /edge/metrics {",
            "location = / {",
            "location /ui/ {",
        ] {
            let start = text.find(loc).unwrap_or_else(|| panic!("{loc}"));
            let block = &text[start..start + text[start..].find("\n        }").unwrap()];
            assert!(block.contains("allow 10.0.0.0/8;"), "{block}");
            assert!(block.contains("allow ::1;"), "{block}");
            assert!(block.contains("deny all;"), "{block}");
            // No error_page of its own, so the server's JSON pages (403 included) still apply.
            assert!(!block.contains("error_page"), "{block}");
        }
        let server =
            &text[text.find("    server {").unwrap()..text.find("location = /v1/jobs {").unwrap()];
        assert!(server.contains("error_page 403 @reelay_403;"), "{server}");
        assert!(
            server.contains("error_page 503 /_reelay/error/503;"),
            "{server}"
        );
        let api = &text[text.find("location /v1/ {").unwrap()..];
        let api = &api[..api.find("\n        }").unwrap()];
        assert!(!api.contains("deny"), "the API stays open: {api}");
        // Every cluster's workers ask for stealing decisions: the controller checks their peer
        // token, status_allow does not apply.
        let steal = &text[text.find("location = /edge/steal {").unwrap()..];
        let steal = &steal[..steal.find("\n        }").unwrap()];
        assert!(!steal.contains("deny"), "{steal}");
        assert!(
            steal.contains("proxy_pass http://reelay_controller;"),
            "{steal}"
        );
        if std::process::Command::new("nginx")
            .arg("-v")
            .output()
            .is_ok()
        {
            let out =
                crate::nginx::test_config_text(std::path::Path::new("nginx"), dir.path(), &text)
                    .await;
            assert!(out.is_ok(), "{out:?}");
        }
    }

    /// TLS towards clients, mutual TLS towards https:// clusters and limit_req render as nginx
    /// directives, and nginx accepts them with real certificate files.
    #[tokio::test]
    async fn tls_and_rate_limits_render_and_pass_nginx_t() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["reelay-cluster".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        for f in ["edge.pem", "client.pem", "ca.pem"] {
            std::fs::write(dir.path().join(f), cert.pem()).unwrap();
        }
        for f in ["edge.key", "client.key"] {
            std::fs::write(dir.path().join(f), key.serialize_pem()).unwrap();
        }
        let d = dir.path().display();
        let cfg = EdgeConfig::parse(&format!(
            r#"
listen = "127.0.0.1:18443"
control_listen = "127.0.0.1:19180"
work_dir = "{d}/work"
tls_cert = "{d}/edge.pem"
tls_key = "{d}/edge.key"
upstream_client_cert = "{d}/client.pem"
upstream_client_key = "{d}/client.key"
upstream_ca = "{d}/ca.pem"
upstream_server_name = "reelay-cluster"
rate_limit_per_second = 50
rate_limit_burst = 100
[[clusters]]
name = "aws"
url = "https://127.0.0.1:18081"
"#
        ))
        .unwrap();
        let views = vec![ClusterView {
            addresses: vec!["127.0.0.1:18081".parse().unwrap()],
            reachable: true,
            accepting: true,
        }];
        let text = render(&Desired::build(&cfg, &views, false, None), 1).unwrap();
        for want in [
            "listen 127.0.0.1:18443 ssl;",
            &format!("ssl_certificate {d}/edge.pem;"),
            &format!("proxy_ssl_certificate {d}/client.pem;"),
            &format!("proxy_ssl_certificate_key {d}/client.key;"),
            &format!("proxy_ssl_trusted_certificate {d}/ca.pem;"),
            "proxy_ssl_verify on;",
            "proxy_ssl_server_name on;",
            "proxy_ssl_name reelay-cluster;",
            "proxy_pass https://owner_$reelay_owner;",
            "proxy_pass http://reelay_controller;",
            "rate=50r/s;",
            "limit_req zone=reelay_clients burst=100 nodelay;",
            "error_page 429 /_reelay/error/429;",
            "\"code\":\"rate_limited\"",
        ] {
            assert!(text.contains(want), "missing {want:?}");
        }
        assert!(!text.contains("proxy_pass http://owner_"));
        // The remote claim is not limited per address (a refused renewal would cost a lease):
        // its location replaces the server's limit_req with a zone whose key is always empty,
        // which nginx never counts.
        let peer = location(
            &text,
            "location ~ \"^/clusters/(?<reelay_job_owner>[a-z0-9-]{1,32})/v1/peer/\" {",
        );
        assert!(peer.contains("limit_req zone=reelay_peers;"), "{peer}");
        assert!(!peer.contains("reelay_clients"), "{peer}");
        assert!(text.contains("limit_req_zone $reelay_peer_rate_key zone=reelay_peers:"));
        let key = block(&text, "map $request_method $reelay_peer_rate_key {");
        assert_eq!(
            key.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect::<Vec<_>>(),
            [
                "map $request_method $reelay_peer_rate_key {",
                "default \"\";"
            ],
            "{key}"
        );
        // Every other route keeps the per-address limit, set once for the server.
        assert_eq!(text.matches("limit_req zone=").count(), 2);
        // The plain sample has none of it.
        let (plain, pviews) = sample(Mode::Reelay);
        let plain = render(&Desired::build(&plain, &pviews, false, None), 1).unwrap();
        assert!(
            !plain.contains(" ssl;")
                && !plain.contains("limit_req ")
                && !plain.contains("proxy_ssl")
        );

        // Config errors: https without a name or CA, mixed schemes.
        for (bad, field) in [
            ("upstream_server_name = \"reelay-cluster\"\n", "upstream_ca"),
            ("upstream_ca = \"/x/ca.pem\"\n", "upstream_server_name"),
        ] {
            let text = format!(
                "listen = \"127.0.0.1:1\"\ncontrol_listen = \"127.0.0.1:2\"\n{bad}[[clusters]]\nname = \"a\"\nurl = \"https://h:1\"\n"
            );
            let err = EdgeConfig::parse(&text).unwrap_err().to_string();
            assert!(err.starts_with(field), "{err}");
        }
        let mixed = "listen = \"127.0.0.1:1\"\ncontrol_listen = \"127.0.0.1:2\"\nupstream_ca = \"/c\"\nupstream_server_name = \"n\"\n[[clusters]]\nname = \"a\"\nurl = \"https://h:1\"\n[[clusters]]\nname = \"b\"\nurl = \"http://h:2\"\n";
        assert!(EdgeConfig::parse(mixed)
            .unwrap_err()
            .to_string()
            .starts_with("clusters"));

        if std::process::Command::new("nginx")
            .arg("-v")
            .output()
            .is_err()
        {
            eprintln!("nginx not installed; skipping nginx -t");
            return;
        }
        let work = dir.path().join("work");
        let out = crate::nginx::test_config_text(std::path::Path::new("nginx"), &work, &text).await;
        assert!(out.is_ok(), "{out:?}");
    }

    /// `[auth]` and the HTTP redirect listener render, and nginx accepts them; without
    /// `[auth]` none of it appears.
    #[tokio::test]
    async fn auth_and_the_https_redirect_render_and_pass_nginx_t() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["edge".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("edge.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("edge.key"), key.serialize_pem()).unwrap();
        let d = dir.path().display();
        for mode in ["reelay", "round_robin"] {
            let cfg = EdgeConfig::parse(&format!(
                r#"
listen = "127.0.0.1:18443"
control_listen = "127.0.0.1:19180"
work_dir = "{d}/work-{mode}"
mode = "{mode}"
tls_cert = "{d}/edge.pem"
tls_key = "{d}/edge.key"
http_redirect_listen = "127.0.0.1:18080"
[auth]
trusted_keys = "{d}/trusted.keys"
[[clusters]]
name = "aws"
url = "http://127.0.0.1:18081"
"#
            ))
            .unwrap();
            let views = vec![ClusterView {
                addresses: vec!["127.0.0.1:18081".parse().unwrap()],
                reachable: true,
                accepting: true,
            }];
            let text = render(&Desired::build(&cfg, &views, false, None), 1).unwrap();
            for want in [
                "if ($http_authorization = \"\")",
                "auth_request /_reelay/auth;",
                "proxy_pass http://reelay_controller/internal/auth;",
                "error_page 401 @reelay_401;",
                "location @reelay_owner_unverified",
                "location = /v1/load",
                "listen 127.0.0.1:18080;",
                "return 308 https://$host$request_uri;",
            ] {
                assert!(text.contains(want), "{mode}: missing {want:?}");
            }
            // A CORS preflight to an output file goes to the owner before any token check (it
            // never carries a token); the files themselves are checked like every job route.
            let outputs = text
                .find("/outputs/.\" {")
                .map(|i| &text[i..i + text[i..].find("\n        }").unwrap()])
                .unwrap_or_else(|| panic!("{mode}: no output-files location"));
            let (preflight, rest) = outputs.split_once("error_page 418").unwrap();
            assert!(
                preflight.contains("if ($reelay_cors_preflight)"),
                "{outputs}"
            );
            assert!(
                rest.contains("auth_request /_reelay/auth;")
                    && rest.contains("if ($http_authorization = \"\")"),
                "{outputs}"
            );
            let named = text
                .find("location @reelay_output_preflight")
                .map(|i| &text[i..i + text[i..].find("\n        }").unwrap()])
                .unwrap();
            assert!(!named.contains("auth_request"), "{named}");
            let work = dir.path().join(format!("work-{mode}"));
            std::fs::create_dir_all(&work).unwrap();
            crate::nginx::test_config_text(std::path::Path::new("nginx"), &work, &text)
                .await
                .unwrap();
        }
        let (plain, pviews) = sample(Mode::Reelay);
        let plain = render(&Desired::build(&plain, &pviews, false, None), 1).unwrap();
        assert!(!plain.contains("auth_request /_reelay/auth") && !plain.contains("return 308"));
        assert!(!plain.contains("$http_authorization"));
    }
}
