//! `reelay submit --caption … --watermark …` end to end: the real binary submits a clip with a
//! caption file and a watermark image to a real `reelay serve` (real ffmpeg), and the outputs
//! are checked as a user would: the WebVTT sidecar carries the cue text, the MP4's picture
//! carries the mark where it was asked for. A missing side file fails before any request.

use reelay_protocol::{JobList, JobStatus, JobView};
use std::path::Path;
use std::process::Command;

#[path = "common/mod.rs"]
mod common;

use common::{black_clip, ffmpeg, free_port, http, reelay, Server, BIN};

fn serve(data: &Path) -> Server {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(data)
    .args(["--workers", "1"])
    .env("RUST_LOG", "warn");
    Server::spawn(cmd, port)
}

/// The first frame of a media file as 8-bit luma (`w` x `h` known).
fn first_frame_luma(file: &Path, w: usize, h: usize) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), w * h);
    out.stdout
}

fn get(url: &str) -> Vec<u8> {
    let r = http().get(url).send().unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.bytes().unwrap().to_vec()
}

#[test]
fn submit_sends_caption_files_and_a_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let input = black_clip(dir.path(), "black.mp4", "320x240", 2);
    let srt = dir.path().join("en.srt");
    std::fs::write(
        &srt,
        "1\n00:00:00,000 --> 00:00:01,500\nHello from the command line\n",
    )
    .unwrap();
    let logo = dir.path().join("logo.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=white:size=80x40",
        "-frames:v",
        "1",
        logo.to_str().unwrap(),
    ]);
    let s = serve(&dir.path().join("data"));

    let out = reelay(
        &s.base,
        None,
        &[
            "submit",
            input.to_str().unwrap(),
            "--preset",
            "mp4-360p",
            "--caption",
            &format!("{},lang=en,label=English", srt.display()),
            "--watermark",
            logo.to_str().unwrap(),
            "--watermark-position",
            "top-left",
            "--watermark-scale",
            "0.25",
            "--watermark-margin",
            "0.05",
            "--watermark-opacity",
            "1",
            "--wait",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "submit: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let j: JobView = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
    // Side files keep a job whole; the view says so.
    let split = j.split.as_ref().expect("split decision");
    assert_eq!(split.reason.as_deref(), Some("side_files"), "{split:?}");

    // The caption file became the WebVTT sidecar with its cue.
    let vtt = j
        .outputs
        .iter()
        .find(|o| o.name.starts_with("captions/") && o.name.ends_with(".vtt"))
        .unwrap_or_else(|| panic!("no caption sidecar in {:?}", j.outputs));
    assert_eq!(vtt.name, "captions/0-en.vtt");
    let text = String::from_utf8(get(&format!("{}{}", s.base, vtt.url))).unwrap();
    assert!(text.starts_with("WEBVTT"), "{text}");
    assert!(text.contains("Hello from the command line"), "{text}");
    assert!(text.contains("00:00.000 --> 00:01.500"), "{text}");

    // The watermark: 25% of the 320 width (mp4-360p does not upscale) = 80x40, the 5% margin
    // 16 px from the top left.
    let mp4 = j
        .outputs
        .iter()
        .find(|o| o.name == "mp4-360p.mp4")
        .expect("mp4 output");
    let file = dir.path().join("out.mp4");
    std::fs::write(&file, get(&format!("{}{}", s.base, mp4.url))).unwrap();
    let (w, h) = (320usize, 240usize);
    let px = first_frame_luma(&file, w, h);
    let (bx, by, bw, bh) = (16usize, 16usize, 80usize, 40usize);
    let mut inside = (0u64, 0u64);
    let mut outside_max = 0u8;
    for y in 0..h {
        for x in 0..w {
            let v = px[y * w + x];
            if x > bx + 1 && x + 2 < bx + bw && y > by + 1 && y + 2 < by + bh {
                inside = (inside.0 + u64::from(v), inside.1 + 1);
            } else if x + 3 < bx || x > bx + bw + 3 || y + 3 < by || y > by + bh + 3 {
                outside_max = outside_max.max(v);
            }
        }
    }
    let mean = inside.0 as f64 / inside.1 as f64;
    assert!(mean > 200.0, "no mark at the top left: mean luma {mean}");
    assert!(
        outside_max < 60,
        "bright pixel {outside_max} outside the mark"
    );
}

#[test]
fn a_missing_side_file_fails_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let input = black_clip(dir.path(), "black.mp4", "320x240", 2);
    let missing = dir.path().join("missing.srt");
    let s = serve(&dir.path().join("data"));
    for (flag, what) in [
        ("--caption", "caption file"),
        ("--watermark", "watermark image"),
    ] {
        // Against a live server: refused, and no job exists.
        let out = reelay(
            &s.base,
            None,
            &[
                "submit",
                input.to_str().unwrap(),
                "--preset",
                "mp4-360p",
                flag,
                missing.to_str().unwrap(),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(what) && err.contains("missing.srt"), "{err}");
        // Against no server at all: the same answer, so no connection was tried first.
        let out = reelay(
            "http://127.0.0.1:9",
            None,
            &[
                "submit",
                input.to_str().unwrap(),
                "--preset",
                "mp4-360p",
                flag,
                missing.to_str().unwrap(),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(what) && !err.contains("connect"), "{err}");
    }
    let list: JobList = http()
        .get(format!("{}/v1/jobs", s.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(list.jobs.is_empty(), "{:?}", list.jobs);
}
