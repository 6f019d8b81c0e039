//! Action handlers: one module per target system, all behind [`Handler`], registered in one
//! place ([`Registry::standard`]).
//!
//! A handler validates a payload, describes it for previews, takes a snapshot of what it is
//! about to change, executes the change with an idempotency key derived from (action, step),
//! and rolls back from the snapshot. Errors say whether trying again could help.

pub mod calendar;
pub mod connector;
pub mod docs;
pub mod drive;
pub mod email;
pub mod gmail;
pub mod gmail_send;
pub mod google_api;
pub mod notify;
pub mod payment;
pub mod tasks;
pub mod webhook;

pub use crate::ports::handler::*;
use std::collections::BTreeMap;
use std::sync::Arc;

impl Registry {
    /// [`Registry::standard`], also running the types a policy declares through their
    /// connectors (keys from Secrets Manager, calls through the address guard).
    pub fn with_connectors(aws: &aws_config::SdkConfig, guard: Arc<dyn GuardedHttp>) -> Self {
        let secrets = crate::adapters::aws::secrets::SecretsManager::new(crate::adapters::aws::lazy::OnFirstUse::aws(
            aws,
            aws_sdk_secretsmanager::Client::new,
        ));
        Self::standard().with_declared(Arc::new(connector::Connectors::new(Arc::new(secrets), guard)))
    }

    /// [`Registry::with_connectors`] whose calls go through an address guard for `allowlist`
    /// (`WEBHOOK_ALLOWLIST`; empty where the function never calls a connector and the registry
    /// only describes declared types).
    pub fn with_connectors_allowing(aws: &aws_config::SdkConfig, allowlist: &str) -> Result<Self, reqwest::Error> {
        let guard = webhook::AddressGuard::new(webhook::Allowlist::parse(allowlist))?;
        Ok(Self::with_connectors(aws, Arc::new(guard)))
    }

    /// The one place handlers are registered.
    pub fn standard() -> Self {
        let mut handlers: BTreeMap<&'static str, Arc<dyn Handler>> = BTreeMap::new();
        handlers.insert("send_email", Arc::new(email::SendEmail));
        for (name, change) in gmail::CHANGES {
            handlers.insert(name, Arc::new(gmail::GmailModify { action_type: name, change }));
        }
        handlers.insert("calendar.create_event", Arc::new(calendar::CreateEvent));
        handlers.insert("gmail.reply", Arc::new(gmail_send::Reply));
        handlers.insert("gmail.forward", Arc::new(gmail_send::Forward));
        handlers.insert("drive.move_file", Arc::new(drive::MoveFile));
        handlers.insert("docs.create_document", Arc::new(docs::CreateDocument));
        handlers.insert("tasks.create", Arc::new(tasks::CreateTask));
        handlers.insert("http_request", Arc::new(webhook::HttpRequest));
        handlers.insert("make_payment", Arc::new(payment::Payment { action_type: "make_payment" }));
        handlers.insert("make_purchase", Arc::new(payment::Payment { action_type: "make_purchase" }));
        Self::new(handlers)
    }
}

impl HandlerError {
    /// Classifies a transport error.
    pub fn from_reqwest(e: &reqwest::Error, what: &str) -> Self {
        let chain = error_chain(e);
        if e.is_timeout() {
            Self::transient("timeout", format!("{what} timed out: {chain}"))
        } else if e.is_connect() || e.is_request() || e.is_body() {
            Self::transient("connection", format!("{what} could not be reached: {chain}"))
        } else if e.is_redirect() {
            Self::permanent("redirect_refused", format!("{what}: {chain}"))
        } else {
            Self::permanent("request_failed", format!("{what}: {chain}"))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl Dependencies {
    /// The real clients: Google APIs and webhooks over HTTPS, SES, tokens from the store.
    pub fn from_config(
        aws: &aws_config::SdkConfig,
        store: Arc<dyn crate::ports::store::Store>,
        config: crate::config::HandlerConfig,
        policy: Arc<dyn PolicyReader>,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .connect_timeout(std::time::Duration::from_secs(5))
                .build()?,
            mailer: Some(Arc::new(crate::adapters::aws::ses::SesMailer::new(
                crate::adapters::aws::lazy::OnFirstUse::aws(aws, aws_sdk_sesv2::Client::new),
                config.sender,
                config.configuration_set,
            ))),
            credentials: Arc::new(StoredCredentials(Arc::clone(&store))),
            kyc: Arc::new(StoredCredentials(store)),
            gmail_base: config.gmail_base,
            calendar_base: config.calendar_base,
            drive_base: config.drive_base,
            docs_base: config.docs_base,
            tasks_base: config.tasks_base,
            guard: Arc::new(webhook::AddressGuard::new(webhook::Allowlist::parse(&config.webhook_allowlist))?),
            policy,
        })
    }
}

/// The undo of a sent mail (SES or Gmail): refused, never faked.
pub(crate) fn sent_mail_cannot_be_recalled<'a>() -> HandlerFuture<'a, Result<serde_json::Value, HandlerError>> {
    Box::pin(async { Err(HandlerError::permanent("not_reversible", "a sent email cannot be recalled")) })
}

/// A response's `Retry-After` in seconds (an HTTP date is left to the backoff).
pub fn retry_after_secs(response: &reqwest::Response) -> Option<u64> {
    response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok())
}

/// Reads at most `cap` bytes of a response body.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
    what: &str,
) -> Result<(Vec<u8>, bool), HandlerError> {
    let mut body = Vec::new();
    let mut truncated = false;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap.saturating_sub(body.len());
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(HandlerError::from_reqwest(&e.without_url(), what)),
        }
    }
    Ok((body, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ActionId;

    #[test]
    fn http_statuses_are_classified() {
        assert!(HandlerError::from_status(503, "x", "").is_transient());
        assert!(HandlerError::from_status(429, "x", "").is_transient());
        assert!(!HandlerError::from_status(400, "x", "").is_transient());
        assert!(!HandlerError::from_status(404, "x", "").is_transient());
        assert_eq!(HandlerError::from_status(503, "x", "").code, "http_503");
    }

    #[test]
    fn idempotency_keys_are_stable_per_step_and_differ_between_steps() {
        let id = ActionId::new_v7(chrono::Utc::now());
        assert_eq!(idempotency_key(id, 0), idempotency_key(id, 0));
        assert_ne!(idempotency_key(id, 0), idempotency_key(id, 1));
        assert_eq!(idempotency_key(id, 0).len(), 64);
    }

    #[test]
    fn every_builtin_type_but_manual_ones_has_a_handler() {
        let registry = Registry::standard();
        for t in crate::validation::BUILTIN_ACTION_TYPES {
            assert_eq!(registry.get(t).is_some(), *t != "gmail.delete", "{t}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("ya29.token")), "Secret(<redacted>)");
    }
}
