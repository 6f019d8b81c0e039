//! `gmail.reply` and `gmail.forward` through Gmail `users.messages.send` (an RFC 2822 message,
//! base64url-encoded in `raw`). Irreversible: a sent mail cannot be recalled, and Gmail has no
//! idempotency key, so once the message may have left (a timeout, a 5xx, a broken answer after
//! the request went out) the outcome is reported unknown and never sent again blindly. A
//! failure before sending (reading the original message) is transient or permanent as usual.
//!
//! A reply goes to the original's `Reply-To` (else its `From`) in the original's thread, with
//! `In-Reply-To`/`References` and a `Re:` subject. A forward is a new message with a `Fwd:`
//! subject whose first part is the note (and a short "Forwarded message" header block) and
//! whose second part is the original, unchanged, attached as `message/rfc822`. Its recipients
//! must be at domains the policy allows ([`forward_domains_allowed`], checked again here).
//!
//! Header values never carry a line break: one that would (a header of the original, say) is
//! refused rather than written, so nothing can inject a header.

use super::google_api::{self, api_url, call, call_capped, retry_after, strings, MAX_ANSWER_BYTES};
use super::{read_capped, Handler, HandlerError, HandlerFuture, Reversibility, StepContext};
use crate::domain::mime::header_line;
use crate::domain::EmailAddress;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

pub use crate::domain::google_payloads::forward_domains_allowed;

pub const REPLY: &str = "gmail.reply";
pub const FORWARD: &str = "gmail.forward";
const WHAT: &str = "Gmail";
/// The most of a `format=raw` answer read for a forward (the original is base64 inside JSON):
/// the answer, the decoded original, the new message and its encoding are held at once, by up
/// to ten messages of a batch in a 256 MB function, so a larger original is refused.
pub const MAX_ORIGINAL_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// `References` keeps at most this many ids of the thread.
const MAX_REFERENCES: usize = 20;

pub struct Reply;
pub struct Forward;

// ---------------------------------------------------------------------------------------------
// RFC 2822 messages
// ---------------------------------------------------------------------------------------------

/// The body of a message being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailBody<'a> {
    /// `text/plain`.
    Text(&'a str),
    /// `multipart/alternative` of text and HTML.
    Alternative { text: &'a str, html: &'a str },
    /// `multipart/mixed`: a `text/plain` note, then `original` attached as `message/rfc822`.
    Forward { text: &'a str, original: &'a [u8] },
}

/// An RFC 2822 message with `headers` (in order) and `body`. Header values must be one line:
/// one with CR, LF or another control character (tab aside) is refused, naming the header.
/// A non-ASCII `Subject` is encoded (RFC 2047); other headers must be ASCII. Long headers are
/// folded at spaces. Text parts are UTF-8 in base64; `boundary_seed` (any text, e.g. the
/// idempotency key) makes the multipart boundaries, chosen so that they do not occur in an
/// attached original.
pub fn build_message(headers: &[(&str, &str)], body: &MailBody<'_>, boundary_seed: &str) -> Result<Vec<u8>, String> {
    let mut out: Vec<u8> = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(header_line(name, value)?.as_bytes());
    }
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    match body {
        MailBody::Text(text) => {
            out.extend_from_slice(
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            );
            out.extend_from_slice(&base64_lines(text));
            out.extend_from_slice(b"\r\n");
        }
        MailBody::Alternative { text, html } => {
            let boundary = boundary(boundary_seed, b"");
            out.extend_from_slice(
                format!("Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n").as_bytes(),
            );
            text_part(&mut out, &boundary, "text/plain", text);
            text_part(&mut out, &boundary, "text/html", html);
            out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        }
        MailBody::Forward { text, original } => {
            let boundary = boundary(boundary_seed, original);
            out.extend_from_slice(format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n").as_bytes());
            text_part(&mut out, &boundary, "text/plain", text);
            let encoding = if original.is_ascii() { "7bit" } else { "8bit" };
            out.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Type: message/rfc822\r\n\
                     Content-Disposition: attachment; filename=\"forwarded-message.eml\"\r\n\
                     Content-Transfer-Encoding: {encoding}\r\n\r\n"
                )
                .as_bytes(),
            );
            out.extend_from_slice(original);
            out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        }
    }
    Ok(out)
}

/// One part of a multipart body, and the line break that ends it.
fn text_part(out: &mut Vec<u8>, boundary: &str, mime_type: &str, text: &str) {
    out.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: {mime_type}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&base64_lines(text));
    out.extend_from_slice(b"\r\n");
}

/// `text` with CRLF line breaks, in base64 lines of 76 characters (no final line break).
fn base64_lines(text: &str) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(crlf(text).as_bytes());
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 38);
    for (i, line) in encoded.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(line);
    }
    out
}

/// Line breaks as CRLF.
fn crlf(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n").replace('\n', "\r\n")
}

/// A boundary made from `seed` that `avoid` does not contain.
fn boundary(seed: &str, avoid: &[u8]) -> String {
    let clean: String = seed.chars().filter(char::is_ascii_alphanumeric).take(32).collect();
    let base = format!("=_actiongate_{clean}");
    let mut n: u64 = 0;
    loop {
        let candidate = if n == 0 { base.clone() } else { format!("{base}_{n}") };
        if !contains(avoid, format!("--{candidate}").as_bytes()) {
            return candidate;
        }
        n += 1;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The header section of a raw message, unfolded: (name, value) in order.
pub fn raw_headers(raw: &[u8]) -> Vec<(String, String)> {
    let end = find(raw, b"\r\n\r\n").or_else(|| find(raw, b"\n\n")).unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push_str(line);
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_owned(), value.to_owned()));
        }
    }
    for (_, value) in &mut out {
        *value = value.trim().to_owned();
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// `Re: <subject>`, unless it already starts so.
pub fn reply_subject(original: &str) -> String {
    let s = original.trim();
    if s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("re:")) {
        s.to_owned()
    } else {
        format!("Re: {s}").trim_end().to_owned()
    }
}

/// `Fwd: <subject>`, unless it already starts so.
pub fn forward_subject(original: &str) -> String {
    let s = original.trim();
    let already = s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("fwd:"))
        || s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("fw:"));
    if already {
        s.to_owned()
    } else {
        format!("Fwd: {s}").trim_end().to_owned()
    }
}

/// The recipients of a reply from the original's `Reply-To` or `From` value: the value itself
/// when it is ASCII (display names included), else only the addresses in it.
pub fn reply_recipients(value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.is_ascii() {
        return Some(value.to_owned());
    }
    let mut addresses = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('>') else { break };
        if let Some(a) = EmailAddress::parse(&after[..end]) {
            addresses.push(a.as_str().to_owned());
        }
        rest = &after[end + 1..];
    }
    if addresses.is_empty() {
        for token in value.split(|c: char| c == ',' || c.is_whitespace()) {
            if let Some(a) = EmailAddress::parse(token.trim_matches(|c: char| c == '<' || c == '>' || c == '"')) {
                addresses.push(a.as_str().to_owned());
            }
        }
    }
    (!addresses.is_empty()).then(|| addresses.join(", "))
}

/// A `Message-ID` value (`<…>`, one token).
fn is_message_id(s: &str) -> bool {
    s.len() > 2
        && s.len() <= 998
        && s.starts_with('<')
        && s.ends_with('>')
        && s.is_ascii()
        && !s.contains(char::is_whitespace)
}

/// The `References` of a reply: the original's (its last ids) and the original's id.
pub fn references(original_references: Option<&str>, message_id: &str) -> String {
    let mut ids: Vec<&str> =
        original_references.unwrap_or("").split_whitespace().filter(|id| is_message_id(id)).collect();
    ids.retain(|id| *id != message_id);
    let skip = ids.len().saturating_sub(MAX_REFERENCES - 1);
    let mut kept: Vec<&str> = ids.into_iter().skip(skip).collect();
    kept.push(message_id);
    kept.join(" ")
}

/// The note of a forward, followed by the usual block about the original.
pub fn forward_text(note: &str, original: &[(String, String)]) -> String {
    let mut text = String::new();
    if !note.trim().is_empty() {
        text.push_str(note.trim_end());
        text.push_str("\n\n");
    }
    text.push_str("---------- Forwarded message ----------\n");
    for name in ["From", "Date", "Subject", "To"] {
        if let Some(value) = header(original, name) {
            text.push_str(&format!("{name}: {value}\n"));
        }
    }
    text.push_str("(the original message is attached)\n");
    text
}

/// Decodes Gmail's base64url (padding and line breaks tolerated).
pub fn decode_base64url(s: &str) -> Option<Vec<u8>> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace() && *c != '=').collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(clean.as_bytes()).ok()
}

// ---------------------------------------------------------------------------------------------
// Gmail calls
// ---------------------------------------------------------------------------------------------

fn message_url(ctx: &StepContext<'_>, id: &str, query: &[(&str, &str)]) -> Result<url::Url, HandlerError> {
    api_url(&ctx.deps.gmail_base, &["gmail", "v1", "users", "me", "messages", id], query, WHAT)
}

/// Sends a raw message. After the request may have reached Gmail, a failure is `unknown`:
/// only a refused connection (nothing sent), a 429 (Gmail took nothing) and other 4xx
/// (refused) are not.
async fn send_raw(ctx: &StepContext<'_>, raw: &[u8], thread_id: Option<&str>) -> Result<Value, HandlerError> {
    let url = message_url(ctx, "send", &[])?;
    let mut body = json!({"raw": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)});
    if let Some(thread) = thread_id {
        body["threadId"] = json!(thread);
    }
    let token = ctx.google_token().await?;
    let response = match ctx.deps.http.post(url).bearer_auth(token.expose()).json(&body).send().await {
        Ok(response) => response,
        Err(e) if e.is_connect() || e.is_builder() => return Err(HandlerError::from_reqwest(&e, WHAT)),
        Err(e) => {
            return Err(HandlerError::unknown(
                "send_outcome_unknown",
                format!("Gmail may or may not have sent the message: {e}"),
            ))
        }
    };
    let status = response.status().as_u16();
    let wait = retry_after(response.headers());
    if (200..300).contains(&status) {
        // Sent. An answer that cannot be read does not change that.
        let sent = match read_capped(response, MAX_ANSWER_BYTES, WHAT).await {
            Ok((bytes, false)) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        return Ok(json!({"message_id": sent.get("id"), "thread_id": sent.get("threadId")}));
    }
    let text = match read_capped(response, 4096, WHAT).await {
        Ok((bytes, _)) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    let refused = HandlerError::from_status(status, WHAT, &text);
    Err(match status {
        429 => refused.retry_after(wait),
        408 => HandlerError::unknown(
            "http_408",
            format!("Gmail may or may not have sent the message: {}", refused.message),
        ),
        s if s >= 500 => HandlerError::unknown(
            format!("http_{s}"),
            format!("Gmail may or may not have sent the message: {}", refused.message),
        ),
        _ => refused,
    })
}

fn metadata_header<'a>(message: &'a Value, name: &str) -> Option<&'a str> {
    message
        .pointer("/payload/headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|h| h.get("name").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h.get("value").and_then(Value::as_str))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl Handler for Reply {
    fn validate(&self, payload: &Value) -> Result<(), HandlerError> {
        google_api::check(REPLY, payload)
    }

    fn preview(&self, payload: &Value) -> String {
        google_api::preview(REPLY, payload)
    }

    fn reversibility(&self, _: &Value) -> Reversibility {
        Reversibility::Irreversible
    }

    fn idempotent(&self) -> bool {
        false
    }

    fn integration(&self, _: &Value) -> Option<String> {
        Some("gmail".into())
    }

    fn snapshot<'a>(&'a self, _: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async { Ok(Value::Null) })
    }

    fn execute<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let p = ctx.payload;
            google_api::check(REPLY, p)?;
            let id = google_api::field(p, "message_id");
            let url = message_url(
                ctx,
                id,
                &[
                    ("format", "metadata"),
                    ("metadataHeaders", "From"),
                    ("metadataHeaders", "Subject"),
                    ("metadataHeaders", "Message-ID"),
                    ("metadataHeaders", "Reply-To"),
                    ("metadataHeaders", "References"),
                ],
            )?;
            let original = call(ctx, Method::GET, url, None, WHAT).await?.into_object(WHAT)?;
            let thread_id = original.get("threadId").and_then(Value::as_str).filter(|t| !t.is_empty());
            let to = metadata_header(&original, "Reply-To")
                .or_else(|| metadata_header(&original, "From"))
                .and_then(reply_recipients)
                .ok_or_else(|| {
                    HandlerError::permanent("no_sender", format!("Gmail message {id} has no sender to reply to"))
                })?;
            let subject = reply_subject(metadata_header(&original, "Subject").unwrap_or_default());
            let cc = strings(p.get("cc")).join(", ");
            let message_id = metadata_header(&original, "Message-ID").filter(|m| is_message_id(m));
            let refs = message_id.map(|m| references(metadata_header(&original, "References"), m));
            let mut headers: Vec<(&str, &str)> = vec![("To", to.as_str())];
            if !cc.is_empty() {
                headers.push(("Cc", cc.as_str()));
            }
            headers.push(("Subject", subject.as_str()));
            if let (Some(m), Some(refs)) = (message_id, refs.as_deref()) {
                headers.push(("In-Reply-To", m));
                headers.push(("References", refs));
            }
            let text = google_api::field(p, "text");
            let body = match p.get("html").and_then(Value::as_str) {
                Some(html) => MailBody::Alternative { text, html },
                None => MailBody::Text(text),
            };
            let raw = build_message(&headers, &body, &ctx.idempotency_key)
                .map_err(|e| HandlerError::permanent("header_refused", e))?;
            let sent = send_raw(ctx, &raw, thread_id).await?;
            Ok(json!({"in_reply_to": id, "to": to, "cc": cc, "subject": subject,
                      "message_id": sent["message_id"], "thread_id": sent["thread_id"]}))
        })
    }

    fn rollback<'a>(
        &'a self,
        _: &'a StepContext<'a>,
        _: &'a Value,
        _: &'a Value,
    ) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        super::sent_mail_cannot_be_recalled()
    }
}

impl Handler for Forward {
    fn validate(&self, payload: &Value) -> Result<(), HandlerError> {
        google_api::check(FORWARD, payload)
    }

    fn preview(&self, payload: &Value) -> String {
        google_api::preview(FORWARD, payload)
    }

    fn reversibility(&self, _: &Value) -> Reversibility {
        Reversibility::Irreversible
    }

    fn idempotent(&self) -> bool {
        false
    }

    fn integration(&self, _: &Value) -> Option<String> {
        Some("gmail".into())
    }

    fn snapshot<'a>(&'a self, _: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async { Ok(Value::Null) })
    }

    fn execute<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        Box::pin(async move {
            let p = ctx.payload;
            google_api::check(FORWARD, p)?;
            {
                let policy = ctx.deps.policy.current().await;
                forward_domains_allowed(p, policy.forward_domains()).map_err(|(field, message)| {
                    HandlerError::permanent("domain_not_allowed", format!("{field}: {message}"))
                })?;
            }
            let id = google_api::field(p, "message_id");
            let url = message_url(ctx, id, &[("format", "raw")])?;
            let answer = call_capped(ctx, Method::GET, url, None, MAX_ORIGINAL_ANSWER_BYTES, WHAT).await?;
            if !answer.is_success() {
                return Err(answer.error(WHAT));
            }
            if answer.truncated {
                return Err(HandlerError::permanent(
                    "original_too_large",
                    format!(
                        "Gmail message {id} is too large to forward (over {MAX_ORIGINAL_ANSWER_BYTES} bytes encoded)"
                    ),
                ));
            }
            let original =
                answer.json.get("raw").and_then(Value::as_str).and_then(decode_base64url).ok_or_else(|| {
                    HandlerError::permanent("bad_response", format!("Gmail gave no raw form of message {id}"))
                })?;
            let original_headers = raw_headers(&original);
            let subject = forward_subject(header(&original_headers, "Subject").unwrap_or_default());
            let to = strings(p.get("to")).join(", ");
            let text = forward_text(google_api::field(p, "text"), &original_headers);
            let raw = build_message(
                &[("To", to.as_str()), ("Subject", subject.as_str())],
                &MailBody::Forward { text: &text, original: &original },
                &ctx.idempotency_key,
            )
            .map_err(|e| HandlerError::permanent("header_refused", e))?;
            let sent = send_raw(ctx, &raw, None).await?;
            Ok(json!({"forwarded": id, "to": to, "subject": subject,
                      "message_id": sent["message_id"], "thread_id": sent["thread_id"]}))
        })
    }

    fn rollback<'a>(
        &'a self,
        _: &'a StepContext<'a>,
        _: &'a Value,
        _: &'a Value,
    ) -> HandlerFuture<'a, Result<Value, HandlerError>> {
        super::sent_mail_cannot_be_recalled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(raw: &[u8]) -> String {
        String::from_utf8(raw.to_vec()).unwrap()
    }

    #[test]
    fn a_plain_reply_has_its_headers_and_a_base64_body() {
        let raw = build_message(
            &[("To", "Ann <ann@example.com>"), ("Subject", "Re: Hi"), ("In-Reply-To", "<m1@mail.example>")],
            &MailBody::Text("Thanks!\nBye"),
            "key",
        )
        .unwrap();
        let text = text_of(&raw);
        assert!(text.starts_with("To: Ann <ann@example.com>\r\nSubject: Re: Hi\r\nIn-Reply-To: <m1@mail.example>\r\n"));
        assert!(text.contains("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap().trim_end();
        let decoded = base64::engine::general_purpose::STANDARD.decode(body.replace("\r\n", "")).unwrap();
        assert_eq!(decoded, b"Thanks!\r\nBye");
    }

    #[test]
    fn line_breaks_in_header_values_are_refused() {
        for bad in ["x\r\nBcc: evil@example.com", "x\nBcc: e@example.com", "x\rY", "a\u{0}b"] {
            let err = build_message(&[("Subject", bad)], &MailBody::Text("t"), "k").unwrap_err();
            assert!(err.contains("Subject"), "{err}");
        }
        assert!(build_message(&[("Bad Name", "x")], &MailBody::Text("t"), "k").is_err());
        assert!(build_message(&[("To", "Zoë <z@example.com>")], &MailBody::Text("t"), "k").is_err());
    }

    #[test]
    fn non_ascii_subjects_are_encoded_and_long_headers_folded() {
        let subject = format!("Re: {}", "é".repeat(60));
        let raw = text_of(&build_message(&[("Subject", subject.as_str())], &MailBody::Text("t"), "k").unwrap());
        let head = raw.split("\r\n\r\n").next().unwrap();
        assert!(head.starts_with("Subject: =?UTF-8?B?"), "{head}");
        assert!(head.lines().all(|l| l.len() <= 78), "{head}");
        let refs: Vec<String> = (0..10).map(|i| format!("<message-{i}@mail.example.com>")).collect();
        let joined = refs.join(" ");
        let raw = text_of(&build_message(&[("References", joined.as_str())], &MailBody::Text("t"), "k").unwrap());
        let head = raw.split("\r\n\r\n").next().unwrap();
        assert!(head.lines().all(|l| l.len() <= 78), "{head}");
        assert!(head.contains("\r\n <message-"));
        let unfolded: Vec<(String, String)> = raw_headers(raw.as_bytes());
        assert_eq!(header(&unfolded, "references"), Some(joined.as_str()));
    }

    #[test]
    fn html_replies_are_alternatives() {
        let raw = text_of(
            &build_message(&[("To", "a@example.com")], &MailBody::Alternative { text: "t", html: "<b>t</b>" }, "k")
                .unwrap(),
        );
        assert!(raw.contains("Content-Type: multipart/alternative; boundary=\"=_actiongate_k\""));
        assert!(raw.contains("Content-Type: text/html; charset=utf-8"));
        assert!(raw.trim_end().ends_with("--=_actiongate_k--"));
    }

    #[test]
    fn a_forward_attaches_the_original_with_a_boundary_it_does_not_contain() {
        let original = b"From: a@example.com\r\nSubject: Hello\r\n\r\nbody --=_actiongate_k here\r\n";
        let raw = build_message(
            &[("To", "b@example.com"), ("Subject", "Fwd: Hello")],
            &MailBody::Forward { text: "FYI", original },
            "k",
        )
        .unwrap();
        let text = text_of(&raw);
        assert!(text.contains("boundary=\"=_actiongate_k_1\""), "{text}");
        assert!(text.contains("Content-Type: message/rfc822\r\n"));
        assert!(contains(&raw, original));
        assert!(text.ends_with("\r\n--=_actiongate_k_1--\r\n"));
    }

    #[test]
    fn subjects_and_recipients_of_replies_and_forwards() {
        assert_eq!(reply_subject("Hello"), "Re: Hello");
        assert_eq!(reply_subject("RE: Hello"), "RE: Hello");
        assert_eq!(reply_subject(""), "Re:");
        assert_eq!(reply_subject("é"), "Re: é");
        assert_eq!(forward_subject("Hello"), "Fwd: Hello");
        assert_eq!(forward_subject("Fw: Hello"), "Fw: Hello");
        assert_eq!(reply_recipients("Ann <ann@example.com>").as_deref(), Some("Ann <ann@example.com>"));
        assert_eq!(
            reply_recipients("Zoë <zoe@example.com>, Bo <bo@example.org>").as_deref(),
            Some("zoe@example.com, bo@example.org")
        );
        assert_eq!(reply_recipients("Zoë zoe@example.com").as_deref(), Some("zoe@example.com"));
        assert_eq!(reply_recipients("Zoë"), None);
        assert_eq!(reply_recipients("  "), None);
    }

    #[test]
    fn references_chain_the_thread() {
        assert_eq!(references(None, "<b@x>"), "<b@x>");
        assert_eq!(references(Some("<a@x> junk <b@x>"), "<c@x>"), "<a@x> <b@x> <c@x>");
        let long: Vec<String> = (0..30).map(|i| format!("<{i}@x>")).collect();
        let refs = references(Some(&long.join(" ")), "<new@x>");
        assert_eq!(refs.split(' ').count(), MAX_REFERENCES);
        assert!(refs.starts_with("<11@x>") && refs.ends_with("<29@x> <new@x>"));
    }

    #[test]
    fn raw_headers_are_unfolded_and_the_body_ignored() {
        let raw = b"From: a@example.com\r\nSubject: Long\r\n subject\r\nX: 1\r\n\r\nSubject: not a header\r\n";
        let headers = raw_headers(raw);
        assert_eq!(header(&headers, "subject"), Some("Long subject"));
        assert_eq!(headers.len(), 3);
        let text = forward_text("Look", &headers);
        assert!(text.starts_with("Look\n\n---------- Forwarded message ----------\nFrom: a@example.com\n"));
        assert_eq!(decode_base64url("SGk_Pz4-fg=="), Some(b"Hi??>>~".to_vec()));
        assert_eq!(decode_base64url("-__-"), Some(vec![0xfb, 0xff, 0xfe]));
        assert_eq!(decode_base64url("aGk="), Some(b"hi".to_vec()));
        assert_eq!(decode_base64url("%%"), None);
    }
}
