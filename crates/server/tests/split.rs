//! Split-and-stitch through a real cluster: a multipart upload long enough to split, real
//! ffmpeg in every task, outputs fetched over HTTP and checked with ffprobe against the same
//! job with `"split": "off"`, intermediates checked gone from object storage.

mod common;
use common::*;
use reelay_protocol::{JobStatus, JobView};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A `secs`-long 160x90 clip with audio and a keyframe every second (so it cuts into pieces).
fn gop_clip(dir: &Path, secs: u32) -> std::path::PathBuf {
    gop_clip_sized(dir, secs, "160x90")
}

fn gop_clip_sized(dir: &Path, secs: u32, size: &str) -> std::path::PathBuf {
    gop_clip_of(
        dir,
        secs,
        &format!("testsrc2=size={size}:rate=25:duration={secs}"),
    )
}

/// [`gop_clip_sized`] with noise changing every frame on top, as in real footage: content
/// whose rungs spend what their picture needs, and at times hit their caps (a flat or
/// noiseless clip would hide rate-control differences between split and unsplit).
fn noisy_gop_clip(dir: &Path, secs: u32, size: &str) -> std::path::PathBuf {
    gop_clip_of(
        dir,
        secs,
        &format!("testsrc2=size={size}:rate=25:duration={secs},noise=alls=6:allf=t"),
    )
}

fn gop_clip_of(dir: &Path, secs: u32, video: &str) -> std::path::PathBuf {
    let out = dir.join("long.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        video,
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency=440:duration={secs}"),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-c:a",
        "aac",
        "-shortest",
        out.to_str().unwrap(),
    ]);
    out
}

fn probe_lines(file: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn frames(file: &Path) -> u64 {
    probe_lines(
        file,
        &[
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ],
    )[0]
    .parse()
    .unwrap()
}

/// Decode timestamps of the video packets, checked strictly increasing.
fn assert_dts_increasing(file: &Path) {
    let dts: Vec<f64> = probe_lines(
        file,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=dts_time",
            "-of",
            "csv=p=0",
        ],
    )
    .iter()
    .filter_map(|l| l.parse().ok())
    .collect();
    assert!(dts.len() > 10);
    for w in dts.windows(2) {
        assert!(w[1] > w[0], "DTS not increasing: {} then {}", w[0], w[1]);
    }
}

async fn save(s: &TestServer, url: &str, dir: &Path, name: &str) -> std::path::PathBuf {
    let (status, bytes) = s.get_bytes(url).await;
    assert_eq!(status, 200, "{url}");
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Fetches an HLS output: every rung's playlist and every segment; returns the frames of the
/// first (largest) rung's segments joined.
async fn check_hls(s: &TestServer, job: &JobView, dir: &Path) -> u64 {
    let base = format!("/v1/jobs/{}/outputs/hls-abr", job.id);
    let (st, master) = s.get_bytes(&format!("{base}/master.m3u8")).await;
    assert_eq!(st, 200);
    let master = String::from_utf8(master).unwrap();
    let media: Vec<&str> = master
        .lines()
        .filter(|l| l.ends_with(".m3u8") && !l.starts_with('#'))
        .chain(
            master
                .lines()
                .filter_map(|l| l.split("URI=\"").nth(1).and_then(|r| r.split('"').next())),
        )
        .collect();
    assert!(!media.is_empty(), "{master}");
    let mut first_rung_frames = None;
    for m in media {
        let (st, pl) = s.get_bytes(&format!("{base}/{m}")).await;
        assert_eq!(st, 200, "{m}");
        let pl = String::from_utf8(pl).unwrap();
        assert!(pl.contains("#EXT-X-ENDLIST"), "{m}: {pl}");
        assert!(pl.contains("#EXT-X-PLAYLIST-TYPE:VOD"), "{m}");
        assert!(!pl.contains("DISCONTINUITY"), "{m}: {pl}");
        let rung_dir = Path::new(m).parent().unwrap().to_str().unwrap().to_string();
        let mut joined = vec![];
        for seg in pl.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (st, bytes) = s.get_bytes(&format!("{base}/{rung_dir}/{seg}")).await;
            assert_eq!(st, 200, "{rung_dir}/{seg}");
            assert!(!bytes.is_empty());
            joined.extend(bytes);
        }
        if m.starts_with("v0/") {
            let p = dir.join("rung0.ts");
            std::fs::write(&p, &joined).unwrap();
            assert_dts_increasing(&p);
            first_rung_frames = Some(frames(&p));
        }
    }
    first_rung_frames.expect("a v0 rung")
}

async fn intermediates(s: &TestServer, job: &str) -> usize {
    s.state
        .storage
        .list(&reelay_server::worker::intermediate_prefix(job))
        .await
        .unwrap()
        .len()
}

/// Gone within the VOD grace of a progressive job (2 × the 4 s target duration + 1 s each, plus
/// the 5 s margin) and a sweep.
async fn wait_no_intermediates(s: &TestServer, job: &str) {
    for _ in 0..300 {
        if intermediates(s, job).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("intermediates of {job} left in storage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_job_matches_the_unsplit_one_and_leaves_no_intermediates() {
    let s = TestServer::start().await;
    let clip = gop_clip(s.dir.path(), 14);
    let split = s
        .succeeded(
            &clip,
            r#"{"outputs":[{"preset":"mp4-360p"},{"preset":"hls-abr"},{"preset":"thumbnail"}],"split":{"segment_seconds":4}}"#,
        )
        .await;
    let whole = s
        .succeeded(
            &clip,
            r#"{"outputs":[{"preset":"mp4-360p"},{"preset":"hls-abr"},{"preset":"thumbnail"}],"split":"off"}"#,
        )
        .await;
    // Every kind ran and succeeded; the unsplit job is one transcode task.
    let kinds = |j: &JobView| {
        let mut k: Vec<String> = j.tasks.iter().map(|t| t.kind.clone()).collect();
        k.sort();
        k.dedup();
        k
    };
    assert_eq!(
        kinds(&split),
        [
            "encode_audio",
            "encode_segment",
            "split",
            "stitch",
            "transcode"
        ]
    );
    assert!(
        split.tasks.iter().all(|t| t.status == "succeeded"),
        "{:?}",
        split.tasks
    );
    let segments = split
        .tasks
        .iter()
        .filter(|t| t.kind == "encode_segment")
        .count();
    assert_eq!(
        segments, 4,
        "14 s in 4 s ranges (the last one 2 s): {:?}",
        split.tasks
    );
    assert_eq!(kinds(&whole), ["transcode"]);
    // Same output names as the unsplit job, split and whole outputs alike.
    let names = |j: &JobView| {
        let mut n: Vec<String> = j.outputs.iter().map(|o| o.name.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&split), names(&whole));
    assert_eq!(names(&split).len(), 3);
    let d = tempfile::tempdir().unwrap();
    let a = save(
        &s,
        &format!("/v1/jobs/{}/outputs/mp4-360p.mp4", split.id),
        d.path(),
        "a.mp4",
    )
    .await;
    let b = save(
        &s,
        &format!("/v1/jobs/{}/outputs/mp4-360p.mp4", whole.id),
        d.path(),
        "b.mp4",
    )
    .await;
    // Quality receipts: the split job's are its ranges' encoder measurements combined. Checked
    // against ffmpeg's filters on the stitched file and the source (the combination is exact:
    // a partial or mis-weighted sum would be off by far more than the encoder/filter tolerance
    // of `receipts::in_encode_receipts_agree_with_the_filters`); the ladder carries one per rung
    // over every frame, as the unsplit job's does (split and unsplit rungs are compared in
    // `split_rungs_match_the_unsplit_ones_in_quality_and_size`).
    let out = |j: &JobView, n: &str| j.outputs.iter().find(|o| o.name == n).cloned().unwrap();
    let qs = out(&split, "mp4-360p.mp4")
        .quality
        .expect("split mp4 receipt");
    assert_eq!(qs.frames, 14 * 25);
    let (psnr, ssim) = quality_against(&a, &clip);
    let got = qs.psnr_db.unwrap();
    assert!(
        (got - psnr).abs() <= 0.1,
        "stitched receipt {got} dB, filters {psnr}"
    );
    assert!((qs.ssim - ssim).abs() <= 0.005, "{qs:?} vs filters {ssim}");
    let (rs, rw) = (
        out(&split, "hls-abr/master.m3u8").rungs,
        out(&whole, "hls-abr/master.m3u8").rungs,
    );
    assert!(!rs.is_empty(), "split ladder without rung receipts");
    assert_eq!(rs.len(), rw.len());
    for (a, b) in rs.iter().zip(&rw) {
        assert_eq!((a.rung, a.width, a.height), (b.rung, b.width, b.height));
        assert_eq!(
            (a.quality.frames, b.quality.frames),
            (14 * 25, 14 * 25),
            "{a:?}"
        );
        assert!(a.quality.psnr_db.unwrap() > 30.0, "{a:?}");
    }
    assert_eq!(frames(&a), frames(&b));
    assert_eq!(frames(&a), 14 * 25);
    assert_dts_increasing(&a);
    let pa = ffprobe_bytes(&std::fs::read(&a).unwrap(), "mp4");
    let pb = ffprobe_bytes(&std::fs::read(&b).unwrap(), "mp4");
    assert_eq!(pa.codec("audio").as_deref(), Some("aac"));
    assert!(
        (pa.duration() - pb.duration()).abs() < 0.05,
        "{} vs {}",
        pa.duration(),
        pb.duration()
    );
    // The thumbnail (kept whole) is served from the same job.
    let (st, jpg) = s
        .get_bytes(&format!("/v1/jobs/{}/outputs/thumbnail.jpg", split.id))
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        ffprobe_bytes(&jpg, "jpg").codec("video").as_deref(),
        Some("mjpeg")
    );
    // HLS: every playlist and segment fetched, the top rung as many frames as unsplit.
    let hls_split = check_hls(&s, &split, d.path()).await;
    assert_eq!(hls_split, 14 * 25);
    // The outputs listing names every file of both prefixes.
    let listed: serde_json::Value = s.get_json(&format!("/v1/jobs/{}/outputs", split.id)).await;
    let files = listed["files"].as_array().unwrap();
    assert!(files.iter().any(|f| f["name"] == "thumbnail.jpg"));
    assert!(files.iter().any(|f| f["name"] == "hls-abr/master.m3u8"));
    wait_no_intermediates(&s, &split.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_split_job_stops_every_task_and_removes_the_pieces() {
    let s = TestServer::start().await;
    let clip = gop_clip_sized(s.dir.path(), 60, "1280x720");
    let j = s
        .submit_ok(
            &clip,
            r#"{"outputs":[{"preset":"mp4-480p"},{"preset":"hls-abr"}],"split":{"segment_seconds":4}}"#,
        )
        .await;
    // Wait until the pieces are stored and a segment runs.
    s.wait_for(&j.id, Duration::from_secs(60), |v| {
        v.tasks
            .iter()
            .any(|t| t.kind == "split" && t.status == "succeeded")
    })
    .await;
    assert!(intermediates(&s, &j.id).await > 0, "pieces stored");
    let r = s
        .http
        .delete(s.url(&format!("/v1/jobs/{}", j.id)))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let v = s.wait(&j.id, Duration::from_secs(30)).await;
    assert_eq!(v.status, JobStatus::Cancelled);
    // No task is left running or queued, and nothing stays in storage.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = s.job(&j.id).await;
    assert!(
        v.tasks
            .iter()
            .all(|t| t.status == "cancelled" || t.status == "succeeded"),
        "{:?}",
        v.tasks
    );
    wait_no_intermediates(&s, &j.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_split_field_is_a_422_naming_it() {
    let s = TestServer::start().await;
    let clip = gop_clip(s.dir.path(), 2);
    for bad in [
        r#""sometimes""#,
        r#"{"segment_seconds":1}"#,
        r#"{"seconds":4}"#,
    ] {
        let r = s
            .submit_file(
                &clip,
                &format!(r#"{{"outputs":[{{"preset":"mp4-360p"}}],"split":{bad}}}"#),
            )
            .await;
        assert_eq!(r.status(), 422, "{bad}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_spec", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("split"),
            "{body}"
        );
    }
}

/// The media playlists a master playlist names (video variants, then audio renditions).
fn media_playlists(master: &str) -> Vec<String> {
    master
        .lines()
        .filter(|l| l.ends_with(".m3u8") && !l.starts_with('#'))
        .map(String::from)
        .chain(master.lines().filter_map(|l| {
            l.split("URI=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(String::from)
        }))
        .collect()
}

fn segment_uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(String::from)
        .collect()
}

/// The job's SSE stream as (event name, data) pairs, read until the server ends it.
async fn sse_events(base: String, id: String) -> Vec<(String, String)> {
    let mut r = reqwest::get(format!("{base}/v1/jobs/{id}/events"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (mut buf, mut events) = (String::new(), vec![]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
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
                events.push((field("event:").unwrap_or_default(), data));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_job_plays_as_event_hls_while_it_encodes_then_as_vod() {
    let s = TestServer::start().await;
    let clip = gop_clip_sized(s.dir.path(), 40, "640x360");
    let j = s
        .submit_ok(
            &clip,
            r#"{"outputs":[{"preset":"hls-abr"},{"preset":"mp4-360p"}],"split":{"segment_seconds":4}}"#,
        )
        .await;
    assert_eq!(j.playable_at, None);
    let sse = tokio::spawn(sse_events(s.base.clone(), j.id.clone()));
    let base = format!("/v1/jobs/{}/outputs/hls-abr", j.id);
    // Not playable yet: the usual "not ready".
    let (st, _) = s.get_bytes(&format!("{base}/master.m3u8")).await;
    assert_eq!(st, 409);

    let v = s
        .wait_for(&j.id, Duration::from_secs(120), |v| {
            v.playable_at.is_some() || v.status.is_terminal()
        })
        .await;
    assert_eq!(
        v.status,
        JobStatus::Running,
        "playable before the end: {v:?}"
    );
    let playable_at = v.playable_at.clone().unwrap();
    let (st, master) = s.get_bytes(&format!("{base}/master.m3u8")).await;
    assert_eq!(st, 200);
    let master = String::from_utf8(master).unwrap();
    let media = media_playlists(&master);
    assert!(media.len() >= 2, "a rung and an audio group: {master}");
    let d = tempfile::tempdir().unwrap();
    let mut early: Vec<(String, Vec<String>)> = vec![];
    for m in &media {
        let (st, pl) = s.get_bytes(&format!("{base}/{m}")).await;
        assert_eq!(st, 200, "{m}");
        let pl = String::from_utf8(pl).unwrap();
        assert!(pl.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{m}: {pl}");
        assert!(
            !pl.contains("ENDLIST") && !pl.contains("DISCONTINUITY"),
            "{m}: {pl}"
        );
        let segs = segment_uris(&pl);
        assert!(!segs.is_empty(), "{m}: {pl}");
        let dir = Path::new(m).parent().unwrap().to_str().unwrap().to_string();
        let mut joined = vec![];
        for seg in &segs {
            let (st, bytes) = s.get_bytes(&format!("{base}/{dir}/{seg}")).await;
            assert_eq!(st, 200, "{dir}/{seg}");
            joined.extend(bytes);
        }
        if m.starts_with("v0/") {
            let p = d.path().join("early.ts");
            std::fs::write(&p, &joined).unwrap();
            assert_dts_increasing(&p);
            let n = frames(&p);
            assert!(n > 0 && n < 40 * 25, "a prefix of the video: {n} frames");
        }
        early.push((m.clone(), segs));
    }
    // A segment no playlist lists yet is not served early.
    let (st, _) = s.get_bytes(&format!("{base}/v0/seg_99999.ts")).await;
    assert_eq!(st, 409);

    let done = s.wait(&j.id, Duration::from_secs(300)).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    // Played early: the intermediates outlive the job by the VOD grace, so a segment a player
    // resolved on the EVENT playlist just before the end still reads.
    let ended = std::time::Instant::now();
    assert!(intermediates(&s, &done.id).await > 0);
    assert_eq!(done.playable_at.as_deref(), Some(playable_at.as_str()));
    assert!(playable_at <= done.finished_at.clone().unwrap());
    // At the end: VOD playlists that continue the EVENT ones (same segments first).
    for (m, segs) in &early {
        let (st, pl) = s.get_bytes(&format!("{base}/{m}")).await;
        assert_eq!(st, 200, "{m}");
        let pl = String::from_utf8(pl).unwrap();
        assert!(pl.contains("#EXT-X-ENDLIST"), "{m}: {pl}");
        let all = segment_uris(&pl);
        assert!(all.len() > segs.len(), "{m}: grew");
        assert_eq!(&all[..segs.len()], &segs[..], "{m}");
    }
    assert_eq!(check_hls(&s, &done, d.path()).await, 40 * 25);
    wait_no_intermediates(&s, &done.id).await;
    let kept = ended.elapsed();
    assert!(kept >= Duration::from_secs(10), "kept only {kept:?}");
    // SSE announced it once, with the job view's time, while the job still ran.
    let events = sse.await.unwrap();
    let playable: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].0 == "playable")
        .collect();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(playable.len(), 1, "{names:?}");
    let p: serde_json::Value = serde_json::from_str(&events[playable[0]].1).unwrap();
    assert_eq!(p["playable_at"], playable_at.as_str());
    assert_eq!(p["id"], done.id.as_str());
    let later: Vec<JobView> = events[playable[0] + 1..]
        .iter()
        .filter(|(e, _)| e == "job")
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        later.iter().any(|v| v.status == JobStatus::Running),
        "announced before the end: {names:?}"
    );
    assert_eq!(later.last().map(|v| v.status), Some(JobStatus::Succeeded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_is_not_split_never_has_playable_at() {
    let s = TestServer::start().await;
    let clip = gop_clip(s.dir.path(), 14);
    let j = s
        .succeeded(&clip, r#"{"outputs":[{"preset":"hls-abr"}],"split":"off"}"#)
        .await;
    assert_eq!(j.playable_at, None);
    let raw: serde_json::Value = s.get_json(&format!("/v1/jobs/{}", j.id)).await;
    assert!(raw.get("playable_at").is_none(), "{raw}");
    let events = sse_events(s.base.clone(), j.id.clone()).await;
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|(e, _)| e == "job"),
        "{:?}",
        events.iter().map(|(e, _)| e).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_job_view_says_whether_it_was_split_and_why_not() {
    let s = TestServer::start_with(|c| c.allow_private_urls = true).await;
    // gop_clip always writes long.mp4: keep each under its own name.
    let keep = |from: std::path::PathBuf, name: &str| {
        let to = s.dir.path().join(name);
        std::fs::rename(from, &to).unwrap();
        to
    };
    let long = keep(gop_clip(s.dir.path(), 14), "fourteen.mp4");
    let short = keep(gop_clip(s.dir.path(), 2), "two.mp4");
    let split_of = |v: &JobView| v.split.clone().expect("the job view's split");
    let cancel = |id: String| {
        let s = &s;
        async move {
            s.http
                .post(s.url(&format!("/v1/jobs/{id}/cancel")))
                .send()
                .await
                .unwrap();
        }
    };

    let yes = s
        .submit_ok(
            &long,
            r#"{"outputs":[{"preset":"hls-abr"}],"split":{"segment_seconds":4}}"#,
        )
        .await;
    let v = split_of(&yes);
    assert!(v.applied, "{v:?}");
    assert_eq!((v.segment_seconds, v.ranges), (Some(4), Some(4)));
    assert_eq!(v.reason, None);
    cancel(yes.id.clone()).await;

    for (file, split, reason) in [
        (&long, r#""off""#, "off"),
        (&short, r#""auto""#, "too_short"),
    ] {
        let j = s
            .submit_ok(
                file,
                &format!(r#"{{"outputs":[{{"preset":"hls-abr"}}],"split":{split}}}"#),
            )
            .await;
        let v = split_of(&s.job(&j.id).await);
        assert!(!v.applied);
        assert_eq!(v.reason.as_deref(), Some(reason), "{v:?}");
        assert!(!v.message.unwrap_or_default().is_empty());
        cancel(j.id).await;
    }

    // A URL input is not probed at admission: one task, whose probe decides (see
    // url_tus_and_key_inputs_split_once_their_first_task_has_probed_them).
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .json(&serde_json::json!({
            "input": {"url": "http://127.0.0.1:9/long.mp4"},
            "outputs": [{"preset": "hls-abr"}],
            "split": {"segment_seconds": 4}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let raw: serde_json::Value = r.json().await.unwrap();
    assert_eq!(raw["split"]["applied"], false, "{raw}");
    assert_eq!(raw["split"]["reason"], "pending", "{raw}");
    assert!(
        raw["split"]["message"]
            .as_str()
            .unwrap()
            .contains("first task"),
        "{raw}"
    );
    assert_eq!(raw["tasks"].as_array().unwrap().len(), 1, "{raw}");
}

fn split_of(v: &JobView) -> reelay_protocol::SplitView {
    v.split.clone().expect("the job view's split")
}

/// A split job made from an input admission could not probe: its one `transcode` task
/// fetched and probed it, then grew the split graph (it stays in the task list, succeeded).
async fn check_grown_split(s: &TestServer, job: &JobView, dir: &Path, frames_in: u64) {
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let v = split_of(&s.job(&job.id).await);
    assert!(v.applied, "{v:?}");
    assert_eq!((v.segment_seconds, v.ranges), (Some(4), Some(4)), "{v:?}");
    let kinds: Vec<&str> = job.tasks.iter().map(|t| t.kind.as_str()).collect();
    // The grower (no output stays whole here, so no second transcode task).
    assert_eq!(
        kinds.iter().filter(|k| **k == "transcode").count(),
        1,
        "{kinds:?}"
    );
    for k in ["split", "encode_audio", "stitch"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    assert_eq!(
        kinds.iter().filter(|k| **k == "encode_segment").count(),
        4,
        "{kinds:?}"
    );
    assert!(
        job.tasks.iter().all(|t| t.status == "succeeded"),
        "{:?}",
        job.tasks
    );
    let mp4 = save(
        s,
        &format!("/v1/jobs/{}/outputs/mp4-360p.mp4", job.id),
        dir,
        &format!("{}.mp4", job.id),
    )
    .await;
    assert_eq!(frames(&mp4), frames_in);
    assert_dts_increasing(&mp4);
    let p = ffprobe_bytes(&std::fs::read(&mp4).unwrap(), "mp4");
    assert_eq!(p.codec("audio").as_deref(), Some("aac"));
    assert!(
        (p.duration() - frames_in as f64 / 25.0).abs() < 0.1,
        "{}",
        p.duration()
    );
    assert_eq!(check_hls(s, job, dir).await, frames_in);
    wait_no_intermediates(s, &job.id).await;
}

const GROWN_SPEC: &str =
    r#""outputs":[{"preset":"mp4-360p"},{"preset":"hls-abr"}],"split":{"segment_seconds":4}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn url_tus_and_key_inputs_split_once_their_first_task_has_probed_them() {
    let s = TestServer::start_with(|c| {
        c.allow_private_urls = true;
        c.key_input_prefix = Some("imports".into());
    })
    .await;
    let clip = gop_clip(s.dir.path(), 14);
    let frames_in = frames(&clip);
    assert_eq!(frames_in, 14 * 25);
    let bytes = std::fs::read(&clip).unwrap();
    let d = tempfile::tempdir().unwrap();

    // A URL input, served by a local HTTP server.
    let served = bytes.clone();
    let app = axum::Router::new().route(
        "/long.mp4",
        axum::routing::get(move || async move { served.clone() }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let submit = |body: String| {
        s.http
            .post(s.url("/v1/jobs"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = submit(format!(
        r#"{{"input":{{"url":"{origin}/long.mp4"}},{GROWN_SPEC}}}"#
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let queued: serde_json::Value = r.json().await.unwrap();
    // Undecided until the first task has probed the input.
    assert_eq!(queued["split"]["applied"], false, "{queued}");
    assert_eq!(queued["split"]["reason"], "pending", "{queued}");
    assert_eq!(queued["tasks"].as_array().unwrap().len(), 1, "{queued}");
    let url_job = s
        .wait(queued["id"].as_str().unwrap(), Duration::from_secs(120))
        .await;
    check_grown_split(&s, &url_job, d.path(), frames_in).await;

    // A tus upload.
    let created = s
        .http
        .post(s.url("/v1/uploads"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", bytes.len().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let loc = created.headers()["location"].to_str().unwrap().to_string();
    let patched = s
        .http
        .patch(s.url(&loc))
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 204);
    let upload = loc.rsplit('/').next().unwrap();
    let r = submit(format!(
        r#"{{"input":{{"upload":"{upload}"}},{GROWN_SPEC}}}"#
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let j: JobView = r.json().await.unwrap();
    let tus_job = s.wait(&j.id, Duration::from_secs(120)).await;
    check_grown_split(&s, &tus_job, d.path(), frames_in).await;

    // A key input already in storage.
    s.state
        .storage
        .put_file("imports/long.mp4", &clip)
        .await
        .unwrap();
    let r = submit(format!(
        r#"{{"input":{{"key":"imports/long.mp4"}},{GROWN_SPEC}}}"#
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let j: JobView = r.json().await.unwrap();
    let key_job = s.wait(&j.id, Duration::from_secs(120)).await;
    check_grown_split(&s, &key_job, d.path(), frames_in).await;
    // The key input is the user's: still there.
    assert!(s.state.storage.head("imports/long.mp4").await.is_ok());

    // A short URL input: probed, not split, encoded by its one task.
    let short = gop_clip_sized(d.path(), 5, "160x90");
    let short_bytes = std::fs::read(&short).unwrap();
    let app = axum::Router::new().route(
        "/short.mp4",
        axum::routing::get(move || async move { short_bytes.clone() }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let r = submit(format!(
        r#"{{"input":{{"url":"{origin}/short.mp4"}},{GROWN_SPEC}}}"#
    ))
    .await
    .unwrap();
    let j: JobView = r.json().await.unwrap();
    let done = s.wait(&j.id, Duration::from_secs(120)).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    assert_eq!(done.tasks.len(), 1, "{:?}", done.tasks);
    // Decided by the probe: the view says why not.
    let v = split_of(&s.job(&done.id).await);
    assert!(!v.applied);
    assert_eq!(v.reason.as_deref(), Some("too_short"), "{v:?}");
}

/// A ladder output's rung `k`: its segments fetched and joined into one file.
async fn fetch_rung(s: &TestServer, job: &str, k: usize, dir: &Path) -> std::path::PathBuf {
    let base = format!("/v1/jobs/{job}/outputs/hls-abr/v{k}");
    let (st, pl) = s.get_bytes(&format!("{base}/index.m3u8")).await;
    assert_eq!(st, 200, "{base}");
    let mut joined = vec![];
    for seg in segment_uris(&String::from_utf8(pl).unwrap()) {
        let (st, bytes) = s.get_bytes(&format!("{base}/{seg}")).await;
        assert_eq!(st, 200, "{base}/{seg}");
        joined.extend(bytes);
    }
    let p = dir.join(format!("{job}-v{k}.ts"));
    std::fs::write(&p, &joined).unwrap();
    p
}

/// Bytes of the video stream's packets: the unsplit rung's segments carry its audio too, the
/// split one's an audio group of their own.
fn video_bytes(file: &Path) -> u64 {
    probe_lines(
        file,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=size",
            "-of",
            "csv=p=0",
        ],
    )
    .iter()
    .filter_map(|l| l.parse::<u64>().ok())
    .sum()
}

/// Issue 13's bar for the ladder: every rung of the split job is within 0.1 dB PSNR of the
/// unsplit job's same rung against the source, and within ±5 % of its video size, at a range
/// length the split path uses (4 s here: 4 ranges of a 16 s clip with noise, the 480p and 360p
/// rungs). Measured: before capped CRF rungs and the pre-roll (x264 ABR rungs, each range a
/// fresh encode) the split rungs came out 0.11 and 0.16 dB lower (SSIM 0.0001-0.0002 lower);
/// with them +0.02 and -0.02 dB, video +1.5 % and -0.8 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_rungs_match_the_unsplit_ones_in_quality_and_size() {
    let s = TestServer::start().await;
    let clip = noisy_gop_clip(s.dir.path(), 16, "854x480");
    let split = s
        .succeeded(
            &clip,
            r#"{"outputs":[{"preset":"hls-abr"}],"split":{"segment_seconds":4}}"#,
        )
        .await;
    let whole = s
        .succeeded(&clip, r#"{"outputs":[{"preset":"hls-abr"}],"split":"off"}"#)
        .await;
    assert_eq!(
        split
            .tasks
            .iter()
            .filter(|t| t.kind == "encode_segment")
            .count(),
        4,
        "{:?}",
        split.tasks
    );
    let d = tempfile::tempdir().unwrap();
    for k in 0..2 {
        let a = fetch_rung(&s, &split.id, k, d.path()).await;
        let b = fetch_rung(&s, &whole.id, k, d.path()).await;
        let (a_bytes, b_bytes) = (video_bytes(&a), video_bytes(&b));
        assert_eq!(frames(&a), 16 * 25, "v{k}");
        assert_eq!(frames(&a), frames(&b), "v{k}");
        let ((ap, as_), (bp, bs)) = (quality_against(&a, &clip), quality_against(&b, &clip));
        let ratio = a_bytes as f64 / b_bytes as f64;
        println!(
            "v{k}: split PSNR {ap:.3} dB SSIM {as_:.4} {a_bytes} B, unsplit {bp:.3} dB {bs:.4} {b_bytes} B ({:+.1} %)",
            (ratio - 1.0) * 100.0
        );
        // PSNR, the stricter of the issue's two measures here: SSIM moved by 0.0002 where
        // PSNR moved by 0.16 dB.
        assert!(
            (ap - bp).abs() <= 0.1,
            "v{k}: split PSNR {ap:.3} dB SSIM {as_:.4}, unsplit {bp:.3} dB SSIM {bs:.4}"
        );
        assert!(
            (0.95..=1.05).contains(&ratio),
            "v{k}: split {a_bytes} B, unsplit {b_bytes} B"
        );
    }
}
