//! The intake service: every route of the intake function.
//!
//! `POST /actions` validates, evaluates the policy, consumes rate-limit units and stores the
//! action with its audit trail in one transaction, then queues tier-1 work. Reads enforce
//! ownership: anyone who may not see an action gets the same 404 as for a missing one.
//!
//! This file routes and holds what the route groups share; [`create`] is `POST /actions`,
//! [`reads`] the owner's other routes, [`admin`] the administrators'.

use crate::domain::action::Step;
use crate::domain::approval;
use crate::domain::guards::CounterSpec;
use crate::domain::{Action, ActionId, AuditEvent, EmailAddress, IdempotencyKey, Status, Tier, UserId};
use crate::policy::{Decision, Policy, Subject, Verdict};
use crate::ports::clock::{format_time, Clock};
use crate::ports::handler::Registry;
use crate::ports::queue::{ExecuteMessage, WorkQueue};
use crate::ports::store::{CreateError, Store, TransitionError};
use crate::services::http::{self as api, ApiError, Identity, RequestMeta};
use crate::services::notices::ApprovalMail;
use crate::services::policy_source::PolicySource;
use crate::validation::{CreateActionRequest, BUILTIN_ACTION_TYPES};
use chrono::{DateTime, Utc};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::Instrument;

mod admin;
mod create;
mod reads;

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
        Self { store, queue, policies, approval_mail, registry, clock }
    }

    /// What each step of `action` does, in words.
    fn plan_lines(&self, action: &Action) -> Vec<String> {
        self.registry.plan_lines(action.steps.iter().map(|s| &s.kind))
    }

    /// Answers one API Gateway request. Never fails: every error becomes a response.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let span = tracing::info_span!("intake", method = %req.method(), path = %req.uri().path(), action_id = tracing::field::Empty);
        async {
            let response = match self.route(&req).await {
                Ok(response) => response,
                Err(err) => err.into_response(),
            };
            tracing::info!(status = response.status().as_u16(), "request handled");
            response
        }
        .instrument(span)
        .await
    }

    async fn route(&self, req: &Request) -> Result<Response<Body>, ApiError> {
        let identity = Identity::from_request(req).ok_or(ApiError::Unauthorized)?;
        let segments = api::path_segments(req);
        let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = req.method().as_str();
        let not_allowed = || Err(ApiError::MethodNotAllowed { method: method.to_owned() });
        match parts.as_slice() {
            ["actions"] => match method {
                "POST" => self.create(req, &identity).await,
                "GET" => self.list(req, &identity).await,
                _ => not_allowed(),
            },
            ["actions", id] => match method {
                "GET" => {
                    let action = self.visible_action(id, &identity).await?;
                    Ok(api::json_response(200, &action.to_api()))
                }
                _ => not_allowed(),
            },
            ["actions", id, "audit"] => match method {
                "GET" => self.audit(id, &identity).await,
                _ => not_allowed(),
            },
            ["actions", id, verb @ ("cancel" | "done" | "dismiss")] => match method {
                "POST" => self.close(req, id, verb, &identity).await,
                _ => not_allowed(),
            },
            ["stats"] => match method {
                "GET" => self.stats(&identity).await,
                _ => not_allowed(),
            },
            ["rate-limits", action_type] => match method {
                "GET" => self.rate_limits(action_type, &identity).await,
                _ => not_allowed(),
            },
            ["admin", "policy"] => match method {
                "GET" => self.policy_status(req, &identity).await,
                "PUT" => self.replace_policy(req, &identity).await,
                _ => not_allowed(),
            },
            ["admin", "circuit-breaker"] => match method {
                "GET" => self.breaker_status(req, &identity).await,
                _ => not_allowed(),
            },
            ["admin", "circuit-breaker", "reset"] => match method {
                "POST" => self.breaker_reset(&identity).await,
                _ => not_allowed(),
            },
            ["admin", "users", user, "google-token"] => match method {
                "PUT" => self.google_token(req, user, &identity).await,
                _ => not_allowed(),
            },
            ["admin", "users", user, "audit"] => match method {
                "GET" => self.user_audit(req, user, &identity).await,
                _ => not_allowed(),
            },
            ["admin", "users", user, "kyc"] => match method {
                "GET" | "PUT" => self.kyc(req, user, &identity).await,
                _ => not_allowed(),
            },
            _ => Err(ApiError::NotFound("route")),
        }
    }

    /// An action the caller may see: owner, designated approver or admin. Anyone else, and a
    /// malformed id, gets the same 404 as a missing action.
    async fn visible_action(&self, id: &str, identity: &Identity) -> Result<Action, ApiError> {
        let action = self.load(id).await?;
        if action.user_id == identity.user || identity.admin || identity.is_approver(action.approver.as_ref()) {
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
