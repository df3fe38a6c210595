//! What a new user meets first, run as the real binary: each subcommand's --help (its own flags
//! and an example, nothing from other roles), hints for mistyped server URLs, `reelay up`
//! refusing taken ports before it announces anything, and `reelay token create` with nowhere
//! useful to put the token.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use common::{free_port, BIN};

/// Runs the binary with a clean client environment (no REELAY_* leaking in from the shell).
fn reelay(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("REELAY_SERVER")
        .env_remove("REELAY_TOKEN")
        .env_remove("REELAY_ISSUER_KEY")
        .env_remove("REELAY_DATA_DIR")
        .env_remove("REELAY_DATABASE_URL")
        .env_remove("REELAY_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn help(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args.to_vec();
    a.push("--help");
    let out = reelay(&a, dir.path());
    assert!(out.status.success(), "{a:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A flag as listed in help (`--server <URL>`, `--data-dir <DIR>`).
fn lists(help: &str, flag: &str) -> bool {
    help.lines().any(|l| {
        l.trim_start()
            .split([' ', ','])
            .any(|w| w == flag || w.starts_with(&format!("{flag}=")))
    })
}

#[test]
fn each_help_shows_its_own_flags_and_an_example() {
    let client = ["--server", "--token"];
    let server_only = [
        "--listen",
        "--workers",
        "--storage",
        "--lease-seconds",
        "--allow-anonymous",
    ];
    // Server roles, the edge and `up`: no client flags.
    for cmd in [
        &["serve"][..],
        &["api"],
        &["worker"],
        &["edge"],
        &["up"],
        &["migrate"],
    ] {
        let h = help(cmd);
        for f in client {
            assert!(!lists(&h, f), "reelay {cmd:?} --help lists {f}:\n{h}");
        }
        assert!(
            h.contains("Example:"),
            "reelay {cmd:?} --help: no example\n{h}"
        );
    }
    // Serve keeps its flags.
    let h = help(&["serve"]);
    for f in server_only {
        assert!(lists(&h, f), "serve --help lacks {f}:\n{h}");
    }
    // `migrate` and `token create` name a store, not a server process.
    for cmd in [&["migrate"][..], &["token", "create"], &["token", "list"]] {
        let h = help(cmd);
        for f in server_only {
            assert!(!lists(&h, f), "reelay {cmd:?} --help lists {f}:\n{h}");
        }
        assert!(
            lists(&h, "--data-dir") && lists(&h, "--database-url"),
            "{h}"
        );
        assert!(
            h.contains("Example:"),
            "reelay {cmd:?} --help: no example\n{h}"
        );
    }
    let h = help(&["token", "create"]);
    for f in ["--issuer-key", "--server", "--token", "--scope", "--owner"] {
        assert!(lists(&h, f), "token create --help lacks {f}:\n{h}");
    }
    // Client commands: the client flags and an example, no server flags.
    for cmd in [
        "submit", "status", "wait", "download", "presets", "cancel", "list",
    ] {
        let h = help(&[cmd]);
        for f in client {
            assert!(lists(&h, f), "{cmd} --help lacks {f}:\n{h}");
        }
        for f in server_only {
            assert!(!lists(&h, f), "{cmd} --help lists {f}:\n{h}");
        }
        let example = h.split("Example:").nth(1).unwrap_or_default();
        assert!(
            example.contains(&format!("reelay {cmd}")),
            "{cmd} --help: no example of itself\n{h}"
        );
    }
}

#[test]
fn a_server_url_without_scheme_gets_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    for (given, hint) in [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("localhost:8080", "http://localhost:8080"),
        ("http//example.com", "did you mean http://example.com"),
    ] {
        // After the subcommand, before it, and from the variable.
        for out in [
            reelay(&["presets", "--server", given], dir.path()),
            reelay(&["--server", given, "presets"], dir.path()),
            Command::new(BIN)
                .args(["presets"])
                .env("REELAY_SERVER", given)
                .env_remove("REELAY_TOKEN")
                .output()
                .unwrap(),
        ] {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{given}: {err}");
            assert!(err.contains(hint), "{given}: no hint {hint:?} in {err}");
        }
    }
    // Client flags given to a server role are refused, not ignored.
    let out = reelay(
        &[
            "--server",
            "http://127.0.0.1:1",
            "migrate",
            "--data-dir",
            "d",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn up_fails_fast_naming_a_taken_port_and_what_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    // gcp's port is held by this test process, a plain listener that answers nothing.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let (edge, control, aws) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("topology.toml"),
        format!(
            r#"state_dir = "state"
shutdown_grace_seconds = 1
anonymous = true
[[clusters]]
name = "aws"
listen = "127.0.0.1:{aws}"
workers = 1
[[clusters]]
name = "gcp"
listen = "127.0.0.1:{taken}"
workers = 1
[edge]
listen = "127.0.0.1:{edge}"
control_listen = "127.0.0.1:{control}"
work_dir = "state/edge"
[[edge.clusters]]
name = "aws"
url = "http://127.0.0.1:{aws}"
[[edge.clusters]]
name = "gcp"
url = "http://127.0.0.1:{taken}"
"#
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let mut child = Command::new(BIN)
        .args(["up", "--topology"])
        .arg(dir.path().join("topology.toml"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("reelay up did not fail within 20 s with port {taken} taken");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success());
    assert!(!stdout.contains("reelay is up"), "{stdout}");
    assert!(
        stderr.contains(&format!("port {taken} is taken")) && stderr.contains("cluster gcp"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("held by pid {}", std::process::id())),
        "the holder is not named: {stderr}"
    );
    // Checked before anything started: no cluster made its data directory.
    assert!(!dir.path().join("state/aws").exists());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    drop(held);
}

#[test]
fn token_create_with_nowhere_to_go_says_where_tokens_come_from() {
    let dir = tempfile::tempdir().unwrap();
    // Next to `reelay up`: its admin token is on disk, its clusters' stores are under data/up/.
    std::fs::create_dir_all(dir.path().join("data/up")).unwrap();
    std::fs::write(dir.path().join("data/up/admin.token"), "rly2.x\n").unwrap();
    let out = reelay(&["token", "create", "--scope", "read"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty(), "printed a token");
    for needed in ["data/up/admin.token", "--issuer-key", "--server"] {
        assert!(err.contains(needed), "no {needed:?} in {err}");
    }
    // No store was written behind the user's back.
    assert!(!dir.path().join("data/reelay.db").exists());
    // Naming a store still works (a per-cluster token in that store).
    let out = reelay(
        &[
            "token",
            "create",
            "--scope",
            "read",
            "--data-dir",
            "data/one",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rly_"));
}
