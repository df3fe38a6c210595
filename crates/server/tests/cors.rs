//! CORS on a real server: output files answer cross-origin players (preflight without a token,
//! Range exposed), the job API never does, and `cors_allowed_origins` narrows who may.

mod common;

use common::{clip, TestServer};
use reelay_identity::token::{issue, NewClaims};
use reelay_identity::{Scope, SigningKey};
use reqwest::{Method, Response};
use std::os::unix::fs::PermissionsExt;

const PLAYER: &str = "http://127.0.0.1:9999";

fn h(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

async fn preflight(s: &TestServer, path: &str, origin: &str, method: &str) -> Response {
    s.http
        .request(Method::OPTIONS, s.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header("Access-Control-Request-Headers", "authorization,range")
        .send()
        .await
        .unwrap()
}

async fn get_from(s: &TestServer, path: &str, origin: &str, range: Option<&str>) -> Response {
    let mut req = s.http.get(s.url(path)).header("Origin", origin);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    req.send().await.unwrap()
}

/// Default `*`: preflight answered for output files with GET/HEAD, Authorization and Range
/// allowed and no credentials; a cross-origin Range read sees Content-Range and friends.
#[tokio::test]
async fn output_files_answer_cross_origin_players() {
    let s = TestServer::start().await;
    let input = clip(s.dir.path(), "c.mp4", 160, 120, 1.0, true);
    let job = s
        .succeeded(&input, r#"{"outputs":[{"preset":"mp4-360p"}]}"#)
        .await;
    let file = format!("/v1/jobs/{}/outputs/mp4-360p.mp4", job.id);

    let r = preflight(&s, &file, PLAYER, "GET").await;
    assert_eq!(r.status(), 204);
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some("*"));
    let methods = h(&r, "access-control-allow-methods").unwrap();
    assert!(
        methods.contains("GET") && methods.contains("HEAD"),
        "{methods}"
    );
    let allowed = h(&r, "access-control-allow-headers")
        .unwrap()
        .to_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("range"),
        "{allowed}"
    );
    assert_eq!(h(&r, "access-control-allow-credentials"), None);
    assert!(h(&r, "access-control-max-age").is_some());

    let r = get_from(&s, &file, PLAYER, Some("bytes=0-99")).await;
    assert_eq!(r.status(), 206);
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some("*"));
    let exposed = h(&r, "access-control-expose-headers")
        .unwrap()
        .to_lowercase();
    for want in ["content-range", "content-length", "accept-ranges"] {
        assert!(exposed.contains(want), "{want} not exposed: {exposed}");
    }
    assert!(h(&r, "content-range").unwrap().starts_with("bytes 0-99/"));
    assert_eq!(r.bytes().await.unwrap().len(), 100);

    // A preflight for another method, or for a header outputs do not take, is refused.
    let r = preflight(&s, &file, PLAYER, "DELETE").await;
    assert_eq!(r.status(), 403);
    assert_eq!(h(&r, "access-control-allow-origin"), None);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cors_method_not_allowed");

    // The job API never answers another origin: not the job, the list, the listing of outputs,
    // submissions or tokens, preflight or not.
    for path in [
        format!("/v1/jobs/{}", job.id),
        "/v1/jobs".to_string(),
        format!("/v1/jobs/{}/outputs", job.id),
        "/v1/presets".to_string(),
        "/v1/tokens".to_string(),
    ] {
        let r = get_from(&s, &path, PLAYER, None).await;
        assert_eq!(h(&r, "access-control-allow-origin"), None, "GET {path}");
        for m in ["GET", "POST", "DELETE"] {
            let r = preflight(&s, &path, PLAYER, m).await;
            assert!(
                !r.status().is_success(),
                "OPTIONS {path} ({m}): {}",
                r.status()
            );
            assert_eq!(
                h(&r, "access-control-allow-origin"),
                None,
                "OPTIONS {path} ({m})"
            );
        }
    }
}

/// A configured list echoes the allowed origin (with Vary: Origin) and refuses the others; an
/// empty list turns CORS off; a bad entry stops the server from starting.
#[tokio::test]
async fn allowed_origins_are_configurable() {
    let s = TestServer::start_with(|c| {
        c.cors_allowed_origins = vec![PLAYER.into()];
    })
    .await;
    let file = "/v1/jobs/local.01J0000000000000000000000/outputs/a.mp4";
    let r = preflight(&s, file, PLAYER, "GET").await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        h(&r, "access-control-allow-origin").as_deref(),
        Some(PLAYER)
    );
    assert!(h(&r, "vary").unwrap().contains("Origin"));
    let r = get_from(&s, file, PLAYER, None).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        h(&r, "access-control-allow-origin").as_deref(),
        Some(PLAYER)
    );

    let other = "https://evil.example";
    let r = preflight(&s, file, other, "GET").await;
    assert_eq!(r.status(), 403);
    assert_eq!(h(&r, "access-control-allow-origin"), None);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cors_origin_not_allowed");
    let r = get_from(&s, file, other, None).await;
    assert_eq!(h(&r, "access-control-allow-origin"), None);

    let off = TestServer::start_with(|c| c.cors_allowed_origins = vec![]).await;
    let r = preflight(&off, file, PLAYER, "GET").await;
    assert_eq!(r.status(), 403);
    assert_eq!(h(&r, "access-control-allow-origin"), None);

    let bad = reelay_server::Config {
        cors_allowed_origins: vec!["https://player.example/".into()],
        ..Default::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(reelay_server::config::ConfigError::Invalid {
            setting: "cors_allowed_origins",
            ..
        })
    ));
}

/// On a protected cluster a preflight needs no token (it never carries one), while the read
/// itself does; the 401 carries the CORS headers so the player sees why.
#[tokio::test]
async fn preflight_needs_no_token_but_the_read_does() {
    let dir = tempfile::tempdir().unwrap();
    let (key, file) = SigningKey::generate("k1").unwrap();
    let trusted = dir.path().join("trusted.keys");
    std::fs::write(&trusted, format!("{}\n", key.trusted_line())).unwrap();
    std::fs::set_permissions(&trusted, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _ = file;
    let t = trusted.clone();
    let s = TestServer::start_with(move |c| c.trusted_keys = Some(t)).await;
    let path = "/v1/jobs/local.01J0000000000000000000000/outputs/hls/master.m3u8";

    let r = preflight(&s, path, PLAYER, "GET").await;
    assert_eq!(r.status(), 204, "a preflight must not need a token");
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some("*"));

    let r = get_from(&s, path, PLAYER, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some("*"));

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = issue(
        &key,
        &NewClaims {
            owner: Some("team-a".into()),
            scopes: vec![Scope::Read],
            name: "player".into(),
            ttl_seconds: None,
        },
        now,
    )
    .unwrap()
    .0;
    let r = s
        .http
        .get(s.url(path))
        .header("Origin", PLAYER)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "with a token the read gets past the guard");
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some("*"));
}
