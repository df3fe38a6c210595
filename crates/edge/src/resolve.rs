//! Turning a cluster's `url` into the socket addresses nginx proxies to.
//!
//! nginx resolves upstream host names once, when it loads its configuration, and never again;
//! a cluster that moves (a new load balancer IP, a failover DNS record) would keep receiving
//! nothing. So the controller resolves instead, renders literal addresses, and reloads nginx when
//! the set changes. The optional hosts file is consulted first so that tests (and operators
//! pinning an address during an incident) can redirect a name without touching /etc/hosts.

use crate::config::ClusterConfig;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot read hosts file {path}: {source}")]
    HostsFile {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot resolve {host}: {source}")]
    Lookup {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    Empty { host: String },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// The addresses `name` has in hosts-file text (`IP name [alias...]`, `#` comments).
pub fn lookup_hosts(text: &str, name: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(ip) = fields.next().and_then(|f| f.parse::<IpAddr>().ok()) else {
            continue;
        };
        if fields.any(|n| n.eq_ignore_ascii_case(name)) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The cluster's current addresses, sorted and deduplicated so that comparing two resolutions
/// tells whether nginx needs a new configuration.
pub async fn resolve(
    cluster: &ClusterConfig,
    hosts_file: Option<&Path>,
) -> Result<Vec<SocketAddr>, ResolveError> {
    if let Some(addrs) = &cluster.addresses {
        return Ok(sorted(addrs.iter().copied()));
    }
    let target = cluster.target()?;
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    if let Some(path) = hosts_file {
        let text =
            tokio::fs::read_to_string(path)
                .await
                .map_err(|source| ResolveError::HostsFile {
                    path: path.display().to_string(),
                    source,
                })?;
        let ips = lookup_hosts(&text, &target.host);
        if !ips.is_empty() {
            return Ok(sorted(
                ips.into_iter().map(|ip| SocketAddr::new(ip, target.port)),
            ));
        }
    }
    let found = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|source| ResolveError::Lookup {
            host: target.host.clone(),
            source,
        })?;
    let addrs = sorted(found);
    if addrs.is_empty() {
        return Err(ResolveError::Empty { host: target.host });
    }
    Ok(addrs)
}

fn sorted(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    addrs
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(url: &str) -> ClusterConfig {
        ClusterConfig {
            name: "c".into(),
            url: url.into(),
            weight: 1,
            cost: 1.0,
            addresses: None,
            cloud: None,
        }
    }

    #[test]
    fn hosts_text_is_parsed_like_etc_hosts() {
        let text = "# comment\n127.0.0.2 aws.test aws # trailing\n\n::1 aws.test\nbogus aws.test\n10.0.0.1 other\n127.0.0.2 AWS.TEST\n";
        assert_eq!(
            lookup_hosts(text, "aws.test"),
            vec![
                "127.0.0.2".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(lookup_hosts(text, "aws").len(), 1);
        assert!(lookup_hosts(text, "missing").is_empty());
    }

    #[tokio::test]
    async fn literals_static_addresses_hosts_file_then_system() {
        let ip = resolve(&cluster("http://127.0.0.1:81"), None)
            .await
            .unwrap();
        assert_eq!(ip, vec!["127.0.0.1:81".parse().unwrap()]);

        let mut fixed = cluster("http://ignored.invalid:81");
        fixed.addresses = Some(vec![
            "127.0.0.3:9".parse().unwrap(),
            "127.0.0.2:9".parse().unwrap(),
            "127.0.0.2:9".parse().unwrap(),
        ]);
        assert_eq!(
            resolve(&fixed, None).await.unwrap(),
            vec![
                "127.0.0.2:9".parse().unwrap(),
                "127.0.0.3:9".parse().unwrap()
            ]
        );

        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.5 edge-test-name\n").unwrap();
        let named = cluster("http://edge-test-name:82");
        assert_eq!(
            resolve(&named, Some(&hosts)).await.unwrap(),
            vec!["127.0.0.5:82".parse().unwrap()]
        );
        // Not in the hosts file: the system resolver answers (localhost is in /etc/hosts).
        let local = cluster("http://localhost:83");
        let addrs = resolve(&local, Some(&hosts)).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 83));
        let missing = resolve(&named, Some(&dir.path().join("nope"))).await;
        assert!(matches!(missing, Err(ResolveError::HostsFile { .. })));
    }
}
