//! Loudness correction and quality receipts through the API, checked as a user would: jobs over
//! real HTTP (real ffmpeg, SQLite, local storage), outputs downloaded and measured again with
//! ffmpeg's own `ebur128` meter (not the `loudnorm` reelay used), receipts read from the job view
//! and the Prometheus histograms from /metrics.

mod common;

use common::*;
use reelay_protocol::{JobView, LoudnessAction, OutputView, QualityMethod};
use std::path::{Path, PathBuf};
use std::process::Command;

async fn download(s: &TestServer, o: &OutputView, dir: &Path) -> PathBuf {
    let (status, bytes) = s.get_bytes(&o.url).await;
    assert_eq!(status, 200, "{}", o.url);
    let path = dir.join(&o.name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn output<'a>(j: &'a JobView, name: &str) -> &'a OutputView {
    j.outputs
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no output {name} in {j:?}"))
}

const SPEC: &str = r#"{"outputs":[
    {"name":"norm","container":"mp4","video":{"codec":"h264","height":120},"audio":{"codec":"aac","loudness":"ebu-r128"}},
    {"name":"loud14","container":"webm","video":{"codec":"vp9","height":120},"audio":{"codec":"opus","loudness":"streaming"}},
    {"name":"meas","container":"m4a","audio":{"codec":"aac","loudness":"measure"}}
]}"#;

#[tokio::test]
async fn loud_and_quiet_inputs_come_out_at_the_target_and_measure_changes_nothing() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let loud = clip_with_audio(
        dir.path(),
        "loud.mp4",
        "160x120",
        6,
        "anoisesrc=color=pink:amplitude=0.9:duration=6",
    );
    let quiet = clip_with_audio(
        dir.path(),
        "quiet.mp4",
        "160x120",
        6,
        "sine=frequency=440:duration=6,volume=-42dB",
    );
    let (loud_in, quiet_in) = (integrated_lufs(&loud), integrated_lufs(&quiet));
    assert!(loud_in > -16.0 && quiet_in < -40.0, "{loud_in} {quiet_in}");

    for (input, before) in [(&loud, loud_in), (&quiet, quiet_in)] {
        let j = s.succeeded(input, SPEC).await;
        for (name, target) in [("norm.mp4", -23.0), ("loud14.webm", -14.0)] {
            let o = output(&j, name);
            let file = download(&s, o, dir.path()).await;
            let got = integrated_lufs(&file);
            assert!(
                (got - target).abs() <= 1.0,
                "{name} from {before:.1} LUFS came out at {got:.1}, target {target}"
            );
            let r = o.loudness.expect("loudness receipt");
            assert_eq!(r.mode, LoudnessAction::Normalize);
            assert_eq!(r.target_lufs, Some(target));
            let rin = r.input.integrated_lufs.unwrap();
            assert!((rin - before).abs() <= 1.0, "{rin} vs {before}");
            assert!(r.input.true_peak_dbtp.is_some() && r.input.range_lu.is_some());
            let rout = r.output.expect("measured after").integrated_lufs.unwrap();
            assert!((rout - got).abs() <= 1.0, "{rout} vs {got}");
            assert!(r.output.unwrap().true_peak_dbtp.unwrap() <= -0.5);
        }
        // Measure only: reported, not changed.
        let o = output(&j, "meas.m4a");
        let file = download(&s, o, dir.path()).await;
        let got = integrated_lufs(&file);
        assert!(
            (got - before).abs() <= 1.0,
            "measure changed {before} to {got}"
        );
        let r = o.loudness.expect("loudness receipt");
        assert_eq!(r.mode, LoudnessAction::Measure);
        assert_eq!(r.target_lufs, None);
        let rin = r.input.integrated_lufs.unwrap();
        let rout = r.output.unwrap().integrated_lufs.unwrap();
        assert!((rin - rout).abs() <= 1.0, "{rin} -> {rout}");
        // An audio-only file has no quality receipt.
        assert!(o.quality.is_none());
    }
}

#[tokio::test]
async fn bad_loudness_values_are_422_naming_the_field() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), "in.mp4", 64, 64, 1.0, true);
    for (loudness, codec) in [
        (r#""loud""#, "aac"),
        ("-3", "aac"),
        (r#""ebu-r128""#, "copy"),
    ] {
        let spec = format!(
            r#"{{"outputs":[{{"name":"a","container":"mp4","audio":{{"codec":"{codec}","loudness":{loudness}}}}}]}}"#
        );
        let r = s.submit_file(&input, &spec).await;
        assert_eq!(r.status(), 422, "{spec}");
        let body: serde_json::Value = r.json().await.unwrap();
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("outputs[0].audio.loudness"), "{body}");
    }
}

#[tokio::test]
async fn video_files_carry_quality_receipts_unless_turned_off() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), "in.mp4", 320, 240, 3.0, true);
    let spec = r#"{"outputs":[
        {"name":"small","container":"mp4","video":{"codec":"h264","height":120}},
        {"name":"trimmed","container":"mkv","video":{"codec":"h264"},"trim":{"start":1,"duration":1.5}},
        {"name":"vp9","container":"webm","video":{"codec":"vp9","height":120}},
        {"preset":"hls-abr"},
        {"preset":"audio-aac"}
    ]}"#;
    let j = s.succeeded(&input, spec).await;
    // H.264 is measured by the encoder; VP9 (no SSIM from libvpx) by the filters afterwards.
    for (name, method) in [
        ("small.mp4", QualityMethod::Encoder),
        ("trimmed.mkv", QualityMethod::Encoder),
        ("vp9.webm", QualityMethod::Filters),
    ] {
        let q = output(&j, name)
            .quality
            .unwrap_or_else(|| panic!("no receipt on {name}"));
        assert_eq!(q.method, Some(method), "{name}");
    }
    // A 240-line input gets one rung, at its own size.
    let rungs = &output(&j, "hls-abr/master.m3u8").rungs;
    assert_eq!(rungs.len(), 1, "{rungs:?}");
    assert_eq!(
        (rungs[0].width, rungs[0].height, rungs[0].quality.frames),
        (320, 240, 75)
    );
    for name in ["small.mp4", "trimmed.mkv", "vp9.webm"] {
        let o = output(&j, name);
        let q = o.quality.unwrap_or_else(|| panic!("no receipt on {name}"));
        // A clean synthetic source encoded at a sane CRF is well above 30 dB.
        let psnr = q.psnr_db.unwrap();
        assert!(psnr > 30.0 && psnr < 100.0, "{name}: {psnr}");
        assert!(q.ssim > 0.9 && q.ssim <= 1.0, "{name}: {}", q.ssim);
        assert!(q.frames > 0, "{name}");
        // The bitrate is what the downloaded file measures.
        let file = download(&s, o, dir.path()).await;
        let p = ffprobe_bytes(
            &std::fs::read(&file).unwrap(),
            name.rsplit('.').next().unwrap(),
        );
        let kbps = o.size as f64 * 8.0 / p.duration() / 1000.0;
        let got = q.bitrate_kbps.unwrap();
        assert!((got - kbps).abs() / kbps < 0.1, "{name}: {got} vs {kbps}");
        assert!(o.loudness.is_none());
    }
    // The trimmed output is compared with the trimmed part of the source: a misaligned
    // reference would score far lower.
    assert!(output(&j, "trimmed.mkv").quality.unwrap().frames <= 40);
    assert!(j.outputs.iter().all(|o| o.name.ends_with(".mp4")
        || o.name.ends_with(".mkv")
        || o.name.ends_with(".webm")
        || o.quality.is_none()));
    assert!(output(&j, "audio-aac.m4a").rungs.is_empty());

    // The receipts feed the Prometheus histograms.
    let (status, metrics) = s.get_bytes("/metrics").await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("reelay_output_psnr_db_count"), "{metrics}");
    assert!(metrics.contains("reelay_output_ssim_count"));

    // Turned off: no receipt.
    let off = r#"{"quality_report":false,"outputs":[{"name":"small","container":"mp4","video":{"codec":"h264","height":120}}]}"#;
    let j = s.succeeded(&input, off).await;
    assert!(output(&j, "small.mp4").quality.is_none(), "{j:?}");
    let off = r#"{"quality_report":false,"outputs":[{"preset":"hls-abr"}]}"#;
    let j = s.succeeded(&input, off).await;
    assert!(output(&j, "hls-abr/master.m3u8").rungs.is_empty(), "{j:?}");

    // Longer than the configured bound: off unless asked.
    let s = TestServer::start_with(|c| c.quality_report_max_seconds = 1.0).await;
    let one =
        r#"{"outputs":[{"name":"small","container":"mp4","video":{"codec":"h264","height":120}}]}"#;
    let j = s.succeeded(&input, one).await;
    assert!(output(&j, "small.mp4").quality.is_none());
    let asked = r#"{"quality_report":true,"outputs":[{"name":"small","container":"mp4","video":{"codec":"h264","height":120}}]}"#;
    let j = s.succeeded(&input, asked).await;
    assert!(output(&j, "small.mp4").quality.is_some());
}

/// Streaming ladders (HLS and DASH) carry one receipt per rung on their manifest, in the
/// ladder's order (largest first, the `v<rung>` directories): a swapped mapping would give a
/// small rung a big rung's bitrate and size.
#[tokio::test]
async fn every_rung_of_a_ladder_carries_its_receipt() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), "in.mp4", 854, 480, 2.0, true);
    let j = s
        .succeeded(
            &input,
            r#"{"outputs":[{"preset":"hls-abr"},{"preset":"dash"}]}"#,
        )
        .await;
    for manifest in ["hls-abr/master.m3u8", "dash/manifest.mpd"] {
        let o = output(&j, manifest);
        assert!(o.quality.is_none());
        let rungs = &o.rungs;
        let sizes: Vec<(u32, u32)> = rungs.iter().map(|g| (g.width, g.height)).collect();
        assert_eq!(sizes, vec![(854, 480), (640, 360)], "{manifest}: {rungs:?}");
        for (k, g) in rungs.iter().enumerate() {
            assert_eq!(g.rung as usize, k);
            assert_eq!(g.quality.frames, 50, "{manifest}: {g:?}");
            assert_eq!(g.quality.method, Some(QualityMethod::Encoder));
            let p = g.quality.psnr_db.unwrap();
            assert!(p > 30.0 && p < 100.0 && g.quality.ssim > 0.9, "{g:?}");
        }
        // 1400 kbit/s and 800 kbit/s targets: the bigger rung spends more.
        let kbps: Vec<f64> = rungs
            .iter()
            .map(|g| g.quality.bitrate_kbps.unwrap())
            .collect();
        assert!(kbps[0] > kbps[1], "{manifest}: {kbps:?}");
    }
    let (status, metrics) = s.get_bytes("/metrics").await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(r#"reelay_output_ssim_count{container="dash"}"#),
        "{metrics}"
    );
}

/// The encoder's own PSNR/SSIM (libx264, during the encode) agree with ffmpeg's filters run on
/// the downloaded output against the source, the way the filter fallback measures.
///
/// Tolerance: 0.1 dB PSNR, 0.005 SSIM. Both compare the same frames: the encoder's input is the
/// source through the same bicubic scale the filters rebuild, and its reconstruction is what a
/// decoder returns. What differs is small and systematic: x264 rounds its global PSNR to 3
/// decimals, and its SSIM leaves out the picture's edge pixels, which the filter includes
/// (vf_ssim is a port of x264's SSIM). Measured here: PSNR within 0.03 dB; SSIM 0.0008 apart at
/// CRF 23 and 0.0023 at CRF 35, where the edges are coded worst. A receipt read from the other
/// encoder or against a misaligned reference is off by whole dB (the two outputs here differ by
/// more than 2 dB).
#[tokio::test]
async fn in_encode_receipts_agree_with_the_filters() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), "in.mp4", 320, 240, 3.0, true);
    let spec = r#"{"outputs":[
        {"name":"small","container":"mp4","video":{"codec":"h264","height":120}},
        {"name":"full","container":"mkv","video":{"codec":"h264","crf":35}}
    ]}"#;
    let j = s.succeeded(&input, spec).await;
    for name in ["small.mp4", "full.mkv"] {
        let o = output(&j, name);
        let q = o.quality.unwrap();
        assert_eq!(q.method, Some(QualityMethod::Encoder), "{name}");
        let file = download(&s, o, dir.path()).await;
        let (psnr, ssim) = quality_against(&file, &input);
        let got = q.psnr_db.unwrap();
        assert!(
            (psnr - got).abs() <= 0.1,
            "{name}: encoder {got} dB, filters {psnr} dB"
        );
        assert!(
            (ssim - q.ssim).abs() <= 0.005,
            "{name}: encoder {}, filters {ssim}",
            q.ssim
        );
        assert_eq!(q.frames, 75, "{name}");
    }
    // The two outputs' receipts are not each other's: CRF 35 is far worse than CRF 23.
    let (a, b) = (
        output(&j, "small.mp4").quality.unwrap(),
        output(&j, "full.mkv").quality.unwrap(),
    );
    assert!(a.psnr_db.unwrap() > b.psnr_db.unwrap() + 2.0, "{a:?} {b:?}");
}

/// The files of a downloaded rung concatenated (init segment first), and the frames ffprobe
/// counts in its video stream.
async fn rung_frames(s: &TestServer, base: &str, files: &[String]) -> u64 {
    let mut bytes = vec![];
    for f in files {
        let (status, b) = s.get_bytes(&format!("{base}{f}")).await;
        assert_eq!(status, 200, "{base}{f}");
        bytes.extend(b);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rung.mp4");
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// H.265 and AV1 ladders, whose encoders report no quality, get one receipt per rung from the
/// filters: each rung's init segment and fragments read back as one stream and compared with
/// the source scaled to the rung's size. A rung measured against the wrong size or from the
/// wrong files would not come out with its own frame count and a sane PSNR.
#[tokio::test]
async fn hevc_and_av1_ladders_carry_a_filter_receipt_per_rung() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), "in.mp4", 854, 480, 2.0, true);
    let j = s
        .succeeded(
            &input,
            r#"{"outputs":[
                {"name":"hevc","container":"hls-cmaf","video":{"codec":"h265"}},
                {"name":"av1","container":"dash","video":{"codec":"av1"}}
            ]}"#,
        )
        .await;
    for manifest in ["hevc/master.m3u8", "av1/manifest.mpd"] {
        let o = output(&j, manifest);
        let base = o.url.rsplit_once('/').unwrap().0.to_string() + "/";
        // Each rung's files as a player fetches them, independently of the worker's listing.
        let files: Vec<Vec<String>> = if manifest.ends_with(".m3u8") {
            let (_, master) = s.get_bytes(&o.url).await;
            let mut all = vec![];
            for v in reelay_media::manifest::hls_uris(&String::from_utf8(master).unwrap()) {
                let (_, media) = s.get_bytes(&format!("{base}{v}")).await;
                let d = v.rsplit_once('/').unwrap().0;
                all.push(
                    reelay_media::manifest::hls_uris(&String::from_utf8(media).unwrap())
                        .into_iter()
                        .map(|f| format!("{d}/{f}"))
                        .collect(),
                );
            }
            all
        } else {
            let (_, mpd) = s.get_bytes(&o.url).await;
            reelay_media::manifest::mpd_representations(&String::from_utf8(mpd).unwrap())
                .unwrap()
                .into_iter()
                .filter(|r| r.mime_type.starts_with("video/"))
                .map(|r| std::iter::once(r.init).chain(r.media).collect())
                .collect()
        };
        let rungs = &o.rungs;
        let sizes: Vec<(u32, u32)> = rungs.iter().map(|g| (g.width, g.height)).collect();
        assert_eq!(sizes, vec![(854, 480), (640, 360)], "{manifest}: {rungs:?}");
        assert_eq!(files.len(), rungs.len(), "{manifest}");
        for (k, g) in rungs.iter().enumerate() {
            assert_eq!(g.rung as usize, k);
            assert_eq!(g.quality.method, Some(QualityMethod::Filters), "{g:?}");
            let p = g.quality.psnr_db.unwrap();
            assert!(p > 25.0 && p < 100.0, "{manifest}: {g:?}");
            assert!(g.quality.ssim > 0.9 && g.quality.ssim <= 1.0, "{g:?}");
            let counted = rung_frames(&s, &base, &files[k]).await;
            assert_eq!(g.quality.frames, counted, "{manifest}: {g:?}");
            assert_eq!(counted, 50, "{manifest}");
        }
        // DASH rungs are video alone: their size over the duration is the rung's bitrate.
        // An HLS variant muxes its audio in, so it gives none rather than a wrong one.
        if manifest.ends_with(".mpd") {
            let kbps: Vec<f64> = rungs
                .iter()
                .map(|g| g.quality.bitrate_kbps.unwrap())
                .collect();
            assert!(kbps[0] > kbps[1] && kbps[1] > 0.0, "{kbps:?}");
        } else {
            assert!(rungs.iter().all(|g| g.quality.bitrate_kbps.is_none()));
        }
    }
}
