//! CORS on output downloads, and only there.
//!
//! A web player on the customer's own site (hls.js, any MSE player) fetches playlists and
//! segments with `fetch`/XHR from another origin; without `Access-Control-Allow-Origin` the
//! browser hides every answer from it. The outputs route (`/v1/jobs/{id}/outputs/{path}`) gets:
//!
//! - `Access-Control-Allow-Origin` for an allowed origin (`cors_allowed_origins`, default `*`),
//!   on every answer of that route, errors included (a player can then tell a 401 from a network
//!   failure), and `Access-Control-Expose-Headers` so a player reading ranges sees
//!   `Content-Range`, `Content-Length` and `Accept-Ranges`;
//! - an answer to the `OPTIONS` preflight without a token (a preflight never carries one; the
//!   browser sends it because the player adds `Authorization: Bearer …` or `Range`, which are not
//!   CORS-safelisted): `GET`/`HEAD` with `Authorization` and `Range` allowed.
//!
//! Never `Access-Control-Allow-Credentials`: the token travels in a header the page's script sets
//! itself, so cookies and HTTP auth are never needed, and `*` stays valid. The job API (submit,
//! list, cancel, tokens) gets no CORS at all: a page on another origin must not drive it with a
//! token the browser holds (see docs/security.md).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Request headers a cross-origin player may send to the outputs.
pub const ALLOW_HEADERS: &str = "Authorization, Range";
/// Response headers a cross-origin player may read beyond the safelisted ones.
pub const EXPOSE_HEADERS: &str = "Content-Range, Content-Length, Accept-Ranges, Content-Type";
/// Browsers cache a preflight this long (Chromium caps it at 2 hours).
pub const MAX_AGE_SECONDS: u32 = 600;

/// Which origins may read outputs: parsed from `cors_allowed_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `["*"]`: any page may read outputs (they still need a token unless the cluster runs open).
    Any,
    /// Exact origins (`https://player.example.com`); an empty list turns CORS off.
    List(Vec<String>),
}

/// Why a `cors_allowed_origins` entry is refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("\"*\" must be the only entry")]
    WildcardAmongOthers,
    #[error("{0:?} is not an origin (scheme://host[:port], http or https, no path)")]
    NotAnOrigin(String),
}

impl OriginError {
    pub fn code(&self) -> &'static str {
        match self {
            OriginError::WildcardAmongOthers => "cors_wildcard_among_others",
            OriginError::NotAnOrigin(_) => "cors_not_an_origin",
        }
    }
}

/// Why a preflight is refused (403 with this code, and no CORS headers, so the browser fails it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightRefusal {
    #[error("origin {0:?} may not read outputs (cors_allowed_origins)")]
    OriginNotAllowed(String),
    #[error("outputs are read with GET or HEAD only, not {0}")]
    MethodNotAllowed(String),
    #[error("request header {0:?} is not allowed on outputs (allowed: Authorization, Range)")]
    HeaderNotAllowed(String),
}

impl PreflightRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            PreflightRefusal::OriginNotAllowed(_) => "cors_origin_not_allowed",
            PreflightRefusal::MethodNotAllowed(_) => "cors_method_not_allowed",
            PreflightRefusal::HeaderNotAllowed(_) => "cors_header_not_allowed",
        }
    }
}

/// A serialised origin as browsers send it: `http(s)://host[:port]`, lower-case, no path.
fn valid_origin(o: &str) -> bool {
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-:[]".contains(c))
}

impl AllowedOrigins {
    pub fn parse(entries: &[String]) -> Result<AllowedOrigins, OriginError> {
        if entries.iter().any(|e| e == "*") {
            return if entries.len() == 1 {
                Ok(AllowedOrigins::Any)
            } else {
                Err(OriginError::WildcardAmongOthers)
            };
        }
        for e in entries {
            if !valid_origin(e) {
                return Err(OriginError::NotAnOrigin(e.clone()));
            }
        }
        Ok(AllowedOrigins::List(entries.to_vec()))
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    pub fn allow(&self, origin: &str) -> Option<HeaderValue> {
        match self {
            AllowedOrigins::Any => Some(HeaderValue::from_static("*")),
            AllowedOrigins::List(list) => list
                .iter()
                .any(|o| o == origin)
                .then(|| HeaderValue::from_str(origin).ok())
                .flatten(),
        }
    }
}

/// `/v1/jobs/{id}/outputs/{path}` with a non-empty path: the files, not the listing (JSON the
/// dashboard reads same-origin) and nothing else of the job API.
pub fn is_output_file_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v1/jobs/") else {
        return false;
    };
    let Some((id, rest)) = rest.split_once('/') else {
        return false;
    };
    !id.is_empty()
        && rest
            .strip_prefix("outputs/")
            .is_some_and(|file| !file.is_empty())
}

/// Checks a preflight's method and headers against what outputs allow.
pub fn check_preflight(
    origins: &AllowedOrigins,
    origin: &str,
    method: &str,
    request_headers: Option<&str>,
) -> Result<HeaderValue, PreflightRefusal> {
    let allow = origins
        .allow(origin)
        .ok_or_else(|| PreflightRefusal::OriginNotAllowed(origin.to_string()))?;
    if method != "GET" && method != "HEAD" {
        return Err(PreflightRefusal::MethodNotAllowed(method.to_string()));
    }
    for h in request_headers
        .unwrap_or("")
        .split(',')
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
    {
        if !h.eq_ignore_ascii_case("authorization") && !h.eq_ignore_ascii_case("range") {
            return Err(PreflightRefusal::HeaderNotAllowed(h.to_string()));
        }
    }
    Ok(allow)
}

fn header_str<'a>(h: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The middleware: answers preflights for output files and adds the CORS headers to their
/// answers; every other path passes through untouched.
pub async fn outputs(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !is_output_file_path(req.uri().path()) {
        return next.run(req).await;
    }
    // Validated at start-up; a list that fails here (never) means no CORS.
    let origins = AllowedOrigins::parse(&state.cfg.cors_allowed_origins)
        .unwrap_or(AllowedOrigins::List(vec![]));
    let origin = header_str(req.headers(), &header::ORIGIN).map(str::to_string);
    let preflight_method = header_str(req.headers(), &header::ACCESS_CONTROL_REQUEST_METHOD);
    if req.method() == Method::OPTIONS {
        if let (Some(origin), Some(method)) = (&origin, preflight_method) {
            let asked = header_str(req.headers(), &header::ACCESS_CONTROL_REQUEST_HEADERS);
            return match check_preflight(&origins, origin, method, asked) {
                Ok(allow) => {
                    let mut resp = StatusCode::NO_CONTENT.into_response();
                    let h = resp.headers_mut();
                    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_METHODS,
                        HeaderValue::from_static("GET, HEAD, OPTIONS"),
                    );
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_HEADERS,
                        HeaderValue::from_static(ALLOW_HEADERS),
                    );
                    h.insert(
                        header::ACCESS_CONTROL_MAX_AGE,
                        HeaderValue::from(MAX_AGE_SECONDS),
                    );
                    vary_origin(h, &origins);
                    resp
                }
                Err(refusal) => {
                    ApiError::coded(StatusCode::FORBIDDEN, refusal.code(), refusal.to_string())
                        .into_response()
                }
            };
        }
    }
    let mut resp = next.run(req).await;
    if let Some(allow) = origin.as_deref().and_then(|o| origins.allow(o)) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    vary_origin(resp.headers_mut(), &origins);
    resp
}

/// With a list of origins the answer depends on `Origin`: caches must key on it.
fn vary_origin(h: &mut HeaderMap, origins: &AllowedOrigins) {
    if matches!(origins, AllowedOrigins::List(l) if !l.is_empty()) {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_output_files_are_cors_paths() {
        assert!(is_output_file_path(
            "/v1/jobs/aws.01J/outputs/hls-abr/master.m3u8"
        ));
        assert!(is_output_file_path("/v1/jobs/x/outputs/a.mp4"));
        for p in [
            "/v1/jobs",
            "/v1/jobs/x",
            "/v1/jobs/x/outputs",
            "/v1/jobs/x/outputs/",
            "/v1/jobs/x/events",
            "/v1/tokens",
            "/v1/jobs//outputs/a.mp4",
            "/v1/presets",
        ] {
            assert!(!is_output_file_path(p), "{p}");
        }
    }

    #[test]
    fn origins_parse_and_allow() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(AllowedOrigins::parse(&s(&["*"])), Ok(AllowedOrigins::Any));
        assert_eq!(
            AllowedOrigins::parse(&s(&["*", "https://a.example"])),
            Err(OriginError::WildcardAmongOthers)
        );
        for bad in [
            "https://a.example/",
            "a.example",
            "ftp://a",
            "https://A.example",
            "null",
        ] {
            assert!(
                matches!(
                    AllowedOrigins::parse(&s(&[bad])),
                    Err(OriginError::NotAnOrigin(_))
                ),
                "{bad}"
            );
        }
        let list =
            AllowedOrigins::parse(&s(&["https://a.example", "http://127.0.0.1:9000"])).unwrap();
        assert_eq!(
            list.allow("https://a.example").unwrap(),
            "https://a.example"
        );
        assert!(list.allow("https://b.example").is_none());
        assert_eq!(AllowedOrigins::Any.allow("https://b.example").unwrap(), "*");
        assert!(AllowedOrigins::parse(&[])
            .unwrap()
            .allow("https://a.example")
            .is_none());
    }

    #[test]
    fn preflight_allows_get_with_authorization_and_range_only() {
        let any = AllowedOrigins::Any;
        assert!(check_preflight(&any, "https://p", "GET", Some("authorization, range")).is_ok());
        assert!(check_preflight(&any, "https://p", "HEAD", None).is_ok());
        assert_eq!(
            check_preflight(&any, "https://p", "DELETE", None)
                .unwrap_err()
                .code(),
            "cors_method_not_allowed"
        );
        assert_eq!(
            check_preflight(&any, "https://p", "GET", Some("authorization,x-evil"))
                .unwrap_err()
                .code(),
            "cors_header_not_allowed"
        );
        assert_eq!(
            check_preflight(&AllowedOrigins::List(vec![]), "https://p", "GET", None)
                .unwrap_err()
                .code(),
            "cors_origin_not_allowed"
        );
    }
}
