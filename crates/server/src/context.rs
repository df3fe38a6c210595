//! Job context: what a job is about, for the people and programs that list jobs.
//!
//! - the caller's `metadata` (an order id, a tenant, a title) and the bounds it must keep, so a
//!   job row and every job view and webhook stay small whatever a client sends;
//! - the input's name: untrusted (a browser's file name, a URL), so cleaned here of directories
//!   and control characters and bounded, and never a server path or storage key;
//! - the input's facts from its probe, and the outputs a spec asked for.
//!
//! Pure functions only; the api and the worker do the I/O.

use crate::error::{ApiError, ErrorCode};
use reelay_media::MediaInfo;
use reelay_protocol::{InputFacts, JobSpec, RequestedOutput};

/// At most this many metadata keys per job.
pub const MAX_KEYS: usize = 16;
/// A key's length in bytes; keys are `[A-Za-z0-9_.-]`.
pub const MAX_KEY_BYTES: usize = 64;
/// A value's length in bytes (UTF-8).
pub const MAX_VALUE_BYTES: usize = 512;
/// All keys and values together, in bytes.
pub const MAX_TOTAL_BYTES: usize = 4096;
/// A cleaned input name is cut to this many bytes (at a character boundary).
pub const MAX_NAME_BYTES: usize = 255;

/// Why a `metadata` object is refused; every message names the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata: must be an object of string keys to string values")]
    NotAnObject,
    #[error("metadata: at most {MAX_KEYS} keys, got {0}")]
    TooManyKeys(usize),
    #[error("metadata: key {0:?} must be 1-{MAX_KEY_BYTES} bytes of A-Z a-z 0-9 _ . -")]
    InvalidKey(String),
    #[error("metadata.{0}: the value must be a string")]
    NotAString(String),
    #[error("metadata.{0}: the value is longer than {MAX_VALUE_BYTES} bytes")]
    ValueTooLong(String),
    #[error("metadata.{0}: the value must not contain control characters")]
    ControlCharacter(String),
    #[error("metadata: keys and values together are {0} bytes, more than {MAX_TOTAL_BYTES}")]
    TooLarge(usize),
}

impl From<MetadataError> for ApiError {
    fn from(e: MetadataError) -> ApiError {
        ApiError::new(ErrorCode::InvalidMetadata, e.to_string())
    }
}

/// Whether `key` may be a metadata key (and so a `metadata.<key>` list filter).
pub fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY_BYTES).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Checks the raw `metadata` member of a spec before it is typed, so that a number where a
/// string belongs is answered with the key it is under (serde would only say "expected a
/// string"). `None` (absent) and `null` are no metadata.
pub fn check_metadata(raw: Option<&serde_json::Value>) -> Result<(), MetadataError> {
    let map = match raw {
        None | Some(serde_json::Value::Null) => return Ok(()),
        Some(serde_json::Value::Object(map)) => map,
        Some(_) => return Err(MetadataError::NotAnObject),
    };
    if map.len() > MAX_KEYS {
        return Err(MetadataError::TooManyKeys(map.len()));
    }
    let mut total = 0;
    for (key, value) in map {
        if !valid_key(key) {
            return Err(MetadataError::InvalidKey(key.chars().take(80).collect()));
        }
        let serde_json::Value::String(value) = value else {
            return Err(MetadataError::NotAString(key.clone()));
        };
        if value.len() > MAX_VALUE_BYTES {
            return Err(MetadataError::ValueTooLong(key.clone()));
        }
        // Values are shown in terminals and HTML: no escape sequences, no NUL for Postgres.
        if value.chars().any(char::is_control) {
            return Err(MetadataError::ControlCharacter(key.clone()));
        }
        total += key.len() + value.len();
    }
    if total > MAX_TOTAL_BYTES {
        return Err(MetadataError::TooLarge(total));
    }
    Ok(())
}

/// An untrusted name made fit to show: the last path segment (`/` and `\` both separate, so
/// `C:\Users\me\clip.mp4` is `clip.mp4`), control characters dropped, surrounding blanks
/// trimmed, at most [`MAX_NAME_BYTES`]. `None` when nothing is left (or only `.`/`..`).
pub fn clean_name(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last.chars().filter(|c| !c.is_control()).collect();
    let mut name = cleaned.trim().to_string();
    if name.len() > MAX_NAME_BYTES {
        let mut cut = MAX_NAME_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

/// The name of a URL input: its path's last segment, percent-decoded (no query, no fragment);
/// the host when the path has none (`https://example.com/`).
pub fn name_from_url(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw).ok()?;
    let segment = url
        .path_segments()
        .and_then(|mut s| s.rfind(|p| !p.is_empty()))
        .map(percent_decode);
    match segment {
        Some(s) => clean_name(&s),
        None => url.host_str().and_then(clean_name),
    }
}

/// `%XX` escapes decoded (invalid ones kept as they are), as lossy UTF-8.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The facts of a probed input for the job view: the displayed picture size (rotation
/// applied), the best duration the container and streams agree on, the first video stream's
/// codec (not cover art) and the first audio stream's.
pub fn facts(info: &MediaInfo, size: u64) -> InputFacts {
    let (width, height) = info.display_dims().unzip();
    InputFacts {
        size: Some(size),
        duration_seconds: info
            .best_duration()
            .filter(|d| d.is_finite() && *d >= 0.0)
            .map(|d| (d * 1000.0).round() / 1000.0),
        width,
        height,
        video_codec: info.video().map(|s| s.codec.clone()),
        audio_codec: info.audio().map(|s| s.codec.clone()),
    }
}

/// The outputs a stored spec asks for, named as the job will store them. A spec that no
/// longer resolves (written by another version) still lists what it names.
pub fn requested_outputs(spec: &JobSpec) -> Vec<RequestedOutput> {
    match reelay_media::resolve_outputs(&spec.outputs) {
        Ok(renditions) => renditions
            .iter()
            .zip(&spec.outputs)
            .map(|(r, o)| RequestedOutput {
                // A file's name with its extension, as the job's outputs will list it; a
                // ladder's (or storyboard's) directory, which holds several listed files.
                name: match r.container() {
                    Some(_) => r.primary_files().swap_remove(0),
                    None => r.name.clone(),
                },
                preset: o.preset.clone(),
            })
            .collect(),
        Err(_) => spec
            .outputs
            .iter()
            .map(|o| RequestedOutput {
                name: o
                    .name
                    .clone()
                    .or_else(|| o.preset.clone())
                    .unwrap_or_default(),
                preset: o.preset.clone(),
            })
            .collect(),
    }
}

/// `metadata.<key>=<value>` query pairs of `GET /v1/jobs`. `metadata[<key>]=<value>` is the
/// same filter: OpenAPI's `deepObject` spelling, so that a generated client can send it.
/// A key or value no job can have (outside the limits submissions are held to) is not an
/// error: it matches no job. OpenAPI 3.0 cannot say which keys are valid, so a schema-valid
/// query must not be refused for one (schemathesis checks exactly that).
pub fn metadata_filter(key: &str, value: &str) -> Option<(String, String)> {
    let dotted = key.strip_prefix("metadata.");
    let bracketed = || key.strip_prefix("metadata[")?.strip_suffix(']');
    let key = dotted.or_else(bracketed)?;
    Some((key.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: serde_json::Value) -> Result<(), MetadataError> {
        check_metadata(Some(&v))
    }

    #[test]
    fn metadata_within_bounds_passes_and_each_rule_is_named() {
        assert!(check_metadata(None).is_ok());
        assert!(check(json!(null)).is_ok());
        assert!(check(json!({})).is_ok());
        assert!(check(json!({"order_id": "A-1", "user.id": "42", "title": "Fête à Noël"})).is_ok());
        let full: serde_json::Map<_, _> = (0..MAX_KEYS)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        assert!(check(serde_json::Value::Object(full.clone())).is_ok());
        let mut over = full;
        over.insert("one-more".into(), json!("v"));
        assert_eq!(
            check(serde_json::Value::Object(over)),
            Err(MetadataError::TooManyKeys(17))
        );
        assert_eq!(check(json!(["a"])), Err(MetadataError::NotAnObject));
        assert_eq!(check(json!("a=b")), Err(MetadataError::NotAnObject));
        for bad in ["", "has space", "slash/es", "ünï", &"k".repeat(65)] {
            assert!(
                matches!(
                    check(json!({ bad: "v" })),
                    Err(MetadataError::InvalidKey(_))
                ),
                "{bad:?}"
            );
        }
        assert!(check(json!({ "k".repeat(64): "v" })).is_ok());
        assert_eq!(
            check(json!({"n": 5})),
            Err(MetadataError::NotAString("n".into()))
        );
        assert_eq!(
            check(json!({"n": null})),
            Err(MetadataError::NotAString("n".into()))
        );
        assert!(check(json!({"v": "x".repeat(512)})).is_ok());
        assert_eq!(
            check(json!({"v": "x".repeat(513)})),
            Err(MetadataError::ValueTooLong("v".into()))
        );
        // 2-byte characters count as 2.
        assert!(check(json!({"v": "é".repeat(257)})).is_err());
        for ctl in ["a\nb", "a\u{0}b", "\u{1b}[31mred", "a\u{9b}b"] {
            assert_eq!(
                check(json!({ "v": ctl })),
                Err(MetadataError::ControlCharacter("v".into()))
            );
        }
        let big: serde_json::Map<_, _> = (0..9)
            .map(|i| (format!("k{i}"), json!("x".repeat(500))))
            .collect();
        assert!(matches!(
            check(serde_json::Value::Object(big)),
            Err(MetadataError::TooLarge(n)) if n > MAX_TOTAL_BYTES
        ));
        let e: ApiError = MetadataError::TooManyKeys(17).into();
        assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.code, "invalid_metadata");
    }

    #[test]
    fn untrusted_names_lose_directories_and_control_characters() {
        assert_eq!(clean_name("clip.mp4").as_deref(), Some("clip.mp4"));
        assert_eq!(clean_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(
            clean_name(r"C:\Users\me\Holiday 2024.mov").as_deref(),
            Some("Holiday 2024.mov")
        );
        assert_eq!(
            clean_name("\u{1b}[31mred\u{7}.mp4\r\n").as_deref(),
            Some("[31mred.mp4")
        );
        assert_eq!(clean_name("  spaced.mp4 ").as_deref(), Some("spaced.mp4"));
        for nothing in ["", "/", "dir/", "..", ".", "\u{0}\u{1}", "   "] {
            assert_eq!(clean_name(nothing), None, "{nothing:?}");
        }
        let long = clean_name(&"é".repeat(300)).unwrap();
        assert!(long.len() <= MAX_NAME_BYTES && long.len() >= MAX_NAME_BYTES - 1);
        assert!(long.chars().all(|c| c == 'é'));
    }

    #[test]
    fn url_names_are_the_last_path_segment() {
        assert_eq!(
            name_from_url("https://cdn.example.com/a/b/My%20Clip.mp4?sig=abc#t=3").as_deref(),
            Some("My Clip.mp4")
        );
        assert_eq!(
            name_from_url("https://example.com/videos/").as_deref(),
            Some("videos")
        );
        assert_eq!(
            name_from_url("https://example.com/").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            name_from_url("https://x.test/a/..%2F..%2Fetc%2Fpasswd").as_deref(),
            Some("passwd")
        );
        assert_eq!(name_from_url("not a url"), None);
    }

    #[test]
    fn list_filters_are_metadata_keys() {
        assert_eq!(metadata_filter("status", "x"), None);
        for spelling in ["metadata.order_id", "metadata[order_id]"] {
            assert_eq!(
                metadata_filter(spelling, "A-1"),
                Some(("order_id".into(), "A-1".into()))
            );
        }
        // Keys no submission may use are kept as they are: they simply match nothing.
        assert_eq!(
            metadata_filter("metadata[a b]", "v"),
            Some(("a b".into(), "v".into()))
        );
    }

    #[test]
    fn requested_outputs_are_named_as_stored() {
        let spec: JobSpec = serde_json::from_value(json!({"outputs": [
            {"preset": "mp4-720p"},
            {"name": "small", "container": "mp4", "video": {"codec": "h264", "height": 240}}
        ]}))
        .unwrap();
        let r = requested_outputs(&spec);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].preset.as_deref(), Some("mp4-720p"));
        assert_eq!(r[0].name, "mp4-720p.mp4");
        assert_eq!(r[1].preset, None);
        assert_eq!(r[1].name, "small.mp4");
        let ladder: JobSpec =
            serde_json::from_value(json!({"outputs": [{"preset": "hls-abr"}]})).unwrap();
        assert_eq!(requested_outputs(&ladder)[0].name, "hls-abr");
    }
}
