//! End-to-end tests of one cluster over real HTTP with real ffmpeg, SQLite and local storage.

mod common;

use common::*;
use reelay_protocol::{
    ErrorBody, JobList, JobStatus, JobView, LoadReport, OutputFiles, PresetList,
};
use std::time::Duration;

const ALL_FILE_PRESETS: &[(&str, &str, Option<&str>, Option<&str>)] = &[
    // (preset, extension, video codec, audio codec)
    ("mp4-1080p", "mp4", Some("h264"), Some("aac")),
    ("mp4-720p", "mp4", Some("h264"), Some("aac")),
    ("mp4-480p", "mp4", Some("h264"), Some("aac")),
    ("mp4-360p", "mp4", Some("h264"), Some("aac")),
    ("webm-vp9-720p", "webm", Some("vp9"), Some("opus")),
    ("av1-720p", "mp4", Some("av1"), Some("aac")),
    ("thumbnail", "jpg", Some("mjpeg"), None),
    ("audio-aac", "m4a", None, Some("aac")),
];

async fn error_of(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    assert!(
        ctype.starts_with("application/json"),
        "{status} answered {ctype}: {text}"
    );
    let body: ErrorBody =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not an error body ({e}): {text}"));
    (status, body.error.code, body.error.message)
}

#[tokio::test]
async fn every_preset_end_to_end_checked_with_ffprobe() {
    let s = TestServer::start().await;
    let clip = clip(s.dir.path(), "clip.mp4", 320, 240, 1.0, true);
    let outputs: Vec<String> = ALL_FILE_PRESETS
        .iter()
        .map(|p| format!(r#"{{"preset":"{}"}}"#, p.0))
        .collect();
    let spec = format!(r#"{{"outputs":[{}]}}"#, outputs.join(","));
    let job = s.succeeded(&clip, &spec).await;
    assert_eq!(job.progress, 1.0);
    assert_eq!(job.attempts, 1);
    assert!(job.id.starts_with("local."));
    assert!(job.started_at.is_some() && job.finished_at.is_some());
    assert_eq!(job.outputs.len(), ALL_FILE_PRESETS.len());
    // The api's probe of the upload is kept beside it, so the worker does not probe again.
    let probe = std::fs::read(
        s.state
            .cfg
            .data_dir
            .join("storage/inputs")
            .join(&job.id)
            .join("probe.json"),
    )
    .unwrap();
    let info: reelay_media::MediaInfo = serde_json::from_slice(&probe).unwrap();
    assert_eq!(info.display_dims(), Some((320, 240)));
    for (preset, ext, vcodec, acodec) in ALL_FILE_PRESETS {
        let out = job
            .outputs
            .iter()
            .find(|o| o.name == format!("{preset}.{ext}"))
            .unwrap_or_else(|| panic!("{preset} missing: {:?}", job.outputs));
        assert_eq!(
            out.url,
            format!("/v1/jobs/{}/outputs/{preset}.{ext}", job.id)
        );
        let (status, bytes) = s.get_bytes(&out.url).await;
        assert_eq!(status, 200);
        assert_eq!(
            bytes.len() as u64,
            out.size,
            "{preset}: size in the job view matches the download"
        );
        let p = ffprobe_bytes(&bytes, ext);
        assert_eq!(p.codec("video").as_deref(), *vcodec, "{preset}");
        assert_eq!(p.codec("audio").as_deref(), *acodec, "{preset}");
        if vcodec.is_some() {
            assert_eq!(p.dims(), Some((320, 240)), "{preset}: never upscaled");
        }
        if *preset != "thumbnail" {
            assert!(
                (p.duration() - 1.0).abs() <= 0.2,
                "{preset}: duration {}",
                p.duration()
            );
        }
    }
    // Content types a player relies on.
    let r = s
        .http
        .head(s.url(&format!("/v1/jobs/{}/outputs/mp4-720p.mp4", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "video/mp4");
    let r = s
        .http
        .head(s.url(&format!("/v1/jobs/{}/outputs/webm-vp9-720p.webm", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "video/webm");
}

#[tokio::test]
async fn hls_ladder_playlists_and_every_segment_over_http() {
    let s = TestServer::start().await;
    let clip = clip(s.dir.path(), "in480.mp4", 854, 480, 2.0, true);
    let job = s
        .succeeded(&clip, r#"{"outputs":[{"preset":"hls-abr"}]}"#)
        .await;
    assert_eq!(job.outputs[0].name, "hls-abr/master.m3u8");
    assert_eq!(job.outputs[0].content_type, "application/vnd.apple.mpegurl");
    let base = format!("/v1/jobs/{}/outputs/hls-abr", job.id);
    let (st, master) = s.get_bytes(&format!("{base}/master.m3u8")).await;
    assert_eq!(st, 200);
    let master = String::from_utf8(master).unwrap();
    let lines: Vec<&str> = master.lines().collect();
    let mut variants = vec![];
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("#EXT-X-STREAM-INF") {
            assert!(
                l.contains("BANDWIDTH=") && l.contains("CODECS=\"avc1") && l.contains("mp4a"),
                "{l}"
            );
            variants.push((
                l.split("RESOLUTION=")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .to_string(),
                lines[i + 1].to_string(),
            ));
        }
    }
    let resolutions: Vec<&str> = variants.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(
        resolutions,
        ["854x480", "640x360"],
        "rungs up to the input height only"
    );
    let mut segments = 0;
    for (res, uri) in &variants {
        let dir = uri.rsplit_once('/').unwrap().0;
        let (st, media) = s.get_bytes(&format!("{base}/{uri}")).await;
        assert_eq!(st, 200);
        let media = String::from_utf8(media).unwrap();
        assert!(media.contains("#EXT-X-ENDLIST") && media.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
        let mut total = 0.0;
        for l in media.lines() {
            if let Some(d) = l.strip_prefix("#EXTINF:") {
                total += d.trim_end_matches(',').parse::<f64>().unwrap();
            }
            if l.ends_with(".ts") {
                let r = s
                    .http
                    .get(s.url(&format!("{base}/{dir}/{l}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                assert_eq!(r.headers()["content-type"], "video/mp2t");
                let p = ffprobe_bytes(&r.bytes().await.unwrap(), "ts");
                assert_eq!(p.codec("video").as_deref(), Some("h264"));
                assert_eq!(p.codec("audio").as_deref(), Some("aac"));
                assert_eq!(
                    p.dims().map(|(w, h)| format!("{w}x{h}")).as_deref(),
                    Some(res.as_str())
                );
                segments += 1;
            }
        }
        assert!((total - 2.0).abs() <= 0.2, "{res}: playlist lasts {total}");
    }
    assert!(segments >= 2);
    // The listing has every file, so a client can mirror the whole ladder.
    let files: OutputFiles = s.get_json(&format!("/v1/jobs/{}/outputs", job.id)).await;
    assert_eq!(
        files
            .files
            .iter()
            .filter(|f| f.name.ends_with(".ts"))
            .count(),
        segments
    );
}

#[tokio::test]
async fn range_requests_return_the_right_bytes() {
    let s = TestServer::start().await;
    let clip = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, true);
    let job = s
        .succeeded(&clip, r#"{"outputs":[{"preset":"mp4-360p"}]}"#)
        .await;
    let url = s.url(&job.outputs[0].url);
    let full = s
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let r = s
        .http
        .get(&url)
        .header("range", "bytes=10-109")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 10-109/{}", full.len())
    );
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    // Open mode: no token, nothing private; finished outputs never change.
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=86400, immutable"
    );
    assert_eq!(&r.bytes().await.unwrap()[..], &full[10..110]);
    let r = s
        .http
        .get(&url)
        .header("range", "bytes=-50")
        .send()
        .await
        .unwrap();
    assert_eq!(&r.bytes().await.unwrap()[..], &full[full.len() - 50..]);
    let r = s
        .http
        .get(&url)
        .header("range", format!("bytes={}-", full.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    // Hostile output paths never leave the job's prefix.
    for p in [
        "..%2F..%2Freelay.db",
        "../../inputs",
        "a/../../x",
        "%2e%2e/x",
    ] {
        let r = s
            .http
            .get(s.url(&format!("/v1/jobs/{}/outputs/{p}", job.id)))
            .send()
            .await
            .unwrap();
        let (st, code, _) = error_of(r).await;
        assert_eq!((st, code.as_str()), (404, "not_found"), "{p}");
    }
}

#[tokio::test]
async fn events_stream_progress_until_the_end() {
    let s = TestServer::start().await;
    let clip = clip(s.dir.path(), "c.mp4", 320, 240, 2.0, true);
    let job = s
        .submit_ok(
            &clip,
            r#"{"outputs":[{"preset":"mp4-360p"},{"preset":"webm-vp9-720p"}]}"#,
        )
        .await;
    let mut r = s
        .http
        .get(s.url(&format!("/v1/jobs/{}/events", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let mut views: Vec<JobView> = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Some(chunk) = tokio::time::timeout_at(deadline, r.chunk())
        .await
        .expect("SSE stream did not end")
        .unwrap()
    {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) {
                views.push(serde_json::from_str(data.trim()).unwrap());
            }
        }
    }
    let last = views.last().unwrap();
    assert_eq!(last.status, JobStatus::Succeeded);
    assert!(
        views
            .windows(2)
            .all(|w| w[1].progress >= w[0].progress || w[1].status != w[0].status),
        "progress went backwards"
    );
    assert!(views.iter().any(|v| v.status == JobStatus::Running));
}

/// The events of an SSE stream as (id, data) pairs, until the server ends it.
async fn sse_events(
    s: &TestServer,
    id: &str,
    last_event_id: Option<&str>,
) -> Vec<(String, String)> {
    let mut req = s.http.get(s.url(&format!("/v1/jobs/{id}/events")));
    if let Some(last) = last_event_id {
        req = req.header("last-event-id", last);
    }
    let mut r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut buf = String::new();
    let mut events = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Some(chunk) = tokio::time::timeout_at(deadline, r.chunk())
        .await
        .expect("SSE stream did not end")
        .unwrap()
    {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let field = |name: &str| {
                event
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            if let Some(data) = field("data:") {
                events.push((field("id:").unwrap_or_default(), data));
            }
        }
    }
    events
}

/// SSE events carry the job's status-event number as their id (created, running, succeeded:
/// 3 at the end); a client reconnecting with the last id it saw after the end gets nothing
/// more, one that missed events gets the current view. Every job view lists its tasks.
#[tokio::test]
async fn events_carry_ids_and_resume_with_last_event_id() {
    let s = TestServer::start().await;
    let clip = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, false);
    let job = s
        .submit_ok(&clip, r#"{"outputs":[{"preset":"thumbnail"}]}"#)
        .await;
    assert_eq!(job.tasks.len(), 1);
    assert_eq!(job.tasks[0].kind, "transcode");
    assert_eq!(job.tasks[0].id, format!("{}.transcode", job.id));
    let done = s.wait(&job.id, Duration::from_secs(60)).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.tasks.len(), 1);
    assert_eq!(done.tasks[0].status, "succeeded");
    assert_eq!(done.tasks[0].attempts, 1);
    assert_eq!(done.tasks[0].progress, 1.0);

    let fresh = sse_events(&s, &job.id, None).await;
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_eq!(fresh[0].0, "3", "created, running, succeeded");
    let view: JobView = serde_json::from_str(&fresh[0].1).unwrap();
    assert_eq!(view, done);
    assert!(sse_events(&s, &job.id, Some("3")).await.is_empty());
    let missed = sse_events(&s, &job.id, Some("1")).await;
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].0, "3");
    // Garbage ids are ignored rather than refused.
    assert_eq!(sse_events(&s, &job.id, Some("x")).await.len(), 1);
}

/// A task of a kind this worker has no handler for fails its job at once (no retries) with a
/// code that says so, and the worker carries on with the next job.
#[tokio::test]
async fn unknown_task_kinds_fail_permanently() {
    let s = TestServer::start_with(|c| c.workers = 1).await;
    let mut task = reelay_jobs::NewTask::transcode(1.0);
    task.key = "teleport".into();
    task.kind = "teleport".into();
    let odd = reelay_jobs::NewJob {
        id: format!("local.{}", ulid::Ulid::new()),
        cluster: "local".into(),
        spec_json: r#"{"outputs":[{"preset":"thumbnail"}]}"#.into(),
        spec_hash: "odd".into(),
        input_key: None,
        input_url: None,
        priority: 0,
        idempotency_key: None,
        max_attempts: 3,
        estimated_seconds: 1.0,
        owner: None,
        tasks: vec![task],
        split_json: None,
        metadata: Default::default(),
        input_name: None,
        input_facts: None,
    };
    s.state.store.create_job(odd.clone()).await.unwrap();
    let failed = s.wait(&odd.id, Duration::from_secs(30)).await;
    assert_eq!(failed.status, JobStatus::Failed);
    let error = failed.error.expect("error");
    assert_eq!(error.code, "unknown_task_kind");
    assert!(error.message.contains("teleport"), "{}", error.message);
    assert_eq!(failed.attempts, 1, "not retried");
    assert_eq!(failed.tasks[0].status, "failed");

    let clip = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, false);
    let next = s
        .succeeded(&clip, r#"{"outputs":[{"preset":"thumbnail"}]}"#)
        .await;
    assert_eq!(next.tasks[0].kind, "transcode");
}

#[tokio::test]
async fn cancel_while_running_kills_ffmpeg_and_leaves_nothing() {
    let s = TestServer::start().await;
    // Long enough (30 s of VP9) that the cancel surely lands mid-encode; tiny frames keep the file small.
    let clip = clip(s.dir.path(), "long.mp4", 160, 120, 30.0, false);
    let job = s
        .submit_ok(&clip, r#"{"outputs":[{"preset":"webm-vp9-720p"}]}"#)
        .await;
    s.wait_for(&job.id, Duration::from_secs(30), |j| {
        j.status == JobStatus::Running && j.progress > 0.0
    })
    .await;
    let r = s
        .http
        .delete(s.url(&format!("/v1/jobs/{}", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: JobView = r.json().await.unwrap();
    assert_eq!(v.status, JobStatus::Cancelled);
    // ffmpeg is gone and the working directory with its partial output removed.
    let work = s.state.cfg.data_dir.join("work");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let busy = std::fs::read_dir(&work).map(|d| d.count()).unwrap_or(0) > 0;
        let procs = std::process::Command::new("pgrep")
            .args(["-f", &job.id])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        if !busy && !procs {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "work dir or ffmpeg left behind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.job(&job.id).await.status, JobStatus::Cancelled);
    // Issue 15: a DELETE of an ended job (here: cancelled) no longer answers 409
    // already_finished but deletes its files (204) and leaves a tombstone.
    let r = s
        .http
        .delete(s.url(&format!("/v1/jobs/{}", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let tomb = s.job(&job.id).await;
    assert_eq!(tomb.status, JobStatus::Cancelled);
    assert!(tomb.deleted_at.is_some());
    assert!(s
        .state
        .storage
        .list(&format!("inputs/{}", job.id))
        .await
        .unwrap()
        .is_empty());
    let r = s
        .http
        .get(s.url(&format!("/v1/jobs/{}/outputs/webm-vp9-720p.webm", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 409);
}

#[tokio::test]
async fn idempotent_resubmission_returns_the_same_job() {
    let s = TestServer::start().await;
    let clip = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, true);
    let spec = r#"{"outputs":[{"preset":"thumbnail"}]}"#;
    let send = |spec: &'static str| {
        let bytes = std::fs::read(&clip).unwrap();
        let form = reqwest::multipart::Form::new().text("spec", spec).part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("c.mp4"),
        );
        s.http
            .post(s.url("/v1/jobs"))
            .header("Idempotency-Key", "order-42")
            .multipart(form)
            .send()
    };
    let a = send(spec).await.unwrap();
    assert_eq!(a.status(), 202);
    let a: JobView = a.json().await.unwrap();
    let b = send(spec).await.unwrap();
    assert_eq!(b.status(), 200);
    let b: JobView = b.json().await.unwrap();
    assert_eq!(a.id, b.id);
    let (st, code, _) = error_of(
        send(r#"{"outputs":[{"preset":"mp4-360p"}]}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, code.as_str()), (409, "idempotency_conflict"));
    s.wait(&a.id, Duration::from_secs(60)).await;
    let list: JobList = s.get_json("/v1/jobs?limit=10").await;
    assert_eq!(list.jobs.len(), 1, "the replay created no second job");
}

#[tokio::test]
async fn bad_inputs_get_clear_errors_and_the_service_keeps_serving() {
    let s = TestServer::start_with(|c| c.policy.max_bytes = 2_000_000).await;
    let dir = s.dir.path();
    let good = clip(dir, "good.mp4", 160, 120, 1.0, true);
    let spec = r#"{"outputs":[{"preset":"mp4-360p"}]}"#;
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let secret = write("secret.txt", b"TOP-SECRET-CONTENT\n");
    let cases: Vec<(std::path::PathBuf, &str, u16, &str)> = vec![
        (write("empty.mp4", b""), spec, 422, "empty_input"),
        (
            write(
                "random.mp4",
                &(0..50_000u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                    .collect::<Vec<_>>(),
            ),
            spec,
            422,
            "corrupt_input",
        ),
        (
            write("text.mp4", b"this is just some text, not a video\n"),
            spec,
            422,
            "corrupt_input",
        ),
        (
            {
                // An MP4 whose moov atom (at the end) was cut off.
                let full = clip(dir, "whole.mp4", 160, 120, 1.0, true);
                let bytes = std::fs::read(full).unwrap();
                write("truncated.mp4", &bytes[..bytes.len() / 2])
            },
            spec,
            422,
            "corrupt_input",
        ),
        (
            write(
                "playlist.mp4",
                format!(
                    "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\n{}\n#EXT-X-ENDLIST\n",
                    secret.display()
                )
                .as_bytes(),
            ),
            spec,
            422,
            "unsupported_format",
        ),
        (
            write(
                "concat.mov",
                format!("ffconcat version 1.0\nfile {}\n", secret.display()).as_bytes(),
            ),
            spec,
            422,
            "unsupported_format",
        ),
        (
            write(
                "hostname.mp4",
                b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n/etc/hostname\n#EXT-X-ENDLIST\n",
            ),
            spec,
            422,
            "unsupported_format",
        ),
        (
            {
                let p = dir.join("tone.m4a");
                ffmpeg(&[
                    "-f",
                    "lavfi",
                    "-i",
                    "sine=duration=1",
                    "-c:a",
                    "aac",
                    p.to_str().unwrap(),
                ]);
                p
            },
            spec,
            422,
            "no_video_stream",
        ),
        (
            good.clone(),
            r#"{"outputs":[{"preset":"mp4-9000p"}]}"#,
            422,
            "invalid_spec",
        ),
        (
            good.clone(),
            r#"{"outputs":[{"preset":"mp4-360p"}"#,
            400,
            "malformed_json",
        ),
        (
            good.clone(),
            r#"{"outputs":[{"name":"x","container":"mp4","video":{"codec":"h264","crf":99}}]}"#,
            422,
            "invalid_spec",
        ),
        (
            write("big.mp4", &vec![0u8; 2_100_000]),
            spec,
            413,
            "input_too_large",
        ),
    ];
    for (file, spec, want_status, want_code) in &cases {
        let (st, code, msg) = error_of(s.submit_file(file, spec).await).await;
        assert_eq!(
            (st, code.as_str()),
            (*want_status, *want_code),
            "{}: {msg}",
            file.display()
        );
        assert!(
            !msg.contains("TOP-SECRET")
                && !msg.contains(
                    &std::fs::read_to_string("/etc/hostname")
                        .unwrap_or_else(|_| "\u{0}".into())
                        .trim()
                        .to_string()
                )
                || msg.is_empty(),
            "leak: {msg}"
        );
    }
    let (_, _, msg) = error_of(
        s.submit_file(&good, r#"{"outputs":[{"preset":"mp4-9000p"}]}"#)
            .await,
    )
    .await;
    assert!(msg.contains("outputs[0].preset"), "names the field: {msg}");
    let (_, _, msg) = error_of(
        s.submit_file(
            &good,
            r#"{"outputs":[{"name":"x","container":"mp4","video":{"codec":"h264","crf":99}}]}"#,
        )
        .await,
    )
    .await;
    assert!(
        msg.contains("outputs[0].video.crf"),
        "names the field: {msg}"
    );

    let post_json = |body: String| {
        s.http
            .post(s.url("/v1/jobs"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (st, code, _) = error_of(
        post_json(
            r#"{"input":{"url":"http://127.0.0.1:9/x.mp4"},"outputs":[{"preset":"mp4-360p"}]}"#
                .into(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((st, code.as_str()), (422, "forbidden_url"));
    let (st, code, _) = error_of(post_json(r#"{"input":{"url":"http://169.254.169.254/latest/meta-data"},"outputs":[{"preset":"mp4-360p"}]}"#.into()).await.unwrap()).await;
    assert_eq!((st, code.as_str()), (422, "forbidden_url"));
    let (st, code, _) = error_of(
        post_json(
            r#"{"input":{"url":"file:///etc/passwd"},"outputs":[{"preset":"mp4-360p"}]}"#.into(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((st, code.as_str()), (422, "invalid_url"));
    let (st, code, _) = error_of(
        post_json(r#"{"input":{"key":"../reelay.db"},"outputs":[{"preset":"mp4-360p"}]}"#.into())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, code.as_str()), (422, "invalid_spec"));
    let (st, code, _) = error_of(
        post_json(format!(
            r#"{{"outputs":[{{"preset":"{}"}}]}}"#,
            "x".repeat(70_000)
        ))
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((st, code.as_str()), (413, "too_large"));
    let (st, code, _) = error_of(post_json("[1,2".into()).await.unwrap()).await;
    assert_eq!((st, code.as_str()), (400, "malformed_json"));
    let (st, code, _) = error_of(
        s.http
            .post(s.url("/v1/jobs"))
            .header("content-type", "text/plain")
            .body("hi")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, code.as_str()), (415, "unsupported_media_type"));
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x"),
    );
    let (st, code, _) = error_of(
        s.http
            .post(s.url("/v1/jobs"))
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, code.as_str()), (400, "malformed_multipart"));
    // A host name that resolves to loopback passes the submit check but the download refuses it.
    let r = post_json(
        r#"{"input":{"url":"http://localhost:9/x.mp4"},"outputs":[{"preset":"mp4-360p"}]}"#.into(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let j: JobView = r.json().await.unwrap();
    let j = s.wait(&j.id, Duration::from_secs(30)).await;
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.error.unwrap().code, "forbidden_url");
    assert_eq!(j.attempts, 1, "a refusal is permanent, not retried");

    for (path, want) in [
        ("/v1/jobs/local.01ARZ3NDEKTSV4RRFFQ69G5FAV", 404),
        ("/v1/jobs/nonsense", 404),
        ("/v1/jobs/gcp.01ARZ3NDEKTSV4RRFFQ69G5FAV", 404),
        ("/nope", 404),
        ("/v1/jobs?status=done", 400),
    ] {
        let (st, _, _) = error_of(s.http.get(s.url(path)).send().await.unwrap()).await;
        assert_eq!(st, want, "{path}");
    }
    let (st, code, _) = error_of(s.http.put(s.url("/v1/presets")).send().await.unwrap()).await;
    assert_eq!((st, code.as_str()), (405, "method_not_allowed"));

    // Still serving, and nothing half-written: no job was created by any refused submission.
    let list: JobList = s.get_json("/v1/jobs").await;
    assert_eq!(
        list.jobs.len(),
        1,
        "only the localhost URL job exists: {:?}",
        list.jobs.iter().map(|j| &j.id).collect::<Vec<_>>()
    );
    let uploads = std::fs::read_dir(s.state.cfg.data_dir.join("uploads"))
        .unwrap()
        .count();
    assert_eq!(uploads, 0, "refused uploads leave no scratch files");
    s.succeeded(&good, spec).await;
}

#[tokio::test]
async fn url_inputs_are_downloaded_by_reelay_when_private_urls_are_allowed() {
    let s = TestServer::start_with(|c| c.allow_private_urls = true).await;
    let clip = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, true);
    let bytes = std::fs::read(&clip).unwrap();
    let app = axum::Router::new()
        .route(
            "/clip.mp4",
            axum::routing::get(move || async move { bytes.clone() }),
        )
        .route(
            "/moved",
            axum::routing::get(|| async { axum::response::Redirect::temporary("/clip.mp4") }),
        )
        .route(
            "/gone",
            axum::routing::get(|| async { axum::http::StatusCode::NOT_FOUND }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let submit = |path: &str| {
        let body = format!(
            r#"{{"input":{{"url":"{origin}{path}"}},"outputs":[{{"preset":"mp4-360p"}}]}}"#
        );
        s.http
            .post(s.url("/v1/jobs"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for path in ["/clip.mp4", "/moved"] {
        let j: JobView = submit(path).await.unwrap().json().await.unwrap();
        let j = s.wait(&j.id, Duration::from_secs(60)).await;
        assert_eq!(j.status, JobStatus::Succeeded, "{path}: {j:?}");
        let (_, out) = s.get_bytes(&j.outputs[0].url).await;
        assert_eq!(
            ffprobe_bytes(&out, "mp4").codec("video").as_deref(),
            Some("h264")
        );
    }
    let j: JobView = submit("/gone").await.unwrap().json().await.unwrap();
    let j = s.wait(&j.id, Duration::from_secs(30)).await;
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.error.unwrap().code, "input_fetch_failed");
}

#[tokio::test]
async fn ops_endpoints_answer() {
    let s = TestServer::start().await;
    let presets: PresetList = s.get_json("/v1/presets").await;
    assert!(presets.presets.len() >= 9);
    // Capacity comes from the workers' heartbeats in the store: the first one lands just after start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let load: LoadReport = loop {
        let load: LoadReport = s.get_json("/v1/load").await;
        if load.capacity == 2 || tokio::time::Instant::now() > deadline {
            break load;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (load.cluster.as_str(), load.capacity, load.accepting),
        ("local", 2, true)
    );
    assert_eq!(
        s.http.get(s.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        s.http.get(s.url("/readyz")).send().await.unwrap().status(),
        200
    );
    let r = s
        .http
        .get(s.url("/v1/presets"))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-123");
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "reelay_queue_depth",
        "reelay_jobs_running",
        "reelay_http_requests_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let doc: serde_json::Value = s.get_json("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/events",
        "/v1/jobs/{id}/outputs/{path}",
        "/v1/presets",
        "/v1/load",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing from openapi.json");
    }
}

#[tokio::test]
async fn listing_filters_and_pages() {
    let s = TestServer::start_with(|c| c.workers = 1).await;
    let clip = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, false);
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(
            s.submit_ok(&clip, r#"{"outputs":[{"preset":"thumbnail"}]}"#)
                .await
                .id,
        );
    }
    for id in &ids {
        s.wait(id, Duration::from_secs(60)).await;
    }
    let page1: JobList = s.get_json("/v1/jobs?limit=2&status=succeeded").await;
    assert_eq!(page1.jobs.len(), 2);
    assert_eq!(page1.jobs[0].id, ids[2], "newest first");
    let cursor = page1.next_cursor.unwrap();
    let page2: JobList = s
        .get_json(&format!(
            "/v1/jobs?limit=2&status=succeeded&cursor={cursor}"
        ))
        .await;
    assert_eq!(
        page2.jobs.iter().map(|j| &j.id).collect::<Vec<_>>(),
        vec![&ids[0]]
    );
    let failed: JobList = s.get_json("/v1/jobs?status=failed").await;
    assert!(failed.jobs.is_empty());
}

/// While a job runs, `/v1/load` says how long it has left (what the edge places by), and the
/// figure counts down; once it ends the list is empty again.
#[tokio::test]
async fn load_reports_what_running_jobs_have_left() {
    // Real-time input: a 2 s clip keeps its slot for about 2 s however fast the machine is.
    let s = TestServer::start_with(|c| {
        c.workers = 1;
        c.tools.realtime_input = true;
    })
    .await;
    let clip = clip(s.dir.path(), "rt.mp4", 160, 120, 2.0, false);
    let load = || async { s.get_json::<LoadReport>("/v1/load").await };
    let job = s
        .submit_ok(&clip, r#"{"outputs":[{"preset":"mp4-360p"}]}"#)
        .await;
    s.wait_for(&job.id, Duration::from_secs(30), |j| {
        j.status == JobStatus::Running
    })
    .await;
    // Read the load every 200 ms until the job ends: one figure per reading while it runs,
    // plausible for a 2 s job, and counting down towards zero as it nears its end.
    let mut seen = vec![];
    loop {
        let l = load().await;
        if l.running == 0 {
            break;
        }
        assert_eq!(l.running, 1, "{l:?}");
        assert_eq!(l.running_remaining_seconds.len(), 1, "{l:?}");
        let left = l.running_remaining_seconds[0];
        assert!((0.0..=6.0).contains(&left), "{l:?}");
        seen.push(left);
        assert!(seen.len() < 100, "the job never ended: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!seen.is_empty());
    let least = seen.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(least <= 1.5, "never neared zero: {seen:?}");
    let done = s.wait(&job.id, Duration::from_secs(30)).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    let idle = load().await;
    assert!(idle.running_remaining_seconds.is_empty(), "{idle:?}");
    assert_eq!(idle.running, 0);
    // The worker measured its speed on that job (about real time, with -re) and advertises it
    // with its next heartbeat.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let speed = loop {
        if let Some(s) = load().await.encode_speed {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no encode speed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!((0.3..=1.5).contains(&speed), "speed {speed}");
}

/// Outputs are user-supplied media: a browser must take their content type as given and never
/// sniff an HTML or script payload out of them. JSON answers (views and errors) say the same.
#[tokio::test]
async fn every_answer_forbids_content_sniffing() {
    let s = TestServer::start().await;
    let clip = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, true);
    let j = s
        .succeeded(
            &clip,
            r#"{"outputs":[{"preset":"thumbnail"},{"preset":"hls-abr"}]}"#,
        )
        .await;
    let mut paths = vec![
        format!("/v1/jobs/{}", j.id),
        format!("/v1/jobs/{}/outputs", j.id),
        "/v1/jobs".to_string(),
        "/v1/presets".to_string(),
        "/v1/load".to_string(),
        "/v1/jobs/local.01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string(),
        "/nope".to_string(),
    ];
    paths.extend(j.outputs.iter().map(|o| o.url.clone()));
    paths.push(format!("/v1/jobs/{}/outputs/hls-abr/v0/index.m3u8", j.id));
    for path in &paths {
        for range in [None, Some("bytes=0-9")] {
            let mut req = s.http.get(s.url(path));
            if let Some(r) = range {
                req = req.header("range", r);
            }
            let r = req.send().await.unwrap();
            assert_eq!(
                r.headers()
                    .get("x-content-type-options")
                    .map(|v| v.to_str().unwrap()),
                Some("nosniff"),
                "{path} {range:?} answered {} without nosniff",
                r.status()
            );
        }
    }
    let r = s.http.head(s.url(&j.outputs[0].url)).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

/// `priority` has a documented range; outside it the submission is refused with a 400 that
/// names the field, in JSON and in multipart submissions alike.
#[tokio::test]
async fn priority_outside_its_range_is_refused() {
    let s = TestServer::start_with(|c| c.workers = 1).await;
    let post = |priority: i64| {
        s.http
            .post(s.url("/v1/jobs"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"input":{{"url":"https://media.example.com/x.mp4"}},"outputs":[{{"preset":"mp4-360p"}}],"priority":{priority}}}"#
            ))
            .send()
    };
    for p in [101, -101, 2_147_483_647, -2_147_483_648] {
        let (st, code, msg) = error_of(post(p).await.unwrap()).await;
        assert_eq!((st, code.as_str()), (400, "invalid_priority"), "{p}: {msg}");
        assert!(msg.contains("priority"), "names the field: {msg}");
    }
    for p in [100, -100, 0] {
        assert_eq!(post(p).await.unwrap().status(), 202, "{p}");
    }
    let clip = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, true);
    let (st, code, _) = error_of(
        s.submit_file(
            &clip,
            r#"{"outputs":[{"preset":"mp4-360p"}],"priority":1000}"#,
        )
        .await,
    )
    .await;
    assert_eq!((st, code.as_str()), (400, "invalid_priority"));
}
