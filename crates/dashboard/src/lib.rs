//! The operations dashboard: plain HTML, CSS and JavaScript embedded in the binary.
//!
//! Served at `/` by every cluster (its own jobs, `/v1/load`) and by the edge (every cluster,
//! `/edge/status`, the merged job list); the assets live under `/ui/`. Nothing is built: the
//! files in `assets/` are what the browser gets. The page talks only to the API of the origin
//! it came from, so it works the same through the edge's nginx and on a cluster directly.
//!
//! Every answer carries a strict Content-Security-Policy (same origin only, no inline script or
//! style; `blob:` for media and fetches so that hls.js can feed Media Source Extensions),
//! `X-Content-Type-Options: nosniff`, and is revalidated with an `ETag`.
//!
//! `assets/hls.min.js` is hls.js 1.7.4 (Apache-2.0, `assets/hls.js.LICENSE`), copied unchanged
//! from `npm pack hls.js@1.7.4` (`dist/hls.min.js`, sha256
//! cfc70cc9e9fc63d071919e087670abc760c8fd1bc889b88588026e4d22193bbe).
//!
//! `assets/dash.all.min.js` is dash.js 5.2.1 (BSD-3-Clause, `assets/dash.js.LICENSE.md`), the
//! published build unchanged (sha256
//! 3a22b1f4576ab294f41e56f156cec7972a5f83edda379416778293ff22d2eb49): the DASH player of a job
//! page's `.mpd` outputs. `assets/shaka-player.compiled.js` (Shaka Player 5.2.12, Apache-2.0,
//! `assets/shaka-player.LICENSE`) is NOT embedded: the browser test's cross-origin page uses it.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Where the page runs; decides what it reads for the cluster panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One cluster: `/v1/load` and that cluster's jobs.
    Cluster,
    /// The edge: `/edge/status` and the merged job list of every cluster.
    Edge,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Cluster => "cluster",
            Mode::Edge => "edge",
        }
    }
}

/// The policy sent with every dashboard answer. `media-src` allows `data:` because hls.js gives
/// each subtitle rendition it exposes an empty `<track src="data:,WEBVTT">` (the cues are added
/// by script); media cannot run script, so this widens nothing that matters.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: data:; connect-src 'self' blob:; \
font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const HLS_JS: &str = include_str!("../assets/hls.min.js");
const FAVICON: &str = include_str!("../assets/favicon.svg");
const HLS_LICENSE: &str = include_str!("../assets/hls.js.LICENSE");
const DASH_JS: &str = include_str!("../assets/dash.all.min.js");
const DASH_LICENSE: &str = include_str!("../assets/dash.js.LICENSE.md");

/// One embedded file: its name under `/ui/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: APP_JS,
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: APP_CSS,
    },
    Asset {
        name: "hls.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: HLS_JS,
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: FAVICON,
    },
    Asset {
        name: "hls.js.LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: HLS_LICENSE,
    },
    Asset {
        name: "dash.all.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: DASH_JS,
    },
    Asset {
        name: "dash.js.LICENSE.md",
        content_type: "text/plain; charset=utf-8",
        body: DASH_LICENSE,
    },
];

/// The dashboard's routes: `GET /` (the page) and `GET /ui/{file}` (its assets). Merge it into
/// a router of any state; HEAD is answered too.
pub fn router<S>(mode: Mode) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(
            "/",
            get(move |headers: HeaderMap| async move { index(mode, &headers) }),
        )
        .route("/ui/{file}", get(asset))
}

/// The page with its mode filled in (`<body data-mode="edge">`).
pub fn index_html(mode: Mode) -> String {
    INDEX.replace("{{MODE}}", mode.as_str())
}

fn index(mode: Mode, headers: &HeaderMap) -> Response {
    let body = index_html(mode);
    respond(headers, "text/html; charset=utf-8", body.into_bytes())
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => respond(&headers, a.content_type, a.body.as_bytes().to_vec()),
        None => {
            let body = r#"{"error":{"code":"not_found","message":"no such dashboard file"}}"#;
            let mut resp = (StatusCode::NOT_FOUND, body).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            security_headers(h);
            resp
        }
    }
}

/// FNV-1a: stable across builds of the same bytes, good enough to tell versions apart.
fn etag(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in body {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("\"{h:016x}\"")
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

fn respond(req: &HeaderMap, content_type: &'static str, body: Vec<u8>) -> Response {
    let tag = etag(&body);
    let not_modified = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut resp = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = body.into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    // Revalidate every time: the files change with the binary, not with their names.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(h);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A real HTTP exchange with the router on a loopback socket: status line, headers, body.
    async fn get(mode: Mode, uri: &str, inm: Option<&str>) -> (u16, String, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router::<()>(mode)).await;
        });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let extra = inm
            .map(|t| format!("If-None-Match: {t}\r\n"))
            .unwrap_or_default();
        let req = format!("GET {uri} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        server.abort();
        let raw = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    fn header<'a>(head: &'a str, name: &str) -> &'a str {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or("")
    }

    #[tokio::test]
    async fn index_carries_mode_and_security_headers() {
        for (mode, want) in [(Mode::Edge, "edge"), (Mode::Cluster, "cluster")] {
            let (status, head, body) = get(mode, "/", None).await;
            assert_eq!(status, 200);
            assert_eq!(header(&head, "content-type"), "text/html; charset=utf-8");
            assert_eq!(header(&head, "x-content-type-options"), "nosniff");
            let csp = header(&head, "content-security-policy");
            assert!(csp.contains("default-src 'none'"));
            assert!(csp.contains("script-src 'self';"));
            assert!(csp.contains("media-src 'self' blob: data:;"));
            assert!(csp.contains("connect-src 'self' blob:"));
            assert!(!csp.contains("unsafe"));
            assert!(body.contains(&format!("data-mode=\"{want}\"")));
            assert!(!body.contains("{{MODE}}"));
        }
    }

    #[tokio::test]
    async fn assets_are_served_with_types_and_etags() {
        let (status, head, _) = get(Mode::Cluster, "/ui/app.js", None).await;
        assert_eq!(status, 200);
        assert_eq!(
            header(&head, "content-type"),
            "text/javascript; charset=utf-8"
        );
        let tag = header(&head, "etag").to_string();
        assert!(tag.starts_with('"'));
        let (status, head, _) = get(Mode::Cluster, "/ui/app.js", Some(&tag)).await;
        assert_eq!(status, 304);
        assert_eq!(header(&head, "x-content-type-options"), "nosniff");

        let (status, _, body) = get(Mode::Edge, "/ui/hls.min.js", None).await;
        assert_eq!(status, 200);
        assert!(body.contains("Hls"));

        for bad in ["/ui/nope.js", "/ui/..%2FCargo.toml"] {
            let (status, head, body) = get(Mode::Edge, bad, None).await;
            assert_eq!(status, 404, "{bad}");
            assert_eq!(header(&head, "x-content-type-options"), "nosniff");
            assert!(body.contains("\"not_found\""));
        }
    }

    #[test]
    fn page_has_no_inline_script_or_handlers() {
        let lower = INDEX.to_ascii_lowercase();
        // Every <script> has a src; no on* attributes; no inline style attributes.
        for (i, _) in lower.match_indices("<script") {
            let tag_end = lower[i..].find('>').unwrap() + i;
            assert!(
                lower[i..tag_end].contains("src="),
                "inline script in index.html"
            );
        }
        for attr in [
            " onclick=",
            " onload=",
            " onerror=",
            " onsubmit=",
            " style=",
        ] {
            assert!(!lower.contains(attr), "index.html has {attr}");
        }
        // The script never turns strings into HTML.
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!APP_JS.contains(bad), "app.js uses {bad}");
        }
    }
}
