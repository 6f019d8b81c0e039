//! Human approval: one-time links mailed to the approver, the confirmation pages behind them,
//! and decisions by link or by API.
//!
//! A link is bound to one approver and to the digest of the exact plan it was issued for. A GET
//! or HEAD only renders a page (mail scanners fetch every link); the decision is a POST from a
//! button a human clicks, written with one conditional transaction, so the first decision wins.

use crate::domain::digest::constant_time_eq;
use crate::domain::token;
use crate::domain::{Action, ActionId, EmailAddress, Status};
use chrono::{DateTime, Utc};
pub use token::{ApprovalToken, TokenHash};

/// Digest of what the action will do: its type, payload and every step. A link issued for one
/// plan is dead for any other.
pub fn plan_digest(action: &Action) -> String {
    action.plan_digest()
}

/// A fresh link for `approver`, and the record to store with the action.
pub fn issue_link(
    action: &Action,
    approver: &EmailAddress,
    expires_at: DateTime<Utc>,
) -> (ApprovalToken, ApprovalRecord) {
    let token = ApprovalToken::generate();
    let record = ApprovalRecord {
        token_hash: token.hash().as_str().to_owned(),
        action_id: action.action_id,
        approver: approver.as_str().to_owned(),
        plan_digest: plan_digest(action),
        expires_at,
        status: ApprovalStatus::Pending,
        decided_by: None,
        decided_at: None,
        round: action.approval_round,
    };
    (token, record)
}

pub fn link(public_base_url: &str, token: &ApprovalToken) -> String {
    format!("{}/approvals/{}", public_base_url.trim_end_matches('/'), token.as_str())
}

/// What a reason code means, in words, for people.
pub fn reason_text(code: &str) -> &'static str {
    match code {
        "type_requires_approval" => "this type of action always needs a human's approval",
        "requires_approval" => "the policy requires approval for this action",
        "risk_above_threshold" => "the risk score is above the threshold for acting automatically",
        "payload_above_threshold" => "a value in the payload is above the policy's threshold for it",
        "low_confidence" => "the agent's confidence is below the threshold for acting automatically",
        "confidence_missing" => "the agent gave no confidence score",
        "auto_execution_disabled" => "automatic execution is switched off",
        "needs_approval" => "it runs once a human approves it",
        "kyc_required" => "the user must be KYC-verified",
        "blocked" => "the policy blocks it",
        "manual_only" | "manual" => "it is carried out by a human",
        "auto_execute" => "it runs automatically",
        _ => "a policy rule applied",
    }
}

/// The dry-run preview: the exact payloads, pretty-printed and cut to a readable size.
pub fn preview_json(action: &Action) -> String {
    let kinds: Vec<_> = action.steps.iter().map(|s| &s.kind).collect();
    let mut text = serde_json::to_string_pretty(&kinds).unwrap_or_default();
    if text.len() > 4000 {
        let mut cut = 4000;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n… (truncated)");
    }
    text
}

/// A human's answer to a request for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approve" => Some(Decision::Approve),
            "reject" => Some(Decision::Reject),
            _ => None,
        }
    }
}

/// The lifecycle of one approval link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
    /// The action was decided, cancelled or re-requested some other way.
    Closed,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Rejected, Self::Expired, Self::Closed]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// An approval link: bound to one action, one approver and the digest of the exact plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRecord {
    pub token_hash: String,
    pub action_id: ActionId,
    pub approver: String,
    pub plan_digest: String,
    pub expires_at: DateTime<Utc>,
    pub status: ApprovalStatus,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// Which request for approval of the action it belongs to (`Action::approval_round`).
    pub round: u32,
}

/// Consumes an approval link together with a transition: only a link still pending may be used.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalUse<'a> {
    pub token_hash: &'a str,
    pub status: ApprovalStatus,
    pub by: &'a str,
    pub at: DateTime<Utc>,
}

/// How long an approval record outlives its expiry (so late clicks still get a clear page).
pub const APPROVAL_RECORD_DAYS: i64 = 30;

/// Where a link stands, from its record and its action.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkState {
    Open,
    Decided {
        status: Status,
        by: Option<String>,
        at: Option<DateTime<Utc>>,
    },
    Expired,
    /// Cancelled, changed since the link was issued, or replaced by another link.
    Closed(&'static str),
    /// Its approver already decided; the action still waits for others (a quorum).
    Voted {
        decision: crate::domain::approvers::VoteKind,
        at: DateTime<Utc>,
        approvals: u32,
        required: u32,
    },
}

/// `who`'s decision on `action`, if they already voted: what they did and how far the quorum is.
pub fn voted(action: &Action, who: &str) -> Option<LinkState> {
    let vote = crate::domain::approvers::vote_of(&action.votes, who)?;
    let (approvals, required) =
        crate::domain::approvers::progress(&action.votes, action.approvals_required, action.rejections_required);
    Some(LinkState::Voted { decision: vote.decision, at: vote.at, approvals, required })
}

/// Decides what a link may still do. Pure, so every case is unit-tested.
pub fn link_state(record: &ApprovalRecord, action: &Action, now: DateTime<Utc>) -> LinkState {
    let decided = |a: &Action| LinkState::Decided {
        status: a.status,
        by: a.decided_by.clone().or(record.decided_by.clone()),
        at: a.decided_at.or(record.decided_at),
    };
    match record.status {
        // A vote towards a quorum still waiting: the checks below say so.
        ApprovalStatus::Approved | ApprovalStatus::Rejected if action.status == Status::AwaitingApproval => {}
        // A vote of a quorum that then ran out of time.
        ApprovalStatus::Approved | ApprovalStatus::Rejected if action.status == Status::Expired => {
            return LinkState::Expired
        }
        ApprovalStatus::Approved | ApprovalStatus::Rejected => return decided(action),
        ApprovalStatus::Expired => return LinkState::Expired,
        ApprovalStatus::Closed if action.decided_by.is_some() => return decided(action),
        ApprovalStatus::Closed => {
            return LinkState::Closed("This link was replaced or closed and can no longer be used.")
        }
        ApprovalStatus::Pending => {}
    }
    match action.status {
        Status::AwaitingApproval => {}
        Status::Expired => return LinkState::Expired,
        Status::Cancelled => return LinkState::Closed("The requester cancelled this action."),
        _ if action.decided_by.is_some() => return decided(action),
        _ => return LinkState::Closed("This action is no longer waiting for approval."),
    }
    if !constant_time_eq(record.plan_digest.as_bytes(), plan_digest(action).as_bytes()) {
        return LinkState::Closed("The action changed after this link was sent, so the link no longer applies.");
    }
    // A reminder's link does not close the earlier one (which may be the only one delivered):
    // every link of the current request works until it is decided, expires or changes. A link
    // of an earlier request (before the policy asked again) or to another approver does not.
    // Records and actions from before rounds existed are both round 0: the expiry (whole
    // seconds, as stored) still tells their requests apart.
    let current_request = record.round == action.approval_round
        && action.approval_expires_at.map(|t| t.timestamp()) == Some(record.expires_at.timestamp())
        && action.in_pool(&record.approver);
    if !current_request {
        return LinkState::Closed("This link belongs to an earlier request for approval and can no longer be used.");
    }
    if let Some(voted) = voted(action, &record.approver) {
        return voted;
    }
    if now >= record.expires_at || action.approval_expires_at.is_some_and(|t| now >= t) {
        return LinkState::Expired;
    }
    LinkState::Open
}
