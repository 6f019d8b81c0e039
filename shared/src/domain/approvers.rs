//! Who may decide an action, and how many must: approver groups, the pool of people asked,
//! and the votes that make a quorum.
//!
//! A policy names approvers as addresses or `group:<name>` (`[approver_groups]`). An action
//! waiting for approval has a *pool* (everyone asked, each with a link of their own), how many
//! distinct approvals it needs (`approvals_required`) and how many rejections reject it
//! (`rejections_required`, default 1: any rejection). Each person's decision is one vote; a
//! person is counted once, whatever the number of links or tabs, and the requester never counts.

use crate::domain::ids::is_same_mailbox;
use crate::domain::EmailAddress;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// At most this many people are asked to decide one action (each gets a mail and a link).
pub const MAX_POOL: usize = 20;
/// The largest quorum a policy may ask for.
pub const MAX_QUORUM: u32 = 10;
/// The most members one group may have.
pub const MAX_GROUP_MEMBERS: usize = MAX_POOL;

/// An approver as a policy or a request names one: an address, or a group of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ApproverRef {
    Address(EmailAddress),
    Group(String),
}

impl ApproverRef {
    pub fn parse(s: &str) -> Option<Self> {
        match s.strip_prefix("group:") {
            Some(name) => valid_group_name(name).then(|| ApproverRef::Group(name.to_owned())),
            None => EmailAddress::parse(s).map(ApproverRef::Address),
        }
    }
}

impl TryFrom<String> for ApproverRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ApproverRef::parse(&s).ok_or_else(|| format!("`{s}` is neither an email address nor group:<name>"))
    }
}

impl From<ApproverRef> for String {
    fn from(r: ApproverRef) -> String {
        match r {
            ApproverRef::Address(a) => a.as_str().to_owned(),
            ApproverRef::Group(g) => format!("group:{g}"),
        }
    }
}

impl From<EmailAddress> for ApproverRef {
    fn from(a: EmailAddress) -> Self {
        ApproverRef::Address(a)
    }
}

impl std::fmt::Display for ApproverRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from(self.clone()))
    }
}

/// A group's name: 1 to 64 of `a-z 0-9 _ . -` (lower case, so names never differ by case alone).
pub fn valid_group_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

/// `[approver_groups]`: each group's members.
pub type Groups = BTreeMap<String, Vec<EmailAddress>>;

/// Checks the groups themselves: names, sizes, no repeats.
pub fn check_groups(groups: &Groups) -> Result<(), String> {
    for (name, members) in groups {
        if !valid_group_name(name) {
            return Err(format!("approver_groups.{name}: a group's name is 1 to 64 of a-z 0-9 _ . -"));
        }
        if members.is_empty() || members.len() > MAX_GROUP_MEMBERS {
            return Err(format!("approver_groups.{name}: 1 to {MAX_GROUP_MEMBERS} members"));
        }
        for (i, m) in members.iter().enumerate() {
            if EmailAddress::parse(m.as_str()).is_none_or(|parsed| parsed != *m) {
                return Err(format!("approver_groups.{name}: `{m}` is not an email address"));
            }
            if members[..i].iter().any(|o| is_same_mailbox(o.as_str(), m.as_str())) {
                return Err(format!("approver_groups.{name}: {m} is listed twice"));
            }
        }
    }
    Ok(())
}

/// The people `refs` name, groups expanded, each once, in order; `Err` names an unknown group.
pub fn expand(refs: &[ApproverRef], groups: &Groups) -> Result<Vec<EmailAddress>, String> {
    let mut out: Vec<EmailAddress> = Vec::new();
    let push = |a: &EmailAddress, out: &mut Vec<EmailAddress>| {
        if !out.iter().any(|o| is_same_mailbox(o.as_str(), a.as_str())) {
            out.push(a.clone());
        }
    };
    for r in refs {
        match r {
            ApproverRef::Address(a) => push(a, &mut out),
            ApproverRef::Group(g) => {
                for m in groups.get(g).ok_or_else(|| format!("no group `{g}` in [approver_groups]"))? {
                    push(m, &mut out);
                }
            }
        }
    }
    Ok(out)
}

/// One level of escalation: when nobody decided `after` the request for approval, `to` are
/// asked too (links of their own; the earlier ones stay valid).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationLevel {
    pub after: crate::domain::IsoDuration,
    pub to: Vec<ApproverRef>,
}

/// The most levels an escalation chain may have.
pub const MAX_ESCALATION_LEVELS: usize = 3;

/// A policy's escalation for a type: its `escalation` chain, or the one level its
/// `escalate_after` / `escalate_to` say.
pub fn chain(
    levels: &[EscalationLevel],
    after: Option<crate::domain::IsoDuration>,
    to: &[ApproverRef],
) -> Vec<EscalationLevel> {
    if !levels.is_empty() {
        return levels.to_vec();
    }
    match after {
        Some(after) if !to.is_empty() => vec![EscalationLevel { after, to: to.to_vec() }],
        _ => Vec::new(),
    }
}

/// Checks a chain: at most [`MAX_ESCALATION_LEVELS`], each later than the one before and
/// before the approval expires, each naming someone (groups known).
pub fn check_chain(field: &str, levels: &[EscalationLevel], expiry_secs: u64, groups: &Groups) -> Result<(), String> {
    if levels.len() > MAX_ESCALATION_LEVELS {
        return Err(format!("{field}: at most {MAX_ESCALATION_LEVELS} levels"));
    }
    let mut last = 0;
    for (i, level) in levels.iter().enumerate() {
        let secs = level.after.as_secs();
        if secs == 0 || secs <= last || secs >= expiry_secs {
            return Err(format!(
                "{field}[{i}].after: each level comes later than the one before and before the approval expires ({expiry_secs} s)"
            ));
        }
        last = secs;
        if level.to.is_empty() {
            return Err(format!("{field}[{i}].to: name who is asked"));
        }
        let people = expand(&level.to, groups).map_err(|e| format!("{field}[{i}].to: {e}"))?;
        if people.len() > MAX_POOL {
            return Err(format!("{field}[{i}].to: at most {MAX_POOL} people"));
        }
    }
    Ok(())
}

/// A level of escalation as an action keeps it: when, and who is asked then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    pub at: DateTime<Utc>,
    pub to: Vec<EmailAddress>,
}

/// An approver's delegation: requests for approval made while it lasts go to `to` instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delegation {
    pub to: EmailAddress,
    pub until: DateTime<Utc>,
}

/// The key an approver's delegation and its audit stream live under (`user#approver:<address>`):
/// apart from any user whose id is that same address.
pub fn approver_key(address: &str) -> String {
    format!("approver:{}", address.to_ascii_lowercase())
}

/// The longest a delegation may last.
pub const MAX_DELEGATION_DAYS: i64 = 90;

/// The user id an approver's profile and audit stream are kept under (`approver_key`).
pub fn approver_user(address: &str) -> Option<crate::domain::UserId> {
    crate::domain::UserId::parse(&approver_key(address))
}

/// The audit's move and sentence for a delegation set (or ended, `None`).
pub fn delegation_event(delegation: Option<&Delegation>) -> (&'static str, String) {
    match delegation {
        Some(d) => (
            "delegation_set",
            format!("approval requests delegated to {} until {}", d.to, crate::domain::time::format_time(d.until)),
        ),
        None => ("delegation_ended", "delegation ended".to_owned()),
    }
}

/// A delegation an action was asked under: `from`'s request went to `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delegated {
    pub from: String,
    pub to: String,
    /// When the delegation ends: the delegate's decisions after it do not count.
    pub until: DateTime<Utc>,
}

/// One person's decision on an action waiting for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteKind {
    Approve,
    Reject,
}

impl VoteKind {
    /// What the person did, in words (`approved`, `rejected`).
    pub fn past_tense(self) -> &'static str {
        match self {
            VoteKind::Approve => "approved",
            VoteKind::Reject => "rejected",
        }
    }
}

/// How far the votes are: approvals so far and needed (both `approvals_required` once decided).
pub fn progress(votes: &[Vote], approvals_required: u32, rejections_required: u32) -> (u32, u32) {
    match tally(votes, approvals_required, rejections_required) {
        Outcome::Waiting { approvals, required } => (approvals, required),
        _ => (approvals_required, approvals_required),
    }
}

/// A vote: who, what, when, how it arrived (`link`, `api`, `console`) and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    pub approver: String,
    pub decision: VoteKind,
    pub at: DateTime<Utc>,
    pub via: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An administrator outside the pool voted (their vote counts as one person's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

impl Vote {
    pub fn to_api(&self) -> serde_json::Value {
        serde_json::json!({
            "approver": self.approver,
            "decision": self.decision.past_tense(),
            "at": crate::domain::time::format_time(self.at),
            "via": self.via,
            "reason": self.reason,
        })
    }
}

/// The rejections that reject an action of a pool of `pool` people needing `approvals`: at most
/// as many as leave every full set of votes decided (`pool - approvals + 1`), so a quorum never
/// waits with nobody left to vote.
pub fn reachable_rejections(rejections: u32, approvals: u32, pool: usize) -> u32 {
    let most = (pool as u32).saturating_sub(approvals).saturating_add(1).max(1);
    rejections.clamp(1, most)
}

/// Where the votes leave an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Enough distinct people approved.
    Approved,
    /// Enough distinct people rejected.
    Rejected,
    /// Still waiting: `approvals` of `required` so far.
    Waiting { approvals: u32, required: u32 },
}

/// Counts `votes` (distinct people; a person's first vote is theirs) against the quorum.
/// Rejection wins a tie, which a quorum cannot produce unless both thresholds are reached.
pub fn tally(votes: &[Vote], approvals_required: u32, rejections_required: u32) -> Outcome {
    let mut seen: Vec<&str> = Vec::new();
    let (mut approvals, mut rejections) = (0u32, 0u32);
    for v in votes {
        if seen.iter().any(|s| is_same_mailbox(s, &v.approver)) {
            continue;
        }
        seen.push(&v.approver);
        match v.decision {
            VoteKind::Approve => approvals += 1,
            VoteKind::Reject => rejections += 1,
        }
    }
    if rejections >= rejections_required.max(1) {
        Outcome::Rejected
    } else if approvals >= approvals_required.max(1) {
        Outcome::Approved
    } else {
        Outcome::Waiting { approvals, required: approvals_required.max(1) }
    }
}

/// `who`'s vote among `votes`, if they voted.
pub fn vote_of<'a>(votes: &'a [Vote], who: &str) -> Option<&'a Vote> {
    votes.iter().find(|v| is_same_mailbox(&v.approver, who))
}

/// One edit before approval (see the `edits` module), as the action keeps it: who, when, and
/// which fields changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    pub by: String,
    pub at: DateTime<Utc>,
    /// JSON Pointers of the changed fields (the first twenty).
    pub fields: Vec<String>,
    /// How many changes there were in all.
    pub changes: u32,
}

impl Edit {
    pub fn to_api(&self) -> serde_json::Value {
        serde_json::json!({"by": self.by, "at": crate::domain::time::format_time(self.at), "fields": self.fields, "changes": self.changes})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(who: &str, decision: VoteKind) -> Vote {
        Vote { approver: who.into(), decision, at: Utc::now(), via: "link".into(), reason: None, admin: false }
    }

    #[test]
    fn refs_parse_addresses_and_groups_and_round_trip() {
        assert_eq!(ApproverRef::parse("group:finance"), Some(ApproverRef::Group("finance".into())));
        assert!(matches!(ApproverRef::parse("a@example.com"), Some(ApproverRef::Address(_))));
        for bad in ["group:", "group:Finance", "group:a b", "nobody", "group:x/y"] {
            assert_eq!(ApproverRef::parse(bad), None, "{bad}");
        }
        let r: ApproverRef = serde_json::from_value(serde_json::json!("group:ops")).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), serde_json::json!("group:ops"));
    }

    #[test]
    fn groups_expand_once_each_and_unknown_groups_are_named() {
        let a = EmailAddress::parse("a@example.com").unwrap();
        let b = EmailAddress::parse("b@example.com").unwrap();
        let groups: Groups = [("fin".to_owned(), vec![a.clone(), b.clone()])].into();
        let refs =
            vec![ApproverRef::Address(EmailAddress::parse("B@Example.com").unwrap()), ApproverRef::Group("fin".into())];
        let got = expand(&refs, &groups).unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(expand(&[ApproverRef::Group("nope".into())], &groups).unwrap_err().contains("nope"));
        let twice: Groups = [("fin".to_owned(), vec![a.clone(), EmailAddress::parse("A@example.com").unwrap()])].into();
        assert!(check_groups(&twice).is_err());
        assert!(check_groups(&[("fin".to_owned(), vec![])].into()).is_err());
        assert!(check_groups(&groups).is_ok());
    }

    #[test]
    fn a_person_counts_once_and_any_rejection_rejects_by_default() {
        use VoteKind::*;
        let twice = [vote("a@x.com", Approve), vote("A@X.com", Approve)];
        assert_eq!(tally(&twice, 2, 1), Outcome::Waiting { approvals: 1, required: 2 });
        let two = [vote("a@x.com", Approve), vote("b@x.com", Approve)];
        assert_eq!(tally(&two, 2, 1), Outcome::Approved);
        let one_no = [vote("a@x.com", Approve), vote("b@x.com", Reject)];
        assert_eq!(tally(&one_no, 2, 1), Outcome::Rejected);
        assert_eq!(tally(&one_no, 2, 2), Outcome::Waiting { approvals: 1, required: 2 });
        // A later vote of someone who already voted changes nothing.
        let changed = [vote("a@x.com", Approve), vote("a@x.com", Reject)];
        assert_eq!(tally(&changed, 2, 1), Outcome::Waiting { approvals: 1, required: 2 });
        assert_eq!(tally(&[], 0, 0), Outcome::Waiting { approvals: 0, required: 1 });
    }
}
