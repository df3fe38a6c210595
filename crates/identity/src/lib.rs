//! One identity across clouds.
//!
//! A token is signed by an **issuer key** (Ed25519, named by a key id) and verified statelessly
//! by every cluster and by the edge with the **trusted keys** (the issuers' public halves), so a
//! token created once works everywhere. Revoking one produces a **revocation**: a statement
//! "token `id` is revoked since `t`", signed by an issuer key, which any holder of the trusted
//! keys can check, so it may travel through any channel (the edge carries revocations between
//! clusters) without that channel being able to forge one.
//!
//! Ed25519 rather than HMAC: a verifier then holds only public keys, so the internet-facing edge
//! can check tokens without being able to mint them.
//!
//! | module | owns |
//! |---|---|
//! | [`scope`] | what a token may do |
//! | [`keys`] | issuer and trusted key files (parsing, mode checks, generation) |
//! | [`token`] | the token format: claims, signing, verification with time passed in |
//! | [`revocation`] | signed revocations and the set of revoked token ids |
//! | [`wire`] | the JSON of the token and revocation endpoints |
//!
//! Everything here is pure except reading key files ([`keys::load_signing_key`],
//! [`keys::load_trusted_keys`]) and drawing randomness for new keys and token ids.

pub mod keys;
pub mod revocation;
pub mod scope;
pub mod token;
pub mod wire;

pub use keys::{KeyError, SigningKey, TrustedKeys};
pub use revocation::{Revocation, RevocationSet};
pub use scope::Scope;
pub use token::{Claims, TokenError, TOKEN_PREFIX};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Lowercase hex of random bytes (token ids).
pub fn random_hex(n: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Key ids and owners: short, printable, safe in logs, headers and file names.
pub fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}
