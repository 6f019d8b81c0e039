//! The HTML pages behind approval links. No JavaScript; the only active element is a form
//! that POSTs back to the same URL. Every page carries headers that keep it out of caches,
//! referrers, frames and search indexes, and a CSP that allows only its own inline style.

use base64::Engine as _;
use lambda_http::{Body, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

use crate::domain::approval::{preview_json, reason_text, ApprovalRecord, Decision, LinkState};
pub use crate::domain::html::escape;
use crate::domain::time::format_time;
use crate::domain::{Action, Status};
use crate::ports::api::LinkPage;

/// The longest reason a form may give.
const MAX_REASON_CHARS: usize = 1000;

/// The page for what a link shows or what a decision by link did.
pub fn render(page: LinkPage) -> Response<Body> {
    match page {
        LinkPage::Confirm { record, action, lines, not_editable } => {
            confirmation_page(&record, &action, &lines, not_editable.as_deref())
        }
        LinkPage::State(state) => state_page(&state),
        LinkPage::Decided(action) => decided_page(&action),
        LinkPage::Message { status, title, sentence } => message(status, title, &sentence),
    }
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,sans-serif;max-width:680px;margin:40px auto;padding:0 16px;color:#1f2328;line-height:1.5}\
h1{font-size:1.5rem}dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px}dt{color:#656d76}dd{margin:0}\
pre{background:#f6f8fa;padding:12px;overflow:auto;font-size:13px}textarea{width:100%;min-height:60px;box-sizing:border-box}\
.buttons{display:flex;gap:12px;margin-top:12px}button{font-size:1rem;padding:10px 22px;border-radius:6px;border:1px solid #d0d7de;cursor:pointer}\
.approve{background:#1f883d;color:#fff;border-color:#1a7f37}.reject{background:#fff;color:#cf222e}.note{color:#656d76;font-size:.9rem}\
.effect{border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;margin:8px 0}.kind{font-weight:600;margin:4px 0}\
pre.body{white-space:pre-wrap;word-break:break-word;background:#fff;border-left:3px solid #d0d7de}summary{cursor:pointer;margin:8px 0}\
.changed{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 12px}";

/// `style-src` allows exactly the stylesheet above, by hash.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
});

/// A complete page. `body_html` must already be escaped.
pub fn page(status: u16, title: &str, body_html: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex,nofollow\"><meta name=\"referrer\" content=\"no-referrer\"><title>{} · actiongate</title>\
         <style>{STYLE}</style></head><body>{body_html}</body></html>",
        escape(title)
    );
    let mut response = Response::new(Body::Text(html));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    let headers = response.headers_mut();
    let pairs: [(&str, &str); 7] = [
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-robots-tag", "noindex, nofollow"),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("content-security-policy", CSP.as_str()),
    ];
    for (name, value) in pairs {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    response
}

pub fn message(status: u16, title: &str, sentence: &str) -> Response<Body> {
    page(status, title, &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(sentence)))
}

/// What the page's form sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Form {
    pub decision: Decision,
    pub reason: Option<String>,
    /// From the edit form: the payload to approve in place of the action's own.
    pub payload: Option<serde_json::Value>,
}

/// The largest form accepted (an edited payload of 64 KiB, percent-encoded).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// `decision=approve|reject&reason=…[&payload=<JSON>]` from the page's forms.
pub fn parse_form(body: &[u8]) -> Result<Form, String> {
    if body.len() > MAX_FORM_BYTES {
        return Err("The form is too large.".into());
    }
    let mut decision = None;
    let mut reason = None;
    let mut payload = None;
    for (key, value) in url::form_urlencoded::parse(body) {
        match key.as_ref() {
            "decision" if decision.is_none() => {
                decision = Some(Decision::parse(&value).ok_or("The form must say approve or reject.")?)
            }
            "decision" => return Err("The form gave more than one decision.".into()),
            "reason" => {
                let trimmed = value.trim();
                if trimmed.chars().count() > MAX_REASON_CHARS {
                    return Err("The reason is too long (1000 characters at most).".into());
                }
                reason = (!trimmed.is_empty()).then(|| trimmed.to_owned());
            }
            "payload" if payload.is_none() => {
                let parsed: serde_json::Value = serde_json::from_str(value.trim())
                    .map_err(|e| format!("The changed payload is not valid JSON: {e}."))?;
                payload = Some(parsed);
            }
            "payload" => return Err("The form gave more than one payload.".into()),
            _ => {}
        }
    }
    let decision = decision.ok_or("The form must say approve or reject.")?;
    if payload.is_some() && decision == Decision::Reject {
        return Err("Only an approval can change the payload.".into());
    }
    Ok(Form { decision, reason, payload })
}

pub fn confirmation_page(
    record: &ApprovalRecord,
    action: &Action,
    lines: &[String],
    not_editable: Option<&str>,
) -> Response<Body> {
    let steps: String = lines.iter().map(|l| format!("<li>{}</li>", escape(l))).collect();
    let reasons: String = action
        .reasons
        .iter()
        .filter(|c| c.as_str() != "needs_approval")
        .map(|c| format!("<li>{} <span class=\"note\">({})</span></li>", escape(reason_text(c)), escape(c)))
        .collect();
    let risk = action.risk_score.map_or("not given".to_owned(), |r| r.to_string());
    let confidence = action.confidence.map_or("not given".to_owned(), |c| format!("{c:.2}"));
    let body = format!(
        "<h1>Approve this action?</h1>\
         {edited}<p><strong>{user}</strong> asks actiongate to:</p><ol>{steps}</ol>\
         <dl><dt>Risk score</dt><dd>{risk}</dd><dt>Agent confidence</dt><dd>{confidence}</dd>\
         <dt>Requested</dt><dd>{created}</dd><dt>Link expires</dt><dd>{expires}</dd><dt>Approver</dt><dd>{approver}</dd>{quorum}<dt>Action id</dt><dd>{id}</dd></dl>\
         {reasons_block}<h2>What will happen</h2><ol class=\"effects\">{effects}</ol>\
         <details><summary>Raw payload (JSON) of exactly what will run</summary><pre>{preview}</pre></details>\
         <form method=\"post\"><label for=\"reason\">Reason (optional)</label><textarea id=\"reason\" name=\"reason\" maxlength=\"1000\"></textarea>\
         <div class=\"buttons\"><button class=\"approve\" type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
         <button class=\"reject\" type=\"submit\" name=\"decision\" value=\"reject\">Reject</button></div></form>\
         <p class=\"note\">Nothing happens until you press a button. The first decision counts; this link works once.</p>{edit_block}",
        user = escape(action.user_id.as_str()),
        created = escape(&format_time(action.created_at)),
        expires = escape(&format_time(record.expires_at)),
        approver = escape(&record.approver),
        quorum = quorum_rows(action),
        id = action.action_id,
        reasons_block = if reasons.is_empty() { String::new() } else { format!("<p>Approval is needed because:</p><ul>{reasons}</ul>") },
        preview = escape(&preview_json(action)),
        effects = crate::domain::effects::of_steps(&action.steps)
            .iter()
            .map(|e| format!("<li>{}</li>", crate::domain::effects::to_html(e)))
            .collect::<String>(),
        edit_block = edit_form(action, not_editable),
        edited = action.edits.last().map_or(String::new(), |e| format!(
            "<p class=\"changed\"><strong>Changed before approval</strong> by {} at {} ({}). What follows is the changed version; approvals of the earlier one no longer count.</p>",
            escape(&e.by),
            escape(&format_time(e.at)),
            escape(&e.fields.join(", "))
        )),
    );
    page(200, "Approve this action?", &body)
}

/// The form that approves a changed payload (behind a disclosure), or why there is none.
fn edit_form(action: &Action, not_editable: Option<&str>) -> String {
    if let Some(why) = not_editable {
        return format!("<p class=\"note\">It cannot be changed before approval: {}.</p>", escape(why));
    }
    let current = action.steps.first().and_then(|s| s.kind.payload()).unwrap_or(&action.payload);
    let text = serde_json::to_string_pretty(current).unwrap_or_default();
    format!(
        "<details><summary>Change it before approving</summary>\
         <form method=\"post\"><input type=\"hidden\" name=\"decision\" value=\"approve\">\
         <label for=\"payload\">Payload (JSON)</label><textarea id=\"payload\" name=\"payload\" rows=\"12\" spellcheck=\"false\">{}</textarea>\
         <label for=\"edit-reason\">Reason (optional)</label><textarea id=\"edit-reason\" name=\"reason\" maxlength=\"1000\"></textarea>\
         <div class=\"buttons\"><button class=\"approve\" type=\"submit\">Approve with these changes</button></div></form>\
         <p class=\"note\">The changed payload is checked and placed by the policy again: it may need more approvals, and everyone else is asked again with a new link. The audit trail records what changed.</p></details>",
        escape(&text)
    )
}

/// Rows saying how many approvals it needs and who decided so far (for a quorum above one).
fn quorum_rows(action: &Action) -> String {
    if action.approvals_required <= 1 && action.votes.is_empty() {
        return String::new();
    }
    let approvals = action.votes.iter().filter(|v| v.decision == crate::domain::approvers::VoteKind::Approve).count();
    let so_far: String =
        action.votes.iter().map(|v| format!("{} {}; ", escape(&v.approver), v.decision.past_tense())).collect();
    format!(
        "<dt>Approvals</dt><dd>{approvals} of {} needed{}</dd>",
        action.approvals_required,
        if so_far.is_empty() { String::new() } else { format!(" ({})", so_far.trim_end_matches("; ")) }
    )
}

pub fn decided_page(action: &Action) -> Response<Body> {
    if let crate::domain::approvers::Outcome::Waiting { approvals, required } =
        crate::domain::approvers::tally(&action.votes, action.approvals_required, action.rejections_required)
    {
        if action.status == Status::AwaitingApproval {
            let rejected =
                action.votes.last().is_some_and(|v| v.decision == crate::domain::approvers::VoteKind::Reject);
            return if rejected {
                message(
                    200,
                    "Rejection recorded",
                    &format!(
                        "Thank you. Your rejection is recorded; it takes {} rejections to reject this action. {approvals} of {required} approvals so far.",
                        action.rejections_required
                    ),
                )
            } else {
                message(
                    200,
                    "Approval recorded",
                    &format!(
                        "Thank you. Your approval is recorded: {approvals} of {required} approvals so far. The action runs once enough other approvers approve."
                    ),
                )
            };
        }
    }
    match action.status {
        Status::Queued => message(200, "Approved", "Thank you. The action is approved and queued to run."),
        _ => message(200, "Rejected", "Thank you. The action is rejected and will not run."),
    }
}

pub fn state_page(state: &LinkState) -> Response<Body> {
    match state {
        LinkState::Open => message(200, "Waiting for a decision", "This action is still waiting for a decision."),
        LinkState::Decided { status, by, at } => {
            let verdict = match status {
                Status::Rejected => "rejected",
                Status::Expired => "expired",
                _ => "approved",
            };
            let who = by.as_deref().unwrap_or("someone");
            let when = at.map(format_time).unwrap_or_else(|| "earlier".into());
            message(409, "Already decided", &format!("This action was already {verdict} by {who} at {when}. Nothing was changed."))
        }
        LinkState::Expired => message(410, "Link expired", "The approval window for this action has passed, so it will not run. Ask the requester to submit it again if it is still needed."),
        LinkState::Closed(sentence) => message(410, "Link no longer valid", sentence),
        LinkState::Voted { decision, at, approvals, required } => {
            let what = decision.past_tense();
            message(
                409,
                "You already decided",
                &format!(
                    "You {what} this action at {}. It still waits for other approvers ({approvals} of {required} approvals so far). Your decision counts once; nothing was changed.",
                    format_time(*at)
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::action::StepKind;
    use crate::domain::approval::issue_link;
    use chrono::{DateTime, Utc};
    use serde_json::json;

    fn waiting() -> (ApprovalRecord, Action) {
        let mut action = crate::domain::action::sample_action();
        let approver = action.approver.clone().unwrap();
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc);
        let (_, record) = issue_link(&action, &approver, now + chrono::Duration::hours(1));
        action.approval_token_hash = Some(record.token_hash.clone());
        (record, action)
    }

    #[test]
    fn pages_carry_the_protective_headers() {
        let r = message(410, "Expired", "This link <expired>.");
        assert_eq!(r.status(), 410);
        let h = r.headers();
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(h["x-robots-tag"].to_str().unwrap().contains("noindex"));
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(!csp.contains("script-src"));
        let body = std::str::from_utf8(r.body().as_ref()).unwrap();
        assert!(body.contains("This link &lt;expired&gt;."));
        assert!(!body.contains("<script"));
    }

    #[test]
    fn forms_need_exactly_one_known_decision() {
        let form = |d, r: Option<&str>, p| Form { decision: d, reason: r.map(str::to_owned), payload: p };
        assert_eq!(parse_form(b"decision=approve&reason=ok").unwrap(), form(Decision::Approve, Some("ok"), None));
        assert_eq!(parse_form(b"decision=reject").unwrap(), form(Decision::Reject, None, None));
        assert_eq!(
            parse_form(b"decision=approve&payload=%7B%22a%22%3A1%7D").unwrap(),
            form(Decision::Approve, None, Some(json!({"a": 1})))
        );
        assert!(parse_form(b"decision=approve&payload=%7Bnope").unwrap_err().contains("not valid JSON"));
        assert!(parse_form(b"decision=reject&payload=%7B%7D").is_err(), "a rejection changes nothing");
        assert!(parse_form(b"decision=approve&payload=1&payload=2").is_err());
        assert!(parse_form(&vec![b'a'; MAX_FORM_BYTES + 1]).is_err());
        assert!(parse_form(b"").is_err());
        assert!(parse_form(b"decision=maybe").is_err());
        assert!(parse_form(b"decision=approve&decision=reject").is_err());
        assert!(parse_form(format!("decision=approve&reason={}", "x".repeat(1001)).as_bytes()).is_err());
        assert!(parse_form(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn confirmation_page_escapes_and_has_no_script() {
        let (record, mut action) = waiting();
        action.payload = json!({"to": ["b@example.com"], "subject": "<script>alert(1)</script>", "text": "t"});
        action.steps[0].kind = StepKind::Action { action_type: "send_email".into(), payload: action.payload.clone() };
        let lines = vec!["send an email with subject \"<script>alert(1)</script>\"".to_owned()];
        let page = confirmation_page(&record, &action, &lines, None);
        let html = std::str::from_utf8(page.body().as_ref()).unwrap();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("name=\"payload\"") && html.contains("Approve with these changes"), "the edit form");
        let page = confirmation_page(&record, &action, &lines, Some("a plan of several steps cannot be edited"));
        let html = std::str::from_utf8(page.body().as_ref()).unwrap();
        assert!(!html.contains("name=\"payload\"") && html.contains("cannot be changed before approval"));
        assert!(html.contains("value=\"approve\"") && html.contains("value=\"reject\""));
    }
}
