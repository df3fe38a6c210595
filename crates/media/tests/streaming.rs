//! Real ffmpeg/ffprobe on a generated clip for every streaming packaging: HLS in fMP4 (v7),
//! DASH, CMAF (one set of segments for both manifests), and HEVC/AV1 ladders. Each manifest is
//! read as a player would, every file it names is probed, rungs are checked keyframe-aligned and
//! codecs strings against what the init segments hold.

use reelay_media::manifest::{hls_uris, mpd_representations, MpdRepresentation};
use reelay_media::*;
use reelay_protocol::{OutputSpec, VideoSpec};
use std::path::{Path, PathBuf};
use std::process::Command;

/// 854x480 at 25 fps with a tone, `secs` long: two rungs (480, 360), a 4 s segment and a rest.
fn clip(dir: &Path, secs: u32) -> PathBuf {
    let out = dir.join("in480.mp4");
    let st = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc2=size=854x480:rate=25:duration={secs}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={secs}"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(&out)
        .status()
        .expect("ffmpeg must be installed");
    assert!(st.success());
    out
}

/// ffprobe's JSON of `args` on `input` (stdin when `bytes` is given).
fn ffprobe_json(input: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json"])
        .args(args)
        .arg(input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {input:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An fMP4 media segment is playable only after its init segment: probe the two joined.
fn joined(dir: &Path, init: &Path, seg: &Path) -> PathBuf {
    let mut bytes = std::fs::read(init).unwrap();
    bytes.extend(std::fs::read(seg).unwrap());
    let p = dir.join(format!(
        "joined-{}",
        seg.file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".m4s", ".mp4")
    ));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// (codec, width, height, duration, first packet is a keyframe, first pts in seconds)
fn probe_segment(path: &Path) -> (String, u64, u64, f64, bool, f64) {
    let s = ffprobe_json(path, &["-show_streams", "-show_format"]);
    let stream = &s["streams"][0];
    let p = ffprobe_json(
        path,
        &[
            "-show_packets",
            "-read_intervals",
            "%+#1",
            "-select_streams",
            "0",
        ],
    );
    let pkt = &p["packets"][0];
    (
        stream["codec_name"].as_str().unwrap_or("").to_string(),
        stream["width"].as_u64().unwrap_or(0),
        stream["height"].as_u64().unwrap_or(0),
        s["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0),
        pkt["flags"].as_str().unwrap_or("").starts_with('K'),
        pkt["pts_time"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(-1.0),
    )
}

async fn package(spec: OutputSpec, input: &Path, out: &Path) -> Rendition {
    let tools = Tools::default();
    let policy = InputPolicy::default();
    let info = probe(input, &tools, &policy).await.unwrap();
    let r = resolve_outputs(&[spec]).unwrap().remove(0);
    package::prepare(&r, out).unwrap();
    let inv = build(&r, &info, &policy, input, out).unwrap();
    let limits = RunLimits {
        stall_timeout: std::time::Duration::from_secs(60),
        time_limit: std::time::Duration::from_secs(300),
        max_out_time: None,
    };
    let mut last = None;
    run_ffmpeg(
        &tools,
        &inv.args,
        out,
        limits,
        &CancellationToken::new(),
        |p| last = Some(p),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: {e}", r.name));
    assert!(
        last.is_some_and(|p| p.done),
        "{}: no final progress",
        r.name
    );
    package::finish(&r, &info, out).unwrap();
    r
}

fn custom(name: &str, container: &str, codec: &str) -> OutputSpec {
    OutputSpec {
        name: Some(name.into()),
        container: Some(container.into()),
        video: Some(VideoSpec {
            codec: codec.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Checks a DASH manifest: static, every representation's files exist and probe as its codec
/// and size, video rungs start every segment with a keyframe at the same instants, and the
/// codecs strings are complete and match the init segments.
fn check_mpd(dir: &Path, video_codec: &str, codecs_prefix: &str) -> Vec<MpdRepresentation> {
    let text = std::fs::read_to_string(dir.join("manifest.mpd")).unwrap();
    assert!(text.contains(r#"type="static""#), "{text}");
    let reps = mpd_representations(&text).unwrap();
    let video: Vec<&MpdRepresentation> =
        reps.iter().filter(|r| r.mime_type == "video/mp4").collect();
    let audio: Vec<&MpdRepresentation> =
        reps.iter().filter(|r| r.mime_type == "audio/mp4").collect();
    assert_eq!(video.len(), 2, "{text}");
    assert_eq!(audio.len(), 1, "one audio track for every rung: {text}");
    assert_eq!(audio[0].codecs, "mp4a.40.2");
    let scratch = tempfile::tempdir().unwrap();
    for (rep, (w, h)) in video.iter().zip([(854, 480), (640, 360)]) {
        assert!(rep.codecs.starts_with(codecs_prefix), "{}", rep.codecs);
        let init = std::fs::read(dir.join(&rep.init)).unwrap();
        assert_eq!(codecs::from_init_segment(&init), vec![rep.codecs.clone()]);
        assert_eq!((rep.width, rep.height), (Some(w), Some(h)));
        assert!(rep.media.len() >= 2, "{rep:?}");
        let mut total = 0.0;
        for (seg, start) in rep.media.iter().zip(&rep.starts) {
            let j = joined(scratch.path(), &dir.join(&rep.init), &dir.join(seg));
            let (codec, pw, ph, dur, key, pts) = probe_segment(&j);
            assert_eq!(
                (codec.as_str(), pw, ph),
                (video_codec, w as u64, h as u64),
                "{seg}"
            );
            assert!(key, "{seg} does not start with a keyframe");
            let expect = *start as f64 / rep.timescale as f64;
            assert!(
                (pts - expect).abs() < 0.05,
                "{seg}: pts {pts} vs timeline {expect}"
            );
            total += dur;
        }
        assert!(total > 0.0);
    }
    // Keyframe-aligned: every rung's segments start at the same instants.
    let secs = |r: &MpdRepresentation| -> Vec<u64> {
        r.starts.iter().map(|s| s * 1000 / r.timescale).collect()
    };
    assert_eq!(secs(video[0]), secs(video[1]));
    assert_eq!(secs(video[0])[1], 4000, "4 s segments");
    for seg in std::iter::once(&audio[0].init).chain(&audio[0].media) {
        assert!(dir.join(seg).is_file(), "{seg}");
    }
    reps
}

#[tokio::test]
async fn dash_preset_writes_a_complete_aligned_mpd() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), 6);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let r = package(OutputSpec::preset("dash"), &input, &out).await;
    assert_eq!(r.primary_files(), ["dash/manifest.mpd"]);
    check_mpd(&out.join("dash"), "h264", "avc1.");
    assert!(
        !out.join("dash/master.m3u8").exists(),
        "DASH alone writes no HLS"
    );
}

/// CMAF: the HLS master and the MPD reference the SAME segment files, and there are no others.
#[tokio::test]
async fn cmaf_preset_serves_hls_and_dash_from_one_set_of_segments() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), 6);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let r = package(OutputSpec::preset("cmaf"), &input, &out).await;
    assert_eq!(r.primary_files(), ["cmaf/master.m3u8", "cmaf/manifest.mpd"]);
    let d = out.join("cmaf");
    let reps = check_mpd(&d, "h264", "avc1.");
    let master = std::fs::read_to_string(d.join("master.m3u8")).unwrap();
    assert!(master.contains("#EXT-X-VERSION:7"), "{master}");
    let infs: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF"))
        .collect();
    assert_eq!(infs.len(), 2, "{master}");
    for (l, rep) in infs
        .iter()
        .zip(reps.iter().filter(|r| r.mime_type == "video/mp4"))
    {
        let res = format!("RESOLUTION={}x{}", rep.width.unwrap(), rep.height.unwrap());
        assert!(l.contains(&res), "{l}");
        assert!(
            l.contains(&format!("CODECS=\"{},mp4a.40.2\"", rep.codecs)),
            "{l} vs {}",
            rep.codecs
        );
    }
    // Every file either manifest names, from HLS's side: the same set as DASH's.
    let mut hls_files = std::collections::BTreeSet::new();
    for playlist in hls_uris(&master) {
        let media = std::fs::read_to_string(d.join(&playlist)).unwrap();
        assert!(media.contains("#EXT-X-ENDLIST"), "{media}");
        assert!(media.contains("#EXT-X-MAP:URI="), "{media}");
        assert!(media.contains("#EXT-X-PLAYLIST-TYPE:VOD"), "{media}");
        assert!(!media.contains("#EXT-X-PROGRAM-DATE-TIME"), "{media}");
        hls_files.extend(hls_uris(&media));
    }
    let dash_files: std::collections::BTreeSet<String> = reps
        .iter()
        .flat_map(|r| std::iter::once(r.init.clone()).chain(r.media.clone()))
        .collect();
    assert_eq!(hls_files, dash_files);
    // No second copy of the media: the directory holds those segments and the manifests only.
    let on_disk: std::collections::BTreeSet<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".m4s") || n.ends_with(".mp4") || n.ends_with(".ts"))
        .collect();
    assert_eq!(on_disk, dash_files);
}

#[tokio::test]
async fn hls_cmaf_preset_is_hls_v7_with_fmp4_segments() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), 6);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    package(OutputSpec::preset("hls-cmaf"), &input, &out).await;
    let d = out.join("hls-cmaf");
    let master = std::fs::read_to_string(d.join("master.m3u8")).unwrap();
    assert!(master.contains("#EXT-X-VERSION:7"), "{master}");
    let scratch = tempfile::tempdir().unwrap();
    let mut starts = vec![];
    for (v, (w, h)) in ["v0", "v1"].iter().zip([(854u64, 480u64), (640, 360)]) {
        let media = std::fs::read_to_string(d.join(v).join("index.m3u8")).unwrap();
        assert!(media.contains("#EXT-X-VERSION:7") && media.contains("#EXT-X-ENDLIST"));
        let uris = hls_uris(&media);
        let init = d.join(v).join(&uris[0]);
        assert!(uris[0].ends_with(".mp4"), "{uris:?}");
        let mut rung_starts = vec![];
        for seg in &uris[1..] {
            assert!(seg.ends_with(".m4s"), "{seg}");
            let (codec, pw, ph, _, key, pts) =
                probe_segment(&joined(scratch.path(), &init, &d.join(v).join(seg)));
            assert_eq!((codec.as_str(), pw, ph), ("h264", w, h));
            assert!(key, "{v}/{seg} does not start with a keyframe");
            rung_starts.push((pts * 10.0).round() as i64);
        }
        let tracks = codecs::from_init_segment(&std::fs::read(&init).unwrap());
        assert!(
            master.contains(&format!("CODECS=\"{}\"", tracks.join(","))),
            "{master}"
        );
        starts.push(rung_starts);
    }
    assert_eq!(starts[0], starts[1], "rungs keyframe-aligned");
    // 4 s apart (the muxer starts the first at the encoder delay, a few frames in).
    assert_eq!(starts[0][1] - starts[0][0], 40, "{starts:?}");
}

/// HEVC in CMAF: the manifests carry the full `hvc1.` string (ffmpeg writes a bare `hvc1`).
#[tokio::test]
async fn hevc_cmaf_ladder_has_complete_codecs_strings() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), 5);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    package(custom("hevc", "cmaf", "h265"), &input, &out).await;
    let d = out.join("hevc");
    check_mpd(&d, "hevc", "hvc1.1.");
    let master = std::fs::read_to_string(d.join("master.m3u8")).unwrap();
    assert!(master.contains("CODECS=\"hvc1.1."), "{master}");
    assert!(!master.contains("CODECS=\"hvc1,"), "{master}");
}

/// AV1 in DASH and in HLS fMP4: `av01.` strings in both manifests, keyframes on the grid.
#[tokio::test]
async fn av1_ladders_in_dash_and_hls_cmaf() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), 5);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    package(custom("av1dash", "dash", "av1"), &input, &out).await;
    check_mpd(&out.join("av1dash"), "av1", "av01.0.");
    package(custom("av1hls", "hls-cmaf", "av1"), &input, &out).await;
    let master = std::fs::read_to_string(out.join("av1hls/master.m3u8")).unwrap();
    let infs: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF"))
        .collect();
    assert_eq!(infs.len(), 2, "{master}");
    for l in infs {
        assert!(
            l.contains("CODECS=\"av01.0.") && l.contains(",mp4a.40.2\""),
            "{l}"
        );
    }
    let media = std::fs::read_to_string(out.join("av1hls/v0/index.m3u8")).unwrap();
    assert!(media.contains("#EXT-X-TARGETDURATION:4"), "{media}");
}

/// A storyboard: the VTT parsed, every cue's sheet exists and every `#xywh=` region lies
/// inside its image; cues cover the clip without gaps.
#[tokio::test]
async fn storyboard_vtt_regions_lie_inside_their_sprite_sheets() {
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), 7);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let spec = OutputSpec {
        name: Some("scrub".into()),
        container: Some("storyboard".into()),
        storyboard: Some(reelay_protocol::StoryboardSpec {
            interval_seconds: Some(1.0),
            columns: Some(2),
            rows: Some(2),
            tile_short_side: Some(72),
        }),
        ..Default::default()
    };
    let r = package(spec, &input, &out).await;
    assert_eq!(r.primary_files(), ["scrub/storyboard.vtt"]);
    let d = out.join("scrub");
    let vtt = std::fs::read_to_string(d.join("storyboard.vtt")).unwrap();
    assert!(vtt.starts_with("WEBVTT\n"), "{vtt}");
    let secs = |t: &str| -> f64 {
        let p: Vec<f64> = t.split(':').map(|x| x.parse().unwrap()).collect();
        p[0] * 3600.0 + p[1] * 60.0 + p[2]
    };
    let mut cues = vec![];
    let lines: Vec<&str> = vtt.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some((a, b)) = l.split_once(" --> ") {
            let (file, xywh) = lines[i + 1].split_once("#xywh=").unwrap();
            let n: Vec<u64> = xywh.split(',').map(|x| x.parse().unwrap()).collect();
            cues.push((secs(a), secs(b), file.to_string(), n));
        }
    }
    assert_eq!(cues.len(), 7, "{vtt}");
    let mut sizes = std::collections::HashMap::new();
    let mut t = 0.0;
    for (start, end, file, n) in &cues {
        assert!((start - t).abs() < 1e-6 && end > start, "{vtt}");
        t = *end;
        let (w, h) = *sizes.entry(file.clone()).or_insert_with(|| {
            let s = ffprobe_json(&d.join(file), &["-show_streams"]);
            let st = &s["streams"][0];
            assert_eq!(st["codec_name"], "mjpeg");
            (
                st["width"].as_u64().unwrap(),
                st["height"].as_u64().unwrap(),
            )
        });
        assert_eq!((n[2], n[3]), (128, 72), "tile size of a 16:9 clip");
        assert!(
            n[0] + n[2] <= w && n[1] + n[3] <= h,
            "{file}#{n:?} outside {w}x{h}"
        );
    }
    assert!((t - 7.0).abs() < 0.1, "cues end at the clip's end: {t}");
    // 7 frames on 2x2 sheets: two sheets, 256x144 each.
    assert_eq!(sizes.len(), 2);
    assert!(sizes.values().all(|s| *s == (256, 144)), "{sizes:?}");
}
