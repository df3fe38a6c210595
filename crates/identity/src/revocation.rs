//! Revocations: "token `id` is revoked since `revoked_at`", signed by an issuer key.
//!
//! Each cluster keeps the revocations it made or received in its job store; the edge collects
//! them from every cluster and hands each cluster the ones it lacks. Because each statement is
//! signed, neither the edge nor anything on the path can invent one (which would revoke someone
//! else's token); a cluster signs the statements it serves with its current issuer key, so they
//! stay verifiable after a key rotation retires the key that first signed them.

use crate::keys::{SigningKey, TrustedKeys, VerifyError, MAX_KEY_ID};
use crate::{b64, unb64, valid_name};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// The token id (`jti`).
    pub id: String,
    /// Unix milliseconds.
    pub revoked_at: u64,
    pub key_id: String,
    /// Ed25519 over `reelay-revocation-v1\n{id}\n{revoked_at}`, base64url.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("not a token id: {0:?}")]
    BadId(String),
    #[error("signed with key {0:?}, which is not trusted")]
    UnknownKey(String),
    #[error("the signature is not valid")]
    BadSignature,
}

impl RevocationError {
    pub fn code(&self) -> &'static str {
        match self {
            RevocationError::BadId(_) => "invalid_token_id",
            RevocationError::UnknownKey(_) => "unknown_key",
            RevocationError::BadSignature => "bad_signature",
        }
    }

    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Signed token ids are 16 hex digits.
pub fn valid_token_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn message(id: &str, revoked_at: u64) -> String {
    format!("reelay-revocation-v1\n{id}\n{revoked_at}")
}

impl Revocation {
    pub fn sign(
        key: &SigningKey,
        id: &str,
        revoked_at: u64,
    ) -> Result<Revocation, RevocationError> {
        if !valid_token_id(id) {
            return Err(RevocationError::BadId(id.to_string()));
        }
        Ok(Revocation {
            id: id.to_string(),
            revoked_at,
            key_id: key.kid().to_string(),
            signature: b64(&key.sign(message(id, revoked_at).as_bytes())),
        })
    }

    pub fn verify(&self, trusted: &TrustedKeys) -> Result<(), RevocationError> {
        if !valid_token_id(&self.id) {
            return Err(RevocationError::BadId(self.id.clone()));
        }
        if !valid_name(&self.key_id, MAX_KEY_ID) {
            return Err(RevocationError::UnknownKey(self.key_id.clone()));
        }
        let sig = unb64(&self.signature).ok_or(RevocationError::BadSignature)?;
        trusted
            .verify(
                &self.key_id,
                message(&self.id, self.revoked_at).as_bytes(),
                &sig,
            )
            .map_err(|e| match e {
                VerifyError::UnknownKey => RevocationError::UnknownKey(self.key_id.clone()),
                VerifyError::BadSignature => RevocationError::BadSignature,
            })
    }
}

/// Revoked token ids with the time of revocation (the earliest seen wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationSet {
    revoked: HashMap<String, u64>,
}

impl RevocationSet {
    /// Adds one; true if the id was not revoked before.
    pub fn insert(&mut self, id: &str, revoked_at: u64) -> bool {
        match self.revoked.get_mut(id) {
            Some(at) => {
                *at = (*at).min(revoked_at);
                false
            }
            None => {
                self.revoked.insert(id.to_string(), revoked_at);
                true
            }
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.revoked.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.revoked.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Merges statements after checking each signature; returns the ids that were new and the
    /// statements refused (with why).
    pub fn merge_verified<'a>(
        &mut self,
        statements: impl IntoIterator<Item = &'a Revocation>,
        trusted: &TrustedKeys,
    ) -> (Vec<String>, Vec<(String, RevocationError)>) {
        let mut added = Vec::new();
        let mut refused = Vec::new();
        for r in statements {
            match r.verify(trusted) {
                Ok(()) => {
                    if self.insert(&r.id, r.revoked_at) {
                        added.push(r.id.clone());
                    }
                }
                Err(e) => refused.push((r.id.clone(), e)),
            }
        }
        (added, refused)
    }

    /// The ids in this set that `known` lacks, oldest first (what to send a cluster).
    pub fn missing_from(&self, known: &HashSet<String>) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .revoked
            .iter()
            .filter(|(id, _)| !known.contains(*id))
            .map(|(id, at)| (id.clone(), *at))
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (SigningKey, SigningKey, TrustedKeys) {
        let a = SigningKey::from_seed("a", &[1u8; 32]).unwrap();
        let b = SigningKey::from_seed("b", &[2u8; 32]).unwrap();
        let trusted = TrustedKeys::from_keys([
            ("a".to_string(), a.public_key()),
            ("b".to_string(), b.public_key()),
        ]);
        (a, b, trusted)
    }

    #[test]
    fn signed_statements_verify_and_forgeries_do_not() {
        let (a, _, trusted) = keys();
        let r = Revocation::sign(&a, "0123456789abcdef", 5).unwrap();
        assert_eq!(r.verify(&trusted), Ok(()));
        let moved = Revocation {
            revoked_at: 6,
            ..r.clone()
        };
        assert_eq!(moved.verify(&trusted), Err(RevocationError::BadSignature));
        let other = Revocation {
            id: "fedcba9876543210".into(),
            ..r.clone()
        };
        assert_eq!(other.verify(&trusted), Err(RevocationError::BadSignature));
        let unknown = SigningKey::from_seed("z", &[3u8; 32]).unwrap();
        let z = Revocation::sign(&unknown, "0123456789abcdef", 5).unwrap();
        assert_eq!(z.verify(&trusted).unwrap_err().code(), "unknown_key");
        assert!(Revocation::sign(&a, "rly_x", 5).is_err());
    }

    #[test]
    fn merging_keeps_the_earliest_and_reports_refusals() {
        let (a, b, trusted) = keys();
        let mut set = RevocationSet::default();
        let r1 = Revocation::sign(&a, "0000000000000001", 20).unwrap();
        let r1_earlier = Revocation::sign(&b, "0000000000000001", 10).unwrap();
        let r2 = Revocation::sign(&b, "0000000000000002", 30).unwrap();
        let mut forged = Revocation::sign(&a, "0000000000000003", 5).unwrap();
        forged.id = "0000000000000004".into();
        let (added, refused) = set.merge_verified([&r1, &r2, &forged, &r1_earlier], &trusted);
        assert_eq!(added, vec!["0000000000000001", "0000000000000002"]);
        assert_eq!(refused.len(), 1);
        assert_eq!(set.len(), 2);
        assert!(set.contains("0000000000000001") && !set.contains("0000000000000004"));
        assert_eq!(
            set.iter()
                .find(|(id, _)| *id == "0000000000000001")
                .unwrap()
                .1,
            10
        );
        let known: HashSet<String> = ["0000000000000002".to_string()].into();
        assert_eq!(
            set.missing_from(&known),
            vec![("0000000000000001".to_string(), 10)]
        );
        assert!(set
            .missing_from(&set.iter().map(|(i, _)| i.to_string()).collect())
            .is_empty());
    }
}
