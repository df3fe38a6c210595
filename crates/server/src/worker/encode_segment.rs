//! The `encode_segment` task: one range of the input to every split video output. Downloads
//! the pieces the range reads (from the `split` task's output), encodes them in one ffmpeg, and
//! stores the encoded piece files and HLS segments under its own attempt prefix
//! ([`SegmentResult`]); the `stitch` task assembles them.

use super::parts::{PartError, SegmentResult, SplitResult};
use super::timing::Phase;
use super::Context;
use crate::task_payloads::SegmentPayload;
use reelay_media::split::segment_tasks;

pub(super) async fn run(cx: &Context<'_>) -> Result<SegmentResult, PartError> {
    let payload: SegmentPayload = serde_json::from_value(cx.claim.payload.clone())
        .map_err(|e| PartError::Contract(format!("encode_segment payload: {e}")))?;
    let split: SplitResult = cx.dependency("split")?;
    let task = segment_tasks(&split.layout, &split.manifest)
        .into_iter()
        .find(|t| t.index == payload.index)
        .ok_or_else(|| PartError::Contract(format!("no range {}", payload.index)))?;
    let renditions = cx.renditions(&split.layout.split)?;
    cx.fresh_workdir().await?;
    let pieces_dir = cx.workdir.join("pieces");
    let out_dir = cx.workdir.join("out");
    cx.download(&split.prefix, &task.pieces, &pieces_dir)
        .await?;
    let cfg = &cx.state.cfg;
    // Receipts come from the range's own encode (libx264's summaries), combined at the stitch.
    let quality_on = cx.quality_on(split.info.best_duration())?;
    let started = std::time::Instant::now();
    let encoding = reelay_media::split::encode_segment(
        &cfg.tools,
        &cfg.policy,
        &split.info,
        &renditions,
        &task,
        &pieces_dir,
        &out_dir,
        cx.limits(),
        cx.token,
        quality_on,
        cx.on_progress(task.end - task.start),
    );
    let output = cx
        .timed(Phase::Encode, encoding)
        .await
        .map_err(|e| cx.media(e))?;
    let secs = started.elapsed().as_secs_f64();
    if secs > 0.0 {
        cx.record_speed((task.end - task.start) * renditions.len() as f64 / secs);
    }
    let mut files: Vec<String> = output.files.iter().map(|(_, f)| f.clone()).collect();
    for h in &output.hls {
        for s in &h.segments {
            files.push(format!("{}/v{}/{}", h.rendition, h.rung, s.uri));
        }
    }
    let prefix = cx.prefix.to_string();
    cx.upload(&out_dir, &files, &prefix).await?;
    Ok(SegmentResult {
        prefix,
        output,
        files,
    })
}
