//! Where stored work goes when the policy current now no longer lets it run as it is (see
//! [`Policy::recheck`]): held, sent to approval, left to a human, blocked — or, for a plan
//! that already changed something, failed, so its done steps can be rolled back (and are, when
//! the policy compensates failures).

use crate::domain::action::{StepKind, StepState};
use crate::domain::policy::{Policy, Reason, Recheck};
use crate::domain::{Action, EmailAddress, Status, Tier};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// One audited move: the state reached, why, and details.
pub type Hop = (Status, String, Option<Value>);

/// The action as it is stored after the current policy stopped it before step
/// `action.next_step()`, and the move; `None` when it may run.
pub fn stopped_by_policy(
    action: &Action,
    recheck: Recheck,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<(Action, Hop)> {
    let index = action.next_step();
    let mut after = action.clone();
    after.hold_reason = None;
    after.hold_until = None;
    let changed_something =
        action.steps.iter().any(|s| s.state == StepState::Completed && matches!(s.kind, StepKind::Action { .. }));
    let (code, to, why, reasons) = match recheck {
        Recheck::Run => return None,
        Recheck::Hold { reason } => {
            after.hold_reason = Some(reason.clone());
            return Some((after, (Status::Pending, format!("held before step {index}; {reason}"), None)));
        }
        Recheck::NeedsApproval { decision } => {
            let after = request_approval(action, &decision, policy, now);
            let why =
                format!("the current policy needs approval before step {index}: {}", sentences(&decision.reasons));
            let detail = json!({"reasons": decision.reasons, "approver": after.approver, "approvers": after.pool(), "approvals_required": after.approvals_required});
            return Some((after, (Status::AwaitingApproval, why, Some(detail))));
        }
        Recheck::Blocked { reasons } => {
            ("blocked", Status::Blocked, format!("the current policy blocks step {index}"), reasons)
        }
        Recheck::Manual { reasons } => {
            after.tier = Some(Tier::Manual);
            ("manual_only", Status::Manual, format!("the current policy leaves step {index} to a human"), reasons)
        }
    };
    after.reasons = codes(&reasons);
    let detail = Some(json!({"reasons": reasons}));
    if changed_something {
        // Earlier steps took effect: fail it (rollback stays possible) instead of a state
        // that would strand them.
        after.error = Some(
            json!({"step": index, "code": "stopped_by_policy", "because": code, "message": format!("{why}: {}", sentences(&reasons)), "reasons": reasons}),
        );
        return Some((
            after,
            (Status::Failed, format!("{why} after earlier steps ran: {}", sentences(&reasons)), detail),
        ));
    }
    if to == Status::Blocked {
        after.error =
            Some(json!({"step": index, "code": code, "message": "the current policy blocks it", "reasons": reasons}));
    }
    Some((after, (to, format!("{why}: {}", sentences(&reasons)), detail)))
}

/// `action` moved to `awaiting_approval` because the policy current now asks for a human:
/// its approver (one the decision allows, never the requester), expiry and reasons. The mail
/// goes out from the sweep (`approval_mail_pending`), which issues the link.
pub fn request_approval(
    action: &Action,
    decision: &crate::domain::policy::Decision,
    policy: &crate::domain::policy::Policy,
    now: DateTime<Utc>,
) -> Action {
    let self_allowed = policy.allows_self_approval(action.steps.iter().filter_map(|s| s.kind.action_type()));
    let is_requester = |a: &EmailAddress| action.is_requester(a.as_str());
    // The requester stays the approver only where the type still allows it (they named
    // themselves); they are never picked.
    // The approver the request named (not a delegate who stood in for them last time).
    let named = match action.delegated.iter().find(|d| action.approver.as_ref().is_some_and(|a| a.matches(&d.to))) {
        Some(d) => EmailAddress::parse(&d.from),
        None => action.approver.clone(),
    };
    let keep = named.filter(|a| policy.approver_allowed(decision, a) && (self_allowed || !is_requester(a)));
    let candidates: Vec<EmailAddress> = match &decision.required_approvers {
        Some(list) => list.clone(),
        None => decision.approver.iter().cloned().collect(),
    };
    let mut after = action.clone();
    after.self_approval_allowed = self_allowed;
    after.tier = Some(crate::domain::Tier::Approval);
    // Everyone the policy lists is asked (the kept approver first), never the requester.
    let mut pool: Vec<EmailAddress> = keep.into_iter().collect();
    for c in candidates.into_iter().filter(|a| !is_requester(a)) {
        if !pool.iter().any(|p| crate::domain::ids::is_same_mailbox(p.as_str(), c.as_str())) {
            pool.push(c);
        }
    }
    pool.truncate(crate::domain::approvers::MAX_POOL);
    after.approvals_required = decision.approvals_required;
    after.rejections_required = decision.rejections_required;
    after.ask(pool);
    // A new request: earlier votes, and mail of the one before, do not count.
    after.votes.clear();
    after.approval_mailed.clear();
    after.delegated.clear();
    after.plan_escalation(&decision.escalation, now);
    after.completion_mail_to = completion_recipients(action, decision);
    after.reasons = decision.reason_codes();
    after.approval_expires_at = Some(now + decision.approval_expiry.to_chrono());
    after.approval_token_hash = None;
    // A new request: links of earlier ones no longer work.
    after.approval_round = action.approval_round.saturating_add(1);
    // A new request: earlier decisions and mail tries are of the one before.
    after.decided_by = None;
    after.decided_at = None;
    after.decision_reason = None;
    after.approval_mail_attempts = 0;
    // The halfway reminder is measured from `created_at`, long past for work that waited:
    // no reminder for a request the policy raised later (its expiry still holds).
    after.approval_reminded = true;
    after.approval_mail_pending = after.approver.is_some();
    after.hold_reason = None;
    after.hold_until = None;
    after
}

/// Who is told when approved work of `action` ends: the policy's `notify` list, and the
/// requester (their id or verified email, when it is an address) where a type asks for it.
pub fn completion_recipients(action: &Action, decision: &crate::domain::policy::Decision) -> Vec<String> {
    let mut told: Vec<String> = decision.notify.iter().map(|a| a.as_str().to_owned()).collect();
    if decision.completion_mail {
        let own = EmailAddress::parse(action.user_id.as_str())
            .or_else(|| action.requester_email.as_deref().and_then(EmailAddress::parse));
        if let Some(own) = own.filter(|o| !told.iter().any(|t| t.eq_ignore_ascii_case(o.as_str()))) {
            told.insert(0, own.as_str().to_owned());
        }
    }
    told
}

fn sentences(reasons: &[Reason]) -> String {
    reasons.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join("; ")
}

fn codes(reasons: &[Reason]) -> Vec<String> {
    let mut codes: Vec<String> = Vec::new();
    for r in reasons {
        if !codes.iter().any(|c| c == r.code) {
            codes.push(r.code.to_owned());
        }
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Action {
        let mut a = crate::domain::action::sample_action();
        a.status = Status::Queued;
        a.tier = Some(Tier::Auto);
        a.confidence = Some(0.9);
        let flag = |m: &str| StepKind::Action { action_type: "gmail.flag".into(), payload: json!({"message_id": m}) };
        a.steps =
            vec![crate::domain::action::Step::new(0, flag("m1")), crate::domain::action::Step::new(1, flag("m2"))];
        a
    }

    #[test]
    fn a_block_before_anything_ran_blocks_and_after_a_step_ran_fails_so_it_can_be_undone() {
        let mut p = Policy::default_policy();
        p.types.get_mut("gmail.flag").unwrap().blocked = true;
        let fresh = plan();
        let (after, (to, _, _)) =
            stopped_by_policy(&fresh, p.recheck(&fresh, false, false), &p, fresh.created_at).unwrap();
        assert_eq!(
            (to, after.error.unwrap()["code"].as_str().map(str::to_owned)),
            (Status::Blocked, Some("blocked".into()))
        );
        let mut half = plan();
        half.steps[0].state = StepState::Completed;
        let (after, (to, _, _)) =
            stopped_by_policy(&half, p.recheck(&half, false, false), &p, half.created_at).unwrap();
        assert_eq!(to, Status::Failed);
        assert_eq!(after.error.unwrap()["code"], "stopped_by_policy");
        assert!(to.can_move_to(Status::RollingBack));
    }

    #[test]
    fn work_the_policy_now_sends_to_approval_names_an_approver_who_is_not_the_requester() {
        let mut p = Policy::default_policy();
        p.types.get_mut("gmail.flag").unwrap().requires_approval = true;
        let mut a = plan();
        a.approver = None;
        a.user_id = crate::domain::UserId::parse("approvals@example.com").unwrap();
        let (after, (to, _, _)) = stopped_by_policy(&a, p.recheck(&a, false, false), &p, a.created_at).unwrap();
        assert_eq!(to, Status::AwaitingApproval);
        assert_eq!(after.approver, None, "the default approver is the requester: only another admin may decide");
        assert!(!after.approval_mail_pending);
        a.user_id = crate::domain::UserId::parse("alice").unwrap();
        let (after, _) = stopped_by_policy(&a, p.recheck(&a, false, false), &p, a.created_at).unwrap();
        assert_eq!(after.approver.as_ref().map(|e| e.as_str()), Some("approvals@example.com"));
        assert!(after.approval_mail_pending && after.approval_expires_at.is_some());
        // An approver the request named stays, if the policy still allows them.
        a.approver = crate::domain::EmailAddress::parse("boss@example.com");
        let (after, _) = stopped_by_policy(&a, p.recheck(&a, false, false), &p, a.created_at).unwrap();
        assert_eq!(after.approver.as_ref().map(|e| e.as_str()), Some("boss@example.com"));
    }
}
