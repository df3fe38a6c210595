//! Requests a cluster refuses before reading their body (issue 12, finding 4): the answer must
//! reach the client whole and the connection must not be reset under a client (or a proxy such
//! as the edge's nginx) that is still sending. Raw TCP, so that what happens to the connection
//! is visible: the body is written beside the reader, then a second request goes on the same
//! connection.

mod common;

use common::TestServer;
use reelay_protocol::ErrorBody;
use reelay_server::auth::{issue_token, Scope};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "reelay-test-boundary";
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.bin\"\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn post(content_type: &str, body: &[u8], auth: Option<&str>) -> Vec<u8> {
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut req = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: reelay.test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{auth}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// Reads one answer: the status and the body (by Content-Length). None if the connection ended
/// first.
async fn read_answer(
    r: &mut (impl AsyncReadExt + Unpin),
    buf: &mut Vec<u8>,
) -> Option<(u16, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head.split_whitespace().nth(1)?.parse().ok()?;
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return Some((status, body));
            }
        }
        let mut chunk = [0u8; 65536];
        match tokio::time::timeout(Duration::from_secs(20), r.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

struct Exchange {
    status: u16,
    code: String,
    /// Whether the whole request was written without the connection failing.
    wrote_everything: bool,
    /// The answer to a second request on the same connection, if it came.
    next_status: Option<u16>,
}

/// Sends `request` while reading the answer, then asks `/healthz` on the same connection.
async fn exchange(addr: &str, request: Vec<u8>) -> Exchange {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        for chunk in request.chunks(64 << 10) {
            if wr.write_all(chunk).await.is_err() {
                return (false, wr);
            }
        }
        (true, wr)
    });
    let mut buf = Vec::new();
    let (status, body) = read_answer(&mut rd, &mut buf)
        .await
        .expect("an answer before the connection ended");
    let code = serde_json::from_slice::<ErrorBody>(&body)
        .map(|b| b.error.code)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
    let (wrote_everything, mut wr) = writer.await.unwrap();
    let next_status = if wrote_everything {
        let ok = wr
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: reelay.test\r\n\r\n")
            .await
            .is_ok();
        if ok {
            read_answer(&mut rd, &mut buf).await.map(|(s, _)| s)
        } else {
            None
        }
    } else {
        None
    };
    Exchange {
        status,
        code,
        wrote_everything,
        next_status,
    }
}

#[tokio::test]
async fn refused_uploads_are_answered_and_the_connection_stays_usable() {
    let s = TestServer::start().await;
    let token = issue_token(&*s.state.store, "t", &[Scope::Admin])
        .await
        .unwrap()
        .token;
    let addr = s.base.trim_start_matches("http://").to_string();
    let spec = br#"{"outputs":[{"preset":"mp4-360p"}]}"#;
    let upload = vec![0x47u8; 4 << 20];
    let (ctype, file_first) = multipart(&[("file", &upload), ("spec", spec)]);
    let (ctype2, bad_spec) = multipart(&[
        ("spec", br#"{"outputs":[{"preset":"nope"}]}"#),
        ("file", &upload),
    ]);
    let (ctype3, valid_order) = multipart(&[("spec", spec), ("file", &upload)]);
    let cases = [
        ("file before spec", post(&ctype, &file_first, Some(&token)), 400, "malformed_multipart"),
        ("invalid spec before the file", post(&ctype2, &bad_spec, Some(&token)), 422, "invalid_spec"),
        ("JSON over max_json_bytes", post("application/json", &vec![b' '; 2 << 20], Some(&token)), 413, "too_large"),
        ("no token", post(&ctype3, &valid_order, None), 401, "unauthorized"),
        ("unknown token", post(&ctype3, &valid_order, Some("rly_000000000000_0000000000000000000000000000000000000000000000000000000000000000")), 401, "unauthorized"),
    ];
    for (what, request, status, code) in cases {
        let e = exchange(&addr, request).await;
        assert_eq!((e.status, e.code.as_str()), (status, code), "{what}");
        assert!(
            e.wrote_everything,
            "{what}: the connection failed under the upload"
        );
        assert_eq!(
            e.next_status,
            Some(200),
            "{what}: the connection is still usable"
        );
    }
}

#[tokio::test]
async fn a_client_that_sends_far_past_the_answer_is_cut_off_after_it() {
    let s = TestServer::start().await;
    let addr = s.base.trim_start_matches("http://").to_string();
    // Over the drain budget (64 MiB): read up to it after the answer, then the connection closes.
    let upload = vec![0x47u8; 80 << 20];
    let (ctype, body) = multipart(&[("file", &upload), ("spec", b"{}")]);
    let e = exchange(&addr, post(&ctype, &body, None)).await;
    assert_eq!((e.status, e.code.as_str()), (400, "malformed_multipart"));
    assert!(!e.wrote_everything, "cut off past the budget");
}
