//! An action, its steps and its audit events.
//!
//! Every action has a plan: a single-type action is a plan of one step. The action's
//! `action_type` and `payload` are those of the request (`"plan"` and `null` for a plan).

use super::{ActionId, EmailAddress, IdempotencyKey, IsoDuration, Status, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// The action type reported for a multi-step plan.
pub const PLAN_ACTION_TYPE: &str = "plan";

/// Risk tier: 1 runs automatically, 2 runs once approved, 3 is done by a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Tier {
    Auto = 1,
    Approval = 2,
    Manual = 3,
}

impl Tier {
    pub fn number(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for Tier {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, Self::Error> {
        match n {
            1 => Ok(Tier::Auto),
            2 => Ok(Tier::Approval),
            3 => Ok(Tier::Manual),
            other => Err(format!("tier must be 1, 2 or 3, not {other}")),
        }
    }
}

impl From<Tier> for u8 {
    fn from(t: Tier) -> u8 {
        t.number()
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// Run a handler of `action_type` with `payload`.
    Action { action_type: String, payload: Value },
    /// Rest for a duration after the previous step.
    WaitFor { wait_for: IsoDuration },
    /// Rest until a point in time.
    WaitUntil { wait_until: DateTime<Utc> },
}

impl StepKind {
    pub fn action_type(&self) -> Option<&str> {
        match self {
            StepKind::Action { action_type, .. } => Some(action_type),
            _ => None,
        }
    }

    /// An action step's payload (`None` for a wait).
    pub fn payload(&self) -> Option<&Value> {
        match self {
            StepKind::Action { payload, .. } => Some(payload),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    NotStarted,
    Running,
    Waiting,
    Completed,
    Failed,
    RolledBack,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub index: usize,
    #[serde(flatten)]
    pub kind: StepKind,
    pub state: StepState,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// What the target looked like before the change (for rollback). Stored in an item of its
    /// own whose TTL is the rollback retention, never in the action's document.
    #[serde(skip)]
    pub snapshot: Option<Value>,
    /// When the snapshot was taken: once, before the first attempt, so a retry after a crash
    /// never records the changed target as the "before".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_at: Option<DateTime<Utc>>,
    /// When a wait step ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// How many rollbacks started undoing this step (an undo that keeps dying ends in
    /// `rollback_failed` instead of being tried forever).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub undo_attempts: u32,
    /// When a rollback started undoing this step (claimed by a conditional write, so two
    /// rollbacks never undo it both; a resumed rollback knows it may already be undone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The target the step's first attempt went to (`Handler::pin`, e.g. a connector's URL
    /// and key): a retry, a recovery or an undo never goes to another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// What the step will do in the words of its connector (`preview` phase, asked at intake);
    /// shown in approval mail and pages instead of the type's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    /// What the target looked like when approval was asked for (a Gmail message's labels),
    /// so the approver sees the change as before → after. Read once at intake; not the
    /// rollback's snapshot, which is taken just before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
}

impl Step {
    pub fn new(index: usize, kind: StepKind) -> Self {
        Self {
            index,
            kind,
            state: StepState::NotStarted,
            attempts: 0,
            result: None,
            error: None,
            snapshot: None,
            snapshot_at: None,
            wake_at: None,
            started_at: None,
            undo_started_at: None,
            undo_attempts: 0,
            finished_at: None,
            pin: None,
            preview: None,
            before: None,
        }
    }
}

/// The stored action. Serialized as the item's `doc` attribute and, minus internal fields, as
/// the API representation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub action_id: ActionId,
    pub user_id: UserId,
    pub action_type: String,
    pub payload: Value,
    pub steps: Vec<Step>,
    pub status: Status,
    /// `None` for an action blocked before it was tiered.
    pub tier: Option<Tier>,
    pub risk_score: Option<u8>,
    pub confidence: Option<f64>,
    #[serde(default)]
    pub priority: i32,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub rate_limit_key: Option<String>,
    pub approver: Option<EmailAddress>,
    /// The requester's verified email claim when it differs from `user_id`: a requester never
    /// decides their own action, by either name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_email: Option<String>,
    /// Machine-readable codes of every policy rule that fired.
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub max_attempts: u32,
    pub approval_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub idempotency_key: Option<IdempotencyKey>,
    /// Where decisions and end states are posted (`crate::domain::notify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// The policy lets the requester approve this action themselves (`allow_self_approval` on
    /// every step's type, when approval was asked for).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub self_approval_allowed: bool,
    /// SHA-256 of the outstanding approval link's token (never the token itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_token_hash: Option<String>,
    /// While approval is asked for: everyone asked to decide (each with a link of their own);
    /// `approver` is the first of them. Empty in actions from before pools: `approver` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<EmailAddress>,
    /// Distinct approvals it needs, and distinct rejections that reject it.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub approvals_required: u32,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub rejections_required: u32,
    /// The decisions of this request for approval so far, one per person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub votes: Vec<crate::domain::approvers::Vote>,
    /// Who else is asked if nobody decides in time, and when (from the policy when approval
    /// was asked for); `escalation_level` of them have happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalations: Vec<crate::domain::approvers::Escalation>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub escalation_level: u32,
    /// Payload edits approvers made before approving (at most `edits::MAX_EDITS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<crate::domain::approvers::Edit>,
    /// While approval mail is pending and untried: when the sweep sends it (set when an edit
    /// asks again, to go at once; otherwise the usual backoff applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_mail_due: Option<DateTime<Utc>>,
    /// Who is told by mail when this approved work completes or fails, and whether that mail
    /// went out (the sweep sends it, retrying a few times).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completion_mail_to: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub completion_mailed: bool,
    /// Pool members whose request went to their delegate instead (`PUT /approvers/{email}/delegation`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegated: Vec<crate::domain::approvers::Delegated>,
    /// The members of the pool whose approval mail of this request went out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approval_mailed: Vec<String>,
    /// Who approved or rejected, when, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_reason: Option<String>,
    /// Whether the approver was already reminded (once, halfway through the window).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval_reminded: bool,
    /// While `failed`: the sweep failed it for good after some step ran, and the policy
    /// compensates failures; an executor rolls the done steps back (the sweep re-sends until
    /// one has).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compensation_due: bool,
    /// Which request for approval is current: it grows each time the policy asks again, and
    /// a link only works for the request it was issued for.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub approval_round: u32,
    /// While `rolling_back`: when it last made progress (started, or undid a step). A rollback
    /// that makes none for a long while goes to a human instead of being resumed forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_progress_at: Option<DateTime<Utc>>,
    /// Whether the approval was an administrator's through the API (it stands under a later
    /// policy that names other approvers).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decided_by_admin: bool,
    /// Automatic execution's units (limits, cool-down) were taken for it: when held work of
    /// it starts again (kill switch, breaker), they are not taken a second time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_started: bool,
    /// While `pending`: why it waits (automatic-execution limits, cool-down, open breaker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_reason: Option<String>,
    /// While `pending`: not worth trying again before this (the full window resets then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<DateTime<Utc>>,
    /// Not to be started before this: a retry's backoff. Separate from `scheduled_for` (the
    /// request's), and both hold for every path that queues work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// Since when the next step waits for its integration's breaker to close (cleared when the
    /// step is claimed): past the integration's `max_wait` it fails instead of waiting on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration_wait_since: Option<DateTime<Utc>>,
    /// The version the last such wait wrote: a wait continues only if nothing else changed the
    /// action since (an approval, a hold, a policy stop start the count afresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration_wait_version: Option<u64>,
    /// While `awaiting_approval`: the newest approval mail has not been delivered yet (the
    /// sweep sends it again with a fresh link until it is).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval_mail_pending: bool,
    /// How many times the sweep tried to deliver the pending approval mail (it backs off and
    /// gives up after a few, auditing it: the action stays decidable through the API).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub approval_mail_attempts: u32,
    /// While `executing` (or `rolling_back`): until when the worker that claimed it may still be working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Optimistic-concurrency counter; every write checks and bumps it.
    pub version: u64,
}

impl Action {
    /// A new action of `user` (just `received`, version 1): `action_type` and `payload` as the
    /// request gave them, `steps` its plan. Every other field starts empty; callers set what
    /// the policy decided.
    pub fn new(
        user: UserId,
        action_type: impl Into<String>,
        payload: Value,
        steps: Vec<StepKind>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            action_id: ActionId::new_v7(now),
            user_id: user,
            action_type: action_type.into(),
            payload,
            steps: steps.into_iter().enumerate().map(|(i, k)| Step::new(i, k)).collect(),
            status: Status::Received,
            tier: None,
            risk_score: None,
            confidence: None,
            priority: 0,
            scheduled_for: None,
            rate_limit_key: None,
            approver: None,
            requester_email: None,
            reasons: Vec::new(),
            attempts: 0,
            max_attempts: 0,
            approval_expires_at: None,
            created_at: now,
            updated_at: now,
            result: None,
            error: None,
            idempotency_key: None,
            notify_url: None,
            self_approval_allowed: false,
            approval_token_hash: None,
            approvers: Vec::new(),
            approvals_required: 1,
            rejections_required: 1,
            votes: Vec::new(),
            approval_mailed: Vec::new(),
            escalations: Vec::new(),
            escalation_level: 0,
            delegated: Vec::new(),
            completion_mail_to: Vec::new(),
            completion_mailed: false,
            edits: Vec::new(),
            approval_mail_due: None,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
            approval_reminded: false,
            hold_reason: None,
            hold_until: None,
            not_before: None,
            integration_wait_since: None,
            integration_wait_version: None,
            approval_mail_pending: false,
            approval_mail_attempts: 0,
            auto_started: false,
            approval_round: 0,
            compensation_due: false,
            rollback_progress_at: None,
            decided_by_admin: false,
            lease_expires_at: None,
            version: 1,
        }
    }

    pub fn is_plan(&self) -> bool {
        self.action_type == PLAN_ACTION_TYPE
    }

    /// Everyone asked to decide: the pool, or the one approver of an action from before pools.
    pub fn pool(&self) -> Vec<&EmailAddress> {
        if self.approvers.is_empty() {
            self.approver.iter().collect()
        } else {
            self.approvers.iter().collect()
        }
    }

    /// Asks `pool` to decide (its first is `approver`), with the rejections needed lowered to
    /// what that many people can give (`approvals_required` and `rejections_required` set first).
    pub fn ask(&mut self, pool: Vec<EmailAddress>) {
        self.approver = pool.first().cloned();
        self.rejections_required = crate::domain::approvers::reachable_rejections(
            self.rejections_required,
            self.approvals_required,
            pool.len(),
        );
        self.approvers = pool;
    }

    /// Digest of what the action will do: its type, payload and every step. An approval link
    /// issued for one plan is dead for any other; an API decision on an edited action names it.
    pub fn plan_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let kinds: Vec<_> = self.steps.iter().map(|s| &s.kind).collect();
        let canonical =
            serde_json::json!({"action_type": self.action_type, "payload": self.payload, "steps": kinds}).to_string();
        crate::domain::token::hex(&Sha256::digest(canonical.as_bytes()))
    }

    /// Whether `who` is one of the people asked to decide.
    pub fn in_pool(&self, who: &str) -> bool {
        self.pool().iter().any(|a| crate::domain::ids::is_same_mailbox(a.as_str(), who))
    }

    /// The members of the pool who have not decided yet (those still waiting to be asked or
    /// reminded; the inbox lists it for them).
    pub fn undecided(&self) -> Vec<&EmailAddress> {
        self.pool()
            .into_iter()
            .filter(|a| crate::domain::approvers::vote_of(&self.votes, a.as_str()).is_none())
            .collect()
    }

    /// Whether `who` is the requester (by user id or verified email).
    pub fn is_requester(&self, who: &str) -> bool {
        crate::domain::ids::is_same_mailbox(who, self.user_id.as_str())
            || self.requester_email.as_deref().is_some_and(|e| crate::domain::ids::is_same_mailbox(who, e))
    }

    /// Whether approved work that ended (completed or failed) still owes its completion mail.
    pub fn completion_mail_due(&self) -> bool {
        matches!(self.status, Status::Completed | Status::Failed)
            && self.decided_by.is_some()
            && !self.completion_mail_to.is_empty()
            && !self.completion_mailed
            && !self.compensation_due
    }

    /// When the next level of escalation is due, if one is left.
    pub fn next_escalation_at(&self) -> Option<DateTime<Utc>> {
        self.escalations.get(self.escalation_level as usize).map(|e| e.at)
    }

    /// Sets the escalation of a request for approval made `now` (`decision.escalation`).
    pub fn plan_escalation(&mut self, levels: &[(chrono::Duration, Vec<EmailAddress>)], now: DateTime<Utc>) {
        self.escalations = levels
            .iter()
            .map(|(after, to)| crate::domain::approvers::Escalation { at: now + *after, to: to.clone() })
            .collect();
        self.escalation_level = 0;
    }

    /// When the approver gets a reminder: halfway between the request and its expiry.
    pub fn approval_reminder_at(&self) -> Option<DateTime<Utc>> {
        let expires = self.approval_expires_at?;
        (!self.approval_reminded && self.approval_token_hash.is_some())
            .then(|| self.created_at + (expires - self.created_at) / 2)
    }

    /// The earliest time the next step may run: the request's `scheduled_for` and any retry
    /// backoff, whichever is later.
    pub fn runnable_at(&self) -> Option<DateTime<Utc>> {
        match (self.scheduled_for, self.not_before) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether some action step of it took effect (a wait does not count).
    pub fn ran_a_step(&self) -> bool {
        self.steps.iter().any(|s| s.state == StepState::Completed && matches!(s.kind, StepKind::Action { .. }))
    }

    /// The first step not yet completed (`steps.len()` when all are).
    pub fn next_step(&self) -> usize {
        self.steps.iter().position(|s| s.state != StepState::Completed).unwrap_or(self.steps.len())
    }

    /// The API representation (`GET /actions/{id}`).
    pub fn to_api(&self) -> Value {
        serde_json::json!({
            "action_id": self.action_id,
            "user_id": self.user_id,
            "action_type": self.action_type,
            "payload": self.payload,
            "status": self.status,
            "tier": self.tier,
            "risk_score": self.risk_score,
            "confidence": self.confidence,
            "priority": self.priority,
            "scheduled_for": self.scheduled_for.map(crate::domain::time::format_time),
            "rate_limit_key": self.rate_limit_key,
            "approver": self.approver,
            "approvers": self.pool(),
            "approvals": self.votes.iter().map(crate::domain::approvers::Vote::to_api).collect::<Vec<_>>(),
            "approvals_required": self.approvals_required,
            "rejections_required": self.rejections_required,
            "edits": self.edits.iter().map(crate::domain::approvers::Edit::to_api).collect::<Vec<_>>(),
            "plan_digest": self.plan_digest(),
            "reasons": self.reasons,
            "steps": self.steps.iter().map(Step::to_api).collect::<Vec<_>>(),
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "approval_expires_at": self.approval_expires_at.map(crate::domain::time::format_time),
            "requires_approval": self.tier == Some(Tier::Approval),
            "created_at": crate::domain::time::format_time(self.created_at),
            "updated_at": crate::domain::time::format_time(self.updated_at),
            "result": self.result.as_ref().map(without_rollback_data),
            "error": self.error,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at.map(crate::domain::time::format_time),
            "decision_reason": self.decision_reason,
            "lease_expires_at": self.lease_expires_at.map(crate::domain::time::format_time),
            "hold_reason": self.hold_reason,
            "notify_url": self.notify_url,
        })
    }
}

/// A step result as the API shows it: a connector's rollback data (in results recorded before
/// it was kept with the snapshot) is never shown, at any depth of a plan's or an undo's result.
fn without_rollback_data(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "rollback_data")
                .map(|(k, v)| (k.clone(), without_rollback_data(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_rollback_data).collect()),
        other => other.clone(),
    }
}

impl Step {
    /// The step as the API shows it.
    pub fn to_api(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(result) = self.result.as_ref() {
            v["result"] = without_rollback_data(result);
        }
        // What the target looked like is for the approvers' eyes (mail and page): the agent
        // that proposed the change does not read a mailbox through it.
        if let Some(map) = v.as_object_mut() {
            map.remove("before");
        }
        v
    }
}

/// Who did something: the authenticated caller, an approver, or the system itself.
pub type Actor = String;

/// One immutable line of an action's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub action_id: ActionId,
    /// Position in the trail; equal to the action version the transition produced.
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub from: Option<Status>,
    pub to: Status,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl AuditEvent {
    /// A note on an action that stays where it is (`from` = `to` = `status`): why it still
    /// waits, a mail sent, a hand-over to a human.
    pub fn note(action: &Action, seq: u64, at: DateTime<Utc>, actor: &str, reason: String) -> Self {
        Self {
            action_id: action.action_id,
            seq,
            at,
            actor: actor.to_owned(),
            from: Some(action.status),
            to: action.status,
            reason,
            detail: None,
            request_id: None,
            source_ip: None,
            user_agent: None,
        }
    }

    pub fn to_api(&self) -> Value {
        let mut v = serde_json::json!({
            "seq": self.seq,
            "at": crate::domain::time::format_time(self.at),
            "actor": self.actor,
            "from": self.from,
            "to": self.to,
            "reason": self.reason,
        });
        if let Some(map) = v.as_object_mut() {
            for (key, value) in [
                ("detail", self.detail.clone()),
                ("request_id", self.request_id.clone().map(Value::String)),
                ("source_ip", self.source_ip.clone().map(Value::String)),
                ("user_agent", self.user_agent.clone().map(Value::String)),
            ] {
                if let Some(value) = value {
                    map.insert(key.to_owned(), value);
                }
            }
        }
        v
    }
}

/// One audit event per hop of `path`, checked against the state machine.
pub fn path_events(
    before: &Action,
    path: &[(Status, String, Option<serde_json::Value>)],
    actor: &str,
    at: DateTime<Utc>,
) -> Option<Vec<AuditEvent>> {
    let mut events = Vec::with_capacity(path.len());
    let mut from = before.status;
    for (i, (to, reason, detail)) in path.iter().enumerate() {
        from.transition_to(*to).ok()?;
        events.push(AuditEvent {
            action_id: before.action_id,
            seq: before.version + 1 + i as u64,
            at,
            actor: actor.to_owned(),
            from: Some(from),
            to: *to,
            reason: reason.clone(),
            detail: detail.clone(),
            request_id: None,
            source_ip: None,
            user_agent: None,
        });
        from = *to;
    }
    Some(events)
}

/// `after` as a store writes it when `before` moves along `path` (one audit event per hop, by
/// `actor`, at `at`): in the path's last state, its version moved on by one per hop. `None`
/// when a hop is not a legal move.
pub fn advanced(
    before: &Action,
    mut after: Action,
    path: &[(Status, String, Option<serde_json::Value>)],
    actor: &str,
    at: DateTime<Utc>,
) -> Option<(Action, Vec<AuditEvent>)> {
    let events = path_events(before, path, actor, at)?;
    after.status = events.last().map_or(before.status, |e| e.to);
    after.version = before.version + path.len() as u64;
    after.updated_at = at;
    Some((after, events))
}

/// A tier-2 `send_email` action of `alice`, waiting for `boss@example.com` (unit tests).
#[cfg(test)]
pub fn sample_action() -> Action {
    use serde_json::json;
    let now = sample_now();

    let payload = json!({"to": ["b@example.com"], "subject": "s", "text": "t"});
    let step = StepKind::Action { action_type: "send_email".into(), payload: payload.clone() };
    let mut action = Action::new(UserId::parse("alice").unwrap(), "send_email", payload, vec![step], now);
    action.status = Status::AwaitingApproval;
    action.tier = Some(Tier::Approval);
    action.risk_score = Some(10);
    action.approver = crate::domain::EmailAddress::parse("boss@example.com");
    action.reasons = vec!["type_requires_approval".into(), "needs_approval".into()];
    action.max_attempts = 3;
    action.approval_expires_at = Some(now + chrono::Duration::hours(1));
    action.version = 2;
    action
}

/// The sample as tier-1 work in `status`, its step tried `attempts` times (of 3).
#[cfg(test)]
pub fn sample_automatic(status: Status, attempts: u32) -> Action {
    let mut a = sample_action();
    a.tier = Some(Tier::Auto);
    a.status = status;
    a.max_attempts = 3;
    a.steps[0].attempts = attempts;
    a
}

#[cfg(test)]
pub fn sample_now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_serializes_as_number() {
        assert_eq!(serde_json::to_string(&Tier::Approval).unwrap(), "2");
        assert_eq!(serde_json::from_str::<Tier>("3").unwrap(), Tier::Manual);
        assert!(serde_json::from_str::<Tier>("4").is_err());
    }

    #[test]
    fn steps_serialize_flat_with_kind() {
        let step = Step::new(0, StepKind::WaitFor { wait_for: IsoDuration::from_secs(7200) });
        let v = serde_json::to_value(&step).unwrap();
        assert_eq!(v["kind"], "wait_for");
        assert_eq!(v["wait_for"], "PT2H");
        assert_eq!(v["state"], "not_started");
        let back: Step = serde_json::from_value(v).unwrap();
        assert_eq!(back, step);
    }
}
