//! The `encode_audio` task: the whole audio track encoded once at one bitrate (no joints, so no
//! priming gap or click at piece boundaries), cut into HLS segments by stream copy when HLS
//! rungs use it; stored under its own attempt prefix ([`AudioResult`]).

use super::parts::{AudioResult, PartError};
use super::timing::Phase;
use super::Context;
use reelay_media::split::AudioTask;

pub(super) async fn run(cx: &Context<'_>) -> Result<AudioResult, PartError> {
    let task: AudioTask = serde_json::from_value(cx.claim.payload.clone())
        .map_err(|e| PartError::Contract(format!("encode_audio payload: {e}")))?;
    cx.fresh_workdir().await?;
    let input = cx.workdir.join("input");
    cx.fetch_input(&input).await?;
    let info = cx.probed(&input).await?;
    let out_dir = cx.workdir.join("out");
    let cfg = &cx.state.cfg;
    let duration = info.best_duration().unwrap_or(0.0);
    let encoding = reelay_media::split::encode_audio(
        &cfg.tools,
        &cfg.policy,
        &info,
        &input,
        &task,
        &out_dir,
        cx.limits(),
        cx.token,
        cx.on_progress(duration),
    );
    let output = cx
        .timed(Phase::Encode, encoding)
        .await
        .map_err(|e| cx.media(e))?;
    let mut files = vec![output.track.clone()];
    if let Some(dir) = &output.hls_dir {
        files.extend(output.hls.iter().map(|s| format!("{dir}/{}", s.uri)));
    }
    let prefix = cx.prefix.to_string();
    cx.upload(&out_dir, &files, &prefix).await?;
    Ok(AudioResult {
        prefix,
        output,
        files,
    })
}
