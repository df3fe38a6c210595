//! Object storage behind `object_store`: a local directory by default, S3 or GCS by URL.
//!
//! Everything moves as streams (multipart uploads, chunked downloads), so a multi-GB file never
//! sits in memory. Keys are built only by reelay from validated parts.

use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("invalid storage URL {url}: {message}")]
    BadUrl { url: String, message: String },
    #[error("object storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
}

fn map_err(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { path, .. } => StorageError::NotFound(path),
        other => StorageError::Store(other),
    }
}

/// [`map_err`] for reads: a key that cannot name an object on a file system (a file used as a
/// directory, `ENOTDIR`; a directory, `EISDIR`; a name too long, `ENAMETOOLONG`) is an object
/// that does not exist. Without this, `GET /v1/jobs/{id}/outputs/manifest.mpd/x` from a local
/// store was a 500. Writes keep the error: there it means the store is not what we made it.
fn map_read_err(e: object_store::Error) -> StorageError {
    if let object_store::Error::Generic { .. } | object_store::Error::Precondition { .. } = &e {
        if names_no_object(&e) {
            return StorageError::NotFound(e.to_string());
        }
    }
    map_err(e)
}

/// Whether an I/O error in `e`'s source chain says the path cannot be an object.
fn names_no_object(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::NotADirectory | ErrorKind::IsADirectory | ErrorKind::InvalidFilename
            ) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Last modification, milliseconds since the epoch (0 where the back end does not say).
    pub modified_ms: i64,
}

/// An object being written in parts (`Storage::writer`): memory stays bounded by a few parts
/// whatever the object's size. Dropped without `finish`, nothing is stored.
pub struct ObjectWriter {
    inner: object_store::WriteMultipart,
    written: u64,
}

impl ObjectWriter {
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.inner.wait_for_capacity(4).await.map_err(map_err)?;
        self.inner.write(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub async fn finish(self) -> Result<u64, StorageError> {
        self.inner.finish().await.map_err(map_err)?;
        Ok(self.written)
    }

    pub async fn abort(self) {
        if let Err(e) = self.inner.abort().await {
            tracing::warn!(error = %e, "aborting a multipart upload failed; the bucket's lifecycle rule removes it");
        }
    }
}

#[derive(Clone)]
pub struct Storage {
    inner: Arc<dyn ObjectStore>,
    /// Present for S3 and GCS: lets downloads be redirects to presigned URLs.
    signer: Option<(Arc<dyn object_store::signer::Signer>, String)>,
    /// The directory of a local store: a worker hard-links an input from there instead of
    /// copying gigabytes into its working directory.
    local_root: Option<std::path::PathBuf>,
    /// Shown in logs and /readyz; never contains credentials.
    pub description: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// Chunk size of multipart uploads: S3's minimum part is 5 MiB.
const PART: usize = 8 << 20;

impl Storage {
    /// `None` means a local directory under the data dir.
    pub fn open(url: Option<&str>, data_dir: &Path) -> Result<Storage, StorageError> {
        let bad = |url: &str, message: &str| StorageError::BadUrl {
            url: url.into(),
            message: message.into(),
        };
        let Some(url) = url else {
            let dir = data_dir.join("storage");
            std::fs::create_dir_all(&dir)?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
            return Ok(Storage {
                inner: Arc::new(fs),
                signer: None,
                local_root: Some(dir.clone()),
                description: format!("local directory {}", dir.display()),
            });
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(url, &e.to_string()))?;
        let prefix = parsed.path().trim_matches('/').to_string();
        let mut signer: Option<(Arc<dyn object_store::signer::Signer>, String)> = None;
        let mut local_root = None;
        let inner: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let dir = std::path::PathBuf::from(parsed.path());
                std::fs::create_dir_all(&dir)?;
                local_root = Some(dir.clone());
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&dir)?)
            }
            "s3" => {
                let bucket = parsed.host_str().ok_or_else(|| bad(url, "no bucket"))?;
                // Credentials, region and endpoint come from the usual AWS_* variables
                // (AWS_ENDPOINT and AWS_ALLOW_HTTP for S3-compatible servers); requests are
                // path-style unless AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true.
                let s3 = Arc::new(
                    object_store::aws::AmazonS3Builder::from_env()
                        .with_bucket_name(bucket)
                        .build()?,
                );
                signer = Some((s3.clone(), prefix.clone()));
                with_prefix(s3, &prefix)
            }
            "gs" => {
                let bucket = parsed.host_str().ok_or_else(|| bad(url, "no bucket"))?;
                // GOOGLE_SERVICE_ACCOUNT / GOOGLE_APPLICATION_CREDENTIALS, or workload identity.
                let gcs = Arc::new(
                    object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(bucket)
                        .build()?,
                );
                signer = Some((gcs.clone(), prefix.clone()));
                with_prefix(gcs, &prefix)
            }
            other => {
                return Err(bad(
                    url,
                    &format!("unsupported scheme {other:?}; use s3, gs or file"),
                ))
            }
        };
        let host = parsed.host_str().unwrap_or("");
        Ok(Storage {
            inner,
            signer,
            local_root,
            description: format!("{}://{host}/{prefix}", parsed.scheme()),
        })
    }

    /// A time-limited GET URL for `key`, when the back end can sign (S3, GCS).
    pub async fn presigned_get(
        &self,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, StorageError> {
        self.presigned(http::Method::GET, key, ttl).await
    }

    /// A time-limited PUT URL for `key`, when the back end can sign (a peer's worker writes a
    /// task's outputs straight into this cluster's bucket, issue 16).
    pub async fn presigned_put(
        &self,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, StorageError> {
        self.presigned(http::Method::PUT, key, ttl).await
    }

    async fn presigned(
        &self,
        method: http::Method,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, StorageError> {
        let Some((signer, prefix)) = &self.signer else {
            return Ok(None);
        };
        let full = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}/{key}")
        };
        let url = signer
            .signed_url(method, &ObjPath::from(full), ttl)
            .await
            .map_err(map_err)?;
        Ok(Some(url.to_string()))
    }

    /// Streams a local file into the store (multipart for large files).
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<u64, StorageError> {
        let mut f = tokio::fs::File::open(file).await?;
        let len = f.metadata().await?.len();
        let path = ObjPath::from(key);
        if len <= PART as u64 {
            let mut buf = Vec::with_capacity(len as usize);
            f.read_to_end(&mut buf).await?;
            self.inner
                .put(&path, PutPayload::from(buf))
                .await
                .map_err(map_err)?;
            return Ok(len);
        }
        let upload = self.inner.put_multipart(&path).await.map_err(map_err)?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await.map_err(map_err)?;
            writer.write(&buf[..n]);
        }
        writer.finish().await.map_err(map_err)?;
        Ok(len)
    }

    /// Stores a scratch file the caller gives away (an attempt's output, about to be removed
    /// with its working directory): renamed into a local store on the same file system, one
    /// metadata operation instead of reading and writing every byte again (issue 18: publishing
    /// is on every job's critical path); streamed like [`Storage::put_file`] anywhere else. The
    /// file is gone from `file` afterwards only when it was moved.
    pub async fn put_scratch_file(&self, key: &str, file: &Path) -> Result<u64, StorageError> {
        if let Some(n) = self.move_local(key, file).await {
            return Ok(n);
        }
        self.put_file(key, file).await
    }

    /// `None` whenever moving is not possible (another store, another file system, a key the
    /// local store would have encoded differently): the caller copies instead. A rename is
    /// atomic, like the local store's own write-then-rename: a reader never sees half a file.
    async fn move_local(&self, key: &str, file: &Path) -> Option<u64> {
        let root = self.local_root.as_ref()?;
        if !valid_user_key(key) {
            return None;
        }
        let (src, dst) = (file.to_path_buf(), root.join(key));
        tokio::task::spawn_blocking(move || {
            let meta = std::fs::symlink_metadata(&src).ok()?;
            if !meta.file_type().is_file() {
                return None;
            }
            std::fs::create_dir_all(dst.parent()?).ok()?;
            std::fs::rename(&src, &dst).ok()?;
            Some(meta.len())
        })
        .await
        .ok()
        .flatten()
    }

    /// Starts writing `key` in parts (multipart upload on S3/GCS, a temporary file locally).
    pub async fn writer(&self, key: &str) -> Result<ObjectWriter, StorageError> {
        let upload = self
            .inner
            .put_multipart(&ObjPath::from(key))
            .await
            .map_err(map_err)?;
        Ok(ObjectWriter {
            inner: object_store::WriteMultipart::new_with_chunk_size(upload, PART),
            written: 0,
        })
    }

    /// A small object written only if no object has this key yet: `Ok(false)` when one has.
    /// The store decides atomically (a hard link locally, `If-None-Match: *` on S3 and GCS), so
    /// of several replicas writing the same key at once exactly one succeeds.
    pub async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<bool, StorageError> {
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&ObjPath::from(key), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Deletes one object; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.inner.delete(&ObjPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    /// A small object written whole (metadata beside the media, never the media itself).
    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.inner
            .put(&ObjPath::from(key), PutPayload::from(bytes))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// A small object read whole; `None` when it does not exist or exceeds `max` bytes.
    pub async fn get_small(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let res = match self.inner.get(&ObjPath::from(key)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => match map_read_err(e) {
                StorageError::NotFound(_) => return Ok(None),
                other => return Err(other),
            },
        };
        if res.meta.size > max {
            return Ok(None);
        }
        Ok(Some(res.bytes().await.map_err(map_read_err)?.to_vec()))
    }

    /// Streams an object into a local file; from a local store, a hard link when the file
    /// system allows it (readers only: the job's working directory is removed, never written
    /// through).
    pub async fn get_to_file(&self, key: &str, file: &Path) -> Result<u64, StorageError> {
        if let Some(n) = self.link_local(key, file).await {
            return Ok(n);
        }
        let res = self
            .inner
            .get(&ObjPath::from(key))
            .await
            .map_err(map_read_err)?;
        let mut stream = res.into_stream();
        // Never truncate through an old hard link to a stored object: replace the name instead.
        let _ = tokio::fs::remove_file(file).await;
        let mut out = tokio::fs::File::create(file).await?;
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(map_err)?;
            n += chunk.len() as u64;
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        Ok(n)
    }

    /// `None` whenever linking is not possible (another store, another file system, a key the
    /// local store would have encoded differently): the caller copies instead.
    async fn link_local(&self, key: &str, file: &Path) -> Option<u64> {
        let root = self.local_root.as_ref()?;
        if !valid_user_key(key) {
            return None;
        }
        let src = root.join(key);
        let dst = file.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let meta = std::fs::symlink_metadata(&src).ok()?;
            if !meta.file_type().is_file() {
                return None;
            }
            let _ = std::fs::remove_file(&dst);
            std::fs::hard_link(&src, &dst).ok()?;
            // The link is the stored object itself: nothing in the job may write through it.
            // (Replacing or deleting the object still works: that needs the directory.)
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o444)).ok()?;
            Some(meta.len())
        })
        .await
        .ok()
        .flatten()
    }

    pub async fn head(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        let meta = self
            .inner
            .head(&ObjPath::from(key))
            .await
            .map_err(map_read_err)?;
        Ok(ObjectInfo {
            key: key.into(),
            size: meta.size,
            modified_ms: meta.last_modified.timestamp_millis(),
        })
    }

    /// A byte range (or all) of an object, as a stream.
    pub async fn get_range(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, StorageError>> + Send + 'static, StorageError>
    {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let res = self
            .inner
            .get_opts(&ObjPath::from(key), opts)
            .await
            .map_err(map_read_err)?;
        Ok(res.into_stream().map_err(map_err))
    }

    /// The file behind `key` in a local store (None for S3/GCS).
    pub fn local_path(&self, key: &str) -> Option<std::path::PathBuf> {
        self.local_root.as_ref().map(|r| r.join(key))
    }

    /// Every object under `prefix/`, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let p = ObjPath::from(prefix);
        let mut out: Vec<ObjectInfo> = self
            .inner
            .list(Some(&p))
            .map_ok(|m| ObjectInfo {
                key: m.location.to_string(),
                size: m.size,
                modified_ms: m.last_modified.timestamp_millis(),
            })
            .try_collect()
            .await
            .map_err(map_err)?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes every object under `prefix/` (none left is no error). A local store also drops
    /// the directories left empty, so a deleted job leaves no trace on disk either.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        for o in self.list(prefix).await? {
            match self.inner.delete(&ObjPath::from(o.key.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        if let Some(root) = &self.local_root {
            let p = ObjPath::from(prefix);
            if p.parts().count() > 0 {
                let dir = root.join(p.as_ref());
                let _ = tokio::task::spawn_blocking(move || remove_empty_dirs(&dir)).await;
            }
        }
        Ok(())
    }

    /// A cheap round trip for /readyz: listing a prefix that usually holds nothing.
    pub async fn check(&self) -> Result<(), StorageError> {
        let p = ObjPath::from("readyz");
        let mut s = self.inner.list(Some(&p));
        match s.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(map_err(e)),
        }
    }
}

/// Removes `dir` and the directories below it that hold no file (bottom-up; a directory a
/// concurrent writer just put a file in stays, since only empty ones can be removed).
fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}

fn with_prefix(store: Arc<dyn ObjectStore>, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        store
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
    }
}

/// A user-supplied storage key (`{"input": {"key": ...}}`): relative, `/`-separated segments of
/// safe characters, no `.` or `..` segments, so it cannot climb out of the store's root.
pub fn valid_user_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'=' | b'+')
                })
        })
}

/// Output paths inside a job (`hls-abr/v0/seg_00001.ts`): the same segment rule.
pub fn valid_output_path(path: &str) -> bool {
    path.len() <= 256 && valid_user_key(path)
}

pub fn input_key(job_id: &str) -> String {
    format!("inputs/{job_id}/source")
}

/// The upload's probe result, kept beside it so the worker need not probe the same bytes again.
pub fn probe_key(job_id: &str) -> String {
    format!("inputs/{job_id}/probe.json")
}

/// Each attempt writes under its own prefix, so two workers that both believe they own a job can
/// never overwrite each other's files; the job row points at the attempt that completed.
pub fn output_prefix(job_id: &str, attempt: u32) -> String {
    format!("outputs/{job_id}/a{attempt}")
}

pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "mp4" => "video/mp4",
        "m4a" => "audio/mp4",
        "m3u8" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        "m4s" => "video/iso.segment",
        "mpd" => "application/dash+xml",
        "vtt" => "text/vtt; charset=utf-8",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mov" => "video/quicktime",
        "jpg" | "jpeg" => "image/jpeg",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_keys_cannot_traverse() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/./b",
            "a\\b",
            "a b",
            "a/",
            "%2e%2e/x",
        ] {
            assert!(!valid_user_key(bad), "{bad:?} accepted");
        }
        for good in ["clip.mp4", "uploads/2026/11/clip_1.mov", "a=b+c"] {
            assert!(valid_user_key(good), "{good:?} refused");
        }
    }

    #[test]
    fn content_types_for_players() {
        assert_eq!(
            content_type("x/master.m3u8"),
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(content_type("v0/seg_00001.ts"), "video/mp2t");
        assert_eq!(content_type("cmaf/manifest.mpd"), "application/dash+xml");
        assert_eq!(content_type("sb/storyboard.vtt"), "text/vtt; charset=utf-8");
        assert_eq!(content_type("cmaf/seg-0-00001.m4s"), "video/iso.segment");
        assert_eq!(content_type("hls-cmaf/v0/init_0.mp4"), "video/mp4");
        assert_eq!(content_type("a.MP4"), "video/mp4");
        assert_eq!(content_type("thumbnail.jpg"), "image/jpeg");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn storage_urls_are_parsed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        // GCS cannot be exercised here (no emulator): check its configuration path instead.
        let gcs = Storage::open(Some("gs://media-bucket/reelay/prod"), dir.path());
        match gcs {
            Ok(st) => {
                assert_eq!(st.description, "gs://media-bucket/reelay/prod");
                assert!(st.signer.as_ref().is_some_and(|(_, p)| p == "reelay/prod"));
            }
            // Without any Google credentials the builder may refuse; it must say why.
            Err(e) => assert!(e.to_string().to_lowercase().contains("credential"), "{e}"),
        }
        for bad in ["ftp://x/y", "s3:///nobucket", "not a url"] {
            assert!(Storage::open(Some(bad), dir.path()).is_err(), "{bad}");
        }
        let file = Storage::open(
            Some(&format!("file://{}/objs", dir.path().display())),
            dir.path(),
        )
        .unwrap();
        assert!(file.signer.is_none());
    }

    #[tokio::test]
    async fn local_store_round_trips_large_files_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let st = Storage::open(None, dir.path()).unwrap();
        let src = dir.path().join("src.bin");
        let data: Vec<u8> = (0..(PART + 12345)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        assert_eq!(
            st.put_file("a/b/big.bin", &src).await.unwrap(),
            data.len() as u64
        );
        let back = dir.path().join("back.bin");
        std::fs::write(&back, b"an older file in the way").unwrap();
        st.get_to_file("a/b/big.bin", &back).await.unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), data);
        // Same file system: linked, not copied; removing the link leaves the object.
        {
            use std::os::unix::fs::MetadataExt;
            let stored = dir.path().join("storage/a/b/big.bin");
            assert_eq!(
                std::fs::metadata(&back).unwrap().ino(),
                std::fs::metadata(&stored).unwrap().ino()
            );
            // Read-only through the link, so a job cannot change the stored input.
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&back).unwrap().permissions().mode();
            assert_eq!(mode & 0o222, 0, "mode {mode:o}");
            std::fs::remove_file(&back).unwrap();
            assert_eq!(std::fs::read(&stored).unwrap(), data);
        }
        // A missing object is still NotFound, not an I/O error from the link attempt.
        assert!(matches!(
            st.get_to_file("a/b/none.bin", &back).await,
            Err(StorageError::NotFound(_))
        ));
        let part: Vec<u8> = st
            .get_range("a/b/big.bin", Some(10..20))
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .concat();
        assert_eq!(part, &data[10..20]);
        assert_eq!(st.list("a").await.unwrap().len(), 1);
        st.delete_prefix("a").await.unwrap();
        assert!(matches!(
            st.head("a/b/big.bin").await,
            Err(StorageError::NotFound(_))
        ));
        st.check().await.unwrap();
    }

    #[tokio::test]
    async fn scratch_files_move_into_a_local_store() {
        let dir = tempfile::tempdir().unwrap();
        let st = Storage::open(None, dir.path()).unwrap();
        let src = dir.path().join("out.mp4");
        std::fs::write(&src, b"encoded bytes").unwrap();
        assert_eq!(
            st.put_scratch_file("o/j/a1/out.mp4", &src).await.unwrap(),
            13
        );
        assert!(!src.exists(), "moved, not copied");
        assert_eq!(st.head("o/j/a1/out.mp4").await.unwrap().size, 13);
        let back: Vec<u8> = st
            .get_range("o/j/a1/out.mp4", None)
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .concat();
        assert_eq!(back, b"encoded bytes");
        // A key the local store would encode differently is written the ordinary way.
        std::fs::write(&src, b"x").unwrap();
        assert_eq!(st.put_scratch_file("o/j/a1/we ird", &src).await.unwrap(), 1);
        assert!(src.exists(), "copied, so still there");
        assert_eq!(st.head("o/j/a1/we ird").await.unwrap().size, 1);
    }
}
