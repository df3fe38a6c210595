//! Resumable uploads kept in object storage, so that every API replica of a cluster sees the same
//! state and no database table is needed.
//!
//! Layout under `uploads/{id}/` (ids are `{cluster}.{ULID}`, like job ids):
//! - `info.json`: owner, length, metadata, creation and expiry (written once, create-only);
//! - `chunks/{offset:020}-{ULID}`: the bytes of one PATCH, streamed in parts;
//! - `parts/{offset:020}`: the commit of a chunk (`{"chunk", "len"}`), written create-only;
//! - `used`: the job the upload became (create-only: an upload becomes one job).
//!
//! Why offsets can never go backwards or overlap: a PATCH at offset `o` starts only when the
//! committed parts end at `o`, streams into its own chunk, then commits `parts/{o}` with a
//! create-only write. Of two concurrent PATCHes at `o` exactly one commit succeeds (the store
//! decides atomically), the other's chunk is deleted and it answers 409; a PATCH that checked
//! `o` before another one moved past it can only commit at `o`, where a part already exists. So
//! committed parts always tile `0..offset` without gaps or overlaps.

use crate::error::ErrorCode;
use crate::storage::{ObjectWriter, Storage, StorageError};
use crate::tus;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use reelay_protocol::JobId;
use serde::{Deserialize, Serialize};

/// What went wrong with an upload; each knows its HTTP status, code and whether a retry helps.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Protocol(#[from] tus::TusError),
    /// Unknown, malformed, another cluster's, or another owner's (never admitted to exist).
    #[error("no upload {0}")]
    NotFound(String),
    #[error("upload {0} expired and is being deleted")]
    Expired(String),
    #[error("upload {id} has {offset} of {length} bytes: finish it before using it as an input")]
    Incomplete {
        id: String,
        offset: u64,
        length: u64,
    },
    #[error("upload {id} was already used as the input of job {job}")]
    Used { id: String, job: String },
    /// Storage failed: worth a retry.
    #[error("upload storage: {0}")]
    Storage(#[from] StorageError),
    #[error("corrupt upload state {0}")]
    Corrupt(String),
}

impl UploadError {
    pub fn is_transient(&self) -> bool {
        matches!(self, UploadError::Storage(_))
    }

    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode as S;
        match self {
            UploadError::Protocol(e) => e.status(),
            UploadError::NotFound(_) => S::NOT_FOUND,
            UploadError::Expired(_) => S::GONE,
            UploadError::Incomplete { .. } | UploadError::Used { .. } => S::CONFLICT,
            UploadError::Storage(_) => S::SERVICE_UNAVAILABLE,
            UploadError::Corrupt(_) => S::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            UploadError::Protocol(e) => e.code(),
            UploadError::NotFound(_) => ErrorCode::NotFound.as_str(),
            UploadError::Expired(_) => "upload_expired",
            UploadError::Incomplete { .. } => "upload_incomplete",
            UploadError::Used { .. } => "upload_used",
            UploadError::Storage(_) => "storage_unavailable",
            UploadError::Corrupt(_) => ErrorCode::Internal.as_str(),
        }
    }
}

impl From<UploadError> for crate::error::ApiError {
    fn from(e: UploadError) -> Self {
        match &e {
            UploadError::Storage(_) | UploadError::Corrupt(_) => {
                let mut api = crate::error::ApiError::internal("upload storage", &e);
                if e.is_transient() {
                    api.status = e.status();
                    api.code = e.code();
                    api.retry_after = Some(2);
                }
                api
            }
            _ => crate::error::ApiError::coded(e.status(), e.code(), e.to_string()),
        }
    }
}

/// `uploads/{id}/info.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadInfo {
    pub id: String,
    /// The creating token's owner (`sub`); None in open mode.
    pub owner: Option<String>,
    pub length: u64,
    /// `Upload-Metadata` as the client sent it.
    pub metadata: Option<String>,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// `uploads/{id}/parts/{offset}`: a committed chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    chunk: String,
    len: u64,
}

fn prefix(id: &str) -> String {
    format!("uploads/{id}")
}
fn info_key(id: &str) -> String {
    format!("uploads/{id}/info.json")
}
fn part_key(id: &str, offset: u64) -> String {
    format!("uploads/{id}/parts/{offset:020}")
}
fn used_key(id: &str) -> String {
    format!("uploads/{id}/used")
}
fn new_chunk_key(id: &str, offset: u64) -> String {
    format!("uploads/{id}/chunks/{offset:020}-{}", ulid::Ulid::new())
}

/// The offset encoded in a part key's last segment.
fn part_offset(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.parse().ok()
}

/// Checks an id from a URL or a job spec: this cluster's, well formed. Keys are built from it
/// only after this.
pub fn parse_id(cluster: &str, id: &str) -> Result<String, UploadError> {
    let shown = || id.chars().take(80).collect::<String>();
    let parsed: JobId = id.parse().map_err(|_| UploadError::NotFound(shown()))?;
    if parsed.cluster != cluster || ulid::Ulid::from_string(&parsed.ulid).is_err() {
        return Err(UploadError::NotFound(shown()));
    }
    Ok(parsed.to_string())
}

/// The uploads of one cluster.
#[derive(Clone)]
pub struct Uploads {
    pub storage: Storage,
    pub cluster: String,
}

impl Uploads {
    pub fn new(storage: Storage, cluster: String) -> Uploads {
        Uploads { storage, cluster }
    }

    pub async fn create(
        &self,
        owner: Option<String>,
        length: u64,
        metadata: Option<String>,
        now_ms: i64,
        ttl_seconds: u64,
    ) -> Result<UploadInfo, UploadError> {
        let id = JobId {
            cluster: self.cluster.clone(),
            ulid: ulid::Ulid::new().to_string(),
        }
        .to_string();
        let info = UploadInfo {
            id: id.clone(),
            owner,
            length,
            metadata,
            created_ms: now_ms,
            expires_ms: tus::expires_at(now_ms, ttl_seconds),
        };
        let json = serde_json::to_vec(&info).map_err(|e| UploadError::Corrupt(e.to_string()))?;
        if !self.storage.put_if_absent(&info_key(&id), json).await? {
            return Err(UploadError::Corrupt(format!("upload id {id} collided")));
        }
        Ok(info)
    }

    /// The upload `id` as `owner_ok` may see it: unknown, other owners' and expired uploads
    /// are refused (expired with 410, so a client stops retrying).
    pub async fn load(
        &self,
        id: &str,
        owner_ok: impl Fn(Option<&str>) -> bool,
        now_ms: i64,
    ) -> Result<UploadInfo, UploadError> {
        let id = parse_id(&self.cluster, id)?;
        let raw = self
            .storage
            .get_small(&info_key(&id), 64 * 1024)
            .await?
            .ok_or_else(|| UploadError::NotFound(id.clone()))?;
        let info: UploadInfo =
            serde_json::from_slice(&raw).map_err(|e| UploadError::Corrupt(format!("{id}: {e}")))?;
        if !owner_ok(info.owner.as_deref()) {
            return Err(UploadError::NotFound(id));
        }
        if tus::is_expired(info.expires_ms, now_ms) {
            return Err(UploadError::Expired(id));
        }
        Ok(info)
    }

    /// Committed parts in offset order.
    async fn parts(&self, id: &str) -> Result<Vec<(u64, String)>, UploadError> {
        let listed = self.storage.list(&format!("uploads/{id}/parts")).await?;
        let mut parts: Vec<(u64, String)> = listed
            .into_iter()
            .filter_map(|o| part_offset(&o.key).map(|off| (off, o.key)))
            .collect();
        parts.sort();
        Ok(parts)
    }

    async fn read_part(&self, key: &str) -> Result<Part, UploadError> {
        let raw = self
            .storage
            .get_small(key, 4096)
            .await?
            .ok_or_else(|| UploadError::Corrupt(format!("part {key} vanished")))?;
        serde_json::from_slice(&raw).map_err(|e| UploadError::Corrupt(format!("{key}: {e}")))
    }

    /// How many bytes have been committed: the end of the last part.
    pub async fn offset(&self, id: &str) -> Result<u64, UploadError> {
        let parts = self.parts(id).await?;
        let Some((off, key)) = parts.last() else {
            return Ok(0);
        };
        Ok(off + self.read_part(key).await?.len)
    }

    /// Appends a PATCH body at `offset`. The body is streamed into storage; whatever arrived
    /// before the body failed (a dropped connection, a stall) is committed too, so the client
    /// resumes from there, and the body's error is returned with the new offset.
    pub async fn append<S, E>(
        &self,
        info: &UploadInfo,
        offset: u64,
        body: S,
    ) -> Result<(u64, Option<E>), UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let actual = self.offset(&info.id).await?;
        if offset != actual {
            return Err(tus::TusError::OffsetMismatch {
                given: offset,
                actual,
            }
            .into());
        }
        let room = info.length - offset;
        let chunk = new_chunk_key(&info.id, offset);
        let mut writer = self.storage.writer(&chunk).await?;
        let body_error = match copy_body(body, &mut writer, room).await {
            Ok(e) => e,
            Err(e) => {
                writer.abort().await;
                return Err(e);
            }
        };
        if writer.written() == 0 {
            writer.abort().await;
            return Ok((offset, body_error));
        }
        let len = writer.finish().await?;
        let part = serde_json::to_vec(&Part {
            chunk: chunk.clone(),
            len,
        })
        .map_err(|e| UploadError::Corrupt(e.to_string()))?;
        if !self
            .storage
            .put_if_absent(&part_key(&info.id, offset), part)
            .await?
        {
            // Another PATCH committed this offset first.
            let _ = self.storage.delete(&chunk).await;
            let actual = self.offset(&info.id).await?;
            return Err(tus::TusError::OffsetMismatch {
                given: offset,
                actual,
            }
            .into());
        }
        Ok((offset + len, body_error))
    }

    /// Termination: everything of the upload goes.
    pub async fn delete(&self, id: &str) -> Result<(), UploadError> {
        self.storage.delete_prefix(&prefix(id)).await?;
        Ok(())
    }

    /// Makes a finished upload the input of job `job_id`: marks it used (once only), then
    /// streams its chunks in order into `dest`. On failure the mark is taken back, so the
    /// client may try again; on success the caller removes the upload with [`Uploads::delete`]
    /// once the job exists, or [`Uploads::release`]s it.
    pub async fn take(
        &self,
        info: &UploadInfo,
        job_id: &str,
        dest: &str,
    ) -> Result<(), UploadError> {
        let offset = self.offset(&info.id).await?;
        if offset != info.length {
            return Err(UploadError::Incomplete {
                id: info.id.clone(),
                offset,
                length: info.length,
            });
        }
        if !self
            .storage
            .put_if_absent(&used_key(&info.id), job_id.as_bytes().to_vec())
            .await?
        {
            let job = self
                .storage
                .get_small(&used_key(&info.id), 256)
                .await?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            return Err(UploadError::Used {
                id: info.id.clone(),
                job,
            });
        }
        match self.assemble(&info.id, info.length, dest).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.storage.delete(dest).await;
                self.release(&info.id).await;
                Err(e)
            }
        }
    }

    /// Takes back a `take` whose job was not created.
    pub async fn release(&self, id: &str) {
        if let Err(e) = self.storage.delete(&used_key(id)).await {
            tracing::warn!(upload = id, error = %e, "could not release an upload's used mark");
        }
    }

    async fn assemble(&self, id: &str, length: u64, dest: &str) -> Result<(), UploadError> {
        let mut writer = self.storage.writer(dest).await?;
        let mut expect = 0u64;
        for (off, key) in self.parts(id).await? {
            let part = self.read_part(&key).await?;
            if off != expect {
                writer.abort().await;
                return Err(UploadError::Corrupt(format!("{id}: gap at {expect}")));
            }
            let mut stream = match self.storage.get_range(&part.chunk, None).await {
                Ok(s) => Box::pin(s),
                Err(e) => {
                    writer.abort().await;
                    return Err(e.into());
                }
            };
            while let Some(bytes) = stream.next().await {
                match bytes {
                    Ok(b) => writer.write(&b).await?,
                    Err(e) => {
                        writer.abort().await;
                        return Err(e.into());
                    }
                }
            }
            expect = off + part.len;
        }
        if expect != length || writer.written() != length {
            writer.abort().await;
            return Err(UploadError::Corrupt(format!(
                "{id}: parts end at {expect}, length {length}"
            )));
        }
        writer.finish().await?;
        Ok(())
    }

    /// Deletes uploads that expired more than `grace_ms` ago, and leftovers without an
    /// `info.json` (a PATCH that committed after the sweeper deleted its upload) older than
    /// that. Every step is idempotent, so any number of replicas may sweep at once. Returns how
    /// many uploads were deleted.
    pub async fn sweep(&self, now_ms: i64, grace_ms: i64) -> Result<usize, UploadError> {
        let objects = self.storage.list("uploads").await?;
        let mut by_id: std::collections::BTreeMap<String, (Option<i64>, i64)> =
            std::collections::BTreeMap::new();
        for o in &objects {
            let Some(id) = o
                .key
                .strip_prefix("uploads/")
                .and_then(|k| k.split('/').next())
            else {
                continue;
            };
            let entry = by_id.entry(id.to_string()).or_insert((None, 0));
            entry.1 = entry.1.max(o.modified_ms);
            if o.key.ends_with("/info.json") {
                entry.0 = Some(0);
            }
        }
        let mut deleted = 0;
        for (id, (has_info, newest_ms)) in by_id {
            let expired = if has_info.is_some() {
                match self.storage.get_small(&info_key(&id), 64 * 1024).await? {
                    Some(raw) => match serde_json::from_slice::<UploadInfo>(&raw) {
                        Ok(info) => tus::sweepable(info.expires_ms, now_ms, grace_ms),
                        Err(_) => tus::sweepable(newest_ms, now_ms, grace_ms),
                    },
                    None => false,
                }
            } else {
                tus::sweepable(newest_ms, now_ms, grace_ms)
            };
            if expired {
                self.delete(&id).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// Streams `body` into `writer`, refusing more than `room` bytes. A body read error ends the
/// copy and is handed back (the bytes before it are kept); a storage error is an error.
async fn copy_body<S, E>(
    mut body: S,
    writer: &mut ObjectWriter,
    room: u64,
) -> Result<Option<E>, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return Ok(Some(e)),
        };
        if writer.written() + chunk.len() as u64 > room {
            return Err(tus::TusError::PastLength { length: room }.into());
        }
        writer.write(&chunk).await?;
    }
    Ok(None)
}

/// Deletes expired uploads every `every` until `stop`; run by every API process.
pub async fn run_sweeper(
    uploads: Uploads,
    every: std::time::Duration,
    grace_ms: i64,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = chrono::Utc::now().timestamp_millis();
        match uploads.sweep(now, grace_ms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired uploads deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "sweeping expired uploads failed; next round retries")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_before_keys_are_built() {
        let ulid = ulid::Ulid::new().to_string();
        assert_eq!(
            parse_id("aws", &format!("aws.{ulid}")).unwrap(),
            format!("aws.{ulid}")
        );
        for bad in [
            format!("gcp.{ulid}"),
            "aws.../../x".to_string(),
            "aws.".to_string(),
            "aws.notaulid".to_string(),
            "../etc".to_string(),
        ] {
            assert!(
                matches!(parse_id("aws", &bad), Err(UploadError::NotFound(_))),
                "{bad}"
            );
        }
        assert_eq!(
            part_offset("uploads/x/parts/00000000000000000042"),
            Some(42)
        );
        assert!(part_key("a", 7) < part_key("a", 10));
    }

    #[test]
    fn errors_know_their_status() {
        use axum::http::StatusCode;
        assert_eq!(UploadError::Expired("x".into()).status(), StatusCode::GONE);
        assert_eq!(
            UploadError::Used {
                id: "x".into(),
                job: "j".into()
            }
            .status(),
            StatusCode::CONFLICT
        );
        assert!(UploadError::Storage(StorageError::NotFound("x".into())).is_transient());
        assert!(!UploadError::NotFound("x".into()).is_transient());
    }
}
