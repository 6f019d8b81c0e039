//! The guards of automatic execution: fixed-window counters, entity cool-downs, and the words
//! that say why held work waits.

use crate::domain::breaker::Breaker;
use crate::domain::policy::{Policy, RateLimit, Window};
use crate::domain::time::format_time;
use crate::domain::{Action, ActionId, UserId};
use chrono::{DateTime, Utc};

/// The scope of everyone's automatic-execution counters.
pub const AUTO_ALL_SCOPE: &str = "auto#all";

/// The scope of one user's automatic-execution counters (a user named `all` must not share
/// everyone's).
pub fn auto_user_scope(user: &UserId) -> String {
    format!("auto#user#{user}")
}

/// One fixed-window counter a write consumes units of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSpec {
    /// What is counted: `<user>#<type>` for per-user type limits, `auto#all` / `auto#<user>` for
    /// automatic execution.
    pub scope: String,
    /// What to call it in messages (an action type, or "automatic execution").
    pub label: String,
    pub limit: RateLimit,
    /// How many units this request consumes (a plan may repeat a type).
    pub units: u32,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
}

impl CounterSpec {
    pub fn at(
        scope: impl Into<String>,
        label: impl Into<String>,
        limit: RateLimit,
        units: u32,
        now: DateTime<Utc>,
    ) -> Self {
        let (window_start, window_end) = limit.window.bounds(now);
        Self { scope: scope.into(), label: label.into(), limit, units, window_start, window_end }
    }
}

/// "Not again before": an entity (`rate_limit_key`) acted on automatically rests until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cooldown {
    pub user: UserId,
    pub entity: String,
    pub until: DateTime<Utc>,
    /// The action that started it: that action restarting (held by the kill switch or the
    /// breaker, then started again) is never stopped by its own cool-down.
    pub action_id: ActionId,
}

/// The index of a counter that needs more units than its limit: it can never fit, and a
/// fresh window's `attribute_not_exists` would let it through, so it is refused before writing.
pub fn never_fits(counters: &[CounterSpec]) -> Option<usize> {
    counters.iter().position(|c| c.units > c.limit.limit)
}

/// What starting one tier-1 execution consumes: a unit of the global and the per-user
/// automatic-execution limits, and (with a `rate_limit_key`) the entity's cool-down.
pub fn auto_guards(policy: &Policy, action: &Action, now: DateTime<Utc>) -> (Vec<CounterSpec>, Option<Cooldown>) {
    let a = &policy.auto_execution;
    let user = auto_user_scope(&action.user_id);
    let all = AUTO_ALL_SCOPE;
    let limit = |window, limit| RateLimit { window, limit };
    let counters = vec![
        CounterSpec::at(all, "automatic execution", limit(Window::Hour, a.per_hour), 1, now),
        CounterSpec::at(all, "automatic execution", limit(Window::Day, a.per_day), 1, now),
        CounterSpec::at(
            user.clone(),
            "automatic execution per user",
            limit(Window::Hour, a.per_user_per_hour.unwrap_or(a.per_hour)),
            1,
            now,
        ),
        CounterSpec::at(
            user,
            "automatic execution per user",
            limit(Window::Day, a.per_user_per_day.unwrap_or(a.per_day)),
            1,
            now,
        ),
    ];
    let cooldown = action.rate_limit_key.as_ref().map(|entity| Cooldown {
        user: action.user_id.clone(),
        entity: entity.clone(),
        until: now + a.cooldown.to_chrono(),
        action_id: action.action_id,
    });
    (counters, cooldown)
}

/// How long held work rests before the sweep tries it again: until the full window resets, or
/// a few minutes for a cool-down (its end is not known here).
pub fn hold_until(counter: Option<&CounterSpec>, now: DateTime<Utc>) -> DateTime<Utc> {
    counter.map_or(now + chrono::Duration::minutes(5), |c| c.window_end)
}

pub fn limit_reason(counter: &CounterSpec) -> String {
    format!(
        "auto_limit: {} is limited to {} per {}; waits until {}",
        counter.label,
        counter.limit.limit,
        counter.limit.window.as_str(),
        format_time(counter.window_end)
    )
}

pub fn breaker_reason(breaker: &Breaker) -> String {
    format!(
        "breaker_open: automatic execution is paused ({}); it waits until an admin resets the circuit breaker",
        breaker.reason.as_deref().unwrap_or("too many failures")
    )
}

pub fn cooldown_reason(cooldown: &Cooldown) -> String {
    format!(
        "cooldown: {} was acted on automatically recently; it rests before the next automatic action",
        cooldown.entity
    )
}
