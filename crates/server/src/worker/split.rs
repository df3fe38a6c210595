//! The `split` task: fetch the job's input, cut its video at keyframes into MPEG-TS pieces
//! (stream copy), and store the pieces under the job's intermediate prefix with the manifest
//! the `encode_segment` tasks read (the task's output: [`SplitResult`]).

use super::parts::{PartError, SplitResult};
use super::timing::Phase;
use super::Context;
use crate::task_payloads::SplitPayload;

pub(super) async fn run(cx: &Context<'_>) -> Result<SplitResult, PartError> {
    let payload: SplitPayload = serde_json::from_value(cx.claim.payload.clone())
        .map_err(|e| PartError::Contract(format!("split payload: {e}")))?;
    cx.fresh_workdir().await?;
    let input = cx.workdir.join("input");
    cx.fetch_input(&input).await?;
    let cfg = &cx.state.cfg;
    let mut info = cx.probed(&input).await?;
    // As the transcode task does: where the probe cannot tell, idet decides whether the pieces'
    // encodes deinterlace. Not knowing is no reason to fail.
    let scan = reelay_media::detect_scan(&mut info, &input, &cfg.tools, &cfg.policy);
    if let Err(e) = cx.timed(Phase::Probe, scan).await {
        tracing::warn!(code = e.code(), error = %e, "scan of the input unknown; not deinterlacing");
    }
    let pieces_dir = cx.workdir.join("pieces");
    tokio::fs::create_dir_all(&pieces_dir)
        .await
        .map_err(|e| PartError::Scratch(format!("{e}")))?;
    let duration = info.best_duration().unwrap_or(0.0);
    let cutting = reelay_media::split::split(
        &cfg.tools,
        &cfg.policy,
        &info,
        &input,
        &payload.layout.ranges,
        &pieces_dir,
        cx.limits(),
        cx.token,
        cx.on_progress(duration),
    );
    let manifest = cx
        .timed(Phase::Encode, cutting)
        .await
        .map_err(|e| cx.media(e))?;
    let prefix = cx.prefix.to_string();
    let files: Vec<String> = manifest.pieces.iter().map(|p| p.file.clone()).collect();
    cx.upload(&pieces_dir, &files, &prefix).await?;
    Ok(SplitResult {
        prefix,
        layout: payload.layout,
        manifest,
        info,
    })
}
