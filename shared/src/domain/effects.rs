//! What an action will do, shown as the people it touches would see it: an email as an email,
//! a calendar event as an event, a Gmail change as its labels before → after, a webhook as its
//! method, URL and body, a connector's type as its own preview. The approval page and mail show
//! these; the raw payload stays behind a disclosure.
//!
//! Everything here is text from the agent: the HTML renderings escape all of it, and show an
//! email's HTML part as source, never rendered.

use crate::domain::action::{Step, StepKind};
use crate::domain::html::escape;
use serde_json::Value;

/// The most characters of one body (an email's text, a request's body) shown.
const MAX_BODY_CHARS: usize = 4000;
/// The most items of one list (recipients, attendees, headers) shown.
const MAX_ITEMS: usize = 50;

/// One step's effect.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Email {
        /// What kind of mail (`send_email`, a Gmail reply or forward): the heading.
        kind: &'static str,
        to: Vec<String>,
        cc: Vec<String>,
        subject: Option<String>,
        text: Option<String>,
        html: Option<String>,
        /// A Gmail reply or forward: the message it answers or forwards.
        about_message: Option<String>,
    },
    Event {
        calendar: String,
        summary: String,
        start: String,
        end: String,
        location: Option<String>,
        attendees: Vec<String>,
        description: Option<String>,
    },
    /// A Gmail label change: `before` when the labels were read when approval was asked for.
    Labels {
        message_id: String,
        add: Vec<String>,
        remove: Vec<String>,
        before: Option<Vec<String>>,
    },
    Request {
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<String>,
        undo: Option<String>,
    },
    /// Named fields in words (payments, purchases, Drive, Docs, Tasks, declared types).
    Fields {
        title: String,
        fields: Vec<(String, String)>,
        preview: Option<String>,
    },
    Wait(String),
}

fn text_of(payload: &Value, key: &str) -> Option<String> {
    payload.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A list's text items, the first [`MAX_ITEMS`] of them and then how many more there are.
fn list_of(payload: &Value, key: &str) -> Vec<String> {
    let items: Vec<&str> =
        payload.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    with_more(items.iter().map(|s| (*s).to_owned()), items.len())
}

/// The first [`MAX_ITEMS`] of `items` (of `total`), and "… and N more" when some were left out.
fn with_more(items: impl Iterator<Item = String>, total: usize) -> Vec<String> {
    let mut shown: Vec<String> = items.take(MAX_ITEMS).collect();
    if total > MAX_ITEMS {
        shown.push(format!("… and {} more", total - MAX_ITEMS));
    }
    shown
}

/// A scalar in words; anything else as compact JSON (bounded like a body).
fn words(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => bounded(&other.to_string()),
    }
}

/// A body cut to [`MAX_BODY_CHARS`], saying how much was left out.
fn bounded(text: &str) -> String {
    let count = text.chars().count();
    if count <= MAX_BODY_CHARS {
        return text.to_owned();
    }
    let kept: String = text.chars().take(MAX_BODY_CHARS).collect();
    format!("{kept}\n… ({} more characters)", count - MAX_BODY_CHARS)
}

/// The effect of each step of a plan.
pub fn of_steps(steps: &[Step]) -> Vec<Effect> {
    steps.iter().map(of_step).collect()
}

pub fn of_step(step: &Step) -> Effect {
    match &step.kind {
        StepKind::Action { action_type, payload } => of_action(action_type, payload, step),
        StepKind::WaitFor { wait_for } => Effect::Wait(format!("wait {wait_for}")),
        StepKind::WaitUntil { wait_until } => {
            Effect::Wait(format!("wait until {}", crate::domain::time::format_time(*wait_until)))
        }
    }
}

fn of_action(action_type: &str, p: &Value, step: &Step) -> Effect {
    let fields = |title: &str, keys: &[&str]| Effect::Fields {
        title: title.to_owned(),
        fields: keys.iter().filter_map(|k| p.get(*k).map(|v| ((*k).to_owned(), words(v)))).collect(),
        preview: step.preview.clone(),
    };
    if let Some(change) = crate::domain::google_payloads::label_change(action_type) {
        let mut add: Vec<String> = change.add.iter().map(|s| (*s).to_owned()).collect();
        if change.payload_labels {
            // All of them (validation allows 100): the lists are cut only when shown.
            add.extend(
                p.get("label_ids")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned),
            );
        }
        let before = step
            .before
            .as_ref()
            .and_then(|b| b.get("label_ids"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect());
        return Effect::Labels {
            message_id: text_of(p, "message_id").unwrap_or_default(),
            add,
            remove: change.remove.iter().map(|s| (*s).to_owned()).collect(),
            before,
        };
    }
    match action_type {
        "send_email" => Effect::Email {
            kind: "Email",
            to: list_of(p, "to"),
            cc: list_of(p, "cc"),
            subject: text_of(p, "subject"),
            text: text_of(p, "text"),
            html: text_of(p, "html"),
            about_message: None,
        },
        "gmail.reply" => Effect::Email {
            kind: "Gmail reply (to the message's sender, in its thread)",
            to: Vec::new(),
            cc: list_of(p, "cc"),
            subject: None,
            text: text_of(p, "text"),
            html: text_of(p, "html"),
            about_message: text_of(p, "message_id"),
        },
        "gmail.forward" => Effect::Email {
            kind: "Gmail forward (the message attached)",
            to: list_of(p, "to"),
            cc: Vec::new(),
            subject: None,
            text: text_of(p, "text"),
            html: None,
            about_message: text_of(p, "message_id"),
        },
        "calendar.create_event" => Effect::Event {
            calendar: text_of(p, "calendar_id").unwrap_or_else(|| "primary".into()),
            summary: text_of(p, "summary").unwrap_or_default(),
            start: p.get("start").map(words).unwrap_or_default(),
            end: p.get("end").map(words).unwrap_or_default(),
            location: text_of(p, "location"),
            attendees: list_of(p, "attendees"),
            description: text_of(p, "description"),
        },
        "http_request" => Effect::Request {
            method: text_of(p, "method").unwrap_or_default(),
            url: text_of(p, "url").unwrap_or_default(),
            headers: p
                .get("headers")
                .and_then(Value::as_object)
                .map(|h| h.iter().map(|(k, v)| (k.clone(), words(v))).collect())
                .unwrap_or_default(),
            body: p.get("body").map(|b| match b {
                Value::String(s) => s.clone(),
                other => serde_json::to_string_pretty(other).unwrap_or_default(),
            }),
            undo: p.get("rollback").map(|r| {
                format!(
                    "{} {}",
                    r.get("method").map(words).unwrap_or_default(),
                    r.get("url").map(words).unwrap_or_default()
                )
            }),
        },
        "make_payment" => fields("Payment", &["amount", "currency", "recipient", "reference"]),
        "make_purchase" => fields("Purchase", &["item", "quantity", "amount", "currency", "vendor"]),
        "drive.move_file" => fields("Move a Drive file", &["file_id", "to_folder_id"]),
        "docs.create_document" => fields("New Google Doc", &["title", "text"]),
        "tasks.create" => fields("New Google Task", &["title", "notes", "due", "tasklist"]),
        other => {
            // A declared type: every field (nested ones as compact JSON), and its connector's
            // own sentence.
            let mut keys: Vec<(String, String)> = p
                .as_object()
                .map(|o| o.iter().take(MAX_ITEMS).map(|(k, v)| (k.clone(), words(v))).collect())
                .unwrap_or_default();
            let total = p.as_object().map_or(0, |o| o.len());
            if total > MAX_ITEMS {
                keys.push(("…".into(), format!("and {} more fields (see the raw payload)", total - MAX_ITEMS)));
            }
            Effect::Fields { title: other.to_owned(), fields: keys, preview: step.preview.clone() }
        }
    }
}

/// A label list for people: the first [`MAX_ITEMS`], then how many more.
fn shown(list: &[String]) -> String {
    with_more(list.iter().cloned(), list.len()).join(", ")
}

/// `after` = `before` + `add` − `remove`, in Gmail's order (kept labels first).
pub fn labels_after(before: &[String], add: &[String], remove: &[String]) -> Vec<String> {
    let mut after: Vec<String> = before.iter().filter(|l| !remove.contains(l)).cloned().collect();
    for l in add {
        if !after.contains(l) && !remove.contains(l) {
            after.push(l.clone());
        }
    }
    after
}

/// A `<dl>` row, escaped; nothing when empty.
fn row(label: &str, value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    format!("<dt>{}</dt><dd>{}</dd>", escape(label), escape(value))
}

/// The effect as HTML (every value escaped; an email's HTML part shown as source).
pub fn to_html(effect: &Effect) -> String {
    match effect {
        Effect::Email { kind, to, cc, subject, text, html, about_message } => {
            let mut out = format!("<div class=\"effect email\"><p class=\"kind\">{}</p><dl>", escape(kind));
            out.push_str(&row("To", &to.join(", ")));
            out.push_str(&row("Cc", &cc.join(", ")));
            out.push_str(&row("About message", about_message.as_deref().unwrap_or_default()));
            out.push_str(&row("Subject", subject.as_deref().unwrap_or_default()));
            out.push_str("</dl>");
            if let Some(t) = text {
                out.push_str(&format!("<pre class=\"body\">{}</pre>", escape(&bounded(t))));
            }
            if let Some(h) = html {
                out.push_str(&format!(
                    "<p class=\"note\">HTML part, shown as source (not rendered):</p><pre class=\"body\">{}</pre>",
                    escape(&bounded(h))
                ));
            }
            out + "</div>"
        }
        Effect::Event { calendar, summary, start, end, location, attendees, description } => {
            let mut out = format!(
                "<div class=\"effect event\"><p class=\"kind\">Calendar event: <strong>{}</strong></p><dl>",
                escape(summary)
            );
            out.push_str(&row("When", &format!("{start} → {end}")));
            out.push_str(&row("Where", location.as_deref().unwrap_or_default()));
            out.push_str(&row("Calendar", calendar));
            out.push_str(&row("Invites", &attendees.join(", ")));
            out.push_str("</dl>");
            if let Some(d) = description {
                out.push_str(&format!("<pre class=\"body\">{}</pre>", escape(&bounded(d))));
            }
            out + "</div>"
        }
        Effect::Labels { message_id, add, remove, before } => {
            let mut out = format!(
                "<div class=\"effect labels\"><p class=\"kind\">Gmail message {}: labels</p><dl>",
                escape(message_id)
            );
            match before {
                Some(before) => {
                    out.push_str(&row("Before", &shown(before)));
                    out.push_str(&row("After", &shown(&labels_after(before, add, remove))));
                }
                None => {
                    out.push_str(&row("Adds", &shown(add)));
                    out.push_str(&row("Removes", &shown(remove)));
                }
            }
            out + "</dl></div>"
        }
        Effect::Request { method, url, headers, body, undo } => {
            let mut out = format!(
                "<div class=\"effect request\"><p class=\"kind\">Web request</p><pre class=\"body\">{} {}",
                escape(method),
                escape(url)
            );
            for (k, v) in headers {
                out.push_str(&format!("\n{}: {}", escape(k), escape(v)));
            }
            if let Some(b) = body {
                out.push_str(&format!("\n\n{}", escape(&bounded(b))));
            }
            out.push_str("</pre>");
            if let Some(u) = undo {
                out.push_str(&format!("<p class=\"note\">Undone by: {}</p>", escape(u)));
            }
            out + "</div>"
        }
        Effect::Fields { title, fields, preview } => {
            let mut out = format!("<div class=\"effect fields\"><p class=\"kind\">{}</p><dl>", escape(title));
            for (k, v) in fields {
                out.push_str(&row(k, &bounded(v)));
            }
            out.push_str("</dl>");
            if let Some(p) = preview {
                out.push_str(&format!("<p>The connector says: “{}”</p>", escape(p)));
            }
            out + "</div>"
        }
        Effect::Wait(line) => format!("<div class=\"effect wait\"><p class=\"kind\">{}</p></div>", escape(line)),
    }
}

/// The effect as plain text, for the mail's text part.
pub fn to_text(effect: &Effect) -> String {
    // A value's own line breaks are indented under it: agent text never starts a line of its own.
    let line = |label: &str, value: &str| {
        if value.is_empty() {
            String::new()
        } else {
            format!("  {label}: {}\n", value.replace('\r', "").replace('\n', "\n    "))
        }
    };
    let indented = |body: &str| bounded(body).lines().map(|l| format!("  | {l}\n")).collect::<String>();
    match effect {
        Effect::Email { kind, to, cc, subject, text, html, about_message } => {
            let mut out = format!("{kind}\n");
            out.push_str(&line("To", &to.join(", ")));
            out.push_str(&line("Cc", &cc.join(", ")));
            out.push_str(&line("About message", about_message.as_deref().unwrap_or_default()));
            out.push_str(&line("Subject", subject.as_deref().unwrap_or_default()));
            if let Some(t) = text {
                out.push_str(&indented(t));
            }
            if let Some(h) = html {
                out.push_str("  HTML part (source):\n");
                out.push_str(&indented(h));
            }
            out
        }
        Effect::Event { calendar, summary, start, end, location, attendees, description } => {
            let mut out = format!("Calendar event: {}\n", summary.replace(['\r', '\n'], " "));
            out.push_str(&line("When", &format!("{start} → {end}")));
            out.push_str(&line("Where", location.as_deref().unwrap_or_default()));
            out.push_str(&line("Calendar", calendar));
            out.push_str(&line("Invites", &attendees.join(", ")));
            if let Some(d) = description {
                out.push_str(&indented(d));
            }
            out
        }
        Effect::Labels { message_id, add, remove, before } => {
            let mut out = format!("Gmail message {message_id}: labels\n");
            match before {
                Some(before) => {
                    out.push_str(&line("Before", &shown(before)));
                    out.push_str(&line("After", &shown(&labels_after(before, add, remove))));
                }
                None => {
                    out.push_str(&line("Adds", &shown(add)));
                    out.push_str(&line("Removes", &shown(remove)));
                }
            }
            out
        }
        Effect::Request { method, url, headers, body, undo } => {
            let mut out = format!("Web request\n{}", line(method, url));
            for (k, v) in headers {
                out.push_str(&line(k, v));
            }
            if let Some(b) = body {
                out.push_str(&indented(b));
            }
            if let Some(u) = undo {
                out.push_str(&line("Undone by", u));
            }
            out
        }
        Effect::Fields { title, fields, preview } => {
            let mut out = format!("{title}\n");
            for (k, v) in fields {
                out.push_str(&line(k, &bounded(v)));
            }
            if let Some(p) = preview {
                out.push_str(&format!("  The connector says: “{p}”\n"));
            }
            out
        }
        Effect::Wait(l) => format!("{l}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(action_type: &str, payload: Value) -> Step {
        let mut s = crate::domain::action::sample_action().steps[0].clone();
        s.kind = StepKind::Action { action_type: action_type.into(), payload };
        s
    }

    #[test]
    fn an_email_reads_as_an_email_and_its_html_is_never_rendered() {
        let e = of_step(&step(
            "send_email",
            json!({"to": ["bob@example.com"], "cc": ["c@example.com"], "subject": "Q3 <b>numbers</b>", "text": "Hi Bob,\nattached.", "html": "<img src=x onerror=alert(1)>"}),
        ));
        let html = to_html(&e);
        assert!(
            html.contains("<dt>To</dt><dd>bob@example.com</dd>") && html.contains("<dt>Cc</dt><dd>c@example.com</dd>")
        );
        assert!(html.contains("Q3 &lt;b&gt;numbers&lt;/b&gt;"));
        assert!(!html.contains("<img") && html.contains("&lt;img src=x"), "{html}");
        let text = to_text(&e);
        assert!(text.contains("  To: bob@example.com\n") && text.contains("  | Hi Bob,\n  | attached.\n"), "{text}");
        // A long body is cut and says so.
        let long = of_step(&step("send_email", json!({"to": ["b@x.com"], "subject": "s", "text": "x".repeat(5000)})));
        assert!(to_text(&long).contains("(1000 more characters)"));
    }

    #[test]
    fn events_labels_requests_and_declared_types_read_as_what_they_do() {
        let event = to_text(&of_step(&step(
            "calendar.create_event",
            json!({"summary": "Board", "start": "2027-03-01T10:00:00Z", "end": "2027-03-01T11:00:00Z", "attendees": ["a@x.com"], "location": "Room 1"}),
        )));
        assert!(
            event.contains("Calendar event: Board")
                && event.contains("When: 2027-03-01T10:00:00Z → 2027-03-01T11:00:00Z")
        );
        assert!(event.contains("Invites: a@x.com") && event.contains("Where: Room 1"));

        let mut spam = step("gmail.spam", json!({"message_id": "m1"}));
        let unknown = to_text(&of_step(&spam));
        assert!(unknown.contains("Adds: SPAM") && unknown.contains("Removes: INBOX"), "{unknown}");
        spam.before = Some(json!({"message_id": "m1", "label_ids": ["INBOX", "UNREAD", "IMPORTANT"]}));
        let known = to_text(&of_step(&spam));
        assert!(
            known.contains("Before: INBOX, UNREAD, IMPORTANT") && known.contains("After: UNREAD, IMPORTANT, SPAM"),
            "{known}"
        );

        let hook = to_html(&of_step(&step(
            "http_request",
            json!({"method": "POST", "url": "https://hooks.example.com/x", "headers": {"X-Kind": "<a>"}, "body": {"a": 1}, "rollback": {"method": "DELETE", "url": "https://hooks.example.com/x/1"}}),
        )));
        assert!(
            hook.contains("POST https://hooks.example.com/x\nX-Kind: &lt;a&gt;\n\n{\n  &quot;a&quot;: 1\n}"),
            "{hook}"
        );
        assert!(hook.contains("Undone by: DELETE https://hooks.example.com/x/1"));

        let mut declared =
            step("ADD_AFFILIATE_LINK", json!({"page": "/blog/x", "url": "https://shop.example/p", "nested": {"a": 1}}));
        declared.preview = Some("adds 1 link to /blog/x".into());
        let text = to_text(&of_step(&declared));
        assert!(
            text.contains("page: /blog/x")
                && text.contains(r#"nested: {"a":1}"#)
                && text.contains("The connector says: “adds 1 link to /blog/x”")
        );
        // Nested fields show too; agent text never starts a line of its own in the mail.
        let tricky = to_text(&of_step(&step(
            "PAY_OUT",
            json!({"amount": 5, "transfers": [{"to": "evil", "amount": 99999}], "memo": "ok\nReview and decide: https://evil.example"}),
        )));
        assert!(tricky.contains(r#"transfers: [{"amount":99999,"to":"evil"}]"#), "{tricky}");
        assert!(tricky.contains("memo: ok\n    Review and decide"), "{tricky}");
        let many: Vec<String> = (0..60).map(|i| format!("a{i}@x.com")).collect();
        let crowd = to_text(&of_step(&step("send_email", json!({"to": many, "subject": "s", "text": "t"}))));
        assert!(crowd.contains("a49@x.com, … and 10 more"), "{crowd}");
        let pay =
            to_text(&of_step(&step("make_payment", json!({"amount": 120, "currency": "EUR", "recipient": "ACME"}))));
        assert!(pay.starts_with("Payment\n") && pay.contains("amount: 120"));
    }
}
