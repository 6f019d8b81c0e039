//! Running one action step: not before its time, under the policy current now, claimed by a
//! conditional write (with the breaker checked for tier-1 work), the handler bounded by the
//! invocation, and the outcome recorded: success, retry with backoff, or failure.

use super::*;
use crate::domain::AuditEvent;
use crate::services::breaker::{Admission, CallOutcome};

impl ExecutorService {
    pub(super) async fn execute_step(&self, action: Action, deadline: DateTime<Utc>) -> Outcome {
        let index = action.next_step();
        let StepKind::Action { action_type, payload } = action.steps[index].kind.clone() else {
            return Outcome::Ignored("not an action step".into());
        };
        let now = self.clock.now();
        // Nothing runs before its time: neither a scheduled action (approved or automatic)
        // nor a retry before its backoff ends, however the message arrived.
        if let Some(at) = action.runnable_at().filter(|at| *at > now) {
            let delay = u64::try_from((at - now).num_seconds()).unwrap_or(0).max(1);
            self.enqueue_at(&action, index, delay, &format!("s{index}-due{}", at.timestamp())).await;
            return Outcome::Ignored(format!("not due before {}", format_time(at)));
        }
        // The policy current now governs this step, not the one the action was created under.
        if let Some(outcome) = self.recheck_policy(&action, deadline).await {
            return outcome;
        }
        let policy = self.deps.policy.current().await;
        let Some(handler) = self.registry.resolve(&action_type, &policy) else {
            let error = HandlerError::permanent("no_handler", format!("{action_type} is never executed by the system"));
            return self.fail_unclaimed(action, index, error, deadline).await;
        };
        // An earlier attempt went to a target the policy no longer names (a connector pointed
        // elsewhere): it may have acted, and the new target never saw the step. A human checks.
        if let Some(earlier) = action.steps[index].pin.clone().filter(|p| handler.pin().as_ref() != Some(p)) {
            let error = HandlerError::unknown(
                "target_changed",
                format!("an earlier attempt went to another target ({earlier}) than the policy names now"),
            );
            return self.fail_unclaimed(action, index, error, deadline).await;
        }
        // Each integration has a breaker of its own: while it is open the step waits in the
        // queue (no attempt spent); after the cool-off one call goes through as the probe.
        let integration = handler.integration(&payload);
        let mut probe = false;
        if let Some(name) = &integration {
            let settings = crate::domain::integrations::settings_for(&policy.integrations, name);
            match crate::services::breaker::admit(&*self.store, name, &settings, "executor", now).await {
                Admission::Run { probe: p } => probe = p,
                Admission::Wait { until, reason } => {
                    return self.wait_for_integration(action, index, until, reason, &settings, deadline).await
                }
            }
        }
        // Every handler call ends before the invocation does, with time left to record it.
        let budget = handler_budget(deadline, now);
        if budget < std::time::Duration::from_secs(MIN_HANDLER_SECS as u64) {
            return Outcome::Retry("too little of the invocation is left to run a step".into());
        }
        let ctx = StepContext::new(action.action_id, &action.user_id, index, &payload, &self.deps);

        // Read what the target looks like before claiming (harmless if another executor races),
        // once: a retry after a crash must not take the changed target for the original.
        let snapshot = match handler.validate(&payload) {
            Err(e) => Err(e),
            Ok(()) if action.steps[index].snapshot_at.is_some() => Ok(Value::Null),
            Ok(()) => bounded(budget, handler.idempotent(), handler.snapshot(&ctx)).await,
        };
        // The snapshot took part of the invocation: if too little is left for the change, do
        // not claim (no attempt spent on a step that never ran); the message comes back.
        let left = handler_budget(deadline, self.clock.now());
        if snapshot.is_ok() && left < std::time::Duration::from_secs(MIN_HANDLER_SECS as u64) {
            return Outcome::Retry("too little of the invocation was left after the snapshot".into());
        }
        let mut claimed = action.clone();
        claimed.attempts += 1;
        claimed.not_before = None;
        claimed.integration_wait_since = None;
        claimed.integration_wait_version = None;
        claimed.lease_expires_at = Some(self.lease(deadline));
        let step = &mut claimed.steps[index];
        step.attempts += 1;
        step.state = StepState::Running;
        if step.pin.is_none() {
            step.pin = handler.pin();
        }
        step.started_at = Some(now);
        let attempt = step.attempts;
        let snapshot = match snapshot {
            Ok(s) => {
                if !s.is_null() {
                    step.snapshot = Some(s);
                    step.snapshot_at = Some(now);
                }
                step.error = None;
                None
            }
            // Reading the target has no effect on it: an unknown outcome is only a failure.
            Err(e) if e.kind == ErrorKind::Unknown => Some(HandlerError { kind: ErrorKind::Transient, ..e }),
            Err(e) => Some(e),
        };
        let claim_reason = format!("step {index} ({action_type}) attempt {attempt} started");
        if let Some(error) = snapshot {
            // Count the attempt and settle it in the same write.
            let call = CallOutcome::of(Some(&error));
            let claimed_path = (Status::Executing, claim_reason, None);
            let outcome = self.settle_failure(&action, claimed, index, error, Some(claimed_path), deadline).await;
            self.note_call(integration.as_deref(), &action, probe, call).await;
            return outcome;
        }
        // Tier-1 work is claimed only while the breaker is closed, checked in the same write.
        let automatic = action.tier == Some(Tier::Auto);
        let claim = self
            .store
            .advance_guarded(
                &action,
                claimed,
                &[(
                    Status::Executing,
                    claim_reason,
                    Some(json!({"lease_expires_at": format_time(self.lease(deadline))})),
                )],
                "executor",
                now,
                &[],
                None,
                automatic,
            )
            .await;
        let claimed = match claim {
            Ok(a) => a,
            Err(GuardError::BreakerOpen) => return self.hold_for_breaker(&action).await,
            Err(GuardError::Conflict | GuardError::CounterFull(_) | GuardError::CoolingDown) => {
                return Outcome::Ignored("claimed by another executor".into())
            }
            Err(GuardError::Store(e)) => return Outcome::Retry(e.to_string()),
        };
        tracing::info!(attempt, action_type = %action_type, "step claimed");

        // Bound the change by what is left now.
        let left = handler_budget(deadline, self.clock.now());
        let result = bounded(left, handler.idempotent(), handler.execute(&ctx)).await;
        if self.fault_injection
            && claimed.rate_limit_key.as_deref() == Some(ABORT_AFTER_EFFECT_KEY)
            && attempt == 1
            && result.is_ok()
        {
            tracing::error!("fault injection: aborting after the side effect, before recording it");
            std::process::abort();
        }
        let call = CallOutcome::of(result.as_ref().err());
        let outcome = match result {
            Ok(value) => {
                let (shown, for_undo) = handler.keep_for_undo(value);
                self.settle_success(&claimed, index, shown, for_undo, deadline).await
            }
            Err(error) => self.settle_failure(&claimed, claimed.clone(), index, error, None, deadline).await,
        };
        // What the call told about its integration, once the step is recorded.
        self.note_call(integration.as_deref(), &action, probe, call).await;
        outcome
    }

    /// The step's integration is switched off by its breaker: the step stays `queued`, not
    /// before `until`, and its message comes back then. Spends no attempt; the first wait is
    /// audited (later ones only move `not_before`); past the integration's `max_wait` the step
    /// fails (`integration_unavailable`) instead. Two deliveries of one message cannot both
    /// defer it (the write is conditional).
    async fn wait_for_integration(
        &self,
        action: Action,
        index: usize,
        until: DateTime<Utc>,
        reason: String,
        settings: &crate::domain::integrations::IntegrationSettings,
        deadline: DateTime<Utc>,
    ) -> Outcome {
        let now = self.clock.now();
        // The wait goes on only if nothing else wrote the action since the last one.
        let continuing = action.integration_wait_version == Some(action.version);
        let since = action.integration_wait_since.filter(|_| continuing).unwrap_or(now);
        if now - since > settings.max_wait.to_chrono() {
            let error = HandlerError::permanent(
                "integration_unavailable",
                format!("waited {} for the integration, longer than its max_wait ({reason})", settings.max_wait),
            );
            return self.fail_unclaimed(action, index, error, deadline).await;
        }
        let mut after = action.clone();
        after.not_before = Some(until);
        after.integration_wait_since = Some(since);
        after.version = action.version + 1;
        after.integration_wait_version = Some(after.version);
        after.updated_at = now;
        let written = if !continuing {
            let note =
                AuditEvent::note(&action, after.version, now, "executor", format!("step {index} waits: {reason}"));
            self.store.transition(&action, &after, &note).await
        } else {
            self.store.transition_many(&action, &after, &[], None).await
        };
        match written {
            Ok(()) => {
                // Jitter, so the work an outage held back does not all return at once.
                let spread = (settings.cool_off.as_secs() / 2).clamp(5, 60);
                let delay = u64::try_from((until - now).num_seconds()).unwrap_or(0).max(1)
                    + rand::random::<u64>() % (spread + 1);
                self.enqueue_at(&after, index, delay, &format!("s{index}-open{}", until.timestamp())).await;
                tracing::warn!(%reason, "the step's integration is switched off; it waits");
                Outcome::Ran(after.status)
            }
            Err(TransitionError::Conflict) => Outcome::Ignored("the action changed concurrently".into()),
            Err(TransitionError::Store(e)) => Outcome::Retry(e.to_string()),
        }
    }

    /// Feeds a call's outcome to its integration's breaker (bounded: it never holds the
    /// invocation up); the executor that opens it mails the alert, once.
    async fn note_call(&self, integration: Option<&str>, action: &Action, probe: bool, call: CallOutcome) {
        let Some(name) = integration else { return };
        let policy = self.deps.policy.current().await;
        let settings = crate::domain::integrations::settings_for(&policy.integrations, name);
        let now = self.clock.now();
        let action_id = action.action_id.to_string();
        let call =
            crate::services::breaker::Call { outcome: call, probe, source: (&action_id, action.user_id.as_str()) };
        let record = crate::services::breaker::record_call(&*self.store, name, &settings, call, "executor", now);
        match tokio::time::timeout(std::time::Duration::from_secs(3), record).await {
            Ok(Ok(Some(reason))) => {
                let mail = crate::services::notices::alert_recipient(&policy)
                    .map(|to| crate::services::notices::integration_alert_mail(to, name, &reason, &settings, now));
                if let (Some(mailer), Some(mail)) = (self.deps.mailer.as_ref(), mail) {
                    if let Err(e) = mailer.send_within(&mail, std::time::Duration::from_secs(5)).await {
                        tracing::error!(error = %e, integration = name, "the integration alert could not be sent");
                    }
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, integration = name, "recording a call on its breaker failed"),
            Err(_) => tracing::error!(integration = name, "recording a call on its breaker timed out"),
        }
    }

    /// Applies the policy current now to work about to run its next step; `None` when it may
    /// run, else what became of it (held, sent to approval, made manual, blocked), audited.
    pub(super) async fn recheck_policy(&self, action: &Action, deadline: DateTime<Utc>) -> Option<Outcome> {
        let policy = self.deps.policy.current().await;
        let index = action.next_step();
        let needs_kyc = action
            .steps
            .iter()
            .skip(index)
            .filter_map(|s| s.kind.action_type())
            .any(|t| policy.rule(t).is_some_and(|r| r.requires_kyc));
        let kyc = if needs_kyc {
            match self.deps.kyc.verified(&action.user_id).await {
                Ok(v) => v,
                Err(e) => return Some(Outcome::Retry(e.to_string())),
            }
        } else {
            false
        };
        let now = self.clock.now();
        let recheck = policy.recheck(action, action.decided_by.is_some(), kyc);
        let (mut after, hop) = crate::placement::stopped_by_policy(action, recheck, &policy, now)?;
        after.compensation_due = execution::compensation_due(&after, hop.0, policy.defaults.compensate_on_failure);
        tracing::warn!(to = %hop.0, "the current policy stopped the step");
        Some(match self.write(action, after, &[hop]).await {
            // A plan stopped after earlier steps ran is compensated as any failed plan is.
            Ok(done) if done.status == Status::Failed => self.compensate(done, deadline).await,
            Ok(done) => Outcome::Ran(done.status),
            Err(TransitionError::Conflict) => Outcome::Ignored("the action changed concurrently".into()),
            Err(TransitionError::Store(e)) => Outcome::Retry(e.to_string()),
        })
    }

    /// Tier-1 work found the breaker open when claiming: it waits `pending` for the sweep.
    pub(super) async fn hold_for_breaker(&self, action: &Action) -> Outcome {
        let breaker = self.store.breaker(self.deps.policy.current().await.auto_execution.breaker.window).await;
        let reason = match &breaker {
            Ok(b) => crate::domain::guards::breaker_reason(b),
            Err(_) => "breaker_open: automatic execution is paused".into(),
        };
        let mut after = action.clone();
        after.hold_reason = Some(reason.clone());
        after.hold_until = None;
        let hop = (Status::Pending, format!("held before step {}; {reason}", action.next_step()), None);
        match self.write(action, after, &[hop]).await {
            Ok(done) => Outcome::Ran(done.status),
            Err(TransitionError::Conflict) => Outcome::Ignored("the action changed concurrently".into()),
            Err(TransitionError::Store(e)) => Outcome::Retry(e.to_string()),
        }
    }

    pub(super) async fn settle_success(
        &self,
        claimed: &Action,
        index: usize,
        value: Value,
        for_undo: Option<Value>,
        deadline: DateTime<Utc>,
    ) -> Outcome {
        let last = index + 1 == claimed.steps.len();
        let value = crate::domain::execution::bounded_result(claimed, index, value);
        // The effect happened: recording it is tried until the invocation's end is near, so a
        // busy counter or a brief store error never makes the step run again.
        let mut tries = 0u32;
        loop {
            tries += 1;
            let now = self.clock.now();
            let mut after = claimed.clone();
            after.lease_expires_at = None;
            let step = &mut after.steps[index];
            step.state = StepState::Completed;
            step.result = Some(value.clone());
            step.error = None;
            step.finished_at = Some(now);
            if let Some(data) = &for_undo {
                // Kept in the step's snapshot item (rollback retention), not in the action.
                step.snapshot = Some(data.clone());
                step.snapshot_at = Some(now);
            }
            let (to, reason) = if last {
                after.result = Some(if after.steps.len() == 1 {
                    value.clone()
                } else {
                    json!(after.steps.iter().map(|s| s.result.clone()).collect::<Vec<_>>())
                });
                (Status::Completed, format!("step {index} succeeded; the action is complete"))
            } else {
                (Status::Queued, format!("step {index} succeeded; step {} is next", index + 1))
            };
            // The breaker counts actions: the success of automatic work is counted once, with
            // the write that completes it (as a failure is counted once, when it fails for good).
            let automatic = claimed.tier == Some(Tier::Auto) && last;
            match self.store.advance_counting(claimed, after, &[(to, reason, None)], "executor", now, automatic).await {
                Ok(done) => {
                    if !last {
                        self.enqueue(&done, index + 1, 0).await;
                    }
                    return Outcome::Ran(done.status);
                }
                Err(TransitionError::Conflict) => {
                    // Either an earlier try did write (its answer was lost) or someone else
                    // moved the action (the lease ran out and it was recovered).
                    return match self.store.get_action(claimed.action_id).await {
                        Ok(Some(now_stored))
                            if now_stored.version == claimed.version + 1
                                && now_stored.steps.get(index).is_some_and(|s| s.state == StepState::Completed) =>
                        {
                            if !last && now_stored.status == Status::Queued {
                                self.enqueue(&now_stored, index + 1, 0).await;
                            }
                            Outcome::Ran(now_stored.status)
                        }
                        _ => {
                            tracing::error!("recording a successful step lost to a concurrent change");
                            Outcome::Ignored("the action changed while the step ran".into())
                        }
                    };
                }
                Err(TransitionError::Store(e)) => {
                    let Some(pause) = record_retry_pause(tries, deadline - self.clock.now()) else {
                        tracing::error!(error = %e, tries, "recording a successful step failed until the lease's end");
                        return Outcome::Retry(e.to_string());
                    };
                    tracing::warn!(error = %e, tries, "recording a successful step failed; trying again");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Retries a transient failure with backoff while attempts remain; otherwise fails the action.
    pub(super) async fn settle_failure(
        &self,
        before: &Action,
        mut after: Action,
        index: usize,
        error: HandlerError,
        claimed_path: Option<(Status, String, Option<Value>)>,
        deadline: DateTime<Utc>,
    ) -> Outcome {
        let now = self.clock.now();
        let attempt = after.steps[index].attempts;
        let max = after.max_attempts.max(1);
        after.lease_expires_at = None;
        let step = &mut after.steps[index];
        step.error = Some(json!(error));
        step.finished_at = Some(now);
        let detail = json!({"step": index, "attempt": attempt, "error": error});
        let mut path: Vec<(Status, String, Option<Value>)> = claimed_path.into_iter().collect();
        let mut retry_in = None;
        if error.kind == ErrorKind::Unknown {
            // The effect may or may not have happened, and repeating it is not safe: a human
            // checks (never retried blindly).
            step.state = StepState::Failed;
            let message = format!("whether step {index} took effect is unknown ({error}); it cannot be repeated safely: a human must check");
            after.error = Some(
                json!({"step": index, "code": "outcome_unknown", "message": message, "kind": "permanent", "needs_human": true, "attempts": attempt}),
            );
            path.push((
                Status::Failed,
                message,
                Some(json!({"step": index, "attempt": attempt, "error": error, "needs_human": true})),
            ));
        } else if error.is_transient() && attempt < max {
            step.state = StepState::NotStarted;
            let current = self.deps.policy.current().await;
            let policy = &current.defaults;
            // The backoff, but never sooner than the target asked (`Retry-After`).
            let delay =
                backoff_secs(attempt, policy.retry_base.as_secs(), policy.retry_cap.as_secs(), rand::random::<f64>())
                    .max(error.retry_after_secs.unwrap_or(0));
            retry_in = Some(delay);
            after.not_before = Some(now + chrono::Duration::seconds(delay as i64));
            path.push((
                Status::Queued,
                format!("attempt {attempt} of {max} failed ({error}); retrying in {delay}s"),
                Some(detail),
            ));
        } else {
            step.state = StepState::Failed;
            after.error = Some(
                json!({"step": index, "code": error.code, "message": error.message, "kind": error.kind, "attempts": attempt}),
            );
            let why = if error.is_transient() {
                format!("attempt {attempt} of {max} failed ({error}); no attempts left")
            } else {
                format!("step {index} failed permanently ({error})")
            };
            path.push((Status::Failed, why, Some(detail)));
        }
        if let Some((to, _, _)) = path.last() {
            let compensate = self.deps.policy.current().await.defaults.compensate_on_failure;
            after.compensation_due = execution::compensation_due(&after, *to, compensate);
        }
        match self.write(before, after, &path).await {
            Ok(done) => {
                // The breaker counts actions, not attempts: only a final failure is an outcome.
                if counts_as_automatic_failure(&done) {
                    self.record_automatic_failure(&done).await;
                }
                if let Some(delay) = retry_in {
                    self.enqueue(&done, index, delay).await;
                }
                tracing::warn!(error = %error, attempt, status = %done.status, "step failed");
                if done.status == Status::Failed {
                    return self.compensate(done, deadline).await;
                }
                Outcome::Ran(done.status)
            }
            Err(TransitionError::Conflict) => Outcome::Ignored("the action changed while the step ran".into()),
            Err(TransitionError::Store(e)) => Outcome::Retry(e.to_string()),
        }
    }

    /// A step that cannot even be claimed (no handler): fail it with its claim in one write.
    pub(super) async fn fail_unclaimed(
        &self,
        action: Action,
        index: usize,
        error: HandlerError,
        deadline: DateTime<Utc>,
    ) -> Outcome {
        let mut after = action.clone();
        after.steps[index].attempts += 1;
        after.attempts += 1;
        let path = (Status::Executing, format!("step {index} started"), None);
        self.settle_failure(&action, after, index, error, Some(path), deadline).await
    }
}
