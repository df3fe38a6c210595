//! Loudness and quality measured with real ffmpeg on generated clips: a loud and a quiet input
//! both land within 1 LU of the target after the two passes, and PSNR/SSIM rank a good encode
//! above a bad one.

use reelay_media::analysis::Input;
use reelay_media::loudness::{self, EBU_R128, STREAMING};
use reelay_media::{quality, InputPolicy, Tools};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

fn ffmpeg(args: &[&str]) {
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg must be installed (make test installs it)");
    assert!(st.success(), "ffmpeg {args:?} failed");
}

/// 8 s of pink noise with a tone, at `volume_db`, in an MP4 with AAC.
fn audio_clip(dir: &Path, name: &str, volume_db: i32) -> PathBuf {
    let out = dir.join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "anoisesrc=color=pink:duration=8:amplitude=0.5:seed=7",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=330:duration=8",
        "-filter_complex",
        &format!("[0][1]amix=inputs=2,volume={volume_db}dB"),
        "-c:a",
        "aac",
        "-b:a",
        "160k",
        out.to_str().unwrap(),
    ]);
    out
}

fn input(path: &Path) -> Input<'_> {
    Input {
        path,
        demuxer: "mov",
    }
}

#[tokio::test]
async fn two_pass_normalisation_hits_the_target_on_loud_and_quiet_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (tools, policy) = (Tools::default(), InputPolicy::default());
    for (name, volume, target) in [
        ("loud.mp4", 6, EBU_R128),
        ("quiet.mp4", -30, STREAMING),
        ("quiet2.mp4", -30, EBU_R128),
    ] {
        let src = audio_clip(dir.path(), name, volume);
        let before = loudness::measure(&tools, &policy, input(&src), 0, T)
            .await
            .unwrap();
        let i = before.integrated_lufs.unwrap();
        assert!(
            (i - target.integrated).abs() > 3.0,
            "{name}: the input must start far from the target ({i} LUFS)"
        );
        let filter = loudness::normalize_filter(target, &before, 48000).unwrap();
        let out = dir.path().join(format!("norm-{name}"));
        ffmpeg(&[
            "-i",
            src.to_str().unwrap(),
            "-af",
            &filter,
            "-c:a",
            "aac",
            "-b:a",
            "160k",
            out.to_str().unwrap(),
        ]);
        let after = loudness::measure(&tools, &policy, input(&out), 0, T)
            .await
            .unwrap();
        let got = after.integrated_lufs.unwrap();
        assert!(
            (got - target.integrated).abs() <= 1.0,
            "{name}: {i:.1} LUFS became {got:.1}, target {}",
            target.integrated
        );
        let tp = after.true_peak_dbtp.unwrap();
        assert!(
            tp <= target.true_peak + 1.0,
            "{name}: true peak {tp:.1} dBTP over the ceiling"
        );
    }
}

#[tokio::test]
async fn quality_ranks_a_good_encode_above_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let (tools, policy) = (Tools::default(), InputPolicy::default());
    let src = dir.path().join("src.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25:duration=2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-qp",
        "0",
        src.to_str().unwrap(),
    ]);
    let encode = |crf: &str, name: &str| {
        let out = dir.path().join(name);
        ffmpeg(&[
            "-i",
            src.to_str().unwrap(),
            "-vf",
            "scale=160:120",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            crf,
            out.to_str().unwrap(),
        ]);
        out
    };
    let good = encode("18", "good.mp4");
    let bad = encode("45", "bad.mp4");
    let measure = |p: PathBuf| {
        let (tools, policy, src) = (tools.clone(), policy.clone(), src.clone());
        async move {
            quality::measure(&tools, &policy, input(&p), input(&src), 0, None, 50, T)
                .await
                .unwrap()
        }
    };
    let g = measure(good).await;
    let b = measure(bad).await;
    let (gp, bp) = (g.psnr_db.unwrap(), b.psnr_db.unwrap());
    assert!(gp > 30.0, "crf 18 at PSNR {gp}");
    assert!(gp > bp + 5.0, "crf 18 {gp} dB vs crf 45 {bp} dB");
    assert!(
        g.ssim > b.ssim && g.ssim > 0.9,
        "ssim {} vs {}",
        g.ssim,
        b.ssim
    );
}

#[test]
fn a_watermark_is_visible_where_the_placement_says() {
    use reelay_media::watermark::{Position, WatermarkSpec};
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("mark.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=white:size=80x40",
        "-frames:v",
        "1",
        mark.to_str().unwrap(),
    ]);
    let (w, h) = (320u32, 240u32);
    let spec = WatermarkSpec {
        position: Position::TopRight,
        opacity: 1.0,
        ..WatermarkSpec::default()
    };
    let graph = spec.overlay_filter("1:v", "0:v", "out", (w, h), (80, 40));
    let raw = dir.path().join("frame.gray");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("color=black:size={w}x{h}:duration=1"),
        "-i",
        mark.to_str().unwrap(),
        "-filter_complex",
        &graph,
        "-map",
        "[out]",
        "-frames:v",
        "1",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "gray",
        raw.to_str().unwrap(),
    ]);
    let px = std::fs::read(&raw).unwrap();
    assert_eq!(px.len(), (w * h) as usize);
    let p = spec.placement((w, h), (80, 40));
    let mean = |x0: u32, y0: u32, x1: u32, y1: u32| {
        let mut sum = 0u64;
        for y in y0..y1 {
            for x in x0..x1 {
                sum += px[(y * w + x) as usize] as u64;
            }
        }
        sum as f64 / ((x1 - x0) * (y1 - y0)) as f64
    };
    let inside = mean(p.x + 1, p.y + 1, p.x + p.width - 1, p.y + p.height - 1);
    let left_half = mean(0, 0, w / 2, h);
    let below = mean(p.x, p.y + p.height + 2, p.x + p.width, h);
    assert!(inside > 200.0, "mark missing at {p:?}: mean luma {inside}");
    assert!(
        left_half < 30.0 && below < 30.0,
        "mark outside its box: {left_half} {below}"
    );
    assert!(p.x > w / 2 && p.y < h / 4, "top right: {p:?}");
}

#[tokio::test]
async fn subtitle_streams_and_caption_files_become_webvtt() {
    use reelay_media::captions::{self, CaptionSource};
    let dir = tempfile::tempdir().unwrap();
    let (tools, policy) = (Tools::default(), InputPolicy::default());
    let srt = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!("1\n00:00:00,200 --> 00:00:01,000\n{text}\n\n2\n00:00:01,200 --> 00:00:01,900\n{text} 2\n"),
        )
        .unwrap();
        p
    };
    let (en, fr) = (srt("en.srt", "Hello"), srt("fr.srt", "Bonjour"));
    let mkv = dir.path().join("subs.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=10:duration=2",
        "-i",
        en.to_str().unwrap(),
        "-i",
        fr.to_str().unwrap(),
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:s",
        "srt",
        "-metadata:s:s:0",
        "language=eng",
        "-metadata:s:s:0",
        "title=English \"SDH\"",
        "-metadata:s:s:1",
        "language=fra",
        mkv.to_str().unwrap(),
    ]);
    let info = reelay_media::probe(&mkv, &tools, &policy).await.unwrap();
    let tracks = captions::tracks_from_probe(&info);
    assert_eq!(tracks.len(), 2, "{tracks:?}");
    assert_eq!(tracks[0].language.as_deref(), Some("eng"));
    assert_eq!(tracks[0].name, "English SDH");
    assert_eq!(tracks[1].name, "fra");
    for (t, word) in tracks.iter().zip(["Hello", "Bonjour"]) {
        let CaptionSource::Stream { index } = t.source else {
            panic!("stream track expected")
        };
        let out = dir.path().join(format!("{index}.vtt"));
        let input = Input {
            path: &mkv,
            demuxer: "matroska",
        };
        let cues = captions::to_webvtt(&tools, &policy, input, Some(index), &out, T)
            .await
            .unwrap();
        assert_eq!(cues, 2);
        let vtt = std::fs::read_to_string(&out).unwrap();
        assert!(vtt.starts_with("WEBVTT") && vtt.contains(word), "{vtt}");
    }

    // A caption part: recognised by content, converted with its own demuxer forced.
    let bytes = std::fs::read(&en).unwrap();
    let demuxer = captions::sniff_format(&bytes).unwrap();
    let out = dir.path().join("part.vtt");
    let input = Input { path: &en, demuxer };
    assert_eq!(
        captions::to_webvtt(&tools, &policy, input, None, &out, T)
            .await
            .unwrap(),
        2
    );
    // A "caption" that is a playlist pointing elsewhere is refused before ffmpeg sees it, and
    // one forced through the srt demuxer yields nothing.
    let evil = dir.path().join("evil.srt");
    std::fs::write(&evil, format!("#EXTM3U\n{}\n", en.display())).unwrap();
    assert!(captions::sniff_format(&std::fs::read(&evil).unwrap()).is_err());
    let input = Input {
        path: &evil,
        demuxer: "srt",
    };
    let err = captions::to_webvtt(&tools, &policy, input, None, &dir.path().join("e.vtt"), T)
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
}

/// A subtitle track of 700 000 cues (about 23 MiB as WebVTT) is refused at the cap,
/// without ffmpeg writing or reelay reading more than that.
#[tokio::test]
async fn a_subtitle_track_too_large_as_webvtt_is_refused() {
    use reelay_media::captions;
    use std::fmt::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let (tools, policy) = (Tools::default(), InputPolicy::default());
    let mut srt = String::new();
    for i in 0..700_000u64 {
        let (a, b) = (i * 10, i * 10 + 5);
        let t = |ms: u64| {
            format!(
                "{:02}:{:02}:{:02},{:03}",
                ms / 3_600_000,
                ms / 60_000 % 60,
                ms / 1000 % 60,
                ms % 1000
            )
        };
        write!(srt, "{}\n{} --> {}\nx\n\n", i + 1, t(a), t(b)).unwrap();
    }
    let path = dir.path().join("many.srt");
    std::fs::write(&path, srt).unwrap();
    let input = Input {
        path: &path,
        demuxer: "srt",
    };
    let out = dir.path().join("many.vtt");
    let err = captions::to_webvtt(&tools, &policy, input, None, &out, T)
        .await
        .unwrap_err();
    assert!(
        matches!(err, captions::CaptionError::TrackTooLarge),
        "{err}"
    );
    assert_eq!(err.code(), "caption_too_large");
    assert!(!out.exists());
}
