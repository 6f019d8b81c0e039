//! The executor service: runs the current step of an action from a work-queue message.
//!
//! A step is claimed with one conditional write (`queued → executing`) carrying a lease that
//! ends with the Lambda invocation, so two executors never run it at once; duplicates and
//! redeliveries of a step that is running or done are acknowledged and do nothing. Transient
//! failures go back to `queued` with exponential backoff and full jitter (SQS delay up to 15
//! minutes, EventBridge Scheduler beyond); permanent ones fail the action, which stops the plan.
//! Wait steps rest in `waiting` until a one-time schedule puts the action back on the queue.

use crate::clock::{format_time, Clock};
use crate::domain::action::{StepKind, StepState};
use crate::domain::Tier;
use crate::domain::{Action, Status};
use crate::handlers::{Dependencies, ErrorKind, HandlerError, Registry, StepContext};
use crate::queue::{ExecuteMessage, WorkQueue};
use crate::rollback::{RollbackRequest, RollbackService};
use crate::scheduler::WakeUpScheduler;
use crate::store::{GuardError, Store, TransitionError};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

/// SQS's longest message delay; longer backoffs go through the scheduler.
const MAX_SQS_DELAY_SECS: u64 = 900;
/// A lease ends this long before the invocation's deadline, so a successor never overlaps.
const LEASE_MARGIN_SECS: i64 = 1;
/// A handler call must leave this much of the invocation to record its outcome.
const RECORD_MARGIN_SECS: i64 = 5;
/// A step is not started with less time than this for its handler (the message comes back).
const MIN_HANDLER_SECS: i64 = 2;

/// How long a handler call may take: until the invocation's deadline less the time to record
/// its outcome (zero when that is already past).
fn handler_budget(deadline: DateTime<Utc>, now: DateTime<Utc>) -> std::time::Duration {
    (deadline - now - chrono::Duration::seconds(RECORD_MARGIN_SECS)).to_std().unwrap_or_default()
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Work was done; the action is now in this state.
    Ran(Status),
    /// A duplicate, stale or not-runnable message: acknowledged, nothing done.
    Ignored(String),
    /// Unusable: reported as failed, so the queue's redrive policy moves it to the
    /// dead-letter queue after `maxReceiveCount` deliveries (never retried forever).
    DeadLetter(String),
    /// Could not be handled now (the store was unreachable): SQS delivers it again.
    Retry(String),
}

/// Opt-in crash simulation for tests (never set by the template): abort the process right
/// after a side effect and before it is recorded, for actions whose `rate_limit_key` is
/// `fault:abort-after-effect`, on their first attempt.
pub const FAULT_INJECTION_VAR: &str = "ACTIONGATE_FAULT_INJECTION";
pub const ABORT_AFTER_EFFECT_KEY: &str = "fault:abort-after-effect";

pub struct ExecutorService {
    store: Store,
    queue: WorkQueue,
    scheduler: WakeUpScheduler,
    registry: Arc<Registry>,
    deps: Arc<Dependencies>,
    clock: Arc<dyn Clock>,
    fault_injection: bool,
    /// Rolls back the completed steps of a plan that failed for good, when the policy asks.
    compensator: RollbackService,
}

/// Exponential backoff with full jitter: uniform in `[0, min(cap, base × 2^(attempt-1))]`.
/// `unit` is a random number in `[0, 1)`.
pub fn backoff_secs(attempt: u32, base_secs: u64, cap_secs: u64, unit: f64) -> u64 {
    let exp = base_secs.saturating_mul(1u64 << attempt.saturating_sub(1).min(32)).min(cap_secs);
    ((exp as f64) * unit.clamp(0.0, 1.0)).round() as u64
}

impl ExecutorService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        queue: WorkQueue,
        scheduler: WakeUpScheduler,
        registry: Registry,
        deps: Dependencies,
        clock: Arc<dyn Clock>,
        fault_injection: bool,
    ) -> Self {
        let (registry, deps) = (Arc::new(registry), Arc::new(deps));
        let compensator =
            RollbackService::new(store.clone(), Arc::clone(&registry), Arc::clone(&deps), Arc::clone(&clock));
        Self { store, queue, scheduler, registry, deps, clock, fault_injection, compensator }
    }

    /// Handles an SQS batch: messages run concurrently, and only the ones to retry are
    /// reported, so one bad message never fails its batch-mates.
    pub async fn handle_batch(self: &Arc<Self>, event: SqsEvent, deadline: DateTime<Utc>) -> SqsBatchResponse {
        let service = Arc::clone(self);
        let failed = run_isolated(event.records, move |record| {
            let service = Arc::clone(&service);
            async move { service.handle_message(&record, deadline).await }
        })
        .await;
        let mut response = SqsBatchResponse::default();
        for (record, outcome) in failed {
            let retry = match outcome {
                Ok(outcome) => matches!(outcome, Outcome::Retry(_) | Outcome::DeadLetter(_)),
                Err(panic) => {
                    tracing::error!(message_id = ?record.message_id, error = %panic, "message task panicked; its batch-mates are unaffected");
                    true
                }
            };
            if retry {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id.unwrap_or_default();
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    pub async fn handle_message(&self, record: &SqsMessage, deadline: DateTime<Utc>) -> Outcome {
        let message_id = record.message_id.clone().unwrap_or_default();
        let body = record.body.clone().unwrap_or_default();
        let message: ExecuteMessage = match serde_json::from_str(&body) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(message_id = %message_id, error = %e, body = %body.chars().take(200).collect::<String>(), "not a work message");
                return Outcome::DeadLetter(format!("not a work message: {e}"));
            }
        };
        let span = tracing::info_span!("execute", action_id = %message.action_id, step = message.step, message_id = %message_id);
        let outcome = self.run(&message, deadline).instrument(span.clone()).await;
        span.in_scope(|| tracing::info!(outcome = ?outcome, "message handled"));
        if let Outcome::DeadLetter(reason) = &outcome {
            tracing::error!(message_id = %message_id, reason = %reason, "unusable message");
        }
        outcome
    }

    /// Runs what the message asks for, if it is still due.
    pub async fn run(&self, message: &ExecuteMessage, deadline: DateTime<Utc>) -> Outcome {
        let mut step = message.step;
        // A finished wait continues into the step after it in the same invocation.
        for _ in 0..=crate::validation::MAX_PLAN_STEPS + 1 {
            let action = match self.store.get_action(message.action_id).await {
                Ok(Some(a)) => a,
                Ok(None) => return Outcome::DeadLetter(format!("no action {}", message.action_id)),
                Err(e) => return Outcome::Retry(e.to_string()),
            };
            if action.status == Status::RollingBack {
                return self.resume_rollback(action, deadline).await;
            }
            let next = action.next_step();
            if step != next {
                return Outcome::Ignored(format!(
                    "step {step} is not the next step ({next}): a duplicate or stale message"
                ));
            }
            let Some(kind) = action.steps.get(next).map(|s| s.kind.clone()) else {
                return Outcome::Ignored("every step is done".into());
            };
            let outcome = match (action.status, kind) {
                (Status::Queued, StepKind::Action { .. }) => self.execute_step(action, deadline).await,
                (Status::Queued, _) => self.start_wait(action, deadline).await,
                (Status::Waiting, _) => match self.finish_wait(action).await {
                    Ok(()) => {
                        step = next + 1;
                        continue;
                    }
                    Err(outcome) => outcome,
                },
                (Status::Executing, _) => match self.recover(action).await {
                    Ok(()) => continue,
                    Err(outcome) => outcome,
                },
                (status, _) => Outcome::Ignored(format!("the action is {status}")),
            };
            return outcome;
        }
        Outcome::Ignored("step limit reached".into())
    }

    async fn write(
        &self,
        before: &Action,
        after: Action,
        path: &[(Status, String, Option<Value>)],
    ) -> Result<Action, TransitionError> {
        self.store.advance(before, after, path, "executor", self.clock.now()).await
    }

    /// The claim's lease: until just before the invocation's end (no handler call outlives it).
    fn lease(&self, deadline: DateTime<Utc>) -> DateTime<Utc> {
        let now = self.clock.now();
        (deadline - chrono::Duration::seconds(LEASE_MARGIN_SECS)).max(now + chrono::Duration::seconds(1))
    }

    async fn execute_step(&self, action: Action, deadline: DateTime<Utc>) -> Outcome {
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
        let Some(handler) = self.registry.get(&action_type) else {
            let error = HandlerError::permanent("no_handler", format!("{action_type} is never executed by the system"));
            return self.fail_unclaimed(action, index, error, deadline).await;
        };
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
        claimed.lease_expires_at = Some(self.lease(deadline));
        let step = &mut claimed.steps[index];
        step.attempts += 1;
        step.state = StepState::Running;
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
            let claimed_path = (Status::Executing, claim_reason, None);
            return self.settle_failure(&action, claimed, index, error, Some(claimed_path), deadline).await;
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
        match result {
            Ok(value) => self.settle_success(&claimed, index, value, deadline).await,
            Err(error) => self.settle_failure(&claimed, claimed.clone(), index, error, None, deadline).await,
        }
    }

    /// Applies the policy current now to work about to run its next step; `None` when it may
    /// run, else what became of it (held, sent to approval, made manual, blocked), audited.
    async fn recheck_policy(&self, action: &Action, deadline: DateTime<Utc>) -> Option<Outcome> {
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
        let (after, hop) = crate::placement::stopped_by_policy(action, recheck, &policy, now)?;
        tracing::warn!(to = %hop.0, "the current policy stopped the step");
        Some(match self.write(action, after, &[hop]).await {
            // A plan stopped after earlier steps ran is compensated as any failed plan is.
            Ok(done) if done.status == Status::Failed => self.compensate(done, deadline).await,
            Ok(done) => Outcome::Ran(done.status),
            Err(TransitionError::Conflict) => Outcome::Ignored("the action changed concurrently".into()),
            Err(TransitionError::Store(e)) => Outcome::Retry(e.to_string()),
        })
    }

    /// A rollback whose worker stopped (the sweep found its lease run out): continue it here.
    async fn resume_rollback(&self, action: Action, deadline: DateTime<Utc>) -> Outcome {
        if action.lease_expires_at.is_some_and(|t| t > self.clock.now()) {
            return Outcome::Ignored("a rollback of it is in progress".into());
        }
        match self.compensator.resume(action, Some(deadline)).await {
            Ok(done) => Outcome::Ran(done.status),
            Err(crate::api::ApiError::InvalidState { .. }) => Outcome::Ignored("taken over by another worker".into()),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// Tier-1 work found the breaker open when claiming: it waits `pending` for the sweep.
    async fn hold_for_breaker(&self, action: &Action) -> Outcome {
        let breaker = self.store.breaker(self.deps.policy.current().await.auto_execution.breaker.window).await;
        let reason = match &breaker {
            Ok(b) => crate::sweep::breaker_reason(b),
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

    async fn settle_success(&self, claimed: &Action, index: usize, value: Value, deadline: DateTime<Utc>) -> Outcome {
        let last = index + 1 == claimed.steps.len();
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
    async fn settle_failure(
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
            let delay =
                backoff_secs(attempt, policy.retry_base.as_secs(), policy.retry_cap.as_secs(), rand::random::<f64>());
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

    /// Automatic compensation: when the policy says so, a plan that failed for good has its
    /// completed steps rolled back (what cannot be undone is reported in the rollback's result).
    async fn compensate(&self, failed: Action, deadline: DateTime<Utc>) -> Outcome {
        let executed =
            failed.steps.iter().any(|s| s.state == StepState::Completed && matches!(s.kind, StepKind::Action { .. }));
        if !executed || !self.deps.policy.current().await.defaults.compensate_on_failure {
            return Outcome::Ran(Status::Failed);
        }
        let step = failed.error.as_ref().and_then(|e| e.get("step")).cloned().unwrap_or(Value::Null);
        let request = RollbackRequest {
            reason: Some(format!("automatic compensation: step {step} failed for good")),
            partial: true,
        };
        match self.compensator.roll_back_by(failed, &request, "executor", Some(deadline)).await {
            Ok(done) => {
                tracing::info!(status = %done.status, "failed plan compensated");
                Outcome::Ran(done.status)
            }
            Err(e) => {
                // The failure is recorded; the rollback can be resumed through the API.
                tracing::error!(error = %e, "automatic compensation did not finish");
                Outcome::Ran(Status::Failed)
            }
        }
    }

    /// Feeds the circuit breaker with a failure of automatic (tier-1) work (successes are counted
    /// with the step's own write); the executor that opens it tells the admin, once.
    async fn record_automatic_failure(&self, _action: &Action) {
        let policy = self.deps.policy.current().await;
        let now = self.clock.now();
        match self.store.record_breaker_failure(&policy.auto_execution.breaker, "executor", now).await {
            Ok(Some(reason)) => {
                let mail =
                    crate::notices::alert_recipient(&policy).map(|to| crate::notices::alert_mail(to, &reason, now));
                if let (Some(mailer), Some(mail)) = (self.deps.mailer.as_ref(), mail) {
                    if let Err(e) = mailer.send_within(&mail, std::time::Duration::from_secs(10)).await {
                        tracing::error!(error = %e, "the breaker alert could not be sent");
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "recording a failure on the circuit breaker failed"),
        }
    }

    /// A step that cannot even be claimed (no handler): fail it with its claim in one write.
    async fn fail_unclaimed(
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

    /// Queues the next run of `step`, delayed by `delay_secs` (via the scheduler past 15 minutes).
    async fn enqueue(&self, action: &Action, step: usize, delay_secs: u64) {
        self.enqueue_at(action, step, delay_secs, &format!("s{step}-a{}", action.attempts)).await
    }

    /// [`ExecutorService::enqueue`] whose schedule (past 15 minutes) is named by `purpose`.
    async fn enqueue_at(&self, action: &Action, step: usize, delay_secs: u64, purpose: &str) {
        let message = ExecuteMessage { action_id: action.action_id, step };
        let result = if delay_secs > MAX_SQS_DELAY_SECS {
            let at = self.clock.now()
                + chrono::Duration::seconds(delay_secs.min(crate::domain::duration::MAX_DURATION_SECS) as i64);
            let name = WakeUpScheduler::name(&message, purpose);
            self.scheduler.schedule(&name, at, &message).await.map_err(|e| e.to_string())
        } else {
            self.queue.enqueue(&message, delay_secs as u32).await.map(|_| ()).map_err(|e| e.to_string())
        };
        if let Err(e) = result {
            // The action is `queued` in the store; the sweep re-sends work nobody claimed.
            tracing::error!(error = %e, "queueing the next run failed; the sweep will re-send");
        }
    }

    /// A wait step: schedule the wake-up, then rest in `waiting`.
    async fn start_wait(&self, action: Action, deadline: DateTime<Utc>) -> Outcome {
        let index = action.next_step();
        let now = self.clock.now();
        // A plan that starts with a wait starts no earlier than its time either.
        if let Some(at) = action.runnable_at().filter(|at| *at > now) {
            let delay = u64::try_from((at - now).num_seconds()).unwrap_or(0).max(1);
            self.enqueue_at(&action, index, delay, &format!("s{index}-due{}", at.timestamp())).await;
            return Outcome::Ignored(format!("not due before {}", format_time(at)));
        }
        let wake_at = match &action.steps[index].kind {
            StepKind::WaitFor { wait_for } => action.steps[index].wake_at.unwrap_or(now + wait_for.to_chrono()),
            StepKind::WaitUntil { wait_until } => *wait_until,
            StepKind::Action { .. } => return Outcome::Ignored("not a wait step".into()),
        };
        // Schedules have second precision: round up, so a wait never ends early.
        let wake_at = match wake_at.timestamp_subsec_nanos() {
            0 => wake_at,
            nanos => wake_at + chrono::Duration::nanoseconds(1_000_000_000 - i64::from(nanos)),
        };
        let message = ExecuteMessage { action_id: action.action_id, step: index };
        if wake_at > now {
            if let Err(e) = self
                .scheduler
                .schedule(&WakeUpScheduler::name(&message, &format!("s{index}-wait")), wake_at, &message)
                .await
            {
                return Outcome::Retry(e.to_string());
            }
        }
        let mut after = action.clone();
        after.lease_expires_at = None;
        let step = &mut after.steps[index];
        step.state = StepState::Waiting;
        step.started_at = Some(now);
        step.wake_at = Some(wake_at);
        let _ = deadline;
        let path = [
            (Status::Executing, format!("step {index} (wait) started"), None),
            (
                Status::Waiting,
                format!("waiting until {}", format_time(wake_at)),
                Some(json!({"wake_at": format_time(wake_at)})),
            ),
        ];
        match self.write(&action, after, &path).await {
            Ok(done) => {
                if wake_at <= now {
                    self.enqueue(&done, index, 0).await;
                }
                Outcome::Ran(done.status)
            }
            Err(TransitionError::Conflict) => Outcome::Ignored("claimed by another executor".into()),
            Err(TransitionError::Store(e)) => Outcome::Retry(e.to_string()),
        }
    }

    /// The wake-up fired: the wait step is done, the action is queued for the next step.
    async fn finish_wait(&self, action: Action) -> Result<(), Outcome> {
        let index = action.next_step();
        let now = self.clock.now();
        let wake_at = action.steps[index].wake_at.unwrap_or(now);
        if now < wake_at {
            return Err(Outcome::Ignored(format!("the wait lasts until {}", format_time(wake_at))));
        }
        let mut after = action.clone();
        let step = &mut after.steps[index];
        step.state = StepState::Completed;
        step.finished_at = Some(now);
        if index + 1 == after.steps.len() {
            return Err(Outcome::Ignored("a plan cannot end with a wait".into()));
        }
        match self
            .write(&action, after, &[(Status::Queued, format!("wait over; step {} is next", index + 1), None)])
            .await
        {
            Ok(_) => Ok(()),
            Err(TransitionError::Conflict) => Err(Outcome::Ignored("the wait was already resumed".into())),
            Err(TransitionError::Store(e)) => Err(Outcome::Retry(e.to_string())),
        }
    }

    /// An `executing` action whose lease ran out: its executor died. See [`lease_recovery`].
    pub async fn recover(&self, action: Action) -> Result<(), Outcome> {
        let now = self.clock.now();
        if action.lease_expires_at.is_some_and(|t| now < t) {
            // Hand it back to SQS: it returns after the lease, and if that executor died by
            // then, this message resumes the work (no sweep needed).
            return Err(Outcome::Retry("running under another executor's lease".into()));
        }
        let (after, hop) = lease_recovery(&action, &self.registry);
        match self.write(&action, after, &[hop]).await {
            Ok(done) if done.status == Status::Queued => Ok(()),
            Ok(done) => Err(Outcome::Ran(done.status)),
            Err(TransitionError::Conflict) => Err(Outcome::Ignored("recovered by someone else".into())),
            Err(TransitionError::Store(e)) => Err(Outcome::Retry(e.to_string())),
        }
    }
}

/// How long to wait before trying again to record a step whose effect happened: growing
/// pauses (0.1 s, 0.2 s, … up to 2 s) while the invocation (less its lease margin) has time for
/// one; `None` when it has not.
pub fn record_retry_pause(tries: u32, time_left: chrono::Duration) -> Option<std::time::Duration> {
    let pause = std::time::Duration::from_millis(100 * u64::from(tries.clamp(1, 20)));
    let usable = (time_left - chrono::Duration::seconds(LEASE_MARGIN_SECS + 1)).to_std().ok()?;
    (usable >= pause).then_some(pause)
}

/// Whether a settled action is an outcome the autonomy breaker counts as a failure: automatic
/// (tier-1) work that failed for good. A transient failure that will be retried is not one.
pub fn counts_as_automatic_failure(action: &Action) -> bool {
    action.tier == Some(Tier::Auto) && action.status == Status::Failed
}

/// Bounds a handler call by `budget`. Past it, an idempotent call is a transient timeout; one
/// that cannot be repeated safely has an unknown outcome (a human checks).
async fn bounded(
    budget: std::time::Duration,
    idempotent: bool,
    call: crate::handlers::HandlerFuture<'_, Result<Value, HandlerError>>,
) -> Result<Value, HandlerError> {
    match tokio::time::timeout(budget, call).await {
        Ok(Err(e)) if e.kind == ErrorKind::Unknown && idempotent => {
            Err(HandlerError { kind: ErrorKind::Transient, ..e })
        }
        Ok(result) => result,
        Err(_) if idempotent => {
            Err(HandlerError::transient("timeout", format!("the call did not finish within {}s", budget.as_secs())))
        }
        Err(_) => {
            Err(HandlerError::unknown("timeout", format!("the call did not finish within {}s", budget.as_secs())))
        }
    }
}

/// Runs `work` for every item concurrently, each in a task of its own, so a panic in one
/// (release builds unwind) is reported for that item alone and never takes its batch-mates down.
pub async fn run_isolated<T, F, Fut, O>(items: Vec<T>, work: F) -> Vec<(T, Result<O, String>)>
where
    T: Clone + Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = O> + Send + 'static,
    O: Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut by_task = HashMap::new();
    for item in items {
        let handle = tasks.spawn(work(item.clone()));
        by_task.insert(handle.id(), item);
    }
    let mut out = Vec::with_capacity(by_task.len());
    while let Some(joined) = tasks.join_next_with_id().await {
        let (id, result) = match joined {
            Ok((id, value)) => (id, Ok(value)),
            Err(e) => (e.id(), Err(e.to_string())),
        };
        if let Some(item) = by_task.remove(&id) {
            out.push((item, result));
        }
    }
    out
}

/// What to do with a step whose executor died (its lease expired): an idempotent step goes
/// back to the queue; one whose effect may or may not have happened (and cannot be repeated
/// safely) fails with `outcome_unknown` for a human to check.
pub fn lease_recovery(action: &Action, registry: &Registry) -> (Action, (Status, String, Option<Value>)) {
    let index = action.next_step();
    let idempotent = match action.steps.get(index).map(|s| &s.kind) {
        Some(StepKind::Action { action_type, .. }) => registry.get(action_type).is_some_and(|h| h.idempotent()),
        _ => true,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_message_never_takes_its_batch_mates_down() {
        let results = run_isolated(vec![1, 2, 3], |n| async move {
            if n == 2 {
                panic!("bad input");
            }
            n * 10
        })
        .await;
        let mut by_item: Vec<_> = results.into_iter().map(|(n, r)| (n, r.ok())).collect();
        by_item.sort();
        assert_eq!(by_item, vec![(1, Some(10)), (2, None), (3, Some(30))]);
    }

    #[tokio::test]
    async fn a_handler_call_never_outlives_its_budget() {
        let slow = || -> crate::handlers::HandlerFuture<'static, Result<Value, HandlerError>> {
            Box::pin(async {
                tokio::time::sleep(std::time::Duration::from_secs(45)).await;
                Ok(Value::Null)
            })
        };
        let budget = std::time::Duration::from_millis(50);
        let idempotent = bounded(budget, true, slow()).await.unwrap_err();
        assert_eq!((idempotent.kind, idempotent.code.as_str()), (ErrorKind::Transient, "timeout"));
        let once_only = bounded(budget, false, slow()).await.unwrap_err();
        assert_eq!(once_only.kind, ErrorKind::Unknown, "an email that may have gone out is not retried");
    }

    fn auto_action(status: Status, attempts: u32) -> Action {
        let mut a = crate::domain::action::sample_action();
        a.tier = Some(Tier::Auto);
        a.status = status;
        a.max_attempts = 3;
        a.steps[0].attempts = attempts;
        a
    }

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
        assert!(!counts_as_automatic_failure(&auto_action(Status::Queued, 1)), "a retried attempt");
        assert!(counts_as_automatic_failure(&auto_action(Status::Failed, 3)));
        let mut approved = auto_action(Status::Failed, 3);
        approved.tier = Some(Tier::Approval);
        assert!(!counts_as_automatic_failure(&approved));
    }

    #[test]
    fn lease_recovery_counts_attempts_and_ends_after_the_last() {
        let registry = Registry::standard();
        let mut running = auto_action(Status::Executing, 1);
        running.steps[0].kind = StepKind::Action {
            action_type: "http_request".into(),
            payload: json!({"method": "POST", "url": "https://hooks.example.com/x"}),
        };
        let (_, (to, _, _)) = lease_recovery(&running, &registry);
        assert_eq!(to, Status::Queued, "attempts remain");
        running.steps[0].attempts = 3;
        let (after, (to, _, _)) = lease_recovery(&running, &registry);
        assert_eq!(to, Status::Failed, "the third lost lease ends it");
        assert_eq!(after.error.unwrap()["code"], "attempts_exhausted");
        running.steps[0].kind = StepKind::Action {
            action_type: "send_email".into(),
            payload: json!({"to": ["a@example.com"], "subject": "s", "text": "t"}),
        };
        running.steps[0].attempts = 1;
        let (after, (to, _, _)) = lease_recovery(&running, &registry);
        assert_eq!(to, Status::Failed);
        assert_eq!(after.error.unwrap()["code"], "outcome_unknown");
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
}
