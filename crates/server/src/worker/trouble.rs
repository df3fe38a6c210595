//! When asking for a peer's work keeps failing: an idle slot asks the edge (or each peer) every
//! `[steal] poll_ms`, so logging every failure would flood the log with one line a second per
//! slot, and logging them at debug (as before this module) left an operator with a wrong token
//! or an unreachable edge no clue why no work ever moved. A failure is logged when it starts
//! and when it changes, and its end once; the rest is the `reelay_steal_asks_total` counter.

use std::collections::HashMap;
use std::sync::Mutex;

/// How the state of one source (the edge, or a peer by name) moved with the latest ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// As before: nothing to log.
    Same,
    /// It failed, after working (or at the first ask).
    Started,
    /// It still fails, for another reason.
    Changed,
    /// It works again.
    Ended,
}

/// The pure rule: `before` and `now` are the failure's kind (None: the ask worked).
pub(super) fn change(before: Option<&str>, now: Option<&str>) -> Change {
    match (before, now) {
        (None, None) => Change::Same,
        (None, Some(_)) => Change::Started,
        (Some(_), None) => Change::Ended,
        (Some(a), Some(b)) if a == b => Change::Same,
        (Some(_), Some(_)) => Change::Changed,
    }
}

/// The last failure kind per source, shared by every slot of the process (so one bad token is
/// one log line, not one per slot).
#[derive(Debug, Default)]
pub(super) struct Trouble {
    last: Mutex<HashMap<String, String>>,
}

impl Trouble {
    /// Records the outcome of an ask of `source` (`kind` None: it worked) and says what changed.
    pub(super) fn record(&self, source: &str, kind: Option<&str>) -> Change {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let c = change(last.get(source).map(String::as_str), kind);
        match kind {
            Some(k) if c != Change::Same => {
                last.insert(source.to_string(), k.to_string());
            }
            None => {
                last.remove(source);
            }
            _ => {}
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        assert_eq!(change(None, None), Change::Same);
        assert_eq!(change(None, Some("peer_refused 401")), Change::Started);
        assert_eq!(
            change(Some("peer_refused 401"), Some("peer_refused 401")),
            Change::Same
        );
        assert_eq!(
            change(Some("peer_refused 401"), Some("peer_unreachable")),
            Change::Changed
        );
        assert_eq!(change(Some("peer_unreachable"), None), Change::Ended);
    }

    /// A failure that repeats every poll is reported once, its change once, its end once; each
    /// source on its own.
    #[test]
    fn one_line_per_change_per_source() {
        let t = Trouble::default();
        assert_eq!(t.record("edge", None), Change::Same);
        assert_eq!(t.record("edge", Some("peer_refused 401")), Change::Started);
        for _ in 0..5 {
            assert_eq!(t.record("edge", Some("peer_refused 401")), Change::Same);
        }
        assert_eq!(t.record("aws", Some("peer_unreachable")), Change::Started);
        assert_eq!(t.record("edge", Some("peer_unreachable")), Change::Changed);
        assert_eq!(t.record("edge", None), Change::Ended);
        assert_eq!(t.record("edge", None), Change::Same);
        assert_eq!(t.record("aws", Some("peer_unreachable")), Change::Same);
    }
}
