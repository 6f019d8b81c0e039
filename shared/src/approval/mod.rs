//! Human approval: one-time links mailed to the approver, the confirmation pages behind them,
//! and decisions by link or by API.
//!
//! A link is bound to one approver and to the digest of the exact plan it was issued for. A GET
//! or HEAD only renders a page (mail scanners fetch every link); the decision is a POST from a
//! button a human clicks, written with one conditional transaction, so the first decision wins.

pub mod pages;
pub mod service;
pub mod token;

use crate::clock::format_time;
use crate::domain::{Action, EmailAddress};
use crate::mail::Mail;
use crate::store::{ApprovalRecord, ApprovalStatus};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
pub use token::{ApprovalToken, TokenHash};

/// Digest of what the action will do: its type, payload and every step. A link issued for one
/// plan is dead for any other.
pub fn plan_digest(action: &Action) -> String {
    let kinds: Vec<_> = action.steps.iter().map(|s| &s.kind).collect();
    let canonical =
        serde_json::json!({"action_type": action.action_type, "payload": action.payload, "steps": kinds}).to_string();
    token::hex(&Sha256::digest(canonical.as_bytes()))
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

/// The lines that say what the action will do, step by step.
pub fn plan_lines(action: &Action) -> Vec<String> {
    crate::domain::catalog::plan_lines(action.steps.iter().map(|s| &s.kind))
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

/// The approval request mail: what the agent wants to do in plain words, risk, the rules that
/// asked for approval, a dry-run preview, the expiry and one link.
pub fn approval_mail(action: &Action, approver: &EmailAddress, link: &str, expires_at: DateTime<Utc>) -> Mail {
    let lines = plan_lines(action);
    let what = if lines.len() == 1 { lines[0].clone() } else { format!("a plan of {} steps", lines.len()) };
    let mut subject = format!("Approval needed: {what}");
    if subject.chars().count() > 140 {
        subject = subject.chars().take(139).collect::<String>() + "…";
    }
    let risk = action.risk_score.map_or("not given".to_owned(), |r| r.to_string());
    let reasons: Vec<String> = action
        .reasons
        .iter()
        .filter(|c| c.as_str() != "needs_approval")
        .map(|c| format!("{} ({c})", reason_text(c)))
        .collect();
    let expires = format_time(expires_at);
    let preview = preview_json(action);
    let mut text = format!("{} asks actiongate to:\n", action.user_id);
    for (i, line) in lines.iter().enumerate() {
        text.push_str(&format!("  {}. {line}\n", i + 1));
    }
    text.push_str(&format!("\nRisk score: {risk} (tier 2: needs approval)\n"));
    if !reasons.is_empty() {
        text.push_str("Approval is needed because:\n");
        for r in &reasons {
            text.push_str(&format!("  - {r}\n"));
        }
    }
    text.push_str(&format!("\nPreview (dry run):\n{preview}\n\nThis request expires at {expires}.\n\nReview and decide: {link}\n\nOpening the link does not approve anything: you decide with a button on the page.\nAction id: {}\n", action.action_id));

    let e = pages::escape;
    let steps_html: String = lines.iter().map(|l| format!("<li>{}</li>", e(l))).collect();
    let reasons_html: String = reasons.iter().map(|r| format!("<li>{}</li>", e(r))).collect();
    let html = format!(
        "<!doctype html><html><body style=\"font-family:system-ui,sans-serif;max-width:640px;margin:auto;color:#1f2328\">\
         <h2>Approval needed</h2><p><strong>{user}</strong> asks actiongate to:</p><ol>{steps_html}</ol>\
         <p>Risk score: <strong>{risk}</strong> (tier 2: needs approval)</p>{reasons_block}\
         <p>Preview (dry run):</p><pre style=\"background:#f6f8fa;padding:12px;overflow:auto\">{preview}</pre>\
         <p>This request expires at <strong>{expires}</strong>.</p>\
         <p><a href=\"{link}\" style=\"display:inline-block;background:#1f6feb;color:#fff;padding:10px 18px;border-radius:6px;text-decoration:none\">Review and decide</a></p>\
         <p style=\"color:#656d76;font-size:13px\">Opening the link does not approve anything: you decide with a button on the page. Sent to {approver}. Action id {id}.</p>\
         </body></html>",
        user = e(action.user_id.as_str()),
        reasons_block = if reasons.is_empty() { String::new() } else { format!("<p>Approval is needed because:</p><ul>{reasons_html}</ul>") },
        preview = e(&preview),
        expires = e(&expires),
        link = e(link),
        approver = e(approver.as_str()),
        id = action.action_id,
    );
    Mail { to: vec![approver.as_str().to_owned()], cc: vec![], subject, text, html }
}
