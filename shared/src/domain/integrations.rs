//! Per-integration circuit breakers: one for each target system a handler reaches (`gmail`,
//! `calendar`, `ses`, `webhook:<host>`, `connector:<name>`, …), separate from the breaker on
//! automatic execution.
//!
//! A breaker opens on a failure ratio over a window of recent calls, or on N transient
//! failures in a row. While open, work for that integration fails fast: it goes back to the
//! queue for the rest of the cool-off (never to `failed`, and no attempt is spent). After the
//! cool-off one call is let through as a probe (half-open): its success closes the breaker, its
//! failure starts another cool-off. A probe that never reports (its executor died) is replaced
//! after [`PROBE_LEASE_SECS`]. Only failures that say something about the target count:
//! transient ones (5xx, 429, timeouts, lost connections) and unknown outcomes; a 4xx is the
//! request's fault, not the integration's.
//!
//! Thresholds come from `[integrations.default]` in the policy, and per integration from
//! `[integrations."<name>"]`.

use crate::domain::breaker::{Breaker, BreakerSettings};
use crate::domain::time::format_time;
use crate::domain::IsoDuration;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// How long a probe may run before another may be let through (longer than any executor
/// invocation).
pub const PROBE_LEASE_SECS: i64 = 120;
/// Codes of failures that say nothing about the integration's health: our own store or
/// secrets, and a target asking one caller to slow down (a per-user quota).
pub const NOT_THE_INTEGRATION: &[&str] = &["store_unavailable", "secret_unavailable", "http_429", "connector_429"];
/// While a probe runs, other work looks again after at most this long.
const PROBE_WAIT_SECS: i64 = 30;
/// The longest cool-off a policy may set.
pub const MAX_COOL_OFF_SECS: u64 = 3600;
/// The key of the settings every integration gets unless it has its own.
pub const DEFAULT_KEY: &str = "default";

/// One integration's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationSettings {
    /// Opens when failures / calls in the window exceed this…
    #[serde(default = "default_ratio")]
    pub failure_ratio: f64,
    /// …once the window holds at least this many calls.
    #[serde(default = "default_min_sample")]
    pub min_sample: usize,
    #[serde(default = "default_window")]
    pub window: usize,
    /// Opens after this many transient failures in a row, whatever the ratio.
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// How long it stays open before a probe is let through.
    #[serde(default = "default_cool_off")]
    pub cool_off: IsoDuration,
    /// It opens only when the failures in the window come from at least this many actions…
    #[serde(default = "default_min_actions")]
    pub min_actions: usize,
    /// …and this many users (2 or more where tenants share an integration, so one user's
    /// failures cannot pause everyone's work).
    #[serde(default = "default_min_users")]
    pub min_users: usize,
    /// The longest a step waits for the integration: past it the step fails
    /// (`integration_unavailable`) instead of waiting on.
    #[serde(default = "default_max_wait")]
    pub max_wait: IsoDuration,
}

fn default_ratio() -> f64 {
    0.5
}
fn default_min_sample() -> usize {
    10
}
fn default_window() -> usize {
    20
}
fn default_consecutive() -> u32 {
    5
}
fn default_cool_off() -> IsoDuration {
    IsoDuration::from_secs(60)
}
fn default_min_actions() -> usize {
    2
}
fn default_min_users() -> usize {
    1
}
fn default_max_wait() -> IsoDuration {
    IsoDuration::from_secs(86_400)
}

/// The longest `max_wait` a policy may set.
pub const MAX_WAIT_SECS: u64 = 7 * 86_400;

impl Default for IntegrationSettings {
    fn default() -> Self {
        Self {
            failure_ratio: default_ratio(),
            min_sample: default_min_sample(),
            window: default_window(),
            consecutive_failures: default_consecutive(),
            cool_off: default_cool_off(),
            min_actions: default_min_actions(),
            min_users: default_min_users(),
            max_wait: default_max_wait(),
        }
    }
}

impl IntegrationSettings {
    pub fn breaker(&self) -> BreakerSettings {
        BreakerSettings {
            failure_ratio: self.failure_ratio,
            min_sample: self.min_sample,
            window: self.window,
            consecutive_failures: self.consecutive_failures,
            on_open: crate::domain::breaker::OnOpen::Hold,
        }
    }

    /// What a policy may not say, in a sentence naming the field.
    pub fn check(&self, key: &str) -> Result<(), String> {
        let at = |field: &str, why: &str| Err(format!("integrations.{key}.{field}: {why}"));
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return at("failure_ratio", "must be above 0 and at most 1");
        }
        if self.window == 0 || self.window > 200 {
            return at("window", "must be between 1 and 200");
        }
        if self.min_sample == 0 || self.min_sample > self.window {
            return at("min_sample", "must be between 1 and the window");
        }
        if self.consecutive_failures == 0 || self.consecutive_failures > 1000 {
            return at("consecutive_failures", "must be between 1 and 1000");
        }
        let secs = self.cool_off.as_secs();
        if secs == 0 || secs > MAX_COOL_OFF_SECS {
            return at("cool_off", &format!("must be between 1 and {MAX_COOL_OFF_SECS} seconds"));
        }
        if self.min_actions == 0 || self.min_actions > self.window {
            return at("min_actions", "must be between 1 and the window");
        }
        if self.min_users == 0 || self.min_users > self.window {
            return at("min_users", "must be between 1 and the window");
        }
        let wait = self.max_wait.as_secs();
        if wait < secs || wait > MAX_WAIT_SECS {
            return at("max_wait", &format!("must be at least the cool-off and at most {MAX_WAIT_SECS} seconds"));
        }
        Ok(())
    }
}

/// `[integrations.default]` and `[integrations."<name>"]`.
pub type IntegrationPolicy = BTreeMap<String, IntegrationSettings>;

/// The settings of integration `name` under `policy`.
pub fn settings_for(policy: &IntegrationPolicy, name: &str) -> IntegrationSettings {
    policy.get(name).or_else(|| policy.get(DEFAULT_KEY)).copied().unwrap_or_default()
}

/// Checks every entry of `[integrations]`.
pub fn check_policy(policy: &IntegrationPolicy) -> Result<(), String> {
    for (key, settings) in policy {
        if key != DEFAULT_KEY && !valid_name(key) {
            return Err(format!(
                "integrations.{key}: name an integration (gmail, calendar, ses, webhook:<host>, connector:<name>, …) or `default`"
            ));
        }
        settings.check(key)?;
    }
    Ok(())
}

/// An integration's name: 1 to 300 of letters, digits and `_ . : - [ ]` (an IPv6 host).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 300
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-' | '[' | ']'))
}

/// What the executor does with a step for an integration, given its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Closed: run.
    Pass,
    /// Open and cooled off: this call may be the probe (if it wins the claim).
    Probe,
    /// Open: look again at `until`.
    Wait { until: DateTime<Utc> },
}

/// What a recorded failure did to the breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Counted; nothing changed.
    Counted,
    /// It opened now (alert once).
    Opened(String),
    /// The probe failed: open again for another cool-off.
    ProbeFailed(String),
}

/// The stored state of one integration's breaker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IntegrationBreaker {
    pub breaker: Breaker,
    /// When the probe now running was let through.
    #[serde(default)]
    pub probe_started_at: Option<DateTime<Utc>>,
    /// How many times it opened from closed.
    #[serde(default)]
    pub openings: u64,
    /// When it last changed state.
    #[serde(default)]
    pub changed_at: Option<DateTime<Utc>>,
    /// (action, user) of the recent failures, most recent last (at most a window's worth):
    /// opening needs failures from enough different actions and users.
    #[serde(default)]
    pub failure_sources: Vec<(String, String)>,
}

impl IntegrationBreaker {
    pub fn is_open(&self) -> bool {
        self.breaker.is_open()
    }

    pub fn version(&self) -> u64 {
        self.breaker.version
    }

    /// When a probe may next be let through (open only).
    pub fn retry_at(&self, settings: &IntegrationSettings) -> Option<DateTime<Utc>> {
        let opened = self.breaker.opened_at?;
        let cooled = opened + settings.cool_off.to_chrono();
        Some(match self.probe_started_at {
            Some(p) => cooled.max(p + chrono::Duration::seconds(PROBE_LEASE_SECS)),
            None => cooled,
        })
        .filter(|_| self.is_open())
    }

    pub fn gate(&self, settings: &IntegrationSettings, now: DateTime<Utc>) -> Gate {
        if !self.is_open() {
            return Gate::Pass;
        }
        let cooled = self.breaker.opened_at.unwrap_or(now) + settings.cool_off.to_chrono();
        if now < cooled {
            return Gate::Wait { until: cooled };
        }
        match self.probe_started_at {
            // A probe is out: look again in a while, at the latest when its lease ends.
            Some(p) if now < p + chrono::Duration::seconds(PROBE_LEASE_SECS) => Gate::Wait {
                until: (p + chrono::Duration::seconds(PROBE_LEASE_SECS))
                    .min(now + chrono::Duration::seconds(PROBE_WAIT_SECS)),
            },
            _ => Gate::Probe,
        }
    }

    /// Lets a probe through (saved conditionally: one caller wins).
    pub fn start_probe(&mut self, now: DateTime<Utc>) {
        self.probe_started_at = Some(now);
        self.breaker.version += 1;
    }

    /// A transient failure or unknown outcome of a call to `name` by `source` (action, user).
    pub fn record_failure(
        &mut self,
        name: &str,
        settings: &IntegrationSettings,
        source: (&str, &str),
        now: DateTime<Utc>,
    ) -> Failure {
        let what = format!("calls to {name}");
        self.failure_sources.push((source.0.to_owned(), source.1.to_owned()));
        let excess = self.failure_sources.len().saturating_sub(settings.window.max(1));
        self.failure_sources.drain(..excess);
        if self.is_open() {
            self.breaker.record_as(false, &settings.breaker(), now, &what);
            self.breaker.version += 1;
            if self.probe_started_at.take().is_some() {
                let reason = format!("the probe call to {name} failed; open for another cool-off");
                self.breaker.opened_at = Some(now);
                self.breaker.reason = Some(reason.clone());
                self.changed_at = Some(now);
                return Failure::ProbeFailed(reason);
            }
            return Failure::Counted;
        }
        let mut opened = self.breaker.record_as(false, &settings.breaker(), now, &what);
        self.breaker.version += 1;
        // Only the failures still in the window (successes folded in since push older ones out).
        let in_window = self.breaker.recent.iter().filter(|ok| !**ok).count();
        let stale = self.failure_sources.len().saturating_sub(in_window.max(1));
        self.failure_sources.drain(..stale);
        if opened.is_some() && !self.independent(settings) {
            // Not enough independent evidence (one action's retries, one user's calls): the
            // counts stay, the circuit stays closed.
            self.breaker.state = crate::domain::breaker::BreakerStatus::Closed;
            self.breaker.opened_at = None;
            self.breaker.reason = None;
            opened = None;
        }
        match opened {
            Some(reason) => {
                self.openings += 1;
                self.probe_started_at = None;
                self.changed_at = Some(now);
                Failure::Opened(reason)
            }
            None => Failure::Counted,
        }
    }

    /// Whether the recent failures come from enough different actions and users.
    fn independent(&self, settings: &IntegrationSettings) -> bool {
        let actions: std::collections::BTreeSet<&str> = self.failure_sources.iter().map(|(a, _)| a.as_str()).collect();
        let users: std::collections::BTreeSet<&str> = self.failure_sources.iter().map(|(_, u)| u.as_str()).collect();
        actions.len() >= settings.min_actions && users.len() >= settings.min_users
    }

    /// A success while open (the probe, or work that started before it opened): closes it,
    /// and the window starts afresh. `false` when it was closed already.
    pub fn close(&mut self, now: DateTime<Utc>) -> bool {
        if !self.is_open() {
            return false;
        }
        self.breaker.reset();
        self.breaker.version += 1;
        self.probe_started_at = None;
        self.failure_sources.clear();
        self.changed_at = Some(now);
        true
    }

    /// `closed`, `open` (cooling off) or `half_open` (a probe may go, or is running).
    pub fn state_at(&self, settings: &IntegrationSettings, now: DateTime<Utc>) -> &'static str {
        match self.gate(settings, now) {
            Gate::Pass => "closed",
            Gate::Wait { .. } if self.probe_started_at.is_none() => "open",
            _ => "half_open",
        }
    }

    /// One entry of `GET /admin/integrations`.
    pub fn to_api(&self, name: &str, settings: &IntegrationSettings, now: DateTime<Utc>) -> Value {
        let mut v = self.breaker.to_api();
        v["integration"] = json!(name);
        v["state"] = json!(self.state_at(settings, now));
        v["retry_at"] = json!(self.retry_at(settings).map(format_time));
        v["probe_started_at"] = json!(self.probe_started_at.map(format_time));
        v["openings"] = json!(self.openings);
        v["changed_at"] = json!(self.changed_at.map(format_time));
        v["settings"] = json!(settings);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    const SRC: (&str, &str) = ("a9", "u");

    #[test]
    fn one_action_s_retries_or_one_user_s_calls_do_not_open_it_alone() {
        let s = settings();
        let mut b = IntegrationBreaker::default();
        for i in 0..6 {
            assert_eq!(b.record_failure("webhook:api.example.com", &s, ("only", "u"), t(i)), Failure::Counted);
        }
        assert!(!b.is_open(), "six failures of one action are one action's evidence");
        assert!(matches!(b.record_failure("webhook:api.example.com", &s, ("other", "u"), t(7)), Failure::Opened(_)));
        let shared = IntegrationSettings { min_users: 2, ..settings() };
        let mut c = IntegrationBreaker::default();
        for i in 0..6 {
            let action = format!("a{i}");
            assert_eq!(c.record_failure("gmail", &shared, (&action, "mallory"), t(i)), Failure::Counted);
        }
        assert!(!c.is_open(), "one user cannot pause a shared integration");
        assert!(matches!(c.record_failure("gmail", &shared, ("a7", "bob"), t(7)), Failure::Opened(_)));
        // An old failure of another user, pushed out of the window by successes since, is no
        // longer evidence.
        let mut d = IntegrationBreaker::default();
        d.record_failure("gmail", &shared, ("old", "bob"), t(0));
        d.breaker.absorb(100, shared.window);
        for i in 1..8 {
            let action = format!("m{i}");
            assert_eq!(d.record_failure("gmail", &shared, (&action, "mallory"), t(i)), Failure::Counted, "{i}");
        }
        assert!(!d.is_open());
    }

    fn settings() -> IntegrationSettings {
        IntegrationSettings { consecutive_failures: 3, cool_off: IsoDuration::from_secs(60), ..Default::default() }
    }

    #[test]
    fn it_opens_fails_fast_lets_one_probe_through_and_closes_on_its_success() {
        let s = settings();
        let mut b = IntegrationBreaker::default();
        assert_eq!(b.record_failure("gmail", &s, ("a0", "u"), t(0)), Failure::Counted);
        assert_eq!(b.record_failure("gmail", &s, ("a1", "u"), t(1)), Failure::Counted);
        let Failure::Opened(reason) = b.record_failure("gmail", &s, ("a2", "u"), t(2)) else {
            panic!("opens on the third")
        };
        assert_eq!(reason, "3 calls to gmail failed in a row");
        assert_eq!((b.openings, b.state_at(&s, t(3))), (1, "open"));
        assert_eq!(b.gate(&s, t(3)), Gate::Wait { until: t(62) });
        assert_eq!(b.retry_at(&s), Some(t(62)));
        assert_eq!(b.gate(&s, t(62)), Gate::Probe);
        assert_eq!(b.state_at(&s, t(62)), "half_open");
        b.start_probe(t(62));
        assert_eq!(b.gate(&s, t(63)), Gate::Wait { until: t(93) }, "one probe at a time, others look every 30 s");
        assert_eq!(b.gate(&s, t(170)), Gate::Wait { until: t(182) }, "at the latest when the probe's lease ends");
        assert!(b.close(t(64)));
        assert_eq!((b.gate(&s, t(64)), b.breaker.consecutive_failures), (Gate::Pass, 0));
        assert!(!b.close(t(65)), "closing a closed breaker changes nothing");
    }

    #[test]
    fn a_failed_probe_starts_another_cool_off_and_a_lost_probe_is_replaced() {
        let s = settings();
        let mut b = IntegrationBreaker::default();
        for i in 0..3 {
            b.record_failure("connector:site", &s, (["a1", "a2", "a3"][i as usize], "u"), t(i));
        }
        b.start_probe(t(70));
        let Failure::ProbeFailed(_) = b.record_failure("connector:site", &s, SRC, t(71)) else {
            panic!("probe failed")
        };
        assert_eq!((b.gate(&s, t(72)), b.openings), (Gate::Wait { until: t(131) }, 1), "no second alert");
        b.start_probe(t(131));
        // The probe's executor died: after the lease another probe may go.
        assert!(matches!(b.gate(&s, t(200)), Gate::Wait { .. }));
        assert_eq!(b.gate(&s, t(131 + PROBE_LEASE_SECS)), Gate::Probe);
        // A failure of work that started before it opened only counts.
        let mut c = IntegrationBreaker::default();
        for i in 0..3 {
            c.record_failure("ses", &s, (["a1", "a2", "a3"][i as usize], "u"), t(i));
        }
        assert_eq!(c.record_failure("ses", &s, SRC, t(5)), Failure::Counted);
        assert_eq!(c.breaker.opened_at, Some(t(2)));
    }

    #[test]
    fn settings_come_from_the_integration_then_the_default_and_are_checked() {
        let mut policy = IntegrationPolicy::new();
        assert_eq!(settings_for(&policy, "gmail"), IntegrationSettings::default());
        policy.insert(DEFAULT_KEY.into(), IntegrationSettings { consecutive_failures: 9, ..Default::default() });
        policy.insert("connector:site".into(), settings());
        assert_eq!(settings_for(&policy, "gmail").consecutive_failures, 9);
        assert_eq!(settings_for(&policy, "connector:site").consecutive_failures, 3);
        assert!(check_policy(&policy).is_ok());
        policy.insert("bad name!".into(), settings());
        assert!(check_policy(&policy).unwrap_err().contains("bad name!"));
        policy.remove("bad name!");
        policy.insert("ses".into(), IntegrationSettings { cool_off: IsoDuration::from_secs(7200), ..settings() });
        assert!(check_policy(&policy).unwrap_err().contains("integrations.ses.cool_off"));
        policy.insert("ses".into(), IntegrationSettings { min_sample: 30, window: 20, ..settings() });
        assert!(check_policy(&policy).unwrap_err().contains("min_sample"));
    }
}
