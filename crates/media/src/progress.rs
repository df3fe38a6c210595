//! Parser for ffmpeg's `-progress pipe:1` key=value blocks.

/// One completed progress block.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Progress {
    /// Seconds of output written so far.
    pub out_time: f64,
    /// Encode speed relative to real time (`2.0` = twice as fast as playback).
    pub speed: Option<f64>,
    /// ffmpeg said `progress=end`.
    pub done: bool,
    /// Video frames written so far (0 for audio-only outputs).
    pub frames: u64,
}

impl Progress {
    /// Fraction of `duration` done, clamped to 0..=1; unknown durations report 0 until done.
    pub fn fraction(&self, duration: f64) -> f64 {
        if self.done {
            return 1.0;
        }
        if duration <= 0.0 || !duration.is_finite() {
            return 0.0;
        }
        (self.out_time / duration).clamp(0.0, 1.0)
    }

    /// Wall-clock seconds until this output and `later_outputs` more of the same `duration` are
    /// encoded, at the speed ffmpeg reports (its average since it started, so start-up and a
    /// busy CPU are in it). `None` until ffmpeg reports a usable speed.
    pub fn eta_seconds(&self, duration: f64, later_outputs: usize) -> Option<f64> {
        if !duration.is_finite() || duration <= 0.0 {
            return None;
        }
        let speed = self.speed.filter(|s| s.is_finite() && *s > 0.01)?;
        let left = if self.done {
            0.0
        } else {
            (duration - self.out_time).max(0.0)
        };
        Some((left + later_outputs as f64 * duration) / speed)
    }
}

/// Accumulates lines; a block ends at its `progress=` line.
#[derive(Debug, Default)]
pub struct ProgressParser {
    current: Progress,
}

impl ProgressParser {
    pub fn feed(&mut self, line: &str) -> Option<Progress> {
        let (key, value) = line.trim().split_once('=')?;
        let value = value.trim();
        match key {
            // out_time_ms is microseconds too (a long-standing ffmpeg quirk); prefer out_time_us.
            "out_time_us" | "out_time_ms" => {
                if let Ok(us) = value.parse::<i64>() {
                    self.current.out_time = (us.max(0) as f64) / 1e6;
                }
            }
            "frame" => {
                if let Ok(n) = value.parse() {
                    self.current.frames = n;
                }
            }
            "speed" => {
                self.current.speed = value
                    .trim_end_matches('x')
                    .trim()
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite());
            }
            "progress" => {
                self.current.done = value == "end";
                return Some(self.current);
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blocks_and_end() {
        let mut p = ProgressParser::default();
        let mut got = vec![];
        for line in [
            "frame=10",
            "out_time_us=500000",
            "out_time_ms=500000",
            "out_time=00:00:00.500000",
            "speed=1.5x",
            "progress=continue",
            "out_time_us=N/A",
            "speed=N/A",
            "progress=continue",
            "out_time_us=2000000",
            "speed= 2.01x",
            "progress=end",
        ] {
            got.extend(p.feed(line));
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].out_time, 0.5);
        assert_eq!(got[0].speed, Some(1.5));
        assert_eq!(got[0].fraction(2.0), 0.25);
        assert_eq!(got[0].frames, 10);
        assert_eq!(got[1].out_time, 0.5, "N/A keeps the last value");
        assert_eq!(got[1].speed, None);
        assert!(got[2].done);
        assert_eq!(got[2].speed, Some(2.01));
        assert_eq!(got[2].fraction(0.0), 1.0);
    }

    #[test]
    fn fraction_is_clamped_and_safe() {
        let p = Progress {
            out_time: 5.0,
            speed: None,
            done: false,
            frames: 0,
        };
        assert_eq!(p.fraction(2.0), 1.0);
        assert_eq!(p.fraction(0.0), 0.0);
        assert_eq!(p.fraction(f64::NAN), 0.0);
        assert!(ProgressParser::default().feed("garbage").is_none());
    }

    #[test]
    fn eta_from_speed() {
        let at = |out_time, speed| Progress {
            out_time,
            speed,
            done: false,
            frames: 0,
        };
        // 6 s of a 10 s output left at 2x: 3 s; one more 10 s output after it: 8 s.
        assert_eq!(at(4.0, Some(2.0)).eta_seconds(10.0, 0), Some(3.0));
        assert_eq!(at(4.0, Some(2.0)).eta_seconds(10.0, 1), Some(8.0));
        assert_eq!(at(4.0, None).eta_seconds(10.0, 0), None);
        assert_eq!(at(4.0, Some(0.0)).eta_seconds(10.0, 0), None);
        assert_eq!(at(4.0, Some(1.0)).eta_seconds(f64::NAN, 0), None);
        assert_eq!(at(12.0, Some(1.0)).eta_seconds(10.0, 0), Some(0.0));
        let done = Progress {
            done: true,
            ..at(1.0, Some(1.0))
        };
        assert_eq!(done.eta_seconds(10.0, 0), Some(0.0));
    }
}
