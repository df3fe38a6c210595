//! The in-process MP4 probe reads only `moov`, so a file whose index is valid but whose media
//! is garbage is admitted (ffprobe, which decodes a few frames, might have said the same or
//! not). It must then fail as a job, with a clear code, promptly, not hang or succeed empty.

mod common;

use common::*;
use reelay_protocol::JobStatus;
use std::time::Duration;

/// Byte range of the top-level `mdat` payload.
fn mdat_payload(data: &[u8]) -> std::ops::Range<usize> {
    let mut pos = 0;
    while pos + 8 <= data.len() {
        let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        if &data[pos + 4..pos + 8] == b"mdat" {
            return pos + 8..pos + len;
        }
        pos += len;
    }
    panic!("no mdat");
}

#[tokio::test]
async fn valid_moov_with_garbage_mdat_fails_the_job_cleanly() {
    let s = TestServer::start_with(|c| c.stall_timeout_seconds = 30).await;
    let dir = s.dir.path();
    let good = clip(dir, "good.mp4", 320, 240, 2.0, true);
    let mut data = std::fs::read(&good).unwrap();
    // xorshift noise over every media byte: no start code, no decodable slice survives.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let media = mdat_payload(&data);
    for b in &mut data[media] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let bad = dir.join("garbage.mp4");
    std::fs::write(&bad, &data).unwrap();
    assert!(
        reelay_media::mp4probe::probe_file(&bad).is_some(),
        "the index alone still looks fine: this is the case the in-process probe cannot see"
    );

    let spec = r#"{"outputs":[{"preset":"mp4-360p"}]}"#;
    let j = s.submit_ok(&bad, spec).await;
    let j = s.wait(&j.id, Duration::from_secs(120)).await;
    assert_eq!(j.status, JobStatus::Failed, "{j:?}");
    let err = j.error.as_ref().expect("a failed job says why");
    assert_eq!(err.code, "transcode_failed", "{err:?}");
    assert!(!err.message.is_empty());
    // And the service still encodes a good file afterwards.
    s.succeeded(&good, spec).await;
}
