//! What the split-and-stitch handlers (`split`, `encode_segment`, `encode_audio`, `stitch`)
//! share: their error enum, where a job's intermediate files live in object storage, moving
//! files between a task's scratch directory and storage, and the outputs each task records.
//!
//! Intermediates (pieces, encoded ranges, audio tracks) live under [`intermediate_prefix`]
//! (`tasks/{job}/…`, one place per task and attempt below it), never under `outputs/`, so the
//! outputs API cannot serve them and one `delete_prefix` removes all of them when the job ends
//! (`worker::sweeper`).

use super::timing::Phase;
use super::{Context, StopReason, TaskError};
use crate::error::ErrorCode;
use crate::storage::StorageError;
use reelay_media::split::SplitError;
use reelay_media::{MediaInfo, RunError, RunLimits};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Why a split-and-stitch task failed.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    /// A media step failed; its own code and transience (see [`SplitError`]).
    #[error("{0}")]
    Media(#[from] SplitError),
    #[error("{0}")]
    Scratch(String),
    #[error("{0}")]
    Storage(String),
    /// The job's stored input is gone.
    #[error("{0}")]
    InputNotFound(String),
    /// The payload or a dependency's output does not read: admission and the handlers of this
    /// build disagree, which another attempt cannot fix.
    #[error("{0}")]
    Contract(String),
    #[error("stopped: {0:?}")]
    Stopped(StopReason),
}

impl TaskError for PartError {
    fn code(&self) -> &str {
        match self {
            PartError::Media(e) => e.code(),
            PartError::Scratch(_) => ErrorCode::ScratchError.as_str(),
            PartError::Storage(_) => ErrorCode::StorageError.as_str(),
            PartError::InputNotFound(_) => ErrorCode::InputNotFound.as_str(),
            PartError::Contract(_) => ErrorCode::InvalidTask.as_str(),
            PartError::Stopped(_) => ErrorCode::Stopped.as_str(),
        }
    }
    fn is_transient(&self) -> bool {
        match self {
            PartError::Media(e) => e.is_transient(),
            PartError::Scratch(_) | PartError::Storage(_) => true,
            PartError::InputNotFound(_) | PartError::Contract(_) => false,
            PartError::Stopped(_) => false,
        }
    }
    fn stopped(&self) -> Option<StopReason> {
        match self {
            PartError::Stopped(why) => Some(*why),
            _ => None,
        }
    }
}

/// Where every intermediate file of `job_id` lives (and what is deleted when it ends).
pub fn intermediate_prefix(job_id: &str) -> String {
    format!("tasks/{job_id}")
}

pub use crate::task_payloads::{AudioResult, SegmentResult, SplitResult};

impl Context<'_> {
    /// The error for a handler that stopped because the keeper told it to.
    pub(super) fn stopped(&self) -> PartError {
        PartError::Stopped(self.stop.get().unwrap_or(StopReason::Cancelled))
    }

    /// A media error, or the stop that caused it.
    pub(super) fn media(&self, e: SplitError) -> PartError {
        match e {
            SplitError::Run(RunError::Cancelled) => self.stopped(),
            e => PartError::Media(e),
        }
    }

    /// The run limits of one step (no output-length bound: steps read pieces already checked
    /// against the input policy, and write at shifted timestamps).
    pub(super) fn limits(&self) -> RunLimits {
        let cfg = &self.state.cfg;
        RunLimits {
            stall_timeout: Duration::from_secs(cfg.stall_timeout_seconds),
            time_limit: Duration::from_secs(cfg.job_timeout_seconds),
            max_out_time: None,
        }
    }

    /// A fresh scratch directory for this attempt.
    pub(super) async fn fresh_workdir(&self) -> Result<(), PartError> {
        let _ = tokio::fs::remove_dir_all(self.workdir).await;
        tokio::fs::create_dir_all(self.workdir)
            .await
            .map_err(|e| PartError::Scratch(format!("cannot create the working directory: {e}")))
    }

    /// The job's stored input into `dest`: its own (an upload, or a URL input its first task
    /// fetched and stored), or a key input under the cluster's key_input_prefix.
    pub(super) async fn fetch_input(&self, dest: &Path) -> Result<(), PartError> {
        self.timed(Phase::Fetch, async {
            let job = &self.claim.job;
            let key = job.input_key.as_deref().ok_or_else(|| {
                PartError::Contract("a split job's input must be in storage".into())
            })?;
            if !self.state.cfg.key_inputs().may_serve(&job.id, key) {
                return Err(PartError::Contract(
                    "a split job's input must be its own or under the key_input_prefix".into(),
                ));
            }
            tokio::select! {
                r = self.state.storage.get_to_file(key, dest) => r.map(drop).map_err(|e| match e {
                    StorageError::NotFound(_) => PartError::InputNotFound(format!("input object {key:?} is gone")),
                    other => PartError::Storage(format!("reading the input: {other}")),
                }),
                _ = self.token.cancelled() => Err(self.stopped()),
            }
        })
        .await
    }

    /// The probe admission stored for the job's upload, else a fresh probe of `input`.
    pub(super) async fn probed(&self, input: &Path) -> Result<MediaInfo, PartError> {
        self.timed(Phase::Probe, async {
            let st = self.state;
            let cached = st
                .storage
                .get_small(&crate::storage::probe_key(&self.claim.job.id), 1 << 20)
                .await
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<MediaInfo>(&b).ok());
            match cached {
                Some(info) => Ok(info),
                None => reelay_media::probe(input, &st.cfg.tools, &st.cfg.policy)
                    .await
                    .map_err(|e| {
                        PartError::Media(SplitError::Probe {
                            what: "input".into(),
                            message: e.to_string(),
                        })
                    }),
            }
        })
        .await
    }

    /// The job's renditions, limited to `names`.
    pub(super) fn renditions(
        &self,
        names: &[String],
    ) -> Result<Vec<reelay_media::Rendition>, PartError> {
        let spec: reelay_protocol::JobSpec = serde_json::from_str(&self.claim.job.spec_json)
            .map_err(|e| PartError::Contract(format!("stored spec unreadable: {e}")))?;
        let mut r = reelay_media::resolve_outputs(&spec.outputs)
            .map_err(|e| PartError::Contract(e.to_string()))?;
        r.retain(|r| names.contains(&r.name));
        Ok(r)
    }

    /// Whether this job's video outputs get quality receipts (see [`super::receipts::wants_quality`]).
    pub(super) fn quality_on(&self, input_seconds: Option<f64>) -> Result<bool, PartError> {
        let spec: reelay_protocol::JobSpec = serde_json::from_str(&self.claim.job.spec_json)
            .map_err(|e| PartError::Contract(format!("stored spec unreadable: {e}")))?;
        Ok(super::receipts::wants_quality(
            spec.quality_report,
            input_seconds,
            self.state.cfg.quality_report_max_seconds,
        ))
    }

    /// The output of the dependency of kind `T` (the first one that reads as `T`).
    pub(super) fn dependency<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<T, PartError> {
        let id = format!("{}.{key}", self.claim.job.id);
        let v = self
            .claim
            .dependencies
            .iter()
            .find(|(t, _)| *t == id)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| PartError::Contract(format!("no output of task {key}")))?;
        serde_json::from_value(v).map_err(|e| PartError::Contract(format!("output of {key}: {e}")))
    }

    /// The outputs of every dependency that reads as `T`.
    pub(super) fn dependencies_of<T: for<'de> Deserialize<'de>>(&self) -> Vec<T> {
        self.claim
            .dependencies
            .iter()
            .filter_map(|(_, v)| serde_json::from_value(v.clone()).ok())
            .collect()
    }

    /// Stores `rels` (relative to `dir`, scratch files given away: see
    /// [`crate::storage::Storage::put_scratch_file`]) under `prefix`; returns the total bytes.
    pub(super) async fn upload(
        &self,
        dir: &Path,
        rels: &[String],
        prefix: &str,
    ) -> Result<u64, PartError> {
        self.timed(Phase::Publish, async {
            let mut total = 0;
            for rel in rels {
                if self.token.is_cancelled() {
                    return Err(self.stopped());
                }
                let path = safe_join(dir, rel)?;
                total += self
                    .state
                    .storage
                    .put_scratch_file(&format!("{prefix}/{rel}"), &path)
                    .await
                    .map_err(|e| PartError::Storage(format!("storing {rel}: {e}")))?;
            }
            Ok(total)
        })
        .await
    }

    /// Fetches `rels` from under `prefix` into `dir` at the same relative paths.
    pub(super) async fn download(
        &self,
        prefix: &str,
        rels: &[String],
        dir: &Path,
    ) -> Result<(), PartError> {
        self.timed(Phase::Fetch, async {
            for rel in rels {
                if self.token.is_cancelled() {
                    return Err(self.stopped());
                }
                let path = safe_join(dir, rel)?;
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| PartError::Scratch(format!("{}: {e}", parent.display())))?;
                }
                self.state
                    .storage
                    .get_to_file(&format!("{prefix}/{rel}"), &path)
                    .await
                    .map_err(|e| match e {
                        // Written by a task that succeeded: gone means the job was swept.
                        StorageError::NotFound(_) => {
                            PartError::Media(SplitError::Missing(rel.clone()))
                        }
                        other => PartError::Storage(format!("reading {rel}: {other}")),
                    })?;
            }
            Ok(())
        })
        .await
    }

    /// Progress of a one-step handler from ffmpeg's progress over `duration` media seconds.
    pub(super) fn on_progress(&self, duration: f64) -> impl FnMut(reelay_media::Progress) + '_ {
        move |p| {
            let f = p.fraction(duration).min(0.999);
            self.progress
                .store(f.to_bits(), std::sync::atomic::Ordering::Relaxed);
            if let Some(eta) = p.eta_seconds(duration, 0) {
                let at = reelay_jobs::now_millis().saturating_add((eta * 1000.0) as i64);
                self.eta_at.store(at, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// `dir/rel` for a relative path of plain components only (payloads and outputs are data).
fn safe_join(dir: &Path, rel: &str) -> Result<std::path::PathBuf, PartError> {
    let p = Path::new(rel);
    if rel.is_empty()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(PartError::Contract(format!(
            "{rel:?} is not a relative path"
        )));
    }
    Ok(dir.join(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_know_their_code_and_whether_to_retry() {
        let cases = [
            (PartError::Scratch("x".into()), "scratch_error", true),
            (PartError::Storage("x".into()), "storage_error", true),
            (
                PartError::InputNotFound("x".into()),
                "input_not_found",
                false,
            ),
            (PartError::Contract("x".into()), "invalid_task", false),
            (
                PartError::Media(SplitError::Unsplittable("x".into())),
                "split_failed",
                false,
            ),
            (
                PartError::Media(SplitError::Missing("x".into())),
                "missing_part",
                true,
            ),
        ];
        for (e, code, transient) in cases {
            assert_eq!((e.code(), e.is_transient()), (code, transient));
            assert_eq!(e.stopped(), None);
        }
        assert_eq!(
            PartError::Stopped(StopReason::Cancelled).stopped(),
            Some(StopReason::Cancelled)
        );
    }

    #[test]
    fn paths_from_payloads_stay_inside() {
        let d = Path::new("/w");
        assert!(safe_join(d, "hls-abr/v0/seg_00001.ts").is_ok());
        assert!(safe_join(d, "../x").is_err());
        assert!(safe_join(d, "/etc/passwd").is_err());
        assert!(safe_join(d, "").is_err());
    }
}
