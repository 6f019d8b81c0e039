//! The intake service: every route of the intake function.
//!
//! `POST /actions` validates, evaluates the policy, consumes rate-limit units and stores the
//! action with its audit trail in one transaction, then queues tier-1 work. Reads enforce
//! ownership: anyone who may not see an action gets the same 404 as for a missing one.
//!
//! This file holds what the route groups share; [`create`] is `POST /actions`, [`reads`] the
//! owner's other routes, [`admin`] the administrators'. `entry::api_intake` routes requests here.

use crate::domain::action::Step;
use crate::domain::approval;
use crate::domain::caller::{Identity, RequestMeta};
use crate::domain::custom_types::CustomTypes;
use crate::domain::guards::CounterSpec;
use crate::domain::{Action, ActionId, AuditEvent, EmailAddress, IdempotencyKey, Status, Tier, UserId};
use crate::policy::{Decision, Policy, Subject, Verdict};
use crate::ports::api::{ApiError, Call, Reply};
use crate::ports::clock::{format_time, Clock};
use crate::ports::handler::Registry;
use crate::ports::queue::{ExecuteMessage, WorkQueue};
use crate::ports::store::{CreateError, Store, TransitionError};
use crate::services::notices::ApprovalMail;
use crate::services::policy_source::PolicySource;
use crate::validation::CreateActionRequest;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

mod admin;
mod consult;
mod create;
mod reads;

/// The longest `GET /actions/{id}?wait=` may hold the request (within API Gateway's 30 s).
pub const MAX_WAIT_SECS: u64 = 25;
/// Largest request body accepted; payloads are capped separately at 64 KiB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
const DEFAULT_PAGE: i32 = 20;
const MAX_PAGE: i32 = 100;
/// Events of a system audit stream (policy, breaker, a user's) per response.
const TRAIL_PAGE: i32 = 100;

pub struct IntakeService {
    store: Arc<dyn Store>,
    queue: Arc<dyn WorkQueue>,
    policies: Arc<PolicySource>,
    approval_mail: ApprovalMail,
    /// Describes actions in words (dry runs, approval mail): each handler's own preview.
    registry: Registry,
    clock: Arc<dyn Clock>,
    /// The declared types' compiled schemas, for the policy they were compiled from (compiled
    /// once per policy, not per request).
    custom: std::sync::Mutex<Option<(Arc<Policy>, Arc<CustomTypes>)>>,
    /// Gives each user the key their notification receivers check signatures with.
    notification_keys: Option<Arc<dyn crate::ports::notify::Deliverer>>,
    /// Reads what a change's target looks like (a Gmail message's labels) when approval is
    /// asked for, so the approver sees before → after.
    lookups: Option<Arc<crate::ports::handler::Dependencies>>,
}

impl IntakeService {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn WorkQueue>,
        policies: Arc<PolicySource>,
        approval_mail: ApprovalMail,
        registry: Registry,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            queue,
            policies,
            approval_mail,
            registry,
            clock,
            custom: Default::default(),
            notification_keys: None,
            lookups: None,
        }
    }

    /// Reads the targets of Gmail label changes that need approval with `deps` (read only).
    pub fn with_lookups(mut self, deps: Arc<crate::ports::handler::Dependencies>) -> Self {
        self.lookups = Some(deps);
        self
    }

    /// Serves `GET /notifications/key` from `keys`.
    pub fn with_notification_keys(mut self, keys: Arc<dyn crate::ports::notify::Deliverer>) -> Self {
        self.notification_keys = Some(keys);
        self
    }

    /// `GET /notifications/key`: the key the caller's receivers check notifications with (their
    /// own: nobody else's receiver can be sent a notification that passes for theirs).
    pub async fn notification_key(&self, identity: &Identity) -> Result<Reply, ApiError> {
        let keys = self.notification_keys.as_ref().ok_or_else(|| ApiError::Unavailable {
            code: "notifications_unavailable",
            message: "this deployment signs no notifications".into(),
            retry_after_secs: None,
        })?;
        let key = keys.receiver_key(&identity.user).await.map_err(|e| ApiError::Unavailable {
            code: "notifications_unavailable",
            message: format!("the signing key cannot be read now: {}", e.code),
            retry_after_secs: Some(30),
        })?;
        Ok(Reply::json(
            200,
            &json!({"user_id": identity.user, "key": key, "algorithm": "HMAC-SHA256", "header": "Actiongate-Signature"}),
        ))
    }

    /// The declared types of `policy`, compiled once per policy read.
    fn custom_types(&self, policy: &Arc<Policy>) -> Result<Arc<CustomTypes>, ApiError> {
        let mut cached = self.custom.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((of, types)) = cached.as_ref() {
            if Arc::ptr_eq(of, policy) {
                return Ok(Arc::clone(types));
            }
        }
        let types = Arc::new(policy.custom_types().map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?);
        *cached = Some((Arc::clone(policy), Arc::clone(&types)));
        Ok(types)
    }

    /// What each step of `action` does, in words.
    fn plan_lines(&self, action: &Action, policy: &Policy) -> Vec<String> {
        self.registry.step_lines(&action.steps, Some(policy))
    }

    /// `GET /actions/{id}`: an action the caller may see.
    ///
    /// With `?wait=<seconds>` (0 to [`MAX_WAIT_SECS`]) it answers as soon as the action's
    /// version changes, or after the wait with the current state. The action is read once at
    /// once, then after 0.25, 0.5 and 1 s and every second after: a wait of `n` seconds costs
    /// at most `n + 3` strongly consistent reads.
    pub async fn get(&self, call: &Call, id: &str, identity: &Identity) -> Result<Reply, ApiError> {
        let wait = match call.query("wait") {
            None | Some("") => 0,
            Some(v) => v.parse::<u64>().ok().filter(|w| *w <= MAX_WAIT_SECS).ok_or_else(|| {
                ApiError::invalid("wait", format!("must be a whole number of seconds from 0 to {MAX_WAIT_SECS}"))
            })?,
        };
        let mut action = self.visible_action(id, identity).await?;
        let seen = action.version;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
        let mut pause = std::time::Duration::from_millis(250);
        while action.version == seen {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(1));
            match self.store.get_action(action.action_id).await.map_err(ApiError::internal)? {
                Some(now) => action = now,
                None => break,
            }
        }
        // Who may see it can change while waiting (a new approver): decided on what is returned.
        if !identity.may_see(&action) {
            return Err(ApiError::NotFound("action"));
        }
        Ok(Reply::json(200, &action.to_api()))
    }

    /// An action the caller may see: owner, one of the people asked to decide it, or admin. Anyone else, and a
    /// malformed id, gets the same 404 as a missing action.
    async fn visible_action(&self, id: &str, identity: &Identity) -> Result<Action, ApiError> {
        let action = self.load(id).await?;
        if identity.may_see(&action) {
            Ok(action)
        } else {
            Err(ApiError::NotFound("action"))
        }
    }

    async fn owned_action(&self, id: &str, identity: &Identity) -> Result<Action, ApiError> {
        let action = self.load(id).await?;
        if action.user_id == identity.user {
            Ok(action)
        } else {
            Err(ApiError::NotFound("action"))
        }
    }

    async fn load(&self, id: &str) -> Result<Action, ApiError> {
        let id = ActionId::parse(id).ok_or(ApiError::NotFound("action"))?;
        tracing::Span::current().record("action_id", tracing::field::display(id));
        self.store.get_action(id).await.map_err(ApiError::internal)?.ok_or(ApiError::NotFound("action"))
    }
}

/// A change that lost to a concurrent one is a 409 the client may retry.
fn busy_or_internal(e: TransitionError) -> ApiError {
    match e {
        TransitionError::Conflict => ApiError::Conflict {
            code: "concurrent_update",
            message: "it was changed concurrently; read it again and retry".into(),
            extra: json!({}),
        },
        TransitionError::Store(e) => ApiError::internal(e),
    }
}
