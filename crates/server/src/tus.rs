//! The tus 1.0 resumable upload protocol (<https://tus.io/protocols/resumable-upload>), pure
//! parts: which headers a request must carry and what they may say, the upload's expiry and the
//! HTTP dates it is told in. No I/O here; `uploads` keeps the bytes and `api::uploads` answers.
//!
//! Supported: core, `creation`, `termination`, `expiration`. Not supported (so not announced):
//! `creation-defer-length`, `creation-with-upload`, `concatenation`, `checksum`.

use crate::error::ErrorCode;
use axum::http::{HeaderMap, StatusCode};

pub const VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str = "creation,termination,expiration";
/// The only body type a PATCH may carry.
pub const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";
/// The largest `Upload-Metadata` header kept (it is echoed on every HEAD).
pub const MAX_METADATA_BYTES: usize = 4096;

/// A request that breaks the protocol: each knows its status and stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TusError {
    #[error("send Tus-Resumable: 1.0.0 (the only tus version this server speaks)")]
    Version,
    #[error("{header}: {message}")]
    BadHeader {
        header: &'static str,
        message: String,
    },
    #[error("Upload-Length {length} is larger than this server's limit of {max} bytes")]
    TooLarge { length: u64, max: u64 },
    #[error("a PATCH body must be sent as Content-Type: application/offset+octet-stream")]
    ContentType,
    #[error("Upload-Offset {given} is not the upload's offset {actual}: HEAD the upload and continue from there")]
    OffsetMismatch { given: u64, actual: u64 },
    #[error("the body goes past Upload-Length ({length} bytes)")]
    PastLength { length: u64 },
    #[error("this server does not support creation-with-upload: create the upload with an empty body, then PATCH")]
    BodyOnCreate,
}

impl TusError {
    pub fn status(&self) -> StatusCode {
        match self {
            TusError::Version => StatusCode::PRECONDITION_FAILED,
            TusError::BadHeader { .. } | TusError::BodyOnCreate => StatusCode::BAD_REQUEST,
            TusError::TooLarge { .. } | TusError::PastLength { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            TusError::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TusError::OffsetMismatch { .. } => StatusCode::CONFLICT,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            TusError::Version => "tus_version",
            TusError::BadHeader { .. } => "invalid_header",
            TusError::TooLarge { .. } => ErrorCode::InputTooLarge.as_str(),
            TusError::ContentType => ErrorCode::UnsupportedMediaType.as_str(),
            TusError::OffsetMismatch { .. } => "offset_mismatch",
            TusError::PastLength { .. } => "past_upload_length",
            TusError::BodyOnCreate => "creation_with_upload_unsupported",
        }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, TusError> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| TusError::BadHeader {
                header: name,
                message: "must be visible ASCII".into(),
            }),
    }
}

/// Every request but OPTIONS must say it speaks tus 1.0.0.
pub fn check_resumable(h: &HeaderMap) -> Result<(), TusError> {
    match header(h, "tus-resumable") {
        Ok(Some(VERSION)) => Ok(()),
        _ => Err(TusError::Version),
    }
}

/// A non-negative decimal integer header, strictly: digits only, no sign, no spaces inside.
fn number(h: &HeaderMap, name: &'static str) -> Result<Option<u64>, TusError> {
    let Some(s) = header(h, name)? else {
        return Ok(None);
    };
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TusError::BadHeader {
            header: name,
            message: format!("must be a non-negative integer, got {:?}", truncate(s)),
        });
    }
    s.parse().map(Some).map_err(|_| TusError::BadHeader {
        header: name,
        message: "out of range".into(),
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// `Upload-Length` of a creation request: required (no deferred length), at most `max`.
pub fn upload_length(h: &HeaderMap, max: u64) -> Result<u64, TusError> {
    if h.contains_key("upload-defer-length") {
        return Err(TusError::BadHeader {
            header: "Upload-Defer-Length",
            message: "not supported: give Upload-Length".into(),
        });
    }
    let length = number(h, "upload-length")?.ok_or(TusError::BadHeader {
        header: "Upload-Length",
        message: "required: the upload's total size in bytes".into(),
    })?;
    if length > max {
        return Err(TusError::TooLarge { length, max });
    }
    Ok(length)
}

/// `Upload-Offset` of a PATCH: required.
pub fn upload_offset(h: &HeaderMap) -> Result<u64, TusError> {
    number(h, "upload-offset")?.ok_or(TusError::BadHeader {
        header: "Upload-Offset",
        message: "required: the offset this PATCH's bytes start at".into(),
    })
}

/// A PATCH carries `application/offset+octet-stream` (parameters after `;` allowed).
pub fn check_patch_content_type(h: &HeaderMap) -> Result<(), TusError> {
    let ct = header(h, "content-type").ok().flatten().unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(OFFSET_CONTENT_TYPE) {
        Ok(())
    } else {
        Err(TusError::ContentType)
    }
}

/// A creation request's body must be empty (no `creation-with-upload`).
pub fn check_empty_creation_body(h: &HeaderMap) -> Result<(), TusError> {
    match number(h, "content-length") {
        Ok(None) | Ok(Some(0)) if !h.contains_key("transfer-encoding") => Ok(()),
        _ => Err(TusError::BodyOnCreate),
    }
}

/// The file name a tus client gave in `Upload-Metadata` (`filename`, the tus convention, or
/// `name`, which Uppy also sends), decoded; untrusted, so clean it before showing it.
pub fn metadata_file_name(raw: &str) -> Option<String> {
    use base64::Engine as _;
    let value = |wanted: &str| {
        raw.split(',').find_map(|pair| {
            let (key, value) = pair.split_once(' ')?;
            (key == wanted).then_some(value)
        })
    };
    let encoded = value("filename").or_else(|| value("name"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (the value may be absent), keys
/// of visible ASCII without commas, exactly as the OpenAPI document's pattern says (no spaces
/// around commas). Kept verbatim (and echoed on HEAD), so only checked here; tus wants keys
/// unique, which matters only to whoever reads them, so a repeated key is not refused.
pub fn upload_metadata(h: &HeaderMap) -> Result<Option<String>, TusError> {
    let Some(raw) = header(h, "upload-metadata")? else {
        return Ok(None);
    };
    let bad = |message: String| TusError::BadHeader {
        header: "Upload-Metadata",
        message,
    };
    if raw.len() > MAX_METADATA_BYTES {
        return Err(bad(format!("at most {MAX_METADATA_BYTES} bytes")));
    }
    if raw.is_empty() {
        return Ok(None);
    }
    for pair in raw.split(',') {
        let mut it = pair.split(' ');
        let key = it.next().unwrap_or("");
        let value = it.next();
        if it.next().is_some() {
            return Err(bad(format!(
                "{:?}: a pair is a key and one base64 value",
                truncate(pair)
            )));
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(bad(format!(
                "{:?}: keys are non-empty visible ASCII",
                truncate(key)
            )));
        }
        if let Some(v) = value {
            if !is_base64(v) {
                return Err(bad(format!("value of {key:?} is not base64")));
            }
        }
    }
    Ok(Some(raw.to_string()))
}

/// Standard base64 with padding (RFC 4648 §4), as tus requires.
fn is_base64(v: &str) -> bool {
    let b = v.as_bytes();
    if !b.len().is_multiple_of(4) {
        return false;
    }
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    pad <= 2
        && b[..b.len() - pad]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// When an upload created at `created_ms` expires: a fixed lifetime from creation, so every
/// replica computes the same instant without a shared clock of activity.
pub fn expires_at(created_ms: i64, ttl_seconds: u64) -> i64 {
    created_ms.saturating_add((ttl_seconds as i64).saturating_mul(1000))
}

pub fn is_expired(expires_ms: i64, now_ms: i64) -> bool {
    now_ms >= expires_ms
}

/// Whether the sweeper may delete an expired upload: only once a PATCH that began just before
/// the expiry has had `grace_ms` to finish, so the sweeper never pulls storage from under one.
pub fn sweepable(expires_ms: i64, now_ms: i64, grace_ms: i64) -> bool {
    now_ms >= expires_ms.saturating_add(grace_ms)
}

/// An RFC 9110 HTTP date (`Upload-Expires: Wed, 25 Jun 2025 13:00:00 GMT`).
pub fn http_date(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn version_must_be_1_0_0() {
        assert!(check_resumable(&headers(&[("tus-resumable", "1.0.0")])).is_ok());
        assert_eq!(
            check_resumable(&headers(&[("tus-resumable", "0.2.2")])),
            Err(TusError::Version)
        );
        assert_eq!(check_resumable(&HeaderMap::new()), Err(TusError::Version));
        assert_eq!(TusError::Version.status(), StatusCode::PRECONDITION_FAILED);
    }

    #[test]
    fn lengths_and_offsets_are_strict_integers() {
        assert_eq!(
            upload_length(&headers(&[("upload-length", "100")]), 100),
            Ok(100)
        );
        for bad in ["-1", "1e3", " ", "abc", "99999999999999999999", "+5", "1 2"] {
            let e = upload_length(&headers(&[("upload-length", bad)]), u64::MAX).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(matches!(
            upload_length(&headers(&[("upload-length", "101")]), 100),
            Err(TusError::TooLarge { .. })
        ));
        assert!(upload_length(&HeaderMap::new(), 1).is_err());
        assert!(upload_length(&headers(&[("upload-defer-length", "1")]), 1).is_err());
        assert_eq!(upload_offset(&headers(&[("upload-offset", "0")])), Ok(0));
        assert!(upload_offset(&HeaderMap::new()).is_err());
    }

    #[test]
    fn patch_content_type() {
        assert!(check_patch_content_type(&headers(&[(
            "content-type",
            "application/offset+octet-stream"
        )]))
        .is_ok());
        assert!(check_patch_content_type(&headers(&[(
            "content-type",
            "Application/Offset+Octet-Stream; x=1"
        )]))
        .is_ok());
        assert_eq!(
            check_patch_content_type(&headers(&[("content-type", "application/json")])),
            Err(TusError::ContentType)
        );
        assert_eq!(
            check_patch_content_type(&HeaderMap::new()),
            Err(TusError::ContentType)
        );
    }

    #[test]
    fn file_names_come_from_filename_or_name() {
        assert_eq!(
            metadata_file_name("filetype dmlkZW8vbXA0,filename Y2xpcC5tcDQ=").as_deref(),
            Some("clip.mp4")
        );
        assert_eq!(
            metadata_file_name("name Y2xpcC5tcDQ=").as_deref(),
            Some("clip.mp4")
        );
        assert_eq!(metadata_file_name("filename"), None);
        assert_eq!(metadata_file_name("filename not*base64"), None);
        assert_eq!(metadata_file_name("other Y2xpcC5tcDQ="), None);
    }

    #[test]
    fn metadata_pairs() {
        let ok = headers(&[(
            "upload-metadata",
            "filename d29ybGRfZG9taW5hdGlvbi5wZGY=,is_confidential",
        )]);
        assert!(upload_metadata(&ok).unwrap().is_some());
        for bad in [
            "filename not-base64!",
            "a YQ==, b YQ==",
            "a YQ== extra",
            ",",
            "k YWJj=",
        ] {
            assert!(
                upload_metadata(&headers(&[("upload-metadata", bad)])).is_err(),
                "{bad}"
            );
        }
        assert_eq!(upload_metadata(&HeaderMap::new()), Ok(None));
        let long = format!("k {}", "QUFB".repeat(2000));
        assert!(upload_metadata(&headers(&[("upload-metadata", &long)])).is_err());
    }

    #[test]
    fn creation_body_must_be_empty() {
        assert!(check_empty_creation_body(&HeaderMap::new()).is_ok());
        assert!(check_empty_creation_body(&headers(&[("content-length", "0")])).is_ok());
        assert_eq!(
            check_empty_creation_body(&headers(&[("content-length", "5")])),
            Err(TusError::BodyOnCreate)
        );
        assert_eq!(
            check_empty_creation_body(&headers(&[("transfer-encoding", "chunked")])),
            Err(TusError::BodyOnCreate)
        );
    }

    #[test]
    fn expiry() {
        let exp = expires_at(1_000, 60);
        assert_eq!(exp, 61_000);
        assert!(!is_expired(exp, 60_999));
        assert!(is_expired(exp, 61_000));
        assert!(!sweepable(exp, 61_000, 5_000));
        assert!(sweepable(exp, 66_000, 5_000));
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
