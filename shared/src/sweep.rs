//! The sweep: all timed work, found through the sparse `due` index (never a table scan).
//!
//! - `pending` actions whose time has come are queued (unless auto-execution is switched off);
//! - approvals past their expiry become `expired`, and their link is closed;
//! - `executing` steps whose lease ran out (a crashed executor) are recovered;
//! - `queued` work nobody claimed for a while (a lost SQS send) is sent again;
//! - waits whose wake-up never arrived are woken.
//!
//! Every change is a conditional write, so two sweeps at once never start the same action
//! twice: the loser's write fails and it moves on.

use crate::clock::{format_time, Clock};
use crate::domain::{Action, Status};
use crate::executor::lease_recovery;
use crate::handlers::Registry;
use crate::policy::{Policy, RateLimit, Window};
use crate::policy_source::PolicySource;
use crate::queue::{ExecuteMessage, WorkQueue};
use crate::store::{ApprovalStatus, ApprovalUse, Cooldown, CounterSpec, GuardError, Store, TransitionError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;

/// How many due items of each kind one sweep handles (the rest wait for the next sweep).
pub const BATCH: i32 = 100;
const ACTOR: &str = "sweep";

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub started: u32,
    pub held: u32,
    pub expired: u32,
    pub reminded: u32,
    pub recovered: u32,
    pub needs_human: u32,
    pub resent: u32,
    pub woken: u32,
    /// Lost races with another sweep or an executor (nothing to do).
    pub raced: u32,
    pub errors: u32,
}

/// What starting one tier-1 execution consumes: a unit of the global and the per-user
/// automatic-execution limits, and (with a `rate_limit_key`) the entity's cool-down.
pub fn auto_guards(policy: &Policy, action: &Action, now: DateTime<Utc>) -> (Vec<CounterSpec>, Option<Cooldown>) {
    let a = &policy.auto_execution;
    let user = action.user_id.as_str();
    let limit = |window, limit| RateLimit { window, limit };
    let counters = vec![
        CounterSpec::at("auto#all", "automatic execution", limit(Window::Hour, a.per_hour), 1, now),
        CounterSpec::at("auto#all", "automatic execution", limit(Window::Day, a.per_day), 1, now),
        CounterSpec::at(
            format!("auto#{user}"),
            "automatic execution per user",
            limit(Window::Hour, a.per_user_per_hour.unwrap_or(a.per_hour)),
            1,
            now,
        ),
        CounterSpec::at(
            format!("auto#{user}"),
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

pub fn breaker_reason(breaker: &crate::breaker::Breaker) -> String {
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

pub struct SweepService {
    store: Store,
    queue: WorkQueue,
    registry: Registry,
    policies: Arc<PolicySource>,
    /// Reminders and expiry notices (`None`: no mail).
    mail: Option<crate::intake::ApprovalMail>,
    clock: Arc<dyn Clock>,
}

impl SweepService {
    pub fn new(
        store: Store,
        queue: WorkQueue,
        registry: Registry,
        policies: Arc<PolicySource>,
        mail: Option<crate::intake::ApprovalMail>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { store, queue, registry, policies, mail, clock }
    }

    /// Halfway through the window, the approver gets the request again with a fresh link (only
    /// the token's hash is ever stored, so the old link cannot be re-sent; it is closed).
    async fn remind_approver(&self, action: &Action, now: DateTime<Utc>) -> Result<(), TransitionError> {
        let (Some(approver), Some(expires_at)) = (action.approver.clone(), action.approval_expires_at) else {
            return Ok(());
        };
        let mut after = action.clone();
        let (token, record) = crate::approval::issue_link(&after, &approver, expires_at);
        after.approval_token_hash = Some(record.token_hash.clone());
        after.approval_reminded = true;
        after.version = action.version + 1;
        after.updated_at = now;
        let note = crate::domain::AuditEvent {
            action_id: action.action_id,
            seq: after.version,
            at: now,
            actor: ACTOR.into(),
            from: Some(Status::AwaitingApproval),
            to: Status::AwaitingApproval,
            reason: format!("reminder sent to {approver} with a new link; the earlier link is closed"),
            detail: None,
            request_id: None,
            source_ip: None,
            user_agent: None,
        };
        let old = action.approval_token_hash.as_deref().map(|h| ApprovalUse {
            token_hash: h,
            status: ApprovalStatus::Closed,
            by: ACTOR,
            at: now,
        });
        self.store.reissue_link(action, &after, &note, &record, old).await?;
        if let Some(mail) = &self.mail {
            let link = crate::approval::link(&mail.public_base_url, &token);
            let mut message = crate::approval::approval_mail(&after, &approver, &link, expires_at);
            message.subject = format!("Reminder: {}", message.subject);
            if let Err(e) = mail.mailer.send(&message).await {
                tracing::error!(error = %e, "the approval reminder could not be sent");
            }
        }
        Ok(())
    }

    /// The requester learns that nobody decided in time (when their id is a mail address).
    async fn tell_requester_expired(&self, action: &Action) {
        let (Some(mail), Some(to)) = (&self.mail, crate::domain::EmailAddress::parse(action.user_id.as_str())) else {
            return;
        };
        let lines = crate::approval::plan_lines(action);
        let text = format!(
            "Nobody approved your request in time, so it will not run:\n\n  {}\n\nIt expired at {}. Submit it again if it is still needed.\nAction id: {}\n",
            lines.join("; "),
            action.approval_expires_at.map(format_time).unwrap_or_default(),
            action.action_id
        );
        let message = crate::mail::Mail {
            to: vec![to.as_str().to_owned()],
            cc: vec![],
            subject: format!("Expired without a decision: {}", lines.first().cloned().unwrap_or_default()),
            html: format!("<pre>{}</pre>", crate::approval::pages::escape(&text)),
            text,
        };
        if let Err(e) = mail.mailer.send(&message).await {
            tracing::error!(error = %e, "the expiry notice could not be sent");
        }
    }

    pub async fn run(&self) -> SweepReport {
        let now = self.clock.now();
        let policy = self.policies.current().await;
        let mut report = SweepReport::default();
        // If the breaker cannot be read, automatic work waits rather than risk running open.
        let breaker = match self.store.breaker(policy.auto_execution.breaker.window).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "reading the circuit breaker failed; holding automatic work");
                report.errors += 1;
                crate::breaker::Breaker {
                    state: crate::breaker::BreakerStatus::Open,
                    reason: Some("its state could not be read".into()),
                    ..Default::default()
                }
            }
        };
        if breaker.is_open() {
            crate::telemetry::breaker_open_metric(now);
        }
        for status in [Status::AwaitingApproval, Status::Executing, Status::Pending, Status::Queued, Status::Waiting] {
            let due = match self.store.due(status, now, BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, %status, "reading due work failed");
                    report.errors += 1;
                    continue;
                }
            };
            let mut due = due;
            // Pending work starts by priority, then oldest first.
            if status == Status::Pending {
                due.sort_by_key(|a| std::cmp::Reverse(a.priority));
            }
            for stale in due {
                // The index lags; act only on what a consistent read still shows as due.
                let action = match self.store.get_action(stale.action_id).await {
                    Ok(Some(a)) if a.status == status => a,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::error!(error = %e, action_id = %stale.action_id, "reading an action failed");
                        report.errors += 1;
                        continue;
                    }
                };
                let span = tracing::info_span!("sweep", action_id = %action.action_id, %status);
                let _guard = span.enter();
                if let Err(e) = self.handle(action, now, &policy, &breaker, &mut report).await {
                    match e {
                        TransitionError::Conflict => report.raced += 1,
                        TransitionError::Store(e) => {
                            tracing::error!(error = %e, "sweep write failed");
                            report.errors += 1;
                        }
                    }
                }
            }
        }
        tracing::info!(report = ?report, "sweep finished");
        report
    }

    async fn handle(
        &self,
        action: Action,
        now: DateTime<Utc>,
        policy: &Policy,
        breaker: &crate::breaker::Breaker,
        report: &mut SweepReport,
    ) -> Result<(), TransitionError> {
        match action.status {
            Status::AwaitingApproval if action.approval_expires_at.is_some_and(|t| t <= now) => {
                let mut after = action.clone();
                after.status = Status::Expired;
                after.version = action.version + 1;
                after.updated_at = now;
                let reason = format!(
                    "no decision before {}; the approval expired",
                    action.approval_expires_at.map(format_time).unwrap_or_default()
                );
                let event = crate::domain::AuditEvent {
                    action_id: action.action_id,
                    seq: after.version,
                    at: now,
                    actor: ACTOR.into(),
                    from: Some(Status::AwaitingApproval),
                    to: Status::Expired,
                    reason,
                    detail: None,
                    request_id: None,
                    source_ip: None,
                    user_agent: None,
                };
                let link = action.approval_token_hash.as_deref().map(|h| ApprovalUse {
                    token_hash: h,
                    status: ApprovalStatus::Expired,
                    by: ACTOR,
                    at: now,
                });
                self.store.transition_many(&action, &after, &[event], link).await?;
                report.expired += 1;
                self.tell_requester_expired(&after).await;
            }
            Status::AwaitingApproval if action.approval_reminder_at().is_some_and(|t| t <= now) => {
                self.remind_approver(&action, now).await?;
                report.reminded += 1;
            }
            Status::Executing if action.lease_expires_at.is_none_or(|t| t <= now) => {
                let (after, hop) = lease_recovery(&action, &self.registry);
                let done = self.store.advance(&action, after, &[hop], ACTOR, now).await?;
                if done.status == Status::Queued {
                    self.send(&done).await;
                    report.recovered += 1;
                } else {
                    report.needs_human += 1;
                }
            }
            Status::Pending if action.scheduled_for.is_none_or(|t| t <= now) => {
                if !policy.auto_execution.enabled {
                    report.held += 1;
                    return Ok(());
                }
                if breaker.is_open() && action.tier == Some(crate::domain::Tier::Auto) {
                    report.held += 1;
                    return self.note_hold(&action, breaker_reason(breaker), None, now).await;
                }
                let (counters, cooldown) = auto_guards(policy, &action, now);
                let mut after = action.clone();
                after.hold_reason = None;
                after.hold_until = None;
                let hop = (Status::Queued, "its time came; queued by the sweep".to_owned(), None);
                let (reason, until) = match self
                    .store
                    .advance_guarded(&action, after, &[hop], ACTOR, now, &counters, cooldown.as_ref())
                    .await
                {
                    Ok(done) => {
                        self.send(&done).await;
                        report.started += 1;
                        return Ok(());
                    }
                    Err(GuardError::Conflict) => return Err(TransitionError::Conflict),
                    Err(GuardError::Store(e)) => return Err(TransitionError::Store(e)),
                    Err(GuardError::CounterFull(i)) => {
                        (limit_reason(&counters[i]), Some(hold_until(Some(&counters[i]), now)))
                    }
                    Err(GuardError::CoolingDown) => {
                        (cooldown.as_ref().map(cooldown_reason).unwrap_or_default(), Some(hold_until(None, now)))
                    }
                };
                report.held += 1;
                self.note_hold(&action, reason, until, now).await?;
            }
            Status::Queued => {
                // Nobody claimed it for a while: the message was lost. Touch it (so the next
                // sweep waits again) and send it anew; a duplicate is harmless.
                let mut touched = action.clone();
                touched.version = action.version + 1;
                touched.updated_at = now;
                self.store.transition_many(&action, &touched, &[], None).await?;
                self.send(&touched).await;
                report.resent += 1;
            }
            Status::Waiting => {
                self.send(&action).await;
                report.woken += 1;
            }
            _ => {}
        }
        Ok(())
    }

    /// Still waiting: say why in the trail, once per change of reason.
    /// Records why it still waits (in the trail, once per change of reason) and until when it
    /// need not be tried again (`None`: every sweep, as while the breaker is open).
    async fn note_hold(
        &self,
        action: &Action,
        reason: String,
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let kind = |r: &str| r.split(':').next().map(str::to_owned);
        let same_reason = action.hold_reason.as_deref().and_then(kind) == kind(&reason);
        if same_reason && action.hold_until == until {
            return Ok(());
        }
        let mut after = action.clone();
        after.hold_reason = Some(reason.clone());
        after.hold_until = until;
        after.version = action.version + 1;
        after.updated_at = now;
        if same_reason {
            return self.store.transition_many(action, &after, &[], None).await;
        }
        let note = crate::domain::AuditEvent {
            action_id: action.action_id,
            seq: after.version,
            at: now,
            actor: ACTOR.into(),
            from: Some(Status::Pending),
            to: Status::Pending,
            reason,
            detail: None,
            request_id: None,
            source_ip: None,
            user_agent: None,
        };
        self.store.transition_many(action, &after, &[note], None).await
    }

    async fn send(&self, action: &Action) {
        let message = ExecuteMessage { action_id: action.action_id, step: action.next_step() };
        if let Err(e) = self.queue.enqueue(&message, 0).await {
            tracing::error!(error = %e, "queueing from the sweep failed; the next sweep retries");
        }
    }
}
