//! The executor service: runs the current step of an action from a work-queue message.
//!
//! A step is claimed with one conditional write (`queued → executing`) carrying a lease that
//! ends with the Lambda invocation, so two executors never run it at once; duplicates and
//! redeliveries of a step that is running or done are acknowledged and do nothing. Transient
//! failures go back to `queued` with exponential backoff and full jitter (SQS delay up to 15
//! minutes, EventBridge Scheduler beyond); permanent ones fail the action, which stops the plan.
//! Wait steps rest in `waiting` until a one-time schedule puts the action back on the queue.
//!
//! This file takes the batch and routes each message; [`step`] runs an action step,
//! [`waits`] the wait steps, [`compensation`] what follows a final failure. The rules with no
//! I/O (budgets, backoff, lost leases) are in `domain::execution`.

use crate::domain::action::{StepKind, StepState};
use crate::domain::Tier;
use crate::domain::{Action, Status};
use crate::ports::clock::{format_time, Clock};
use crate::ports::handler::{Dependencies, ErrorKind, HandlerError, Registry, StepContext};
use crate::ports::queue::{ExecuteMessage, WorkQueue};
use crate::ports::scheduler::{wake_up_name, WakeUps};
use crate::ports::store::{GuardError, Store, TransitionError};
use crate::services::rollback::{RollbackRequest, RollbackService};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Arc;

mod compensation;
mod step;
mod waits;

use crate::domain::execution::{self, handler_budget, LEASE_MARGIN_SECS, MIN_HANDLER_SECS};
pub use crate::domain::execution::{backoff_secs, counts_as_automatic_failure, record_retry_pause};

/// SQS's longest message delay; longer backoffs go through the scheduler.
const MAX_SQS_DELAY_SECS: u64 = 900;

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

/// The `rate_limit_key` that asks for a crash right after the side effect, when the executor
/// runs with fault injection (`crate::config::ACTIONGATE_FAULT_INJECTION`).
pub const ABORT_AFTER_EFFECT_KEY: &str = "fault:abort-after-effect";

pub struct ExecutorService {
    store: Arc<dyn Store>,
    queue: Arc<dyn WorkQueue>,
    scheduler: Arc<dyn WakeUps>,
    registry: Arc<Registry>,
    deps: Arc<Dependencies>,
    clock: Arc<dyn Clock>,
    fault_injection: bool,
    /// Rolls back the completed steps of a plan that failed for good, when the policy asks.
    compensator: RollbackService,
    /// Delivers status notifications (`None`: such messages are dead-lettered).
    notifier: Option<crate::services::notify::NotificationService>,
}

impl ExecutorService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn WorkQueue>,
        scheduler: Arc<dyn WakeUps>,
        registry: Registry,
        deps: Dependencies,
        clock: Arc<dyn Clock>,
        fault_injection: bool,
    ) -> Self {
        let (registry, deps) = (Arc::new(registry), Arc::new(deps));
        let compensator =
            RollbackService::new(store.clone(), Arc::clone(&registry), Arc::clone(&deps), Arc::clone(&clock));
        Self { store, queue, scheduler, registry, deps, clock, fault_injection, compensator, notifier: None }
    }

    /// Delivers status notifications through `deliverer`.
    pub fn with_notifications(mut self, deliverer: Arc<dyn crate::ports::notify::Deliverer>) -> Self {
        self.notifier = Some(crate::services::notify::NotificationService::new(
            Arc::clone(&self.store),
            Arc::clone(&self.queue),
            deliverer,
            Arc::clone(&self.clock),
        ));
        self
    }

    /// Runs what the message asks for, if it is still due.
    pub async fn run(&self, message: &ExecuteMessage, deadline: DateTime<Utc>) -> Outcome {
        if let Some(version) = message.notify {
            return match &self.notifier {
                Some(notifier) => {
                    use crate::services::notify::Attempt;
                    match notifier.deliver(message.action_id, version, deadline).await {
                        Attempt::Made(status) => Outcome::Ran(status),
                        Attempt::Skipped(why) => Outcome::Ignored(why),
                        Attempt::Unknown(why) => Outcome::DeadLetter(why),
                        Attempt::StoreDown(why) => Outcome::Retry(why),
                    }
                }
                None => Outcome::DeadLetter("this executor delivers no notifications".into()),
            };
        }
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
            if action.status == Status::Failed && action.compensation_due {
                return self.compensate(action, deadline).await;
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
                (Status::Executing, _) => match self.recover(action, deadline).await {
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

    /// Queues the next run of `step`, delayed by `delay_secs` (via the scheduler past 15 minutes).
    async fn enqueue(&self, action: &Action, step: usize, delay_secs: u64) {
        self.enqueue_at(action, step, delay_secs, &format!("s{step}-a{}", action.attempts)).await
    }

    /// [`ExecutorService::enqueue`] whose schedule (past 15 minutes) is named by `purpose`.
    async fn enqueue_at(&self, action: &Action, step: usize, delay_secs: u64, purpose: &str) {
        let message = ExecuteMessage::step(action.action_id, step);
        let result = if delay_secs > MAX_SQS_DELAY_SECS {
            let at = self.clock.now()
                + chrono::Duration::seconds(delay_secs.min(crate::domain::duration::MAX_DURATION_SECS) as i64);
            let name = wake_up_name(&message, purpose);
            self.scheduler.schedule(&name, at, &message).await.map_err(|e| e.to_string())
        } else {
            self.queue.enqueue(&message, delay_secs as u32).await.map(|_| ()).map_err(|e| e.to_string())
        };
        if let Err(e) = result {
            // The action is `queued` in the store; the sweep re-sends work nobody claimed.
            tracing::error!(error = %e, "queueing the next run failed; the sweep will re-send");
        }
    }

    /// An `executing` action whose lease ran out: its executor died. See [`lease_recovery`].
    pub async fn recover(&self, action: Action, deadline: DateTime<Utc>) -> Result<(), Outcome> {
        let now = self.clock.now();
        if action.lease_expires_at.is_some_and(|t| now < t) {
            // Hand it back to SQS: it returns after the lease, and if that executor died by
            // then, this message resumes the work (no sweep needed).
            return Err(Outcome::Retry("running under another executor's lease".into()));
        }
        let policy = self.deps.policy.current().await;
        let (mut after, hop) = lease_recovery(&action, &self.registry, &policy);
        let compensate = policy.defaults.compensate_on_failure;
        after.compensation_due = execution::compensation_due(&after, hop.0, compensate);
        match self.write(&action, after, &[hop]).await {
            Ok(done) if done.status == Status::Queued => Ok(()),
            // Failed for good here as in a step: the breaker counts it, the plan is compensated.
            Ok(done) => {
                if counts_as_automatic_failure(&done) {
                    self.record_automatic_failure(&done).await;
                }
                Err(self.compensate(done, deadline).await)
            }
            Err(TransitionError::Conflict) => Err(Outcome::Ignored("recovered by someone else".into())),
            Err(TransitionError::Store(e)) => Err(Outcome::Retry(e.to_string())),
        }
    }
}

/// Bounds a handler call by `budget`. Past it, an idempotent call is a transient timeout; one
/// that cannot be repeated safely has an unknown outcome (a human checks).
async fn bounded(
    budget: std::time::Duration,
    idempotent: bool,
    call: crate::ports::handler::HandlerFuture<'_, Result<Value, HandlerError>>,
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

/// What to do with a step whose executor died (its lease expired); see
/// [`execution::lease_recovery`]. Whether the step can be repeated safely is its handler's say.
pub fn lease_recovery(
    action: &Action,
    registry: &Registry,
    policy: &crate::policy::Policy,
) -> (Action, (Status, String, Option<Value>)) {
    let idempotent = match action.steps.get(action.next_step()).map(|s| &s.kind) {
        Some(StepKind::Action { action_type, .. }) => {
            registry.resolve(action_type, policy).is_some_and(|h| h.idempotent())
        }
        _ => true,
    };
    execution::lease_recovery(action, idempotent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handler_call_never_outlives_its_budget() {
        let slow = || -> crate::ports::handler::HandlerFuture<'static, Result<Value, HandlerError>> {
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

    #[test]
    fn lease_recovery_counts_attempts_and_ends_after_the_last() {
        let registry = Registry::standard();
        let mut running = crate::domain::action::sample_automatic(Status::Executing, 1);
        running.steps[0].kind = StepKind::Action {
            action_type: "http_request".into(),
            payload: json!({"method": "POST", "url": "https://hooks.example.com/x"}),
        };
        let (_, (to, _, _)) = lease_recovery(&running, &registry, &crate::policy::Policy::default_policy());
        assert_eq!(to, Status::Queued, "attempts remain");
        running.steps[0].attempts = 3;
        let (after, (to, _, _)) = lease_recovery(&running, &registry, &crate::policy::Policy::default_policy());
        assert_eq!(to, Status::Failed, "the third lost lease ends it");
        assert_eq!(after.error.unwrap()["code"], "attempts_exhausted");
        running.steps[0].kind = StepKind::Action {
            action_type: "send_email".into(),
            payload: json!({"to": ["a@example.com"], "subject": "s", "text": "t"}),
        };
        running.steps[0].attempts = 1;
        let (after, (to, _, _)) = lease_recovery(&running, &registry, &crate::policy::Policy::default_policy());
        assert_eq!(to, Status::Failed);
        assert_eq!(after.error.unwrap()["code"], "outcome_unknown");
    }
}
