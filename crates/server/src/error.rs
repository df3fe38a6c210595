//! Every failure an HTTP client can see, rendered as `{"error": {"code", "message"}}`, and
//! the codes reelay itself gives them ([`ErrorCode`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use reelay_protocol::{ErrorBody, ErrorDetail};

/// Declares [`ErrorCode`] from one table, so a code's string, status and transience are
/// written once and [`ErrorCode::ALL`] cannot miss a variant.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $status:expr, $transient:literal;)*) => {
        /// The error codes the API answers with and the worker stores on a failed task (the job
        /// view shows them): one contract, so each code's string lives here and nowhere else in
        /// Rust. Codes owned by a library error enum with its own `code()` (`FetchError`,
        /// `AdmissionError`, the media crate's errors, the job store's `worker_lost`, …) stay
        /// with that enum. README.md's error-code table lists every one (a test checks).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the README table's order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code on the wire: snake_case, stable.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status the API answers this code with; `None` for codes only a task
            /// failure carries (they reach the client inside the job view).
            pub fn status(self) -> Option<StatusCode> {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            /// Whether the same request (or task attempt) may succeed later unchanged.
            pub const fn is_transient(self) -> bool {
                match self {
                    $(ErrorCode::$variant => $transient,)*
                }
            }
        }
    };
}

error_codes! {
    /// The JSON body does not parse.
    MalformedJson = "malformed_json", Some(StatusCode::BAD_REQUEST), false;
    /// The multipart body does not parse, or its parts are out of order.
    MalformedMultipart = "malformed_multipart", Some(StatusCode::BAD_REQUEST), false;
    /// A token request's or revocation push's JSON does not parse or fit its schema.
    InvalidJson = "invalid_json", Some(StatusCode::BAD_REQUEST), false;
    /// A query parameter is malformed or out of range.
    InvalidQuery = "invalid_query", Some(StatusCode::BAD_REQUEST), false;
    /// The edge's X-Reelay-Deadline header does not parse.
    InvalidDeadline = "invalid_deadline", Some(StatusCode::BAD_REQUEST), false;
    /// The Idempotency-Key header is empty, too long or not printable ASCII.
    InvalidIdempotencyKey = "invalid_idempotency_key", Some(StatusCode::BAD_REQUEST), false;
    /// A token id in the path is not one.
    InvalidTokenId = "invalid_token_id", Some(StatusCode::BAD_REQUEST), false;
    /// A remote-claim request names a worker id that is not one.
    InvalidWorker = "invalid_worker", Some(StatusCode::BAD_REQUEST), false;
    /// The request body ended before its declared length.
    BodyIncomplete = "body_incomplete", Some(StatusCode::BAD_REQUEST), false;
    /// Reading the request body failed (the connection broke).
    BodyRead = "body_read", Some(StatusCode::BAD_REQUEST), true;
    /// No, a malformed, expired or revoked token.
    Unauthorized = "unauthorized", Some(StatusCode::UNAUTHORIZED), false;
    /// The token's scope does not cover the request.
    Forbidden = "forbidden", Some(StatusCode::FORBIDDEN), false;
    /// A remote-claim object request outside what this task attempt may read or write.
    ForbiddenKey = "forbidden_key", Some(StatusCode::FORBIDDEN), false;
    /// No such job, upload, output or object (for this token's owner).
    NotFound = "not_found", Some(StatusCode::NOT_FOUND), false;
    /// The route exists, the method does not.
    MethodNotAllowed = "method_not_allowed", Some(StatusCode::METHOD_NOT_ALLOWED), false;
    /// The request body stalled or missed its deadline.
    BodyTimeout = "body_timeout", Some(StatusCode::REQUEST_TIMEOUT), true;
    /// The Idempotency-Key was used before with another spec.
    IdempotencyConflict = "idempotency_conflict", Some(StatusCode::CONFLICT), false;
    /// Cancelling a job that already finished.
    AlreadyFinished = "already_finished", Some(StatusCode::CONFLICT), false;
    /// Outputs of a job that has not succeeded (yet); `/readyz` answers 503 with it.
    NotReady = "not_ready", Some(StatusCode::CONFLICT), true;
    /// A token route on a cluster with no trusted keys (no signed tokens).
    NoIdentity = "no_identity", Some(StatusCode::CONFLICT), false;
    /// Creating or revoking tokens on a cluster without an issuer key.
    NotAnIssuer = "not_an_issuer", Some(StatusCode::CONFLICT), false;
    /// Another PATCH of the same upload is still streaming.
    UploadBusy = "upload_busy", Some(StatusCode::CONFLICT), true;
    /// A remote-claim call for a task whose job was cancelled: stop the task.
    Cancelled = "cancelled", Some(StatusCode::CONFLICT), false;
    /// A remote-claim call from an attempt that no longer holds the task's lease.
    LeaseLost = "lease_lost", Some(StatusCode::CONFLICT), false;
    /// A request body over its limit.
    TooLarge = "too_large", Some(StatusCode::PAYLOAD_TOO_LARGE), false;
    /// An input file over the cluster's input size limit.
    InputTooLarge = "input_too_large", Some(StatusCode::PAYLOAD_TOO_LARGE), false;
    /// The Content-Type is not one the route takes.
    UnsupportedMediaType = "unsupported_media_type", Some(StatusCode::UNSUPPORTED_MEDIA_TYPE), false;
    /// A Range past the end of the output.
    RangeNotSatisfiable = "range_not_satisfiable", Some(StatusCode::RANGE_NOT_SATISFIABLE), false;
    /// The job spec is not valid (the message names the field); a task's payload that
    /// no longer reads as one.
    InvalidSpec = "invalid_spec", Some(StatusCode::UNPROCESSABLE_ENTITY), false;
    /// The job's metadata breaks a limit.
    InvalidMetadata = "invalid_metadata", Some(StatusCode::UNPROCESSABLE_ENTITY), false;
    /// The input key or upload is not there (at submission, or when a task fetches it).
    InputNotFound = "input_not_found", Some(StatusCode::UNPROCESSABLE_ENTITY), false;
    /// Storage-key inputs are switched off on this cluster.
    KeyInputsDisabled = "key_inputs_disabled", Some(StatusCode::UNPROCESSABLE_ENTITY), false;
    /// A remote worker's completion names an output outside its attempt's prefix.
    OutputsOutsideAttempt = "outputs_outside_attempt", Some(StatusCode::UNPROCESSABLE_ENTITY), false;
    /// A remote worker's completion whose outputs do not have its task kind's shape.
    InvalidOutputs = "invalid_outputs", Some(StatusCode::UNPROCESSABLE_ENTITY), false;
    /// Too many requests for the token's rate limit.
    RateLimited = "rate_limited", Some(StatusCode::TOO_MANY_REQUESTS), true;
    /// Too many open connections from one client address.
    TooManyConnections = "too_many_connections", Some(StatusCode::TOO_MANY_REQUESTS), true;
    /// A failure inside reelay (the server log has the details); a task's outputs that do not
    /// encode.
    Internal = "internal", Some(StatusCode::INTERNAL_SERVER_ERROR), false;
    /// The process is draining and takes no new work.
    ShuttingDown = "shutting_down", Some(StatusCode::SERVICE_UNAVAILABLE), true;
    /// The edge's X-Reelay-Deadline for this submission passed; no job was created.
    DeadlinePassed = "deadline_passed", Some(StatusCode::SERVICE_UNAVAILABLE), true;
    /// The owner's object storage failed while a remote worker read or wrote through it.
    StorageUnavailable = "storage_unavailable", Some(StatusCode::SERVICE_UNAVAILABLE), true;
    /// The worker's scratch space failed (disk full, permissions).
    ScratchError = "scratch_error", None, true;
    /// Object storage failed while a task read or wrote it.
    StorageError = "storage_error", None, true;
    /// A task's payload or a dependency's output does not read.
    InvalidTask = "invalid_task", None, false;
    /// The input's container is none ffmpeg reads (at admission, or when a task probes it).
    UnsupportedFormat = "unsupported_format", Some(StatusCode::UNPROCESSABLE_ENTITY), false;
    /// The input is not readable media (at admission, or when a task probes it).
    CorruptInput = "corrupt_input", Some(StatusCode::UNPROCESSABLE_ENTITY), false;
    /// ffprobe gave no answer.
    ProbeFailed = "probe_failed", None, true;
    /// An output that ffmpeg wrote does not probe as what was asked for.
    InvalidOutput = "invalid_output", None, false;
    /// ffmpeg produced no output.
    TranscodeFailed = "transcode_failed", None, false;
    /// A task kind this worker build has no handler for.
    UnknownTaskKind = "unknown_task_kind", None, false;
    /// The task was stopped (cancelled, drained), not failed.
    Stopped = "stopped", None, false;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An answer with `code` at the code's own status (500 for the task-only codes, which no
    /// handler answers with).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::coded(
            code.status().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code.as_str(),
            message,
        )
    }
    /// An answer with a code owned by a library error enum (its `code()`), at `status`.
    pub fn coded(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }
    /// 503 with Retry-After, whatever the code's own status.
    pub fn unavailable(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(5),
            ..Self::coded(StatusCode::SERVICE_UNAVAILABLE, code.as_str(), message)
        }
    }
    /// Internal failures are logged in full and shown to the client without details.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            ErrorCode::Internal,
            format!("{context}; see the server log"),
        )
    }
}

impl From<reelay_jobs::StoreError> for ApiError {
    fn from(e: reelay_jobs::StoreError) -> Self {
        match e {
            reelay_jobs::StoreError::IdempotencyConflict => ApiError::new(
                ErrorCode::IdempotencyConflict,
                "this Idempotency-Key was already used with a different spec",
            ),
            other => ApiError {
                retry_after: Some(2),
                ..ApiError::internal("job store error", other)
            },
        }
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        match e {
            crate::storage::StorageError::NotFound(_) => ApiError::not_found("no such object"),
            other => ApiError::internal("object storage error", other),
        }
    }
}

pub fn error_response(status: StatusCode, detail: ErrorDetail) -> Response {
    let body = serde_json::to_vec(&ErrorBody { error: detail }).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = error_response(self.status, ErrorDetail::new(self.code, self.message));
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README.md's error-code table is the documentation of this contract: every code has a
    /// row, with the status and transience the code carries, and no row names a code that is
    /// not one.
    #[test]
    fn every_code_is_in_the_readme_table_as_it_is() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("| code | status | transient | meaning |")
            .expect("README.md has the error-code table");
        let rows: Vec<Vec<&str>> = readme[start..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
            .collect();
        for code in ErrorCode::ALL {
            let name = format!("`{code}`");
            let row = rows
                .iter()
                .find(|r| r[0] == name)
                .unwrap_or_else(|| panic!("README.md's error-code table has no row for {name}"));
            let status = code
                .status()
                .map_or("task".to_string(), |s| s.as_u16().to_string());
            assert_eq!(row[1], status, "status of {name}");
            let transient = if code.is_transient() { "yes" } else { "no" };
            assert_eq!(row[2], transient, "transience of {name}");
        }
        assert_eq!(
            rows.len(),
            ErrorCode::ALL.len(),
            "a row for a code that is not one"
        );
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{s}"
            );
        }
    }

    #[test]
    fn an_answer_takes_its_status_from_the_code() {
        let e = ApiError::new(ErrorCode::MalformedJson, "x");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "malformed_json")
        );
        let e = ApiError::unavailable(ErrorCode::NotReady, "x");
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after, Some(5));
    }
}
