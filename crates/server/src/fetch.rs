//! Downloading URL inputs ourselves, so ffmpeg never touches the network, with SSRF guards:
//! the address actually connected to is checked (in the DNS resolver, so a name that resolves to
//! 127.0.0.1 or a rebinding trick is caught), literal IPs are checked before the request, and every
//! redirect is checked again.

use crate::error::ErrorCode;
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
            FetchError::TooLarge(_) => ErrorCode::InputTooLarge.as_str(),
            FetchError::ClientStatus(_) | FetchError::Transient(_) => "input_fetch_failed",
        }
    }
}

/// Addresses no URL input may reach unless private URLs are allowed: loopback, private,
/// link-local (cloud metadata at 169.254.169.254), CGNAT, multicast, unspecified, reserved and
/// documentation ranges, and the IPv6 equivalents. IPv6 forms that carry an IPv4 address
/// (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, 6to4 `2002:aabb:ccdd::/48`) are
/// judged by that IPv4 address, because that is where the packets end up; Teredo (`2001::/32`)
/// hides its IPv4 addresses behind a relay and is refused whole.
pub fn ip_is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_public(v4),
        IpAddr::V6(v6) => v6_is_public(v6),
    }
}

fn v6_is_public(v6: Ipv6Addr) -> bool {
    if v6.is_loopback() || v6.is_unspecified() {
        return false;
    }
    let seg = v6.segments();
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated but still parsed and routed
    // by some stacks): the IPv4 address decides.
    if let Some(v4) = v6.to_ipv4() {
        return v4_is_public(v4);
    }
    // 6to4: 2002:AABB:CCDD::/48 is the IPv4 address AA.BB.CC.DD's network.
    if seg[0] == 0x2002 {
        let [a, b] = seg[1].to_be_bytes();
        let [c, d] = seg[2].to_be_bytes();
        return v4_is_public(Ipv4Addr::new(a, b, c, d));
    }
    !(v6.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated, still private)
        || (seg[0] == 0x64 && seg[1] == 0xff9b) // NAT64 64:ff9b::/32 (well-known and local-use)
        || (seg[0] == 0x2001 && seg[1] == 0) // Teredo 2001::/32
        || (seg[0] == 0x2001 && seg[1] == 0xdb8) // documentation 2001:db8::/32
        || (seg[0] == 0x100 && seg[1..4] == [0, 0, 0])) // discard-only 100::/64
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
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments 192.0.0.0/24
        || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 6to4 relay anycast 192.88.99.0/24
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

/// A client that goes only where a URL input may: never through a proxy, and (unless private
/// addresses are allowed) only to public addresses, checked on every DNS answer connected to.
/// Webhook delivery uses it too, so a notify URL meets the same guard as an input URL.
pub fn guarded_client_builder(allow_private: bool) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        // Never through HTTP_PROXY/HTTPS_PROXY/ALL_PROXY: a proxy resolves names itself, so
        // the guarded resolver would never see where the request really goes.
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("reelay/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        b = b.dns_resolver(Arc::new(GuardedResolver));
    }
    b
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
            // Never through HTTP_PROXY/HTTPS_PROXY/ALL_PROXY: a proxy resolves names itself, so
            // the guarded resolver below would never see where the request really goes.
            .no_proxy()
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
        if status.is_redirection() {
            // The client follows every redirect it can; one that reaches us points somewhere it
            // cannot go (file:, data:, a Location that is no URL). Retrying changes nothing.
            return Err(FetchError::BadUrl(format!(
                "the input URL redirects (HTTP {}) to a location that is not an http(s) URL",
                status.as_u16()
            )));
        }
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

    /// IPv6 transition forms that embed an IPv4 address reach that address, and the reserved
    /// ranges are no one's public server.
    #[test]
    fn ipv6_transition_and_reserved_ranges_are_not_public() {
        for ip in [
            "::127.0.0.1",                          // IPv4-compatible, loopback inside
            "::10.0.0.1",                           // IPv4-compatible, private inside
            "::169.254.169.254",                    // IPv4-compatible, cloud metadata inside
            "2002:7f00:1::",                        // 6to4 of 127.0.0.1
            "2002:a9fe:a9fe::1",                    // 6to4 of 169.254.169.254
            "2002:c0a8:101::1",                     // 6to4 of 192.168.1.1
            "2001::1",                              // Teredo
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "fec0::1",                              // site-local
            "feff::1",                              // site-local, top of fec0::/10
            "100::1",                               // discard-only 100::/64
            "2001:db8::1",                          // documentation
            "192.0.0.1",                            // IETF protocol assignments 192.0.0.0/24
            "192.0.0.170",                          // NAT64 discovery, same block
            "192.88.99.1",                          // 6to4 relay anycast
            "::ffff:192.88.99.1",
        ] {
            assert!(!ip_is_public(ip.parse().unwrap()), "{ip} treated as public");
        }
        for ip in [
            "2002:808:808::1",      // 6to4 of 8.8.8.8
            "2001:4860:4860::8888", // not Teredo: only 2001:0::/32 is
            "101::1",
            "192.0.1.1",
            "192.88.98.1",
        ] {
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

    /// A redirect the client cannot follow (`file:`, `ftp:` ...) is the URL's fault: retrying
    /// cannot change where it points, so the failure must be permanent.
    #[tokio::test]
    async fn redirects_to_other_schemes_fail_permanently() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let n = c.read(&mut buf).await.unwrap_or(0);
                let target = if String::from_utf8_lossy(&buf[..n]).starts_with("GET /ftp") {
                    "ftp://media.example.com/x.mp4"
                } else {
                    "file:///etc/passwd"
                };
                let _ = c
                    .write_all(format!("HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
                    .await;
            }
        });
        // Private URLs allowed, so the loopback test server itself is reachable.
        let f = Fetcher::new(true, Duration::from_secs(5)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for path in ["/file", "/ftp"] {
            let e = f
                .download(&format!("http://{addr}{path}"), &dir.path().join("x"), 100)
                .await
                .unwrap_err();
            assert!(!e.is_transient(), "{path}: {e:?} would be retried");
            assert!(
                matches!(e.code(), "invalid_url" | "forbidden_url"),
                "{path}: {e:?}"
            );
        }
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
