//! Signed tokens on a real server: verified with the trusted keys, owned by their `sub`,
//! created and revoked through the admin API, revocations served signed and accepted only when
//! they verify; key files re-read on change; protected mode never covers forwarded requests.

mod common;

use common::TestServer;
use reelay_identity::token::{issue, NewClaims};
use reelay_identity::wire::{CreatedToken, PushResult, RevocationPage};
use reelay_identity::{Revocation, Scope, SigningKey};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const URL_JOB: &str =
    r#"{"input":{"url":"https://media.example.com/clip.mp4"},"outputs":[{"preset":"mp4-480p"}]}"#;

struct Keys {
    _dir: tempfile::TempDir,
    issuer_path: PathBuf,
    trusted_path: PathBuf,
    key: SigningKey,
}

fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn keys(kid: &str) -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let (key, file) = SigningKey::generate(kid).unwrap();
    let issuer_path = dir.path().join("issuer.key");
    write_secret(&issuer_path, &file);
    let trusted_path = dir.path().join("trusted.keys");
    std::fs::write(&trusted_path, format!("{}\n", key.trusted_line())).unwrap();
    std::fs::set_permissions(&trusted_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Keys {
        _dir: dir,
        issuer_path,
        trusted_path,
        key,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn mint(key: &SigningKey, owner: Option<&str>, scopes: &[Scope], ttl: Option<u64>) -> String {
    let new = NewClaims {
        owner: owner.map(str::to_string),
        scopes: scopes.to_vec(),
        name: "test".into(),
        ttl_seconds: ttl,
    };
    issue(key, &new, now()).unwrap().0
}

async fn server(k: &Keys, issuer: bool) -> TestServer {
    let (i, t) = (k.issuer_path.clone(), k.trusted_path.clone());
    TestServer::start_with(move |c| {
        c.workers = 1;
        c.issuer_key = issuer.then_some(i);
        c.trusted_keys = Some(t);
    })
    .await
}

async fn call(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (u16, serde_json::Value) {
    let mut req = s.http.request(method, s.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

fn code(v: &serde_json::Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn signed_tokens_are_verified_scoped_and_owned_by_their_subject() {
    let k = keys("k1");
    let s = server(&k, true).await;
    use reqwest::Method as M;

    // Trusted keys make the server protected even on loopback with no per-cluster token.
    let (st, _) = call(&s, M::GET, "/v1/presets", None, None).await;
    assert_eq!(st, 401);

    // An admin token minted offline with the issuer key creates tokens through the API.
    let admin = mint(&k.key, Some("ops"), &[Scope::Admin], None);
    let req = r#"{"scopes":["submit","read"],"owner":"team-a","name":"ci"}"#;
    let (st, body) = call(&s, M::POST, "/v1/tokens", Some(&admin), Some(req.into())).await;
    assert_eq!(st, 201, "{body}");
    let alice: CreatedToken = serde_json::from_value(body).unwrap();
    assert_eq!(
        (alice.owner.as_str(), alice.key_id.as_str()),
        ("team-a", "k1")
    );
    let alice2 = mint(&k.key, Some("team-a"), &[Scope::Read], None);
    let bob = mint(&k.key, Some("team-b"), &[Scope::Submit, Scope::Read], None);

    // Only admins create tokens.
    let (st, body) = call(&s, M::POST, "/v1/tokens", Some(&bob), Some(req.into())).await;
    assert_eq!((st, code(&body)), (403, "forbidden"));

    let (st, job) = call(
        &s,
        M::POST,
        "/v1/jobs",
        Some(&alice.token),
        Some(URL_JOB.into()),
    )
    .await;
    assert_eq!(st, 202, "{job}");
    let path = format!("/v1/jobs/{}", job["id"].as_str().unwrap());
    // The owner, not the token, owns the job: another token of team-a sees it, team-b does not.
    assert_eq!(call(&s, M::GET, &path, Some(&alice2), None).await.0, 200);
    assert_eq!(call(&s, M::GET, &path, Some(&bob), None).await.0, 404);
    assert_eq!(call(&s, M::GET, &path, Some(&admin), None).await.0, 200);
    let (_, list) = call(&s, M::GET, "/v1/jobs", Some(&bob), None).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0);
    let (_, list) = call(&s, M::GET, "/v1/jobs", Some(&alice2), None).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    // Scope: a read-only token cannot cancel.
    assert_eq!(call(&s, M::DELETE, &path, Some(&alice2), None).await.0, 403);

    // Expired, forged, and signed by an unknown key: 401.
    let expired = {
        let new = NewClaims {
            owner: None,
            scopes: vec![Scope::Read],
            name: String::new(),
            ttl_seconds: Some(1),
        };
        issue(&k.key, &new, now() - 10).unwrap().0
    };
    let forger = SigningKey::from_seed("k1", &[42u8; 32]).unwrap();
    let stranger = SigningKey::generate("k9").unwrap().0;
    for (t, why) in [
        (expired, "expired"),
        (
            mint(&forger, Some("team-a"), &[Scope::Admin], None),
            "signature",
        ),
        (mint(&stranger, Some("team-a"), &[Scope::Admin], None), "k9"),
    ] {
        let (st, body) = call(&s, M::GET, "/v1/presets", Some(&t), None).await;
        assert_eq!(st, 401, "{why}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{body}"
        );
    }
}

#[tokio::test]
async fn revocations_apply_at_once_are_served_signed_and_only_verified_ones_are_accepted() {
    let k = keys("k1");
    let aws = server(&k, true).await;
    let gcp = server(&k, true).await;
    use reqwest::Method as M;
    let admin = mint(&k.key, Some("ops"), &[Scope::Admin], None);
    let user = mint(&k.key, None, &[Scope::Read], None);
    let user_id = {
        let c = reelay_identity::token::verify(
            &user,
            &reelay_identity::TrustedKeys::from_keys([("k1".into(), k.key.public_key())]),
            &Default::default(),
            now(),
        )
        .unwrap();
        c.jti
    };
    for s in [&aws, &gcp] {
        assert_eq!(
            call(s, M::GET, "/v1/presets", Some(&user), None).await.0,
            200
        );
    }
    let (st, body) = call(
        &aws,
        M::DELETE,
        &format!("/v1/tokens/{user_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = call(&aws, M::GET, "/v1/presets", Some(&user), None).await;
    assert_eq!(st, 401);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("revoked"));
    // gcp has its own store: it has not heard yet (the edge carries it, see the process tests).
    assert_eq!(
        call(&gcp, M::GET, "/v1/presets", Some(&user), None).await.0,
        200
    );

    // The list is open and signed; gcp accepts it, and refuses a forged statement.
    let (st, page) = call(&aws, M::GET, "/v1/identity/revocations?after=0", None, None).await;
    assert_eq!(st, 200);
    let page: RevocationPage = serde_json::from_value(page).unwrap();
    assert_eq!(page.revocations.len(), 1);
    assert_eq!(page.revocations[0].id, user_id);
    let forger = SigningKey::from_seed("k1", &[42u8; 32]).unwrap();
    let victim = mint(&k.key, Some("victim"), &[Scope::Read], None);
    let victim_id = victim_jti(&k, &victim);
    let mut statements = page.revocations.clone();
    statements.push(Revocation::sign(&forger, &victim_id, 1).unwrap());
    let push = serde_json::json!({ "revocations": statements }).to_string();
    let (st, res) = call(&gcp, M::POST, "/v1/identity/revocations", None, Some(push)).await;
    assert_eq!(st, 200, "{res}");
    let res: PushResult = serde_json::from_value(res).unwrap();
    assert_eq!((res.accepted, res.refused), (1, 1));
    assert_eq!(
        call(&gcp, M::GET, "/v1/presets", Some(&user), None).await.0,
        401
    );
    assert_eq!(
        call(&gcp, M::GET, "/v1/presets", Some(&victim), None)
            .await
            .0,
        200
    );
    // The cursor: nothing after the last one (beyond the re-check window's repeats).
    let (_, again) = call(
        &aws,
        M::GET,
        &format!("/v1/identity/revocations?after={}", page.next_after),
        None,
        None,
    )
    .await;
    let again: RevocationPage = serde_json::from_value(again).unwrap();
    assert!(again.revocations.iter().all(|r| r.id == user_id));

    // A cluster without the issuer key verifies tokens but cannot revoke or serve statements.
    let verifier = server(&k, false).await;
    assert_eq!(
        call(&verifier, M::GET, "/v1/presets", Some(&victim), None)
            .await
            .0,
        200
    );
    let (st, body) = call(
        &verifier,
        M::DELETE,
        &format!("/v1/tokens/{victim_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!((st, code(&body)), (409, "not_an_issuer"));
}

fn victim_jti(k: &Keys, token: &str) -> String {
    reelay_identity::token::verify(
        token,
        &reelay_identity::TrustedKeys::from_keys([("k1".into(), k.key.public_key())]),
        &Default::default(),
        now(),
    )
    .unwrap()
    .jti
}

#[tokio::test]
async fn rotated_key_files_are_picked_up_without_a_restart() {
    let k = keys("k1");
    let s = server(&k, true).await;
    use reqwest::Method as M;
    let old = mint(&k.key, Some("a"), &[Scope::Read], None);
    let (k2, k2_file) = SigningKey::generate("k2").unwrap();
    let new = mint(&k2, Some("a"), &[Scope::Read], None);
    let identity = s.state.auth.identity.clone().unwrap();
    assert_eq!(
        call(&s, M::GET, "/v1/presets", Some(&new), None).await.0,
        401
    );
    // Overlap: both keys trusted, the issuer moves to k2.
    std::fs::write(
        &k.trusted_path,
        format!("{}\n{}\n", k.key.trusted_line(), k2.trusted_line()),
    )
    .unwrap();
    write_secret(&k.issuer_path, &k2_file);
    identity.reload_keys();
    assert_eq!(identity.issuer().unwrap().kid(), "k2");
    for t in [&old, &new] {
        assert_eq!(call(&s, M::GET, "/v1/presets", Some(t), None).await.0, 200);
    }
    // A broken file keeps the keys in force.
    std::fs::write(&k.trusted_path, "garbage\n").unwrap();
    identity.reload_keys();
    assert_eq!(
        call(&s, M::GET, "/v1/presets", Some(&old), None).await.0,
        200
    );
    // k1 retired.
    std::fs::write(&k.trusted_path, format!("{}\n", k2.trusted_line())).unwrap();
    identity.reload_keys();
    let (st, body) = call(&s, M::GET, "/v1/presets", Some(&old), None).await;
    assert_eq!(st, 401);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("k1"),
        "{body}"
    );
    assert_eq!(
        call(&s, M::GET, "/v1/presets", Some(&new), None).await.0,
        200
    );
}

#[tokio::test]
async fn an_issuer_key_readable_by_others_is_refused_at_start() {
    let k = keys("k1");
    std::fs::set_permissions(&k.issuer_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = reelay_server::Config {
        data_dir: dir.path().to_path_buf(),
        issuer_key: Some(k.issuer_path.clone()),
        trusted_keys: Some(k.trusted_path.clone()),
        ..Default::default()
    };
    let err = reelay_server::build_state(cfg, 0)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("accessible to other users"),
        "{err}"
    );
}

/// Finding: protected mode was decided from the listen address alone, so a loopback cluster
/// behind an edge on the same host served anonymous requests from anywhere. A forwarded request
/// (the edge's nginx always sends X-Forwarded-For) is never local now.
#[tokio::test]
async fn open_mode_serves_direct_loopback_clients_only_never_forwarded_requests() {
    let s = TestServer::start_with(|c| c.workers = 1).await;
    use reqwest::Method as M;
    assert_eq!(call(&s, M::GET, "/v1/presets", None, None).await.0, 200);
    for header in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        let r = s
            .http
            .get(s.url("/v1/presets"))
            .header(header, "203.0.113.9")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{header}");
    }
    // The explicit opt-in (benchmarks, tests) keeps forwarded requests open.
    let open = TestServer::start_with(|c| {
        c.workers = 1;
        c.allow_anonymous = true;
    })
    .await;
    let r = open
        .http
        .get(open.url("/v1/presets"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // ...and is refused beyond loopback or with keys.
    let bad = reelay_server::Config {
        listen: "0.0.0.0:8080".into(),
        allow_anonymous: true,
        ..Default::default()
    };
    assert!(bad.validate().is_err());
}
