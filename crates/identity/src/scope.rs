//! What a token may do.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Submit jobs and cancel its own.
    Submit,
    /// Read its own jobs, their events and outputs; presets.
    Read,
    /// Everything, on every job; create and revoke tokens. Not `peer`.
    Admin,
    /// A cluster peer: claim, renew, complete, fail and release tasks of this cluster for its
    /// own workers, and read and write those tasks' objects (issue 16, remote claim). Granted
    /// only explicitly, never implied by `admin`: it lets a machine take work and touch every
    /// owner's task objects, which no person's token needs, and keeping it apart means a peer
    /// credential can do nothing else and a leaked admin token cannot pose as a cluster.
    Peer,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Submit, Scope::Read, Scope::Admin, Scope::Peer];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Peer => "peer",
        }
    }

    /// The scope an HTTP method needs on `/v1`: reading is `read`, changing is `submit`.
    pub fn for_method(method: &str) -> Scope {
        if matches!(method, "GET" | "HEAD" | "OPTIONS") {
            Scope::Read
        } else {
            Scope::Submit
        }
    }

    /// Whether a holder of `scopes` may act with `need` (`admin` implies everything but
    /// `peer`, which only an explicit grant gives).
    pub fn granted(scopes: &[Scope], need: Scope) -> bool {
        scopes.contains(&need) || (need != Scope::Peer && scopes.contains(&Scope::Admin))
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}: expected submit, read, admin or peer"))
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_admin() {
        assert_eq!(Scope::for_method("GET"), Scope::Read);
        assert_eq!(Scope::for_method("DELETE"), Scope::Submit);
        assert!(Scope::granted(&[Scope::Admin], Scope::Submit));
        assert!(!Scope::granted(&[Scope::Read], Scope::Submit));
        assert_eq!("read".parse::<Scope>(), Ok(Scope::Read));
        assert!("root".parse::<Scope>().is_err());
        assert_eq!("peer".parse::<Scope>(), Ok(Scope::Peer));
        assert!(!Scope::granted(&[Scope::Admin], Scope::Peer));
        assert!(!Scope::granted(&[Scope::Submit, Scope::Read], Scope::Peer));
        assert!(Scope::granted(&[Scope::Peer], Scope::Peer));
        assert!(!Scope::granted(&[Scope::Peer], Scope::Read));
    }
}
