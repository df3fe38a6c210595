//! `X-Reelay-Deadline`: the last moment a forwarded submission may still become a job.
//!
//! The edge gives up on a cluster that accepted a submission's connection but did not answer in
//! time (a stopped process, a link cut after the handshake) and sends the submission to another
//! cluster. If the first cluster later wakes and reads the request from its socket, creating the
//! job would make a job no client was told about (and a duplicate of the one the retry made).
//! So nginx stamps each forwarded JSON submission with `<unix seconds.millis when forwarded>+<ms>`
//! (its `$msec` and a budget shorter than its own answer timeout), and the cluster checks it
//! just before it would create the job. Clocks of edge and clusters must agree to well within
//! the margin between the budget and nginx's timeout (NTP); a clock far ahead refuses every
//! stamped submission with a 503 that says so, it never creates a job silently.

use crate::error::{ApiError, ErrorCode};
use axum::http::HeaderMap;

pub const HEADER: &str = "x-reelay-deadline";

/// A parsed deadline, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub at_unix_ms: u64,
}

/// Why a deadline header was refused or a deadline has passed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadlineError {
    #[error("X-Reelay-Deadline must be <unix seconds[.millis]>+<milliseconds>")]
    Malformed,
    #[error("the edge gave up on this submission {late_ms} ms ago (X-Reelay-Deadline passed); no job was created. If this repeats, compare the clocks of the edge and this cluster")]
    Passed { late_ms: u64 },
}

impl DeadlineError {
    /// A malformed header is the sender's mistake; a passed deadline is worth retrying.
    pub fn is_transient(&self) -> bool {
        matches!(self, DeadlineError::Passed { .. })
    }
}

impl From<DeadlineError> for ApiError {
    fn from(e: DeadlineError) -> Self {
        match e {
            DeadlineError::Malformed => ApiError::new(ErrorCode::InvalidDeadline, e.to_string()),
            DeadlineError::Passed { .. } => ApiError {
                retry_after: Some(1),
                ..ApiError::new(ErrorCode::DeadlinePassed, e.to_string())
            },
        }
    }
}

impl Deadline {
    /// Parses `<seconds>[.<millis>]+<budget ms>`; None when the header is absent.
    pub fn from_headers(h: &HeaderMap) -> Result<Option<Deadline>, DeadlineError> {
        let Some(v) = h.get(HEADER) else {
            return Ok(None);
        };
        let s = v.to_str().map_err(|_| DeadlineError::Malformed)?;
        Self::parse(s).map(Some)
    }

    pub fn parse(s: &str) -> Result<Deadline, DeadlineError> {
        let (at, budget) = s.trim().split_once('+').ok_or(DeadlineError::Malformed)?;
        let (secs, frac) = at.split_once('.').unwrap_or((at, "0"));
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(secs) || !digits(budget) || !digits(frac) || frac.len() > 3 {
            return Err(DeadlineError::Malformed);
        }
        let num = |t: &str| t.parse::<u64>().map_err(|_| DeadlineError::Malformed);
        // "1.5" is 1500 ms, "1.05" is 1050 ms: right-pad the fraction to milliseconds.
        let millis = num(frac)? * 10u64.pow(3 - frac.len() as u32);
        let at_unix_ms = num(secs)?
            .checked_mul(1000)
            .and_then(|ms| ms.checked_add(millis))
            .and_then(|ms| ms.checked_add(num(budget).ok()?))
            .ok_or(DeadlineError::Malformed)?;
        Ok(Deadline { at_unix_ms })
    }

    /// Whether a job may still be created at `now_unix_ms`.
    pub fn check(&self, now_unix_ms: u64) -> Result<(), DeadlineError> {
        match now_unix_ms.checked_sub(self.at_unix_ms) {
            Some(late_ms) if late_ms > 0 => Err(DeadlineError::Passed { late_ms }),
            _ => Ok(()),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nginx_msec_plus_budget() {
        let d = Deadline::parse("1764500000.123+1200").unwrap();
        assert_eq!(d.at_unix_ms, 1_764_500_001_323);
        assert_eq!(
            Deadline::parse("1764500000+0").unwrap().at_unix_ms,
            1_764_500_000_000
        );
        assert_eq!(Deadline::parse("10.5+0").unwrap().at_unix_ms, 10_500);
        assert_eq!(Deadline::parse("10.05+1").unwrap().at_unix_ms, 10_051);
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "",
            "+",
            "1764500000",
            "1764500000.123",
            "abc+1",
            "1+abc",
            "-1+5",
            "1.1234+5",
            "1.+5",
            "1+-5",
            "99999999999999+1",
            "1 +1",
        ] {
            assert_eq!(
                Deadline::parse(bad),
                Err(DeadlineError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn passes_until_the_deadline_and_not_after() {
        let d = Deadline { at_unix_ms: 10_000 };
        assert_eq!(d.check(9_000), Ok(()));
        assert_eq!(d.check(10_000), Ok(()));
        assert_eq!(d.check(10_250), Err(DeadlineError::Passed { late_ms: 250 }));
        assert!(d.check(10_001).unwrap_err().is_transient());
        assert!(!DeadlineError::Malformed.is_transient());
    }

    #[test]
    fn renders_as_json_errors_with_their_codes() {
        let e: ApiError = DeadlineError::Passed { late_ms: 5 }.into();
        assert_eq!((e.status.as_u16(), e.code), (503, "deadline_passed"));
        assert_eq!(e.retry_after, Some(1));
        let e: ApiError = DeadlineError::Malformed.into();
        assert_eq!((e.status.as_u16(), e.code), (400, "invalid_deadline"));
    }
}
