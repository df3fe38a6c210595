//! Which storage objects a job may name as its input (`{"input": {"key": ...}}`).
//!
//! The cluster's storage holds every tenant's uploads (`inputs/<job>/…`) and outputs
//! (`outputs/<job>/…`), so a key input that could name any object would let one tenant transcode,
//! and so download, another's files. Key inputs are therefore confined to a prefix the operator
//! sets (`key_input_prefix`), which may never contain reelay's own objects, and within it to the
//! caller's own directory:
//!
//! * a token that is not `admin` may name only keys under `<prefix>/<owner>/`, where `<owner>`
//!   is the id its jobs are owned by (today the token's id);
//! * an `admin` token, and a server in open mode (loopback, no tokens), any key under `<prefix>/`.
//!
//! Without a prefix no key input is accepted. A key that is refused and a key that names nothing
//! get the same answer, so a refusal says nothing about which objects exist.

/// The first key segments reelay writes itself: never readable as a key input.
const RESERVED: [&str; 2] = ["inputs", "outputs"];

/// Why `key_input_prefix` is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("must be a relative key of A-Z a-z 0-9 - _ . = + segments separated by /")]
    Malformed,
    #[error("must not be or lie under reelay's own {0}/")]
    Reserved(&'static str),
}

/// The key-input rule of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInputs {
    /// Without trailing `/`; `None` when key inputs are off.
    prefix: Option<String>,
}

impl KeyInputs {
    /// The rule for a configured (already validated) prefix.
    pub fn new(prefix: Option<&str>) -> KeyInputs {
        KeyInputs {
            prefix: prefix.and_then(|p| normalize_prefix(p).ok()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.prefix.is_some()
    }

    /// Whether `key` lies under the prefix (the worker's check for jobs already stored, whose
    /// submitter's rights it no longer knows).
    pub fn within_prefix(&self, key: &str) -> bool {
        match &self.prefix {
            Some(prefix) => {
                crate::storage::valid_user_key(key)
                    && key
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            None => false,
        }
    }

    /// Whether job `job_id`'s stored input `key` may be read for it now: its own upload
    /// (`inputs/{job}/source`), or a key under the prefix as configured today (jobs stored
    /// before the prefix changed). The one check every reader makes: the worker at home, and
    /// the api before it hands the object to a peer.
    pub fn may_serve(&self, job_id: &str, key: &str) -> bool {
        key == crate::storage::input_key(job_id) || self.within_prefix(key)
    }

    /// Whether a caller may name `key`: `owner` is the owner of the jobs it submits, `admin`
    /// whether it sees every job.
    pub fn may_read(&self, key: &str, owner: Option<&str>, admin: bool) -> bool {
        if !self.within_prefix(key) {
            return false;
        }
        if admin {
            return true;
        }
        let (Some(prefix), Some(owner)) = (&self.prefix, owner) else {
            return false;
        };
        // `<prefix>/<owner>/<at least one more segment>`.
        key[prefix.len() + 1..]
            .split_once('/')
            .is_some_and(|(dir, rest)| dir == owner && !rest.is_empty())
    }
}

/// Checks a configured prefix and strips trailing slashes.
pub fn normalize_prefix(prefix: &str) -> Result<String, PrefixError> {
    let p = prefix.trim_end_matches('/');
    if !crate::storage::valid_user_key(p) {
        return Err(PrefixError::Malformed);
    }
    let first = p.split('/').next().unwrap_or(p);
    if let Some(r) = RESERVED.iter().find(|r| **r == first) {
        return Err(PrefixError::Reserved(r));
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_never_reach_reelays_own_objects() {
        for bad in [
            "",
            "/",
            "inputs",
            "inputs/",
            "outputs/x",
            "../imports",
            "a//b",
            "/abs",
        ] {
            assert!(normalize_prefix(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(normalize_prefix("imports/").unwrap(), "imports");
        assert_eq!(normalize_prefix("tenants/in").unwrap(), "tenants/in");
        // Segment-wise: a prefix that merely starts with the same letters is fine.
        assert_eq!(
            normalize_prefix("inputs-archive").unwrap(),
            "inputs-archive"
        );
    }

    #[test]
    fn keys_stay_inside_the_prefix_and_the_owners_directory() {
        let k = KeyInputs::new(Some("imports"));
        assert!(k.enabled());
        assert!(k.may_read("imports/a1b2/clip.mp4", Some("a1b2"), false));
        assert!(k.may_read("imports/a1b2/sub/clip.mp4", Some("a1b2"), false));
        for (key, owner) in [
            ("imports/a1b2/clip.mp4", Some("ffff")), // another tenant's file
            ("imports/a1b2/clip.mp4", None),         // no identity, not admin
            ("imports/clip.mp4", Some("a1b2")),      // outside every owner's directory
            ("imports/a1b2", Some("a1b2")),          // the directory itself
            ("imports/a1b2/", Some("a1b2")),         // malformed
            ("importsX/a1b2/clip.mp4", Some("a1b2")), // a sibling of the prefix
            ("inputs/local.X/source", Some("a1b2")), // reelay's own
            ("outputs/local.X/a1/x.mp4", Some("a1b2")),
            ("imports/a1b2/../../inputs/x", Some("a1b2")),
        ] {
            assert!(!k.may_read(key, owner, false), "{key} for {owner:?}");
        }
        // Admins (and open mode) read anything under the prefix, nothing outside it.
        assert!(k.may_read("imports/a1b2/clip.mp4", None, true));
        assert!(k.may_read("imports/clip.mp4", None, true));
        assert!(!k.may_read("inputs/local.X/source", None, true));
        assert!(!k.may_read("imports", None, true));
        assert!(k.within_prefix("imports/x/y.mp4"));
        assert!(!k.within_prefix("outputs/x/y.mp4"));
        // A job's own upload, or a key under the prefix; nothing else.
        assert!(k.may_serve("aws.01J", "inputs/aws.01J/source"));
        assert!(k.may_serve("aws.01J", "imports/x/y.mp4"));
        assert!(!k.may_serve("aws.01J", "inputs/aws.01K/source"));
        assert!(!k.may_serve("aws.01J", "outputs/x/y.mp4"));
    }

    #[test]
    fn without_a_prefix_no_key_is_readable() {
        let k = KeyInputs::new(None);
        assert!(!k.enabled());
        assert!(!k.may_read("imports/a/b.mp4", None, true));
        assert!(!k.within_prefix("clip.mp4"));
        // A prefix that failed validation never widens into "everything".
        assert!(!KeyInputs::new(Some("inputs")).enabled());
    }
}
