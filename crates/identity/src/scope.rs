//! What a token may do.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Submit jobs and cancel its own.
    Submit,
    /// Read its own jobs, their events and outputs; presets.
    Read,
    /// Everything, on every job; create and revoke tokens.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Submit, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Admin => "admin",
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

    /// Whether a holder of `scopes` may act with `need` (`admin` implies everything).
    pub fn granted(scopes: &[Scope], need: Scope) -> bool {
        scopes.contains(&Scope::Admin) || scopes.contains(&need)
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}: expected submit, read or admin"))
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
    }
}
