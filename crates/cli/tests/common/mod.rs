//! The process-level test harness, written once: the real `reelay` binary as separate processes
//! (`serve`, `edge`, `up`), the nginx an edge supervises, tiny clips made with ffmpeg, and the
//! waiting, signalling and request helpers every test here needs.
//!
//! A test that needs two clouds behind an edge starts them with [`TwoClouds`]; everything it
//! starts is stopped when the value is dropped (an edge with SIGTERM, so its nginx stops too).
//! Two protected clusters that take each other's tasks are a [`stack::Stack`].
#![allow(dead_code)]

pub mod stack;

use reelay_edge::health::Health;
use reelay_edge::EdgeStatus;
use reelay_protocol::{ErrorBody, JobView};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_reelay");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A blocking client with a 15 s timeout that never goes through a proxy.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .no_proxy()
        .build()
        .unwrap()
}

/// Polls `f` every 50 ms until it returns a value; fails the test naming `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `sig` (`-TERM`, `-STOP`, ...) to `pid`, ignoring a process that is already gone.
pub fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Sends `sig` to a child that must still be there.
pub fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {}", child.id());
}

/// Alive and not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z')) | Some(Some('X')))
        })
        .unwrap_or(false)
}

/// Every process below `root` (children, grandchildren, …) with its command line.
pub fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut parent = std::collections::HashMap::new();
    let mut cmdline = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        parent.insert(pid, ppid);
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        cmdline.insert(pid, String::from_utf8_lossy(&cmd).replace('\0', " "));
    }
    let below = |mut pid: u32| {
        while let Some(&p) = parent.get(&pid) {
            if p == root {
                return true;
            }
            if p <= 1 {
                return false;
            }
            pid = p;
        }
        false
    };
    parent
        .keys()
        .filter(|p| below(**p))
        .map(|p| (*p, cmdline[p].clone()))
        .collect()
}

/// The ffmpeg processes of `job` below worker `root`: (pid, task key) where the key is the one
/// in the attempt's working directory (`work/{job}.{key}-a{n}/…`).
pub fn ffmpegs_of(root: u32, job: &str) -> Vec<(u32, String)> {
    let marker = format!("/work/{job}.");
    descendants(root)
        .into_iter()
        .filter(|(_, cmd)| cmd.starts_with("ffmpeg ") || cmd.contains("/ffmpeg "))
        .filter_map(|(pid, cmd)| {
            let rest = &cmd[cmd.find(&marker)? + marker.len()..];
            let key = rest.split('/').next()?;
            let key = key.rsplit_once("-a").map(|(k, _)| k).unwrap_or(key);
            Some((pid, key.to_string()))
        })
        .collect()
}

/// The number of video frames in an MP4 file's bytes (ffprobe, decoding every frame).
pub fn frames(bytes: &[u8]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.mp4");
    std::fs::write(&f, bytes).unwrap();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&f)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_end_matches(',')
        .parse()
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

/// A signing key `dir/issuer.key` (id `k1`); returns the trusted keys file clusters and edges
/// check signed tokens with.
pub fn keygen(dir: &Path) -> PathBuf {
    let out = Command::new(BIN)
        .args(["token", "keygen", "--id", "k1", "--out"])
        .arg(dir.join("issuer.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trusted = dir.join("trusted.keys");
    std::fs::write(&trusted, &out.stdout).unwrap();
    trusted
}

/// A token signed with [`keygen`]'s key, owned by `owner`, with these scopes.
pub fn signed_token(dir: &Path, owner: &str, scopes: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["token", "create", "--issuer-key"])
        .arg(dir.join("issuer.key"))
        .args(["--owner", owner]);
    for s in scopes {
        cmd.args(["--scope", s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Accepts connections and never answers: a job fetching from it stays "running" (or queued
/// behind one that does) for as long as the test needs, using no CPU. That makes load exactly
/// controllable on a 2-core machine.
pub fn stall_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/clip.mp4", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    url
}

/// Runs ffmpeg quietly, overwriting, and fails the test if it fails.
pub fn ffmpeg(args: &[&str]) {
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg must be installed (make test installs it)");
    assert!(st.success(), "ffmpeg {args:?}");
}

/// Writes `dir/name`: `secs` seconds of a `size` (`WxH`) H.264 test picture at 25 fps, with an
/// AAC sine tone when `audio`.
pub fn clip(dir: &Path, name: &str, size: &str, secs: u32, audio: bool) -> PathBuf {
    clip_with_gop(dir, name, "testsrc2", size, secs, audio, None)
}

/// [`clip`] of an all-black picture with a tone: any bright pixel in an output was drawn by
/// reelay (a watermark, burnt-in captions).
pub fn black_clip(dir: &Path, name: &str, size: &str, secs: u32) -> PathBuf {
    clip_with_gop(dir, name, "color=black", size, secs, true, None)
}

/// [`clip`] with a keyframe every second and audio: cuts into pieces of whole seconds (a
/// split job's ranges).
pub fn keyed_clip(dir: &Path, name: &str, size: &str, secs: u32) -> PathBuf {
    clip_with_gop(dir, name, "testsrc2", size, secs, true, Some(25))
}

/// `video` is a lavfi video source taking `size`, `rate` and `duration` (`testsrc2`,
/// `color=black`).
fn clip_with_gop(
    dir: &Path,
    name: &str,
    video: &str,
    size: &str,
    secs: u32,
    audio: bool,
    gop: Option<u32>,
) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
    ])
    .arg(format!(
        "{video}{sep}size={size}:rate=25:duration={secs}",
        sep = if video.contains('=') { ":" } else { "=" }
    ));
    if audio {
        cmd.args(["-f", "lavfi", "-i"])
            .arg(format!("sine=duration={secs}"));
    }
    cmd.args(["-c:v", "libx264", "-preset", "ultrafast"]);
    if let Some(gop) = gop {
        cmd.args(["-g", &gop.to_string()]);
    }
    if audio {
        cmd.args(["-c:a", "aac", "-shortest"]);
    }
    let st = cmd.arg(&out).status().unwrap();
    assert!(st.success());
    out
}

/// Runs the CLI against `server` (and `token`, if any) with no client settings leaking in from
/// the environment of the test run.
pub fn reelay(server: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("REELAY_SERVER", server)
        .env_remove("REELAY_TOKEN")
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("REELAY_TOKEN", t);
    }
    cmd.output().unwrap()
}

/// A job whose input is fetched from `input_url`, encoded with the smallest preset.
pub fn job_spec(input_url: &str) -> serde_json::Value {
    serde_json::json!({"input": {"url": input_url}, "outputs": [{"preset": "mp4-360p"}]})
}

/// Job ids per cluster (the part before the dot).
pub fn counts(ids: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for id in ids {
        *m.entry(id.split('.').next().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

/// GETs `url`, which must answer a JSON error body; returns the status and `Retry-After`.
pub fn get_json_error(
    client: &reqwest::blocking::Client,
    url: &str,
) -> (u16, Option<String>, ErrorBody) {
    let r = client.get(url).send().unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        r.headers().get("content-type").map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{url}"
    );
    let body: ErrorBody = r.json().unwrap();
    (status, retry, body)
}

/// GETs `url`: did it answer 200?
pub fn get_ok(url: &str) -> bool {
    reqwest::blocking::get(url).is_ok_and(|r| r.status() == 200)
}

/// GETs `url` and parses its JSON body; None on any failure (for polling).
pub fn try_get_json<T: serde::de::DeserializeOwned>(url: &str) -> Option<T> {
    reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?
        .json()
        .ok()
}

/// A `reelay` server process (`serve`, `api` or `worker`) on a loopback port, SIGKILLed (after
/// SIGCONT, in case a test stopped it) when dropped: what a crash looks like.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub base: String,
    /// A client that reaches it (with a client certificate, for one that wants it).
    pub client: reqwest::blocking::Client,
}

impl Server {
    /// Spawns `cmd` (which must listen on `127.0.0.1:port`) and waits up to 30 s for
    /// `/healthz` to answer 200.
    pub fn spawn(cmd: Command, port: u16) -> Server {
        Self::spawn_with(cmd, &format!("http://127.0.0.1:{port}"), port, &http())
    }

    /// [`Server::spawn`] for a server at `base` (`https://…` for one serving TLS), whose
    /// `/healthz` `client` can reach (with a client certificate, for one that wants it).
    pub fn spawn_with(
        mut cmd: Command,
        base: &str,
        port: u16,
        client: &reqwest::blocking::Client,
    ) -> Server {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let s = Server {
            child,
            port,
            base: base.to_string(),
            client: client.clone(),
        };
        let url = format!("{}/healthz", s.base);
        wait_until("the server to come up", Duration::from_secs(30), || {
            client.get(&url).send().ok().filter(|r| r.status() == 200)
        });
        s
    }

    pub fn base(&self) -> String {
        self.base.clone()
    }

    pub fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_child(&mut self.child, Stop::Kill);
    }
}

/// How a [`Guard`] stops its process.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// SIGKILL at once (after SIGCONT, in case the test stopped it).
    Kill,
    /// SIGTERM, up to this long to exit, then SIGKILL.
    Term(Duration),
}

/// A child process stopped (and reaped) when the guard is dropped, with the nginx it left behind
/// when it was an edge killed with SIGKILL (its pid file, if given).
pub struct Guard {
    pub child: Child,
    stop: Stop,
    nginx_pid_file: Option<PathBuf>,
}

impl Guard {
    pub fn new(child: Child, stop: Stop) -> Guard {
        Guard {
            child,
            stop,
            nginx_pid_file: None,
        }
    }

    /// Also stops the nginx whose pid is in `pid_file` (an edge killed with SIGKILL leaves
    /// nginx running by design).
    pub fn with_nginx(mut self, pid_file: PathBuf) -> Guard {
        self.nginx_pid_file = Some(pid_file);
        self
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        stop_child(&mut self.child, self.stop);
        if let Some(pid) = self
            .nginx_pid_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            if pid_alive(pid) {
                kill(pid, "-TERM");
            }
        }
    }
}

/// Stops `child` as `stop` says (SIGCONT first, in case a test stopped it) and reaps it.
fn stop_child(child: &mut Child, stop: Stop) {
    // Only a child not yet reaped: its pid cannot have been reused.
    let running = matches!(child.try_wait(), Ok(None));
    if running {
        kill(child.id(), "-CONT");
    }
    if let (true, Stop::Term(grace)) = (running, stop) {
        kill(child.id(), "-TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One cluster: `reelay serve` on its own address and data directory, anonymous clients
/// allowed (the tests that use it are about placement and routing), leases of 2 s.
pub struct Cluster {
    pub name: String,
    pub ip: String,
    pub port: u16,
    pub data: PathBuf,
    pub workers: u32,
    /// `--shutdown-grace-seconds`: how long a SIGTERMed cluster drains.
    pub grace: u32,
    /// A `--config` file, for settings that have no flag.
    pub config: Option<PathBuf>,
    pub child: Option<Child>,
}

impl Cluster {
    pub fn start(dir: &Path, name: &str, ip: &str, workers: u32) -> Cluster {
        Self::start_with(dir, name, ip, workers, 1, None)
    }

    /// With `toml` as its configuration file (settings that have no flag).
    pub fn start_with_config(
        dir: &Path,
        name: &str,
        ip: &str,
        workers: u32,
        toml: &str,
    ) -> Cluster {
        let path = dir.join(format!("{name}-{ip}.toml"));
        std::fs::write(&path, toml).unwrap();
        Self::start_with(dir, name, ip, workers, 1, Some(path))
    }

    pub fn start_with(
        dir: &Path,
        name: &str,
        ip: &str,
        workers: u32,
        grace: u32,
        config: Option<PathBuf>,
    ) -> Cluster {
        let mut c = Cluster {
            name: name.to_string(),
            ip: ip.to_string(),
            port: free_port(),
            data: Self::data_dir(dir, name, ip),
            workers,
            grace,
            config,
            child: None,
        };
        c.restart();
        c
    }

    /// Where [`Cluster::start`] keeps a cluster's data (a test may seed it first).
    pub fn data_dir(dir: &Path, name: &str, ip: &str) -> PathBuf {
        dir.join(format!("{name}-{ip}"))
    }

    pub fn base(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    /// Starts (again) on the same address and data dir; returns once `/readyz` says 200.
    pub fn restart(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", &format!("{}:{}", self.ip, self.port)]);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("--data-dir")
            .arg(&self.data)
            .args(["--cluster", &self.name])
            .args(["--workers", &self.workers.to_string()])
            .args(["--lease-seconds", "2"])
            .args(["--shutdown-grace-seconds", &self.grace.to_string()])
            .arg("--allow-private-urls");
        // These clusters serve anonymous clients through the edge, which a loopback cluster
        // refuses unless told (finding 2 of issue 12) — unless their config names trusted
        // keys: then they are protected, and the flag would be refused.
        let protected = self
            .config
            .as_ref()
            .and_then(|c| std::fs::read_to_string(c).ok())
            .is_some_and(|t| t.contains("trusted_keys"));
        if !protected {
            cmd.arg("--allow-anonymous");
        }
        let child = cmd
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = http();
        let url = format!("{}/readyz", self.base());
        wait_until(
            &format!("cluster {} ready", self.name),
            Duration::from_secs(30),
            || client.get(&url).send().ok().filter(|r| r.status() == 200),
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Submits straight to the cluster, behind the edge's back.
    pub fn submit_direct(&self, input_url: &str) -> String {
        let r = http()
            .post(format!("{}/v1/jobs", self.base()))
            .json(&job_spec(input_url))
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
        r.json::<JobView>().unwrap().id
    }

    pub fn job(&self, id: &str) -> Option<JobView> {
        http()
            .get(format!("{}/v1/jobs/{id}", self.base()))
            .send()
            .ok()?
            .json()
            .ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            kill(c.id(), "-CONT");
        }
        self.kill9();
    }
}

/// A cluster as edge.toml lists it: name, URL, weight.
pub type ClusterEntry = (&'static str, String, u32);

/// `reelay edge` with its own edge.toml and work dir, on free ports.
pub struct Edge {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    pub control: u16,
    pub child: Option<Child>,
    /// Set when nginx serves HTTPS (`tls_cert` in edge.toml): a client that trusts it.
    pub https: Option<reqwest::blocking::Client>,
}

impl Edge {
    /// Writes edge.toml (clusters as `(name, url, weight)`, `extra` appended to the top-level
    /// settings) and starts `reelay edge`; returns once nginx serves and every cluster is up.
    pub fn start(dir: &Path, clusters: &[ClusterEntry], extra: &str) -> Edge {
        Edge::start_serving(dir, clusters, extra, None)
    }

    /// [`Edge::start`] for an edge whose `extra` sets `tls_cert` and `tls_key`: nginx serves
    /// HTTPS, reached with `client` (which trusts that certificate).
    pub fn start_https(
        dir: &Path,
        clusters: &[ClusterEntry],
        extra: &str,
        client: reqwest::blocking::Client,
    ) -> Edge {
        Edge::start_serving(dir, clusters, extra, Some(client))
    }

    fn start_serving(
        dir: &Path,
        clusters: &[ClusterEntry],
        extra: &str,
        https: Option<reqwest::blocking::Client>,
    ) -> Edge {
        let mut edge = Self::unstarted_with(dir, https);
        std::fs::write(&edge.config, edge.toml(clusters, extra)).unwrap();
        edge.restart();
        edge
    }

    /// An edge whose ports are chosen but which is not started and has no edge.toml yet: for
    /// clusters that must know the edge's address before the edge lists them (write
    /// [`Edge::toml`] to `config`, then [`Edge::restart`]).
    pub fn unstarted(dir: &Path) -> Edge {
        Self::unstarted_with(dir, None)
    }

    fn unstarted_with(dir: &Path, https: Option<reqwest::blocking::Client>) -> Edge {
        let dir = dir.join("edge");
        std::fs::create_dir_all(&dir).unwrap();
        Edge {
            config: dir.join("edge.toml"),
            dir,
            port: free_port(),
            control: free_port(),
            child: None,
            https,
        }
    }

    /// The edge.toml these tests use: quick health checks (500 ms, fall and rise 2) and reloads.
    pub fn toml(&self, clusters: &[ClusterEntry], extra: &str) -> String {
        let mut t = format!(
            "listen = \"127.0.0.1:{}\"\ncontrol_listen = \"127.0.0.1:{}\"\nwork_dir = \"{}\"\nreload_min_interval_ms = 200\n{extra}\n\n[health]\ninterval_ms = 500\ntimeout_ms = 1500\nfall = 2\nrise = 2\nresolve_interval_ms = 500\n",
            self.port,
            self.control,
            self.dir.join("work").display()
        );
        for (name, url, weight) in clusters {
            t.push_str(&format!(
                "\n[[clusters]]\nname = \"{name}\"\nurl = \"{url}\"\nweight = {weight}\n"
            ));
        }
        t
    }

    pub fn restart(&mut self) {
        let child = Command::new(BIN)
            .arg("edge")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until(
            "the edge to serve with every cluster up",
            Duration::from_secs(30),
            || {
                let s: EdgeStatus = self
                    .client()
                    .get(format!("{}/edge/status", self.base()))
                    .send()
                    .ok()?
                    .json()
                    .ok()?;
                s.clusters
                    .iter()
                    .all(|c| c.health == Health::Up)
                    .then_some(())
            },
        );
    }

    /// nginx, where clients come in.
    pub fn base(&self) -> String {
        let scheme = if self.https.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A client for [`Edge::base`]: [`http`], or the one that trusts the edge's certificate.
    pub fn client(&self) -> reqwest::blocking::Client {
        self.https.clone().unwrap_or_else(http)
    }

    /// The controller's own listener.
    pub fn control(&self) -> String {
        format!("http://127.0.0.1:{}", self.control)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// GET `path` through nginx.
    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.client().get(self.url(path)).send().unwrap()
    }

    /// GET `path` through nginx; it must answer 200 with this JSON.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let r = self.get(path);
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().unwrap()
    }

    /// Replaces edge.toml with `text` and asks the controller to apply it now.
    pub fn reconfigure(&self, text: &str) -> reqwest::blocking::Response {
        std::fs::write(&self.config, text).unwrap();
        http()
            .post(format!("{}/edge/reload", self.control()))
            .send()
            .unwrap()
    }

    /// `/edge/status` from the controller.
    pub fn status(&self) -> EdgeStatus {
        http()
            .get(format!("{}/edge/status", self.control()))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// The health the controller gives `cluster` now.
    pub fn health(&self, cluster: &str) -> Option<Health> {
        self.status()
            .clusters
            .iter()
            .find(|c| c.name == cluster)
            .map(|c| c.health)
    }

    /// Waits until the controller gives `cluster` this health.
    pub fn wait_health(&self, cluster: &str, want: Health, timeout: Duration) {
        wait_until(&format!("{cluster} to be marked {want:?}"), timeout, || {
            (self.health(cluster)? == want).then_some(())
        });
    }

    pub fn nginx_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("work/nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("work/logs/access.log")).unwrap_or_default()
    }

    pub fn error_log(&self) -> String {
        String::from_utf8_lossy(
            &std::fs::read(self.dir.join("work/logs/error.log")).unwrap_or_default(),
        )
        .into_owned()
    }

    /// Submits a job through the edge: its id, or what went wrong.
    pub fn submit(
        &self,
        client: &reqwest::blocking::Client,
        input_url: &str,
    ) -> Result<String, String> {
        let r = client
            .post(format!("{}/v1/jobs", self.base()))
            .json(&job_spec(input_url))
            .send()
            .map_err(|e| format!("transport: {e}"))?;
        let status = r.status();
        let body = r.text().unwrap_or_default();
        if status != 202 {
            return Err(format!("{status}: {body}"));
        }
        serde_json::from_str::<JobView>(&body)
            .map(|j| j.id)
            .map_err(|e| format!("{e}: {body}"))
    }

    /// The cluster the controller chose for a request (`placed_on` in nginx's access log).
    pub fn placed_on(&self, request_id: &str) -> String {
        let needle = format!("\"request_id\":\"{request_id}\"");
        wait_until(
            &format!("the access log line of {request_id}"),
            Duration::from_secs(5),
            || {
                let log = self.access_log();
                let line = log.lines().find(|l| l.contains(&needle))?;
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                Some(v["placed_on"].as_str()?.to_string())
            },
        )
    }

    /// Submits a job with `token` and returns its id and where the controller placed it.
    pub fn submit_placed(
        &self,
        client: &reqwest::blocking::Client,
        token: Option<&str>,
        input_url: &str,
    ) -> (String, String) {
        let mut req = client
            .post(format!("{}/v1/jobs", self.base()))
            .json(&job_spec(input_url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().unwrap();
        let rid = request_id(r.headers());
        let status = r.status();
        let body = r.text().unwrap_or_default();
        assert_eq!(status, 202, "{body}");
        let id = serde_json::from_str::<JobView>(&body).unwrap().id;
        (id, self.placed_on(&rid))
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(c.id(), "-TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // An edge killed with SIGKILL leaves nginx running by design.
        if let Some(pid) = self.nginx_pid() {
            if pid_alive(pid) {
                kill(pid, "-TERM");
            }
        }
    }
}

/// The edge's id of a request (one per answer), which names its line in the access log.
pub fn request_id(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Two clouds, "aws" and "gcp" (`reelay serve` each, on loopback), behind one `reelay edge`,
/// and a stall server for inputs that never arrive. Dropped in order: edge, gcp, aws.
pub struct TwoClouds {
    pub edge: Edge,
    pub gcp: Cluster,
    pub aws: Cluster,
    /// An input URL that never answers (see [`stall_server`]).
    pub stall: String,
    /// The clusters as edge.toml lists them, for rewriting it.
    pub clusters: Vec<ClusterEntry>,
}

/// How [`TwoClouds`] starts; `TwoClouds::builder()`.
#[derive(Debug, Clone)]
pub struct TwoCloudsBuilder {
    workers: (u32, u32),
    weights: (u32, u32),
    aws_grace: u32,
    cluster_toml: Option<String>,
    edge_extra: String,
}

impl TwoClouds {
    /// One worker each, equal weights, the default edge.toml.
    pub fn start(dir: &Path) -> TwoClouds {
        Self::builder().start(dir)
    }

    pub fn builder() -> TwoCloudsBuilder {
        TwoCloudsBuilder {
            workers: (1, 1),
            weights: (1, 1),
            aws_grace: 1,
            cluster_toml: None,
            edge_extra: String::new(),
        }
    }

    /// edge.toml for these clusters with `extra` top-level settings.
    pub fn edge_toml(&self, extra: &str) -> String {
        self.edge.toml(&self.clusters, extra)
    }

    /// Submits a stalled job through the edge: its id, or what went wrong.
    pub fn submit(&self, client: &reqwest::blocking::Client) -> Result<String, String> {
        self.edge.submit(client, &self.stall)
    }

    /// Submits `n` stalled jobs through the edge, each of which must be accepted.
    pub fn submit_n(&self, n: usize) -> Vec<String> {
        let client = http();
        (0..n)
            .map(|_| self.submit(&client).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }
}

impl TwoCloudsBuilder {
    /// Worker slots of aws and gcp.
    pub fn workers(mut self, aws: u32, gcp: u32) -> Self {
        self.workers = (aws, gcp);
        self
    }

    /// Their weights in edge.toml (what the controller-less modes balance by).
    pub fn weights(mut self, aws: u32, gcp: u32) -> Self {
        self.weights = (aws, gcp);
        self
    }

    /// aws's `--shutdown-grace-seconds` (how long SIGTERM drains it).
    pub fn aws_grace(mut self, seconds: u32) -> Self {
        self.aws_grace = seconds;
        self
    }

    /// A `--config` file for both clusters.
    pub fn cluster_config(mut self, toml: &str) -> Self {
        self.cluster_toml = Some(toml.to_string());
        self
    }

    /// Top-level edge.toml settings.
    pub fn edge(mut self, extra: &str) -> Self {
        self.edge_extra = extra.to_string();
        self
    }

    /// Starts aws, then gcp, then the edge; returns once the edge sees both up.
    pub fn start(self, dir: &Path) -> TwoClouds {
        let config = |name: &str| {
            self.cluster_toml.as_ref().map(|t| {
                let path = dir.join(format!("{name}-127.0.0.1.toml"));
                std::fs::write(&path, t).unwrap();
                path
            })
        };
        let stall = stall_server();
        let aws = Cluster::start_with(
            dir,
            "aws",
            "127.0.0.1",
            self.workers.0,
            self.aws_grace,
            config("aws"),
        );
        let gcp = Cluster::start_with(dir, "gcp", "127.0.0.1", self.workers.1, 1, config("gcp"));
        let clusters = vec![
            ("aws", aws.base(), self.weights.0),
            ("gcp", gcp.base(), self.weights.1),
        ];
        let edge = Edge::start(dir, &clusters, &self.edge_extra);
        TwoClouds {
            edge,
            gcp,
            aws,
            stall,
            clusters,
        }
    }
}

/// `reelay up` from a topology file, stopped with SIGTERM (it stops the edge, nginx and the
/// clusters) on drop.
pub struct Up {
    pub child: Child,
    pub state: PathBuf,
    pub edge: String,
    pub aws: String,
    pub gcp: String,
    pub ports: UpPorts,
    /// The lines `reelay up` printed after "reelay is up", if the test asked to keep them.
    pub banner: Vec<String>,
}

/// The ports a `reelay up` topology listens on.
#[derive(Debug, Clone, Copy)]
pub struct UpPorts {
    pub edge: u16,
    pub control: u16,
    pub aws: u16,
    pub gcp: u16,
}

impl UpPorts {
    pub fn free() -> UpPorts {
        UpPorts {
            edge: free_port(),
            control: free_port(),
            aws: free_port(),
            gcp: free_port(),
        }
    }

    /// A `reelay up` topology on these ports: clusters aws and gcp with `workers` slots and
    /// `weights`, state under `state/`, health checks every 500 ms. `cluster_extra` is added to
    /// each cluster's table, `edge_extra` to `[edge]`.
    pub fn topology(
        &self,
        workers: (u32, u32),
        weights: (u32, u32),
        cluster_extra: &str,
        edge_extra: &str,
    ) -> String {
        let UpPorts {
            edge,
            control,
            aws,
            gcp,
        } = *self;
        format!(
            r#"state_dir = "state"
shutdown_grace_seconds = 1
[[clusters]]
name = "aws"
listen = "127.0.0.1:{aws}"
workers = {}
{cluster_extra}
[[clusters]]
name = "gcp"
listen = "127.0.0.1:{gcp}"
workers = {}
{cluster_extra}
[edge]
listen = "127.0.0.1:{edge}"
control_listen = "127.0.0.1:{control}"
work_dir = "state/edge"
{edge_extra}
[edge.health]
interval_ms = 500
timeout_ms = 1500
[[edge.clusters]]
name = "aws"
url = "http://127.0.0.1:{aws}"
weight = {}
[[edge.clusters]]
name = "gcp"
url = "http://127.0.0.1:{gcp}"
weight = {}
"#,
            workers.0, workers.1, weights.0, weights.1
        )
    }
}

impl Up {
    /// Writes `topology` to `dir/topology.toml`, runs `reelay up` from it, waits for "reelay is
    /// up" and keeps the next `banner_lines` lines it prints.
    pub fn start(dir: &Path, ports: UpPorts, topology: &str, banner_lines: usize) -> Up {
        std::fs::write(dir.join("topology.toml"), topology).unwrap();
        let mut child = Command::new(BIN)
            .args(["up", "--topology"])
            .arg(dir.join("topology.toml"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "reelay is up");
        let banner: Vec<String> = lines
            .by_ref()
            .take(banner_lines)
            .map_while(Result::ok)
            .collect();
        std::thread::spawn(move || for _ in lines {});
        Up {
            child,
            state: dir.join("state"),
            edge: format!("http://127.0.0.1:{}", ports.edge),
            aws: format!("http://127.0.0.1:{}", ports.aws),
            gcp: format!("http://127.0.0.1:{}", ports.gcp),
            ports,
            banner,
        }
    }

    /// Sends SIGTERM and waits (up to 30 s) for `reelay up` to exit; returns its status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        kill(self.child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "reelay up did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        kill(self.child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway certificate authority in a directory: `ca.pem`, and leaf certificates it signs
/// (`<name>.pem`, `<name>.key`), for mutual TLS between real processes.
pub struct TestCa {
    pub dir: PathBuf,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    /// Creates the CA and writes `dir/ca.pem`.
    pub fn new(dir: &Path) -> TestCa {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "reelay test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        TestCa {
            dir: dir.to_path_buf(),
            cert,
            key,
        }
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Writes `<name>.pem` and `<name>.key` signed by the CA, for these subject names.
    pub fn leaf(&self, name: &str, sans: &[&str]) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
                .signed_by(&key, &self.cert, &self.key)
                .unwrap();
        std::fs::write(self.dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    /// A client that trusts the CA and, given a leaf name, presents that certificate.
    pub fn client(&self, identity: Option<&str>) -> reqwest::blocking::Client {
        let mut b = reqwest::blocking::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.cert.pem().as_bytes()).unwrap(),
            )
            .timeout(Duration::from_secs(15))
            .no_proxy();
        if let Some(name) = identity {
            let mut pem = std::fs::read(self.dir.join(format!("{name}.pem"))).unwrap();
            pem.extend(std::fs::read(self.dir.join(format!("{name}.key"))).unwrap());
            b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    }
}
