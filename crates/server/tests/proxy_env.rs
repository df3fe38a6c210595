//! The URL fetcher must not go through a proxy named in the environment: a proxy resolves host
//! names itself, so the guarded resolver that refuses loopback and private addresses would never
//! run. A test binary of its own, because it changes the process environment.

use reelay_server::fetch::{FetchError, Fetcher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn proxy_variables_do_not_route_fetches_around_the_guarded_resolver() {
    // A "proxy" that would happily fetch anything: it answers every request with media bytes.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = proxy.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let seen = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = proxy.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 2048];
            let _ = c.read(&mut buf).await;
            let _ = c
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nvideo",
                )
                .await;
        }
    });
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        std::env::set_var(var, format!("http://{addr}"));
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");

    let fetcher = Fetcher::new(false, Duration::from_secs(5)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let res = fetcher
        .download("http://localhost:9/x.mp4", &dir.path().join("x"), 1000)
        .await;
    assert!(
        matches!(res, Err(FetchError::Forbidden(_))),
        "a name resolving to loopback was fetched: {res:?}"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 0, "the proxy was used");
}
