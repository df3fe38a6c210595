//! Test harness: a real reelay cluster (SQLite, local storage, real ffmpeg) on a loopback port,
//! plus clip generation and ffprobe checks.
#![allow(dead_code)]

use reelay_protocol::{JobStatus, JobView};
use reelay_server::config::Config;
use reelay_server::state::AppState;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

pub struct TestServer {
    pub base: String,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pool: Arc<reelay_server::worker::WorkerPool>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config {
            data_dir: dir.path().join("data"),
            workers: 2,
            lease_seconds: 5,
            poll_interval_ms: 50,
            ..Config::default()
        };
        tweak(&mut cfg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let opts = reelay_server::serve::HttpOptions::from_config(&cfg).unwrap();
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", listener.local_addr().unwrap());
        let workers = cfg.workers as u32;
        let state = reelay_server::build_state(cfg, workers).await.unwrap();
        let pool = reelay_server::worker::WorkerPool::new(state.clone());
        tokio::spawn(pool.clone().run());
        let app = reelay_server::api::router(state.clone());
        tokio::spawn(reelay_server::serve::serve(
            listener,
            app,
            opts,
            tokio_util::sync::CancellationToken::new(),
        ));
        TestServer {
            base,
            state,
            dir,
            http: reqwest::Client::new(),
            pool,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Multipart: `spec`, then `file` as `clip.mp4`.
    pub async fn submit_file(&self, file: &Path, spec: &str) -> reqwest::Response {
        self.post_job(spec, vec![], file, "clip.mp4").await
    }

    /// Multipart: `spec`, then the side `parts` in order (`(part name, bytes, file name)`: the
    /// job's caption files, its watermark image), then `file` under its own name.
    pub async fn submit_parts(
        &self,
        spec: &str,
        parts: Vec<(&str, Vec<u8>, &str)>,
        file: &Path,
    ) -> reqwest::Response {
        let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
        self.post_job(spec, parts, file, &file_name).await
    }

    async fn post_job(
        &self,
        spec: &str,
        parts: Vec<(&str, Vec<u8>, &str)>,
        file: &Path,
        file_name: &str,
    ) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new().text("spec", spec.to_string());
        for (name, bytes, part_file_name) in parts {
            form = form.part(
                name.to_string(),
                reqwest::multipart::Part::bytes(bytes).file_name(part_file_name.to_string()),
            );
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(std::fs::read(file).unwrap())
                .file_name(file_name.to_string()),
        );
        self.http
            .post(self.url("/v1/jobs"))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn submit_ok(&self, file: &Path, spec: &str) -> JobView {
        let r = self.submit_file(file, spec).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 202, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    pub async fn job(&self, id: &str) -> JobView {
        let r = self
            .http
            .get(self.url(&format!("/v1/jobs/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub async fn wait(&self, id: &str, timeout: Duration) -> JobView {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let j = self.job(id).await;
            if j.status.is_terminal() {
                return j;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} still {:?} after {timeout:?}",
                j.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&JobView) -> bool,
    ) -> JobView {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let j = self.job(id).await;
            if pred(&j) {
                return j;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} never matched; last {j:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET `path` and parse the JSON answer (panics on a transport or parse error).
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    pub async fn succeeded(&self, file: &Path, spec: &str) -> JobView {
        let j = self.submit_ok(file, spec).await;
        let j = self.wait(&j.id, Duration::from_secs(120)).await;
        assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
        j
    }
}

pub fn ffmpeg(args: &[&str]) {
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg must be installed (make test installs it)");
    assert!(st.success(), "ffmpeg {args:?} failed");
}

/// A `secs`-long `w`x`h` H.264 clip, with a sine tone when `audio`.
pub fn clip(dir: &Path, name: &str, w: u32, h: u32, secs: f64, audio: bool) -> PathBuf {
    lavfi_clip(
        dir,
        name,
        &format!("testsrc2=size={w}x{h}:rate=25"),
        secs,
        audio,
    )
}

/// [`clip`] of an all-black picture: whatever a test finds bright was drawn by reelay
/// (a watermark, burnt-in captions).
pub fn black_clip(dir: &Path, name: &str, w: u32, h: u32, secs: f64, audio: bool) -> PathBuf {
    lavfi_clip(
        dir,
        name,
        &format!("color=black:size={w}x{h}:rate=25"),
        secs,
        audio,
    )
}

/// An H.264 clip of the lavfi video source `video` for `secs`, with a sine tone when `audio`.
fn lavfi_clip(dir: &Path, name: &str, video: &str, secs: f64, audio: bool) -> PathBuf {
    let out = dir.join(name);
    let src = format!("{video}:duration={secs}");
    let tone = format!("sine=frequency=440:duration={secs}");
    let o = out.to_str().unwrap();
    if audio {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &src,
            "-f",
            "lavfi",
            "-i",
            &tone,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
            o,
        ]);
    } else {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &src,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            o,
        ]);
    }
    out
}

/// A `secs`-long `size` (`WxH`) testsrc2 clip whose audio is the lavfi source `audio`
/// (e.g. a quiet or loud tone), AAC at 128k in MP4: input for loudness tests.
pub fn clip_with_audio(dir: &Path, name: &str, size: &str, secs: u32, audio: &str) -> PathBuf {
    let out = dir.join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate=25:duration={secs}"),
        "-f",
        "lavfi",
        "-i",
        audio,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-shortest",
        out.to_str().unwrap(),
    ]);
    out
}

/// Integrated loudness (LUFS) of a file by ffmpeg's own EBU R128 meter (`ebur128`, not the
/// `loudnorm` reelay uses, so a test measures independently of the code under test).
pub fn integrated_lufs(file: &Path) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(file)
        .args(["-vn", "-af", "ebur128", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let summary = err.rsplit("Summary:").next().unwrap();
    let line = summary
        .lines()
        .find(|l| l.trim_start().starts_with("I:"))
        .unwrap_or_else(|| panic!("no integrated loudness in {summary}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// PSNR (dB) and SSIM of `out` against `source`, scaled to `out`'s size, by ffmpeg's own
/// `psnr` and `ssim` filters (the graph the quality receipts fall back to): what a test holds
/// the encoder's receipts, or a split job's combined ones, against.
pub fn quality_against(out: &Path, source: &Path) -> (f64, f64) {
    let run = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-i"])
        .arg(out)
        .arg("-i")
        .arg(source)
        .args([
            "-filter_complex",
            &reelay_media::quality::filter_graph(0, None),
            "-an",
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let (psnr, ssim) = reelay_media::quality::parse_quality(&stderr).unwrap();
    (psnr.expect("a finite PSNR"), ssim)
}

/// The frame at `at` seconds (the first frame when `None`) of a downloaded media file as
/// 8-bit luma, one byte a pixel.
pub fn frame_luma(bytes: &[u8], ext: &str, at: Option<f64>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(format!("in.{ext}"));
    std::fs::write(&f, bytes).unwrap();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error"]);
    if let Some(at) = at {
        cmd.args(["-ss", &format!("{at:.3}")]);
    }
    let out = cmd
        .arg("-i")
        .arg(&f)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[derive(Debug, serde::Deserialize)]
pub struct Probed {
    pub streams: Vec<serde_json::Value>,
    pub format: serde_json::Value,
}

impl Probed {
    pub fn stream(&self, kind: &str) -> Option<&serde_json::Value> {
        self.streams
            .iter()
            .find(|s| s["codec_type"] == kind && s["disposition"]["attached_pic"] != 1)
    }
    pub fn codec(&self, kind: &str) -> Option<String> {
        self.stream(kind)
            .and_then(|s| s["codec_name"].as_str().map(String::from))
    }
    pub fn dims(&self) -> Option<(u64, u64)> {
        let v = self.stream("video")?;
        Some((v["width"].as_u64()?, v["height"].as_u64()?))
    }
    pub fn duration(&self) -> f64 {
        self.format["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0)
    }
}

/// ffprobe bytes the way a user would after downloading them.
pub fn ffprobe_bytes(bytes: &[u8], ext: &str) -> Probed {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(format!("probe.{ext}"));
    std::fs::write(&f, bytes).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
