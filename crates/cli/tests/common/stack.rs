//! The stealing stack, written once: two protected clusters, aws (which owns the jobs) and gcp
//! (whose idle worker takes aws's tasks), signed tokens for both, and the `reelay edge` a test
//! puts in front of them when it wants one. Each stealing test starts the clusters its own way
//! (a link over mutual TLS, S3 storage, an edge that decides) and then talks to them only
//! through the [`Stack`]'s request helpers, so a job is submitted, read, waited on and cancelled
//! the same way everywhere.

use super::{job_spec, keygen, signed_token, stall_server, wait_until, Edge, Server, BIN};
use reelay_protocol::JobView;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The issuer key and trusted keys (in the test's directory) and the tokens they sign.
pub struct Tokens {
    /// The trusted keys file every cluster and the edge check tokens with.
    pub trusted: PathBuf,
    /// submit + read, owner `team`.
    pub user: String,
    /// admin, owner `ops`.
    pub admin: String,
    /// `peer`, owner `gcp`: what gcp's workers show aws (and the edge).
    pub peer: String,
    /// [`Tokens::peer`] in a file, for gcp's `[[steal.peers]] token_file`.
    pub peer_file: PathBuf,
}

impl Tokens {
    pub fn mint(dir: &Path) -> Tokens {
        let trusted = keygen(dir);
        let peer = signed_token(dir, "gcp", &["peer"]);
        let peer_file = dir.join("peer.token");
        std::fs::write(&peer_file, &peer).unwrap();
        Tokens {
            trusted,
            user: signed_token(dir, "team", &["submit", "read"]),
            admin: signed_token(dir, "ops", &["admin"]),
            peer,
            peer_file,
        }
    }

    /// The `trusted_keys = …` line of a cluster's (or the edge's `[auth]`) configuration.
    pub fn trusted_keys(&self) -> String {
        format!("trusted_keys = {:?}\n", self.trusted.display().to_string())
    }

    /// aws's configuration: protected by these keys, offering a task to peers once it waited
    /// `offer_after` seconds at home.
    pub fn aws_config(&self, offer_after: f64) -> String {
        format!(
            "{}[steal]\noffer_after_seconds = {offer_after}\n",
            self.trusted_keys()
        )
    }

    /// gcp's configuration: protected by these keys, `[steal]` with `steal` (`poll_ms`,
    /// `edge`) and one peer, aws at `aws_url` (its api, or the edge's `/clusters/aws`), reached
    /// with the peer token and `peer_extra` settings (TLS files).
    pub fn gcp_config(&self, steal: &str, aws_url: &str, peer_extra: &str) -> String {
        format!(
            "{}[steal]\n{steal}[[steal.peers]]\nname = \"aws\"\nurl = \"{aws_url}\"\n\
             token_file = {:?}\n{peer_extra}",
            self.trusted_keys(),
            self.peer_file.display().to_string()
        )
    }
}

/// The `reelay serve` command of cluster `name` on `127.0.0.1:port`: one worker slot, 2 s
/// leases, private URLs allowed (the stall server is on loopback), `toml` as its configuration
/// and `dir/name` as its data directory. A test adds flags (TLS, S3) before starting it.
pub fn serve(dir: &Path, name: &str, port: u16, toml: &str) -> Command {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--cluster", name, "--workers", "1", "--lease-seconds", "2"])
        .arg("--allow-private-urls")
        .env("RUST_LOG", "warn");
    cmd
}

/// [`serve`], started: returns once `/healthz` answers.
pub fn cluster(dir: &Path, name: &str, port: u16, toml: &str) -> Server {
    Server::spawn(serve(dir, name, port, toml), port)
}

/// What requests can be sent to: a cluster's api, or the edge in front of the clusters.
pub trait Endpoint {
    fn base(&self) -> String;
    /// A client that reaches [`Endpoint::base`] (with the CA and client certificate it needs).
    fn client(&self) -> reqwest::blocking::Client;
}

impl Endpoint for Server {
    fn base(&self) -> String {
        self.base.clone()
    }
    fn client(&self) -> reqwest::blocking::Client {
        self.client.clone()
    }
}

impl Endpoint for Edge {
    fn base(&self) -> String {
        Edge::base(self)
    }
    fn client(&self) -> reqwest::blocking::Client {
        Edge::client(self)
    }
}

/// aws, gcp once started, the edge if any, and the tokens; everything stops when dropped.
pub struct Stack {
    pub dir: PathBuf,
    pub tokens: Tokens,
    pub aws: Server,
    pub gcp: Option<Server>,
    pub edge: Option<Edge>,
    /// gcp's port and configuration, kept for [`Stack::restart_gcp`].
    gcp_port: u16,
    gcp_toml: String,
}

impl Stack {
    /// A stack of a running aws (and its edge, if any); gcp starts with [`Stack::start_gcp`].
    pub fn new(dir: &Path, tokens: Tokens, aws: Server, edge: Option<Edge>) -> Stack {
        Stack {
            dir: dir.to_path_buf(),
            tokens,
            aws,
            gcp: None,
            edge,
            gcp_port: 0,
            gcp_toml: String::new(),
        }
    }

    /// Starts gcp with `toml` (its `[steal]` settings).
    pub fn start_gcp(&mut self, toml: &str) {
        self.gcp_port = super::free_port();
        self.gcp_toml = toml.to_string();
        self.restart_gcp();
    }

    /// Starts gcp (again) on the same port, data directory and configuration.
    pub fn restart_gcp(&mut self) {
        self.gcp = Some(cluster(&self.dir, "gcp", self.gcp_port, &self.gcp_toml));
    }

    pub fn gcp(&self) -> &Server {
        self.gcp.as_ref().expect("gcp was not started")
    }

    pub fn edge(&self) -> &Edge {
        self.edge.as_ref().expect("this stack has no edge")
    }

    /// `POST /v1/peer/tasks/claim` straight at aws, as gcp's worker `worker` (this test plays
    /// the peer, with the peer token): any ready task, or exactly `task`.
    pub fn peer_claim(&self, worker: &str, task: Option<&str>) -> reqwest::blocking::Response {
        let mut body = serde_json::json!({ "worker": worker });
        if let Some(t) = task {
            body["task_id"] = t.into();
        }
        self.aws
            .client
            .post(format!("{}/v1/peer/tasks/claim", self.aws.base))
            .bearer_auth(&self.tokens.peer)
            .json(&body)
            .send()
            .unwrap()
    }

    /// Submits a job to `on` whose input never answers, and waits until it holds `on`'s
    /// only slot; returns its id.
    pub fn occupy(&self, on: &Server) -> String {
        let r = on
            .client()
            .post(format!("{}/v1/jobs", on.base))
            .bearer_auth(&self.tokens.user)
            .json(&job_spec(&stall_server()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 202);
        let id = r.json::<JobView>().unwrap().id;
        wait_until(
            &format!("the stalled job to hold {}'s slot", on.base),
            Duration::from_secs(20),
            || (self.job(on, &id).status.as_str() == "running").then_some(()),
        );
        id
    }

    /// Uploads `file` (preset `mp4-360p`) through `to`, as the user; returns the job's id. With
    /// the CLI, except over HTTPS: the CLI has no setting for a private CA or a client
    /// certificate, so there the same multipart upload is sent by hand.
    pub fn submit_upload(&self, to: &impl Endpoint, file: &Path) -> String {
        let base = to.base();
        if base.starts_with("https") {
            let form = reqwest::blocking::multipart::Form::new()
                .text("spec", r#"{"outputs": [{"preset": "mp4-360p"}]}"#)
                .file("file", file)
                .unwrap();
            let r = to
                .client()
                .post(format!("{base}/v1/jobs"))
                .bearer_auth(&self.tokens.user)
                .multipart(form)
                .send()
                .unwrap();
            assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
            return r.json::<JobView>().unwrap().id;
        }
        let out = Command::new(BIN)
            .args(["submit"])
            .arg(file)
            .args(["--preset", "mp4-360p", "--json"])
            .env("REELAY_SERVER", base)
            .env("REELAY_TOKEN", &self.tokens.user)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<JobView>(&out.stdout).unwrap().id
    }

    /// A job's view, read from the cluster `on` directly (the edge may be cut off).
    pub fn job(&self, on: &Server, id: &str) -> JobView {
        on.client()
            .get(format!("{}/v1/jobs/{id}", on.base))
            .bearer_auth(&self.tokens.user)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// Waits until the job is `want` on `on`; fails the test at once if it fails (unless
    /// `want` is `failed`).
    pub fn wait_status(&self, on: &Server, id: &str, want: &str, timeout: Duration) -> JobView {
        wait_until(&format!("job {id} {want}"), timeout, || {
            let j = self.job(on, id);
            assert!(
                j.status.as_str() != "failed" || want == "failed",
                "job failed: {:?}",
                j.error
            );
            (j.status.as_str() == want).then_some(j)
        })
    }

    pub fn cancel(&self, on: &Server, id: &str) {
        let r = on
            .client()
            .post(format!("{}/v1/jobs/{id}/cancel", on.base))
            .bearer_auth(&self.tokens.user)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    /// `on`'s load report, as the edge reads it.
    pub fn load(&self, on: &Server) -> reelay_protocol::LoadReport {
        on.client()
            .get(format!("{}/v1/load", on.base))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// `on`'s Prometheus text.
    pub fn metrics(&self, on: &Server) -> String {
        on.client()
            .get(format!("{}/metrics", on.base))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// GET `path` on `on` as the user (an output's download).
    pub fn download(&self, on: &Server, path: &str) -> reqwest::blocking::Response {
        on.client()
            .get(format!("{}{path}", on.base))
            .bearer_auth(&self.tokens.user)
            .send()
            .unwrap()
    }
}
