//! Captions through the API, checked as a user would: jobs over real HTTP (real ffmpeg, SQLite,
//! local storage) on clips with real subtitle streams, every sidecar, subtitle playlist and
//! manifest entry fetched back; hostile caption files refused with a 4xx before any job exists.

mod common;

use common::*;
use reelay_protocol::{JobList, JobView};
use std::path::{Path, PathBuf};

/// Two SRT cues saying `word`.
fn srt(word: &str) -> String {
    format!("1\n00:00:00,200 --> 00:00:01,000\n{word}\n\n2\n00:00:01,500 --> 00:00:02,500\n{word} again\n")
}

/// A 3 s 320x180 clip with audio and one subtitle stream `codec` (`srt` in MKV, `mov_text` in
/// MP4) saying `word`, tagged `language` and `title`.
fn clip_with_subtitles(
    dir: &Path,
    name: &str,
    codec: &str,
    word: &str,
    language: &str,
    title: &str,
) -> PathBuf {
    let sub = dir.join(format!("{name}.srt"));
    std::fs::write(&sub, srt(word)).unwrap();
    let out = dir.join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x180:rate=25:duration=3",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=3",
        "-i",
        sub.to_str().unwrap(),
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
        "-c:a",
        "aac",
        "-c:s",
        codec,
        "-metadata:s:s:0",
        &format!("language={language}"),
        "-metadata:s:s:0",
        &format!("title={title}"),
        out.to_str().unwrap(),
    ]);
    out
}

/// The cues of a WebVTT document as (start, end, text), timestamps as written.
fn cues(vtt: &str) -> Vec<(String, String, String)> {
    let lines: Vec<&str> = vtt.lines().collect();
    let mut out = vec![];
    for (i, l) in lines.iter().enumerate() {
        if let Some((a, b)) = l.split_once(" --> ") {
            let end = b.split_whitespace().next().unwrap_or("");
            out.push((
                a.trim().to_string(),
                end.to_string(),
                lines[i + 1].to_string(),
            ));
        }
    }
    out
}

/// `00:00.200` and `00:00:00.200` alike, in milliseconds.
fn ms(t: &str) -> u64 {
    let (hms, frac) = t.split_once('.').unwrap();
    let secs = hms
        .split(':')
        .fold(0u64, |acc, p| acc * 60 + p.parse::<u64>().unwrap());
    secs * 1000 + frac.parse::<u64>().unwrap()
}

/// The cues of [`srt`], `shift_ms` later: a subtitle stream keeps its place against the
/// input's video, and a muxer may start the video a little after zero (Matroska moves every
/// stream by an AAC track's priming), which every output keeps alike.
fn assert_cues_match(vtt: &str, word: &str, shift_ms: u64) {
    assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    let got = cues(vtt);
    let want = [
        (200, 1000, word.to_string()),
        (1500, 2500, format!("{word} again")),
    ];
    assert_eq!(got.len(), 2, "{vtt}");
    for ((a, b, text), (wa, wb, wt)) in got.iter().zip(want) {
        assert_eq!(
            (ms(a), ms(b), text.as_str()),
            (wa + shift_ms, wb + shift_ms, wt.as_str()),
            "{vtt}"
        );
    }
}

/// Where the input's video starts, ms: the SRT's cue times count from the first frame.
fn start_shift_ms(file: &Path) -> u64 {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=start_time",
        ])
        .args(["-of", "csv=p=0"])
        .arg(file)
        .output()
        .unwrap();
    let start: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (start * 1000.0).round().max(0.0) as u64
}

async fn text(s: &TestServer, j: &JobView, name: &str) -> String {
    let (status, bytes) = s
        .get_bytes(&format!("/v1/jobs/{}/outputs/{name}", j.id))
        .await;
    assert_eq!(status, 200, "{name}");
    String::from_utf8(bytes).unwrap()
}

fn attr<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("{key}=\""))? + key.len() + 2;
    line[at..].split('"').next()
}

/// Multipart: spec, the caption parts, then the input file.
async fn submit_with_captions(
    s: &TestServer,
    spec: &str,
    captions: Vec<Vec<u8>>,
    file: &Path,
) -> reqwest::Response {
    let parts = captions
        .into_iter()
        .map(|c| ("captions", c, "captions.srt"));
    s.submit_parts(spec, parts.collect(), file).await
}

/// An MKV with an SRT stream (English) plus an uploaded caption file (French): both become
/// sidecar outputs with the input's cues, subtitle renditions of the HLS (MPEG-TS) master
/// playlist and of the CMAF master playlist, and text adaptation sets of the CMAF MPD.
#[tokio::test]
async fn subtitle_streams_and_caption_parts_become_sidecars_and_renditions() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mkv = clip_with_subtitles(dir.path(), "subs.mkv", "srt", "Hello", "eng", "English");
    let spec = r#"{"outputs":[{"preset":"mp4-360p"},{"preset":"hls-abr"},{"preset":"cmaf"}],
        "captions":{"files":[{"language":"fr","label":"Français"}]}}"#;
    let r = submit_with_captions(&s, spec, vec![srt("Bonjour").into_bytes()], &mkv).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let j: JobView = r.json().await.unwrap();
    let j = s.wait(&j.id, std::time::Duration::from_secs(300)).await;
    assert_eq!(j.status, reelay_protocol::JobStatus::Succeeded, "{j:?}");
    // Captions are made by the one-task encode: the view says why the job was not split.
    let split = j.split.as_ref().expect("a split decision");
    assert!(!split.applied, "{split:?}");
    assert_eq!(split.reason.as_deref(), Some("side_files"), "{split:?}");

    // The job view lists both sidecars as outputs, typed as WebVTT.
    let names: Vec<&str> = j.outputs.iter().map(|o| o.name.as_str()).collect();
    for sidecar in ["captions/0-eng.vtt", "captions/1-fr.vtt"] {
        let o = j.outputs.iter().find(|o| o.name == sidecar);
        let o = o.unwrap_or_else(|| panic!("{sidecar} not in {names:?}"));
        assert!(o.content_type.starts_with("text/vtt"), "{o:?}");
    }
    let shift = start_shift_ms(&mkv);
    assert_cues_match(&text(&s, &j, "captions/0-eng.vtt").await, "Hello", shift);
    assert_cues_match(&text(&s, &j, "captions/1-fr.vtt").await, "Bonjour", 0);
    // The MP4 itself is untouched by captions: video and audio, as before.
    let (_, mp4) = s
        .get_bytes(&format!("/v1/jobs/{}/outputs/mp4-360p.mp4", j.id))
        .await;
    let p = ffprobe_bytes(&mp4, "mp4");
    assert_eq!(p.codec("video").as_deref(), Some("h264"));

    // HLS (MPEG-TS): a SUBTITLES group with both languages, every variant pointing at it, and
    // each subtitle playlist naming a sidecar mapped onto the TS clock.
    for ladder in ["hls-abr", "cmaf"] {
        let master = text(&s, &j, &format!("{ladder}/master.m3u8")).await;
        let media: Vec<&str> = master
            .lines()
            .filter(|l| l.starts_with("#EXT-X-MEDIA:TYPE=SUBTITLES"))
            .collect();
        assert_eq!(media.len(), 2, "{master}");
        assert_eq!(attr(media[0], "LANGUAGE"), Some("eng"), "{master}");
        assert_eq!(attr(media[0], "NAME"), Some("English"), "{master}");
        assert_eq!(attr(media[1], "LANGUAGE"), Some("fr"), "{master}");
        assert_eq!(attr(media[1], "NAME"), Some("Français"), "{master}");
        let variants = master
            .lines()
            .filter(|l| l.starts_with("#EXT-X-STREAM-INF"));
        for v in variants {
            assert_eq!(attr(v, "SUBTITLES"), Some("subs"), "{master}");
        }
        for (m, (word, shift)) in media.iter().zip([("Hello", shift), ("Bonjour", 0)]) {
            let uri = attr(m, "URI").unwrap();
            let playlist = text(&s, &j, &format!("{ladder}/{uri}")).await;
            assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
            let seg = playlist
                .lines()
                .find(|l| !l.starts_with('#') && !l.is_empty())
                .unwrap();
            let base = uri.rsplit_once('/').map_or("", |(b, _)| b);
            let vtt = text(&s, &j, &format!("{ladder}/{base}/{seg}")).await;
            let map = vtt.lines().find(|l| l.starts_with("X-TIMESTAMP-MAP="));
            if ladder == "hls-abr" {
                // The TS clock does not start at zero; the map names where it does start.
                let mpegts: u64 = map
                    .and_then(|l| l.split("MPEGTS:").nth(1))
                    .and_then(|v| v.split(',').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no X-TIMESTAMP-MAP in {vtt}"));
                assert!(mpegts > 0 && mpegts < 10 * 90_000, "{vtt}");
                // Exactly the first picture's timestamp (not the audio's, which AAC priming
                // starts ~20 ms earlier): a cue at 0.2 s is 0.2 s after the first frame.
                let (_, seg) = s
                    .get_bytes(&format!(
                        "/v1/jobs/{}/outputs/{ladder}/v0/seg_00000.ts",
                        j.id
                    ))
                    .await;
                let p = ffprobe_bytes(&seg, "ts");
                let video_start: f64 = p.stream("video").unwrap()["start_time"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(mpegts, (video_start * 90_000.0).round() as u64, "{vtt}");
            } else {
                assert!(map.is_none(), "fMP4 starts at zero: {vtt}");
            }
            assert_cues_match(&vtt.replace(map.unwrap_or("\u{0}"), ""), word, shift);
        }
    }

    // DASH: one text/vtt adaptation set per track, with its language, naming a sidecar that
    // exists; the video and audio sets still parse and every segment they name is there.
    let mpd = text(&s, &j, "cmaf/manifest.mpd").await;
    let sets: Vec<&str> = mpd
        .split("<AdaptationSet")
        .skip(1)
        .filter(|a| a.contains("mimeType=\"text/vtt\""))
        .collect();
    assert_eq!(sets.len(), 2, "{mpd}");
    for (set, (lang, word, shift)) in sets
        .iter()
        .zip([("eng", "Hello", shift), ("fr", "Bonjour", 0)])
    {
        assert!(set.contains(&format!("lang=\"{lang}\"")), "{set}");
        assert!(set.contains("contentType=\"text\""), "{set}");
        let url = set
            .split("<BaseURL>")
            .nth(1)
            .and_then(|b| b.split("</BaseURL>").next())
            .unwrap();
        assert_cues_match(&text(&s, &j, &format!("cmaf/{url}")).await, word, shift);
    }
    let reps = reelay_media::manifest::mpd_representations(&mpd).unwrap();
    assert!(reps.iter().any(|r| r.mime_type == "video/mp4"), "{reps:?}");
    for rep in &reps {
        for f in std::iter::once(&rep.init).chain(&rep.media) {
            let (status, _) = s
                .get_bytes(&format!("/v1/jobs/{}/outputs/cmaf/{f}", j.id))
                .await;
            assert_eq!(status, 200, "{f}");
        }
    }
}

/// mov_text (MP4's own subtitle codec) becomes a WebVTT sidecar too, with its cues.
#[tokio::test]
async fn a_mov_text_stream_becomes_a_webvtt_sidecar() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mp4 = clip_with_subtitles(dir.path(), "subs.mp4", "mov_text", "Hi", "deu", "Deutsch");
    let j = s
        .succeeded(&mp4, r#"{"outputs":[{"preset":"thumbnail"}]}"#)
        .await;
    assert_eq!(
        j.outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        ["thumbnail.jpg", "captions/0-deu.vtt"]
    );
    let shift = start_shift_ms(&mp4);
    assert_cues_match(&text(&s, &j, "captions/0-deu.vtt").await, "Hi", shift);
}

/// Caption parts that are not captions are refused with a 4xx naming the problem, before the
/// input is read, and no job exists afterwards.
#[tokio::test]
async fn hostile_caption_files_are_refused_and_create_no_job() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), "in.mp4", 320, 180, 1.0, false);
    let one = r#"{"outputs":[{"preset":"mp4-360p"}],"captions":{"files":[{"language":"en"}]}}"#;
    let mut huge = srt("x").into_bytes();
    huge.resize(3 << 20, b'a');
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "binary",
            vec![0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 0x4a],
            422,
            "caption_unsupported",
        ),
        (
            "nul",
            b"WEBVTT\n\n00:00.000 --> 00:01.000\n\0\n".to_vec(),
            422,
            "caption_unsupported",
        ),
        ("huge", huge, 413, "caption_too_large"),
        (
            "file: path",
            b"file:/etc/passwd\n".to_vec(),
            422,
            "caption_unsupported",
        ),
        (
            "playlist",
            b"#EXTM3U\n#EXTINF:1,\nfile:/etc/passwd\n".to_vec(),
            422,
            "caption_unsupported",
        ),
        (
            "no cues",
            b"WEBVTT\n\nNOTE nothing here\n".to_vec(),
            422,
            "caption_empty",
        ),
        (
            "srt naming a file",
            b"1\n00:00:00,000 --> 00:00:01,000\n".to_vec(),
            422,
            "caption_empty",
        ),
    ];
    for (what, bytes, status, code) in cases {
        let r = submit_with_captions(&s, one, vec![bytes], &input).await;
        assert_eq!(r.status().as_u16(), status, "{what}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
    }
    // Declared and sent must agree, both ways.
    let r = submit_with_captions(&s, one, vec![], &input).await;
    assert_eq!(r.status().as_u16(), 422);
    let none = r#"{"outputs":[{"preset":"mp4-360p"}]}"#;
    let r = submit_with_captions(&s, none, vec![srt("x").into_bytes()], &input).await;
    assert_eq!(r.status().as_u16(), 422);
    // A JSON submission cannot carry caption files.
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(r#"{"input":{"url":"https://example.com/a.mp4"},"outputs":[{"preset":"mp4-360p"}],"captions":{"files":[{}]}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);

    let list: JobList = s.get_json("/v1/jobs").await;
    assert!(list.jobs.is_empty(), "{:?}", list.jobs);
    // Nothing of the refused parts stays on disk.
    let uploads = s.state.cfg.data_dir.join("uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// Luma of the frame at `at` seconds of a downloaded file.
fn luma_at(bytes: &[u8], ext: &str, at: f64) -> Vec<u8> {
    let luma = frame_luma(bytes, ext, Some(at));
    assert!(!luma.is_empty());
    luma
}

/// `captions.burn_in` draws the named track into the picture of MP4 outputs: on a black clip,
/// bright text while a cue is on, nothing between cues; a Matroska output of the same job stays
/// clean; a language no track has, or no MP4 output to draw on, is refused at admission.
#[tokio::test]
async fn burn_in_draws_the_track_into_mp4_outputs_only() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = black_clip(dir.path(), "black.mp4", 320, 180, 3.0, false);
    let spec = |burn: &str, outputs: &str| {
        format!(
            r#"{{"outputs":{outputs},"captions":{{"files":[{{"language":"en"}}],"burn_in":"{burn}"}}}}"#
        )
    };
    let both =
        r#"[{"preset":"mp4-360p"},{"name":"plain","container":"mkv","video":{"codec":"h264"}}]"#;
    let words = srt("WWWWWWWW").into_bytes();
    let r = submit_with_captions(&s, &spec("en", both), vec![words.clone()], &input).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let j: JobView = r.json().await.unwrap();
    let j = s.wait(&j.id, std::time::Duration::from_secs(300)).await;
    assert_eq!(j.status, reelay_protocol::JobStatus::Succeeded, "{j:?}");
    let (_, mp4) = s
        .get_bytes(&format!("/v1/jobs/{}/outputs/mp4-360p.mp4", j.id))
        .await;
    let (_, mkv) = s
        .get_bytes(&format!("/v1/jobs/{}/outputs/plain.mkv", j.id))
        .await;
    let brightest = |px: Vec<u8>| px.into_iter().max().unwrap();
    let during = brightest(luma_at(&mp4, "mp4", 0.6));
    let between = brightest(luma_at(&mp4, "mp4", 1.25));
    assert!(
        during > 150,
        "no caption drawn at 0.6 s (max luma {during})"
    );
    assert!(
        between < 60,
        "a caption drawn between cues (max luma {between})"
    );
    let plain = brightest(luma_at(&mkv, "mkv", 0.6));
    assert!(plain < 60, "the mkv output was drawn on (max luma {plain})");
    // The sidecar is still there.
    assert!(
        j.outputs.iter().any(|o| o.name == "captions/0-en.vtt"),
        "{j:?}"
    );

    for (burn, outputs, code) in [
        ("fr", both, "caption_not_found"),
        ("not a tag!", both, "invalid_spec"),
        ("en", r#"[{"preset":"hls-abr"}]"#, "invalid_spec"),
    ] {
        let r = submit_with_captions(&s, &spec(burn, outputs), vec![words.clone()], &input).await;
        assert_eq!(r.status().as_u16(), 422, "{burn} {outputs}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    let list: JobList = s.get_json("/v1/jobs").await;
    assert_eq!(list.jobs.len(), 1);
}
