//! The circuit breaker on automatic execution. It opens when the failure ratio of the recent
//! window passes the threshold (with a minimum sample), or after N consecutive failures; while
//! open, tier-1 work waits `pending` (approved tier-2 work still runs); an admin resets it.
//!
//! The state is one item. A success cannot open it, so it costs no request of its own: the
//! transaction that records the step adds one to the item's success counter. A failure is a
//! read, the decision, and a write conditioned on the version read; that write folds the
//! successes counted since the last one into the window. Every change of state is audited.

use crate::domain::time::format_time;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Opens when failures / outcomes in the window exceed this.
    #[serde(default = "default_ratio")]
    pub failure_ratio: f64,
    /// …once the window holds at least this many outcomes.
    #[serde(default = "default_min_sample")]
    pub min_sample: usize,
    /// How many recent outcomes the ratio looks at.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Opens after this many failures in a row, whatever the ratio.
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// What becomes of tier-1 work that arrives while it is open.
    #[serde(default)]
    pub on_open: OnOpen,
}

/// Tier-1 work arriving while the breaker is open either waits `pending` until it closes
/// (`hold`, the default) or goes to a human for approval instead (`require_approval`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOpen {
    #[default]
    Hold,
    RequireApproval,
}

fn default_ratio() -> f64 {
    0.2
}
fn default_min_sample() -> usize {
    10
}
fn default_window() -> usize {
    50
}
fn default_consecutive() -> u32 {
    3
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_ratio: default_ratio(),
            min_sample: default_min_sample(),
            window: default_window(),
            consecutive_failures: default_consecutive(),
            on_open: OnOpen::Hold,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerStatus {
    Closed,
    Open,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    pub state: BreakerStatus,
    /// Most recent last; `true` is a success.
    #[serde(default)]
    pub recent: Vec<bool>,
    #[serde(default)]
    pub consecutive_failures: u32,
    pub opened_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    /// Optimistic-concurrency counter; also the sequence of the breaker's audit trail.
    #[serde(default)]
    pub version: u64,
    /// Successes counted on the item since this document was written, already folded into
    /// `recent` by [`Breaker::absorb`]; saving subtracts them from the item's counter.
    #[serde(skip)]
    pub absorbed: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: BreakerStatus::Closed,
            recent: Vec::new(),
            consecutive_failures: 0,
            opened_at: None,
            reason: None,
            version: 0,
            absorbed: 0,
        }
    }
}

impl Breaker {
    pub fn is_open(&self) -> bool {
        self.state == BreakerStatus::Open
    }

    pub fn failure_ratio(&self) -> f64 {
        if self.recent.is_empty() {
            return 0.0;
        }
        self.recent.iter().filter(|ok| !**ok).count() as f64 / self.recent.len() as f64
    }

    /// Folds `successes` counted on the item since the document was written (they came after
    /// every outcome in it) into the window.
    pub fn absorb(&mut self, successes: u64, window: usize) {
        if successes == 0 {
            return;
        }
        let keep = window.max(1);
        self.recent.extend(std::iter::repeat_n(true, successes.min(keep as u64) as usize));
        let excess = self.recent.len().saturating_sub(keep);
        self.recent.drain(..excess);
        self.consecutive_failures = 0;
        self.absorbed += successes;
    }

    /// Records one outcome of automatic execution; returns the reason when this opened it.
    /// Only a failure can open it (the executor counts successes without reading the breaker).
    pub fn record(&mut self, success: bool, settings: &BreakerSettings, now: DateTime<Utc>) -> Option<String> {
        self.record_as(success, settings, now, "automatic executions")
    }

    /// [`Breaker::record`], naming what failed in the reason (`calls to gmail`).
    pub fn record_as(
        &mut self,
        success: bool,
        settings: &BreakerSettings,
        now: DateTime<Utc>,
        what: &str,
    ) -> Option<String> {
        self.recent.push(success);
        let excess = self.recent.len().saturating_sub(settings.window.max(1));
        self.recent.drain(..excess);
        self.consecutive_failures = if success { 0 } else { self.consecutive_failures + 1 };
        if self.is_open() || success {
            return None;
        }
        let ratio = self.failure_ratio();
        let reason = if self.consecutive_failures >= settings.consecutive_failures {
            Some(format!("{} {what} failed in a row", self.consecutive_failures))
        } else if self.recent.len() >= settings.min_sample && ratio > settings.failure_ratio {
            Some(format!(
                "{:.0}% of the last {} {what} failed (threshold {:.0}%)",
                ratio * 100.0,
                self.recent.len(),
                settings.failure_ratio * 100.0
            ))
        } else {
            None
        };
        if let Some(r) = &reason {
            self.state = BreakerStatus::Open;
            self.opened_at = Some(now);
            self.reason = Some(r.clone());
        }
        reason
    }

    /// An admin closes it; the window starts afresh.
    pub fn reset(&mut self) {
        *self = Self { version: self.version, absorbed: self.absorbed, ..Self::default() };
    }

    /// `GET /admin/circuit-breaker`.
    pub fn to_api(&self) -> Value {
        json!({
            "state": self.state,
            "failure_ratio": (self.failure_ratio() * 1000.0).round() / 1000.0,
            "sample": self.recent.len(),
            "consecutive_failures": self.consecutive_failures,
            "opened_at": self.opened_at.map(format_time),
            "reason": self.reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn three_failures_in_a_row_open_it() {
        let mut b = Breaker::default();
        let s = BreakerSettings::default();
        assert_eq!(b.record(false, &s, now()), None);
        assert_eq!(b.record(false, &s, now()), None);
        let reason = b.record(false, &s, now()).unwrap();
        assert!(reason.contains("3 automatic executions failed in a row"));
        assert!(b.is_open());
        assert_eq!(b.record(false, &s, now()), None, "opening is reported once");
    }

    #[test]
    fn a_success_breaks_the_run_but_the_ratio_still_counts() {
        let mut b = Breaker::default();
        let s = BreakerSettings { min_sample: 10, ..BreakerSettings::default() };
        for i in 0..9 {
            // fail, fail, ok, repeated: never three in a row, ratio 2/3
            assert_eq!(b.record(i % 3 == 2, &s, now()), None, "opened early at {i}");
        }
        assert_eq!(b.record(true, &s, now()), None, "a success never opens it");
        let reason = b.record(false, &s, now()).unwrap();
        assert!(reason.contains("64% of the last 11"), "{reason}");
    }

    #[test]
    fn absorbed_successes_follow_the_recorded_outcomes_and_end_a_run() {
        let s = BreakerSettings {
            min_sample: 4,
            window: 5,
            consecutive_failures: 3,
            failure_ratio: 0.5,
            ..Default::default()
        };
        let mut b = Breaker::default();
        b.record(false, &s, now());
        b.record(false, &s, now());
        b.absorb(7, s.window);
        assert_eq!(b.recent, vec![true; 5], "the window keeps the newest five");
        assert_eq!((b.consecutive_failures, b.absorbed), (0, 7));
        assert_eq!(b.record(false, &s, now()), None, "the run of failures started again");
        b.absorb(0, s.window);
        assert_eq!(b.absorbed, 7, "nothing to fold changes nothing");
        b.reset();
        assert_eq!(b.absorbed, 7, "a reset still takes the counted successes off the item");
        assert!(b.recent.is_empty());
    }

    #[test]
    fn the_ratio_needs_a_minimum_sample_and_stays_within_the_window() {
        let mut b = Breaker::default();
        let s = BreakerSettings {
            min_sample: 10,
            window: 20,
            consecutive_failures: 100,
            failure_ratio: 0.2,
            ..Default::default()
        };
        for _ in 0..30 {
            b.record(true, &s, now());
        }
        assert_eq!(b.recent.len(), 20);
        for _ in 0..4 {
            assert_eq!(b.record(false, &s, now()), None);
        }
        assert!(b.failure_ratio() <= 0.2);
        assert!(b.record(false, &s, now()).is_some());
    }

    #[test]
    fn reset_closes_and_forgets() {
        let mut b = Breaker::default();
        let s = BreakerSettings::default();
        for _ in 0..3 {
            b.record(false, &s, now());
        }
        b.version = 7;
        b.reset();
        assert_eq!(b, Breaker { version: 7, ..Breaker::default() });
        assert_eq!(b.to_api()["state"], "closed");
    }
}
