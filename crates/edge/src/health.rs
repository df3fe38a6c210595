//! The fall/rise state machine behind active health checks.
//!
//! One failed probe must not take a cluster out of rotation (a GC pause, a dropped packet), and
//! one lucky probe must not put a flapping cluster back; `fall` and `rise` are the streak lengths
//! that change the verdict. A cluster starts `Unknown` and the very first probe decides directly,
//! so that an edge that was just started does not wait `rise` intervals before trusting a
//! cluster that is plainly up (nor keep routing to one that is plainly down).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Unknown,
    Up,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTracker {
    state: Health,
    fall: u32,
    rise: u32,
    ok_streak: u32,
    fail_streak: u32,
}

impl HealthTracker {
    pub fn new(fall: u32, rise: u32) -> Self {
        HealthTracker {
            state: Health::Unknown,
            fall: fall.max(1),
            rise: rise.max(1),
            ok_streak: 0,
            fail_streak: 0,
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Records one probe; returns the new state when the verdict changed.
    pub fn observe(&mut self, ok: bool) -> Option<Health> {
        if ok {
            self.ok_streak = self.ok_streak.saturating_add(1);
            self.fail_streak = 0;
        } else {
            self.fail_streak = self.fail_streak.saturating_add(1);
            self.ok_streak = 0;
        }
        let next = match self.state {
            Health::Unknown if ok => Health::Up,
            Health::Unknown => Health::Down,
            Health::Up if self.fail_streak >= self.fall => Health::Down,
            Health::Down if self.ok_streak >= self.rise => Health::Up,
            same => same,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }

    /// Keeps the verdict and streaks when `fall`/`rise` change through a config reload.
    pub fn retune(&mut self, fall: u32, rise: u32) {
        self.fall = fall.max(1);
        self.rise = rise.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_probe_decides() {
        let mut up = HealthTracker::new(2, 2);
        assert_eq!(up.state(), Health::Unknown);
        assert_eq!(up.observe(true), Some(Health::Up));
        let mut down = HealthTracker::new(2, 2);
        assert_eq!(down.observe(false), Some(Health::Down));
    }

    #[test]
    fn it_takes_fall_failures_in_a_row_to_go_down() {
        let mut h = HealthTracker::new(3, 2);
        h.observe(true);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None, "a success resets the streak");
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(Health::Down));
        assert_eq!(h.observe(false), None, "already down");
        assert_eq!(h.state(), Health::Down);
    }

    #[test]
    fn it_takes_rise_successes_in_a_row_to_come_back() {
        let mut h = HealthTracker::new(2, 3);
        h.observe(false);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None, "a failure resets the streak");
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(Health::Up));
        assert_eq!(h.observe(true), None);
    }

    #[test]
    fn fall_and_rise_of_one_follow_every_probe() {
        let mut h = HealthTracker::new(1, 1);
        assert_eq!(h.observe(true), Some(Health::Up));
        assert_eq!(h.observe(false), Some(Health::Down));
        assert_eq!(h.observe(true), Some(Health::Up));
        // Zero would mean "never change": clamped to one.
        let mut z = HealthTracker::new(0, 0);
        z.observe(true);
        assert_eq!(z.observe(false), Some(Health::Down));
    }

    #[test]
    fn retuning_keeps_the_streak() {
        let mut h = HealthTracker::new(5, 5);
        h.observe(true);
        h.observe(false);
        h.observe(false);
        h.retune(3, 1);
        assert_eq!(h.observe(false), Some(Health::Down));
    }
}
