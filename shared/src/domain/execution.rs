//! Execution's rules, with no I/O: how long a handler may run, retry backoff, how long to keep
//! trying to record an effect, what a lost lease means, and which outcomes the autonomy breaker
//! counts.

use crate::domain::action::StepState;
use crate::domain::{Action, Status, Tier};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// A lease ends this long before the invocation's deadline, so a successor never overlaps.
pub const LEASE_MARGIN_SECS: i64 = 1;
/// A handler call must leave this much of the invocation to record its outcome.
pub const RECORD_MARGIN_SECS: i64 = 5;
/// A step is not started with less time than this for its handler (the message comes back).
pub const MIN_HANDLER_SECS: i64 = 2;

/// How long a handler call may take: until the invocation's deadline less the time to record
/// its outcome (zero when that is already past).
pub fn handler_budget(deadline: DateTime<Utc>, now: DateTime<Utc>) -> std::time::Duration {
    (deadline - now - chrono::Duration::seconds(RECORD_MARGIN_SECS)).to_std().unwrap_or_default()
}

/// Exponential backoff with full jitter: uniform in `[0, min(cap, base × 2^(attempt-1))]`.
/// `unit` is a random number in `[0, 1)`.
pub fn backoff_secs(attempt: u32, base_secs: u64, cap_secs: u64, unit: f64) -> u64 {
    let exp = base_secs.saturating_mul(1u64 << attempt.saturating_sub(1).min(32)).min(cap_secs);
    ((exp as f64) * unit.clamp(0.0, 1.0)).round() as u64
}

/// How long to wait before trying again to record a step whose effect happened: growing
/// pauses (0.1 s, 0.2 s, … up to 2 s) while the invocation (less its lease margin) has time for
/// one; `None` when it has not.
pub fn record_retry_pause(tries: u32, time_left: chrono::Duration) -> Option<std::time::Duration> {
    let pause = std::time::Duration::from_millis(100 * u64::from(tries.clamp(1, 20)));
    let usable = (time_left - chrono::Duration::seconds(LEASE_MARGIN_SECS + 1)).to_std().ok()?;
    (usable >= pause).then_some(pause)
}

/// Whether an action moved to `to` is owed a compensation: it failed for good after a step ran,
/// and the policy (`compensate`) compensates failures. Set in the failing write, it stays until
/// a rollback starts, so a lost hand-over is found again (the sweep re-sends it).
pub fn compensation_due(after: &Action, to: Status, compensate: bool) -> bool {
    to == Status::Failed && after.ran_a_step() && compensate
}

/// Whether a settled action is an outcome the autonomy breaker counts as a failure: automatic
/// (tier-1) work that failed for good. A transient failure that will be retried is not one.
pub fn counts_as_automatic_failure(action: &Action) -> bool {
    // Waiting out an integration's outage is that integration's breaker's business: all the
    // work it held failing together must not also pause every other integration.
    let integration_down =
        action.error.as_ref().and_then(|e| e.get("code")).is_some_and(|c| c == "integration_unavailable");
    action.tier == Some(Tier::Auto) && action.status == Status::Failed && !integration_down
}

/// What to do with a step whose executor died (its lease expired): an idempotent step goes
/// back to the queue; one whose effect may or may not have happened (and cannot be repeated
/// safely) fails with `outcome_unknown` for a human to check.
pub fn lease_recovery(action: &Action, idempotent: bool) -> (Action, (Status, String, Option<Value>)) {
    let index = action.next_step();
    let mut after = action.clone();
    after.lease_expires_at = None;
    let attempts = action.steps.get(index).map_or(0, |s| s.attempts);
    let exhausted = attempts >= action.max_attempts.max(1);
    if idempotent && exhausted {
        // Each claim counted an attempt; a step that keeps outliving its executor ends here.
        if let Some(step) = after.steps.get_mut(index) {
            step.state = StepState::Failed;
        }
        let message =
            format!("the executor of step {index} stopped {attempts} times (lease expired); no attempts left");
        after.error = Some(
            json!({"step": index, "code": "attempts_exhausted", "message": message, "kind": "transient", "attempts": attempts}),
        );
        (after, (Status::Failed, message, Some(json!({"attempts": attempts}))))
    } else if idempotent {
        if let Some(step) = after.steps.get_mut(index) {
            step.state = StepState::NotStarted;
        }
        (
            after,
            (
                Status::Queued,
                format!(
                    "the executor of step {index} stopped (lease expired); resuming it (attempt {attempts} of {})",
                    action.max_attempts.max(1)
                ),
                None,
            ),
        )
    } else {
        if let Some(step) = after.steps.get_mut(index) {
            step.state = StepState::Failed;
        }
        let message = format!("the executor stopped during step {index}; whether its effect happened is unknown and it cannot be repeated safely: a human must check");
        after.error = Some(
            json!({"step": index, "code": "outcome_unknown", "message": message, "kind": "permanent", "needs_human": true}),
        );
        (after, (Status::Failed, message, Some(json!({"needs_human": true}))))
    }
}

/// When the sweep next has something to do for `action` (an expiry, a reminder, a lost
/// message, an expired lease, a wait that never woke), or `None` when it has nothing.
pub fn due_at(action: &crate::domain::Action) -> Option<chrono::DateTime<chrono::Utc>> {
    let due = match action.status {
        Status::Pending => {
            action.runnable_at().unwrap_or(action.created_at).max(action.hold_until.unwrap_or(action.created_at))
        }
        // An undelivered approval mail is sent again soon; a reminder comes next, then the expiry.
        Status::AwaitingApproval if action.approval_mail_pending => {
            // 1, 2, 4, 8 … minutes after the last try (the first right after intake).
            let retry = match action.approval_mail_due {
                // Asked again by an edit: its links go at once.
                Some(at) if action.approval_mail_attempts == 0 => at,
                _ => action.updated_at + chrono::Duration::minutes(1 << action.approval_mail_attempts.min(6)),
            };
            let retry = action.next_escalation_at().map_or(retry, |e| e.min(retry));
            action.approval_expires_at.map_or(retry, |e| e.min(retry))
        }
        Status::AwaitingApproval => {
            // A reminder whose mail failed is tried again after the same backoff.
            let reminder = action.approval_reminder_at().map(|at| match action.approval_mail_attempts {
                0 => at,
                n => at.max(action.updated_at + chrono::Duration::minutes(1 << n.min(6))),
            });
            [reminder, action.approval_expires_at, action.next_escalation_at()].into_iter().flatten().min()?
        }
        // Queued work that no executor has claimed a while after it became runnable was lost
        // between the store and the queue (or dead-lettered); the sweep re-sends it.
        Status::Queued => {
            action.updated_at.max(action.runnable_at().unwrap_or(action.updated_at)) + chrono::Duration::minutes(5)
        }
        // A rollback whose worker stopped (its lease ran out) is resumed.
        Status::RollingBack => action.lease_expires_at.unwrap_or(action.updated_at),
        // Approved work that ended owes its completion mail: at once, then backing off.
        Status::Completed | Status::Failed if action.completion_mail_due() => {
            action.updated_at + chrono::Duration::minutes(i64::from((1u32 << action.approval_mail_attempts.min(6)) - 1))
        }
        // A failed plan owed a compensation the sweep handed over; sent again if not started.
        Status::Failed if action.compensation_due => action.updated_at + chrono::Duration::minutes(1),
        // A lease that runs out means the executor died: the sweep recovers the step.
        Status::Executing => action.lease_expires_at.unwrap_or(action.updated_at),
        // A wait whose schedule never fired is resumed by the sweep.
        Status::Waiting => {
            action.steps.get(action.next_step()).and_then(|s| s.wake_at).unwrap_or(action.updated_at)
                + chrono::Duration::minutes(5)
        }
        _ => return None,
    };
    Some(due)
}

/// The most all of an action's step results may take together: the action is one stored item
/// of at most 400 KB, and a plan's `result` repeats its steps' results.
pub const MAX_RESULTS_BYTES: usize = 96 * 1024;

/// `value` as step `index` of `action` records it: whole if the steps' results still fit in
/// [`MAX_RESULTS_BYTES`] with it, else a note of its size (the effect happened all the same).
pub fn bounded_result(action: &crate::domain::Action, index: usize, value: serde_json::Value) -> serde_json::Value {
    let size = |v: &serde_json::Value| serde_json::to_vec(v).map_or(usize::MAX, |b| b.len());
    let others: usize =
        action.steps.iter().filter(|s| s.index != index).filter_map(|s| s.result.as_ref()).map(size).sum();
    let own = size(&value);
    if others.saturating_add(own) <= MAX_RESULTS_BYTES {
        return value;
    }
    let mut kept = serde_json::json!({"dropped": format!(
        "a result of {own} bytes is not kept: an action keeps at most {MAX_RESULTS_BYTES} bytes of results for all its steps"
    )});
    // What the undo needs to know survives: whether its data was kept, or why not.
    for marker in ["rollback_data_kept", "rollback_data_missing"] {
        if let Some(v) = value.get(marker) {
            kept[marker] = v.clone();
        }
    }
    kept
}

/// The most of an undo's answer kept with its step (a plan's undos share the action's item).
pub const MAX_UNDO_BYTES: usize = 4 * 1024;

/// An undo's answer as its step records it: whole when small, else a note of its size.
pub fn bounded_undo(value: serde_json::Value) -> serde_json::Value {
    let size = serde_json::to_vec(&value).map_or(usize::MAX, |b| b.len());
    if size <= MAX_UNDO_BYTES {
        return value;
    }
    serde_json::json!({"dropped": format!("an answer of {size} bytes is not kept (at most {MAX_UNDO_BYTES})")})
}

#[cfg(test)]
mod tests {
    #[test]
    fn step_results_are_kept_whole_until_the_action_s_share_is_used_up() {
        let mut a = crate::domain::action::sample_action();
        let step = |i| crate::domain::action::Step::new(i, a.steps[0].kind.clone());
        a.steps = (0..3).map(step).collect();
        let big = serde_json::json!({"output": "x".repeat(40 * 1024)});
        a.steps[0].result = Some(crate::domain::execution::bounded_result(&a, 0, big.clone()));
        assert_eq!(a.steps[0].result.as_ref(), Some(&big));
        a.steps[1].result = Some(crate::domain::execution::bounded_result(&a, 1, big.clone()));
        assert_eq!(a.steps[1].result.as_ref(), Some(&big), "80 KB of 96 fit");
        let third = crate::domain::execution::bounded_result(&a, 2, big.clone());
        assert!(third["dropped"].as_str().is_some_and(|d| d.contains("at most")), "{third}");
        let marked = serde_json::json!({"output": "x".repeat(40 * 1024), "rollback_data_kept": true});
        assert_eq!(
            crate::domain::execution::bounded_result(&a, 2, marked)["rollback_data_kept"],
            true,
            "the undo still knows"
        );
        let answer = crate::domain::execution::bounded_undo(serde_json::json!({"output": "y".repeat(5000)}));
        assert!(answer["dropped"].is_string());
        // A retry of a step replaces its own result: it is not counted twice.
        assert_eq!(crate::domain::execution::bounded_result(&a, 1, big.clone()), big);
    }

    use super::*;

    #[test]
    fn a_recorded_effect_is_retried_while_the_invocation_lasts() {
        let secs = chrono::Duration::seconds;
        assert_eq!(record_retry_pause(1, secs(20)), Some(std::time::Duration::from_millis(100)));
        assert_eq!(record_retry_pause(5, secs(20)), Some(std::time::Duration::from_millis(500)));
        assert_eq!(record_retry_pause(99, secs(20)), Some(std::time::Duration::from_secs(2)), "capped");
        let total: u128 = (1..)
            .map_while(|n| {
                record_retry_pause(n, secs(25) - chrono::Duration::milliseconds(100 * (n as i64) * (n as i64 - 1) / 2))
            })
            .map(|p| p.as_millis())
            .sum();
        assert!(total > 10_000, "it keeps trying for most of a 25 s invocation: {total} ms");
        assert_eq!(record_retry_pause(1, secs(2)), None, "no try that would outlive the lease");
    }

    #[test]
    fn the_breaker_counts_an_actions_final_failure_not_each_attempt() {
        assert!(
            !counts_as_automatic_failure(&crate::domain::action::sample_automatic(Status::Queued, 1)),
            "a retried attempt"
        );
        assert!(counts_as_automatic_failure(&crate::domain::action::sample_automatic(Status::Failed, 3)));
        let mut approved = crate::domain::action::sample_automatic(Status::Failed, 3);
        approved.tier = Some(Tier::Approval);
        assert!(!counts_as_automatic_failure(&approved));
    }

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        assert_eq!(backoff_secs(1, 2, 900, 1.0), 2);
        assert_eq!(backoff_secs(2, 2, 900, 1.0), 4);
        assert_eq!(backoff_secs(5, 2, 900, 1.0), 32);
        assert_eq!(backoff_secs(20, 2, 900, 1.0), 900);
        assert_eq!(backoff_secs(200, 2, 900, 1.0), 900);
    }

    #[test]
    fn backoff_jitter_spans_zero_to_the_ceiling() {
        assert_eq!(backoff_secs(3, 2, 900, 0.0), 0);
        assert_eq!(backoff_secs(3, 2, 900, 0.5), 4);
        for i in 0..100 {
            let unit = i as f64 / 100.0;
            assert!(backoff_secs(4, 2, 900, unit) <= 16);
        }
    }

    #[test]
    fn only_a_plan_that_ran_a_step_and_failed_is_owed_a_compensation() {
        let mut failed = crate::domain::action::sample_automatic(Status::Failed, 3);
        assert!(!compensation_due(&failed, Status::Failed, true), "nothing ran");
        failed.steps[0].state = StepState::Completed;
        assert!(compensation_due(&failed, Status::Failed, true));
        assert!(!compensation_due(&failed, Status::Failed, false), "the policy does not compensate");
        assert!(!compensation_due(&failed, Status::Queued, true), "not a failure");
    }

    #[test]
    fn a_lost_lease_retries_an_idempotent_step_until_its_attempts_run_out() {
        let mut running = crate::domain::action::sample_automatic(Status::Executing, 1);
        assert_eq!(lease_recovery(&running, true).1 .0, Status::Queued);
        running.steps[0].attempts = 3;
        assert_eq!(lease_recovery(&running, true).1 .0, Status::Failed);
        running.steps[0].attempts = 1;
        let (after, (to, _, _)) = lease_recovery(&running, false);
        assert_eq!(
            (to, after.error.unwrap()["code"].as_str().map(str::to_owned)),
            (Status::Failed, Some("outcome_unknown".into()))
        );
    }
}
