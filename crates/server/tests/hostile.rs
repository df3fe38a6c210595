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
