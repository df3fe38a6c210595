//! Human-readable formatting: sizes, durations, percentages, timestamps, tables, and the
//! scrubbing of server-provided text before it reaches a terminal.

use std::time::Duration;

/// `0 B`, `1023 B`, `1.0 KiB`, `12.3 MiB`, ...
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `0.4s`, `45s`, `1m 05s`, `2h 03m 10s`, `3d 04h 05m`.
pub fn human_duration(d: Duration) -> String {
    let secs_f = d.as_secs_f64();
    if secs_f < 10.0 && d.subsec_millis() != 0 {
        return format!("{secs_f:.1}s");
    }
    let total = d.as_secs();
    let (days, hours, mins, secs) = (
        total / 86_400,
        total / 3_600 % 24,
        total / 60 % 60,
        total % 60,
    );
    if total < 60 {
        format!("{secs}s")
    } else if total < 3_600 {
        format!("{mins}m {secs:02}s")
    } else if total < 86_400 {
        format!("{hours}h {mins:02}m {secs:02}s")
    } else {
        format!("{days}d {hours:02}h {mins:02}m")
    }
}

/// A job's `progress` (0.0 ..= 1.0) as a whole percentage, robust to out-of-range server values.
/// Rounds down, so a job never shows 100% before it has actually finished.
pub fn percent(progress: f64) -> u64 {
    if !progress.is_finite() {
        return 0;
    }
    (progress.clamp(0.0, 1.0) * 100.0).floor() as u64
}

/// Parses an RFC 3339 timestamp (`2024-11-26T08:23:00.123Z`, `...+02:00`) into Unix seconds.
/// Returns `None` for anything it does not understand; callers then just skip derived values.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20 || !s.is_ascii() {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = &s[range];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut fraction = 0.0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        fraction = format!("0.{}", &after_dot[..digits]).parse().ok()?;
        rest = &after_dot[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits = |r: std::ops::Range<usize>| -> Option<i64> {
                let p = &rest[r];
                p.bytes()
                    .all(|c| c.is_ascii_digit())
                    .then(|| p.parse().ok())?
            };
            sign * (digits(1..3)? * 3_600 + digits(4..6)? * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_secs;
    Some(secs as f64 + fraction)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The time between two RFC 3339 timestamps, when both parse and are in order.
pub fn between(start: &str, end: &str) -> Option<Duration> {
    let (a, b) = (parse_rfc3339(start)?, parse_rfc3339(end)?);
    (b >= a).then(|| Duration::from_secs_f64(b - a))
}

/// Server-provided text made safe to print: control characters (terminal escape sequences,
/// newlines, NULs) are shown escaped, and overly long text is cut.
pub fn clean(s: &str) -> String {
    const MAX_CHARS: usize = 500;
    let mut out = String::with_capacity(s.len().min(MAX_CHARS + 8));
    for (i, c) in s.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Rows of left-aligned columns separated by two spaces; the last column is not padded.
pub fn columns(rows: &[Vec<String>]) -> String {
    let count = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; count];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// [`columns`] under a header row.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut all = Vec::with_capacity(rows.len() + 1);
    all.push(headers.iter().map(|h| h.to_string()).collect());
    all.extend(rows.iter().cloned());
    columns(&all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12_900_000), "12.3 MiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn durations_are_human() {
        assert_eq!(human_duration(Duration::ZERO), "0s");
        assert_eq!(human_duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(human_duration(Duration::from_millis(9_500)), "9.5s");
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_millis(45_700)), "45s");
        assert_eq!(human_duration(Duration::from_secs(65)), "1m 05s");
        assert_eq!(
            human_duration(Duration::from_secs(2 * 3600 + 190)),
            "2h 03m 10s"
        );
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86_400 + 4 * 3600 + 5 * 60 + 6)),
            "3d 04h 05m"
        );
    }

    #[test]
    fn percent_is_clamped_and_rounded_down() {
        assert_eq!(percent(0.0), 0);
        assert_eq!(percent(0.425), 42);
        assert_eq!(percent(0.999), 99);
        assert_eq!(percent(1.0), 100);
        assert_eq!(percent(7.0), 100);
        assert_eq!(percent(-1.0), 0);
        assert_eq!(percent(f64::NAN), 0);
        assert_eq!(percent(f64::INFINITY), 0);
    }

    #[test]
    fn rfc3339_parses() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2024-11-26T08:23:00Z"), Some(1_732_609_380.0));
        assert_eq!(
            parse_rfc3339("2024-11-26T10:23:00+02:00"),
            Some(1_732_609_380.0)
        );
        assert_eq!(
            parse_rfc3339("2024-11-26T08:23:00.25Z"),
            Some(1_732_609_380.25)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400.0));
        for bad in [
            "",
            "yesterday",
            "2024-11-26",
            "2024-11-26T08:23:00",
            "2024-13-26T08:23:00Z",
            "2024-11-26T08:23:00.Z",
            "2024-11-26T08:23:00+0200",
            "2024-11-26T08:2a:00Z",
            "2024-11-26T08:23:00ZZ",
            "２０２4-11-26T08:23:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
        assert_eq!(
            between("2024-11-26T08:23:00Z", "2024-11-26T08:24:05.5Z"),
            Some(Duration::from_millis(65_500))
        );
        assert_eq!(
            between("2024-11-26T08:24:00Z", "2024-11-26T08:23:00Z"),
            None
        );
    }

    #[test]
    fn clean_escapes_control_characters_and_truncates() {
        assert_eq!(clean("plain message"), "plain message");
        assert_eq!(clean("a\x1b[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        let long = "x".repeat(2_000);
        let cleaned = clean(&long);
        assert_eq!(cleaned.chars().count(), 501);
        assert!(cleaned.ends_with('…'));
    }

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec![
                "mp4-720p".to_string(),
                "mp4".to_string(),
                "H.264".to_string(),
            ],
            vec!["hls".to_string(), "hls".to_string(), "".to_string()],
        ];
        assert_eq!(
            table(&["NAME", "CONTAINER", "DESCRIPTION"], &rows),
            "NAME      CONTAINER  DESCRIPTION\n\
             mp4-720p  mp4        H.264\n\
             hls       hls\n"
        );
    }
}
