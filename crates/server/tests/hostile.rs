//! A hostile-input corpus, generated here: each file is refused with a clear code or processed
//! safely, nothing outside the job's working directory is read (a planted secret never shows up),
//! and the service stays up and keeps encoding.

mod common;

use common::*;
use reelay_protocol::{ErrorBody, JobStatus, JobView};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECRET: &str = "PLANTED-SECRET-7f3a9c";

enum Expect {
    /// 422 at upload with this code.
    Refused(&'static str),
    /// Accepted; the job must end succeeded (processed safely).
    Processed,
    /// Accepted or refused, but never a crash, a leak or a hang: any terminal state is fine.
    Survives,
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[tokio::test]
async fn hostile_corpus_is_refused_or_processed_safely() {
    let s = TestServer::start_with(|c| {
        c.policy.max_duration_seconds = 60.0;
        c.stall_timeout_seconds = 30;
    })
    .await;
    let dir = s.dir.path();
    let secret = write(dir, "secret.txt", SECRET.as_bytes());
    let sp = secret.display().to_string();
    let mut corpus: Vec<(&str, PathBuf, Expect)> = vec![
        ("hls playlist -> local file", write(dir, "a.mp4", format!("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{sp}\n#EXT-X-ENDLIST\n").as_bytes()), Expect::Refused("unsupported_format")),
        ("hls playlist -> metadata URL", write(dir, "b.mp4", b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://169.254.169.254/latest/meta-data/x.ts\n#EXT-X-ENDLIST\n"), Expect::Refused("unsupported_format")),
        ("hls master -> local variant", write(dir, "c.m3u8", format!("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nfile://{sp}\n").as_bytes()), Expect::Refused("unsupported_format")),
        ("concat list -> local file", write(dir, "d.mov", format!("ffconcat version 1.0\nfile '{sp}'\n").as_bytes()), Expect::Refused("unsupported_format")),
        ("concat list -> http URL", write(dir, "e.mov", b"ffconcat version 1.0\nfile 'http://127.0.0.1:9/x.mp4'\n"), Expect::Refused("unsupported_format")),
    ];

    // A real WebM whose name says .mp4: the format is probed, not guessed from the name.
    let webm = dir.join("liar.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=1",
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-f",
        "webm",
        webm.to_str().unwrap(),
    ]);
    corpus.push(("webm named .mp4", webm, Expect::Processed));

    // A header claiming dimensions beyond the policy (16384 wide, in an allowed container).
    let wide = dir.join("wide.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=black:size=16384x16:rate=1:duration=1",
        "-c:v",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        wide.to_str().unwrap(),
    ]);
    corpus.push((
        "enormous dimensions",
        wide,
        Expect::Refused("dimensions_too_large"),
    ));

    // Hundreds of streams.
    let many = dir.join("many.mkv");
    let mut args: Vec<String> = [
        "-f",
        "lavfi",
        "-i",
        "sine=duration=0.2",
        "-f",
        "lavfi",
        "-i",
        "color=size=16x16:duration=0.2",
    ]
    .map(String::from)
    .to_vec();
    args.extend(["-map".into(), "1:v".into()]);
    for _ in 0..200 {
        args.extend(["-map".into(), "0:a".into()]);
    }
    args.extend(
        [
            "-c:a",
            "pcm_s16le",
            "-c:v",
            "rawvideo",
            many.to_str().unwrap(),
        ]
        .map(String::from),
    );
    ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>());
    corpus.push(("200 streams", many, Expect::Refused("too_many_streams")));

    // Decompression-bomb-like: a tiny file that decodes to 8K frames (the policy's maximum size).
    let bomb = dir.join("bomb.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:size=7680x4320:rate=5:duration=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "51",
        bomb.to_str().unwrap(),
    ]);
    assert!(
        std::fs::metadata(&bomb).unwrap().len() < 200_000,
        "the bomb is tiny on disk"
    );
    corpus.push(("tiny file, 8K decode", bomb, Expect::Survives));

    // Longer than the policy allows (the same check a forged duration header meets).
    let long = dir.join("long.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=size=16x16:rate=1:duration=120",
        "-c:v",
        "rawvideo",
        long.to_str().unwrap(),
    ]);
    corpus.push(("too long", long, Expect::Refused("input_too_long")));

    // Plain garbage with a video extension and a NUL-laden name-like payload.
    corpus.push((
        "binary garbage",
        write(
            dir,
            "g.mkv",
            &[0x1A, 0x45, 0xDF, 0xA3, 0xFF, 0xFF, 0x00, 0x00, 0x01],
        ),
        Expect::Refused("corrupt_input"),
    ));

    let spec = r#"{"outputs":[{"preset":"mp4-360p"},{"preset":"thumbnail"}]}"#;
    for (what, file, expect) in &corpus {
        let r = s.submit_file(file, spec).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(!text.contains(SECRET), "{what}: secret leaked in {text}");
        match expect {
            Expect::Refused(code) => {
                let body: ErrorBody = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{what}: {status} {text}"));
                assert_eq!(
                    (status, body.error.code.as_str()),
                    (422, *code),
                    "{what}: {}",
                    body.error.message
                );
            }
            Expect::Processed | Expect::Survives => {
                if status == 422 && matches!(expect, Expect::Survives) {
                    continue;
                }
                assert_eq!(status, 202, "{what}: {text}");
                let j: JobView = serde_json::from_str(&text).unwrap();
                let j = s.wait(&j.id, Duration::from_secs(180)).await;
                if matches!(expect, Expect::Processed) {
                    assert_eq!(j.status, JobStatus::Succeeded, "{what}: {j:?}");
                }
                let shown = serde_json::to_string(&j).unwrap();
                assert!(!shown.contains(SECRET), "{what}: secret leaked in {shown}");
                for o in &j.outputs {
                    let (_, bytes) = s.get_bytes(&o.url).await;
                    assert!(
                        !String::from_utf8_lossy(&bytes).contains(SECRET),
                        "{what}: secret inside {}",
                        o.name
                    );
                }
            }
        }
        assert_eq!(
            s.http.get(s.url("/healthz")).send().await.unwrap().status(),
            200,
            "{what}: service down"
        );
    }
    // Still encoding normally afterwards.
    let good = clip(dir, "good.mp4", 160, 120, 1.0, true);
    s.succeeded(&good, spec).await;
}

/// A FLAC of `secs` seconds of silence at 8 kHz whose STREAMINFO claims `claimed_secs`: ffprobe
/// believes the header, the decoder reads on to the end.
fn lying_flac(dir: &Path, name: &str, secs: u32, claimed_secs: u64) -> PathBuf {
    let honest = dir.join(format!("honest-{name}"));
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("anullsrc=r=8000:cl=mono:d={secs}"),
        "-c:a",
        "flac",
        honest.to_str().unwrap(),
    ]);
    let mut b = std::fs::read(&honest).unwrap();
    assert_eq!(&b[..4], b"fLaC");
    assert_eq!(b[4] & 0x7f, 0, "STREAMINFO comes first");
    // STREAMINFO starts at byte 8; bytes 10..18 of it hold sample rate (20 bits), channels (3),
    // bits per sample (5) and the total sample count (36).
    let at = 8 + 10;
    let packed = u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    let rate = packed >> 44;
    assert_eq!(rate, 8000);
    let forged = (packed & !((1u64 << 36) - 1)) | (rate * claimed_secs);
    b[at..at + 8].copy_from_slice(&forged.to_be_bytes());
    let liar = dir.join(name);
    std::fs::write(&liar, &b).unwrap();
    liar
}

/// The FLAC of the issue: its header says 1 s, it holds far more. The encode is killed once its
/// output runs past the probed duration by the allowed margin, the job fails permanently with its
/// own code, and the work never feeds the encode speed the edge places by.
#[tokio::test]
async fn forged_duration_header_is_killed_past_the_probed_length() {
    let s = TestServer::start_with(|c| c.policy.max_duration_seconds = 60.0).await;
    let flac = lying_flac(s.dir.path(), "liar.flac", 600, 1);
    assert!(std::fs::metadata(&flac).unwrap().len() < 1_000_000, "tiny");
    let j = s
        .submit_ok(&flac, r#"{"outputs":[{"preset":"audio-aac"}]}"#)
        .await;
    let j = s.wait(&j.id, Duration::from_secs(60)).await;
    assert_eq!(j.status, JobStatus::Failed, "{j:?}");
    let e = j.error.unwrap();
    assert_eq!(e.code, "duration_mismatch", "{}", e.message);
    assert_eq!(j.attempts, 1, "permanent: not retried");
    let load: serde_json::Value = s.get_json("/v1/load").await;
    assert!(
        load["encode_speed"].is_null(),
        "a killed encode must not feed encode_speed: {load}"
    );
}

/// `-t` from the policy bounds what is read from every input, whatever its header says: a
/// 40 s FLAC claiming 1 s, under a 5 s policy, yields at most 5 s.
#[tokio::test]
async fn policy_max_duration_bounds_what_is_read_from_every_input() {
    let s = TestServer::start_with(|c| c.policy.max_duration_seconds = 5.0).await;
    let flac = lying_flac(s.dir.path(), "liar40.flac", 40, 1);
    let j = s
        .succeeded(&flac, r#"{"outputs":[{"preset":"audio-aac"}]}"#)
        .await;
    let (_, bytes) = s.get_bytes(&j.outputs[0].url).await;
    let d = ffprobe_bytes(&bytes, "m4a").duration();
    assert!(d > 0.5 && d <= 5.2, "output lasts {d} s");
}

/// A stream whose header (and first frames) say 64x64 and which then switches to frames larger
/// than the policy allows: the decoder refuses them (`-max_pixels`) and the job fails with
/// `dimensions_too_large`, whether the large part is most of the stream (ffmpeg gives up) or a
/// short tail (ffmpeg would finish without it).
#[tokio::test]
async fn a_resolution_switch_past_the_limit_is_refused_by_the_decoder() {
    let s = TestServer::start_with(|c| {
        c.policy.max_width = 320;
        c.policy.max_height = 240;
    })
    .await;
    let dir = s.dir.path();
    let h264 = |name: &str, size: &str, secs: f64| {
        let p = dir.join(name);
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=25:duration={secs}"),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-f",
            "h264",
            p.to_str().unwrap(),
        ]);
        std::fs::read(p).unwrap()
    };
    for (name, small_secs, big_secs) in [("mostly-big.mkv", 1.0, 3.0), ("big-tail.mkv", 3.0, 0.4)] {
        let mut es = h264("small.h264", "64x64", small_secs);
        es.extend(h264("big.h264", "640x480", big_secs));
        let joined = dir.join("joined.h264");
        std::fs::write(&joined, es).unwrap();
        let mkv = dir.join(name);
        ffmpeg(&[
            "-f",
            "h264",
            "-r",
            "25",
            "-i",
            joined.to_str().unwrap(),
            "-c",
            "copy",
            mkv.to_str().unwrap(),
        ]);
        let j = s
            .submit_ok(&mkv, r#"{"outputs":[{"preset":"mp4-360p"}]}"#)
            .await;
        let j = s.wait(&j.id, Duration::from_secs(60)).await;
        assert_eq!(j.status, JobStatus::Failed, "{name}: {j:?}");
        let e = j.error.unwrap();
        assert_eq!(e.code, "dimensions_too_large", "{name}: {}", e.message);
        assert_eq!(j.attempts, 1, "{name}: permanent");
    }
}

/// An output that hits the file size limit (RLIMIT_FSIZE, SIGXFSZ) would hit it again: the job
/// fails at once with `output_too_large` instead of being retried as a crash.
#[tokio::test]
async fn the_output_size_limit_fails_the_job_without_retries() {
    let s = TestServer::start_with(|c| c.tools.limits.file_size_bytes = 200_000).await;
    let clip = clip(s.dir.path(), "c.mp4", 320, 240, 2.0, false);
    let spec = r#"{"outputs":[{"name":"big","container":"mp4","video":{"codec":"h264","bitrate_kbps":8000},"audio":{"codec":"none"}}]}"#;
    let j = s.submit_ok(&clip, spec).await;
    let j = s.wait(&j.id, Duration::from_secs(60)).await;
    assert_eq!(j.status, JobStatus::Failed, "{j:?}");
    let e = j.error.unwrap();
    assert_eq!(e.code, "output_too_large", "{}", e.message);
    assert_eq!(j.attempts, 1, "not retried");
}

/// Writes `head` and `body` on a fresh connection, optionally half-closes, then waits (at most
/// `give_up`) for the answer: its status (None if the server closed without one), the raw text,
/// and how long it took.
async fn send_raw(
    addr: &str,
    head: &str,
    body: &[u8],
    half_close: bool,
    give_up: Duration,
) -> (Option<u16>, String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(head.as_bytes()).await;
    let _ = tcp.write_all(body).await;
    if half_close {
        let _ = tcp.shutdown().await;
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(give_up, tcp.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok());
    (status, text, started.elapsed())
}

fn json_head(content_length: usize) -> String {
    format!("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n")
}

const MULTIPART_HEAD: &str = "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\nContent-Length: 100000\r\n\r\n";

/// Every way of starting a request body and then stalling gets a JSON 408 once nothing arrives
/// for the idle timeout, a body that keeps dripping gets one at the total deadline, a client
/// that gives up half-way gets a 400, and only a real overflow is a 413.
#[tokio::test]
async fn stalled_and_broken_request_bodies_get_clear_answers() {
    let s = TestServer::start_with(|c| {
        c.body_idle_timeout_seconds = 1;
        c.body_deadline_seconds = 3;
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let give_up = Duration::from_secs(10);
    let spec_part = "--XX\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n";
    let stalls: Vec<(&str, String, String)> = vec![
        ("JSON short of its Content-Length", json_head(1000), r#"{"outputs":"#.into()),
        (
            "chunked JSON that stops",
            "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
            "5\r\n{\"out\r\n".into(),
        ),
        ("multipart, nothing after the headers", MULTIPART_HEAD.into(), String::new()),
        (
            "multipart, spec part cut short",
            MULTIPART_HEAD.into(),
            format!("{spec_part}{{\"outputs\":"),
        ),
        (
            "multipart, file part stalls",
            MULTIPART_HEAD.into(),
            format!("{spec_part}{{\"outputs\":[{{\"preset\":\"mp4-360p\"}}]}}\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\n\r\nabc"),
        ),
    ];
    let runs = stalls.iter().map(|(what, head, body)| {
        let addr = addr.clone();
        async move {
            (
                *what,
                send_raw(&addr, head, body.as_bytes(), false, give_up).await,
            )
        }
    });
    for (what, (status, text, took)) in futures::future::join_all(runs).await {
        assert_eq!(status, Some(408), "{what}: after {took:?}: {text}");
        assert!(text.contains(r#""code":"body_timeout""#), "{what}: {text}");
        assert!(took < Duration::from_secs(4), "{what}: took {took:?}");
    }

    // A byte every 300 ms never trips the idle timeout; the 3 s deadline ends it.
    let drip = {
        let addr = addr.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let started = std::time::Instant::now();
            let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            tcp.write_all(json_head(1000).as_bytes()).await.unwrap();
            let (mut rd, mut wr) = tcp.into_split();
            let writer = tokio::spawn(async move {
                for _ in 0..100 {
                    if wr.write_all(b" ").await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
            let mut got = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(15), rd.read_to_end(&mut got)).await;
            writer.abort();
            (String::from_utf8_lossy(&got).to_string(), started.elapsed())
        })
    };
    let (text, took) = drip.await.unwrap();
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "drip: after {took:?}: {text}"
    );
    assert!(text.contains(r#""code":"body_timeout""#), "drip: {text}");
    assert!(took < Duration::from_secs(6), "drip took {took:?}");

    // The client sends part of its body and closes its side: a 400, not a 413.
    let (status, text, _) =
        send_raw(&addr, &json_head(1000), b"{\"outputs\":", true, give_up).await;
    assert_eq!(status, Some(400), "cut short: {text}");
    assert!(text.contains(r#""code":"body_incomplete""#), "{text}");
    let (status, text, _) = send_raw(
        &addr,
        MULTIPART_HEAD,
        format!("{spec_part}{{\"outputs\":").as_bytes(),
        true,
        give_up,
    )
    .await;
    assert_eq!(status, Some(400), "multipart cut short: {text}");

    // Too large is still 413.
    let big = format!(r#"{{"outputs":[{{"preset":"{}"}}]}}"#, "x".repeat(70_000));
    let (status, text, _) =
        send_raw(&addr, &json_head(big.len()), big.as_bytes(), false, give_up).await;
    assert_eq!(status, Some(413), "{text}");

    assert_eq!(
        s.http.get(s.url("/healthz")).send().await.unwrap().status(),
        200
    );
}

/// The issue's 150 stalled connections from one address: only `max_connections_per_client` of
/// them are held (each until the body idle timeout), the rest are turned away at once, and
/// health checks from that same address are still answered meanwhile.
#[tokio::test]
async fn one_client_holding_connections_cannot_starve_health_checks() {
    let s = TestServer::start_with(|c| {
        c.max_connections_per_client = 8;
        c.body_idle_timeout_seconds = 3;
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    // Client and server share this process: its descriptors count both ends.
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    // Warm up: the store's connection pool and the workers open their files first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.http.get(s.url("/readyz")).send().await.unwrap().status(),
        200
    );
    let before = fds();
    let stalled: Vec<_> = (0..150)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                send_raw(
                    &addr,
                    &json_head(1000),
                    b"{",
                    false,
                    Duration::from_secs(20),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = fds();
    eprintln!("descriptors: {before} before, {during} with 150 stalled clients connected");
    // The 8 held connections (both ends), refusals still lingering, the store's pool; unbounded,
    // this would be 300 more (150 on each end) until the clients gave up.
    assert!(during < before + 80, "{before} -> {during}");

    // Fresh connections from the same address while the budget is full.
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    for path in ["/healthz", "/readyz", "/v1/load"] {
        let t = std::time::Instant::now();
        let r = fresh().get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} while the budget is full");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{path} took {:?}",
            t.elapsed()
        );
    }
    let r = fresh().get(s.url("/v1/presets")).send().await.unwrap();
    assert_eq!(
        r.status(),
        429,
        "the API waits for the client's own connections"
    );
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");

    let (mut timed_out, mut turned_away, mut closed) = (0, 0, 0);
    for h in stalled {
        let (status, text, took) = h.await.unwrap();
        assert!(took < Duration::from_secs(6), "held for {took:?}: {text}");
        match status {
            Some(408) => timed_out += 1,
            Some(429) => turned_away += 1,
            None => closed += 1,
            other => panic!("{other:?}: {text}"),
        }
    }
    eprintln!("150 stalled: {timed_out} held until 408, {turned_away} answered 429, {closed} closed unanswered");
    assert!(timed_out <= 8, "{timed_out} connections held");
    assert_eq!(timed_out + turned_away + closed, 150);
    assert_eq!(closed, 0, "every client is told why");
    // The budget is free again.
    assert_eq!(
        fresh()
            .get(s.url("/v1/presets"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
