//! Edit before approve: an approver approves a changed payload. The change is a new request for
//! approval — validated and placed by the policy again, a new plan digest (every other open
//! link dies), earlier votes void — and the audit trail records what changed.

use crate::domain::action::StepKind;
use crate::domain::policy::Decision;
use crate::domain::{Action, EmailAddress, Tier};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

pub use crate::domain::approvers::Edit;

/// The most edits one action takes (each is kept on the action).
pub const MAX_EDITS: usize = 10;
/// The most changes one audit event lists (the count says how many there were).
const MAX_LISTED_CHANGES: usize = 25;
/// The most changed fields the action itself names per edit.
pub const MAX_NAMED_FIELDS: usize = 20;
/// A changed value longer than this (as JSON) is summarized by its size.
const MAX_SHOWN_VALUE_BYTES: usize = 512;
/// The longest field path kept.
const MAX_PATH_CHARS: usize = 200;

/// What changed from `before` to `after`: RFC 6902 operations (each with the value it
/// replaced or removed, as `from`), the first [`MAX_LISTED_CHANGES`] of them, and how many
/// there were. Large values are summarized, so the record stays small whatever the payload.
pub fn diff(before: &Value, after: &Value) -> (Vec<Value>, usize) {
    if !diffable(before) || !diffable(after) {
        // Too many values or too long keys to list change by change within bounds (each change
        // carries its whole path): one change, the whole payload.
        let whole =
            serde_json::json!({"op": "replace", "path": "", "from": summarized(before), "value": summarized(after)});
        return (vec![whole], 1);
    }
    let patch = json_patch::diff(before, after);
    let total = patch.0.len();
    let mut doc = before.clone();
    let mut listed = Vec::new();
    for op in patch.0.iter().take(MAX_LISTED_CHANGES) {
        let Ok(mut shown) = serde_json::to_value(op) else { continue };
        let path = shown.get("path").and_then(Value::as_str).unwrap_or_default().to_owned();
        if let Some(from) = doc.pointer(&path) {
            if !matches!(shown.get("op").and_then(Value::as_str), Some("add")) {
                shown["from"] = summarized(from);
            }
        }
        if let Some(value) = shown.get("value").cloned() {
            shown["value"] = summarized(&value);
        }
        shown["path"] = json!(bounded_path(&path));
        listed.push(shown);
        // Later operations' paths refer to the document as the earlier ones left it.
        if json_patch::patch(&mut doc, std::slice::from_ref(op)).is_err() {
            break;
        }
    }
    (listed, total)
}

/// The most values (of any nesting) a payload may have for a change-by-change diff.
const MAX_DIFF_NODES: usize = 2000;
/// The longest object key a change-by-change diff takes.
const MAX_DIFF_KEY_CHARS: usize = 256;

/// Whether `value` is small enough that its diff's paths and operations stay bounded.
fn diffable(value: &Value) -> bool {
    let mut stack = vec![value];
    let mut nodes = 0usize;
    while let Some(v) = stack.pop() {
        nodes += 1;
        if nodes > MAX_DIFF_NODES {
            return false;
        }
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                if map.keys().any(|k| k.chars().count() > MAX_DIFF_KEY_CHARS) {
                    return false;
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    true
}

fn bounded_path(path: &str) -> String {
    if path.chars().count() <= MAX_PATH_CHARS {
        return path.to_owned();
    }
    path.chars().take(MAX_PATH_CHARS - 1).collect::<String>() + "…"
}

fn summarized(value: &Value) -> Value {
    let bytes = serde_json::to_vec(value).map(|b| b.len()).unwrap_or(usize::MAX);
    if bytes <= MAX_SHOWN_VALUE_BYTES {
        value.clone()
    } else {
        json!({"omitted_bytes": bytes})
    }
}

/// The one action step an edit may change: an action of a single step (a plan is proposed
/// again instead). Its type.
pub fn editable_type(action: &Action) -> Option<&str> {
    match action.steps.as_slice() {
        [only] => only.kind.action_type(),
        _ => None,
    }
}

/// `action` with `payload` in place of its own, asked for approval again as the policy now
/// decides it (`decision`, evaluated on the new payload): the same expiry and escalations;
/// everyone asked before who `may_decide` under it is asked again (with new links: the plan
/// digest changed) together with anyone the decision adds, never the requester; votes so far
/// void. The editor's own approval
/// is recorded by the caller, in the same write.
#[allow(clippy::too_many_arguments)]
pub fn edited(
    action: &Action,
    payload: Value,
    decision: &Decision,
    may_decide: impl Fn(&EmailAddress) -> bool,
    by: &str,
    changes: &[Value],
    total: usize,
    now: DateTime<Utc>,
) -> Action {
    let mut after = action.clone();
    if let Some(step) = after.steps.first_mut() {
        if let StepKind::Action { payload: p, .. } = &mut step.kind {
            *p = payload.clone();
        }
        // A connector's sentence, and what the target looked like, were of the old payload.
        step.preview = None;
        step.before = None;
    }
    after.payload = payload;
    after.tier = Some(Tier::Approval);
    // The policy's reasons for the new payload, and the action's own markers (a forcing past a
    // rejection, a breaker's demotion) that are not the policy's to drop.
    let mut reasons = decision.reason_codes();
    for marker in action
        .reasons
        .iter()
        .filter(|r| r.starts_with("forced_past_rejection:") || *r == "breaker_open_requires_approval")
    {
        if !reasons.contains(marker) {
            reasons.push(marker.clone());
        }
    }
    after.reasons = reasons;
    after.approvals_required = decision.approvals_required;
    after.rejections_required = decision.rejections_required;
    // Everyone asked before whom the new decision still lets decide (`may_decide`), then anyone
    // it adds — but not someone whose delegate already stands in for them (one person's say
    // never counts twice).
    let mut pool: Vec<EmailAddress> = action.pool().into_iter().filter(|m| may_decide(m)).cloned().collect();
    let candidates: Vec<EmailAddress> = match &decision.required_approvers {
        Some(list) => list.clone(),
        None => decision.approver.iter().cloned().collect(),
    };
    let stood_in_for =
        |c: &EmailAddress| action.delegated.iter().any(|d| d.from.eq_ignore_ascii_case(c.as_str()) && d.until > now);
    for c in candidates.into_iter().filter(|c| !action.is_requester(c.as_str()) && !stood_in_for(c)) {
        if !pool.iter().any(|p| crate::domain::ids::is_same_mailbox(p.as_str(), c.as_str())) {
            pool.push(c);
        }
    }
    pool.truncate(crate::domain::approvers::MAX_POOL);
    after.ask(pool);
    // A new request: the votes, links and mail of the old payload do not count.
    after.votes.clear();
    after.approval_round = action.approval_round.saturating_add(1);
    after.approval_token_hash = None;
    after.approval_mailed.clear();
    after.approval_mail_attempts = 0;
    after.approval_mail_due = Some(now);
    // As for any request asked later: no halfway reminder (its expiry still holds).
    after.approval_reminded = true;
    after.completion_mail_to = crate::domain::placement::completion_recipients(action, decision);
    let fields = changes
        .iter()
        .filter_map(|c| c.get("path").and_then(Value::as_str))
        .take(MAX_NAMED_FIELDS)
        .map(str::to_owned)
        .collect();
    after.edits.push(Edit { by: by.to_owned(), at: now, fields, changes: total.min(u32::MAX as usize) as u32 });
    after.updated_at = now;
    after
}

/// Whether the decision on an edited payload lets it go on to approval: it may need approval
/// (or less); blocked, KYC and manual work are refused, with the reasons' codes.
pub fn refusal(decision: &Decision) -> Option<(&'static str, String)> {
    use crate::domain::policy::Verdict;
    let said = || decision.reasons.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join("; ");
    match decision.verdict {
        Verdict::Blocked => Some(("edit_blocked", format!("the policy blocks the edited payload: {}", said()))),
        Verdict::KycRequired => {
            Some(("edit_blocked", format!("the edited payload needs a KYC-verified requester: {}", said())))
        }
        Verdict::Tier(Tier::Manual) => Some((
            "edit_needs_human",
            format!("the edited payload would be left to a human to carry out (tier 3): {}", said()),
        )),
        Verdict::Tier(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_lists_each_change_with_what_it_replaced_and_stays_small() {
        let before = json!({"to": ["a@x.com", "b@x.com"], "subject": "Hi", "text": "t", "cc": ["c@x.com"]});
        let after = json!({"to": ["a@x.com"], "subject": "Hello", "text": "t", "bcc": "d"});
        let (changes, total) = diff(&before, &after);
        assert_eq!(total, 4);
        let find = |path: &str| changes.iter().find(|c| c["path"] == path).cloned().unwrap();
        assert_eq!(find("/subject"), json!({"op": "replace", "path": "/subject", "from": "Hi", "value": "Hello"}));
        assert_eq!(find("/to/1"), json!({"op": "remove", "path": "/to/1", "from": "b@x.com"}));
        assert_eq!(find("/cc"), json!({"op": "remove", "path": "/cc", "from": ["c@x.com"]}));
        assert_eq!(find("/bcc"), json!({"op": "add", "path": "/bcc", "value": "d"}));
        // Removals shifted by earlier ones still say what they removed.
        let (changes, _) = diff(&json!([1, 2, 3]), &json!([1]));
        let froms: Vec<_> = changes.iter().map(|c| c["from"].clone()).collect();
        assert_eq!(froms, vec![json!(2), json!(3)]);
        // A large payload change is summarized and bounded.
        let big: Vec<u32> = (0..1_500).collect();
        let (changes, total) = diff(&json!({"v": "x".repeat(5000)}), &json!({"v": "y".repeat(5000), "n": big}));
        assert_eq!(total, 2);
        assert!(changes.iter().all(|c| serde_json::to_vec(c).unwrap().len() < 1200), "{changes:?}");
        let (changes, total) = diff(&json!((0..100).collect::<Vec<u32>>()), &json!((1..101).collect::<Vec<u32>>()));
        assert_eq!((changes.len(), total), (MAX_LISTED_CHANGES, 100));
        // Many values under a long key: one change, the whole payload, never a path per value.
        let key = "k".repeat(300);
        let (changes, total) = diff(&json!({&key: vec![0; 5000]}), &json!({&key: vec![1; 5000]}));
        assert_eq!((changes.len(), total), (1, 1));
        assert_eq!(changes[0]["path"], "");
        assert!(changes[0]["from"]["omitted_bytes"].as_u64().is_some());
    }

    #[test]
    fn only_a_single_action_is_editable() {
        let mut action = crate::domain::action::sample_action();
        assert!(editable_type(&action).is_some());
        let step = action.steps[0].clone();
        action.steps.push(step);
        assert_eq!(editable_type(&action), None);
    }
}
