//! The approval function: link pages, link decisions and API decisions.

pub mod pages;

use self::pages::escape;
use crate::domain::approval::{
    link_state, preview_json, reason_text, ApprovalRecord, ApprovalStatus, ApprovalToken, ApprovalUse, LinkState,
};
use crate::domain::{Action, ActionId, AuditEvent, Status};
use crate::ports::clock::{format_time, Clock};
use crate::ports::handler::Registry;
use crate::ports::queue::{ExecuteMessage, WorkQueue};
use crate::ports::store::{Store, TransitionError};
use crate::services::http::{self as api, ApiError, Identity, RequestMeta};
use lambda_http::{Body, Request, Response};
use serde_json::json;
use std::sync::Arc;
use tracing::Instrument;

const MAX_REASON_CHARS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "approve" => Some(Decision::Approve),
            "reject" => Some(Decision::Reject),
            _ => None,
        }
    }
}

/// How a decision arrived: through one emailed link (which it uses up), or the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via<'a> {
    Link {
        token_hash: &'a str,
    },
    /// `admin`: an administrator decided who is not the designated approver.
    Api {
        admin: bool,
    },
}

pub struct ApprovalService {
    store: Arc<dyn Store>,
    queue: Arc<dyn WorkQueue>,
    /// Describes actions on the confirmation page: each handler's own preview.
    registry: Registry,
    clock: Arc<dyn Clock>,
}

impl ApprovalService {
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn WorkQueue>, registry: Registry, clock: Arc<dyn Clock>) -> Self {
        Self { store, queue, registry, clock }
    }

    pub async fn handle(&self, req: Request) -> Response<Body> {
        let span = tracing::info_span!("approval", method = %req.method(), action_id = tracing::field::Empty);
        async {
            let segments = api::path_segments(&req);
            let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
            let method = req.method().as_str().to_owned();
            let response = match (parts.as_slice(), method.as_str()) {
                (["approvals", token], "GET" | "HEAD") => self.show(token, method == "HEAD").await,
                (["approvals", token], "POST") => self.decide_by_link(&req, token).await,
                (["approvals", _], _) => pages::message(405, "Not allowed", "Open the link in a browser."),
                (["actions", id, verb @ ("approve" | "reject")], "POST") => {
                    let decision = if *verb == "approve" { Decision::Approve } else { Decision::Reject };
                    self.decide_by_api(&req, id, decision).await.unwrap_or_else(ApiError::into_response)
                }
                (["actions", _, "approve" | "reject"], _) => {
                    ApiError::MethodNotAllowed { method: method.clone() }.into_response()
                }
                _ => ApiError::NotFound("route").into_response(),
            };
            tracing::info!(status = response.status().as_u16(), "request handled");
            response
        }
        .instrument(span)
        .await
    }

    /// Finds the record and action behind a link, or the page to show instead.
    async fn resolve(&self, raw_token: &str) -> Result<(ApprovalRecord, Action), Response<Body>> {
        let not_found = || {
            pages::message(
                404,
                "Link not found",
                "This approval link is not valid. Check that you opened the whole link from the email.",
            )
        };
        let token = ApprovalToken::parse(raw_token).ok_or_else(not_found)?;
        let record = match self.store.get_approval(token.hash().as_str()).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(not_found()),
            Err(e) => return Err(self.unavailable(&e)),
        };
        tracing::Span::current().record("action_id", tracing::field::display(record.action_id));
        match self.store.get_action(record.action_id).await {
            Ok(Some(action)) => Ok((record, action)),
            Ok(None) => Err(not_found()),
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    fn unavailable(&self, e: &dyn std::fmt::Display) -> Response<Body> {
        tracing::error!(error = %e, "approval lookup failed");
        pages::message(
            503,
            "Try again shortly",
            "The approval service could not be reached. Nothing was decided; reload the page in a moment.",
        )
    }

    /// GET and HEAD: a page, never a change of state.
    async fn show(&self, raw_token: &str, head: bool) -> Response<Body> {
        let response = match self.resolve(raw_token).await {
            Err(page) => page,
            Ok((record, action)) => match link_state(&record, &action, self.clock.now()) {
                LinkState::Open => {
                    let lines = self.registry.plan_lines(action.steps.iter().map(|s| &s.kind));
                    confirmation_page(&record, &action, &lines)
                }
                other => state_page(&other),
            },
        };
        if head {
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, Body::Empty);
        }
        response
    }

    async fn decide_by_link(&self, req: &Request, raw_token: &str) -> Response<Body> {
        let (decision, reason) = match parse_form(req.body().as_ref()) {
            Ok(v) => v,
            Err(sentence) => return pages::message(400, "Choose approve or reject", sentence),
        };
        let (record, action) = match self.resolve(raw_token).await {
            Ok(v) => v,
            Err(page) => return page,
        };
        let now = self.clock.now();
        match link_state(&record, &action, now) {
            LinkState::Open => {}
            LinkState::Expired => {
                self.expire_if_waiting(&action, &record.approver, &RequestMeta::from_request(req)).await;
                return state_page(&LinkState::Expired);
            }
            other => return state_page(&other),
        }
        if is_requesters_address(&action, &record.approver) {
            return pages::message(
                403,
                "You cannot decide your own request",
                "This action was requested by you, so someone else must approve or reject it. Nothing was changed.",
            );
        }
        let meta = RequestMeta::from_request(req);
        match self
            .apply(&action, decision, &record.approver, reason, &meta, Via::Link { token_hash: &record.token_hash })
            .await
        {
            Ok(after) => decided_page(&after),
            Err(TransitionError::Conflict) => match self.store.get_action(action.action_id).await {
                Ok(Some(current)) => state_page(&link_state(&record, &current, now)),
                _ => pages::message(409, "Already decided", "Someone decided this action a moment ago."),
            },
            Err(TransitionError::Store(e)) => self.unavailable(&e),
        }
    }

    async fn decide_by_api(&self, req: &Request, id: &str, decision: Decision) -> Result<Response<Body>, ApiError> {
        let identity = Identity::from_request(req).ok_or(ApiError::Unauthorized)?;
        let reason = api::optional_reason(req, MAX_REASON_CHARS)?;
        let id = ActionId::parse(id).ok_or(ApiError::NotFound("action"))?;
        tracing::Span::current().record("action_id", tracing::field::display(id));
        let action =
            self.store.get_action(id).await.map_err(ApiError::internal)?.ok_or(ApiError::NotFound("action"))?;
        let is_approver = identity.is_approver(action.approver.as_ref());
        if identity.is_requester(&action) {
            // Admin or not, by user id or by email: nobody decides their own action.
            return Err(ApiError::Denied {
                code: "self_approval",
                message: "a requester cannot approve or reject their own action".into(),
                extra: json!({"action_id": action.action_id}),
            });
        }
        if !is_approver && !identity.admin {
            // The owner may see the action but not decide it; anyone else must not learn it exists.
            return Err(if action.user_id == identity.user {
                ApiError::Forbidden
            } else {
                ApiError::NotFound("action")
            });
        }
        let meta = RequestMeta::from_request(req);
        let actor = identity.email.clone().unwrap_or_else(|| identity.user.to_string());
        if action.status != Status::AwaitingApproval {
            return Err(ApiError::InvalidState {
                status: action.status,
                message: "it is not waiting for approval".into(),
            });
        }
        if action.approval_expires_at.is_some_and(|t| self.clock.now() >= t) {
            let status = self.expire_if_waiting(&action, &actor, &meta).await;
            return Err(ApiError::InvalidState { status, message: "its approval window has passed".into() });
        }
        match self.apply(&action, decision, &actor, reason, &meta, Via::Api { admin: !is_approver }).await {
            Ok(after) => Ok(api::json_response(200, &after.to_api())),
            Err(TransitionError::Conflict) => {
                let status = self.store.get_action(id).await.ok().flatten().map_or(action.status, |a| a.status);
                Err(ApiError::InvalidState { status, message: "it was decided by someone else first".into() })
            }
            Err(TransitionError::Store(e)) => Err(ApiError::internal(e)),
        }
    }

    /// Records a decision: one transaction moves the action (approve: `→ approved → queued`),
    /// appends one audit event per move and consumes the link; then queues the work.
    pub async fn apply(
        &self,
        action: &Action,
        decision: Decision,
        actor: &str,
        reason: Option<String>,
        meta: &RequestMeta,
        via: Via<'_>,
    ) -> Result<Action, TransitionError> {
        let (used_link, via, by_admin) = match via {
            Via::Link { token_hash } => (Some(token_hash), "link", false),
            Via::Api { admin } => (None, "api", admin),
        };
        let now = self.clock.now();
        let mut after = action.clone();
        after.decided_by = Some(actor.to_owned());
        after.decided_by_admin = by_admin;
        after.decided_at = Some(now);
        after.decision_reason = reason.clone();
        after.updated_at = now;
        let event = |seq: u64, from: Status, to: Status, why: String| AuditEvent {
            action_id: action.action_id,
            seq,
            at: now,
            actor: actor.to_owned(),
            from: Some(from),
            to,
            reason: why,
            detail: Some(json!({"via": via})),
            request_id: meta.request_id.clone(),
            source_ip: meta.source_ip.clone(),
            user_agent: meta.user_agent.clone(),
        };
        let said = reason.clone().map(|r| format!(": {r}")).unwrap_or_default();
        let mut events = Vec::new();
        let link_status = match decision {
            Decision::Approve => {
                let approved =
                    Status::AwaitingApproval.transition_to(Status::Approved).map_err(|_| TransitionError::Conflict)?;
                events.push(event(action.version + 1, Status::AwaitingApproval, approved, format!("approved{said}")));
                let queued = approved.transition_to(Status::Queued).map_err(|_| TransitionError::Conflict)?;
                let mut queued_event = event(action.version + 2, approved, queued, "queued for execution".into());
                queued_event.actor = "actiongate".into();
                events.push(queued_event);
                after.status = queued;
                after.version = action.version + 2;
                ApprovalStatus::Approved
            }
            Decision::Reject => {
                after.status =
                    Status::AwaitingApproval.transition_to(Status::Rejected).map_err(|_| TransitionError::Conflict)?;
                events.push(event(
                    action.version + 1,
                    Status::AwaitingApproval,
                    Status::Rejected,
                    format!("rejected{said}"),
                ));
                after.version = action.version + 1;
                ApprovalStatus::Rejected
            }
        };
        // A decision by link uses up that link; one through the API closes the newest emailed
        // link too (older ones show the decision, as the action is no longer waiting).
        let used = used_link.or(action.approval_token_hash.as_deref());
        let link_use = used.map(|hash| ApprovalUse {
            token_hash: hash,
            status: if via == "link" { link_status } else { ApprovalStatus::Closed },
            by: actor,
            at: now,
        });
        self.store.transition_many(action, &after, &events, link_use).await?;
        tracing::info!(decision = ?decision, by = actor, via, "approval decided");
        if after.status == Status::Queued {
            // The executor holds it until `scheduled_for` whenever the message arrives.
            let delay = after.runnable_at().map_or(0, |t| (t - now).num_seconds().clamp(0, 900) as u32);
            let step = after.next_step();
            if let Err(e) = self.queue.enqueue(&ExecuteMessage { action_id: after.action_id, step }, delay).await {
                // The action is `queued` in the store; the sweep re-sends work that no executor claimed.
                tracing::error!(error = %e, "queueing approved work failed; the sweep will re-send");
            }
        }
        Ok(after)
    }

    /// Expiry holds at decision time even before the sweep runs: a late decision moves the
    /// action to `expired` instead. Returns the state the action is in afterwards.
    async fn expire_if_waiting(&self, action: &Action, actor: &str, meta: &RequestMeta) -> Status {
        if action.status != Status::AwaitingApproval {
            return action.status;
        }
        let now = self.clock.now();
        let mut after = action.clone();
        after.status = Status::Expired;
        after.version = action.version + 1;
        after.updated_at = now;
        let event = AuditEvent {
            action_id: action.action_id,
            seq: after.version,
            at: now,
            actor: "actiongate".into(),
            from: Some(Status::AwaitingApproval),
            to: Status::Expired,
            reason: format!(
                "approval window ended at {}; a late decision by {actor} was refused",
                action.approval_expires_at.map(format_time).unwrap_or_default()
            ),
            detail: None,
            request_id: meta.request_id.clone(),
            source_ip: meta.source_ip.clone(),
            user_agent: meta.user_agent.clone(),
        };
        let link_use = action.approval_token_hash.as_deref().map(|hash| ApprovalUse {
            token_hash: hash,
            status: ApprovalStatus::Expired,
            by: "actiongate",
            at: now,
        });
        match self.store.transition_many(action, &after, &[event], link_use).await {
            Ok(()) => Status::Expired,
            Err(_) => self.store.get_action(action.action_id).await.ok().flatten().map_or(action.status, |a| a.status),
        }
    }
}

/// Whether `address` is the requester's own (their user id or verified email).
fn is_requesters_address(action: &Action, address: &str) -> bool {
    crate::services::http::is_same_mailbox(address, action.user_id.as_str())
        || action.requester_email.as_deref().is_some_and(|e| crate::services::http::is_same_mailbox(address, e))
}

/// `decision=approve|reject&reason=…` from the page's form.
fn parse_form(body: &[u8]) -> Result<(Decision, Option<String>), &'static str> {
    let mut decision = None;
    let mut reason = None;
    for (key, value) in url::form_urlencoded::parse(body) {
        match key.as_ref() {
            "decision" if decision.is_none() => {
                decision = Some(Decision::parse(&value).ok_or("The form must say approve or reject.")?)
            }
            "decision" => return Err("The form gave more than one decision."),
            "reason" => {
                let trimmed = value.trim();
                if trimmed.chars().count() > MAX_REASON_CHARS {
                    return Err("The reason is too long (1000 characters at most).");
                }
                reason = (!trimmed.is_empty()).then(|| trimmed.to_owned());
            }
            _ => {}
        }
    }
    Ok((decision.ok_or("The form must say approve or reject.")?, reason))
}

fn confirmation_page(record: &ApprovalRecord, action: &Action, lines: &[String]) -> Response<Body> {
    let steps: String = lines.iter().map(|l| format!("<li>{}</li>", escape(l))).collect();
    let reasons: String = action
        .reasons
        .iter()
        .filter(|c| c.as_str() != "needs_approval")
        .map(|c| format!("<li>{} <span class=\"note\">({})</span></li>", escape(reason_text(c)), escape(c)))
        .collect();
    let risk = action.risk_score.map_or("not given".to_owned(), |r| r.to_string());
    let confidence = action.confidence.map_or("not given".to_owned(), |c| format!("{c:.2}"));
    let body = format!(
        "<h1>Approve this action?</h1>\
         <p><strong>{user}</strong> asks actiongate to:</p><ol>{steps}</ol>\
         <dl><dt>Risk score</dt><dd>{risk}</dd><dt>Agent confidence</dt><dd>{confidence}</dd>\
         <dt>Requested</dt><dd>{created}</dd><dt>Link expires</dt><dd>{expires}</dd><dt>Approver</dt><dd>{approver}</dd><dt>Action id</dt><dd>{id}</dd></dl>\
         {reasons_block}<p>Preview (dry run) of exactly what will run:</p><pre>{preview}</pre>\
         <form method=\"post\"><label for=\"reason\">Reason (optional)</label><textarea id=\"reason\" name=\"reason\" maxlength=\"1000\"></textarea>\
         <div class=\"buttons\"><button class=\"approve\" type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
         <button class=\"reject\" type=\"submit\" name=\"decision\" value=\"reject\">Reject</button></div></form>\
         <p class=\"note\">Nothing happens until you press a button. The first decision counts; this link works once.</p>",
        user = escape(action.user_id.as_str()),
        created = escape(&format_time(action.created_at)),
        expires = escape(&format_time(record.expires_at)),
        approver = escape(&record.approver),
        id = action.action_id,
        reasons_block = if reasons.is_empty() { String::new() } else { format!("<p>Approval is needed because:</p><ul>{reasons}</ul>") },
        preview = escape(&preview_json(action)),
    );
    pages::page(200, "Approve this action?", &body)
}

fn decided_page(action: &Action) -> Response<Body> {
    match action.status {
        Status::Queued => pages::message(200, "Approved", "Thank you. The action is approved and queued to run."),
        _ => pages::message(200, "Rejected", "Thank you. The action is rejected and will not run."),
    }
}

fn state_page(state: &LinkState) -> Response<Body> {
    match state {
        LinkState::Open => pages::message(200, "Waiting for a decision", "This action is still waiting for a decision."),
        LinkState::Decided { status, by, at } => {
            let verdict = match status {
                Status::Rejected => "rejected",
                Status::Expired => "expired",
                _ => "approved",
            };
            let who = by.as_deref().unwrap_or("someone");
            let when = at.map(format_time).unwrap_or_else(|| "earlier".into());
            pages::message(409, "Already decided", &format!("This action was already {verdict} by {who} at {when}. Nothing was changed."))
        }
        LinkState::Expired => pages::message(410, "Link expired", "The approval window for this action has passed, so it will not run. Ask the requester to submit it again if it is still needed."),
        LinkState::Closed(sentence) => pages::message(410, "Link no longer valid", sentence),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::action::StepKind;
    use crate::domain::approval::issue_link;
    use crate::domain::UserId;
    use chrono::{DateTime, Utc};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn waiting() -> (ApprovalRecord, Action) {
        let mut action = crate::domain::action::sample_action();
        let approver = action.approver.clone().unwrap();
        let (_, record) = issue_link(&action, &approver, now() + chrono::Duration::hours(1));
        action.approval_token_hash = Some(record.token_hash.clone());
        (record, action)
    }

    #[test]
    fn an_open_link_stays_open_until_expiry() {
        let (record, action) = waiting();
        assert_eq!(link_state(&record, &action, now()), LinkState::Open);
        assert_eq!(link_state(&record, &action, now() + chrono::Duration::minutes(59)), LinkState::Open);
        assert_eq!(link_state(&record, &action, now() + chrono::Duration::hours(1)), LinkState::Expired);
    }

    #[test]
    fn a_changed_plan_kills_the_link() {
        let (record, mut action) = waiting();
        action.steps[0].kind = StepKind::Action {
            action_type: "send_email".into(),
            payload: json!({"to": ["evil@example.com"], "subject": "s", "text": "t"}),
        };
        assert!(matches!(link_state(&record, &action, now()), LinkState::Closed(_)));
    }

    #[test]
    fn decided_cancelled_and_replaced_links_say_so() {
        let (mut record, mut action) = waiting();
        action.status = Status::Cancelled;
        assert!(matches!(link_state(&record, &action, now()), LinkState::Closed(_)));
        action.status = Status::Queued;
        action.decided_by = Some("boss@example.com".into());
        action.decided_at = Some(now());
        record.status = ApprovalStatus::Approved;
        assert!(matches!(link_state(&record, &action, now()), LinkState::Decided { status: Status::Queued, .. }));
        // A reminder's newer link does not close this one.
        let (record, mut action) = waiting();
        action.approval_token_hash = Some("another".into());
        assert_eq!(link_state(&record, &action, now()), LinkState::Open);
    }

    #[test]
    fn a_link_of_an_earlier_request_does_not_reopen_when_approval_is_asked_again() {
        let (record, mut action) = waiting();
        assert_eq!(link_state(&record, &action, now()), LinkState::Open);
        // The policy asked again later (even to the same approver, expiring the same second).
        action.approval_round += 1;
        assert!(matches!(link_state(&record, &action, now()), LinkState::Closed(_)));
        let (record, mut action) = waiting();
        action.approver = crate::domain::EmailAddress::parse("cfo@example.com");
        assert!(matches!(link_state(&record, &action, now()), LinkState::Closed(_)));
    }

    #[test]
    fn a_link_addressed_to_the_requester_never_decides() {
        let (_, mut action) = waiting();
        assert!(is_requesters_address(&action, "ALICE"));
        action.requester_email = Some("alice@example.com".into());
        assert!(is_requesters_address(&action, "Alice@Example.com"));
        assert!(!is_requesters_address(&action, "boss@example.com"));
        let admin = Identity { user: UserId::parse("alice").unwrap(), email: None, admin: true };
        assert!(admin.is_requester(&action), "an admin is still the requester");
        let by_mail =
            Identity { user: UserId::parse("sso-123").unwrap(), email: Some("alice@example.com".into()), admin: true };
        assert!(by_mail.is_requester(&action), "the same person under another id, by email");
    }

    #[test]
    fn forms_need_exactly_one_known_decision() {
        assert_eq!(parse_form(b"decision=approve&reason=ok").unwrap(), (Decision::Approve, Some("ok".into())));
        assert_eq!(parse_form(b"decision=reject").unwrap(), (Decision::Reject, None));
        assert!(parse_form(b"").is_err());
        assert!(parse_form(b"decision=maybe").is_err());
        assert!(parse_form(b"decision=approve&decision=reject").is_err());
        assert!(parse_form(format!("decision=approve&reason={}", "x".repeat(1001)).as_bytes()).is_err());
        assert!(parse_form(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn confirmation_page_escapes_and_has_no_script() {
        let (record, mut action) = waiting();
        action.payload = json!({"to": ["b@example.com"], "subject": "<script>alert(1)</script>", "text": "t"});
        action.steps[0].kind = StepKind::Action { action_type: "send_email".into(), payload: action.payload.clone() };
        let lines = Registry::standard().plan_lines(action.steps.iter().map(|s| &s.kind));
        let page = confirmation_page(&record, &action, &lines);
        let html = std::str::from_utf8(page.body().as_ref()).unwrap();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("value=\"approve\"") && html.contains("value=\"reject\""));
    }
}
