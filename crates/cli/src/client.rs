//! A typed client for the reelay HTTP API.
//!
//! Every failure becomes a [`ClientError`] that keeps what the server said (`code`, `message`)
//! or, when the server could not be talked to at all, why.

use crate::format::clean;
use crate::sse::{self, SseParser};
use futures::{Stream, StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use reelay_protocol::{ErrorBody, JobList, JobSpec, JobStatus, JobView, OutputFiles, PresetList};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;
use url::Url;

/// Largest JSON answer the client reads (a hostile server must not exhaust memory).
const MAX_JSON_BYTES: usize = 64 * 1024 * 1024;
/// Largest error body read; only its beginning is ever shown.
const MAX_ERROR_BYTES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Read size of uploads streamed from disk.
const UPLOAD_CHUNK: usize = 256 * 1024;

#[derive(Debug)]
pub enum ClientError {
    /// No connection could be made (refused, DNS, TLS, connect timeout).
    Unreachable { server: String, reason: String },
    /// The server accepted the connection but did not answer in time.
    Timeout { server: String },
    /// The server answered with its JSON error body.
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// The server answered with an error status but no JSON error body (a proxy, a crash).
    Status { status: StatusCode, body: String },
    /// The answer arrived but is not what the API promises.
    BadAnswer { what: String, reason: String },
    /// Anything else on the way, such as a connection dropped mid-answer.
    Transport { reason: String },
}

impl ClientError {
    /// Whether trying again later may help (network trouble, overloaded or restarting server).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. }
            | ClientError::Timeout { .. }
            | ClientError::Transport { .. } => true,
            ClientError::Api { status, .. } | ClientError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            ClientError::BadAnswer { .. } => false,
        }
    }

    /// Whether the server itself answered (as opposed to the request not getting through).
    pub fn is_answer(&self) -> bool {
        matches!(self, ClientError::Api { .. } | ClientError::Status { .. })
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { server, reason } => {
                write!(f, "cannot reach server at {server}: {reason}")
            }
            ClientError::Timeout { server } => {
                write!(f, "server at {server} did not answer in time")
            }
            ClientError::Api { code, message, .. } => {
                write!(f, "{}: {}", clean(code), clean(message))
            }
            ClientError::Status { status, body } if body.is_empty() => {
                write!(f, "server answered {status}")
            }
            ClientError::Status { status, body } => {
                write!(f, "server answered {status}: {}", clean(body))
            }
            ClientError::BadAnswer { what, reason } => {
                write!(f, "unexpected answer from server ({what}): {reason}")
            }
            ClientError::Transport { reason } => f.write_str(reason),
        }
    }
}

impl std::error::Error for ClientError {}

/// The innermost cause of an error, phrased for people (`connection refused`).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    if let Some(io) = current.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind::*;
        let known = match io.kind() {
            ConnectionRefused => Some("connection refused"),
            ConnectionReset => Some("connection reset"),
            ConnectionAborted => Some("connection aborted"),
            TimedOut => Some("timed out"),
            UnexpectedEof => Some("connection closed early"),
            _ => None,
        };
        if let Some(known) = known {
            return known.to_string();
        }
    }
    let text = current.to_string();
    let text = match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_string(),
    }
}

/// Joins a server-provided output location to the base URL. Paths (`/v1/jobs/...`) keep any
/// path prefix of the base URL; absolute `http(s)` URLs are taken as they are.
pub fn resolve_url(base: &Url, location: &str) -> Result<Url, String> {
    if location.starts_with('/') && !location.starts_with("//") {
        let prefix = base.path().trim_end_matches('/');
        let mut url = base.clone();
        url.set_query(None);
        url.set_fragment(None);
        let joined = format!(
            "{}{}{}",
            url.origin().ascii_serialization(),
            prefix,
            location
        );
        return Url::parse(&joined)
            .map_err(|e| format!("invalid location {:?}: {e}", clean(location)));
    }
    match Url::parse(location) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        _ => Err(format!("invalid location {:?}", clean(location))),
    }
}

/// A stream of job views from the server-sent events of one job.
pub type JobEvents = Pin<Box<dyn Stream<Item = Result<JobView, ClientError>> + Send>>;

/// A small file sent whole as one multipart part beside the input (a caption file, a
/// watermark image): the part's name, the local file name, the bytes.
#[derive(Debug, Clone)]
pub struct SidePart {
    pub name: &'static str,
    pub file_name: String,
    pub bytes: Vec<u8>,
}

pub struct Client {
    http: reqwest::Client,
    base: Url,
    authorization: Option<HeaderValue>,
}

impl Client {
    pub fn new(base: Url, token: Option<&str>) -> anyhow::Result<Self> {
        let authorization = match token.filter(|t| !t.is_empty()) {
            Some(token) => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        anyhow::anyhow!(
                            "the token contains characters not allowed in an HTTP header"
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("reelay-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {}", root_cause(&e)))?;
        Ok(Client {
            http,
            base,
            authorization,
        })
    }

    /// The base URL as people write it (no trailing slash).
    pub fn server(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// A full URL for a server-provided output location.
    pub fn resolve(&self, location: &str) -> Result<Url, ClientError> {
        resolve_url(&self.base, location).map_err(|reason| ClientError::BadAnswer {
            what: "output url".into(),
            reason,
        })
    }

    pub(crate) fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request carrying the token, which is only ever sent to the configured server.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let same_origin = url.origin() == self.base.origin();
        let mut builder = self.http.request(method, url);
        if let (true, Some(auth)) = (same_origin, &self.authorization) {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        builder
    }

    fn transport(&self, error: reqwest::Error) -> ClientError {
        let server = self.server();
        if error.is_connect() {
            ClientError::Unreachable {
                server,
                reason: root_cause(&error),
            }
        } else if error.is_timeout() {
            ClientError::Timeout { server }
        } else if error.is_decode() {
            ClientError::BadAnswer {
                what: "body".into(),
                reason: root_cause(&error),
            }
        } else if error.is_body() {
            ClientError::Transport {
                reason: format!("transfer with {server} failed: {}", root_cause(&error)),
            }
        } else {
            ClientError::Transport {
                reason: format!("request to {server} failed: {}", root_cause(&error)),
            }
        }
    }

    /// Sends a request and turns error statuses into errors.
    pub(crate) async fn execute(&self, builder: RequestBuilder) -> Result<Response, ClientError> {
        let response = builder.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = self.read_limited(response, MAX_ERROR_BYTES, true).await?;
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) => ClientError::Api {
                status,
                code: error.code,
                message: error.message,
            },
            Err(_) => ClientError::Status {
                status,
                body: String::from_utf8_lossy(&body).trim().to_string(),
            },
        })
    }

    /// Reads a body up to `limit` bytes; beyond it, either cuts (`truncate`) or fails.
    async fn read_limited(
        &self,
        mut response: Response,
        limit: usize,
        truncate: bool,
    ) -> Result<Vec<u8>, ClientError> {
        let mut body = Vec::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(body),
                // An error body that breaks off is still worth showing.
                Err(_) if truncate => return Ok(body),
                Err(e) => return Err(self.transport(e)),
            };
            if body.len() + chunk.len() > limit {
                if truncate {
                    body.extend_from_slice(&chunk[..limit - body.len()]);
                    return Ok(body);
                }
                return Err(ClientError::BadAnswer {
                    what: "body".into(),
                    reason: format!("larger than {limit} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        builder: RequestBuilder,
        what: &str,
    ) -> Result<T, ClientError> {
        let response = self
            .execute(builder.header(ACCEPT, "application/json"))
            .await?;
        let body = self.read_limited(response, MAX_JSON_BYTES, false).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::BadAnswer {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }

    /// `POST /v1/jobs` with a JSON spec (input by URL or storage key).
    pub async fn submit(
        &self,
        spec: &JobSpec,
        idempotency_key: Option<&str>,
    ) -> Result<JobView, ClientError> {
        let mut builder = self
            .request(Method::POST, self.endpoint(&["v1", "jobs"]))
            .json(spec);
        if let Some(key) = idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        self.json(builder, "job").await
    }

    /// `POST /v1/uploads/{id}/job`: a job from a finished tus upload (`spec` without input).
    pub async fn submit_from_upload(
        &self,
        upload: &str,
        spec: &JobSpec,
        idempotency_key: Option<&str>,
    ) -> Result<JobView, ClientError> {
        let mut builder = self
            .request(
                Method::POST,
                self.endpoint(&["v1", "uploads", upload, "job"]),
            )
            .json(spec);
        if let Some(key) = idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        self.json(builder, "job").await
    }

    /// `POST /v1/jobs` as multipart: the spec (without input), the side files (caption files,
    /// a watermark image), then the file streamed from disk. `bar` advances as the file is read
    /// into the request.
    pub async fn submit_upload(
        &self,
        spec: &JobSpec,
        path: &Path,
        size: u64,
        sides: &crate::commands::submit::SideFiles,
        idempotency_key: Option<&str>,
        bar: &ProgressBar,
    ) -> Result<JobView, ClientError> {
        let local = |e: std::io::Error| ClientError::Transport {
            reason: format!("cannot read {}: {e}", path.display()),
        };
        let spec_json = serde_json::to_string(spec).map_err(|e| ClientError::Transport {
            reason: format!("cannot encode the job spec: {e}"),
        })?;
        let file = tokio::fs::File::open(path).await.map_err(local)?;
        let progress = bar.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_CHUNK).inspect_ok(
            move |chunk| {
                progress.inc(chunk.len() as u64);
                if progress
                    .length()
                    .is_some_and(|len| progress.position() >= len)
                {
                    progress.set_message("waiting for the server");
                }
            },
        );
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "input".to_string());
        let spec_part = reqwest::multipart::Part::text(spec_json)
            .mime_str("application/json")
            .map_err(|e| self.transport(e))?;
        let file_part =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
                .file_name(file_name)
                .mime_str(content_type_for(path))
                .map_err(|e| self.transport(e))?;
        // The API's order: spec, the caption parts (as the spec declares them), the
        // watermark, then the file.
        let mut form = reqwest::multipart::Form::new().part("spec", spec_part);
        for side in sides.captions.iter().chain(&sides.watermark) {
            form = form.part(
                side.name,
                reqwest::multipart::Part::bytes(side.bytes.clone())
                    .file_name(side.file_name.clone()),
            );
        }
        let form = form.part("file", file_part);
        let mut builder = self
            .request(Method::POST, self.endpoint(&["v1", "jobs"]))
            .multipart(form);
        if let Some(key) = idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        self.json(builder, "job").await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        let url = self.endpoint(&["v1", "jobs", id]);
        self.json(self.request(Method::GET, url), "job").await
    }

    /// `GET /v1/jobs?status=&limit=&cursor=`.
    pub async fn jobs(
        &self,
        status: Option<JobStatus>,
        limit: Option<u32>,
        cursor: Option<&str>,
        metadata: &[(String, String)],
    ) -> Result<JobList, ClientError> {
        let mut url = self.endpoint(&["v1", "jobs"]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(status) = status {
                query.append_pair("status", status.as_str());
            }
            for (k, v) in metadata {
                query.append_pair(&format!("metadata.{k}"), v);
            }
            if let Some(limit) = limit {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.json(self.request(Method::GET, url), "job list").await
    }

    /// `DELETE /v1/jobs/{id}`.
    pub async fn cancel(&self, id: &str) -> Result<JobView, ClientError> {
        // The explicit spelling: never deletes files, 409 once the job ended.
        let url = self.endpoint(&["v1", "jobs", id, "cancel"]);
        self.json(self.request(Method::POST, url), "job").await
    }

    /// `DELETE /v1/jobs/{id}`: a finished job's files are deleted (`None`, 204); an unfinished
    /// job is cancelled instead (`Some(view)`, 200) and needs a second call.
    pub async fn delete(&self, id: &str) -> Result<Option<JobView>, ClientError> {
        let url = self.endpoint(&["v1", "jobs", id]);
        let response = self
            .execute(
                self.request(Method::DELETE, url)
                    .header(ACCEPT, "application/json"),
            )
            .await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let body = self.read_limited(response, MAX_JSON_BYTES, false).await?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| ClientError::BadAnswer {
                what: "job".to_string(),
                reason: e.to_string(),
            })
    }

    /// `POST /v1/tokens` (admin): a signed token from the server's issuer key.
    pub async fn create_token(
        &self,
        req: &reelay_identity::wire::CreateTokenRequest,
    ) -> Result<reelay_identity::wire::CreatedToken, ClientError> {
        let url = self.endpoint(&["v1", "tokens"]);
        self.json(self.request(Method::POST, url).json(req), "token")
            .await
    }

    /// `DELETE /v1/tokens/{id}` (admin).
    pub async fn revoke_token(
        &self,
        id: &str,
    ) -> Result<reelay_identity::wire::RevokedToken, ClientError> {
        let url = self.endpoint(&["v1", "tokens", id]);
        self.json(self.request(Method::DELETE, url), "revocation")
            .await
    }

    /// `GET /v1/jobs/{id}/outputs`.
    pub async fn outputs(&self, id: &str) -> Result<OutputFiles, ClientError> {
        let url = self.endpoint(&["v1", "jobs", id, "outputs"]);
        self.json(self.request(Method::GET, url), "output listing")
            .await
    }

    /// `GET /v1/presets`.
    pub async fn presets(&self) -> Result<PresetList, ClientError> {
        let url = self.endpoint(&["v1", "presets"]);
        self.json(self.request(Method::GET, url), "preset list")
            .await
    }

    /// `GET /v1/jobs/{id}/events`: the job views the server pushes, until it closes the stream.
    pub async fn events(&self, id: &str) -> Result<JobEvents, ClientError> {
        let url = self.endpoint(&["v1", "jobs", id, "events"]);
        let response = self
            .execute(
                self.request(Method::GET, url)
                    .header(ACCEPT, "text/event-stream"),
            )
            .await?;
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return Err(ClientError::BadAnswer {
                what: "event stream".into(),
                reason: "not text/event-stream".into(),
            });
        }
        let server = self.server();
        let mut parser = SseParser::default();
        let views = response
            .bytes_stream()
            .map(move |chunk| match chunk {
                Ok(bytes) => parser
                    .feed(&bytes)
                    .iter()
                    .filter_map(sse::job_view)
                    .map(Ok)
                    .collect::<Vec<_>>(),
                Err(e) => vec![Err(ClientError::Transport {
                    reason: format!("event stream from {server} broke: {}", root_cause(&e)),
                })],
            })
            .flat_map(futures::stream::iter);
        Ok(Box::pin(views))
    }

    /// `GET` of one output file; the caller streams the body.
    pub async fn fetch(&self, url: Url) -> Result<Response, ClientError> {
        self.execute(self.request(Method::GET, url)).await
    }

    /// Wraps a reqwest error met while streaming a body fetched with [`Client::fetch`].
    pub fn body_error(&self, error: reqwest::Error) -> ClientError {
        self.transport(error)
    }
}

/// A content type for an upload, from the file extension.
fn content_type_for(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "avi" => "video/x-msvideo",
        "ts" | "m2ts" => "video/mp2t",
        "mpg" | "mpeg" => "video/mpeg",
        "ogv" => "video/ogg",
        "flv" => "video/x-flv",
        "wmv" => "video/x-ms-wmv",
        "3gp" => "video/3gpp",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn output_locations_join_the_base_url() {
        let b = base("http://127.0.0.1:8080");
        assert_eq!(
            resolve_url(&b, "/v1/jobs/aws.X/outputs/hls-abr/master.m3u8")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/v1/jobs/aws.X/outputs/hls-abr/master.m3u8"
        );
        let prefixed = base("https://example.com/reelay/");
        assert_eq!(
            resolve_url(&prefixed, "/v1/jobs/a.B/outputs/x.mp4")
                .unwrap()
                .as_str(),
            "https://example.com/reelay/v1/jobs/a.B/outputs/x.mp4"
        );
        assert_eq!(
            resolve_url(&b, "https://cdn.example.com/x.mp4")
                .unwrap()
                .as_str(),
            "https://cdn.example.com/x.mp4"
        );
        for bad in [
            "",
            "x.mp4",
            "//evil.example/x",
            "file:///etc/passwd",
            "javascript:x",
        ] {
            assert!(resolve_url(&b, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn endpoints_encode_ids_and_keep_prefixes() {
        let client = Client::new(base("http://h:1/api"), None).unwrap();
        assert_eq!(
            client.endpoint(&["v1", "jobs", "aws.01J"]).as_str(),
            "http://h:1/api/v1/jobs/aws.01J"
        );
        assert_eq!(
            client.endpoint(&["v1", "jobs", "../../x?y#z"]).as_str(),
            "http://h:1/api/v1/jobs/..%2F..%2Fx%3Fy%23z"
        );
        assert_eq!(
            client.endpoint(&["v1", "jobs", ".."]).as_str(),
            "http://h:1/api/v1/jobs"
        );
    }

    #[test]
    fn errors_read_like_one_liners() {
        let e = ClientError::Api {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_spec".into(),
            message: "outputs: at least one\x1b[31m".into(),
        };
        assert_eq!(
            e.to_string(),
            "invalid_spec: outputs: at least one\\u{1b}[31m"
        );
        assert!(!e.is_transient());
        let e = ClientError::Unreachable {
            server: "http://127.0.0.1:8080".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach server at http://127.0.0.1:8080: connection refused"
        );
        assert!(e.is_transient());
        assert!(ClientError::Status {
            status: StatusCode::BAD_GATEWAY,
            body: String::new()
        }
        .is_transient());
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(root_cause(&io), "connection refused");
    }

    #[test]
    fn tokens_must_be_header_safe() {
        assert!(Client::new(base("http://h"), Some("abc.def")).is_ok());
        assert!(Client::new(base("http://h"), Some("bad\ntoken")).is_err());
    }
}
