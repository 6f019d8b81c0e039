//! The mails actiongate composes: approval requests and the circuit breaker's alert.

use crate::domain::approval::{preview_json, reason_text};
use crate::domain::time::format_time;
use crate::domain::{Action, EmailAddress};
use crate::ports::mail::Mail;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Sends approval requests: the mailer and where links point.
pub struct ApprovalMail {
    pub mailer: Arc<dyn crate::ports::mail::Mailer>,
    pub public_base_url: String,
}

/// Who is told when the breaker opens: `auto_execution.alert_email`, else the default approver.
pub fn alert_recipient(policy: &crate::domain::policy::Policy) -> Option<&crate::domain::EmailAddress> {
    policy.auto_execution.alert_email.as_ref().or(policy.defaults.approver.as_ref())
}

/// The mail that tells an admin automatic execution is paused.
pub fn alert_mail(to: &crate::domain::EmailAddress, reason: &str, now: DateTime<Utc>) -> crate::ports::mail::Mail {
    let text = format!(
        "actiongate paused automatic execution at {}: {reason}.\n\nTier-1 actions wait (pending) until an administrator resets the breaker with POST /admin/circuit-breaker/reset. Approved actions still run.\n",
        format_time(now)
    );
    crate::ports::mail::Mail {
        to: vec![to.as_str().to_owned()],
        cc: vec![],
        subject: "actiongate: automatic execution paused (circuit breaker open)".into(),
        html: format!("<p>{}</p>", crate::domain::html::escape(&text).replace("\n\n", "</p><p>")),
        text,
    }
}

/// The mail that tells an admin an integration's circuit opened: its work waits in the queue
/// and a probe call tries it again after the cool-off.
pub fn integration_alert_mail(
    to: &crate::domain::EmailAddress,
    integration: &str,
    reason: &str,
    settings: &crate::domain::integrations::IntegrationSettings,
    now: DateTime<Utc>,
) -> crate::ports::mail::Mail {
    let text = format!(
        "actiongate stopped calling {integration} at {}: {reason}.\n\nWork for {integration} waits in the queue (nothing fails because of it). After {} one call is let through as a probe: if it succeeds the circuit closes and the work runs; if not, it waits another cool-off. GET /admin/integrations shows the state; POST /admin/integrations/{integration}/reset closes it by hand.\n",
        format_time(now),
        settings.cool_off
    );
    crate::ports::mail::Mail {
        to: vec![to.as_str().to_owned()],
        cc: vec![],
        subject: format!("actiongate: {integration} paused (integration circuit open)"),
        html: format!("<p>{}</p>", crate::domain::html::escape(&text).replace("\n\n", "</p><p>")),
        text,
    }
}

/// The approval request mail: what the agent wants to do in plain words, risk, the rules that
/// asked for approval, a dry-run preview, the expiry and one link. `lines` say what each step
/// does ([`crate::ports::handler::Registry::plan_lines`]).
pub fn approval_mail(
    action: &Action,
    lines: &[String],
    approver: &EmailAddress,
    link: &str,
    expires_at: DateTime<Utc>,
) -> Mail {
    let what = if lines.len() == 1 { lines[0].clone() } else { format!("a plan of {} steps", lines.len()) };
    let edited = action.edits.last();
    let mut subject = match edited {
        Some(e) => format!("Approval needed (changed by {}): {what}", e.by),
        None => format!("Approval needed: {what}"),
    };
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
    let changed_note = edited.map(|e| {
        format!(
            "Changed before approval by {} at {} ({}). This is the changed version; approvals of the earlier one no longer count.",
            e.by,
            format_time(e.at),
            e.fields.join(", ")
        )
    });
    let mut text = changed_note.as_ref().map(|n| format!("{n}\n\n")).unwrap_or_default();
    text.push_str(&format!("{} asks actiongate to:\n", action.user_id));
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
    let effects = crate::domain::effects::of_steps(&action.steps);
    text.push_str("\nWhat will happen:\n");
    for (i, effect) in effects.iter().enumerate() {
        text.push_str(&format!("{}. {}", i + 1, crate::domain::effects::to_text(effect)));
    }
    text.push_str(&format!("\nPreview (dry run), the raw payload:\n{preview}\n\nThis request expires at {expires}.\n\nReview and decide: {link}\n\nOpening the link does not approve anything: you decide with a button on the page.\nAction id: {}\n", action.action_id));

    let e = crate::domain::html::escape;
    let steps_html: String = lines.iter().map(|l| format!("<li>{}</li>", e(l))).collect();
    let reasons_html: String = reasons.iter().map(|r| format!("<li>{}</li>", e(r))).collect();
    let html = format!(
        "<!doctype html><html><body style=\"font-family:system-ui,sans-serif;max-width:640px;margin:auto;color:#1f2328\">\
         <h2>Approval needed</h2>{changed_html}<p><strong>{user}</strong> asks actiongate to:</p><ol>{steps_html}</ol>\
         <p>Risk score: <strong>{risk}</strong> (tier 2: needs approval)</p>{reasons_block}\
         <h3>What will happen</h3><ol>{effects_html}</ol>\
         <p style=\"color:#656d76\">Preview (dry run), the raw payload:</p><pre style=\"background:#f6f8fa;padding:12px;overflow:auto\">{preview}</pre>\
         <p>This request expires at <strong>{expires}</strong>.</p>\
         <p><a href=\"{link}\" style=\"display:inline-block;background:#1f6feb;color:#fff;padding:10px 18px;border-radius:6px;text-decoration:none\">Review and decide</a></p>\
         <p style=\"color:#656d76;font-size:13px\">Opening the link does not approve anything: you decide with a button on the page. Sent to {approver}. Action id {id}.</p>\
         </body></html>",
        user = e(action.user_id.as_str()),
        changed_html = changed_note.as_deref().map_or(String::new(), |n| format!(
            "<p style=\"background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 12px\">{}</p>",
            e(n)
        )),
        reasons_block = if reasons.is_empty() { String::new() } else { format!("<p>Approval is needed because:</p><ul>{reasons_html}</ul>") },
        preview = e(&preview),
        effects_html = effects
            .iter()
            .map(|x| format!(
                "<li style=\"margin:6px 0\"><div style=\"border:1px solid #d0d7de;border-radius:6px;padding:6px 12px\">{}</div></li>",
                // Mail has no stylesheet: long lines wrap inline.
                crate::domain::effects::to_html(x)
                    .replace("<pre class=\"body\">", "<pre class=\"body\" style=\"white-space:pre-wrap;word-break:break-word\">")
            ))
            .collect::<String>(),
        expires = e(&expires),
        link = e(link),
        approver = e(approver.as_str()),
        id = action.action_id,
    );
    Mail { to: vec![approver.as_str().to_owned()], cc: vec![], subject, text, html }
}
