//! The handler port: what executing one step of an action on a target system looks like to the
//! services (validate, preview, snapshot, execute, rollback), how failures are classified, and
//! the registry the services look handlers up in. The handlers themselves live in
//! `crate::handlers`, one module per target system.

use crate::domain::action::Step;
use crate::domain::catalog;
use crate::domain::connectors::Phase;
use crate::domain::digest::hex_sha256;
use crate::domain::policy::Policy;
use crate::domain::{ActionId, StepKind, UserId};
use crate::ports::mail::Mailer;
use crate::ports::store::Store;
use async_trait::async_trait;
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
    /// How long the target asked to be left alone (`Retry-After`), for a transient error: the
    /// retry waits at least this long (at most a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

impl HandlerError {
    pub fn transient(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Transient, code: code.into(), message: message.into(), retry_after_secs: None }
    }

    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Permanent, code: code.into(), message: message.into(), retry_after_secs: None }
    }

    pub fn unknown(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: ErrorKind::Unknown, code: code.into(), message: message.into(), retry_after_secs: None }
    }

    /// This error, asking the retry to wait at least `secs` (capped at a day).
    pub fn retry_after(mut self, secs: Option<u64>) -> Self {
        self.retry_after_secs = secs.map(|s| s.min(86_400));
        self
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
    hex_sha256(format!("actiongate:{action_id}:{step}").as_bytes())
}

/// Shared clients and settings the handlers use.
pub struct Dependencies {
    pub http: reqwest::Client,
    pub mailer: Option<Arc<dyn Mailer>>,
    pub credentials: Arc<dyn CredentialProvider>,
    pub gmail_base: String,
    pub calendar_base: String,
    /// Google Drive (`https://www.googleapis.com/drive/v3`), Docs (`https://docs.googleapis.com/v1`)
    /// and Tasks (`https://tasks.googleapis.com/tasks/v1`).
    pub drive_base: String,
    pub docs_base: String,
    pub tasks_base: String,
    pub guard: Arc<dyn GuardedHttp>,
    pub policy: Arc<dyn PolicyReader>,
    pub kyc: Arc<dyn KycCheck>,
}

/// Outgoing HTTP to addresses an integrator names: every URL is checked, and the client
/// resolves names only to addresses the guard allows.
pub trait GuardedHttp: Send + Sync {
    /// Refuses a URL whose scheme, host or address is not allowed.
    fn check(&self, url: &url::Url) -> Result<(), HandlerError>;
    /// The client whose resolver applies the same rule to every connection.
    fn client(&self) -> &reqwest::Client;
    /// The same, following no redirect (signed calls go exactly where the policy says).
    fn client_without_redirects(&self) -> &reqwest::Client;
}

/// The policy in force now (the administrator's override, else the deployed one).
#[async_trait]
pub trait PolicyReader: Send + Sync {
    async fn current(&self) -> Arc<Policy>;
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

/// Credentials and KYC flags read from the store.
pub struct StoredCredentials(pub Arc<dyn Store>);

impl CredentialProvider for StoredCredentials {
    fn google_token<'a>(&'a self, user: &'a UserId) -> HandlerFuture<'a, Result<Secret, HandlerError>> {
        Box::pin(async move {
            match self.0.google_token(user).await {
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

impl KycCheck for StoredCredentials {
    fn verified<'a>(&'a self, user: &'a UserId) -> HandlerFuture<'a, Result<bool, HandlerError>> {
        Box::pin(async move {
            self.0.kyc_verified(user).await.map_err(|e| HandlerError::transient("store_unavailable", e.to_string()))
        })
    }
}

/// A question asked of a target before anything runs: a connector's `validate` (may this
/// payload run?) and `preview` (what will it do, in words?). Asked at intake, before the action
/// exists, so there is no action id or idempotency key yet.
pub struct Consultation<'a> {
    pub phase: Phase,
    pub user: &'a UserId,
    pub step: usize,
    pub payload: &'a Value,
    /// The most the answer may take (the intake request's remaining budget).
    pub budget: std::time::Duration,
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
    /// The integration this step calls (`gmail`, `calendar`, `ses`, `webhook:<host>`,
    /// `connector:<name>`, …): its own circuit breaker guards it. `None` for a handler that
    /// reaches nothing.
    fn integration(&self, _payload: &Value) -> Option<String> {
        None
    }
    /// Which target this handler reaches, when configuration can change it (a connector's URL
    /// and secret): kept on the step at its first attempt, so a retry, a recovery or an undo
    /// never goes to another target than the one that may already have acted.
    fn pin(&self) -> Option<String> {
        None
    }
    /// Asks the target a [`Consultation`]; `None` when this handler does not serve that phase
    /// (only connectors do). The answer is the target's JSON object.
    fn consult<'a>(&'a self, _: &'a Consultation<'a>) -> Option<HandlerFuture<'a, Result<Value, HandlerError>>> {
        None
    }
    /// Splits what `execute` returned into what the step shows (its `result`) and what only its
    /// undo needs, kept like a snapshot: in its own item for the rollback retention, never shown
    /// through the API, handed to `rollback` as its snapshot. A handler that keeps data this way
    /// takes no snapshot of its own. Default: everything is shown.
    fn keep_for_undo(&self, result: Value) -> (Value, Option<Value>) {
        (result, None)
    }
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
    /// The handlers of types a policy declares (connectors), built from the policy in force.
    declared: Option<Arc<dyn DeclaredHandlers>>,
}

/// Handlers for the action types a policy declares, from that policy (its connectors).
pub trait DeclaredHandlers: Send + Sync {
    fn handler(&self, action_type: &str, policy: &Policy) -> Option<Arc<dyn Handler>>;
}

impl Registry {
    /// The registry of `handlers` (the standard one is [`crate::handlers`]'s).
    pub fn new(handlers: BTreeMap<&'static str, Arc<dyn Handler>>) -> Self {
        Self { handlers, declared: None }
    }

    /// This registry, also running the types a policy declares through `declared`.
    pub fn with_declared(mut self, declared: Arc<dyn DeclaredHandlers>) -> Self {
        self.declared = Some(declared);
        self
    }

    /// The handler of `action_type`: a built-in one, else the one `policy` declares.
    pub fn resolve(&self, action_type: &str, policy: &Policy) -> Option<Arc<dyn Handler>> {
        self.get(action_type).or_else(|| self.declared.as_ref()?.handler(action_type, policy))
    }

    /// What one step does, in words: the handler's own preview; for work no handler runs (a
    /// tier-3 type, a wait) the catalogue's words. Approval mail and pages, dry runs and the
    /// console all describe actions through here.
    pub fn describe(&self, kind: &StepKind) -> String {
        self.describe_under(kind, None)
    }

    /// [`Registry::describe`], also describing the types `policy` declares (their handler's
    /// preview: the type and its description).
    pub fn describe_under(&self, kind: &StepKind, policy: Option<&Policy>) -> String {
        match kind {
            StepKind::Action { action_type, payload } => {
                match self.get(action_type).or_else(|| policy.and_then(|p| self.resolve(action_type, p))) {
                    Some(handler) => handler.preview(payload),
                    None => catalog::step_line(kind),
                }
            }
            _ => catalog::step_line(kind),
        }
    }

    /// What a plan does, a sentence a step.
    pub fn plan_lines<'a>(&self, steps: impl IntoIterator<Item = &'a StepKind>) -> Vec<String> {
        steps.into_iter().map(|kind| self.describe(kind)).collect()
    }

    /// What a stored action's steps do: [`Registry::describe`], followed by the sentence the
    /// step's connector gave at intake (`preview`), if any.
    pub fn step_lines(&self, steps: &[Step], policy: Option<&Policy>) -> Vec<String> {
        steps
            .iter()
            .map(|s| {
                let ours = self.describe_under(&s.kind, policy);
                // The connector's words are labelled as such, after ours: they may echo the
                // agent's payload.
                match &s.preview {
                    Some(theirs) => format!("{ours} (the connector says: {theirs})"),
                    None => ours,
                }
            })
            .collect()
    }

    pub fn get(&self, action_type: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(action_type).cloned()
    }

    pub fn action_types(&self) -> impl Iterator<Item = &&'static str> {
        self.handlers.keys()
    }
}
