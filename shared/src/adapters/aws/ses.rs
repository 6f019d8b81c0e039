//! Outgoing mail through SES v2. Messages are sent as raw MIME (multipart/alternative) so the
//! text and HTML parts both arrive exactly as written.

use crate::ports::mail::{Mail, MailError, MailFailure, Mailer};
use async_trait::async_trait;
use aws_sdk_sesv2::error::DisplayErrorContext;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};
use base64::Engine as _;

/// Classifies an SES error by its code and HTTP status.
pub fn classify_ses_error(code: Option<&str>, status: Option<u16>) -> MailFailure {
    match code {
        Some(
            "TooManyRequestsException"
            | "LimitExceededException"
            | "SendingPausedException"
            | "Throttling"
            | "ThrottlingException",
        ) => MailFailure::NotSentTransient,
        _ if status.is_some_and(|s| s >= 500) || status.is_none() => MailFailure::Unknown,
        _ => MailFailure::NotSentPermanent,
    }
}

fn classify_send_error(
    e: &aws_sdk_sesv2::error::SdkError<
        aws_sdk_sesv2::operation::send_email::SendEmailError,
        aws_smithy_runtime_api::http::Response,
    >,
) -> MailFailure {
    use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
    match e {
        // Never left this process.
        SdkError::ConstructionFailure(_) => MailFailure::NotSentPermanent,
        SdkError::ServiceError(service) => {
            classify_ses_error(service.err().code(), Some(service.raw().status().as_u16()))
        }
        // Timeouts, lost connections, unreadable answers: it may have been sent.
        _ => MailFailure::Unknown,
    }
}

#[derive(Clone)]
pub struct SesMailer {
    client: crate::adapters::aws::lazy::OnFirstUse<aws_sdk_sesv2::Client>,
    sender: String,
    configuration_set: Option<String>,
}

impl SesMailer {
    pub fn new(
        client: impl Into<crate::adapters::aws::lazy::OnFirstUse<aws_sdk_sesv2::Client>>,
        sender: impl Into<String>,
        configuration_set: Option<String>,
    ) -> Self {
        Self { client: client.into(), sender: sender.into(), configuration_set }
    }
}

#[async_trait]
impl Mailer for SesMailer {
    fn sender(&self) -> &str {
        &self.sender
    }

    /// Sends one message; returns the SES message id.
    async fn send(&self, mail: &Mail) -> Result<String, MailError> {
        let raw = mime_message(&self.sender, mail, &boundary());
        let out = self
            .client
            .send_email()
            .from_email_address(&self.sender)
            .destination(
                Destination::builder()
                    .set_to_addresses(Some(mail.to.clone()))
                    .set_cc_addresses((!mail.cc.is_empty()).then(|| mail.cc.clone()))
                    .build(),
            )
            .content(
                EmailContent::builder()
                    .raw(
                        RawMessage::builder()
                            .data(Blob::new(raw.into_bytes()))
                            .build()
                            .map_err(|e| MailError::new(MailFailure::NotSentPermanent, e.to_string()))?,
                    )
                    .build(),
            )
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await
            .map_err(|e| MailError::new(classify_send_error(&e), DisplayErrorContext(e).to_string()))?;
        Ok(out.message_id.unwrap_or_default())
    }
}

fn boundary() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("=_actiongate_{}", crate::domain::token::hex(&b))
}

/// A multipart/alternative message with base64-encoded UTF-8 parts (safe for any content and
/// any line length).
pub fn mime_message(from: &str, mail: &Mail, boundary: &str) -> String {
    let b64 = |s: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        encoded.as_bytes().chunks(76).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("\r\n")
    };
    format!(
        "From: {from}\r\n{to}{cc}{subject}MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{text}\r\n\
         --{boundary}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{html}\r\n\
         --{boundary}--\r\n",
        to = header("To", &mail.to.join(", ")),
        cc = if mail.cc.is_empty() { String::new() } else { header("Cc", &mail.cc.join(", ")) },
        subject = header("Subject", &mail.subject),
        text = b64(&mail.text),
        html = b64(&mail.html),
    )
}

/// One header line, folded (long subjects and recipient lists stay under SES's line limit);
/// control characters are dropped first, so nothing can inject a header.
fn header(name: &str, value: &str) -> String {
    let clean: String = value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    crate::domain::mime::header_line(name, &clean)
        .unwrap_or_else(|_| crate::domain::mime::fold(name, &crate::domain::mime::encoded_words(clean.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_before_sending_is_retried() {
        assert_eq!(classify_ses_error(Some("TooManyRequestsException"), Some(429)), MailFailure::NotSentTransient);
        assert_eq!(classify_ses_error(Some("LimitExceededException"), Some(400)), MailFailure::NotSentTransient);
        assert_eq!(classify_ses_error(Some("MessageRejected"), Some(400)), MailFailure::NotSentPermanent);
        assert_eq!(classify_ses_error(Some("BadRequestException"), Some(400)), MailFailure::NotSentPermanent);
        assert_eq!(classify_ses_error(Some("InternalFailure"), Some(500)), MailFailure::Unknown);
        assert_eq!(classify_ses_error(None, Some(503)), MailFailure::Unknown);
    }

    #[test]
    fn mime_message_has_both_parts_and_safe_headers() {
        let mail = Mail {
            to: vec!["a@example.com".into()],
            cc: vec!["c@example.com".into()],
            subject: "Approve: pay €5\r\nBcc: evil@example.com".into(),
            text: "plain".into(),
            html: "<p>html</p>".into(),
        };
        let raw = mime_message("from@example.com", &mail, "B");
        assert!(raw.contains("Content-Type: multipart/alternative; boundary=\"B\""));
        assert!(raw.contains("Subject: =?UTF-8?B?"));
        assert!(raw.contains("\r\nCc: c@example.com\r\n"));
        assert!(!raw.contains("\r\nBcc:"));
        assert!(raw.contains(&base64::engine::general_purpose::STANDARD.encode("plain")));
        assert!(raw.ends_with("--B--\r\n"));
    }

    #[test]
    fn long_subjects_and_recipient_lists_are_folded_under_the_line_limit() {
        let mail = Mail {
            to: (0..50).map(|i| format!("person-{i}@example.com")).collect(),
            cc: vec![],
            subject: "é".repeat(998),
            text: "t".into(),
            html: "<p>t</p>".into(),
        };
        let raw = mime_message("actiongate@example.com", &mail, "b");
        let head = &raw[..raw.find("\r\n\r\n").unwrap()];
        assert!(head.split("\r\n").all(|line| line.len() <= 998), "every header line fits");
        assert!(head.split("\r\n").filter(|l| l.starts_with(' ')).count() > 10, "folded");
        assert!(!head.contains("\n\n") && head.contains("Subject: =?UTF-8?B?"));
    }
}
