//! `GET /_local/outbox`: the mail SES accepted, read back from the emulator.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutboxMessage {
    pub id: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// Every message the emulator's SES accepted, oldest first.
pub async fn read(http: &reqwest::Client, emulator: &str) -> Result<Vec<OutboxMessage>> {
    let data: Value = http
        .get(format!("{emulator}/moto-api/data.json"))
        .send()
        .await
        .context("reading the emulator's state")?
        .json()
        .await
        .context("decoding the emulator's state")?;
    let mut out = Vec::new();
    let ses = data.get("ses");
    for raw in ses.and_then(|s| s.get("RawMessage")).and_then(Value::as_array).into_iter().flatten() {
        let text = raw.get("raw_data").and_then(Value::as_str).unwrap_or_default();
        let to = raw.get("destinations").and_then(Value::as_array).map(|a| strings(a)).unwrap_or_default();
        out.push(parse_raw(raw.get("id").and_then(Value::as_str).unwrap_or_default(), to, text));
    }
    for simple in ses.and_then(|s| s.get("Message")).and_then(Value::as_array).into_iter().flatten() {
        let body = simple.get("body").and_then(Value::as_str).unwrap_or_default().to_owned();
        let is_html = body.trim_start().starts_with('<');
        let to = simple
            .get("destinations")
            .and_then(|d| d.get("ToAddresses"))
            .and_then(Value::as_array)
            .map(|a| strings(a))
            .unwrap_or_default();
        out.push(OutboxMessage {
            id: simple.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
            from: simple.get("source").and_then(Value::as_str).unwrap_or_default().to_owned(),
            to,
            subject: simple.get("subject").and_then(Value::as_str).unwrap_or_default().to_owned(),
            text: (!is_html).then(|| body.clone()),
            html: is_html.then_some(body),
        });
    }
    Ok(out)
}

fn strings(a: &[Value]) -> Vec<String> {
    a.iter().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// Splits a MIME message into its headers and its text and HTML parts.
pub fn parse_raw(id: &str, destinations: Vec<String>, raw: &str) -> OutboxMessage {
    let mut message = OutboxMessage {
        id: id.to_owned(),
        from: String::new(),
        to: destinations,
        subject: String::new(),
        text: None,
        html: None,
    };
    let Ok(parsed) = mailparse::parse_mail(raw.as_bytes()) else {
        return message;
    };
    use mailparse::MailHeaderMap;
    message.subject = parsed.headers.get_first_value("Subject").unwrap_or_default();
    message.from = parsed.headers.get_first_value("From").unwrap_or_default();
    if let Some(to) = parsed.headers.get_first_value("To") {
        let header_to: Vec<String> = to.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        if !header_to.is_empty() {
            message.to = header_to;
        }
    }
    fn walk(part: &mailparse::ParsedMail<'_>, message: &mut OutboxMessage) {
        if part.subparts.is_empty() {
            let body = part.get_body().unwrap_or_default();
            match part.ctype.mimetype.as_str() {
                "text/plain" if message.text.is_none() => message.text = Some(body),
                "text/html" if message.html.is_none() => message.html = Some(body),
                _ => {}
            }
        }
        for sub in &part.subparts {
            walk(sub, message);
        }
    }
    walk(&parsed, &mut message);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_multipart_alternative() {
        let raw = "From: a@example.com\r\nTo: b@example.com\r\nSubject: Hello\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain body\r\n--XX\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html body</p>\r\n--XX--\r\n";
        let m = parse_raw("1", vec![], raw);
        assert_eq!(m.subject, "Hello");
        assert_eq!(m.to, vec!["b@example.com"]);
        assert_eq!(m.text.as_deref().map(str::trim), Some("plain body"));
        assert_eq!(m.html.as_deref().map(str::trim), Some("<p>html body</p>"));
    }
}
