//! Resumable uploads with tus 1.0 (`/v1/uploads`) for `reelay submit` of large files.
//!
//! The upload's URL is kept in a small state file keyed by the file's absolute path, size and
//! modification time (and the server), so running the same `reelay submit` again after Ctrl-C or
//! a lost connection asks the server where it stopped (`HEAD`) and continues from there. Within
//! one run, a dropped connection is retried the same way with backoff. The state file goes once
//! the job exists; a changed file (size or mtime) never resumes an old upload.

use crate::client::{Client, ClientError};
use futures::TryStreamExt;
use indicatif::ProgressBar;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const TUS_VERSION: &str = "1.0.0";
/// Bytes per PATCH: what a lost connection costs at most, also behind a buffering proxy.
pub const PATCH_BYTES: u64 = 32 << 20;
/// Retries of one PATCH after transient failures before giving up (the state file stays).
const RETRIES: u32 = 6;
const READ_CHUNK: usize = 256 * 1024;

/// What identifies "the same upload" between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileKey {
    pub server: String,
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileKey {
    pub fn of(server: &str, path: &Path, meta: &std::fs::Metadata) -> FileKey {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        FileKey {
            server: server.to_string(),
            path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            size: meta.len(),
            mtime_ns,
        }
    }

    /// The state file's name: a stable FNV-1a hash of the key.
    pub fn file_name(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        let mut h: u64 = 0xcbf29ce484222325;
        for b in text.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("{h:016x}.json")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    key: FileKey,
    /// The upload's URL as the server gave it (`Location`).
    location: String,
}

/// `$REELAY_STATE_DIR`, else `$XDG_STATE_HOME/reelay/uploads`, else `~/.local/state/reelay/uploads`.
pub fn state_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("REELAY_STATE_DIR") {
        return Some(PathBuf::from(d));
    }
    let base = match std::env::var_os("XDG_STATE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".local/state"),
    };
    Some(base.join("reelay/uploads"))
}

fn load_state(dir: &Path, key: &FileKey) -> Option<String> {
    let raw = std::fs::read(dir.join(key.file_name())).ok()?;
    let state: State = serde_json::from_slice(&raw).ok()?;
    (state.key == *key).then_some(state.location)
}

fn save_state(dir: &Path, key: &FileKey, location: &str) {
    let state = State {
        key: key.clone(),
        location: location.to_string(),
    };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{}.tmp", key.file_name()));
        std::fs::write(&tmp, serde_json::to_vec(&state)?)?;
        std::fs::rename(tmp, dir.join(key.file_name()))
    };
    if let Err(e) = write() {
        tracing::warn!(error = %e, "cannot keep the upload's state; an interrupted upload will start over");
    }
}

/// Forgets the upload of `key` (after the job was created from it).
pub fn forget(key: &FileKey) {
    if let Some(dir) = state_dir() {
        let _ = std::fs::remove_file(dir.join(key.file_name()));
    }
}

/// Standard base64 with padding, for `Upload-Metadata` values.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn header_u64(resp: &reqwest::Response, name: &str) -> Result<u64, ClientError> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| ClientError::BadAnswer {
            what: "upload".into(),
            reason: format!("no valid {name} header"),
        })
}

/// Uploads `path` with tus and returns the upload id, resuming an upload kept in the state file.
pub async fn upload(
    client: &Client,
    path: &Path,
    key: &FileKey,
    bar: &ProgressBar,
) -> Result<String, ClientError> {
    let dir = state_dir();
    let mut location = dir.as_deref().and_then(|d| load_state(d, key));
    let mut offset = 0;
    if let Some(loc) = &location {
        match head(client, loc).await {
            Ok(o) => {
                offset = o;
                tracing::info!(offset, location = %loc, "resuming the upload");
            }
            // Expired, deleted or unknown: start over.
            Err(ClientError::Api { status, .. })
                if status == StatusCode::NOT_FOUND || status == StatusCode::GONE =>
            {
                location = None
            }
            Err(e) => return Err(e),
        }
    }
    let location = match location {
        Some(l) => l,
        None => {
            let l = create(client, path, key.size).await?;
            if let Some(d) = &dir {
                save_state(d, key, &l);
            }
            l
        }
    };
    bar.set_position(offset);
    let mut failures = 0;
    while offset < key.size {
        let len = PATCH_BYTES.min(key.size - offset);
        match patch(client, &location, path, offset, len, bar).await {
            Ok(o) => {
                offset = o;
                failures = 0;
            }
            Err(e) if e.is_transient() && failures < RETRIES => {
                failures += 1;
                let wait = Duration::from_millis(500 << failures.min(5));
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "upload interrupted; resuming");
                tokio::time::sleep(wait).await;
                // Where did the server stop? (It keeps what arrived.)
                if let Ok(o) = head(client, &location).await {
                    offset = o;
                }
            }
            Err(e) => return Err(e),
        }
        bar.set_position(offset);
    }
    bar.set_message("waiting for the server");
    upload_id(&location)
}

/// The id is the last path segment of the upload's URL.
pub fn upload_id(location: &str) -> Result<String, ClientError> {
    location
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ClientError::BadAnswer {
            what: "upload".into(),
            reason: format!("no id in upload URL {location:?}"),
        })
}

async fn create(client: &Client, path: &Path, size: u64) -> Result<String, ClientError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let url = client.endpoint(&["v1", "uploads"]);
    let resp = client
        .execute(
            client
                .request(Method::POST, url)
                .header("Tus-Resumable", TUS_VERSION)
                .header("Upload-Length", size)
                .header(
                    "Upload-Metadata",
                    format!("filename {}", base64(name.as_bytes())),
                ),
        )
        .await?;
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ClientError::BadAnswer {
            what: "upload".into(),
            reason: "201 without Location".into(),
        })?;
    Ok(client.resolve(location)?.to_string())
}

async fn head(client: &Client, location: &str) -> Result<u64, ClientError> {
    let url = client.resolve(location)?;
    let resp = client
        .execute(
            client
                .request(Method::HEAD, url)
                .header("Tus-Resumable", TUS_VERSION),
        )
        .await?;
    header_u64(&resp, "upload-offset")
}

/// One PATCH of `len` bytes from `offset`; returns the server's new offset.
async fn patch(
    client: &Client,
    location: &str,
    path: &Path,
    offset: u64,
    len: u64,
    bar: &ProgressBar,
) -> Result<u64, ClientError> {
    let local = |e: std::io::Error| ClientError::Transport {
        reason: format!("cannot read {}: {e}", path.display()),
    };
    let mut file = tokio::fs::File::open(path).await.map_err(local)?;
    file.seek(SeekFrom::Start(offset)).await.map_err(local)?;
    let progress = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), READ_CHUNK)
        .inspect_ok(move |c| progress.inc(c.len() as u64));
    let url = client.resolve(location)?;
    let resp = client
        .execute(
            client
                .request(Method::PATCH, url)
                .header("Tus-Resumable", TUS_VERSION)
                .header("Upload-Offset", offset)
                .header("Content-Type", "application/offset+octet-stream")
                .header("Content-Length", len)
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await?;
    header_u64(&resp, "upload-offset")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn state_is_keyed_by_path_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let key = FileKey {
            server: "http://a".into(),
            path: "/x/clip.mov".into(),
            size: 10,
            mtime_ns: 5,
        };
        save_state(dir.path(), &key, "http://a/v1/uploads/aws.X");
        assert_eq!(
            load_state(dir.path(), &key).as_deref(),
            Some("http://a/v1/uploads/aws.X")
        );
        let touched = FileKey {
            mtime_ns: 6,
            ..key.clone()
        };
        assert_eq!(load_state(dir.path(), &touched), None);
        let grown = FileKey { size: 11, ..key };
        assert_eq!(load_state(dir.path(), &grown), None);
        assert_eq!(upload_id("http://a/v1/uploads/aws.X").unwrap(), "aws.X");
    }
}
