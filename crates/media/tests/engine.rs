//! Real ffprobe/ffmpeg on tiny generated clips: every preset's output is probed as a user would.

use reelay_media::*;
use reelay_protocol::OutputSpec;
use std::path::{Path, PathBuf};
use std::process::Command;

fn gen(dir: &Path, name: &str, lavfi_args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(lavfi_args)
        .arg(&out)
        .status()
        .expect("ffmpeg must be installed (make test installs it)");
    assert!(st.success(), "generating {name} failed");
    out
}

/// 1 s 320x240 with a 440 Hz tone.
fn clip(dir: &Path) -> PathBuf {
    gen(
        dir,
        "clip.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=1",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ],
    )
}

fn ffprobe(path: &Path) -> MediaInfo {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {path:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    probe::parse_probe_json(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

async fn encode(preset: &str, input: &Path, out_dir: &Path) -> (Invocation, Vec<Progress>) {
    let tools = Tools::default();
    let policy = InputPolicy::default();
    let info = probe(input, &tools, &policy).await.unwrap();
    let r = resolve_outputs(&[OutputSpec::preset(preset)])
        .unwrap()
        .remove(0);
    let inv = build(&r, &info, &policy, input, out_dir).unwrap();
    let mut seen = vec![];
    let limits = RunLimits {
        stall_timeout: std::time::Duration::from_secs(30),
        time_limit: std::time::Duration::from_secs(120),
        max_out_time: None,
    };
    run_ffmpeg(
        &tools,
        &inv.args,
        out_dir,
        limits,
        &CancellationToken::new(),
        |p| seen.push(p),
    )
    .await
    .unwrap_or_else(|e| panic!("{preset}: {e}"));
    (inv, seen)
}

#[tokio::test]
async fn every_single_file_preset_produces_what_it_promises() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for (preset, vcodec, acodec) in [
        ("mp4-1080p", Some("h264"), Some("aac")),
        ("mp4-720p", Some("h264"), Some("aac")),
        ("mp4-480p", Some("h264"), Some("aac")),
        ("mp4-360p", Some("h264"), Some("aac")),
        ("webm-vp9-720p", Some("vp9"), Some("opus")),
        ("av1-720p", Some("av1"), Some("aac")),
        ("audio-aac", None, Some("aac")),
        ("thumbnail", Some("mjpeg"), None),
    ] {
        let (inv, progress) = encode(preset, &input, &out).await;
        let info = ffprobe(&out.join(&inv.creates));
        assert_eq!(info.video().map(|v| v.codec.as_str()), vcodec, "{preset}");
        assert_eq!(info.audio().map(|a| a.codec.as_str()), acodec, "{preset}");
        if let Some(v) = info.video() {
            // Never upscaled: the 320x240 input stays 320x240.
            assert_eq!((v.width, v.height), (Some(320), Some(240)), "{preset}");
            if preset != "thumbnail" {
                assert_eq!(v.pix_fmt.as_deref(), Some("yuv420p"), "{preset}");
            }
        }
        if preset != "thumbnail" {
            let d = info.best_duration().unwrap();
            assert!((d - 1.0).abs() <= 0.2, "{preset}: duration {d}");
            assert!(
                progress.last().is_some_and(|p| p.done),
                "{preset}: no final progress"
            );
        }
    }
}

#[tokio::test]
async fn hls_ladder_is_aligned_and_has_a_complete_master() {
    let dir = tempfile::tempdir().unwrap();
    let input = gen(
        dir.path(),
        "in480.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=854x480:rate=25:duration=2",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ],
    );
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    encode("hls-abr", &input, &out).await;
    let master = std::fs::read_to_string(out.join("hls-abr/master.m3u8")).unwrap();
    let infs: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF"))
        .collect();
    assert_eq!(infs.len(), 2, "{master}");
    for (l, res) in infs.iter().zip(["854x480", "640x360"]) {
        assert!(
            l.contains("BANDWIDTH=")
                && l.contains(&format!("RESOLUTION={res}"))
                && l.contains("CODECS=\"avc1"),
            "{l}"
        );
    }
    for v in ["v0", "v1"] {
        let media =
            std::fs::read_to_string(out.join("hls-abr").join(v).join("index.m3u8")).unwrap();
        assert!(media.contains("#EXT-X-ENDLIST"));
        let segs: Vec<&str> = media.lines().filter(|l| l.ends_with(".ts")).collect();
        assert!(!segs.is_empty());
        for s in segs {
            let info = ffprobe(&out.join("hls-abr").join(v).join(s));
            assert_eq!(info.video().unwrap().codec, "h264");
        }
    }
}

#[tokio::test]
async fn rotated_and_odd_sized_inputs_come_out_upright_and_even() {
    let dir = tempfile::tempdir().unwrap();
    let odd = gen(
        dir.path(),
        "odd.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=1",
            "-vf",
            "scale=321:241",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv444p",
        ],
    );
    let rotated = dir.path().join("rot.mp4");
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(&odd)
        .args(["-c", "copy", "-metadata:s:v:0", "rotate=90"])
        .arg(&rotated)
        .status()
        .unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (inv, _) = encode("mp4-720p", &odd, &out).await;
    let v = ffprobe(&out.join(&inv.creates)).video().unwrap().clone();
    // Even, and rounded down rather than up: never larger than the input.
    assert_eq!((v.width, v.height), (Some(320), Some(240)));
    assert!(st.success());
    {
        let tools = Tools::default();
        let info = probe(&rotated, &tools, &InputPolicy::default())
            .await
            .unwrap();
        assert_eq!(info.video().unwrap().rotation % 180, 90);
        let (inv, _) = encode("mp4-360p", &rotated, &out).await;
        let v = ffprobe(&out.join(&inv.creates)).video().unwrap().clone();
        assert_eq!(
            (v.width, v.height, v.rotation),
            (Some(240), Some(320), 0),
            "rotation applied to pixels"
        );
    }
}

/// A 1 s H.264 clip of the given stored size (with `rotate`, the phone's rotation metadata).
fn sized_clip(dir: &Path, name: &str, size: &str, rotate: Option<&str>) -> PathBuf {
    let plain = gen(
        dir,
        &format!("plain-{name}"),
        &[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=25:duration=1"),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let Some(rotate) = rotate else {
        return plain;
    };
    let out = dir.join(name);
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(&plain)
        .args(["-c", "copy", "-metadata:s:v:0", &format!("rotate={rotate}")])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    out
}

/// "360p" bounds the short side: a portrait phone clip (stored portrait, or stored landscape
/// with rotation metadata) comes out 360x640, the thumbnail and every HLS rung likewise turned.
#[tokio::test]
async fn portrait_and_rotated_clips_are_bounded_by_their_short_side() {
    let dir = tempfile::tempdir().unwrap();
    let portrait = sized_clip(dir.path(), "portrait.mp4", "720x1280", None);
    let rotated = sized_clip(dir.path(), "rotated.mp4", "1280x720", Some("90"));
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for input in [&portrait, &rotated] {
        for (preset, dims) in [("mp4-360p", (360, 640)), ("thumbnail", (640, 1138))] {
            let (inv, _) = encode(preset, input, &out).await;
            let v = ffprobe(&out.join(&inv.creates)).video().unwrap().clone();
            assert_eq!(v.width.zip(v.height), Some(dims), "{preset} of {input:?}");
            assert_eq!(v.rotation, 0, "{preset} of {input:?}: upright pixels");
        }
    }
    encode("hls-abr", &rotated, &out).await;
    let master = std::fs::read_to_string(out.join("hls-abr/master.m3u8")).unwrap();
    for res in ["720x1280", "480x854", "360x640"] {
        assert!(
            master.contains(&format!("RESOLUTION={res}")),
            "{res}: {master}"
        );
    }
}

#[tokio::test]
async fn hostile_playlists_are_refused_at_probe_without_reading_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-CONTENT").unwrap();
    let hls = dir.path().join("evil.mp4");
    std::fs::write(
        &hls,
        format!(
            "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\n{}\n#EXT-X-ENDLIST\n",
            secret.display()
        ),
    )
    .unwrap();
    let concat = dir.path().join("evil.mov");
    std::fs::write(
        &concat,
        format!("ffconcat version 1.0\nfile {}\n", secret.display()),
    )
    .unwrap();
    for f in [&hls, &concat] {
        let e = probe(f, &Tools::default(), &InputPolicy::default())
            .await
            .unwrap_err();
        assert!(matches!(e, ProbeError::FormatNotAllowed(_)), "{e:?}");
        assert!(!e.to_string().contains("TOP-SECRET"));
    }
    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(
        &garbage,
        (0..5000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(matches!(
        probe(&garbage, &Tools::default(), &InputPolicy::default()).await,
        Err(ProbeError::Unreadable(_))
    ));
}

#[tokio::test]
async fn cancel_and_stall_kill_ffmpeg_promptly() {
    let dir = tempfile::tempdir().unwrap();
    // An endless lavfi source never finishes by itself.
    let args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=10",
        "-f",
        "null",
        "-progress",
        "pipe:1",
        "-nostats",
        "-",
    ]
    .map(String::from)
    .to_vec();
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        c2.cancel();
    });
    let limits = RunLimits {
        stall_timeout: std::time::Duration::from_secs(30),
        time_limit: std::time::Duration::from_secs(30),
        max_out_time: None,
    };
    let t = std::time::Instant::now();
    let r = run_ffmpeg(
        &Tools::default(),
        &args,
        dir.path(),
        limits,
        &cancel,
        |_| {},
    )
    .await;
    assert!(matches!(r, Err(RunError::Cancelled)), "{r:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    let limits = RunLimits {
        stall_timeout: std::time::Duration::from_secs(30),
        time_limit: std::time::Duration::from_millis(800),
        max_out_time: None,
    };
    let r = run_ffmpeg(
        &Tools::default(),
        &args,
        dir.path(),
        limits,
        &CancellationToken::new(),
        |_| {},
    )
    .await;
    assert!(matches!(r, Err(RunError::TimedOut(_))), "{r:?}");
}

/// ffmpeg's `idet` on a whole file: (TFF, BFF, progressive) from its multi-frame counts.
fn idet_counts(path: &Path) -> (u64, u64, u64) {
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "info",
            "-i",
        ])
        .arg(path)
        .args(["-map", "0:v:0", "-vf", "idet", "-an", "-f", "null", "-"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "idet {path:?}: {err}");
    let line = err
        .lines()
        .rev()
        .find(|l| l.contains("Multi frame detection:"))
        .unwrap_or_else(|| panic!("no idet counts for {path:?}: {err}"));
    let n = |label: &str| -> u64 {
        line.split(label)
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (n("TFF:"), n("BFF:"), n("Progressive:"))
}

/// An interlaced clip: `testsrc` (idet reads it as progressive, unlike `testsrc2`) at the field
/// rate, woven into frames by the `interlace` filter, encoded with interlaced coding tools.
fn interlaced(
    dir: &Path,
    name: &str,
    size: &str,
    field_rate: &str,
    tff: bool,
    codec: &[&str],
) -> PathBuf {
    let src = format!("testsrc=size={size}:rate={field_rate}:duration=1");
    let scan = if tff {
        "interlace=scan=tff"
    } else {
        "interlace=scan=bff"
    };
    let mut args = vec!["-f", "lavfi", "-i", src.as_str(), "-vf", scan];
    args.extend_from_slice(codec);
    gen(dir, name, &args)
}

/// Probes (settling an unsure scan with idet, as the worker does), builds and runs one output.
async fn encode_spec(spec: OutputSpec, input: &Path, out_dir: &Path) -> (Invocation, MediaInfo) {
    let tools = Tools::default();
    let policy = InputPolicy::default();
    let mut info = probe(input, &tools, &policy).await.unwrap();
    detect_scan(&mut info, input, &tools, &policy)
        .await
        .unwrap();
    let r = resolve_outputs(&[spec]).unwrap().remove(0);
    let inv = build(&r, &info, &policy, input, out_dir).unwrap();
    let limits = RunLimits {
        stall_timeout: std::time::Duration::from_secs(30),
        time_limit: std::time::Duration::from_secs(120),
        max_out_time: None,
    };
    run_ffmpeg(
        &tools,
        &inv.args,
        out_dir,
        limits,
        &CancellationToken::new(),
        |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{input:?}: {e}"));
    (inv, info)
}

fn h264_at(height: u32) -> OutputSpec {
    serde_json::from_value(serde_json::json!({
        "name": format!("p{height}"), "container": "mp4",
        "video": {"codec": "h264", "height": height}, "audio": {"codec": "aac"}
    }))
    .unwrap()
}

/// Broadcast and camcorder material (576i TFF MPEG-2 in TS, 480i BFF H.264 in TS, 1080i TFF
/// H.264 in TS, and 576i BFF MPEG-4 in AVI whose probe says nothing of its scan) comes out
/// progressive by idet, at the source frame rate. Outputs keep the input height: idet cannot
/// see combing through a downscale, so this is where the comb would show.
#[tokio::test]
async fn interlaced_inputs_come_out_progressive() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let ildct = ["-flags", "+ilme+ildct"];
    let cases: Vec<(PathBuf, FieldOrder, FieldOrder, u32)> = vec![
        (
            interlaced(
                dir.path(),
                "sd_tff.ts",
                "720x576",
                "50",
                true,
                &[
                    &ildct[..],
                    &[
                        "-c:v",
                        "mpeg2video",
                        "-q:v",
                        "3",
                        "-top",
                        "1",
                        "-f",
                        "mpegts",
                    ],
                ]
                .concat(),
            ),
            FieldOrder::Tff,
            FieldOrder::Tff,
            576,
        ),
        (
            interlaced(
                dir.path(),
                "sd_bff.ts",
                "720x480",
                "60000/1001",
                false,
                &[
                    &ildct[..],
                    &[
                        "-c:v",
                        "libx264",
                        "-preset",
                        "ultrafast",
                        "-top",
                        "0",
                        "-x264-params",
                        "bff=1",
                        "-f",
                        "mpegts",
                    ],
                ]
                .concat(),
            ),
            FieldOrder::Bff,
            FieldOrder::Bff,
            480,
        ),
        (
            interlaced(
                dir.path(),
                "hd_tff.ts",
                "1920x1080",
                "50",
                true,
                &[
                    &ildct[..],
                    &[
                        "-c:v",
                        "libx264",
                        "-preset",
                        "ultrafast",
                        "-top",
                        "1",
                        "-f",
                        "mpegts",
                    ],
                ]
                .concat(),
            ),
            FieldOrder::Tff,
            FieldOrder::Tff,
            1080,
        ),
        (
            interlaced(
                dir.path(),
                "sd_bff.avi",
                "720x576",
                "50",
                false,
                &["-c:v", "mpeg4", "-q:v", "3", "-f", "avi"],
            ),
            FieldOrder::Unknown,
            FieldOrder::Bff,
            576,
        ),
    ];
    for (input, probed, settled, height) in cases {
        let plain = probe(&input, &Tools::default(), &InputPolicy::default())
            .await
            .unwrap();
        assert_eq!(
            plain.video().unwrap().field_order,
            probed,
            "{input:?}: probe"
        );
        let (inv, info) = encode_spec(h264_at(height), &input, &out).await;
        assert_eq!(
            info.video().unwrap().field_order,
            settled,
            "{input:?}: after idet"
        );
        assert!(
            inv.args
                .iter()
                .any(|a| a.starts_with("bwdif=mode=send_frame")),
            "{inv:?}"
        );
        let file = out.join(&inv.creates);
        let (t, b, p) = idet_counts(&file);
        assert!(
            p >= 10 && p > 2 * (t + b),
            "{input:?}: output idet TFF {t} BFF {b} progressive {p}"
        );
        let o = ffprobe(&file);
        let v = o.video().unwrap();
        assert_eq!(v.height, Some(height), "{input:?}");
        let (fin, fout) = (
            info.video().unwrap().frame_rate.unwrap(),
            v.frame_rate.unwrap(),
        );
        assert!(
            (fin - fout).abs() < 0.05,
            "{input:?}: {fin} fps in, {fout} out"
        );
    }
}

/// Progressive input is left alone, whether the probe says so (H.264 in MP4) or idet finds it
/// (Motion JPEG in AVI, whose probe says nothing), and comes out progressive.
#[tokio::test]
async fn progressive_input_is_not_deinterlaced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let src = "testsrc=size=720x576:rate=25:duration=1";
    let mp4 = gen(
        dir.path(),
        "p.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            src,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    let avi = gen(
        dir.path(),
        "p.avi",
        &["-f", "lavfi", "-i", src, "-c:v", "mjpeg", "-q:v", "2"],
    );
    for input in [mp4, avi] {
        let (inv, info) = encode_spec(h264_at(576), &input, &out).await;
        assert_eq!(
            info.video().unwrap().field_order,
            FieldOrder::Progressive,
            "{input:?}"
        );
        assert!(
            !inv.args
                .iter()
                .any(|a| a.contains("bwdif") || a.contains("yadif")),
            "{inv:?}"
        );
        let (t, b, p) = idet_counts(&out.join(&inv.creates));
        assert!(
            p >= 10 && p > 2 * (t + b),
            "{input:?}: TFF {t} BFF {b} progressive {p}"
        );
    }
}

/// The HLS ladder deinterlaces once, before its split: the full-height rung of a 480i BFF
/// source is progressive by idet.
#[tokio::test]
async fn interlaced_input_gives_a_progressive_hls_ladder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let input = interlaced(
        dir.path(),
        "sd_bff.ts",
        "720x480",
        "60000/1001",
        false,
        &[
            "-flags",
            "+ilme+ildct",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-top",
            "0",
            "-x264-params",
            "bff=1",
            "-f",
            "mpegts",
        ],
    );
    let (inv, info) = encode_spec(OutputSpec::preset("hls-abr"), &input, &out).await;
    assert_eq!(info.video().unwrap().field_order, FieldOrder::Bff);
    assert!(
        inv.args
            .iter()
            .any(|a| a.contains("bwdif=mode=send_frame:parity=bff")),
        "{inv:?}"
    );
    let rung = out.join("hls-abr/v0/seg_00000.ts");
    assert_eq!(ffprobe(&rung).video().unwrap().height, Some(480));
    let (t, b, p) = idet_counts(&rung);
    assert!(
        p >= 10 && p > 2 * (t + b),
        "480 rung: TFF {t} BFF {b} progressive {p}"
    );
}
