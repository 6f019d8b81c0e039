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

use crate::domain::guards::{auto_guards, breaker_reason, cooldown_reason, hold_until, limit_reason};
use crate::domain::{Action, Status};
use crate::policy::{Policy, Recheck};
use crate::ports::clock::{format_time, Clock};
use crate::ports::handler::Registry;
use crate::ports::queue::{ExecuteMessage, WorkQueue};
use crate::ports::store::{GuardError, Store, TransitionError};
use crate::services::executor::lease_recovery;
use crate::services::policy_source::PolicySource;
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
    /// Approval mails delivered that had not gone out before.
    pub delivered: u32,
    /// Held work the current policy blocked, sent to approval or left to a human.
    pub stopped: u32,
    /// Interrupted rollbacks handed back to a worker.
    pub resumed: u32,
    /// Due items left for the next sweep because this one ran out of time.
    pub deferred: u32,
    /// Status notifications handed to an executor (due, or their executor died).
    pub notifications: u32,
}

/// The kinds of due work, each taken `TURN` items at a time.
const SWEPT: [Status; 8] = [
    Status::AwaitingApproval,
    Status::Executing,
    Status::RollingBack,
    Status::Pending,
    Status::Queued,
    Status::Waiting,
    Status::Failed,
    Status::Completed,
];
const TURN: usize = 10;
/// No new item is started this close to the invocation's end.
const STOP_MARGIN_SECS: i64 = 10;
/// How long a rollback's lease may stay expired (its resumes failing) before a human takes over.
const ROLLBACK_GIVE_UP: chrono::Duration = chrono::Duration::minutes(30);
/// Tries of one approval mail (or reminder) before the sweep gives up on mail for it.
const MAX_MAIL_ATTEMPTS: u32 = 5;
/// One mail may take this long before the sweep moves on.
const MAIL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct SweepService {
    store: Arc<dyn Store>,
    queue: Arc<dyn WorkQueue>,
    registry: Registry,
    policies: Arc<PolicySource>,
    /// Reminders and expiry notices (`None`: no mail).
    mail: Option<crate::services::notices::ApprovalMail>,
    clock: Arc<dyn Clock>,
}

impl SweepService {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn WorkQueue>,
        registry: Registry,
        policies: Arc<PolicySource>,
        mail: Option<crate::services::notices::ApprovalMail>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { store, queue, registry, policies, mail, clock }
    }

    /// What each step of `action` does, in words.
    async fn plan_lines(&self, action: &Action) -> Vec<String> {
        let policy = self.policies.current().await;
        self.registry.step_lines(&action.steps, Some(&policy))
    }

    /// Mails fresh links: to each member of `action`'s pool whose mail of this request is not
    /// out yet, or (a `reminder`) to everyone who has not decided. The links' records are stored
    /// first (so a mail never points at nothing); earlier links stay valid (a link is never
    /// closed before its successor is delivered). Returns whether any mail went out.
    async fn send_approval_link(
        &self,
        action: &Action,
        now: DateTime<Utc>,
        reminder: bool,
    ) -> Result<bool, TransitionError> {
        let (Some(mail), Some(expires_at)) = (&self.mail, action.approval_expires_at) else {
            return Ok(false);
        };
        let mailed = |a: &crate::domain::EmailAddress| {
            action.approval_mailed.iter().any(|m| crate::domain::ids::is_same_mailbox(m, a.as_str()))
        };
        let to: Vec<crate::domain::EmailAddress> =
            action.undecided().into_iter().filter(|a| reminder || !mailed(a)).cloned().collect();
        let mut stored = action.clone();
        let links: Vec<_> = to
            .iter()
            .map(|approver| {
                let (token, record) = crate::domain::approval::issue_link(&stored, approver, expires_at);
                (token, record, approver)
            })
            .collect();
        if let Some((_, record, _)) = links.first() {
            stored.approval_token_hash = Some(record.token_hash.clone());
        }
        // Counted before sending, so a sweep that dies here still backs off.
        stored.approval_mail_attempts = action.approval_mail_attempts.saturating_add(1);
        stored.approval_mail_due = None;
        stored.version = action.version + 1;
        stored.updated_at = now;
        let records: Vec<_> = links.iter().map(|(_, r, _)| r.clone()).collect();
        self.store.reissue_link(action, &stored, None, &records, None).await?;
        let lines = self.plan_lines(&stored).await;
        let mut delivered = Vec::new();
        let mut problem = None;
        for (token, _, approver) in &links {
            let link = crate::domain::approval::link(&mail.public_base_url, token);
            let mut message = crate::services::notices::approval_mail(&stored, &lines, approver, &link, expires_at);
            if reminder {
                message.subject = format!("Reminder: {}", message.subject);
            }
            match mail.mailer.send_within(&message, MAIL_TIMEOUT).await {
                Ok(_) => delivered.push(approver.as_str().to_owned()),
                Err(e) => {
                    let permanent = e.failure == crate::ports::mail::MailFailure::NotSentPermanent;
                    problem = Some((permanent || problem.is_some_and(|(p, _)| p), e.to_string()));
                }
            }
        }
        let mut after = stored.clone();
        after.version = stored.version + 1;
        let same = crate::domain::ids::is_same_mailbox;
        let missing: Vec<&crate::domain::EmailAddress> =
            to.iter().filter(|a| !delivered.iter().any(|d| same(d, a.as_str()))).collect();
        let names =
            |list: &[&crate::domain::EmailAddress]| list.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ");
        let mut reasons = Vec::new();
        if !delivered.is_empty() {
            let sent_to = delivered.join(", ");
            reasons.push(if reminder {
                format!("reminder sent to {sent_to} with a new link; the earlier link still works")
            } else {
                format!("approval requested from {sent_to} by mail")
            });
        }
        after.approval_mailed.extend(delivered.iter().cloned());
        if let Some((permanent, error)) = &problem {
            let retry = !permanent && stored.approval_mail_attempts < MAX_MAIL_ATTEMPTS;
            if retry && delivered.is_empty() {
                // Nothing went out: a later sweep tries again (the attempt is counted).
                tracing::error!(%error, attempt = stored.approval_mail_attempts, "the approval mail could not be sent; a later sweep tries again");
                return Ok(false);
            }
            if !retry || reminder {
                // Give up on mail to them (audited); the action stays decidable through the API
                // and by the links that went out, and still expires on time.
                tracing::error!(%error, "an approval mail could not be delivered; giving up on it");
                if !reminder {
                    after.approval_mailed.extend(missing.iter().map(|a| a.as_str().to_owned()));
                }
                reasons.push(format!(
                    "the approval mail to {} could not be delivered after {} tries ({error}); it can be decided through the API",
                    names(&missing),
                    stored.approval_mail_attempts
                ));
            }
        }
        if reminder {
            after.approval_reminded = true;
        } else {
            after.approval_mail_pending =
                after.undecided().iter().any(|a| !after.approval_mailed.iter().any(|m| same(m, a.as_str())));
        }
        if !after.approval_mail_pending {
            after.approval_mail_attempts = 0;
        }
        if reasons.is_empty() {
            // Nobody left to ask: bookkeeping only.
            self.store.transition_many(&stored, &after, &[], None).await?;
            return Ok(false);
        }
        let note = crate::domain::AuditEvent::note(action, after.version, now, ACTOR, reasons.join("; "));
        match self.store.transition(&stored, &after, &note).await {
            Err(TransitionError::Conflict) => {
                // Someone decided while the mail went out: the mail is recorded on what is
                // there now (or the next sweep would mail them again with new links).
                self.record_mail_on_current(&stored, &after, reasons.join("; "), now).await?;
            }
            other => other?,
        }
        Ok(!delivered.is_empty())
    }

    /// Records the mail bookkeeping of `after` (who was mailed, whether reminded) on the action
    /// as it is now, after a write made from `stored` lost a race; tried a few times.
    async fn record_mail_on_current(
        &self,
        stored: &Action,
        after: &Action,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let same = crate::domain::ids::is_same_mailbox;
        for _ in 0..3 {
            let Some(current) = self.store.get_action(stored.action_id).await.map_err(TransitionError::Store)? else {
                return Ok(());
            };
            if current.status != Status::AwaitingApproval || current.approval_round != stored.approval_round {
                return Ok(());
            }
            let mut merged = current.clone();
            for m in &after.approval_mailed {
                if !merged.approval_mailed.iter().any(|x| same(x, m)) {
                    merged.approval_mailed.push(m.clone());
                }
            }
            merged.approval_reminded |= after.approval_reminded;
            merged.approval_mail_pending = current.approval_mail_pending
                && merged.undecided().iter().any(|a| !merged.approval_mailed.iter().any(|m| same(m, a.as_str())));
            merged.version = current.version + 1;
            let note = crate::domain::AuditEvent::note(&current, merged.version, now, ACTOR, reason.clone());
            match self.store.transition(&current, &merged, &note).await {
                Err(TransitionError::Conflict) => continue,
                other => return other,
            }
        }
        Ok(())
    }

    /// Nobody decided in time for the next level of escalation: its people join the pool (the
    /// requester never does), audited as an escalation, and get links of their own at once;
    /// every earlier link stays valid. Returns whether mail went out.
    async fn escalate(&self, action: &Action, now: DateTime<Utc>) -> Result<bool, TransitionError> {
        let level = action.escalation_level as usize;
        let Some(step) = action.escalations.get(level) else { return Ok(false) };
        let mut after = action.clone();
        let mut pool: Vec<crate::domain::EmailAddress> = action.pool().into_iter().cloned().collect();
        let mut added = Vec::new();
        let mut left_out = Vec::new();
        for person in &step.to {
            let known = pool.iter().any(|p| crate::domain::ids::is_same_mailbox(p.as_str(), person.as_str()));
            if known || action.is_requester(person.as_str()) {
                continue;
            }
            if pool.len() < crate::domain::approvers::MAX_POOL {
                pool.push(person.clone());
                added.push(person.as_str().to_owned());
            } else {
                left_out.push(person.as_str().to_owned());
            }
        }
        after.ask(pool);
        after.escalation_level = action.escalation_level + 1;
        after.approval_mail_pending = (action.approval_mail_pending || !added.is_empty()) && self.mail.is_some();
        if !added.is_empty() {
            // The people just asked get every try of their own.
            after.approval_mail_attempts = 0;
        }
        after.version = action.version + 1;
        after.updated_at = now;
        let waited = crate::domain::time::format_time(step.at);
        let mut reason = if added.is_empty() {
            format!("no decision by {waited}: escalation level {} names nobody new", level + 1)
        } else {
            format!("no decision by {waited}: escalated to {} (level {})", added.join(", "), level + 1)
        };
        if !left_out.is_empty() {
            reason.push_str(&format!(
                "; not asked, the pool being full ({} people): {}",
                crate::domain::approvers::MAX_POOL,
                left_out.join(", ")
            ));
        }
        let mut note = crate::domain::AuditEvent::note(action, after.version, now, ACTOR, reason);
        note.detail = Some(serde_json::json!({"escalation": {"level": level + 1, "to": added}}));
        self.store.transition(action, &after, &note).await?;
        if added.is_empty() {
            return Ok(false);
        }
        self.send_approval_link(&after, now, false).await
    }

    /// Tells who asked to be told that approved work completed or failed: one mail each (nobody
    /// sees the others' addresses). Whoever a transient failure left out is tried again later,
    /// backing off; an outcome that may have gone out is not sent again. Recorded (audited) once
    /// everyone is told or given up on. Returns whether any mail went out.
    async fn send_completion_mail(&self, action: &Action, now: DateTime<Utc>) -> Result<bool, TransitionError> {
        let mut after = action.clone();
        after.version = action.version + 1;
        after.updated_at = now;
        let Some(mail) = &self.mail else {
            after.completion_mailed = true;
            let note = crate::domain::AuditEvent::note(
                action,
                after.version,
                now,
                ACTOR,
                "no mail is configured: the completion mail is not sent".into(),
            );
            self.store.transition(action, &after, &note).await?;
            return Ok(false);
        };
        let lines = self.plan_lines(action).await;
        let what = lines.join("; ");
        let (verdict, detail) = match action.status {
            Status::Completed => ("Completed", "It ran and completed.".to_owned()),
            _ => (
                "Failed",
                format!(
                    "It failed: {}",
                    action.error.as_ref().and_then(|e| e["message"].as_str()).unwrap_or("see its audit trail")
                ),
            ),
        };
        let text = format!(
            "The action approved by {} has ended.\n\n  {what}\n\n{detail}\nAction id: {}\n",
            action.decided_by.as_deref().unwrap_or("an approver"),
            action.action_id
        );
        // Counted before sending, so a sweep that dies while sending still backs off.
        after.approval_mail_attempts = action.approval_mail_attempts.saturating_add(1);
        let (mut told, mut again, mut lost) = (Vec::new(), Vec::new(), Vec::new());
        for to in &action.completion_mail_to {
            let message = crate::ports::mail::Mail {
                to: vec![to.clone()],
                cc: vec![],
                subject: format!("{verdict}: {}", lines.first().cloned().unwrap_or_default()),
                html: format!("<pre>{}</pre>", crate::domain::html::escape(&text)),
                text: text.clone(),
            };
            match mail.mailer.send_within(&message, MAIL_TIMEOUT).await {
                Ok(_) => told.push(to.clone()),
                Err(e) if e.failure == crate::ports::mail::MailFailure::NotSentTransient => again.push(to.clone()),
                Err(e) => lost.push(format!("{to} ({e})")),
            }
        }
        let out_of_tries = after.approval_mail_attempts >= MAX_MAIL_ATTEMPTS;
        after.completion_mail_to = if out_of_tries { action.completion_mail_to.clone() } else { again.clone() };
        after.completion_mailed = again.is_empty() || out_of_tries;
        if after.completion_mailed {
            after.completion_mail_to = action.completion_mail_to.clone();
        }
        let mut reasons = Vec::new();
        if !told.is_empty() {
            reasons.push(format!("completion mail sent to {}", told.join(", ")));
        }
        if !lost.is_empty() {
            reasons.push(format!("the completion mail to {} may not have arrived; not sent again", lost.join(", ")));
        }
        if !again.is_empty() && out_of_tries {
            reasons.push(format!(
                "the completion mail to {} could not be sent after {MAX_MAIL_ATTEMPTS} tries; given up",
                again.join(", ")
            ));
        }
        if reasons.is_empty() {
            // Only transient failures: tried again later (bookkeeping, not audited).
            self.store.transition_many(action, &after, &[], None).await?;
            return Ok(false);
        }
        let note = crate::domain::AuditEvent::note(action, after.version, now, ACTOR, reasons.join("; "));
        self.store.transition(action, &after, &note).await?;
        Ok(!told.is_empty())
    }

    /// The requester learns that nobody decided in time (when their id is a mail address).
    async fn tell_requester_expired(&self, action: &Action) {
        let (Some(mail), Some(to)) = (&self.mail, crate::domain::EmailAddress::parse(action.user_id.as_str())) else {
            return;
        };
        let lines = self.plan_lines(action).await;
        let text = format!(
            "Nobody approved your request in time, so it will not run:\n\n  {}\n\nIt expired at {}. Submit it again if it is still needed.\nAction id: {}\n",
            lines.join("; "),
            action.approval_expires_at.map(format_time).unwrap_or_default(),
            action.action_id
        );
        let message = crate::ports::mail::Mail {
            to: vec![to.as_str().to_owned()],
            cc: vec![],
            subject: format!("Expired without a decision: {}", lines.first().cloned().unwrap_or_default()),
            html: format!("<pre>{}</pre>", crate::domain::html::escape(&text)),
            text,
        };
        if let Err(e) = mail.mailer.send_within(&message, MAIL_TIMEOUT).await {
            tracing::error!(error = %e, "the expiry notice could not be sent");
        }
    }

    /// One sweep, within `deadline` (the invocation's): the due work of every kind is taken a
    /// slice at a time, in turns, so a burst of one kind cannot starve the others, and no new
    /// item is started once too little time is left (the rest waits for the next sweep).
    pub async fn run(&self, deadline: DateTime<Utc>) -> SweepReport {
        let now = self.clock.now();
        let policy = self.policies.current().await;
        let mut report = SweepReport::default();
        let stop_at = deadline - chrono::Duration::seconds(STOP_MARGIN_SECS);
        let mut queues: Vec<(Status, std::collections::VecDeque<Action>)> = Vec::new();
        for status in SWEPT {
            match self.store.due(status, now, BATCH).await {
                Ok(mut due) => {
                    // Pending work starts by priority, then oldest first.
                    if status == Status::Pending {
                        due.sort_by_key(|a| std::cmp::Reverse(a.priority));
                    }
                    queues.push((status, due.into()));
                }
                Err(e) => {
                    tracing::error!(error = %e, %status, "reading due work failed");
                    report.errors += 1;
                }
            }
        }
        match crate::services::notify::queue_due(self.store.as_ref(), self.queue.as_ref(), now, BATCH).await {
            Ok(n) => report.notifications = n,
            Err(e) => {
                tracing::error!(error = %e, "reading due notifications failed");
                report.errors += 1;
            }
        }
        let mut out_of_time = false;
        while !out_of_time && queues.iter().any(|(_, q)| !q.is_empty()) {
            for (status, queue) in &mut queues {
                for _ in 0..TURN {
                    if self.clock.now() >= stop_at {
                        out_of_time = true;
                        break;
                    }
                    let Some(stale) = queue.pop_front() else { break };
                    // Each item is handled at its own time: a long sweep's writes, windows
                    // and cool-downs are not dated from its start.
                    self.visit(*status, stale, self.clock.now(), &policy, &mut report).await;
                }
                if out_of_time {
                    break;
                }
            }
        }
        if out_of_time {
            report.deferred = queues.iter().map(|(_, q)| q.len() as u32).sum();
            tracing::warn!(deferred = report.deferred, "the sweep ran out of time; the rest waits for the next one");
        }
        tracing::info!(report = ?report, "sweep finished");
        report
    }

    async fn visit(
        &self,
        status: Status,
        stale: Action,
        now: DateTime<Utc>,
        policy: &Policy,
        report: &mut SweepReport,
    ) {
        // The index lags; act only on what a consistent read still shows as due.
        let action = match self.store.get_action(stale.action_id).await {
            Ok(Some(a)) if a.status == status => a,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(error = %e, action_id = %stale.action_id, "reading an action failed");
                report.errors += 1;
                return;
            }
        };
        let span = tracing::info_span!("sweep", action_id = %action.action_id, %status);
        let _guard = span.enter();
        if let Err(e) = self.handle(action, now, policy, report).await {
            match e {
                TransitionError::Conflict => report.raced += 1,
                TransitionError::Store(e) => {
                    tracing::error!(error = %e, "sweep write failed");
                    report.errors += 1;
                }
            }
        }
    }

    async fn handle(
        &self,
        action: Action,
        now: DateTime<Utc>,
        policy: &Policy,
        report: &mut SweepReport,
    ) -> Result<(), TransitionError> {
        match action.status {
            Status::AwaitingApproval
                if action.approval_expires_at.is_none_or(|t| t > now)
                    && action.next_escalation_at().is_some_and(|t| t <= now) =>
            {
                report.delivered += u32::from(self.escalate(&action, now).await?);
            }
            Status::AwaitingApproval
                if action.approval_mail_pending && action.approval_expires_at.is_none_or(|t| t > now) =>
            {
                report.delivered += u32::from(self.send_approval_link(&action, now, false).await?);
            }
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
                // No link is written: what every link shows follows from the action (and a
                // link already used for a vote is no longer pending, so closing it would fail).
                self.store.transition_many(&action, &after, &[event], None).await?;
                report.expired += 1;
                self.tell_requester_expired(&after).await;
            }
            Status::AwaitingApproval if action.approval_reminder_at().is_some_and(|t| t <= now) => {
                report.reminded += u32::from(self.send_approval_link(&action, now, true).await?);
            }
            Status::Executing if action.lease_expires_at.is_none_or(|t| t <= now) => {
                let (mut after, hop) = lease_recovery(&action, &self.registry, policy);
                after.compensation_due =
                    crate::domain::execution::compensation_due(&after, hop.0, policy.defaults.compensate_on_failure);
                let done = self.store.advance(&action, after, &[hop], ACTOR, now).await?;
                if done.compensation_due {
                    self.send(&done).await;
                }
                if done.status == Status::Queued {
                    self.send(&done).await;
                    report.recovered += 1;
                } else {
                    report.needs_human += 1;
                    // Automatic work that ended here failed as surely as in the executor.
                    if crate::services::executor::counts_as_automatic_failure(&done) {
                        self.record_automatic_failure(policy, now).await;
                    }
                }
            }
            Status::Pending if action.runnable_at().is_none_or(|t| t <= now) => {
                // The policy current now decides, not the one the action was created under.
                let kyc = self.kyc_for(&action, policy).await?;
                match policy.recheck(&action, action.decided_by.is_some(), kyc) {
                    Recheck::Run => {}
                    Recheck::Hold { reason } => {
                        report.held += 1;
                        return self.note_hold(&action, reason, None, now).await;
                    }
                    other => {
                        if let Some((mut after, hop)) = crate::placement::stopped_by_policy(&action, other, policy, now)
                        {
                            after.compensation_due = crate::domain::execution::compensation_due(
                                &after,
                                hop.0,
                                policy.defaults.compensate_on_failure,
                            );
                            let done = self.store.advance(&action, after, &[hop], ACTOR, now).await?;
                            if done.compensation_due {
                                self.send(&done).await;
                            }
                            report.stopped += 1;
                        }
                        return Ok(());
                    }
                }
                // Work held after it started (kill switch, breaker) took its units already.
                let (counters, cooldown) =
                    if action.auto_started { (Vec::new(), None) } else { auto_guards(policy, &action, now) };
                let mut after = action.clone();
                after.hold_reason = None;
                after.hold_until = None;
                after.auto_started = action.tier == Some(crate::domain::Tier::Auto);
                let hop = (Status::Queued, "its time came; queued by the sweep".to_owned(), None);
                let automatic = action.tier == Some(crate::domain::Tier::Auto);
                let (reason, until) = match self
                    .store
                    .advance_guarded(&action, after, &[hop], ACTOR, now, &counters, cooldown.as_ref(), automatic)
                    .await
                {
                    Ok(done) => {
                        self.send(&done).await;
                        report.started += 1;
                        return Ok(());
                    }
                    Err(GuardError::Conflict) => return Err(TransitionError::Conflict),
                    Err(GuardError::Store(e)) => return Err(TransitionError::Store(e)),
                    Err(GuardError::BreakerOpen) => {
                        crate::telemetry::breaker_open_metric(now);
                        let breaker = self.store.breaker(policy.auto_execution.breaker.window).await?;
                        (breaker_reason(&breaker), None)
                    }
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
            Status::RollingBack
                if action.lease_expires_at.is_none_or(|t| t <= now)
                    && action.rollback_progress_at.unwrap_or(action.updated_at) + ROLLBACK_GIVE_UP <= now =>
            {
                // No step undone for this long, resumes notwithstanding: it keeps failing (a
                // corrupt snapshot, a missing handler, never enough time): a human takes over.
                let mut after = action.clone();
                after.lease_expires_at = None;
                let message =
                    "the rollback made no progress for 30 minutes: a human must check which steps were undone"
                        .to_owned();
                after.error =
                    Some(serde_json::json!({"code": "rollback_stalled", "message": message, "needs_human": true}));
                self.store
                    .advance(
                        &action,
                        after,
                        &[(Status::RollbackFailed, message, Some(serde_json::json!({"needs_human": true})))],
                        ACTOR,
                        now,
                    )
                    .await?;
                report.needs_human += 1;
            }
            Status::RollingBack if action.lease_expires_at.is_none_or(|t| t <= now) => {
                // The rollback's worker stopped: the executor resumes it from its progress.
                self.send(&action).await;
                report.resumed += 1;
            }
            // A failed plan waiting for its compensation: hand it to an executor (again).
            Status::Failed if action.compensation_due && action.updated_at + ROLLBACK_GIVE_UP <= now => {
                // Handed over for 30 minutes and never started: a human takes over.
                let mut after = action.clone();
                after.compensation_due = false;
                after.version = action.version + 1;
                after.updated_at = now;
                let reason = "automatic compensation could not start for 30 minutes: roll it back through the API";
                let mut note = crate::domain::AuditEvent::note(&action, after.version, now, ACTOR, reason.into());
                note.detail = Some(serde_json::json!({"needs_human": true}));
                self.store.transition(&action, &after, &note).await?;
                report.needs_human += 1;
            }
            Status::Completed | Status::Failed if action.completion_mail_due() => {
                report.delivered += u32::from(self.send_completion_mail(&action, now).await?);
            }
            Status::Failed if action.compensation_due => {
                self.send(&action).await;
                report.resent += 1;
            }
            Status::Queued if action.runnable_at().is_some_and(|t| t > now) => {}
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

    /// Feeds the circuit breaker a final failure of automatic work; tells the admin if it opened.
    async fn record_automatic_failure(&self, policy: &Policy, now: DateTime<Utc>) {
        match crate::services::breaker::record_failure(&*self.store, &policy.auto_execution.breaker, ACTOR, now).await {
            Ok(Some(reason)) => {
                if let (Some(mail), Some(to)) = (&self.mail, crate::services::notices::alert_recipient(policy)) {
                    let alert = crate::services::notices::alert_mail(to, &reason, now);
                    if let Err(e) = mail.mailer.send_within(&alert, MAIL_TIMEOUT).await {
                        tracing::error!(error = %e, "the breaker alert could not be sent");
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "recording a failure on the circuit breaker failed"),
        }
    }

    /// The user's KYC state, when a step still to run needs it.
    async fn kyc_for(&self, action: &Action, policy: &Policy) -> Result<bool, TransitionError> {
        let needs = action
            .steps
            .iter()
            .skip(action.next_step())
            .filter_map(|s| s.kind.action_type())
            .any(|t| policy.rule(t).is_some_and(|r| r.requires_kyc));
        if !needs {
            return Ok(false);
        }
        Ok(self.store.kyc_verified(&action.user_id).await?)
    }

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
        let note = crate::domain::AuditEvent::note(action, after.version, now, ACTOR, reason);
        self.store.transition_many(action, &after, &[note], None).await
    }

    async fn send(&self, action: &Action) {
        let message = ExecuteMessage::step(action.action_id, action.next_step());
        if let Err(e) = self.queue.enqueue(&message, 0).await {
            tracing::error!(error = %e, "queueing from the sweep failed; the next sweep retries");
        }
    }
}
