//! The `stitch` task: the encoded ranges and audio tracks joined without re-encoding into the
//! outputs a user gets (the same names as the unsplit job's): files remuxed with `+faststart`,
//! HLS rungs as VOD playlists over the segments the ranges wrote. Downloads every intermediate
//! its dependencies name, stores the outputs under `outputs/{job}/stitch-a{n}` (where the
//! outputs API serves them) and completes with the job's file list.

use super::parts::{AudioResult, PartError, SegmentResult, SplitResult};
use super::receipts;
use super::timing::Phase;
use super::Context;
use crate::metrics as m;
use crate::storage::content_type;
use reelay_jobs::StoredOutput;
use reelay_media::split::plan::ts_ladder;
use reelay_media::split::{audio_task_for, audio_tasks, stitch_file, stitch_hls};

pub(super) async fn run(cx: &Context<'_>) -> Result<Vec<StoredOutput>, PartError> {
    let split: SplitResult = cx.dependency("split")?;
    let segments: Vec<SegmentResult> = cx.dependencies_of();
    let audio: Vec<AudioResult> = cx.dependencies_of();
    let renditions = cx.renditions(&split.layout.split)?;
    if segments.len() != split.layout.ranges.len() {
        return Err(PartError::Contract(format!(
            "{} of {} ranges encoded",
            segments.len(),
            split.layout.ranges.len()
        )));
    }
    cx.fresh_workdir().await?;
    let work = cx.workdir.join("parts");
    let out_dir = cx.workdir.join("out");
    for s in &segments {
        cx.download(&s.prefix, &s.files, &work).await?;
    }
    for a in &audio {
        cx.download(&a.prefix, &a.files, &work).await?;
    }
    let pieces: Vec<_> = segments.iter().map(|s| s.output.clone()).collect();
    let ranges: Vec<_> = pieces.iter().collect();
    let tracks: Vec<_> = audio.iter().map(|a| a.output.clone()).collect();
    let plans = audio_tasks(&renditions, &split.info);
    let cfg = &cx.state.cfg;
    let n = renditions.len().max(1) as f64;
    for (i, r) in renditions.iter().enumerate() {
        if ts_ladder(r).is_some() {
            stitch_hls(
                r,
                &split.info,
                &pieces,
                split.layout.ranges.len(),
                &tracks,
                &work,
                &out_dir,
            )
            .map_err(|e| cx.media(e))?;
        } else {
            let track =
                audio_task_for(r, &plans).and_then(|t| tracks.iter().find(|a| a.kbps == t.kbps));
            let stitching = stitch_file(
                &cfg.tools,
                r,
                &pieces,
                track,
                &work,
                &out_dir,
                cx.limits(),
                cx.token,
                |_| {},
            );
            cx.timed(Phase::Encode, stitching)
                .await
                .map_err(|e| cx.media(e))?;
        }
        cx.progress.store(
            ((i + 1) as f64 / n * 0.9).to_bits(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    let prefix = cx.prefix.to_string();
    let files = super::transcode::walk(&out_dir)
        .map_err(|e| PartError::Scratch(format!("listing outputs: {e}")))?;
    let mut outputs = vec![];
    let publishing = std::time::Instant::now();
    for rel in &files {
        if cx.token.is_cancelled() {
            return Err(cx.stopped());
        }
        let size = cx
            .state
            .storage
            .put_scratch_file(&format!("{prefix}/{rel}"), &out_dir.join(rel))
            .await
            .map_err(|e| PartError::Storage(format!("storing output {rel}: {e}")))?;
        if let Some(r) = renditions.iter().find(|r| r.primary_file() == *rel) {
            // Quality: every range's encoder measurements combined (loudness receipts are
            // measured by the transcode path only).
            let seconds = reelay_media::argv::output_seconds(r, &split.info);
            let quality = receipts::stitched_file_quality(&r.name, &ranges)
                .map(|q| receipts::encoder_receipt(&q, receipts::bitrate_kbps(size, seconds)));
            let rungs = receipts::stitched_rungs(&r.name, &ranges);
            let container = r.packaging.format_name();
            for q in quality.iter().chain(rungs.iter().map(|g| &g.quality)) {
                if let Some(p) = q.psnr_db {
                    metrics::histogram!(m::OUTPUT_PSNR, "container" => container).record(p);
                }
                metrics::histogram!(m::OUTPUT_SSIM, "container" => container).record(q.ssim);
            }
            outputs.push(StoredOutput {
                key: format!("{prefix}/{rel}"),
                size,
                content_type: content_type(rel).into(),
                name: rel.clone(),
                quality,
                rungs,
                ..Default::default()
            });
        }
    }
    cx.record(Phase::Publish, publishing.elapsed());
    for r in &renditions {
        if !outputs.iter().any(|o| o.name == r.primary_file()) {
            return Err(PartError::Media(reelay_media::split::SplitError::Missing(
                r.primary_file(),
            )));
        }
    }
    // In the job's order of outputs, like the unsplit job's list.
    outputs.sort_by_key(|o| {
        renditions
            .iter()
            .position(|r| r.primary_file() == o.name)
            .unwrap_or(usize::MAX)
    });
    Ok(outputs)
}
