//! The approval service: what a link shows, decisions by link and by API. Reading a link
//! never changes anything; a decision is one conditional write.

use crate::domain::approval::{
    link_state, ApprovalRecord, ApprovalStatus, ApprovalToken, ApprovalUse, Decision, LinkState,
};
use crate::domain::approvers::{tally, Outcome, Vote, VoteKind};
use crate::domain::caller::RequestMeta;
use crate::domain::{Action, ActionId, AuditEvent, Status};
use crate::ports::api::{ApiError, Call, LinkPage, Reply};
use crate::ports::clock::{format_time, Clock};
use crate::ports::handler::Registry;
use crate::ports::queue::{ExecuteMessage, WorkQueue};
use crate::ports::store::{Store, TransitionError};
use serde_json::json;
use std::sync::Arc;

const MAX_REASON_CHARS: usize = 1000;
/// The most of a reason kept with each vote (up to 19 votes share the action's item).
const MAX_VOTE_REASON_CHARS: usize = 300;
/// How many times one decision re-reads and retries after losing a race to another write
/// (each round at least one racing decision is recorded, and a pool has at most
/// [`crate::domain::approvers::MAX_POOL`] people).
const MAX_VOTE_RACES: usize = crate::domain::approvers::MAX_POOL + 5;

/// Why a decision was not recorded.
#[derive(Debug)]
enum Refused {
    /// The link or action no longer takes this decision (including: this person already voted).
    State(LinkState),
    /// It kept losing races to other writes.
    Busy,
    Store(String),
    /// The changed payload was not accepted (invalid, or the policy refuses it): nothing changed.
    Edit(ApiError),
}

/// How a decision arrived: through one emailed link (which it uses up), or the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via<'a> {
    /// `own`: the requester decides their own action (where the policy allows it).
    Link { token_hash: &'a str, own: bool },
    /// `admin`: an administrator decided who is not the designated approver.
    Api { admin: bool, own: bool },
}

pub struct ApprovalService {
    store: Arc<dyn Store>,
    queue: Arc<dyn WorkQueue>,
    /// Describes actions on the confirmation page: each handler's own preview.
    registry: Registry,
    clock: Arc<dyn Clock>,
    /// The policy in force, to describe the types it declares (their descriptions).
    policies: Option<Arc<crate::services::policy_source::PolicySource>>,
}

impl ApprovalService {
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn WorkQueue>, registry: Registry, clock: Arc<dyn Clock>) -> Self {
        Self { store, queue, registry, clock, policies: None }
    }

    /// This service, describing declared types as `policies` has them.
    pub fn with_policies(mut self, policies: Arc<crate::services::policy_source::PolicySource>) -> Self {
        self.policies = Some(policies);
        self
    }

    /// Whether the requester may decide `action` themselves now: it was allowed when approval was
    /// asked for, and the policy in force still allows it for every step (without a policy
    /// source to ask, never).
    async fn self_approval_stands(&self, action: &Action) -> bool {
        let Some(policies) = &self.policies else { return false };
        action.self_approval_allowed
            && policies.current().await.allows_self_approval(action.steps.iter().filter_map(|s| s.kind.action_type()))
    }

    /// Whether delegation `d` still stands: before its end, and still the approver's delegation
    /// to the same person (not ended or changed). When the store cannot say, its recorded end
    /// still bounds it.
    async fn delegation_stands(&self, d: &crate::domain::approvers::Delegated) -> bool {
        let now = self.clock.now();
        if now >= d.until {
            return false;
        }
        match self.store.delegation(&d.from).await {
            Ok(Some(current)) => current.to.matches(&d.to) && current.until > now,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "reading a delegation failed; its recorded end decides");
                true
            }
        }
    }

    /// Finds the record and action behind a link, or the page to show instead.
    async fn resolve(&self, raw_token: &str) -> Result<(ApprovalRecord, Action), LinkPage> {
        let not_found = || LinkPage::Message {
            status: 404,
            title: "Link not found",
            sentence: "This approval link is not valid. Check that you opened the whole link from the email.".into(),
        };
        let token = ApprovalToken::parse(raw_token).ok_or_else(not_found)?;
        let record = match self.store.get_approval(token.hash().as_str()).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(not_found()),
            Err(e) => return Err(unavailable(&e)),
        };
        tracing::Span::current().record("action_id", tracing::field::display(record.action_id));
        match self.store.get_action(record.action_id).await {
            Ok(Some(action)) => Ok((record, action)),
            Ok(None) => Err(not_found()),
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// What a link shows (GET and HEAD): a page, never a change of state.
    pub async fn show(&self, raw_token: &str) -> LinkPage {
        match self.resolve(raw_token).await {
            Err(page) => page,
            Ok((record, action)) => match link_state(&record, &action, self.clock.now()) {
                LinkState::Open => {
                    let policy = match &self.policies {
                        Some(p) => Some(p.current().await),
                        None => None,
                    };
                    let lines = self.registry.step_lines(&action.steps, policy.as_deref());
                    let not_editable = match &policy {
                        Some(p) => not_editable(&action, p),
                        None => Some("changes cannot be checked here".into()),
                    };
                    LinkPage::Confirm { record, action, lines, not_editable }
                }
                other => LinkPage::State(other),
            },
        }
    }

    /// A decision by link (the page's form, POST): recorded if the link is still open and not
    /// addressed to the requester.
    pub async fn decide_by_link(
        &self,
        raw_token: &str,
        decision: Decision,
        reason: Option<String>,
        payload: Option<serde_json::Value>,
        meta: &RequestMeta,
    ) -> LinkPage {
        let (record, action) = match self.resolve(raw_token).await {
            Ok(v) => v,
            Err(page) => return page,
        };
        let now = self.clock.now();
        match link_state(&record, &action, now) {
            LinkState::Open => {}
            LinkState::Expired => {
                self.expire_if_waiting(&action, &record.approver, meta).await;
                return LinkPage::State(LinkState::Expired);
            }
            other => return LinkPage::State(other),
        }
        let own = action.is_requester(&record.approver);
        if own && !self.self_approval_stands(&action).await {
            return LinkPage::Message {
                status: 403,
                title: "You cannot decide your own request",
                sentence:
                    "This action was requested by you, so someone else must approve or reject it. Nothing was changed."
                        .into(),
            };
        }
        if let Some(d) = action.delegated.iter().find(|d| d.to.eq_ignore_ascii_case(&record.approver)) {
            if !self.delegation_stands(d).await {
                return LinkPage::Message {
                    status: 403,
                    title: "This delegation has ended",
                    sentence: format!(
                        "You were asked as {}'s delegate, and that delegation has ended: {} decides it now. Nothing was changed.",
                        d.from, d.from
                    ),
                };
            }
        }
        let via = Via::Link { token_hash: &record.token_hash, own };
        let open = |a: &Action| match link_state(&record, a, now) {
            LinkState::Open => Ok(()),
            other => Err(other),
        };
        match self.vote(action, decision, &record.approver, reason, meta, via, open, payload.as_ref()).await {
            Ok(after) => LinkPage::Decided(after),
            Err(Refused::Edit(e)) => LinkPage::Message {
                // A payload too large is the form's fault like any other invalid one.
                status: if e.status_code() == 413 { 400 } else { e.status_code() },
                title: "Your changes were not accepted",
                sentence: format!(
                    "{} Nothing was decided; go back to change them, or decide the action as it is.",
                    sentence(&e)
                ),
            },
            Err(Refused::State(state)) => LinkPage::State(state),
            Err(Refused::Busy) => LinkPage::Message {
                status: 409,
                title: "Try again",
                sentence: "Many decisions arrived at once; yours was not recorded. Reload the page and decide again."
                    .into(),
            },
            Err(Refused::Store(e)) => unavailable(&e),
        }
    }

    /// A decision through the API (`POST /actions/{id}/approve|reject`): by the approver or an
    /// administrator, never by the requester.
    pub async fn decide(&self, call: &Call, id: &str, decision: Decision) -> Result<Reply, ApiError> {
        let identity = call.identity()?;
        let crate::ports::api::ApprovalBody { reason, payload, plan_digest } = call.approval_body(MAX_REASON_CHARS)?;
        if payload.is_some() && decision == Decision::Reject {
            return Err(ApiError::invalid("payload", "only an approval can change the payload; reject without one"));
        }
        let id = ActionId::parse(id).ok_or(ApiError::NotFound("action"))?;
        tracing::Span::current().record("action_id", tracing::field::display(id));
        let action =
            self.store.get_action(id).await.map_err(ApiError::internal)?.ok_or(ApiError::NotFound("action"))?;
        let mut member = action.pool().into_iter().find(|a| identity.is_approver(Some(a))).cloned();
        // A delegate decides only while the delegation stands; after it, the approver they stood
        // in for decides again (through the API).
        if let Some(m) = &member {
            if let Some(d) = action.delegated.iter().find(|d| m.matches(&d.to)) {
                if !self.delegation_stands(d).await {
                    return Err(ApiError::Denied {
                        code: "delegation_ended",
                        message: format!("the delegation from {} has ended; they decide it now", d.from),
                        extra: json!({"action_id": action.action_id}),
                    });
                }
            }
        } else if let Some(d) = action
            .delegated
            .iter()
            .find(|d| crate::domain::EmailAddress::parse(&d.from).is_some_and(|from| identity.is_approver(Some(&from))))
        {
            if !self.delegation_stands(d).await {
                member = crate::domain::EmailAddress::parse(&d.from);
            }
        }
        let is_approver = member.is_some();
        let own = identity.is_requester(&action);
        if own && !(is_approver && self.self_approval_stands(&action).await) {
            // Admin or not, by user id or by email: nobody decides their own action, unless the
            // policy in force says so for its type and they are its named approver.
            return Err(ApiError::Denied {
                code: "self_approval",
                message: "a requester cannot approve or reject their own action".into(),
                extra: json!({"action_id": action.action_id}),
            });
        }
        if !is_approver && !identity.admin {
            // The owner may see the action but not decide it; anyone else must not learn it exists.
            return Err(if action.user_id == identity.user {
                ApiError::Forbidden
            } else {
                ApiError::NotFound("action")
            });
        }
        let meta = &call.meta;
        // A member of the pool decides as that member (one person, however they arrive).
        let actor = match &member {
            Some(m) => m.as_str().to_owned(),
            None => identity.email.clone().unwrap_or_else(|| identity.user.to_string()),
        };
        if action.status != Status::AwaitingApproval {
            return Err(ApiError::InvalidState {
                status: action.status,
                message: "it is not waiting for approval".into(),
            });
        }
        // Once an approver changed the payload, a decision must say which version it is of: an
        // approval given after reading the old one never counts for the new.
        let current_digest = crate::domain::approval::plan_digest(&action);
        let digest_stale = plan_digest.as_deref().is_some_and(|d| d != current_digest);
        if digest_stale || (plan_digest.is_none() && !action.edits.is_empty()) {
            return Err(ApiError::Conflict {
                code: "payload_changed",
                message: if digest_stale {
                    "the action changed since you read it; read it again and decide its current payload".into()
                } else {
                    "an approver changed this action's payload; read it again and send its plan_digest with your decision".into()
                },
                extra: json!({"action_id": action.action_id, "plan_digest": current_digest, "payload": action.payload, "edits": action.edits.iter().map(crate::domain::approvers::Edit::to_api).collect::<Vec<_>>()}),
            });
        }
        if action.approval_expires_at.is_some_and(|t| self.clock.now() >= t) {
            let status = self.expire_if_waiting(&action, &actor, meta).await;
            return Err(ApiError::InvalidState { status, message: "its approval window has passed".into() });
        }
        if !is_approver && action.approvals_required > 1 && identity.email.is_none() {
            // A quorum counts people by address: a vote under a bare user id could be the
            // same person as a pool member's link.
            return Err(ApiError::Denied {
                code: "email_required",
                message: "a quorum counts people by their verified email address; sign in with one to decide".into(),
                extra: json!({"action_id": action.action_id}),
            });
        }
        let now = self.clock.now();
        let round = action.approval_round;
        let waiting = |a: &Action| {
            if a.status != Status::AwaitingApproval || a.approval_expires_at.is_some_and(|t| now >= t) {
                return Err(LinkState::Closed("it is no longer waiting for approval"));
            }
            // Asked again meanwhile (a new round, maybe other people): this decision was for the last.
            let stood_in_for = a.delegated.iter().any(|d| d.from.eq_ignore_ascii_case(&actor));
            if a.approval_round != round || (is_approver && !a.in_pool(&actor) && !stood_in_for) {
                return Err(LinkState::Closed("it was sent for approval again; decide the new request"));
            }
            Ok(())
        };
        let via = Via::Api { admin: !is_approver, own };
        match self.vote(action, decision, &actor, reason, meta, via, waiting, payload.as_ref()).await {
            Ok(after) => Ok(Reply::json(200, &after.to_api())),
            Err(Refused::Edit(e)) => Err(e),
            Err(Refused::State(LinkState::Voted { decision, at, approvals, required })) => Err(ApiError::Conflict {
                code: "already_decided",
                message: "you already decided this action; it waits for other approvers".into(),
                extra: json!({
                    "action_id": id,
                    "decision": decision.past_tense(),
                    "at": format_time(at),
                    "approvals": approvals,
                    "approvals_required": required,
                }),
            }),
            Err(Refused::State(_)) => {
                let status =
                    self.store.get_action(id).await.ok().flatten().map_or(Status::AwaitingApproval, |a| a.status);
                Err(ApiError::InvalidState { status, message: "it was decided by someone else first".into() })
            }
            Err(Refused::Busy) => Err(ApiError::Unavailable {
                code: "busy",
                message: "many decisions arrived at once; decide again".into(),
                retry_after_secs: Some(1),
            }),
            Err(Refused::Store(e)) => Err(ApiError::internal(anyhow::anyhow!(e))),
        }
    }

    /// Records `actor`'s decision on `action` as one vote: written with one conditional write; a
    /// write that lost a race re-reads the action and tries again, so two decisions racing both
    /// count (once per person). `still_open` says whether the fresh action may still be decided
    /// this way; someone who already voted gets [`LinkState::Voted`]. With `edit`, the approval
    /// is of that payload in place of the action's own (checked again on each try).
    #[allow(clippy::too_many_arguments)]
    async fn vote(
        &self,
        mut action: Action,
        decision: Decision,
        actor: &str,
        reason: Option<String>,
        meta: &RequestMeta,
        via: Via<'_>,
        still_open: impl Fn(&Action) -> Result<(), LinkState>,
        edit: Option<&serde_json::Value>,
    ) -> Result<Action, Refused> {
        for _ in 0..MAX_VOTE_RACES {
            still_open(&action).map_err(Refused::State)?;
            let changed = match edit {
                Some(payload) => self.edit(&action, payload, actor, meta, via).await.map_err(Refused::Edit)?,
                None => None,
            };
            // Only a real change is a new request someone who voted may approve again.
            if action.status == Status::AwaitingApproval && changed.is_none() {
                if let Some(voted) = crate::domain::approval::voted(&action, actor) {
                    return Err(Refused::State(voted));
                }
            }
            match self.apply_changed(&action, changed, decision, actor, reason.clone(), meta, via).await {
                Ok(after) => return Ok(after),
                Err(TransitionError::Conflict) => {}
                Err(TransitionError::Store(e)) => return Err(Refused::Store(e.to_string())),
            }
            // Lost a race (another decision, a reminder, the sweep): decide on what is there now.
            action = match self.store.get_action(action.action_id).await {
                Ok(Some(a)) => a,
                Ok(None) => return Err(Refused::State(LinkState::Closed("This action no longer exists."))),
                Err(e) => return Err(Refused::Store(e.to_string())),
            };
        }
        Err(Refused::Busy)
    }

    /// Records a decision: one transaction moves the action (approve: `→ approved → queued`),
    /// appends one audit event per move and consumes the link; then queues the work.
    pub async fn apply(
        &self,
        action: &Action,
        decision: Decision,
        actor: &str,
        reason: Option<String>,
        meta: &RequestMeta,
        via: Via<'_>,
    ) -> Result<Action, TransitionError> {
        self.apply_changed(action, None, decision, actor, reason, meta, via).await
    }

    /// [`ApprovalService::apply`] on `action` as `changed` left it (an edit: the edited action
    /// and its audit event), in the same transaction.
    #[allow(clippy::too_many_arguments)]
    async fn apply_changed(
        &self,
        action: &Action,
        changed: Option<(Action, AuditEvent)>,
        decision: Decision,
        actor: &str,
        reason: Option<String>,
        meta: &RequestMeta,
        via: Via<'_>,
    ) -> Result<Action, TransitionError> {
        let (used_link, via, by_admin, own) = match via {
            Via::Link { token_hash, own } => (Some(token_hash), "link", false, own),
            // The requester's own decision is never an administrator's, which would stand
            // whatever the policy says later.
            Via::Api { admin, own } => (None, "api", admin && !own, own),
        };
        let now = self.clock.now();
        let kind = match decision {
            Decision::Approve => VoteKind::Approve,
            Decision::Reject => VoteKind::Reject,
        };
        let edited = changed.is_some();
        let (mut after, mut events) = match changed {
            Some((after, event)) => (after, vec![event]),
            None => (action.clone(), Vec::new()),
        };
        // The version the vote builds on: after the edit's event, if any.
        let base = action.version + events.len() as u64;
        after.updated_at = now;
        after.votes.push(Vote {
            approver: actor.to_owned(),
            decision: kind,
            at: now,
            via: via.to_owned(),
            // Votes live in the action's one item: each reason is kept to a bounded length.
            reason: reason.clone().map(|r| r.chars().take(MAX_VOTE_REASON_CHARS).collect()),
            admin: by_admin,
        });
        let outcome = tally(&after.votes, after.approvals_required, after.rejections_required);
        if edited {
            // The others are asked again, with links for the new payload.
            after.approval_mail_pending = !after.undecided().is_empty();
        }
        if !matches!(outcome, Outcome::Waiting { .. }) {
            // Approval mail is over; its counter is the completion mail's from here on.
            after.approval_mail_pending = false;
            after.approval_mail_due = None;
            after.approval_mail_attempts = 0;
            after.decided_by = Some(actor.to_owned());
            after.decided_by_admin = by_admin;
            after.decided_at = Some(now);
            after.decision_reason = reason.clone();
        }
        let event = |seq: u64, from: Status, to: Status, why: String| AuditEvent {
            action_id: action.action_id,
            seq,
            at: now,
            actor: actor.to_owned(),
            from: Some(from),
            to,
            reason: why,
            detail: Some(json!({"via": via})),
            request_id: meta.request_id.clone(),
            source_ip: meta.source_ip.clone(),
            user_agent: meta.user_agent.clone(),
        };
        let said = reason.clone().map(|r| format!(": {r}")).unwrap_or_default();
        let link_status = match outcome {
            Outcome::Waiting { approvals, required } => {
                // One vote of a quorum: recorded, the action still waits for the others.
                let what = kind.past_tense();
                let mut counted = event(
                    base + 1,
                    Status::AwaitingApproval,
                    Status::AwaitingApproval,
                    format!("{what} by {actor} ({approvals} of {required} approvals){said}"),
                );
                counted.detail =
                    Some(json!({"via": via, "vote": what, "approvals": approvals, "approvals_required": required}));
                events.push(counted);
                after.version = base + 1;
                match decision {
                    Decision::Approve => ApprovalStatus::Approved,
                    Decision::Reject => ApprovalStatus::Rejected,
                }
            }
            Outcome::Approved => {
                let approved =
                    Status::AwaitingApproval.transition_to(Status::Approved).map_err(|_| TransitionError::Conflict)?;
                events.push(event(base + 1, Status::AwaitingApproval, approved, format!("approved{said}")));
                let queued = approved.transition_to(Status::Queued).map_err(|_| TransitionError::Conflict)?;
                let mut queued_event = event(base + 2, approved, queued, "queued for execution".into());
                queued_event.actor = "actiongate".into();
                events.push(queued_event);
                after.status = queued;
                after.version = base + 2;
                ApprovalStatus::Approved
            }
            Outcome::Rejected => {
                after.status =
                    Status::AwaitingApproval.transition_to(Status::Rejected).map_err(|_| TransitionError::Conflict)?;
                events.push(event(base + 1, Status::AwaitingApproval, Status::Rejected, format!("rejected{said}")));
                after.version = base + 1;
                ApprovalStatus::Rejected
            }
        };
        // The vote's own event follows the edit's, if any.
        let first_vote = usize::from(edited);
        if after.votes.len() > 1 && !matches!(outcome, Outcome::Waiting { .. }) {
            // The decision's event names everyone whose vote made it.
            if let Some(decided) = events.get_mut(first_vote) {
                let votes: Vec<_> = after.votes.iter().map(Vote::to_api).collect();
                decided.detail = Some(json!({"via": via, "approvals": votes}));
            }
        }
        // The requester's own decision (only where the policy allows it) is marked as such.
        if own {
            if let Some(Some(detail)) = events.get_mut(first_vote).map(|e| e.detail.as_mut()) {
                detail["self_approval"] = json!(true);
            }
        }
        // A decision by link uses up that link. Other links need no write: what they show
        // follows from the action (its votes, its state).
        let link_use = used_link.map(|hash| ApprovalUse { token_hash: hash, status: link_status, by: actor, at: now });
        self.store.transition_many(action, &after, &events, link_use).await?;
        tracing::info!(decision = ?decision, by = actor, via, "approval decided");
        if after.status == Status::Queued {
            // The executor holds it until `scheduled_for` whenever the message arrives.
            let delay = after.runnable_at().map_or(0, |t| (t - now).num_seconds().clamp(0, 900) as u32);
            let step = after.next_step();
            if let Err(e) = self.queue.enqueue(&ExecuteMessage::step(after.action_id, step), delay).await {
                // The action is `queued` in the store; the sweep re-sends work that no executor claimed.
                tracing::error!(error = %e, "queueing approved work failed; the sweep will re-send");
            }
        }
        Ok(after)
    }

    /// `action` with `payload` in place of its own, and the audit event that says what changed —
    /// or `None` when the payload is the same (a plain approval). The payload is validated as
    /// at intake and the policy in force places it again: blocked, KYC and manual work are
    /// refused, a threshold it crosses may raise the approvals needed. Nothing is written here.
    async fn edit(
        &self,
        action: &Action,
        payload: &serde_json::Value,
        actor: &str,
        meta: &RequestMeta,
        via: Via<'_>,
    ) -> Result<Option<(Action, AuditEvent)>, ApiError> {
        use crate::domain::edits;
        let policies = self.policies.as_ref().ok_or_else(|| ApiError::Unavailable {
            code: "edit_unavailable",
            message: "changes cannot be checked here now; approve or reject the action as it is".into(),
            retry_after_secs: None,
        })?;
        let policy = policies.current().await;
        if let Some(why) = not_editable(action, &policy) {
            return Err(ApiError::Conflict {
                code: "edit_unsupported",
                message: format!("{why}; approve or reject it as it is, or ask for a new proposal"),
                extra: json!({"action_id": action.action_id, "field": "payload"}),
            });
        }
        let Some(action_type) = edits::editable_type(action) else {
            return Err(ApiError::internal(anyhow::anyhow!("an editable action without a type")));
        };
        let custom = policy.custom_types().map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
        crate::domain::validation::check_replacement_payload(action_type, payload, &custom).map_err(|e| {
            if e.too_large {
                ApiError::PayloadTooLarge { message: format!("{} {}", e.field, e.message), field: Some(e.field) }
            } else {
                ApiError::InvalidRequest { message: format!("{} {}", e.field, e.message), field: Some(e.field) }
            }
        })?;
        if action_type == "gmail.forward" {
            if let Err((field, message)) =
                crate::domain::google_payloads::forward_domains_allowed(payload, policy.forward_domains())
            {
                return Err(ApiError::Denied {
                    code: "domain_not_allowed",
                    message: format!("{field}: {message}"),
                    extra: json!({"field": field, "allowed_domains": policy.forward_domains()}),
                });
            }
        }
        let current = action.steps.first().and_then(|s| s.kind.payload()).unwrap_or(&action.payload);
        if payload == current {
            return Ok(None);
        }
        let needs_kyc = policy.rule(action_type).is_some_and(|r| r.requires_kyc);
        let kyc_verified =
            if needs_kyc { self.store.kyc_verified(&action.user_id).await.map_err(ApiError::internal)? } else { false };
        let decision = policy.evaluate(&crate::domain::policy::Subject {
            action_types: vec![action_type],
            payloads: vec![payload],
            risk_score: action.risk_score,
            confidence: action.confidence,
            kyc_verified,
        });
        if let Some((code, message)) = edits::refusal(&decision) {
            return Err(ApiError::Denied {
                code,
                message,
                extra: json!({"action_id": action.action_id, "field": "payload", "reasons": decision.reason_codes(), "reason_details": decision.reasons}),
            });
        }
        let now = self.clock.now();
        let self_allowed = action.self_approval_allowed;
        let may_decide = |who: &crate::domain::EmailAddress| {
            (self_allowed || !action.is_requester(who.as_str()))
                && policy.may_decide(&decision, action, who, now, self_allowed)
        };
        // The editor's own approval must count under the decision on the new payload.
        let by_admin = matches!(via, Via::Api { admin: true, own: false });
        let editor_may = crate::domain::EmailAddress::parse(actor).is_some_and(|a| may_decide(&a));
        if !by_admin && !editor_may {
            return Err(ApiError::Denied {
                code: "edit_needs_other_approver",
                message: "the policy does not let you approve the edited payload; someone it allows must change it"
                    .into(),
                extra: json!({"action_id": action.action_id, "field": "payload", "reasons": decision.reason_codes()}),
            });
        }
        let (changes, total) = edits::diff(current, payload);
        let after = edits::edited(action, payload.clone(), &decision, may_decide, actor, &changes, total, now);
        // Enough people must be left to reach the quorum the edit needs (the editor counts).
        let editor_outside = !after.in_pool(actor);
        let can_count = after.pool().len() + usize::from(editor_outside);
        if !after.pool().is_empty() && can_count < after.approvals_required as usize {
            return Err(ApiError::Denied {
                code: "quorum_unreachable",
                message: format!(
                    "the edited payload needs {} distinct approvals but only {can_count} approver(s) can give them",
                    after.approvals_required
                ),
                extra: json!({"action_id": action.action_id, "field": "payload", "approvals_required": after.approvals_required}),
            });
        }
        let via_name = match via {
            Via::Link { .. } => "link",
            Via::Api { .. } => "api",
        };
        let fields: Vec<&str> = changes.iter().filter_map(|c| c.get("path").and_then(|p| p.as_str())).take(5).collect();
        let more = if total > fields.len() { format!(" and {} more", total - fields.len()) } else { String::new() };
        let event = AuditEvent {
            action_id: action.action_id,
            seq: action.version + 1,
            at: now,
            actor: actor.to_owned(),
            from: Some(Status::AwaitingApproval),
            to: Status::AwaitingApproval,
            reason: format!(
                "payload edited by {actor} before approving ({}{more}); asked again: {} approval(s) needed",
                fields.join(", "),
                after.approvals_required
            ),
            detail: Some(json!({
                "via": via_name,
                "edit": {
                    "changes": changes,
                    "total_changes": total,
                    "plan_digest_before": crate::domain::approval::plan_digest(action),
                    "plan_digest_after": crate::domain::approval::plan_digest(&after),
                },
                "reasons": decision.reasons,
                "approvers": after.pool(),
                "approvals_required": after.approvals_required,
            })),
            request_id: meta.request_id.clone(),
            source_ip: meta.source_ip.clone(),
            user_agent: meta.user_agent.clone(),
        };
        Ok(Some((after, event)))
    }

    /// Expiry holds at decision time even before the sweep runs: a late decision moves the
    /// action to `expired` instead. Returns the state the action is in afterwards.
    async fn expire_if_waiting(&self, action: &Action, actor: &str, meta: &RequestMeta) -> Status {
        if action.status != Status::AwaitingApproval {
            return action.status;
        }
        let now = self.clock.now();
        let mut after = action.clone();
        after.status = Status::Expired;
        after.version = action.version + 1;
        after.updated_at = now;
        let event = AuditEvent {
            action_id: action.action_id,
            seq: after.version,
            at: now,
            actor: "actiongate".into(),
            from: Some(Status::AwaitingApproval),
            to: Status::Expired,
            reason: format!(
                "approval window ended at {}; a late decision by {actor} was refused",
                action.approval_expires_at.map(format_time).unwrap_or_default()
            ),
            detail: None,
            request_id: meta.request_id.clone(),
            source_ip: meta.source_ip.clone(),
            user_agent: meta.user_agent.clone(),
        };
        // Links need no write: they show the expiry from the action itself.
        match self.store.transition_many(action, &after, &[event], None).await {
            Ok(()) => Status::Expired,
            Err(_) => self.store.get_action(action.action_id).await.ok().flatten().map_or(action.status, |a| a.status),
        }
    }
}

/// Why `action`'s payload cannot be changed before approval under `policy` (`None`: it can).
fn not_editable(action: &Action, policy: &crate::domain::policy::Policy) -> Option<String> {
    use crate::domain::connectors::Phase;
    let Some(action_type) = crate::domain::edits::editable_type(action) else {
        return Some("a plan of several steps cannot be edited".into());
    };
    if action.edits.len() >= crate::domain::edits::MAX_EDITS {
        return Some(format!("it was edited {} times already, the most allowed", crate::domain::edits::MAX_EDITS));
    }
    let consulted = policy
        .rule(action_type)
        .and_then(|r| r.connector.as_ref())
        .and_then(|c| policy.connectors.get(c))
        .is_some_and(|c| c.serves(Phase::Validate) || c.serves(Phase::Preview));
    consulted.then(|| format!("the {action_type} connector checks and describes its payloads when they are proposed"))
}

/// A refusal in one sentence for a page.
fn sentence(e: &ApiError) -> String {
    let mut text = e.to_string();
    if let Some(field) = e.body().get("field").and_then(|f| f.as_str()) {
        if !text.starts_with(field) {
            text = format!("{field}: {text}");
        }
    }
    if !text.ends_with('.') {
        text.push('.');
    }
    text
}

/// The page when the store cannot be reached: nothing was decided.
fn unavailable(e: &dyn std::fmt::Display) -> LinkPage {
    tracing::error!(error = %e, "approval lookup failed");
    LinkPage::Message {
        status: 503,
        title: "Try again shortly",
        sentence: "The approval service could not be reached. Nothing was decided; reload the page in a moment.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::action::StepKind;
    use crate::domain::approval::issue_link;
    use crate::domain::caller::Identity;
    use crate::domain::UserId;
    use chrono::{DateTime, Utc};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn waiting() -> (ApprovalRecord, Action) {
        let mut action = crate::domain::action::sample_action();
        let approver = action.approver.clone().unwrap();
        let (_, record) = issue_link(&action, &approver, now() + chrono::Duration::hours(1));
        action.approval_token_hash = Some(record.token_hash.clone());
        (record, action)
    }

    #[test]
    fn an_open_link_stays_open_until_expiry() {
        let (record, action) = waiting();
        assert_eq!(link_state(&record, &action, now()), LinkState::Open);
        assert_eq!(link_state(&record, &action, now() + chrono::Duration::minutes(59)), LinkState::Open);
        assert_eq!(link_state(&record, &action, now() + chrono::Duration::hours(1)), LinkState::Expired);
    }

    #[test]
    fn a_changed_plan_kills_the_link() {
        let (record, mut action) = waiting();
        action.steps[0].kind = StepKind::Action {
            action_type: "send_email".into(),
            payload: json!({"to": ["evil@example.com"], "subject": "s", "text": "t"}),
        };
        assert!(matches!(link_state(&record, &action, now()), LinkState::Closed(_)));
    }

    #[test]
    fn decided_cancelled_and_replaced_links_say_so() {
        let (mut record, mut action) = waiting();
        action.status = Status::Cancelled;
        assert!(matches!(link_state(&record, &action, now()), LinkState::Closed(_)));
        action.status = Status::Queued;
        action.decided_by = Some("boss@example.com".into());
        action.decided_at = Some(now());
        record.status = ApprovalStatus::Approved;
        assert!(matches!(link_state(&record, &action, now()), LinkState::Decided { status: Status::Queued, .. }));
        // A reminder's newer link does not close this one.
        let (record, mut action) = waiting();
        action.approval_token_hash = Some("another".into());
        assert_eq!(link_state(&record, &action, now()), LinkState::Open);
    }

    #[test]
    fn a_link_of_an_earlier_request_does_not_reopen_when_approval_is_asked_again() {
        let (record, mut action) = waiting();
        assert_eq!(link_state(&record, &action, now()), LinkState::Open);
        // The policy asked again later (even to the same approver, expiring the same second).
        action.approval_round += 1;
        assert!(matches!(link_state(&record, &action, now()), LinkState::Closed(_)));
        let (record, mut action) = waiting();
        action.approver = crate::domain::EmailAddress::parse("cfo@example.com");
        assert!(matches!(link_state(&record, &action, now()), LinkState::Closed(_)));
    }

    #[test]
    fn a_link_addressed_to_the_requester_never_decides() {
        let (_, mut action) = waiting();
        assert!(action.is_requester("ALICE"));
        action.requester_email = Some("alice@example.com".into());
        assert!(action.is_requester("Alice@Example.com"));
        assert!(!action.is_requester("boss@example.com"));
        let admin = Identity { user: UserId::parse("alice").unwrap(), email: None, admin: true };
        assert!(admin.is_requester(&action), "an admin is still the requester");
        let by_mail =
            Identity { user: UserId::parse("sso-123").unwrap(), email: Some("alice@example.com".into()), admin: true };
        assert!(by_mail.is_requester(&action), "the same person under another id, by email");
    }
}
