//! TLS end to end through real processes: the edge serves HTTPS with its certificate, and
//! reaches a cluster that accepts only clients holding a certificate from the edge's CA
//! (mutual TLS). A client without that certificate is refused by the cluster.

use reelay_protocol::{JobView, PresetList};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;

use common::{free_port, Guard, Stop, TestCa, BIN};

/// Stops a child with SIGTERM (the edge then stops its nginx too) and reaps it.
fn guard(child: Child) -> Guard {
    Guard::new(child, Stop::Term(Duration::from_secs(10)))
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    common::wait_until(what, Duration::from_secs(30), || ok().then_some(()));
}

#[test]
fn edge_serves_https_and_reaches_the_cluster_over_mutual_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ca = TestCa::new(d);
    ca.leaf("cluster", &["cluster.reelay.test", "127.0.0.1"]);
    ca.leaf("edge-server", &["localhost", "127.0.0.1"]);
    ca.leaf("edge-client", &["reelay-edge"]);

    // The cluster: HTTPS, and only clients with a certificate from the CA.
    let cport = free_port();
    let _cluster = guard(
        Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{cport}"),
                "--cluster",
                "aws",
                "--workers",
                "1",
            ])
            .arg("--data-dir")
            .arg(d.join("data"))
            .arg("--tls-cert")
            .arg(d.join("cluster.pem"))
            .arg("--tls-key")
            .arg(d.join("cluster.key"))
            .arg("--tls-client-ca")
            .arg(d.join("ca.pem"))
            // Anonymous requests through the edge: explicit opt-in (issue 12, finding 2).
            .arg("--allow-anonymous")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let anonymous = ca.client(None);
    let with_cert = ca.client(Some("edge-client"));
    let direct = format!("https://127.0.0.1:{cport}");
    wait_until("the cluster", || {
        with_cert
            .get(format!("{direct}/healthz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    // Without the client certificate the handshake is refused: no answer at all.
    assert!(
        anonymous
            .get(format!("{direct}/v1/presets"))
            .send()
            .is_err(),
        "a client without a certificate got through"
    );

    // The edge: HTTPS for clients, mutual TLS to the cluster.
    let (eport, control) = (free_port(), free_port());
    let toml = format!(
        "listen = \"127.0.0.1:{eport}\"\ncontrol_listen = \"127.0.0.1:{control}\"\nwork_dir = \"{work}\"\n\
         tls_cert = \"{d}/edge-server.pem\"\ntls_key = \"{d}/edge-server.key\"\n\
         upstream_client_cert = \"{d}/edge-client.pem\"\nupstream_client_key = \"{d}/edge-client.key\"\n\
         upstream_ca = \"{d}/ca.pem\"\nupstream_server_name = \"cluster.reelay.test\"\n\n\
         [health]\ninterval_ms = 300\ntimeout_ms = 1000\nfall = 2\nrise = 1\n\n\
         [[clusters]]\nname = \"aws\"\nurl = \"https://127.0.0.1:{cport}\"\nweight = 1\n",
        work = d.join("edge-work").display(),
        d = d.display()
    );
    std::fs::write(d.join("edge.toml"), toml).unwrap();
    let check = Command::new(BIN)
        .arg("edge")
        .arg("--config")
        .arg(d.join("edge.toml"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _edge = guard(
        Command::new(BIN)
            .arg("edge")
            .arg("--config")
            .arg(d.join("edge.toml"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let edge = format!("https://127.0.0.1:{eport}");
    wait_until("the edge to serve a healthy cluster", || {
        anonymous
            .get(format!("{edge}/v1/presets"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    let presets: PresetList = anonymous
        .get(format!("{edge}/v1/presets"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(presets.presets.iter().any(|p| p.name == "hls-abr"));

    // A job submitted through the edge is placed on the mTLS cluster and readable back.
    let r = anonymous
        .post(format!("{edge}/v1/jobs"))
        .json(&serde_json::json!({"input": {"url": "http://localhost:9/x.mp4"}, "outputs": [{"preset": "mp4-360p"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text());
    let j: JobView = r.json().unwrap();
    assert!(j.id.starts_with("aws."));
    let back: JobView = anonymous
        .get(format!("{edge}/v1/jobs/{}", j.id))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(back.id, j.id);

    // Plain HTTP to the edge's TLS port is not served as the API: a JSON 400 says why (nginx's
    // own answer to it is an HTML page with status 497).
    let plain = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{eport}/v1/presets"))
        .send()
        .unwrap();
    assert_eq!(plain.status(), 400);
    let body: reelay_protocol::ErrorBody = plain.json().unwrap();
    assert_eq!(body.error.code, "https_required");
}
