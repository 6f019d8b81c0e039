//! The intake service: every route of the intake function.
//!
//! `POST /actions` validates, evaluates the policy, consumes rate-limit units and stores the
//! action with its audit trail in one transaction, then queues tier-1 work. Reads enforce
//! ownership: anyone who may not see an action gets the same 404 as for a missing one.

use crate::api::{self, ApiError, Identity, RequestMeta};
use crate::approval;
use crate::clock::{format_time, Clock};
use crate::domain::action::Step;
use crate::domain::{Action, ActionId, AuditEvent, EmailAddress, IdempotencyKey, Status, Tier, UserId};
use crate::mail::Mailer;
use crate::policy::{Decision, Policy, Subject, Verdict};
use crate::policy_source::PolicySource;
use crate::queue::{ExecuteMessage, WorkQueue};
use crate::store::{keys, CounterSpec, CreateError, Store, TransitionError};
use crate::validation::{CreateActionRequest, BUILTIN_ACTION_TYPES};
use chrono::{DateTime, Utc};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::Instrument;

/// Largest request body accepted; payloads are capped separately at 64 KiB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
const DEFAULT_PAGE: i32 = 20;
const MAX_PAGE: i32 = 100;
/// Events of a system audit stream (policy, breaker, a user's) per response.
const TRAIL_PAGE: i32 = 100;

/// Sends approval requests: the mailer and where links point.
pub struct ApprovalMail {
    pub mailer: Mailer,
    pub public_base_url: String,
}

pub struct IntakeService {
    store: Store,
    queue: WorkQueue,
    policies: Arc<PolicySource>,
    approval_mail: ApprovalMail,
    clock: Arc<dyn Clock>,
}

impl IntakeService {
    pub fn new(
        store: Store,
        queue: WorkQueue,
        policies: Arc<PolicySource>,
        approval_mail: ApprovalMail,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { store, queue, policies, approval_mail, clock }
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

    async fn create(&self, req: &Request, identity: &Identity) -> Result<Response<Body>, ApiError> {
        let now = self.clock.now();
        let meta = RequestMeta::from_request(req);
        let body = api::json_body(req, MAX_BODY_BYTES)?;
        let idempotency_key = match api::header(req, "idempotency-key") {
            None => None,
            Some(raw) => Some(IdempotencyKey::parse(&raw).ok_or_else(|| {
                ApiError::invalid("Idempotency-Key", "must be 1 to 255 printable ASCII characters without spaces")
            })?),
        };
        let body_hash = hex_sha256(body.to_string().as_bytes());

        // A retry with the same key gets the first answer, whatever the body would mean now
        // (a `wait_until` that has passed since, a policy changed since).
        if let Some(key) = &idempotency_key {
            if let Some(response) = self.replay(&identity.user, key, &body_hash, now).await? {
                return Ok(response);
            }
        }
        let request = CreateActionRequest::parse(&body, now).map_err(|e| {
            if e.too_large {
                ApiError::PayloadTooLarge { message: format!("{} {}", e.field, e.message), field: Some(e.field) }
            } else {
                ApiError::InvalidRequest { message: format!("{} {}", e.field, e.message), field: Some(e.field) }
            }
        })?;

        let action_types: Vec<&str> = request.action_steps().collect();
        let policy = self.policies.current().await;
        let needs_kyc = action_types.iter().any(|t| policy.rule(t).is_some_and(|r| r.requires_kyc));
        let kyc_verified =
            if needs_kyc { self.store.kyc_verified(&identity.user).await.map_err(ApiError::internal)? } else { false };
        let decision = policy.evaluate(&Subject {
            action_types: action_types.clone(),
            risk_score: request.risk_score,
            confidence: request.confidence,
            kyc_verified,
        });
        let counters = counters_for(&identity.user, &decision, now);
        if let Some(c) = counters.iter().find(|c| c.units > c.limit.limit) {
            // More units than the window can ever hold: waiting would not help.
            return Err(ApiError::invalid(
                "steps",
                format!(
                    "uses {} {} steps; at most {} fit in a {} for each user, so it can never run",
                    c.units,
                    c.label,
                    c.limit.limit,
                    c.limit.window.as_str()
                ),
            ));
        }
        let approver = resolve_approver(&policy, &decision, request.approver.as_ref(), identity)?;

        if request.dry_run {
            return self.dry_run(&request, &decision, &counters, approver.as_ref(), now).await;
        }

        let mut action = new_action(&request, &decision, identity, idempotency_key.clone(), now);
        action.approver = approver;
        tracing::Span::current().record("action_id", tracing::field::display(action.action_id));
        let target = target_status(&decision, &request, now);
        action.status = target;
        let mut link = None;
        if target == Status::AwaitingApproval {
            let expires_at = now + decision.approval_expiry.to_chrono();
            action.approval_expires_at = Some(expires_at);
            // Without an approver the action can still be decided through the API by an admin.
            if let Some(approver) = action.approver.clone() {
                let (token, record) = approval::issue_link(&action, &approver, expires_at);
                action.approval_token_hash = Some(record.token_hash.clone());
                // Until the mail is known to be out, the sweep will send a fresh link.
                action.approval_mail_pending = true;
                link = Some((token, record, approver));
            }
        }
        // Denied actions are recorded (the audit trail shows the attempt) but use no quota.
        let type_counters: Vec<CounterSpec> = if target == Status::Blocked { Vec::new() } else { counters };
        // Tier-1 work that would run now also takes a unit of automatic execution; creating it
        // `queued` checks that the circuit breaker is closed in the same write.
        let (auto_counters, cooldown) = if action.status == Status::Queued {
            action.auto_started = true;
            crate::sweep::auto_guards(&policy, &action, now)
        } else {
            (Vec::new(), None)
        };
        let mut all_counters = type_counters.clone();
        all_counters.extend(auto_counters.iter().cloned());
        let idempotency = idempotency_key.as_ref().map(|k| (k, body_hash.as_str()));
        let approval_record = link.as_ref().map(|(_, record, _)| record);
        let mut events = creation_events(&action, &decision, identity, &meta, now);
        if let Some(reason) = &action.hold_reason {
            events[1].reason = format!("{}; {reason}", events[1].reason);
        }
        let mut result = self
            .store
            .create_action(&action, &events, idempotency, &all_counters, approval_record, cooldown.as_ref(), now)
            .await;
        // With the breaker open, over the automatic-execution limits or in cool-down: it waits
        // `pending` for the sweep.
        let held = match &result {
            Err(CreateError::BreakerOpen) => Some((crate::sweep::breaker_reason(&self.breaker().await?), None)),
            Err(CreateError::RateLimited(i)) if *i >= type_counters.len() => Some((
                crate::sweep::limit_reason(&all_counters[*i]),
                Some(crate::sweep::hold_until(Some(&all_counters[*i]), now)),
            )),
            Err(CreateError::CoolingDown) => {
                cooldown.as_ref().map(|c| (crate::sweep::cooldown_reason(c), Some(crate::sweep::hold_until(None, now))))
            }
            _ => None,
        };
        if let Some((reason, until)) = held {
            action.status = Status::Pending;
            action.auto_started = false;
            action.hold_reason = Some(reason.clone());
            action.hold_until = until;
            events = creation_events(&action, &decision, identity, &meta, now);
            events[1].reason = format!("{}; {reason}", events[1].reason);
            result = self
                .store
                .create_action(&action, &events, idempotency, &type_counters, approval_record, None, now)
                .await;
        }
        match result {
            Ok(()) => {}
            Err(CreateError::RateLimited(i)) => return Err(rate_limited(&type_counters[i], now)),
            Err(CreateError::CoolingDown | CreateError::BreakerOpen) => {
                return Err(ApiError::internal(anyhow::anyhow!("an automatic-execution guard on a held action")))
            }
            Err(CreateError::IdempotencyKeyUsed) => {
                // A concurrent request with the same key won the race.
                let key = idempotency_key
                    .as_ref()
                    .ok_or_else(|| ApiError::internal(anyhow::anyhow!("idempotency conflict without a key")))?;
                return match self.replay(&identity.user, key, &body_hash, now).await? {
                    Some(response) => Ok(response),
                    None => Err(ApiError::internal(anyhow::anyhow!("idempotency record vanished"))),
                };
            }
            Err(CreateError::Store(e)) => return Err(ApiError::internal(e)),
        }
        tracing::info!(status = %action.status, tier = ?action.tier, "action created");

        if let (Some((token, record, approver)), Some(expires_at)) = (&link, action.approval_expires_at) {
            let url = approval::link(&self.approval_mail.public_base_url, token);
            let mail = approval::approval_mail(&action, approver, &url, expires_at);
            match self.approval_mail.mailer.send(&mail).await {
                Ok(message_id) => {
                    tracing::info!(%message_id, approver = %record.approver, "approval requested");
                    let mut delivered = action.clone();
                    delivered.approval_mail_pending = false;
                    delivered.version = action.version + 1;
                    // Bookkeeping, not a transition: the trail already says who was asked.
                    match self.store.transition_many(&action, &delivered, &[], None).await {
                        Ok(()) => action = delivered,
                        // Decided already, or unreachable: the sweep sorts it out (a second link
                        // at worst, never a lost one).
                        Err(e) => tracing::warn!(error = %e, "recording the delivered approval mail failed"),
                    }
                }
                // The sweep sends a fresh link until one is delivered.
                Err(e) => {
                    tracing::error!(error = %e, approver = %record.approver, "approval mail failed; the sweep retries")
                }
            }
        }

        if action.status == Status::Queued {
            // If this send is lost, the action stays `queued` and the sweep re-sends it.
            if let Err(e) = self.queue.enqueue(&ExecuteMessage { action_id: action.action_id, step: 0 }, 0).await {
                tracing::error!(error = %e, "queueing failed; the sweep will re-send");
            }
        }
        creation_response(&action, &decision, 201)
    }

    /// Answers a request whose `Idempotency-Key` was seen before: the original action for the
    /// same body, 409 for a different one, `None` for a key never seen.
    async fn replay(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
        body_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Response<Body>>, ApiError> {
        let Some(record) = self.store.get_idempotency(user, key, now).await.map_err(ApiError::internal)? else {
            return Ok(None);
        };
        if !constant_time_eq(record.body_sha256.as_bytes(), body_hash.as_bytes()) {
            return Err(ApiError::IdempotencyConflict);
        }
        let action = self
            .store
            .get_action(record.action_id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("idempotency record points at a missing action")))?;
        let decision_view = StoredDecision::from(&action);
        creation_response_from_stored(&action, &decision_view, 200).map(Some)
    }

    async fn dry_run(
        &self,
        request: &CreateActionRequest,
        decision: &Decision,
        counters: &[CounterSpec],
        approver: Option<&EmailAddress>,
        now: DateTime<Utc>,
    ) -> Result<Response<Body>, ApiError> {
        let used = self.store.counter_usage(counters).await.map_err(ApiError::internal)?;
        let mut would_be_limited = None;
        let limits: Vec<Value> = counters
            .iter()
            .zip(&used)
            .map(|(c, used)| {
                let fits = used + c.units <= c.limit.limit;
                if !fits && would_be_limited.is_none() {
                    would_be_limited = Some((c.window_end - now).num_seconds().max(1));
                }
                json!({"action_type": c.label, "window": c.limit.window.as_str(), "limit": c.limit.limit, "used": used, "would_fit": fits, "resets_at": format_time(c.window_end)})
            })
            .collect();
        let status = match would_be_limited {
            Some(_) if decision.verdict != Verdict::Blocked && decision.verdict != Verdict::KycRequired => {
                "rate_limited".to_owned()
            }
            _ => target_status(decision, request, now).to_string(),
        };
        let tier = match decision.verdict {
            Verdict::Tier(t) => Some(t),
            _ => None,
        };
        let mut reasons = decision.reason_codes();
        if let Some(secs) = would_be_limited {
            reasons.push("rate_limited".into());
            let _ = secs;
        }
        let steps: Vec<Value> = request
            .steps
            .iter()
            .enumerate()
            .map(|(i, k)| serde_json::to_value(Step::new(i, k.clone())).unwrap_or(Value::Null))
            .collect();
        Ok(api::json_response(
            200,
            &json!({
                "dry_run": true,
                "action_id": null,
                "status": status,
                "tier": tier,
                "requires_approval": tier == Some(Tier::Approval),
                "reasons": reasons,
                "reason_details": decision.reasons,
                "approval_expires_at": (tier == Some(Tier::Approval)).then(|| format_time(now + decision.approval_expiry.to_chrono())),
                "approver": approver,
                "rate_limits": limits,
                "retry_after": would_be_limited,
                "action_type": request.action_type,
                "steps": steps,
                "preview": preview(request),
            }),
        ))
    }

    async fn list(&self, req: &Request, identity: &Identity) -> Result<Response<Body>, ApiError> {
        let query = req.query_string_parameters();
        let status = match query.first("status") {
            None | Some("") => None,
            Some(s) => Some(
                Status::parse(s)
                    .ok_or_else(|| ApiError::invalid("status", format!("`{s}` is not an action status")))?,
            ),
        };
        let limit =
            match query.first("limit") {
                None | Some("") => DEFAULT_PAGE,
                Some(s) => s.parse::<i32>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                    ApiError::invalid("limit", format!("must be a whole number from 1 to {MAX_PAGE}"))
                })?,
            };
        let cursor = query.first("cursor").filter(|c| !c.is_empty());
        let page = self
            .store
            .list_actions(&identity.user, status, limit, cursor)
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::invalid("cursor", e.to_string()))?;
        let actions: Vec<Value> = page.actions.iter().map(Action::to_api).collect();
        let mut body = json!({ "actions": actions });
        if let Some(next) = page.next_cursor {
            body["next_cursor"] = json!(next);
        }
        Ok(api::json_response(200, &body))
    }

    async fn audit(&self, id: &str, identity: &Identity) -> Result<Response<Body>, ApiError> {
        let action = self.visible_action(id, identity).await?;
        let events = self.store.audit_trail(action.action_id).await.map_err(ApiError::internal)?;
        let events: Vec<Value> = events.iter().map(AuditEvent::to_api).collect();
        Ok(api::json_response(200, &json!({ "action_id": action.action_id, "events": events })))
    }

    /// `cancel` (owner withdraws unstarted work), `done` and `dismiss` (a human closes a tier-3
    /// action they carried out, or decided against).
    async fn close(
        &self,
        req: &Request,
        id: &str,
        verb: &str,
        identity: &Identity,
    ) -> Result<Response<Body>, ApiError> {
        let reason = api::optional_reason(req, 1024)?;
        let meta = RequestMeta::from_request(req);
        let action = self.owned_action(id, identity).await?;
        let (target, default_reason) = match verb {
            "cancel" => (Status::Cancelled, "cancelled by the owner"),
            "done" => (Status::DoneManually, "carried out by a human"),
            _ => (Status::Dismissed, "dismissed by a human"),
        };
        if !action.status.can_move_to(target) {
            return Err(ApiError::InvalidState {
                status: action.status,
                message: format!("it cannot move to {target}"),
            });
        }
        let reason = reason.unwrap_or_else(|| default_reason.to_owned());
        let updated = self.apply_transition(&action, target, identity, &meta, reason).await?;
        Ok(api::json_response(200, &updated.to_api()))
    }

    async fn apply_transition(
        &self,
        action: &Action,
        to: Status,
        identity: &Identity,
        meta: &RequestMeta,
        reason: String,
    ) -> Result<Action, ApiError> {
        let now = self.clock.now();
        let mut after = action.clone();
        after.status = action
            .status
            .transition_to(to)
            .map_err(|e| ApiError::InvalidState { status: action.status, message: e.to_string() })?;
        after.version = action.version + 1;
        after.updated_at = now;
        let event = AuditEvent {
            action_id: action.action_id,
            seq: after.version,
            at: now,
            actor: identity.user.to_string(),
            from: Some(action.status),
            to,
            reason,
            detail: None,
            request_id: meta.request_id.clone(),
            source_ip: meta.source_ip.clone(),
            user_agent: meta.user_agent.clone(),
        };
        match self.store.transition(action, &after, &event).await {
            Ok(()) => Ok(after),
            Err(TransitionError::Conflict) => {
                // Someone moved it first; report the state it is in now.
                let current = self.store.get_action(action.action_id).await.map_err(ApiError::internal)?;
                let status = current.map_or(action.status, |a| a.status);
                Err(ApiError::InvalidState { status, message: "it changed while this request was handled".into() })
            }
            Err(TransitionError::Store(e)) => Err(ApiError::internal(e)),
        }
    }

    async fn rate_limits(&self, action_type: &str, identity: &Identity) -> Result<Response<Body>, ApiError> {
        if !BUILTIN_ACTION_TYPES.contains(&action_type) {
            return Err(ApiError::NotFound("action type"));
        }
        let now = self.clock.now();
        let policy = self.policies.current().await;
        let counters: Vec<CounterSpec> = policy
            .rule(action_type)
            .map(|r| {
                r.rate_limits
                    .iter()
                    .map(|l| CounterSpec::at(format!("{}#{action_type}", identity.user), action_type, *l, 1, now))
                    .collect()
            })
            .unwrap_or_default();
        let used = self.store.counter_usage(&counters).await.map_err(ApiError::internal)?;
        let limits: Vec<Value> = counters
            .iter()
            .zip(used)
            .map(|(c, used)| {
                json!({"window": c.limit.window.as_str(), "limit": c.limit.limit, "used": used, "remaining": c.limit.limit.saturating_sub(used), "resets_at": format_time(c.window_end)})
            })
            .collect();
        Ok(api::json_response(200, &json!({"action_type": action_type, "limits": limits})))
    }

    /// The host application records whether a user passed KYC (needed by `make_purchase`).
    async fn kyc(&self, req: &Request, user: &str, identity: &Identity) -> Result<Response<Body>, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        let user = UserId::parse(user).ok_or_else(|| ApiError::invalid("user_id", "is not a valid user id"))?;
        if req.method() == "PUT" {
            let body = api::json_body(req, 4 * 1024)?;
            let verified = body
                .get("verified")
                .and_then(Value::as_bool)
                .ok_or_else(|| ApiError::invalid("verified", "must be true or false"))?;
            if let Some(extra) = body.as_object().and_then(|o| o.keys().find(|k| *k != "verified")) {
                return Err(ApiError::invalid(extra.clone(), "is not a known field"));
            }
            self.store
                .set_kyc_verified(&user, verified, identity.user.as_str(), self.clock.now())
                .await
                .map_err(busy_or_internal)?;
            tracing::info!(user = %user, verified, by = %identity.user, "kyc flag set");
        }
        let verified = self.store.kyc_verified(&user).await.map_err(ApiError::internal)?;
        Ok(api::json_response(200, &json!({"user_id": user, "kyc_verified": verified})))
    }

    /// The administrative changes to a user (KYC, stored credentials), oldest first.
    async fn user_audit(&self, req: &Request, user: &str, identity: &Identity) -> Result<Response<Body>, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        let user = UserId::parse(user).ok_or_else(|| ApiError::invalid("user_id", "is not a valid user id"))?;
        let (events, next) = self.trail_page(&crate::store::keys::user_audit_stream(&user), req).await?;
        Ok(api::json_response(200, &json!({"user_id": user, "events": events, "events_next": next})))
    }

    /// Today's outcomes, from counters kept with each transition: the caller's own, or
    /// everyone's for an admin.
    async fn stats(&self, identity: &Identity) -> Result<Response<Body>, ApiError> {
        let now = self.clock.now();
        let scope = if identity.admin { keys::STATS_ALL.to_owned() } else { keys::user_stats_scope(&identity.user) };
        let counters = self.store.daily_stats(&scope, now.date_naive()).await.map_err(ApiError::internal)?;
        let get = |k: &str| counters.get(k).copied().unwrap_or(0);
        let mut by_type = serde_json::Map::new();
        for (key, value) in &counters {
            if let Some((action_type, field)) = key.strip_prefix("t#").and_then(|r| r.rsplit_once('#')) {
                let entry = by_type
                    .entry(action_type.to_owned())
                    .or_insert_with(|| json!({"executed": 0, "succeeded": 0, "failed": 0, "rolled_back": 0}));
                entry[field] = json!(value);
            }
        }
        let succeeded = get("auto_executed") + get("approved_executed");
        let executed = succeeded + get("failed");
        let ratio = |a: u64, b: u64| {
            if b == 0 {
                Value::Null
            } else {
                json!(((a as f64 / b as f64) * 1000.0).round() / 1000.0)
            }
        };
        let recent = self
            .store
            .list_actions(&identity.user, None, 10, None)
            .await
            .map_err(ApiError::internal)?
            .map(|p| p.actions)
            .unwrap_or_default();
        let recent: Vec<Value> = recent
            .iter()
            .map(|a| json!({"action_id": a.action_id, "action_type": a.action_type, "status": a.status, "tier": a.tier, "updated_at": format_time(a.updated_at)}))
            .collect();
        Ok(api::json_response(
            200,
            &json!({
                "scope": if identity.admin { "all" } else { "own" },
                "day": now.format("%Y-%m-%d").to_string(),
                "today": {"auto_executed": get("auto_executed"), "approved_executed": get("approved_executed"), "failed": get("failed"), "rolled_back": get("rolled_back")},
                "by_type": by_type,
                "success_rate": ratio(succeeded, executed),
                "rollback_rate": ratio(get("rolled_back"), succeeded),
                "recent": recent,
            }),
        ))
    }

    async fn policy_status(&self, req: &Request, identity: &Identity) -> Result<Response<Body>, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        let stored = self.store.policy_override_raw().await.map_err(ApiError::internal)?;
        let events = self.trail_page(crate::store::keys::POLICY_AUDIT_STREAM, req).await?;
        let body = match stored {
            Some(raw) => match raw.parse() {
                Ok(policy) => {
                    json!({"policy": policy, "source": "override", "version": raw.version, "updated_by": raw.updated_by, "updated_at": raw.updated_at, "valid": true, "events": events.0, "events_next": events.1})
                }
                // Shown as stored, with why it is unusable and what governs meanwhile, so an
                // admin can read it and replace it (PUT works from the stored version).
                Err(problem) => {
                    let document = serde_json::from_str::<Value>(&raw.doc).unwrap_or(Value::String(raw.doc.clone()));
                    json!({"policy": self.policies.deployed().fail_safe(), "source": "fail_safe", "valid": false, "problem": problem, "stored": document, "version": raw.version, "updated_by": raw.updated_by, "updated_at": raw.updated_at, "events": events.0, "events_next": events.1})
                }
            },
            None => {
                json!({"policy": self.policies.deployed(), "source": "deployed", "version": 0, "valid": true, "events": events.0, "events_next": events.1})
            }
        };
        Ok(api::json_response(200, &body))
    }

    /// Replaces the policy at run time. The whole document is validated first; an invalid one
    /// is refused and nothing is stored. Every change is audited.
    async fn replace_policy(&self, req: &Request, identity: &Identity) -> Result<Response<Body>, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        let body = api::json_body(req, 256 * 1024)?;
        let policy = Policy::parse_json(body)
            .map_err(|e| ApiError::InvalidRequest { message: e.to_string(), field: Some("$".into()) })?;
        let before = self.store.policy_override_raw().await.map_err(ApiError::internal)?.map_or(0, |s| s.version);
        match self.store.put_policy(before, &policy, identity.user.as_str(), self.clock.now()).await {
            Ok(version) => {
                tracing::info!(by = %identity.user, version, "policy replaced");
                Ok(api::json_response(200, &json!({"policy": policy, "source": "override", "version": version})))
            }
            Err(e) => Err(busy_or_internal(e)),
        }
    }

    /// The circuit breaker as of now, its window as the policy sets it.
    async fn breaker(&self) -> Result<crate::breaker::Breaker, ApiError> {
        let window = self.policies.current().await.auto_execution.breaker.window;
        self.store.breaker(window).await.map_err(ApiError::internal)
    }

    /// A page of a system audit stream: `?events_after=<seq>` continues where `events_next`
    /// of the previous page left off.
    async fn trail_page(&self, stream: &str, req: &Request) -> Result<(Vec<Value>, Option<u64>), ApiError> {
        let query = req.query_string_parameters();
        let after = match query.first("events_after") {
            None | Some("") => 0,
            Some(v) => v.parse::<u64>().map_err(|_| ApiError::invalid("events_after", "must be a whole number"))?,
        };
        self.store.system_trail(stream, after, TRAIL_PAGE).await.map_err(ApiError::internal)
    }

    async fn breaker_status(&self, req: &Request, identity: &Identity) -> Result<Response<Body>, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        let mut body = self.breaker().await?.to_api();
        let (events, next) = self.trail_page(crate::store::keys::BREAKER_AUDIT_STREAM, req).await?;
        body["events"] = json!(events);
        body["events_next"] = json!(next);
        Ok(api::json_response(200, &body))
    }

    /// Closes the breaker (audited); held tier-1 work is started by the next sweep.
    async fn breaker_reset(&self, identity: &Identity) -> Result<Response<Body>, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        for _ in 0..5 {
            let mut breaker = self.breaker().await?;
            let before = breaker.version;
            let was = breaker.state;
            breaker.reset();
            breaker.version += 1;
            let from = if was == crate::breaker::BreakerStatus::Open { "open" } else { "closed" };
            let change = Some((from, "closed", identity.user.as_str(), "reset by an administrator"));
            match self.store.save_breaker(before, &breaker, change, self.clock.now()).await {
                Ok(()) => {
                    tracing::info!(by = %identity.user, "circuit breaker reset");
                    return Ok(api::json_response(200, &breaker.to_api()));
                }
                Err(TransitionError::Conflict) => continue,
                Err(TransitionError::Store(e)) => return Err(ApiError::internal(e)),
            }
        }
        Err(ApiError::internal(anyhow::anyhow!("the circuit breaker kept changing during the reset")))
    }

    /// The host application stores a user's Google OAuth access token for the Gmail and
    /// Calendar handlers. It is write-only through the API and never logged.
    async fn google_token(&self, req: &Request, user: &str, identity: &Identity) -> Result<Response<Body>, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        let user = UserId::parse(user).ok_or_else(|| ApiError::invalid("user_id", "is not a valid user id"))?;
        let body = api::json_body(req, 16 * 1024)?;
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && t.len() <= 4096 && t.chars().all(|c| c.is_ascii_graphic()))
            .ok_or_else(|| ApiError::invalid("access_token", "must be a non-empty token"))?;
        if let Some(extra) = body.as_object().and_then(|o| o.keys().find(|k| *k != "access_token")) {
            return Err(ApiError::invalid(extra.clone(), "is not a known field"));
        }
        self.store
            .set_google_token(&user, token, identity.user.as_str(), self.clock.now())
            .await
            .map_err(busy_or_internal)?;
        tracing::info!(user = %user, by = %identity.user, "google token stored");
        Ok(api::json_response(200, &json!({"user_id": user, "google_token": "stored"})))
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

/// Who approves: the approver the request names, if the policy allows that person, else the
/// first approver the policy allows who is not the requester (none: only an administrator
/// other than the requester can decide, through the API).
fn resolve_approver(
    policy: &Policy,
    decision: &Decision,
    requested: Option<&EmailAddress>,
    identity: &Identity,
) -> Result<Option<EmailAddress>, ApiError> {
    let is_requester = |a: &EmailAddress| {
        api::is_same_mailbox(a.as_str(), identity.user.as_str())
            || identity.email.as_deref().is_some_and(|e| api::is_same_mailbox(a.as_str(), e))
    };
    if let Some(a) = requested {
        if is_requester(a) {
            return Err(ApiError::Denied {
                code: "self_approval",
                message: "a requester cannot approve their own action; name someone else or leave approver out".into(),
                extra: json!({"field": "approver"}),
            });
        }
        if !policy.approver_allowed(decision, a) {
            return Err(ApiError::invalid(
                "approver",
                format!("{a} is not an approver the policy allows for this action"),
            ));
        }
        return Ok(Some(a.clone()));
    }
    if !matches!(decision.verdict, Verdict::Tier(Tier::Approval)) {
        return Ok(None);
    }
    let candidates: Vec<EmailAddress> = match &decision.required_approvers {
        Some(list) => list.clone(),
        None => decision.approver.iter().cloned().collect(),
    };
    Ok(candidates.into_iter().find(|a| !is_requester(a)))
}

/// One counter per (type, window), consuming as many units as the plan has steps of the type.
fn counters_for(user: &UserId, decision: &Decision, now: DateTime<Utc>) -> Vec<CounterSpec> {
    let mut units: BTreeMap<(String, &'static str), (crate::policy::RateLimit, u32)> = BTreeMap::new();
    for (action_type, limit) in &decision.rate_limits {
        let entry = units.entry((action_type.clone(), limit.window.as_str())).or_insert((*limit, 0));
        entry.1 += 1;
    }
    units.into_iter().map(|((t, _), (limit, n))| CounterSpec::at(format!("{user}#{t}"), &t, limit, n, now)).collect()
}

fn target_status(decision: &Decision, request: &CreateActionRequest, now: DateTime<Utc>) -> Status {
    match decision.verdict {
        Verdict::Blocked | Verdict::KycRequired => Status::Blocked,
        Verdict::Tier(Tier::Manual) => Status::Manual,
        Verdict::Tier(Tier::Approval) => Status::AwaitingApproval,
        Verdict::Tier(Tier::Auto) if request.scheduled_for.is_some_and(|t| t > now) => Status::Pending,
        Verdict::Tier(Tier::Auto) => Status::Queued,
    }
}

fn new_action(
    request: &CreateActionRequest,
    decision: &Decision,
    identity: &Identity,
    key: Option<IdempotencyKey>,
    now: DateTime<Utc>,
) -> Action {
    let tier = match decision.verdict {
        Verdict::Tier(t) => Some(t),
        _ => None,
    };
    let mut action = Action::new(
        identity.user.clone(),
        request.action_type.clone(),
        request.payload.clone(),
        request.steps.clone(),
        now,
    );
    action.tier = tier;
    action.risk_score = request.risk_score;
    action.confidence = request.confidence;
    action.priority = request.priority;
    action.scheduled_for = request.scheduled_for;
    action.rate_limit_key = request.rate_limit_key.clone();
    // The policy's approver is only designated where approval is asked for.
    action.approver = request
        .approver
        .clone()
        .or_else(|| (tier == Some(Tier::Approval)).then(|| decision.approver.clone()).flatten());
    action.requester_email = identity.email.clone().filter(|e| e != identity.user.as_str());
    action.reasons = decision.reason_codes();
    action.max_attempts = decision.max_attempts;
    action.idempotency_key = key;
    // Two creation events: received, then placed.
    action.version = 2;
    action
}

/// The two first lines of every trail: submitted (→ received), and policy's placement.
fn creation_events(
    action: &Action,
    decision: &Decision,
    identity: &Identity,
    meta: &RequestMeta,
    now: DateTime<Utc>,
) -> Vec<AuditEvent> {
    let base = AuditEvent {
        action_id: action.action_id,
        seq: 1,
        at: now,
        actor: identity.user.to_string(),
        from: None,
        to: Status::Received,
        reason: "submitted".into(),
        detail: Some(json!({"action_type": action.action_type, "steps": action.steps.len()})),
        request_id: meta.request_id.clone(),
        source_ip: meta.source_ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    let placed = AuditEvent {
        seq: 2,
        actor: "policy".into(),
        from: Some(Status::Received),
        to: action.status,
        reason: decision.reasons.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join("; "),
        detail: Some(
            json!({"tier": action.tier, "reasons": decision.reasons, "approver": action.approver, "approval_expires_at": action.approval_expires_at.map(format_time)}),
        ),
        ..base.clone()
    };
    vec![base, placed]
}

/// The parts of a decision the stored action keeps, for replays.
struct StoredDecision {
    reasons: Vec<String>,
}

impl From<&Action> for StoredDecision {
    fn from(a: &Action) -> Self {
        Self { reasons: a.reasons.clone() }
    }
}

fn creation_response(action: &Action, decision: &Decision, status: u16) -> Result<Response<Body>, ApiError> {
    let details = serde_json::to_value(&decision.reasons).map_err(ApiError::internal)?;
    respond_created(action, &decision.reason_codes(), Some(details), status)
}

fn creation_response_from_stored(
    action: &Action,
    stored: &StoredDecision,
    status: u16,
) -> Result<Response<Body>, ApiError> {
    respond_created(action, &stored.reasons, None, status)
}

fn respond_created(
    action: &Action,
    reasons: &[String],
    details: Option<Value>,
    status: u16,
) -> Result<Response<Body>, ApiError> {
    if action.status == Status::Blocked {
        let (code, message) = if reasons.iter().any(|r| r == "blocked") {
            ("blocked", "the policy blocks this action")
        } else {
            ("kyc_required", "this action requires a KYC-verified user")
        };
        return Err(ApiError::Denied {
            code,
            message: message.into(),
            extra: json!({"action_id": action.action_id, "reasons": reasons, "reason_details": details}),
        });
    }
    let mut body = json!({
        "action_id": action.action_id,
        "status": action.status,
        "tier": action.tier,
        "requires_approval": action.tier == Some(Tier::Approval),
        "reasons": reasons,
    });
    if let Some(d) = details {
        body["reason_details"] = d;
    }
    if let Some(t) = action.approval_expires_at {
        body["approval_expires_at"] = json!(format_time(t));
    }
    if let Some(a) = &action.approver {
        body["approver"] = json!(a);
    }
    Ok(api::json_response(status, &body))
}

fn rate_limited(counter: &CounterSpec, now: DateTime<Utc>) -> ApiError {
    let retry = (counter.window_end - now).num_seconds().max(1);
    ApiError::RateLimited {
        message: format!(
            "{} is limited to {} per {} for each user",
            counter.label,
            counter.limit.limit,
            counter.limit.window.as_str()
        ),
        retry_after_secs: retry,
        extra: json!({"action_type": counter.label, "window": counter.limit.window.as_str(), "limit": counter.limit.limit, "resets_at": format_time(counter.window_end)}),
    }
}

/// What the action would do, in words, for dry runs and approval pages.
pub fn preview(request: &CreateActionRequest) -> Vec<String> {
    request
        .steps
        .iter()
        .map(|step| match step {
            crate::domain::StepKind::Action { action_type, payload } => describe(action_type, payload),
            crate::domain::StepKind::WaitFor { wait_for } => format!("wait {wait_for}"),
            crate::domain::StepKind::WaitUntil { wait_until } => {
                format!("wait until {}", format_time(*wait_until))
            }
        })
        .collect()
}

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
        other => other.to_owned(),
    }
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Comparison whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn request(body: Value) -> CreateActionRequest {
        CreateActionRequest::parse(&body, now()).unwrap()
    }

    fn decide(policy: &Policy, r: &CreateActionRequest) -> Decision {
        policy.evaluate(&Subject {
            action_types: r.action_steps().collect(),
            risk_score: r.risk_score,
            confidence: r.confidence,
            kyc_verified: false,
        })
    }

    #[test]
    fn tier_one_is_queued_now_or_pending_when_scheduled() {
        let p = Policy::default_policy();
        let now_req = request(json!({"action_type": "gmail.flag", "payload": {"message_id": "m"}, "confidence": 0.9}));
        assert_eq!(target_status(&decide(&p, &now_req), &now_req, now()), Status::Queued);
        let later = request(
            json!({"action_type": "gmail.flag", "payload": {"message_id": "m"}, "confidence": 0.9, "scheduled_for": "2026-03-02T00:00:00Z"}),
        );
        assert_eq!(target_status(&decide(&p, &later), &later, now()), Status::Pending);
        let past = request(
            json!({"action_type": "gmail.flag", "payload": {"message_id": "m"}, "confidence": 0.9, "scheduled_for": "2026-02-01T00:00:00Z"}),
        );
        assert_eq!(target_status(&decide(&p, &past), &past, now()), Status::Queued);
    }

    #[test]
    fn plan_counters_aggregate_units_per_type_and_window() {
        let p = Policy::default_policy();
        let email =
            json!({"action_type": "send_email", "payload": {"to": ["a@example.com"], "subject": "s", "text": "t"}});
        let r = request(json!({"steps": [email, {"wait_for": "PT1H"}, email]}));
        let counters = counters_for(&UserId::parse("alice").unwrap(), &decide(&p, &r), now());
        assert_eq!(counters.len(), 2);
        assert!(counters.iter().all(|c| c.units == 2 && c.label == "send_email" && c.scope == "alice#send_email"));
    }

    #[test]
    fn creation_trail_starts_with_received_then_placement() {
        let p = Policy::default_policy();
        let r = request(
            json!({"action_type": "send_email", "payload": {"to": ["a@example.com"], "subject": "s", "text": "t"}}),
        );
        let d = decide(&p, &r);
        let identity = Identity { user: UserId::parse("alice").unwrap(), email: None, admin: false };
        let mut action = new_action(&r, &d, &identity, None, now());
        action.status = target_status(&d, &r, now());
        let events = creation_events(&action, &d, &identity, &RequestMeta::default(), now());
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].from, events[0].to, events[0].seq), (None, Status::Received, 1));
        assert_eq!(
            (events[1].from, events[1].to, events[1].seq),
            (Some(Status::Received), Status::AwaitingApproval, 2)
        );
        assert_eq!(action.version, 2);
        assert_eq!(action.approver.as_ref().map(|a| a.as_str()), Some("approvals@example.com"));
    }

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn previews_read_as_sentences() {
        let r = request(
            json!({"steps": [{"action_type": "gmail.archive", "payload": {"message_id": "m1"}}, {"wait_for": "P2D"}, {"action_type": "gmail.flag", "payload": {"message_id": "m1"}}]}),
        );
        assert_eq!(preview(&r), vec!["archive Gmail message m1", "wait P2D", "flag Gmail message m1"]);
    }
}
