//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256(key,
//! "{id}.{timestamp}.{body}")>`, the key being the base64 after `whsec_` in the secret.
//!
//! Per-job `notify` endpoints are signed with their owner's secret, derived from the cluster's
//! notify key (HMAC of the owner's name): nothing to store per job, the same secret for all of
//! an owner's jobs (`GET /v1/webhooks/secret`), a new one for everyone by changing the key.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// The key bytes of a `whsec_…` secret.
pub fn secret_bytes(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret
        .strip_prefix(PREFIX)
        .ok_or_else(|| "a webhook secret starts with whsec_".to_string())?;
    let key = STANDARD
        .decode(b64)
        .map_err(|e| format!("a webhook secret is whsec_ + base64: {e}"))?;
    if !(16..=64).contains(&key.len()) {
        return Err("a webhook secret holds 16 to 64 bytes".into());
    }
    Ok(key)
}

/// A `whsec_…` secret of these key bytes.
pub fn secret_of(key: &[u8]) -> String {
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// HMAC-SHA256 of `parts` in order; also derives the steal offer handle's key.
pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // An HMAC takes a key of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC key of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The `webhook-signature` header value for one message.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let ts = timestamp.to_string();
    let mac = hmac(
        key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()],
    );
    format!("v1,{}", STANDARD.encode(mac))
}

/// The notify secret of `owner` (anonymous jobs: the empty owner) under the cluster's key.
pub fn owner_secret(notify_key: &[u8], owner: &str) -> String {
    secret_of(&hmac(
        notify_key,
        &[b"reelay-notify-owner:", owner.as_bytes()],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries (their test suites).
    #[test]
    fn matches_the_reference_example() {
        let key = secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_named() {
        let s = secret_of(&[7u8; 32]);
        assert_eq!(secret_bytes(&s).unwrap(), vec![7u8; 32]);
        assert!(secret_bytes("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(secret_bytes("whsec_***").is_err());
        assert!(secret_bytes("whsec_AAAA").is_err());
    }

    #[test]
    fn owners_get_different_stable_secrets() {
        let key = [1u8; 32];
        assert_eq!(owner_secret(&key, "a"), owner_secret(&key, "a"));
        assert_ne!(owner_secret(&key, "a"), owner_secret(&key, "b"));
        assert_ne!(owner_secret(&key, "a"), owner_secret(&[2u8; 32], "a"));
        assert!(secret_bytes(&owner_secret(&key, "a")).is_ok());
    }
}
