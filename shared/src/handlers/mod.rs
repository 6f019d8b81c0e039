//! Action handlers: one module per target system, all behind [`Handler`], registered in one
//! place ([`Registry::standard`]).
//!
//! A handler validates a payload, describes it for previews, takes a snapshot of what it is
//! about to change, executes the change with an idempotency key derived from (action, step),
//! and rolls back from the snapshot. Errors say whether trying again could help.

pub mod calendar;
pub mod email;
pub mod gmail;
pub mod payment;
pub mod webhook;

use crate::domain::{ActionId, UserId};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type HandlerFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whether a failure is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Throttling, 5xx, timeouts, connection errors.
    Transient,
    /// Bad input, 4xx, refused by policy: the same request will fail again.
    Permanent,
    /// The request may or may not have taken effect (a timeout after sending, a 5xx from a
    /// target without idempotency keys). Retried only where repeating is safe; otherwise a
    /// human checks (`outcome_unknown`).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{code}: {message}")]
pub struct HandlerError {
    pub kind: ErrorKind,
    /// Machine-readable (`http_503`, `timeout`, `invalid_payload`, …).
    pub code: String,
    pub message: String,
}

impl HandlerError {
    pub fn transient(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Transient, code: code.into(), message: message.into() }
    }

    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Permanent, code: code.into(), message: message.into() }
    }

    pub fn unknown(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Unknown, code: code.into(), message: message.into() }
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// Classifies an HTTP status from a target API.
    pub fn from_status(status: u16, what: &str, body: &str) -> Self {
        let snippet: String = body.chars().take(300).collect();
        let message = format!("{what} answered {status}: {snippet}");
        if status == 429 || status == 408 || status >= 500 {
            Self::transient(format!("http_{status}"), message)
        } else {
            Self::permanent(format!("http_{status}"), message)
        }
    }

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

/// Whether a completed step can be undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reversibility {
    Reversible,
    /// e.g. a sent email: rollback reports it, never fakes it.
    Irreversible,
}

/// Everything a handler gets for one step.
pub struct StepContext<'a> {
    pub action_id: ActionId,
    pub user: &'a UserId,
    pub step: usize,
    pub payload: &'a Value,
    /// Stable across attempts: derived from (action id, step).
    pub idempotency_key: String,
    pub deps: &'a Dependencies,
    /// The user's Google token, read once for the snapshot and the change of one attempt.
    google_token: tokio::sync::OnceCell<Secret>,
}

impl<'a> StepContext<'a> {
    pub fn new(action_id: ActionId, user: &'a UserId, step: usize, payload: &'a Value, deps: &'a Dependencies) -> Self {
        Self {
            action_id,
            user,
            step,
            payload,
            idempotency_key: idempotency_key(action_id, step),
            deps,
            google_token: tokio::sync::OnceCell::new(),
        }
    }

    /// The user's Google access token (a failed read is not kept, so the next call tries again).
    pub async fn google_token(&self) -> Result<&Secret, HandlerError> {
        self.google_token.get_or_try_init(|| self.deps.credentials.google_token(self.user)).await
    }
}

/// The stable idempotency key of a step's side effect.
pub fn idempotency_key(action_id: ActionId, step: usize) -> String {
    crate::domain::digest::hex_sha256(format!("actiongate:{action_id}:{step}").as_bytes())
}

/// Shared clients and settings the handlers use.
pub struct Dependencies {
    pub http: reqwest::Client,
    pub mailer: Option<crate::mail::Mailer>,
    pub credentials: Arc<dyn CredentialProvider>,
    pub gmail_base: String,
    pub calendar_base: String,
    pub guard: webhook::AddressGuard,
    pub policy: Arc<crate::policy_source::PolicySource>,
    pub kyc: Arc<dyn KycCheck>,
}

impl Dependencies {
    /// The real clients: Google APIs and webhooks over HTTPS, SES, tokens from the store.
    pub fn from_config(
        aws: &aws_config::SdkConfig,
        store: &crate::store::Store,
        config: crate::config::HandlerConfig,
        policy: Arc<crate::policy_source::PolicySource>,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .connect_timeout(std::time::Duration::from_secs(5))
                .build()?,
            mailer: Some(crate::mail::Mailer::new(
                crate::lazy::OnFirstUse::aws(aws, aws_sdk_sesv2::Client::new),
                config.sender,
                config.configuration_set,
            )),
            credentials: Arc::new(store.clone()),
            kyc: Arc::new(store.clone()),
            gmail_base: config.gmail_base,
            calendar_base: config.calendar_base,
            guard: webhook::AddressGuard::new(webhook::Allowlist::parse(&config.webhook_allowlist))?,
            policy,
        })
    }
}

/// A secret that never appears in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where a user's OAuth access token for Google APIs comes from (stored by the host application).
pub trait CredentialProvider: Send + Sync {
    fn google_token<'a>(&'a self, user: &'a UserId) -> HandlerFuture<'a, Result<Secret, HandlerError>>;
}

/// Whether a user passed KYC (the payment handlers check it again at execution time).
pub trait KycCheck: Send + Sync {
    fn verified<'a>(&'a self, user: &'a UserId) -> HandlerFuture<'a, Result<bool, HandlerError>>;
}

impl CredentialProvider for crate::store::Store {
    fn google_token<'a>(&'a self, user: &'a UserId) -> HandlerFuture<'a, Result<Secret, HandlerError>> {
        Box::pin(async move {
            match self.google_token(user).await {
                Ok(Some(token)) => Ok(Secret::new(token)),
                Ok(None) => Err(HandlerError::permanent(
                    "no_credentials",
                    format!("no Google access token is stored for user {user}; the host application sets it with PUT /admin/users/{user}/google-token"),
                )),
                Err(e) => Err(HandlerError::transient("store_unavailable", e.to_string())),
            }
        })
    }
}

impl KycCheck for crate::store::Store {
    fn verified<'a>(&'a self, user: &'a UserId) -> HandlerFuture<'a, Result<bool, HandlerError>> {
        Box::pin(async move {
            self.kyc_verified(user).await.map_err(|e| HandlerError::transient("store_unavailable", e.to_string()))
        })
    }
}

pub trait Handler: Send + Sync {
    /// Checks the payload again at execution time (it was validated at intake).
    fn validate(&self, payload: &Value) -> Result<(), HandlerError>;
    /// What it will do, in words.
    fn preview(&self, payload: &Value) -> String;
    fn reversibility(&self, payload: &Value) -> Reversibility;
    /// Whether re-running after an unknown outcome is safe (the target honours the key or the
    /// change is naturally idempotent).
    fn idempotent(&self) -> bool;
    /// What the target looks like before the change (`Null` when there is nothing to keep).
    fn snapshot<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>>;
    /// Makes the change; returns what rollback needs besides the snapshot.
    fn execute<'a>(&'a self, ctx: &'a StepContext<'a>) -> HandlerFuture<'a, Result<Value, HandlerError>>;
    /// Undoes the change from the snapshot and the execution result.
    fn rollback<'a>(
        &'a self,
        ctx: &'a StepContext<'a>,
        snapshot: &'a Value,
        result: &'a Value,
    ) -> HandlerFuture<'a, Result<Value, HandlerError>>;
}

/// Every handler, by action type.
pub struct Registry {
    handlers: BTreeMap<&'static str, Arc<dyn Handler>>,
}

impl Registry {
    /// The one place handlers are registered.
    pub fn standard() -> Self {
        let mut handlers: BTreeMap<&'static str, Arc<dyn Handler>> = BTreeMap::new();
        handlers.insert("send_email", Arc::new(email::SendEmail));
        for (name, change) in gmail::CHANGES {
            handlers.insert(name, Arc::new(gmail::GmailModify { change }));
        }
        handlers.insert("calendar.create_event", Arc::new(calendar::CreateEvent));
        handlers.insert("http_request", Arc::new(webhook::HttpRequest));
        handlers.insert("make_payment", Arc::new(payment::Payment { action_type: "make_payment" }));
        handlers.insert("make_purchase", Arc::new(payment::Payment { action_type: "make_purchase" }));
        Self { handlers }
    }

    pub fn get(&self, action_type: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(action_type).cloned()
    }

    pub fn action_types(&self) -> impl Iterator<Item = &&'static str> {
        self.handlers.keys()
    }
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
            Err(e) => return Err(HandlerError::from_reqwest(&e, what)),
        }
    }
    Ok((body, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

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
