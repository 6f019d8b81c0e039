//! The built-in action types' sentences, and the words for steps no handler runs (waits,
//! tier-3 types). Each built-in handler's preview returns its type's sentence from here; every
//! description of an action (approval mail and pages, dry runs) goes through the handlers'
//! previews (`ports::handler::Registry::describe`), so a handler brought by an integrator
//! describes its own work.

use crate::domain::time::format_time;
use crate::domain::StepKind;
use serde_json::Value;

/// What one step does, as a sentence.
pub fn step_line(kind: &StepKind) -> String {
    match kind {
        StepKind::Action { action_type, payload } => describe(action_type, payload),
        StepKind::WaitFor { wait_for } => format!("wait {wait_for}"),
        StepKind::WaitUntil { wait_until } => format!("wait until {}", format_time(*wait_until)),
    }
}

/// What a plan does, a sentence a step.
pub fn plan_lines<'a>(steps: impl IntoIterator<Item = &'a StepKind>) -> Vec<String> {
    steps.into_iter().map(step_line).collect()
}

/// What an action of `action_type` with `payload` does.
pub fn describe(action_type: &str, payload: &Value) -> String {
    let s = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    let list = |k: &str| {
        payload
            .get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    match action_type {
        "send_email" => format!("send an email to {} with subject \"{}\"", list("to"), s("subject")),
        "gmail.flag" => format!("flag Gmail message {}", s("message_id")),
        "gmail.archive" => format!("archive Gmail message {}", s("message_id")),
        "gmail.mark_read" => format!("mark Gmail message {} as read", s("message_id")),
        "gmail.spam" => format!("move Gmail message {} to spam", s("message_id")),
        "gmail.delete" => format!("delete Gmail message {} (by hand)", s("message_id")),
        "gmail.label" => format!("label Gmail message {} with {}", s("message_id"), list("label_ids")),
        "calendar.create_event" => {
            format!("create calendar event \"{}\" from {} to {}", s("summary"), s("start"), s("end"))
        }
        "http_request" => format!("{} {}", s("method"), s("url")),
        "make_payment" => format!(
            "pay {} {} to {}",
            payload.get("amount").map(Value::to_string).unwrap_or_default(),
            s("currency"),
            s("recipient")
        ),
        "make_purchase" => format!(
            "buy {} for {} {}",
            s("item"),
            payload.get("amount").map(Value::to_string).unwrap_or_default(),
            s("currency")
        ),
        other => crate::domain::google_payloads::describe(other, payload).unwrap_or_else(|| other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn previews_read_as_sentences() {
        let steps = [
            StepKind::Action { action_type: "gmail.archive".into(), payload: json!({"message_id": "m1"}) },
            StepKind::WaitFor { wait_for: crate::domain::IsoDuration::from_secs(2 * 86_400) },
            StepKind::Action { action_type: "gmail.flag".into(), payload: json!({"message_id": "m1"}) },
        ];
        assert_eq!(plan_lines(&steps), vec!["archive Gmail message m1", "wait P2D", "flag Gmail message m1"]);
    }
}
