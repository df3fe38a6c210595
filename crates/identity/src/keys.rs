//! Issuer keys (private, Ed25519) and trusted keys (the public halves every verifier holds).
//!
//! Files, one key a line, `#` comments:
//!
//! ```text
//! # issuer.key: secret; mode 0600 (0640 or 0440 for a Kubernetes secret read through fsGroup)
//! reelay-issuer-key v1 k2025a <32-byte seed, base64url>
//!
//! # trusted.keys: every key a token or revocation may be signed with
//! k2025a <32-byte public key, base64url>
//! k2024b <...>
//! ```
//!
//! Rotation is editing `trusted.keys` (add the new key everywhere, move issuers to it, later
//! remove the old one); the processes re-read both files when they change.

use crate::{b64, unb64, valid_name};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const ISSUER_MAGIC: &str = "reelay-issuer-key";
const ISSUER_VERSION: &str = "v1";
/// Key ids are short names: they travel inside every token.
pub const MAX_KEY_ID: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {why} (mode {mode:o}): {fix}")]
    Permissions {
        path: PathBuf,
        mode: u32,
        why: &'static str,
        fix: &'static str,
    },
    #[error("{path}: line {line}: {message}")]
    Format {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl KeyError {
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::Read { .. } => "key_file_unreadable",
            KeyError::Permissions { .. } => "insecure_key_file",
            KeyError::Format { .. } | KeyError::Invalid(_) => "invalid_key_file",
        }
    }

    /// Reading may succeed later (a Kubernetes secret being swapped, a disk hiccup); a file
    /// that is readable but wrong stays wrong until someone fixes it.
    pub fn is_transient(&self) -> bool {
        matches!(self, KeyError::Read { source, .. }
            if !matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied))
    }
}

/// Who may read a secret key file: the owner, and the group for reading only (a Kubernetes
/// secret volume is group-readable through `fsGroup`). Never anyone else, never group-writable.
pub fn check_secret_mode(mode: u32) -> Result<(), (&'static str, &'static str)> {
    if mode & 0o007 != 0 {
        return Err((
            "accessible to other users",
            "chmod 600 it (it signs tokens)",
        ));
    }
    if mode & 0o020 != 0 {
        return Err(("writable by its group", "chmod 600 it (it signs tokens)"));
    }
    Ok(())
}

/// Public keys are not secret, but whoever can write the file decides which tokens are valid.
pub fn check_public_mode(mode: u32) -> Result<(), (&'static str, &'static str)> {
    if mode & 0o022 != 0 {
        return Err((
            "writable by group or others",
            "chmod 644 (or stricter): whoever can write it decides which tokens are valid",
        ));
    }
    Ok(())
}

#[cfg(unix)]
fn file_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

fn read_checked(
    path: &Path,
    check: fn(u32) -> Result<(), (&'static str, &'static str)>,
) -> Result<String, KeyError> {
    let read = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    // The mode of what is actually read (a Kubernetes secret file is a symlink into ..data).
    let meta = std::fs::metadata(path).map_err(read)?;
    let mode = file_mode(&meta);
    check(mode).map_err(|(why, fix)| KeyError::Permissions {
        path: path.to_path_buf(),
        mode,
        why,
        fix,
    })?;
    std::fs::read_to_string(path).map_err(read)
}

/// An issuer key: signs tokens and revocations. Its secret never leaves this value (no Debug of
/// it, no accessor).
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    pair: Arc<Ed25519KeyPair>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.kid)
    }
}

impl SigningKey {
    pub fn from_seed(kid: &str, seed: &[u8]) -> Result<SigningKey, KeyError> {
        if !valid_name(kid, MAX_KEY_ID) {
            return Err(KeyError::Invalid(format!(
                "key id {kid:?}: 1-{MAX_KEY_ID} characters of A-Z a-z 0-9 . _ -"
            )));
        }
        if seed.len() != 32 {
            return Err(KeyError::Invalid("an Ed25519 seed has 32 bytes".into()));
        }
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| KeyError::Invalid(format!("not an Ed25519 seed: {e}")))?;
        Ok(SigningKey {
            kid: kid.to_string(),
            pair: Arc::new(pair),
        })
    }

    /// A new random key.
    pub fn generate(kid: &str) -> Result<(SigningKey, String), KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| KeyError::Invalid(format!("no randomness: {e}")))?;
        let key = Self::from_seed(kid, &seed)?;
        let file = format!(
            "# reelay issuer key {kid} (Ed25519). SECRET: it signs API tokens. Keep it mode 0600 and out of git.\n\
             {ISSUER_MAGIC} {ISSUER_VERSION} {kid} {}\n",
            b64(&seed)
        );
        Ok((key, file))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// The line to add to every trusted.keys file.
    pub fn trusted_line(&self) -> String {
        format!("{} {}", self.kid, b64(&self.public_key()))
    }

    /// Parses an issuer key file's text (pure).
    pub fn parse(text: &str, path: &Path) -> Result<SigningKey, KeyError> {
        let mut found = None;
        for (i, line) in meaningful_lines(text) {
            let bad = |message: String| KeyError::Format {
                path: path.to_path_buf(),
                line: i,
                message,
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [magic, version, kid, seed] = parts[..] else {
                return Err(bad(format!(
                    "expected \"{ISSUER_MAGIC} {ISSUER_VERSION} <key id> <seed>\""
                )));
            };
            if magic != ISSUER_MAGIC || version != ISSUER_VERSION {
                return Err(bad(format!(
                    "expected \"{ISSUER_MAGIC} {ISSUER_VERSION} …\" (is this a trusted.keys file?)"
                )));
            }
            if found.is_some() {
                return Err(bad("an issuer key file holds one key".into()));
            }
            let seed = unb64(seed).ok_or_else(|| bad("the seed is not base64url".into()))?;
            found = Some(Self::from_seed(kid, &seed).map_err(|e| bad(e.to_string()))?);
        }
        found.ok_or_else(|| KeyError::Format {
            path: path.to_path_buf(),
            line: 0,
            message: "no key in the file".into(),
        })
    }
}

fn meaningful_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Reads an issuer key file, refusing one that other users could read.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    SigningKey::parse(&read_checked(path, check_secret_mode)?, path)
}

/// Reads a trusted keys file, refusing one that others could write.
pub fn load_trusted_keys(path: &Path) -> Result<TrustedKeys, KeyError> {
    TrustedKeys::parse(&read_checked(path, check_public_mode)?, path)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    UnknownKey,
    BadSignature,
}

/// The public keys a verifier accepts signatures from, by key id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: BTreeMap<String, Vec<u8>>,
}

impl TrustedKeys {
    pub fn parse(text: &str, path: &Path) -> Result<TrustedKeys, KeyError> {
        let mut keys = BTreeMap::new();
        for (i, line) in meaningful_lines(text) {
            let bad = |message: String| KeyError::Format {
                path: path.to_path_buf(),
                line: i,
                message,
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [kid, public] = parts[..] else {
                if parts.first() == Some(&ISSUER_MAGIC) {
                    return Err(bad(
                        "this is a SECRET issuer key, not a public key: never put it in trusted.keys".into(),
                    ));
                }
                return Err(bad("expected \"<key id> <public key>\"".into()));
            };
            if !valid_name(kid, MAX_KEY_ID) {
                return Err(bad(format!("key id {kid:?}: A-Z a-z 0-9 . _ -")));
            }
            let public = unb64(public)
                .filter(|p| p.len() == 32)
                .ok_or_else(|| bad("the public key is not 32 bytes of base64url".into()))?;
            if keys.insert(kid.to_string(), public).is_some() {
                return Err(bad(format!("key id {kid} appears twice")));
            }
        }
        Ok(TrustedKeys { keys })
    }

    pub fn from_keys(keys: impl IntoIterator<Item = (String, Vec<u8>)>) -> TrustedKeys {
        TrustedKeys {
            keys: keys.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Whether `signature` over `message` was made by the key `kid`.
    pub fn verify(&self, kid: &str, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        let public = self.keys.get(kid).ok_or(VerifyError::UnknownKey)?;
        UnparsedPublicKey::new(&ED25519, public)
            .verify(message, signature)
            .map_err(|_| VerifyError::BadSignature)
    }
}

/// An issuer key must be among the trusted keys, or every token it signs would be refused.
pub fn check_issuer_is_trusted(issuer: &SigningKey, trusted: &TrustedKeys) -> Result<(), KeyError> {
    match trusted.keys.get(issuer.kid()) {
        Some(p) if *p == issuer.public_key() => Ok(()),
        Some(_) => Err(KeyError::Invalid(format!(
            "trusted keys list {} with another public key than the issuer key's",
            issuer.kid()
        ))),
        None => Err(KeyError::Invalid(format!(
            "the issuer key {} is not among the trusted keys: every token it signs would be refused \
             (add this line to trusted.keys: {})",
            issuer.kid(),
            issuer.trusted_line()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_their_files() {
        let (key, file) = SigningKey::generate("k1").unwrap();
        let again = SigningKey::parse(&file, Path::new("issuer.key")).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let trusted = TrustedKeys::parse(
            &format!("# comment\n\n{}\n", key.trusted_line()),
            Path::new("t"),
        )
        .unwrap();
        let sig = key.sign(b"hello");
        assert_eq!(trusted.verify("k1", b"hello", &sig), Ok(()));
        assert_eq!(
            trusted.verify("k1", b"hellO", &sig),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            trusted.verify("k2", b"hello", &sig),
            Err(VerifyError::UnknownKey)
        );
        assert!(check_issuer_is_trusted(&key, &trusted).is_ok());
        assert!(check_issuer_is_trusted(&key, &TrustedKeys::default()).is_err());
        assert!(!format!("{key:?}").contains(&file.lines().nth(1).unwrap()[30..]));
    }

    #[test]
    fn malformed_files_name_the_line() {
        let p = Path::new("f");
        let (key, file) = SigningKey::generate("k1").unwrap();
        let e = TrustedKeys::parse(&file, p).unwrap_err().to_string();
        assert!(e.contains("SECRET"), "{e}");
        let line = key.trusted_line();
        let e = TrustedKeys::parse(&format!("{line}\n{line}\n"), p).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        for bad in ["k1", "k1 !!!", "k 1 x", "k;1 AAAA"] {
            assert!(TrustedKeys::parse(bad, p).is_err(), "{bad}");
        }
        assert!(SigningKey::parse("", p).is_err());
        assert!(SigningKey::parse(&line, p).is_err());
        assert!(SigningKey::parse(&format!("{file}{file}"), p).is_err());
        assert!(SigningKey::generate("bad id").is_err());
    }

    #[test]
    fn modes() {
        for ok in [0o600, 0o400, 0o640, 0o440] {
            assert!(check_secret_mode(ok).is_ok(), "{ok:o}");
        }
        for bad in [0o604, 0o644, 0o660, 0o666, 0o601] {
            assert!(check_secret_mode(bad).is_err(), "{bad:o}");
        }
        assert!(check_public_mode(0o644).is_ok());
        assert!(check_public_mode(0o664).is_err() && check_public_mode(0o646).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn loading_refuses_readable_secrets() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuer.key");
        let (_, file) = SigningKey::generate("k1").unwrap();
        std::fs::write(&path, file).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_signing_key(&path).unwrap_err();
        assert_eq!(e.code(), "insecure_key_file");
        assert!(!e.is_transient());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_signing_key(&path).unwrap().kid(), "k1");
        let missing = load_signing_key(&dir.path().join("nope")).unwrap_err();
        assert!(!missing.is_transient());
    }
}
