//! An interlaced upload through the whole cluster (API, worker, ffmpeg): the probe says nothing
//! of the scan of MPEG-4 in AVI, so the worker must look at the frames (idet) before encoding;
//! the MP4 it makes must be progressive by ffmpeg's own idet.

mod common;

use common::{ffmpeg, TestServer};
use std::process::Command;

#[tokio::test]
async fn an_interlaced_upload_whose_probe_is_unsure_comes_out_progressive() {
    let s = TestServer::start().await;
    let input = s.dir.path().join("camcorder.avi");
    let input_s = input.to_str().unwrap().to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=720x576:rate=50:duration=1",
        "-vf",
        "interlace=scan=bff",
        "-c:v",
        "mpeg4",
        "-q:v",
        "3",
        "-f",
        "avi",
        &input_s,
    ]);
    let spec =
        r#"{"outputs":[{"name":"sd","container":"mp4","video":{"codec":"h264","height":576}}]}"#;
    let job = s.succeeded(&input, spec).await;
    let (status, bytes) = s
        .get_bytes(&format!("/v1/jobs/{}/outputs/sd.mp4", job.id))
        .await;
    assert_eq!(status, 200);
    let out = s.dir.path().join("sd.mp4");
    std::fs::write(&out, bytes).unwrap();
    let idet = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "info",
            "-i",
        ])
        .arg(&out)
        .args(["-vf", "idet", "-an", "-f", "null", "-"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&idet.stderr);
    let verdict = reelay_media::probe::scan_from_idet(&err);
    let line = err
        .lines()
        .find(|l| l.contains("Multi frame detection"))
        .unwrap_or("");
    assert_eq!(
        verdict,
        Some(reelay_media::FieldOrder::Progressive),
        "output is not progressive: {line}"
    );
    let counts: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // TFF, BFF, progressive, undetermined: mostly progressive, not merely undetermined.
    assert!(counts.len() == 4 && counts[2] >= 10, "{line}");
}
