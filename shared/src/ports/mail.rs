//! Outgoing mail: what a message is, what a failed send means, and the port that sends one.

use async_trait::async_trait;

#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What a failed send means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailFailure {
    /// SES refused it before sending, for a while (throttling, a sending quota): safe to retry.
    NotSentTransient,
    /// SES refused it for good (bad request, rejected, unverified sender, suspended account).
    NotSentPermanent,
    /// It may or may not have been sent (a timeout, a connection lost, a 5xx): SES has no
    /// idempotency key, so sending again could deliver it twice.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
#[error("sending mail failed: {message}")]
pub struct MailError {
    pub failure: MailFailure,
    pub message: String,
}

impl MailError {
    pub fn new(failure: MailFailure, message: impl Into<String>) -> Self {
        Self { failure, message: message.into() }
    }
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// The address mail comes from.
    fn sender(&self) -> &str;

    /// Sends one message; returns the provider's message id.
    async fn send(&self, mail: &Mail) -> Result<String, MailError>;

    /// [`Mailer::send`] that gives up after `limit` (the outcome is then unknown: the provider
    /// may still deliver it).
    async fn send_within(&self, mail: &Mail, limit: std::time::Duration) -> Result<String, MailError> {
        match tokio::time::timeout(limit, self.send(mail)).await {
            Ok(result) => result,
            Err(_) => Err(MailError::new(MailFailure::Unknown, format!("no answer within {}s", limit.as_secs()))),
        }
    }
}
