//! Downloading URL inputs ourselves, so ffmpeg never touches the network, with SSRF guards:
//! the address actually connected to is checked (in the DNS resolver, so a name that resolves to
//! 127.0.0.1 or a rebinding trick is caught), literal IPs are checked before the request, and every
//! redirect is checked again.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Refused by policy: permanent.
    #[error("{0}")]
    Forbidden(String),
    /// The URL itself is unusable: permanent.
    #[error("{0}")]
    BadUrl(String),
    #[error("the input is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// A 4xx answer: permanent.
    #[error("the input URL answered HTTP {0}")]
    ClientStatus(u16),
    /// 5xx, timeouts, resets: worth a retry.
    #[error("fetching the input failed: {0}")]
    Transient(String),
}

impl FetchError {
    pub fn is_transient(&self) -> bool {
        matches!(self, FetchError::Transient(_))
    }
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::Forbidden(_) => "forbidden_url",
            FetchError::BadUrl(_) => "invalid_url",
            FetchError::TooLarge(_) => "input_too_large",
            FetchError::ClientStatus(_) | FetchError::Transient(_) => "input_fetch_failed",
        }
    }
}

/// Addresses no URL input may reach unless private URLs are allowed: loopback, private,
/// link-local (cloud metadata at 169.254.169.254), CGNAT, multicast, unspecified, and the IPv6
/// equivalents including IPv4-mapped forms.
pub fn ip_is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_public(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_is_public(v4);
            }
            let seg0 = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg0 == 0x64 && v6.segments()[1] == 0xff9b) // NAT64 64:ff9b::/96
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1))
        }
    }
}

fn v4_is_public(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_multicast()
        || v4.is_broadcast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || o[0] >= 240)
}

/// Checks what can be checked without a network round trip: scheme, host, and literal IPs.
pub fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, FetchError> {
    let url = url::Url::parse(raw).map_err(|e| FetchError::BadUrl(format!("invalid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::BadUrl(format!(
            "URL scheme {:?} is not allowed; use http or https",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::BadUrl(
            "credentials in URLs are not accepted".into(),
        ));
    }
    let literal = match url.host() {
        None => return Err(FetchError::BadUrl("the URL has no host".into())),
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
    };
    if let Some(ip) = literal {
        if !allow_private && !ip_is_public(ip) {
            return Err(FetchError::Forbidden(format!(
                "URL inputs may not point at {ip}: loopback, private and link-local addresses are refused"
            )));
        }
    }
    Ok(url)
}

#[derive(Debug)]
struct ForbiddenHost(String);
impl std::fmt::Display for ForbiddenHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host {} resolves only to loopback, private or link-local addresses",
            self.0
        )
    }
}
impl std::error::Error for ForbiddenHost {}

/// Resolves with the system resolver, then drops every non-public address.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| ip_is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    Box::new(ForbiddenHost(host)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The redirect policy: at most 5 hops, each target checked like the original URL (a name
/// target is checked again by the resolver when it is connected to).
pub fn redirect_allowed(
    target: &str,
    hops_so_far: usize,
    allow_private: bool,
) -> Result<(), String> {
    if hops_so_far >= 5 {
        return Err("too many redirects".into());
    }
    check_url(target, allow_private)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    allow_private: bool,
}

impl Fetcher {
    pub fn new(allow_private: bool, total_timeout: Duration) -> Result<Fetcher, reqwest::Error> {
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            match redirect_allowed(
                attempt.url().as_str(),
                attempt.previous().len(),
                allow_private,
            ) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let mut b = reqwest::Client::builder()
            .redirect(redirect)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .timeout(total_timeout)
            .user_agent(concat!("reelay/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            b = b.dns_resolver(Arc::new(GuardedResolver));
        }
        Ok(Fetcher {
            client: b.build()?,
            allow_private,
        })
    }

    /// Downloads `url` into `dest`, refusing more than `max_bytes`.
    pub async fn download(
        &self,
        url: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, FetchError> {
        let url = check_url(url, self.allow_private)?;
        let mut resp = self.client.get(url).send().await.map_err(classify)?;
        let status = resp.status();
        if status.is_client_error() {
            return Err(FetchError::ClientStatus(status.as_u16()));
        }
        if !status.is_success() {
            return Err(FetchError::Transient(format!("HTTP {}", status.as_u16())));
        }
        if resp.content_length().is_some_and(|n| n > max_bytes) {
            return Err(FetchError::TooLarge(max_bytes));
        }
        let mut out = tokio::fs::File::create(dest)
            .await
            .map_err(|e| FetchError::Transient(format!("scratch file: {e}")))?;
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            n += chunk.len() as u64;
            if n > max_bytes {
                return Err(FetchError::TooLarge(max_bytes));
            }
            out.write_all(&chunk)
                .await
                .map_err(|e| FetchError::Transient(format!("scratch file: {e}")))?;
        }
        out.flush()
            .await
            .map_err(|e| FetchError::Transient(format!("scratch file: {e}")))?;
        Ok(n)
    }
}

/// Finds our own refusals inside reqwest's error chain; everything else is worth a retry.
fn classify(e: reqwest::Error) -> FetchError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        if let Some(f) = s.downcast_ref::<ForbiddenHost>() {
            return FetchError::Forbidden(format!("URL input refused: {f}"));
        }
        let text = s.to_string();
        if text.contains("are refused") || text.contains("not allowed") {
            return FetchError::Forbidden(format!("redirect refused: {text}"));
        }
        src = s.source();
    }
    if e.is_redirect() {
        return FetchError::BadUrl(format!("redirect failed: {e}"));
    }
    FetchError::Transient(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!ip_is_public(ip.parse().unwrap()), "{ip} treated as public");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(ip_is_public(ip.parse().unwrap()), "{ip} treated as private");
        }
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        let forbidden = |u: &str| matches!(check_url(u, false), Err(FetchError::Forbidden(_)));
        assert!(forbidden("http://127.0.0.1/x.mp4"));
        assert!(forbidden("http://[::1]:8080/x.mp4"));
        assert!(forbidden("http://169.254.169.254/latest/meta-data/"));
        assert!(forbidden("http://[::ffff:10.0.0.1]/"));
        assert!(check_url("http://127.0.0.1/x.mp4", true).is_ok());
        for bad in [
            "file:///etc/passwd",
            "gopher://x/",
            "ftp://x/y",
            "http://user:pw@host/",
            "not a url",
        ] {
            assert!(
                matches!(check_url(bad, false), Err(FetchError::BadUrl(_))),
                "{bad}"
            );
        }
        assert!(check_url("https://example.com/clip.mp4", false).is_ok());
    }

    #[test]
    fn redirects_into_private_addresses_are_refused() {
        for target in [
            "http://127.0.0.1/x.mp4",
            "http://169.254.169.254/latest/meta-data/iam/",
            "http://10.0.0.7:8080/",
            "http://[::1]/",
            "http://[::ffff:192.168.0.1]/",
            "file:///etc/passwd",
        ] {
            let e = redirect_allowed(target, 0, false).unwrap_err();
            assert!(
                e.contains("refused") || e.contains("not allowed"),
                "{target}: {e}"
            );
            // classify() turns exactly these messages into Forbidden.
        }
        assert!(redirect_allowed("http://127.0.0.1/x.mp4", 0, true).is_ok());
        assert!(redirect_allowed("https://cdn.example.com/x.mp4", 4, false).is_ok());
        assert_eq!(
            redirect_allowed("https://cdn.example.com/x.mp4", 5, false),
            Err("too many redirects".to_string())
        );
    }

    /// End to end through reqwest: a loopback server (the only one a test can run) answers with
    /// a redirect to the cloud metadata address, and the redirect policy refuses to follow it.
    #[tokio::test]
    async fn a_redirect_to_a_private_address_fails_the_download_as_forbidden() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).await;
                let _ = c
                    .write_all(b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        // The client as built for allow_private = false, but with the system resolver so the
        // loopback test server itself is reachable: the redirect policy alone must refuse.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::custom(
                |a| match redirect_allowed(a.url().as_str(), a.previous().len(), false) {
                    Ok(()) => a.follow(),
                    Err(e) => a.error(e),
                },
            ))
            .build()
            .unwrap();
        let err = client
            .get(format!("http://{addr}/clip.mp4"))
            .send()
            .await
            .unwrap_err();
        assert!(matches!(classify(err), FetchError::Forbidden(_)));
    }

    #[tokio::test]
    async fn hostnames_resolving_to_loopback_are_refused() {
        let f = Fetcher::new(false, Duration::from_secs(5)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let e = f
            .download("http://localhost:9/x.mp4", &dir.path().join("x"), 100)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Forbidden(_)), "{e:?}");
    }
}
