//! Resumable uploads through the edge, as the real binary: `reelay up` (two clusters and the
//! NGINX edge, open mode, free ports), then tus uploads created through the edge land on either
//! cluster and every later request of an upload (PATCH, HEAD, the job made from it) reaches the
//! cluster in its id; `reelay submit --resumable-above 0` through the edge gets its job, whose
//! MP4 ffprobe checks.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_reelay");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        // SIGTERM so `reelay up` stops its clusters and nginx; then make sure.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_request_of_an_upload_reaches_the_cluster_in_its_id() {
    if Command::new("nginx").arg("-v").output().is_err() {
        eprintln!("nginx not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (edge, ctl, aws, gcp) = (free_port(), free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("topology.toml"),
        format!(
            r#"state_dir = "state"
shutdown_grace_seconds = 2
anonymous = true
[edge]
listen = "127.0.0.1:{edge}"
control_listen = "127.0.0.1:{ctl}"
work_dir = "state/edge"
reload_min_interval_ms = 200
local_cluster = "aws"
[edge.health]
interval_ms = 300
timeout_ms = 300
fall = 2
rise = 1
[[edge.clusters]]
name = "aws"
url = "http://127.0.0.1:{aws}"
[[edge.clusters]]
name = "gcp"
url = "http://127.0.0.1:{gcp}"
[[clusters]]
name = "aws"
listen = "127.0.0.1:{aws}"
workers = 1
[[clusters]]
name = "gcp"
listen = "127.0.0.1:{gcp}"
workers = 1
"#
        ),
    )
    .unwrap();
    let _up = Up(Command::new(BIN)
        .args(["up", "--topology", "topology.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let base = format!("http://127.0.0.1:{edge}");
    let http = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = http
            .get(format!("{base}/edge/status"))
            .send()
            .and_then(|r| r.text())
            .map(|t| t.matches(r#""health":"up""#).count() == 2)
            .unwrap_or(false);
        if up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edge never saw both clusters up"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    let clip = dir.path().join("clip.mp4");
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
        .args(["-i", "testsrc2=size=320x240:rate=25:duration=2"])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(st.success());
    let bytes = std::fs::read(&clip).unwrap();

    // Uploads created through the edge, until both clusters hold one.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let r = http
            .post(format!("{base}/v1/uploads"))
            .header("tus-resumable", "1.0.0")
            .header("upload-length", bytes.len().to_string())
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let id = loc.rsplit('/').next().unwrap().to_string();
        let cluster = id.split('.').next().unwrap().to_string();
        if !seen.insert(cluster.clone()) {
            continue;
        }
        // Two PATCHes and a HEAD, all through the edge: each must find the upload.
        let half = bytes.len() / 2;
        for (off, part) in [(0, &bytes[..half]), (half, &bytes[half..])] {
            let r = http
                .patch(format!("{base}{loc}"))
                .header("tus-resumable", "1.0.0")
                .header("content-type", "application/offset+octet-stream")
                .header("upload-offset", off.to_string())
                .body(part.to_vec())
                .send()
                .unwrap();
            assert_eq!(r.status(), 204, "{id}: {:?}", r.text());
        }
        let r = http
            .head(format!("{base}{loc}"))
            .header("tus-resumable", "1.0.0")
            .send()
            .unwrap();
        assert_eq!(
            r.headers()["upload-offset"],
            bytes.len().to_string().as_str()
        );
        // The job from it is made where the bytes are.
        let r = http
            .post(format!("{base}{loc}/job"))
            .header("content-type", "application/json")
            .body(r#"{"outputs":[{"preset":"mp4-360p"}]}"#)
            .send()
            .unwrap();
        assert_eq!(r.status(), 202);
        let job: serde_json::Value = r.json().unwrap();
        let job_id = job["id"].as_str().unwrap().to_string();
        assert!(
            job_id.starts_with(&format!("{cluster}.")),
            "{job_id} from {id}"
        );
        // Its output, fetched through the edge, is what ffprobe calls H.264.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let j: serde_json::Value = http
                .get(format!("{base}/v1/jobs/{job_id}"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            match j["status"].as_str().unwrap() {
                "succeeded" => break,
                "failed" | "cancelled" => panic!("{j}"),
                _ => {}
            }
            assert!(Instant::now() < deadline, "{job_id} did not finish");
            std::thread::sleep(Duration::from_millis(200));
        }
        let mp4 = http
            .get(format!("{base}/v1/jobs/{job_id}/outputs/mp4-360p.mp4"))
            .send()
            .unwrap()
            .bytes()
            .unwrap();
        let out = dir.path().join(format!("{cluster}.mp4"));
        std::fs::write(&out, &mp4).unwrap();
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args([
                "-show_entries",
                "stream=codec_name,width,height",
                "-of",
                "csv=p=0",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&probe.stdout).trim(),
            "h264,320,240"
        );
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "uploads went to one cluster only: {seen:?}");

    // The CLI through the edge, resumable from the first byte: it gets its job.
    let out = Command::new(BIN)
        .args(["--server", &base, "submit"])
        .arg(&clip)
        .args(["--preset", "mp4-360p", "--resumable-above", "0", "--wait"])
        .env("REELAY_STATE_DIR", dir.path().join("cli-state"))
        .env_remove("REELAY_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("mp4-360p.mp4"), "{stdout}");
}
