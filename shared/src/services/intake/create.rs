//! `POST /actions`: validation, the idempotency key, the policy, rate limits and automatic
//! execution's guards, one creation transaction, then the approval mail or the queue; and dry
//! runs.

use super::*;
use crate::domain::approval::ApprovalRecord;
use crate::domain::digest::{constant_time_eq, hex_sha256};

/// Who is asked to decide (the pool; its first member is the action's `approver`): the
/// approver or group the request names, if the policy allows every one of them, else everyone
/// the policy lists for it (groups expanded) who is not the requester; with a quorum above one,
/// the policy's other approvers join a named person. Empty for work that needs no approval, or
/// when nobody but the requester could approve (then only another administrator decides,
/// through the API). A quorum that those asked could never reach is refused.
fn resolve_pool(
    policy: &Policy,
    decision: &Decision,
    request: &CreateActionRequest,
    identity: &Identity,
    self_allowed: bool,
) -> Result<Vec<EmailAddress>, ApiError> {
    let is_requester = |a: &EmailAddress| identity.owns_address(a.as_str());
    let not_allowed = |a: &EmailAddress| {
        ApiError::invalid("approver", format!("{a} is not an approver the policy allows for this action"))
    };
    let mut named: Vec<EmailAddress> = Vec::new();
    if let Some(a) = &request.approver {
        // The requester decides their own action only where the type allows it and only when
        // they name themselves: they are never picked for it.
        if is_requester(a) && !self_allowed {
            return Err(ApiError::Denied {
                code: "self_approval",
                message: "a requester cannot approve their own action; name someone else or leave approver out".into(),
                extra: json!({"field": "approver"}),
            });
        }
        if !policy.approver_allowed(decision, a) {
            return Err(not_allowed(a));
        }
        named.push(a.clone());
    }
    if let Some(group) = &request.approver_group {
        let members = policy
            .group(group)
            .ok_or_else(|| ApiError::invalid("approver", format!("the policy has no approver group `{group}`")))?;
        if let Some(outsider) = members.iter().find(|m| !policy.approver_allowed(decision, m)) {
            return Err(not_allowed(outsider));
        }
        // A group names others: the requester in it is never asked.
        named.extend(members.iter().filter(|m| !is_requester(m)).cloned());
    }
    if !matches!(decision.verdict, Verdict::Tier(Tier::Approval)) {
        return Ok(named.into_iter().take(1).collect());
    }
    let candidates: Vec<EmailAddress> = match &decision.required_approvers {
        Some(list) => list.clone(),
        None => decision.approver.iter().cloned().collect(),
    };
    let mut pool = named.clone();
    // Nobody named, or one person named where more must approve: the policy's approvers too.
    if named.is_empty() || (request.approver_group.is_none() && decision.approvals_required > 1) {
        for c in candidates.into_iter().filter(|a| !is_requester(a)) {
            if !pool.iter().any(|p| crate::domain::ids::is_same_mailbox(p.as_str(), c.as_str())) {
                pool.push(c);
            }
        }
    }
    pool.truncate(crate::domain::approvers::MAX_POOL);
    let can_count = pool.iter().filter(|a| self_allowed || !is_requester(a)).count();
    if !pool.is_empty() && can_count < decision.approvals_required as usize {
        return Err(ApiError::Denied {
            code: "quorum_unreachable",
            message: format!(
                "{} distinct approvals are needed but only {can_count} approver(s) other than the requester can be asked",
                decision.approvals_required
            ),
            extra: json!({"field": "approver", "approvals_required": decision.approvals_required}),
        });
    }
    Ok(pool)
}

/// `gmail.forward` goes only to the recipient domains the policy allows (403
/// `domain_not_allowed`, naming the address's field).
fn forwards_allowed(request: &CreateActionRequest, policy: &Policy) -> Result<(), ApiError> {
    let single = request.steps.len() == 1 && !request.payload.is_null();
    for (index, kind) in request.steps.iter().enumerate() {
        let crate::domain::StepKind::Action { action_type, payload } = kind else { continue };
        if action_type != "gmail.forward" {
            continue;
        }
        if let Err((field, message)) =
            crate::domain::google_payloads::forward_domains_allowed(payload, policy.forward_domains())
        {
            let field = if single { field } else { field.replacen("payload", &format!("steps[{index}].payload"), 1) };
            return Err(ApiError::Denied {
                code: "domain_not_allowed",
                message: format!("{field}: {message}"),
                extra: json!({"field": field, "allowed_domains": policy.forward_domains()}),
            });
        }
    }
    Ok(())
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

/// Whether intake would ask a connector about this request (`validate` or `preview`).
fn asks_connectors(request: &CreateActionRequest, policy: &Policy) -> bool {
    use crate::domain::connectors::Phase;
    request.action_steps().any(|t| {
        policy
            .rule(t)
            .and_then(|r| r.connector.as_ref())
            .and_then(|c| policy.connectors.get(c))
            .is_some_and(|c| c.serves(Phase::Validate) || c.serves(Phase::Preview))
    })
}

/// How long intake spends mailing a pool's links before it answers (the rest go from the sweep).
const INTAKE_MAIL_BUDGET: std::time::Duration = std::time::Duration::from_secs(6);

/// A link for each member of `action`'s pool (recorded on the action: the newest link, and mail
/// pending until it is out).
fn issue_links(
    action: &mut Action,
    expires_at: DateTime<Utc>,
) -> Vec<(approval::ApprovalToken, ApprovalRecord, EmailAddress)> {
    let links: Vec<_> = action
        .pool()
        .into_iter()
        .map(|approver| {
            let (token, record) = approval::issue_link(action, approver, expires_at);
            (token, record, approver.clone())
        })
        .collect();
    if let Some((_, record, _)) = links.first() {
        action.approval_token_hash = Some(record.token_hash.clone());
        // Until the mail is known to be out, the sweep will send a fresh link.
        action.approval_mail_pending = true;
    }
    action.approval_mailed.clear();
    links
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
    if tier == Some(Tier::Approval) {
        action.approvals_required = decision.approvals_required;
        action.rejections_required = decision.rejections_required;
        action.completion_mail_to = crate::domain::placement::completion_recipients(&action, decision);
    }
    action.reasons = decision.reason_codes();
    action.max_attempts = decision.max_attempts;
    action.idempotency_key = key;
    action.notify_url = request.notify_url.clone();
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
            json!({"tier": action.tier, "reasons": decision.reasons, "approver": action.approver, "approvers": action.pool(), "approvals_required": action.approvals_required, "delegated": action.delegated, "approval_expires_at": action.approval_expires_at.map(format_time)}),
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

fn creation_response(action: &Action, decision: &Decision, status: u16) -> Result<Reply, ApiError> {
    let details = serde_json::to_value(&decision.reasons).map_err(ApiError::internal)?;
    // The action's own codes: the policy's, and what happened after (a demotion, a forcing).
    respond_created(action, &action.reasons, Some(details), status)
}

fn creation_response_from_stored(action: &Action, stored: &StoredDecision, status: u16) -> Result<Reply, ApiError> {
    respond_created(action, &stored.reasons, None, status)
}

fn respond_created(
    action: &Action,
    reasons: &[String],
    details: Option<Value>,
    status: u16,
) -> Result<Reply, ApiError> {
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
    if action.status == Status::AwaitingApproval {
        body["approvers"] = json!(action.pool());
        body["approvals_required"] = json!(action.approvals_required);
    }
    Ok(Reply::json(status, &body))
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

impl IntakeService {
    /// Rejection memory: the same request (user, type, payload) that a human rejected within
    /// the policy's `rejection_memory` is refused with 409 `previously_rejected`, saying when,
    /// by whom and why. An administrator's `force: true` goes past it (returned, to be
    /// recorded); anyone else's `force` is refused. Work the policy blocks is left to be blocked.
    async fn refuse_if_rejected(
        &self,
        request: &CreateActionRequest,
        decision: &Decision,
        policy: &Policy,
        identity: &Identity,
        now: DateTime<Utc>,
    ) -> Result<Option<crate::domain::rejections::Rejection>, ApiError> {
        if request.force && !identity.admin {
            return Err(ApiError::invalid("force", "only an administrator may force past a rejection"));
        }
        if matches!(decision.verdict, Verdict::Blocked | Verdict::KycRequired) {
            return Ok(None);
        }
        let memory = policy.rejection_memory(request.action_steps());
        if memory <= chrono::Duration::zero() {
            return Ok(None);
        }
        let Some(fingerprint) = crate::domain::rejections::fingerprint(&identity.user, &request.steps) else {
            return Ok(None);
        };
        let Some(rejection) =
            self.store.last_rejection(&identity.user, &fingerprint).await.map_err(ApiError::internal)?
        else {
            return Ok(None);
        };
        if rejection.rejected_at + memory <= now {
            return Ok(None);
        }
        if request.force {
            return Ok(Some(rejection));
        }
        let said = rejection.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        Err(ApiError::Conflict {
            code: "previously_rejected",
            message: format!(
                "{} rejected this same request at {}{said}; change it, or ask an administrator to force it",
                rejection.by,
                format_time(rejection.rejected_at)
            ),
            extra: json!({
                "rejected_at": format_time(rejection.rejected_at),
                "by": rejection.by,
                "reason": rejection.reason,
                "rejected_action_id": rejection.action_id,
                "remembered_until": format_time(rejection.rejected_at + memory),
            }),
        })
    }

    pub async fn create(&self, call: &Call, identity: &Identity) -> Result<Reply, ApiError> {
        let now = self.clock.now();
        let meta = call.meta.clone();
        let body = call.json_body(MAX_BODY_BYTES)?;
        let idempotency_key = match call.header("idempotency-key").map(str::to_owned) {
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
        let policy = self.policies.current().await;
        let custom = self.custom_types(&policy)?;
        let request = CreateActionRequest::parse_with(&body, now, &custom).map_err(|e| {
            if e.too_large {
                ApiError::PayloadTooLarge { message: format!("{} {}", e.field, e.message), field: Some(e.field) }
            } else {
                ApiError::InvalidRequest { message: format!("{} {}", e.field, e.message), field: Some(e.field) }
            }
        })?;

        forwards_allowed(&request, &policy)?;
        let action_types: Vec<&str> = request.action_steps().collect();
        let needs_kyc = action_types.iter().any(|t| policy.rule(t).is_some_and(|r| r.requires_kyc));
        let kyc_verified =
            if needs_kyc { self.store.kyc_verified(&identity.user).await.map_err(ApiError::internal)? } else { false };
        let mut decision = policy.evaluate(&Subject {
            action_types: action_types.clone(),
            payloads: request.steps.iter().filter_map(crate::domain::StepKind::payload).collect(),
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
        let forced = self.refuse_if_rejected(&request, &decision, &policy, identity, now).await?;
        let self_allowed = matches!(decision.verdict, Verdict::Tier(Tier::Approval))
            && policy.allows_self_approval(action_types.iter().copied());
        let pool = resolve_pool(&policy, &decision, &request, identity, self_allowed)?;
        let (pool, delegated) = if matches!(decision.verdict, Verdict::Tier(Tier::Approval)) {
            self.delegate(pool, identity, &policy, now).await
        } else {
            (pool, Vec::new())
        };

        // Connectors check and describe their steps (not for work the policy refuses anyway).
        let previews = if matches!(decision.verdict, Verdict::Blocked | Verdict::KycRequired) {
            vec![None; request.steps.len()]
        } else {
            // A request over its rate limit is refused before it costs the integrator calls
            // (the creation's own transaction still decides for requests that race).
            if !request.dry_run && asks_connectors(&request, &policy) {
                // Unreadable counters: the creation's transaction decides, as without connectors.
                if let Ok(used) = self.store.counter_usage(&counters).await {
                    let over = counters.iter().zip(used).find(|(c, used)| used.saturating_add(c.units) > c.limit.limit);
                    if let Some((c, _)) = over {
                        return Err(rate_limited(c, now));
                    }
                }
            }
            self.consult(&request, &policy, &identity.user).await?
        };

        if request.dry_run {
            return self.dry_run(&request, &decision, &counters, &pool, &previews, &policy).await;
        }

        let mut action = new_action(&request, &decision, identity, idempotency_key.clone(), now);
        action.ask(pool);
        action.delegated = delegated;
        action.self_approval_allowed = self_allowed;
        if let Some(rejection) = &forced {
            // Recorded with the action: an administrator forced past this rejection.
            action.reasons.push(format!("forced_past_rejection:{}", rejection.action_id));
        }
        for (step, preview) in action.steps.iter_mut().zip(previews) {
            step.preview = preview;
        }
        tracing::Span::current().record("action_id", tracing::field::display(action.action_id));
        let target = target_status(&decision, &request, now);
        action.status = target;
        let mut links = Vec::new();
        if target == Status::AwaitingApproval {
            let expires_at = now + decision.approval_expiry.to_chrono();
            action.approval_expires_at = Some(expires_at);
            action.plan_escalation(&decision.escalation, now);
            self.look_before(&mut action).await;
            // Without an approver the action can still be decided through the API by an admin.
            links = issue_links(&mut action, expires_at);
        }
        // Denied actions are recorded (the audit trail shows the attempt) but use no quota.
        let type_counters: Vec<CounterSpec> = if target == Status::Blocked { Vec::new() } else { counters };
        // Tier-1 work that would run now also takes a unit of automatic execution; creating it
        // `queued` checks that the circuit breaker is closed in the same write.
        let (auto_counters, cooldown) = if action.status == Status::Queued {
            action.auto_started = true;
            crate::domain::guards::auto_guards(&policy, &action, now)
        } else {
            (Vec::new(), None)
        };
        let mut all_counters = type_counters.clone();
        all_counters.extend(auto_counters.iter().cloned());
        let idempotency = idempotency_key.as_ref().map(|k| (k, body_hash.as_str()));
        let approval_records: Vec<ApprovalRecord> = links.iter().map(|(_, record, _)| record.clone()).collect();
        let mut events = creation_events(&action, &decision, identity, &meta, now);
        if let Some(reason) = &action.hold_reason {
            events[1].reason = format!("{}; {reason}", events[1].reason);
        }
        let mut result = self
            .store
            .create_action(&action, &events, idempotency, &all_counters, &approval_records, cooldown.as_ref(), now)
            .await;
        // With the breaker open and `on_open = "require_approval"`: a human decides instead.
        // Only when someone can approve it: otherwise it is held, as with `hold`.
        let mut demoted = None;
        let demotion = (matches!(result, Err(CreateError::BreakerOpen))
            && policy.auto_execution.breaker.on_open == crate::domain::breaker::OnOpen::RequireApproval)
            .then(|| policy.demote(&decision, &action_types))
            .and_then(|d| {
                let pool = resolve_pool(&policy, &d, &request, identity, false).ok()?;
                (!pool.is_empty()).then_some((d, pool))
            });
        if let Some((demoted_decision, pool)) = demotion {
            decision = demoted_decision;
            let expires_at = now + decision.approval_expiry.to_chrono();
            action.status = Status::AwaitingApproval;
            action.tier = Some(Tier::Approval);
            action.auto_started = false;
            action.approval_expires_at = Some(expires_at);
            action.plan_escalation(&decision.escalation, now);
            action.approvals_required = decision.approvals_required;
            action.rejections_required = decision.rejections_required;
            action.completion_mail_to = crate::domain::placement::completion_recipients(&action, &decision);
            action.reasons = decision.reason_codes();
            if let Some(rejection) = &forced {
                action.reasons.push(format!("forced_past_rejection:{}", rejection.action_id));
            }
            action.delegated.clear();
            action.ask(pool);
            let issued = issue_links(&mut action, expires_at);
            let records: Vec<ApprovalRecord> = issued.iter().map(|(_, r, _)| r.clone()).collect();
            events = creation_events(&action, &decision, identity, &meta, now);
            result = self.store.create_action(&action, &events, idempotency, &type_counters, &records, None, now).await;
            demoted = Some(issued);
        }
        // With the breaker open, over the automatic-execution limits or in cool-down: it waits
        // `pending` for the sweep.
        let held = match &result {
            Err(CreateError::BreakerOpen) => {
                Some((crate::domain::guards::breaker_reason(&self.breaker().await?), None))
            }
            Err(CreateError::RateLimited(i)) if *i >= type_counters.len() => Some((
                crate::domain::guards::limit_reason(&all_counters[*i]),
                Some(crate::domain::guards::hold_until(Some(&all_counters[*i]), now)),
            )),
            Err(CreateError::CoolingDown) => cooldown.as_ref().map(|c| {
                (crate::domain::guards::cooldown_reason(c), Some(crate::domain::guards::hold_until(None, now)))
            }),
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
                .create_action(&action, &events, idempotency, &type_counters, &approval_records, None, now)
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

        let links = demoted.unwrap_or(links);
        if let (false, Some(expires_at)) = (links.is_empty(), action.approval_expires_at) {
            let lines = self.plan_lines(&action, &policy);
            let mut mailed = Vec::new();
            // The request must answer in time: mail that does not fit in the budget is left to
            // the sweep (the action stays marked as having mail to send).
            let started = std::time::Instant::now();
            for (token, record, approver) in &links {
                let left = INTAKE_MAIL_BUDGET.saturating_sub(started.elapsed());
                if left.is_zero() {
                    tracing::warn!(approver = %record.approver, "no time left to mail this approver; the sweep will");
                    continue;
                }
                let url = approval::link(&self.approval_mail.public_base_url, token);
                let mail = crate::services::notices::approval_mail(&action, &lines, approver, &url, expires_at);
                match self.approval_mail.mailer.send_within(&mail, left).await {
                    Ok(message_id) => {
                        tracing::info!(%message_id, approver = %record.approver, "approval requested");
                        mailed.push(record.approver.clone());
                    }
                    // The sweep sends a fresh link to whoever was not reached.
                    Err(e) => {
                        tracing::error!(error = %e, approver = %record.approver, "approval mail failed; the sweep retries")
                    }
                }
            }
            if !mailed.is_empty() {
                let mut delivered = action.clone();
                delivered.approval_mail_pending = mailed.len() < links.len();
                delivered.approval_mailed = mailed;
                delivered.version = action.version + 1;
                // Bookkeeping, not a transition: the trail already says who was asked.
                match self.store.transition_many(&action, &delivered, &[], None).await {
                    Ok(()) => action = delivered,
                    // Decided already, or unreachable: the sweep sorts it out (a second link
                    // at worst, never a lost one).
                    Err(e) => tracing::warn!(error = %e, "recording the delivered approval mail failed"),
                }
            }
        }

        if action.status == Status::Queued {
            // If this send is lost, the action stays `queued` and the sweep re-sends it.
            if let Err(e) = self.queue.enqueue(&ExecuteMessage::step(action.action_id, 0), 0).await {
                tracing::error!(error = %e, "queueing failed; the sweep will re-send");
            }
        }
        creation_response(&action, &decision, 201)
    }

    /// Answers a request whose `Idempotency-Key` was seen before: the original action for the
    /// same body, 409 for a different one, `None` for a key never seen.
    pub async fn replay(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
        body_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Reply>, ApiError> {
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

    pub async fn dry_run(
        &self,
        request: &CreateActionRequest,
        decision: &Decision,
        counters: &[CounterSpec],
        pool: &[EmailAddress],
        previews: &[Option<String>],
        policy: &Policy,
    ) -> Result<Reply, ApiError> {
        let now = self.clock.now();
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
        let steps: Vec<Step> = request
            .steps
            .iter()
            .enumerate()
            .map(|(i, k)| Step { preview: previews.get(i).cloned().flatten(), ..Step::new(i, k.clone()) })
            .collect();
        let preview = self.registry.step_lines(&steps, Some(policy));
        let steps: Vec<Value> = steps.iter().map(|s| serde_json::to_value(s).unwrap_or(Value::Null)).collect();
        Ok(Reply::json(
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
                "approver": pool.first(),
                "approvers": pool,
                "approvals_required": (tier == Some(Tier::Approval)).then_some(decision.approvals_required),
                "rate_limits": limits,
                "retry_after": would_be_limited,
                "action_type": request.action_type,
                "steps": steps,
                "preview": preview,
            }),
        ))
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
            payloads: r.steps.iter().filter_map(crate::domain::StepKind::payload).collect(),
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
}
