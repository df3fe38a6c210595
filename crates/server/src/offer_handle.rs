//! The steal offer's task, named by an opaque handle.
//!
//! `/v1/load` is open (the edge polls it without credentials, and nginx serves it through the
//! edge too), and its steal offer must name a task so that the thief's claim takes exactly the
//! one the edge weighed. A task id is `{cluster}.{job}.{key}`: naming it there told anyone who
//! asked the id of a job waiting in some tenant's queue. The offer names the task by a handle
//! only this cluster can read instead: the task id sealed (ChaCha20-Poly1305, a random nonce
//! per offer) under a key derived from the cluster's webhook notify key, which every replica
//! already shares, with the cluster's name as associated data. The edge and the thief pass the
//! handle along unread; the owner opens it when a peer's claim names it. A claim may still name
//! a task by its id (a peer token is needed for the claim route, and an owner from before this
//! change offers ids).

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

/// What every handle starts with. No task id can: ids start with a cluster name, which is
/// made of `a-z`, `0-9` and `-` only.
pub use reelay_protocol::OFFER_HANDLE_PREFIX as PREFIX;

/// The longest handle opened: a task id is far shorter than this; anything longer is not one
/// of ours and is not decoded.
const MAX_HANDLE_CHARS: usize = 512;

fn key(notify_key: &[u8]) -> LessSafeKey {
    // A key of its own, so that nothing sealed here can be confused with a webhook secret
    // derived from the same notify key.
    let bytes = crate::webhooks::sign::hmac(notify_key, &[b"reelay steal offer handle v1"]);
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("a 32-byte ChaCha20 key"))
}

/// The handle `cluster`'s offer names `task_id` by; `None` when the system's random source
/// fails (the caller then offers nothing rather than a reused nonce or an id).
pub fn seal(notify_key: &[u8], cluster: &str, task_id: &str) -> Option<String> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut nonce).ok()?;
    let mut sealed = task_id.as_bytes().to_vec();
    key(notify_key)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(cluster.as_bytes()),
            &mut sealed,
        )
        .ok()?;
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&sealed);
    Some(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The task id a handle of `cluster`'s names; `None` for anything this cluster did not seal
/// (another cluster's handle, a changed notify key, a forged or damaged one).
pub fn open(notify_key: &[u8], cluster: &str, handle: &str) -> Option<String> {
    if handle.len() > MAX_HANDLE_CHARS {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(handle.strip_prefix(PREFIX)?)
        .ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let mut sealed = sealed.to_vec();
    let plain = key(notify_key)
        .open_in_place(
            Nonce::try_assume_unique_for_key(nonce).ok()?,
            Aad::from(cluster.as_bytes()),
            &mut sealed,
        )
        .ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"the cluster's notify key";
    const TASK: &str = "aws.01JABCDEFGHJKMNPQRSTVWXYZ0.seg-0003";

    #[test]
    fn a_handle_opens_to_its_task_and_shows_nothing_of_it() {
        let h = seal(KEY, "aws", TASK).unwrap();
        assert!(h.starts_with(PREFIX) && reelay_protocol::is_offer_handle(&h));
        assert!(!reelay_protocol::is_offer_handle(TASK));
        assert!(!h.contains("01JABCDEF") && !h.contains("seg-"), "{h}");
        assert_eq!(open(KEY, "aws", &h).as_deref(), Some(TASK));
        // A fresh nonce each time: two offers of one task are not linkable by their handles.
        assert_ne!(seal(KEY, "aws", TASK).unwrap(), h);
    }

    #[test]
    fn only_the_cluster_that_sealed_a_handle_opens_it() {
        let h = seal(KEY, "aws", TASK).unwrap();
        assert_eq!(open(KEY, "gcp", &h), None, "another cluster's name");
        assert_eq!(open(b"another key", "aws", &h), None, "another key");
        // Any changed character breaks it.
        let mut damaged: Vec<char> = h.chars().collect();
        let i = damaged.len() - 5;
        damaged[i] = if damaged[i] == 'A' { 'B' } else { 'A' };
        let damaged: String = damaged.into_iter().collect();
        assert_eq!(open(KEY, "aws", &damaged), None);
        for junk in [
            "",
            PREFIX,
            "o_!!!",
            "o_AAAA",
            TASK,
            &format!("{PREFIX}{}", "A".repeat(600)),
        ] {
            assert_eq!(open(KEY, "aws", junk), None, "{junk:?}");
        }
    }
}
