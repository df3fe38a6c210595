//! `reelay status`: one job, as a readable summary or raw JSON.

use super::{context, emit, emit_json};
use crate::client::Client;
use crate::format::{self, clean, human_bytes, human_duration};
use clap::Args;
use reelay_protocol::JobView;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The job id, e.g. aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2.
    pub id: String,

    /// Print the raw job JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(client: &Client, args: &StatusArgs) -> anyhow::Result<()> {
    let view = client
        .job(&args.id)
        .await
        .map_err(|e| context(e, format!("cannot get job {}", args.id)))?;
    if args.json {
        emit_json(&view)
    } else {
        emit(summary(&view, |location| {
            client
                .resolve(location)
                .map(|u| u.to_string())
                .unwrap_or_else(|_| clean(location))
        }))?;
        Ok(())
    }
}

/// The readable summary; `full_url` turns an output location into what to print.
pub fn summary(view: &JobView, full_url: impl Fn(&str) -> String) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        vec!["id:".into(), clean(&view.id)],
        vec![
            "status:".into(),
            format!("{} ({}%)", view.status, format::percent(view.progress)),
        ],
        vec!["attempts:".into(), view.attempts.to_string()],
        vec!["created:".into(), clean(&view.created_at)],
    ];
    if let Some(input) = view.input.as_ref().and_then(input_line) {
        rows.push(vec!["input:".into(), input]);
    }
    if !view.metadata.is_empty() {
        let pairs: Vec<String> = view
            .metadata
            .iter()
            .map(|(k, v)| format!("{}={}", clean(k), clean(v)))
            .collect();
        rows.push(vec!["metadata:".into(), pairs.join(" ")]);
    }
    if let Some(started) = &view.started_at {
        rows.push(vec!["started:".into(), clean(started)]);
    }
    if let Some(finished) = &view.finished_at {
        rows.push(vec!["finished:".into(), clean(finished)]);
        let start = view.started_at.as_deref().unwrap_or(&view.created_at);
        if let Some(took) = format::between(start, finished) {
            rows.push(vec!["took:".into(), human_duration(took)]);
        }
    }
    if let Some(split) = &view.split {
        let text = match (split.applied, split.ranges, split.segment_seconds) {
            (true, Some(n), Some(secs)) => format!("yes, {n} ranges of up to {secs} s"),
            (true, ..) => "yes".into(),
            (false, ..) => format!(
                "no ({}): {}",
                clean(split.reason.as_deref().unwrap_or("?")),
                clean(split.message.as_deref().unwrap_or(""))
            ),
        };
        rows.push(vec!["split:".into(), text]);
    }
    if let Some(playable) = &view.playable_at {
        rows.push(vec!["playable:".into(), clean(playable)]);
    }
    if let Some(error) = &view.error {
        rows.push(vec![
            "error:".into(),
            format!("{}: {}", clean(&error.code), clean(&error.message)),
        ]);
    }
    let mut out = format::columns(&rows);
    if !view.outputs.is_empty() {
        out.push_str("outputs:\n");
        let outputs: Vec<Vec<String>> = view
            .outputs
            .iter()
            .map(|o| {
                vec![
                    format!("  {}", clean(&o.name)),
                    human_bytes(o.size),
                    full_url(&o.url),
                ]
            })
            .collect();
        out.push_str(&format::columns(&outputs));
        let receipts: Vec<Vec<String>> = view
            .outputs
            .iter()
            .filter_map(|o| receipt(o).map(|r| vec![format!("  {}", clean(&o.name)), r]))
            .collect();
        if !receipts.is_empty() {
            out.push_str("receipts:\n");
            out.push_str(&format::columns(&receipts));
        }
    }
    if !view.tasks.is_empty() {
        out.push_str("tasks:\n");
        let tasks: Vec<Vec<String>> = view
            .tasks
            .iter()
            .map(|t| {
                // Task ids are `{job id}.{key}`; the key says which piece it is.
                let key =
                    t.id.strip_prefix(view.id.as_str())
                        .and_then(|k| k.strip_prefix('.'))
                        .unwrap_or(&t.id);
                let name = if key == t.kind {
                    clean(key)
                } else {
                    format!("{} ({})", clean(key), clean(&t.kind))
                };
                vec![
                    format!("  {name}"),
                    clean(&t.status),
                    format!("{}%", format::percent(t.progress)),
                    format!("attempts {}", t.attempts),
                ]
            })
            .collect();
        out.push_str(&format::columns(&tasks));
    }
    out.trim_end().to_string()
}

/// One line of an output's quality and loudness receipts, `None` when it has neither.
/// `clip.mp4, 12.5 s, 1920x1080, h264/aac, 3.0 MiB`: whatever of it is known.
fn input_line(i: &reelay_protocol::InputView) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(name) = &i.name {
        parts.push(clean(name));
    }
    if let Some(d) = i.duration_seconds {
        parts.push(format!("{d:.1} s"));
    }
    if let (Some(w), Some(h)) = (i.width, i.height) {
        parts.push(format!("{w}x{h}"));
    }
    let codecs: Vec<String> = [&i.video_codec, &i.audio_codec]
        .into_iter()
        .flatten()
        .map(|c| clean(c))
        .collect();
    if !codecs.is_empty() {
        parts.push(codecs.join("/"));
    }
    if let Some(size) = i.size {
        parts.push(human_bytes(size));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// PSNR, SSIM and bitrate of one encode, as the receipts line shows them.
fn quality(q: &reelay_protocol::QualityReceipt) -> String {
    let psnr = q
        .psnr_db
        .map_or("PSNR inf".to_string(), |p| format!("PSNR {p:.2} dB"));
    let mut s = format!("{psnr}, SSIM {:.4}", q.ssim);
    if let Some(b) = q.bitrate_kbps {
        s.push_str(&format!(", {b:.0} kbit/s"));
    }
    s
}

fn receipt(o: &reelay_protocol::OutputView) -> Option<String> {
    let mut parts = vec![];
    if let Some(q) = &o.quality {
        parts.push(quality(q));
    }
    // A ladder's receipts, one per rung, largest picture first.
    for r in &o.rungs {
        parts.push(format!("{}x{} {}", r.width, r.height, quality(&r.quality)));
    }
    if let Some(l) = &o.loudness {
        let lufs = |v: Option<f64>| v.map_or("silent".to_string(), |v| format!("{v:.1} LUFS"));
        let mut s = match l.target_lufs {
            Some(t) => format!(
                "loudness {} -> target {t:.1}",
                lufs(l.input.integrated_lufs)
            ),
            None => format!("loudness {}", lufs(l.input.integrated_lufs)),
        };
        if let Some(after) = &l.output {
            s.push_str(&format!(", measured {}", lufs(after.integrated_lufs)));
            if let Some(tp) = after.true_peak_dbtp {
                s.push_str(&format!(" / {tp:.1} dBTP"));
            }
        }
        parts.push(s);
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_shows_everything_people_need() {
        let view: JobView = serde_json::from_value(serde_json::json!({
            "id": "aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2", "cluster": "aws", "status": "succeeded",
            "progress": 1.0, "attempts": 1, "created_at": "2024-11-26T08:23:00Z",
            "started_at": "2024-11-26T08:23:01Z", "finished_at": "2024-11-26T08:24:06Z",
            "error": null,
            "outputs": [{"name": "mp4-720p", "url": "/v1/jobs/aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2/outputs/mp4-720p.mp4",
                         "size": 12900000, "content_type": "video/mp4"}]
        }))
        .unwrap();
        let text = summary(&view, |u| format!("http://h{u}"));
        assert_eq!(
            text,
            "id:        aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2\n\
             status:    succeeded (100%)\n\
             attempts:  1\n\
             created:   2024-11-26T08:23:00Z\n\
             started:   2024-11-26T08:23:01Z\n\
             finished:  2024-11-26T08:24:06Z\n\
             took:      1m 05s\n\
             outputs:\n  \
             mp4-720p  12.3 MiB  http://h/v1/jobs/aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2/outputs/mp4-720p.mp4"
        );
    }

    #[test]
    fn summary_shows_the_input_and_metadata() {
        let view: JobView = serde_json::from_value(serde_json::json!({
            "id": "aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2", "cluster": "aws", "status": "queued",
            "progress": 0.0, "attempts": 0, "created_at": "2024-11-26T08:23:00Z",
            "started_at": null, "finished_at": null, "error": null, "outputs": [],
            "metadata": {"order_id": "A-1", "tenant": "acme"},
            "input": {"name": "clip.mp4", "size": 3100000, "duration_seconds": 12.46,
                      "width": 1080, "height": 1920, "video_codec": "h264", "audio_codec": "aac"}
        }))
        .unwrap();
        let text = summary(&view, |u| u.to_string());
        assert!(
            text.contains("input:     clip.mp4, 12.5 s, 1080x1920, h264/aac, 3.0 MiB\n"),
            "{text}"
        );
        assert!(
            text.contains("metadata:  order_id=A-1 tenant=acme"),
            "{text}"
        );
        // Not probed yet: only the name.
        let mut fresh = view.clone();
        fresh.input = Some(reelay_protocol::InputView {
            name: Some("clip.mp4".into()),
            ..Default::default()
        });
        fresh.metadata.clear();
        let text = summary(&fresh, |u| u.to_string());
        assert!(text.trim_end().ends_with("input:     clip.mp4"), "{text}");
        assert!(!text.contains("metadata:"), "{text}");
    }

    #[test]
    fn summary_shows_receipts() {
        let view: JobView = serde_json::from_value(serde_json::json!({
            "id": "aws.01J", "cluster": "aws", "status": "succeeded",
            "progress": 1.0, "attempts": 1, "created_at": "2024-11-26T08:23:00Z",
            "started_at": null, "finished_at": null, "error": null,
            "outputs": [
                {"name": "a.mp4", "url": "/v1/jobs/aws.01J/outputs/a.mp4", "size": 10, "content_type": "video/mp4",
                 "quality": {"psnr_db": 41.234, "ssim": 0.98123, "frames": 75, "bitrate_kbps": 812.4},
                 "loudness": {"mode": "normalize", "target_lufs": -23.0,
                              "input": {"integrated_lufs": -15.9, "true_peak_dbtp": -2.6, "range_lu": 0.1},
                              "output": {"integrated_lufs": -23.04, "true_peak_dbtp": -9.7, "range_lu": 0.1}}},
                {"name": "b.m4a", "url": "/v1/jobs/aws.01J/outputs/b.m4a", "size": 10, "content_type": "audio/mp4"},
                {"name": "hls/master.m3u8", "url": "/v1/jobs/aws.01J/outputs/hls/master.m3u8", "size": 10,
                 "content_type": "application/vnd.apple.mpegurl",
                 "rungs": [
                    {"rung": 0, "width": 640, "height": 360,
                     "quality": {"psnr_db": 40.0, "ssim": 0.97, "frames": 75, "bitrate_kbps": 700.0}},
                    {"rung": 1, "width": 426, "height": 240,
                     "quality": {"psnr_db": 38.5, "ssim": 0.96, "frames": 75, "bitrate_kbps": 350.0}}
                 ]}
            ]
        }))
        .unwrap();
        let text = summary(&view, str::to_string);
        assert!(
            text.contains(
                "  a.mp4            PSNR 41.23 dB, SSIM 0.9812, 812 kbit/s, loudness -15.9 LUFS -> target -23.0, measured -23.0 LUFS / -9.7 dBTP\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "  hls/master.m3u8  640x360 PSNR 40.00 dB, SSIM 0.9700, 700 kbit/s, 426x240 PSNR 38.50 dB, SSIM 0.9600, 350 kbit/s"
            ),
            "{text}"
        );
        assert!(!text.contains("b.m4a  PSNR"), "{text}");
    }

    #[test]
    fn summary_shows_errors() {
        let view: JobView = serde_json::from_value(serde_json::json!({
            "id": "aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2", "cluster": "aws", "status": "failed",
            "progress": 0.42, "attempts": 3, "created_at": "2024-11-26T08:23:00Z",
            "started_at": null, "finished_at": null,
            "error": {"code": "unsupported_format", "message": "no video\nstream"}, "outputs": []
        }))
        .unwrap();
        let text = summary(&view, str::to_string);
        assert!(text.contains("status:    failed (42%)"), "{text}");
        assert!(
            text.contains("error:     unsupported_format: no video\\nstream"),
            "{text}"
        );
        assert!(!text.contains("outputs"));
    }

    #[test]
    fn summary_says_whether_the_job_was_split_and_when_it_became_playable() {
        let mut view: JobView = serde_json::from_value(serde_json::json!({
            "id": "aws.01J", "cluster": "aws", "status": "running",
            "progress": 0.5, "attempts": 1, "created_at": "2024-11-26T08:23:00Z",
            "started_at": null, "finished_at": null, "error": null, "outputs": [],
            "playable_at": "2024-11-26T08:23:09Z",
            "split": {"applied": true, "segment_seconds": 32, "ranges": 4}
        }))
        .unwrap();
        let text = summary(&view, str::to_string);
        assert!(
            text.contains("split:     yes, 4 ranges of up to 32 s"),
            "{text}"
        );
        assert!(text.contains("playable:  2024-11-26T08:23:09Z"), "{text}");
        view.playable_at = None;
        view.split = serde_json::from_value(serde_json::json!({
            "applied": false, "reason": "input_not_uploaded",
            "message": "only inputs uploaded with the submission (multipart) are split"
        }))
        .unwrap();
        let text = summary(&view, str::to_string);
        assert!(
            text.contains("split:     no (input_not_uploaded): only inputs uploaded"),
            "{text}"
        );
        assert!(!text.contains("playable"), "{text}");
    }

    #[test]
    fn summary_lists_the_tasks() {
        let view: JobView = serde_json::from_value(serde_json::json!({
            "id": "aws.01J", "cluster": "aws", "status": "running",
            "progress": 0.5, "attempts": 2, "created_at": "2024-11-26T08:23:00Z",
            "started_at": null, "finished_at": null, "error": null, "outputs": [],
            "tasks": [
                {"id": "aws.01J.split", "kind": "split", "status": "succeeded",
                 "progress": 1.0, "attempts": 1},
                {"id": "aws.01J.seg0", "kind": "encode_segment", "status": "running",
                 "progress": 0.25, "attempts": 2},
                {"id": "aws.01J.stitch", "kind": "stitch", "status": "blocked",
                 "progress": 0.0, "attempts": 0}
            ]
        }))
        .unwrap();
        let text = summary(&view, str::to_string);
        assert!(
            text.ends_with(
                "tasks:\n  \
                 split                  succeeded  100%  attempts 1\n  \
                 seg0 (encode_segment)  running    25%   attempts 2\n  \
                 stitch                 blocked    0%    attempts 0"
            ),
            "{text}"
        );
    }
}
