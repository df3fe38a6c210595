//! One active health check of one cluster: `/readyz` and `/v1/load` on every address it
//! resolved to, answered as a value.
//!
//! The probe holds no lock and changes no state; the controller hands its [`Probe`] to
//! [`crate::fleet::Fleet::observe`]. Keeping the network wait outside the fleet's lock is what
//! lets a hung cluster's timeouts run without delaying a placement.

use crate::config::EdgeConfig;
use crate::error::{error_chain, EdgeError};
use crate::status::unix_ms;
use reelay_protocol::LoadReport;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

/// Where and how to ask one cluster (a copy taken from the fleet, so the probe needs no lock).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeTarget {
    pub addresses: Vec<SocketAddr>,
    /// The `Host` header: the name in the cluster's URL, not the resolved address.
    pub host: String,
    pub timeout: Duration,
    /// `http` or `https`.
    pub scheme: &'static str,
}

/// What one health check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// When the check started: a load reading is as old as its request, not its answer.
    pub started: Instant,
    /// Wall-clock time the check finished, for the status page.
    pub at_unix_ms: u64,
    /// At least one address passed `/readyz` (or is draining).
    pub ok: bool,
    /// Why it failed, naming the address.
    pub error: Option<String>,
    /// The first `/v1/load` report any address gave.
    pub load: Option<LoadReport>,
}

/// Checks every address of `target` at once; the cluster is up when one of them is.
pub async fn probe(http: &reqwest::Client, target: &ProbeTarget) -> Probe {
    let started = Instant::now();
    let (ok, error, load) = if target.addresses.is_empty() {
        (false, Some("no address resolved".to_string()), None)
    } else {
        let results = futures::future::join_all(
            target
                .addresses
                .iter()
                .map(|a| probe_address(http, *a, target)),
        )
        .await;
        let load = results.iter().find_map(|r| r.load.clone());
        match results.iter().find(|r| r.ok) {
            Some(_) => (true, None, load),
            None => (false, results.into_iter().find_map(|r| r.error), load),
        }
    };
    Probe {
        started,
        at_unix_ms: unix_ms(SystemTime::now()),
        ok,
        error,
        load,
    }
}

struct AddrProbe {
    ok: bool,
    error: Option<String>,
    load: Option<LoadReport>,
}

async fn probe_address(
    http: &reqwest::Client,
    addr: SocketAddr,
    target: &ProbeTarget,
) -> AddrProbe {
    let get = |path: &str| {
        http.get(format!("{}://{addr}{path}", target.scheme))
            .header(reqwest::header::HOST, &target.host)
            .timeout(target.timeout)
            .send()
    };
    let (ready, load) = tokio::join!(get("/readyz"), async {
        let resp = get("/v1/load").await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json::<LoadReport>().await.ok()
    });
    let draining = load.as_ref().is_some_and(|l| !l.accepting);
    let (ok, error) = match ready {
        Ok(r) if r.status().is_success() => (true, None),
        // Shutting down: /readyz says no, but the API still serves its jobs until it exits.
        Ok(_) if draining => (true, None),
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            (
                false,
                Some(format!("{addr}: /readyz answered {status}: {body}")),
            )
        }
        Err(e) if e.is_timeout() => (false, Some(format!("{addr}: /readyz timed out"))),
        Err(e) => (false, Some(format!("{addr}: /readyz: {}", error_chain(&e)))),
    };
    AddrProbe { ok, error, load }
}

/// The client for the controller's own requests to the clusters (health probes, the merged
/// listing, revocations). For `https://` clusters it carries the same client certificate and CA
/// as nginx; it connects to resolved addresses, so the certificate's name is not compared with
/// the address, but its chain to `upstream_ca` is checked.
pub fn cluster_client(cfg: &EdgeConfig) -> Result<reqwest::Client, EdgeError> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(30));
    let tls_error = |path: &std::path::Path, reason: String| EdgeError::UpstreamTls {
        path: path.to_path_buf(),
        reason,
    };
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| tls_error(p, e.to_string()));
    if let Some(ca) = &cfg.upstream_ca {
        let pem = read(ca)?;
        let cert =
            reqwest::Certificate::from_pem(&pem).map_err(|e| tls_error(ca, e.to_string()))?;
        b = b
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .danger_accept_invalid_hostnames(true);
    }
    if let (Some(cert), Some(key)) = (&cfg.upstream_client_cert, &cfg.upstream_client_key) {
        let mut pem = read(cert)?;
        pem.push(b'\n');
        pem.extend(read(key)?);
        let identity =
            reqwest::Identity::from_pem(&pem).map_err(|e| tls_error(cert, e.to_string()))?;
        b = b.identity(identity);
    }
    b.build().map_err(EdgeError::HttpClient)
}
