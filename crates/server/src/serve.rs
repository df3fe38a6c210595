//! The HTTP listener: hyper's HTTP/1 server under the axum router, instead of `axum::serve`,
//! because that one has no header read timeout (slow-loris) and no TLS. Each connection is
//! counted against its client's budget (`conn_limit`), gets the client's address (`ConnectInfo`,
//! for per-address rate limits), optionally a rustls handshake (with client certificates checked
//! against a CA for mutual TLS), a deadline for sending a request's headers, and time limits on
//! reading every request body (`body::TimedBody`).

use crate::body::{BodyLimits, TimedBody};
use crate::conn_limit::{Admission, ClientBudget};
use crate::metrics as m;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// A TLS handshake must finish within this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection over its client's budget must send its request within this long.
const HEALTH_ONLY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection over its client's budget may still ask for: what the edge's health probes
/// and load polls read, and Prometheus.
const HEALTH_ONLY_ROUTES: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/v1/load"];

#[derive(Clone)]
pub struct HttpOptions {
    /// Serve HTTPS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// A request's headers must arrive within this long, or the connection is closed.
    pub header_read_timeout: Duration,
    /// Time limits on reading request bodies.
    pub body: BodyLimits,
    /// Open connections one client address may hold (0 = no limit); see `conn_limit`.
    pub max_connections_per_client: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        let cfg = crate::Config::default();
        HttpOptions {
            tls: None,
            header_read_timeout: Duration::from_secs(cfg.header_read_timeout_seconds),
            body: cfg.body_limits(),
            max_connections_per_client: cfg.max_connections_per_client,
        }
    }
}

impl HttpOptions {
    /// The main listener's options from the configuration (TLS certificates are read here).
    pub fn from_config(cfg: &crate::Config) -> Result<HttpOptions, TlsError> {
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(cert), Some(key)) => Some(tls_config(cert, key, cfg.tls_client_ca.as_deref())?),
            _ => None,
        };
        Ok(HttpOptions {
            tls,
            header_read_timeout: Duration::from_secs(cfg.header_read_timeout_seconds),
            body: cfg.body_limits(),
            max_connections_per_client: cfg.max_connections_per_client,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("reading certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("no certificate in {}", path.display())));
    }
    Ok(certs)
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, HTTP/1.1 by ALPN) from PEM
/// files. With `client_ca`, clients must present a certificate that chains to it.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("reading the private key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError(format!("client CA {}: {e}", ca.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `app` on `listener` until `stop`. Then it stops accepting, idle connections close, and
/// a request in flight (an upload half sent, a download) finishes on its connection: this returns
/// once every connection has ended, so the caller bounds the wait (its grace period).
pub async fn serve(listener: TcpListener, app: Router, opts: HttpOptions, stop: CancellationToken) {
    let acceptor = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let connections = TaskTracker::new();
    // One budget per listener: the ops listener's probes never compete with API clients.
    let budget = ClientBudget::new(opts.max_connections_per_client);
    let refusing = Refusals::default();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (ticket, health_only) = match budget.admit(peer.ip()) {
            Admission::Full(t) => (t, false),
            Admission::HealthOnly(t) => (t, true),
            Admission::Refused => {
                tracing::debug!(%peer, "connection refused: the client holds too many");
                // Plain HTTP only: a TLS client could not read an answer before a handshake.
                if acceptor.is_none() && refusing.try_acquire() {
                    connections.spawn(refuse(tcp, refusing.clone()));
                } else {
                    metrics::counter!(m::CONNECTIONS_REFUSED, "answer" => "closed").increment(1);
                }
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (app, stop, acceptor) = (app.clone(), stop.clone(), acceptor.clone());
        let conn = Connection {
            peer,
            app,
            header_read_timeout: if health_only {
                opts.header_read_timeout.min(HEALTH_ONLY_HEADER_TIMEOUT)
            } else {
                opts.header_read_timeout
            },
            body: opts.body,
            health_only,
        };
        connections.spawn(async move {
            let _ticket = ticket;
            match acceptor {
                None => conn.serve(tcp, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => conn.serve(tls, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    if !connections.is_empty() {
        tracing::info!(
            open = connections.len(),
            "letting open connections finish their requests"
        );
    }
    connections.wait().await;
}

/// One accepted connection and how it is served.
struct Connection {
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    body: BodyLimits,
    /// Over its client's budget: one request, health and load routes only.
    health_only: bool,
}

impl Connection {
    async fn serve<S>(self, io: S, stop: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            peer,
            app,
            header_read_timeout,
            body,
            health_only,
        } = self;
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            async move {
                let mut resp = if health_only && !is_health_request(&req) {
                    too_many_connections()
                } else {
                    let deadline = body.deadline_for(req.headers());
                    let mut req = req.map(|b| TimedBody::new(b, body.idle, deadline));
                    req.extensions_mut().insert(ConnectInfo(peer));
                    app.oneshot(req).await?
                };
                // Every answer of every listener: outputs are user-supplied bytes that a
                // browser must never sniff into HTML or script, and JSON must stay JSON.
                resp.headers_mut().insert(
                    http::header::X_CONTENT_TYPE_OPTIONS,
                    http::HeaderValue::from_static("nosniff"),
                );
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .keep_alive(!health_only);
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

/// Connections being told "too many connections" right now, bounded so that refusing costs at
/// most [`MAX_REFUSING`] descriptors for at most [`REFUSAL_LINGER`] each; past that they are
/// closed without a word.
#[derive(Clone, Default)]
struct Refusals(Arc<std::sync::atomic::AtomicUsize>);

const MAX_REFUSING: usize = 256;
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

impl Refusals {
    fn try_acquire(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_REFUSING).then_some(n + 1)
            })
            .is_ok()
    }
}

/// The message of both 429 `too_many_connections` answers.
const TOO_MANY_CONNECTIONS: &str =
    "this client address holds too many open connections; retry when some have closed";

/// Answers a connection over every budget with a fixed JSON 429 without reading its request,
/// then lingers briefly, discarding what the client sends, so that closing does not reset the
/// connection before the client has read the answer.
async fn refuse(mut tcp: tokio::net::TcpStream, refusing: Refusals) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!(
        r#"{{"error":{{"code":"{}","message":"{TOO_MANY_CONNECTIONS}"}}}}"#,
        crate::error::ErrorCode::TooManyConnections
    );
    metrics::counter!(m::CONNECTIONS_REFUSED, "answer" => "429").increment(1);
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
         x-content-type-options: nosniff\r\nretry-after: 1\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024;
        while left > 0 {
            match tcp.read(&mut sink).await? {
                0 => break,
                n => left -= n.min(left),
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    refusing.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
}

fn is_health_request<B>(req: &hyper::Request<B>) -> bool {
    (req.method() == http::Method::GET || req.method() == http::Method::HEAD)
        && HEALTH_ONLY_ROUTES.contains(&req.uri().path())
}

fn too_many_connections() -> axum::response::Response {
    use axum::response::IntoResponse;
    metrics::counter!(m::CONNECTIONS_REFUSED, "answer" => "429").increment(1);
    let mut resp = crate::error::ApiError {
        retry_after: Some(1),
        ..crate::error::ApiError::new(
            crate::error::ErrorCode::TooManyConnections,
            TOO_MANY_CONNECTIONS,
        )
    }
    .into_response();
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}
