//! The streaming packagings through the API as a player meets them: one job with `cmaf`,
//! `dash` and `hls-cmaf` over real HTTP (real ffmpeg, SQLite, local storage); the job lists
//! each manifest, every manifest is parsed and every file it names fetched with its content
//! type and probed (an fMP4 segment after its init segment), and CMAF's HLS and DASH sides
//! name the same files.

mod common;

use common::*;
use reelay_media::manifest::{hls_uris, mpd_representations};
use std::collections::BTreeSet;

async fn fetch(s: &TestServer, path: &str) -> (String, Vec<u8>) {
    let r = s.http.get(s.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    (ctype, r.bytes().await.unwrap().to_vec())
}

/// Fetches and probes every file of an MPD; returns the files it names.
async fn check_mpd(s: &TestServer, base: &str) -> BTreeSet<String> {
    let (ctype, mpd) = fetch(s, &format!("{base}/manifest.mpd")).await;
    assert_eq!(ctype, "application/dash+xml");
    let mpd = String::from_utf8(mpd).unwrap();
    let reps = mpd_representations(&mpd).unwrap();
    let mut names = BTreeSet::new();
    let mut video_dims = vec![];
    for rep in &reps {
        assert!(
            rep.codecs.starts_with("avc1.") || rep.codecs == "mp4a.40.2",
            "{}",
            rep.codecs
        );
        let (ctype, init) = fetch(s, &format!("{base}/{}", rep.init)).await;
        assert_eq!(ctype, "video/iso.segment");
        assert!(!rep.media.is_empty());
        for seg in &rep.media {
            let (ctype, bytes) = fetch(s, &format!("{base}/{seg}")).await;
            assert_eq!(ctype, "video/iso.segment", "{seg}");
            let mut joined = init.clone();
            joined.extend(bytes);
            let p = ffprobe_bytes(&joined, "mp4");
            if rep.mime_type == "video/mp4" {
                assert_eq!(p.codec("video").as_deref(), Some("h264"), "{seg}");
                assert_eq!(
                    p.dims(),
                    Some((rep.width.unwrap() as u64, rep.height.unwrap() as u64))
                );
            } else {
                assert_eq!(p.codec("audio").as_deref(), Some("aac"), "{seg}");
            }
            names.insert(seg.clone());
        }
        if rep.mime_type == "video/mp4" {
            video_dims.push((rep.width.unwrap(), rep.height.unwrap()));
        }
        names.insert(rep.init.clone());
    }
    assert_eq!(video_dims, [(854, 480), (640, 360)], "{mpd}");
    names
}

/// Fetches the master playlist, every media playlist and every file they name; returns the
/// files named relative to `base`.
async fn check_hls(s: &TestServer, base: &str) -> BTreeSet<String> {
    let (ctype, master) = fetch(s, &format!("{base}/master.m3u8")).await;
    assert_eq!(ctype, "application/vnd.apple.mpegurl");
    let master = String::from_utf8(master).unwrap();
    assert!(master.contains("#EXT-X-VERSION:7"), "{master}");
    for l in master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF"))
    {
        assert!(
            l.contains("CODECS=\"avc1.") && l.contains("mp4a.40.2"),
            "{l}"
        );
    }
    let mut names = BTreeSet::new();
    for playlist in hls_uris(&master) {
        let (_, media) = fetch(s, &format!("{base}/{playlist}")).await;
        let media = String::from_utf8(media).unwrap();
        assert!(media.contains("#EXT-X-ENDLIST") && media.contains("#EXT-X-MAP:URI="));
        let dir = playlist
            .rsplit_once('/')
            .map(|(d, _)| format!("{d}/"))
            .unwrap_or_default();
        let uris = hls_uris(&media);
        let (_, init) = fetch(s, &format!("{base}/{dir}{}", uris[0])).await;
        for seg in &uris[1..] {
            let (ctype, bytes) = fetch(s, &format!("{base}/{dir}{seg}")).await;
            assert_eq!(ctype, "video/iso.segment", "{seg}");
            let mut joined = init.clone();
            joined.extend(bytes);
            let p = ffprobe_bytes(&joined, "mp4");
            assert!(
                p.codec("video").is_some() || p.codec("audio").is_some(),
                "{seg}"
            );
        }
        names.extend(uris.into_iter().map(|u| format!("{dir}{u}")));
    }
    names
}

#[tokio::test]
async fn cmaf_dash_and_hls_cmaf_over_http_every_segment_fetched() {
    let s = TestServer::start().await;
    let clip = clip(s.dir.path(), "in480.mp4", 854, 480, 5.0, true);
    let job = s
        .succeeded(
            &clip,
            r#"{"outputs":[{"preset":"cmaf"},{"preset":"dash"},{"preset":"hls-cmaf"}]}"#,
        )
        .await;
    let listed: Vec<(&str, &str)> = job
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.content_type.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            ("cmaf/master.m3u8", "application/vnd.apple.mpegurl"),
            ("cmaf/manifest.mpd", "application/dash+xml"),
            ("dash/manifest.mpd", "application/dash+xml"),
            ("hls-cmaf/master.m3u8", "application/vnd.apple.mpegurl"),
        ]
    );
    let out = |name: &str| format!("/v1/jobs/{}/outputs/{name}", job.id);
    // CMAF: both manifests over ONE set of segment files.
    let dash_side = check_mpd(&s, &out("cmaf")).await;
    let hls_side = check_hls(&s, &out("cmaf")).await;
    let hls_media: BTreeSet<String> = hls_side
        .into_iter()
        .filter(|f| !f.ends_with(".m3u8"))
        .collect();
    assert_eq!(dash_side, hls_media);
    assert!(
        dash_side.len() >= 2 * 3 + 2,
        "two 4 s segments per rung: {dash_side:?}"
    );
    check_mpd(&s, &out("dash")).await;
    check_hls(&s, &out("hls-cmaf")).await;
}

/// A custom ladder with an unsupported combination is a 422 naming the field.
#[tokio::test]
async fn a_ladder_with_a_codec_its_packaging_cannot_carry_is_refused() {
    let s = TestServer::start().await;
    let clip = clip(s.dir.path(), "c.mp4", 320, 240, 1.0, true);
    for (spec, field) in [
        (
            r#"{"outputs":[{"name":"x","container":"hls","video":{"codec":"h265"}}]}"#,
            "outputs[0].video.codec",
        ),
        (
            r#"{"outputs":[{"name":"x","container":"cmaf","video":{"codec":"h264","crf":20}}]}"#,
            "outputs[0].video.crf",
        ),
        (
            r#"{"outputs":[{"name":"x","container":"dash","audio":{"codec":"opus"}}]}"#,
            "outputs[0].audio.codec",
        ),
    ] {
        let r = s.submit_file(&clip, spec).await;
        assert_eq!(r.status(), 422, "{spec}");
        let body: serde_json::Value = r.json().await.unwrap();
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(field), "{spec}: {msg}");
    }
}

/// The OpenAPI document names every preset and every format a custom output may give, the same
/// ones the server accepts (the compatibility table), so the document cannot drift.
#[tokio::test]
async fn openapi_lists_every_preset_and_format() {
    let s = TestServer::start().await;
    let doc: serde_json::Value = s.get_json("/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    let presets: Vec<String> = reelay_media::preset_list()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(
        names(&schemas["PresetOutput"]["properties"]["preset"]),
        presets
    );
    // Custom outputs are one schema per family of containers (OutputSpec's oneOf); together
    // they must name every format of the compatibility table, each once.
    let mut documented: Vec<String> = doc["components"]["schemas"]["OutputSpec"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["$ref"].as_str()?.strip_prefix("#/components/schemas/"))
        .filter(|name| *name != "PresetOutput")
        .flat_map(|name| names(&schemas[name]["properties"]["container"]))
        .collect();
    documented.sort();
    let mut formats: Vec<String> = reelay_media::compat::FORMATS
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    formats.sort();
    assert_eq!(documented, formats);
}

/// The storyboard preset over HTTP: the job lists its WebVTT track (text/vtt); every sheet a cue
/// names is fetched as a JPEG and every `#xywh=` region lies inside it.
#[tokio::test]
async fn storyboard_track_and_every_sheet_over_http() {
    let s = TestServer::start().await;
    let clip = clip(s.dir.path(), "in.mp4", 320, 180, 5.0, true);
    let job = s
        .succeeded(&clip, r#"{"outputs":[{"preset":"storyboard"}]}"#)
        .await;
    assert_eq!(job.outputs[0].name, "storyboard/storyboard.vtt");
    assert_eq!(job.outputs[0].content_type, "text/vtt; charset=utf-8");
    let base = format!("/v1/jobs/{}/outputs/storyboard", job.id);
    let (_, vtt) = fetch(&s, &format!("{base}/storyboard.vtt")).await;
    let vtt = String::from_utf8(vtt).unwrap();
    assert!(vtt.starts_with("WEBVTT\n"), "{vtt}");
    let regions: Vec<(&str, Vec<u64>)> = vtt
        .lines()
        .filter_map(|l| l.split_once("#xywh="))
        .map(|(f, r)| (f, r.split(',').map(|x| x.parse().unwrap()).collect()))
        .collect();
    assert_eq!(regions.len(), 3, "one cue every 2 s of 5 s: {vtt}");
    for (file, r) in regions {
        let (ctype, jpeg) = fetch(&s, &format!("{base}/{file}")).await;
        assert_eq!(ctype, "image/jpeg");
        let p = ffprobe_bytes(&jpeg, "jpg");
        let (w, h) = p.dims().unwrap();
        assert_eq!((r[2], r[3]), (160, 90));
        assert!(
            r[0] + r[2] <= w && r[1] + r[3] <= h,
            "{file}#{r:?} outside {w}x{h}"
        );
    }
}
