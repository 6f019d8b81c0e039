//! The injected clock: every time-dependent rule (expiry, windows, scheduling) asks a `Clock`,
//! so tests can pin time instead of sleeping.

use chrono::{DateTime, Duration, Utc};
use std::sync::Mutex;

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// Wall-clock time, used by the deployed functions.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The invocation's deadline from the runtime's `deadline_ms`. Lambda gives an absolute time
/// in epoch milliseconds; a local runtime emulator may give something else (cargo lambda's
/// watch gives the timeout itself, 600000): a value before 2001 is no deadline, and the
/// function's configured `timeout` from `now` stands in for it.
pub fn invocation_deadline(deadline_ms: u64, now: DateTime<Utc>, timeout: Duration) -> DateTime<Utc> {
    const YEAR_2001_MS: u64 = 978_307_200_000;
    match i64::try_from(deadline_ms).ok().and_then(DateTime::from_timestamp_millis) {
        Some(at) if deadline_ms >= YEAR_2001_MS => at,
        _ => now + timeout,
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct FixedClock(Mutex<DateTime<Utc>>);

impl FixedClock {
    pub fn at(now: DateTime<Utc>) -> Self {
        Self(Mutex::new(now))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// RFC 3339 with second precision and a `Z` suffix: the one format the API emits.
pub use crate::domain::time::format_time;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emulators_relative_deadline_becomes_the_configured_timeout() {
        let now = Utc::now();
        let real = now + Duration::seconds(28);
        assert_eq!(
            invocation_deadline(real.timestamp_millis() as u64, now, Duration::seconds(30)).timestamp_millis(),
            real.timestamp_millis()
        );
        assert_eq!(invocation_deadline(600_000, now, Duration::seconds(30)), now + Duration::seconds(30));
        assert_eq!(invocation_deadline(u64::MAX, now, Duration::seconds(30)), now + Duration::seconds(30));
    }
    use chrono::TimeZone;

    #[test]
    fn fixed_clock_moves_only_when_advanced() {
        let start = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let clock = FixedClock::at(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::minutes(90));
        assert_eq!(format_time(clock.now()), "2026-01-02T04:34:05Z");
    }
}
