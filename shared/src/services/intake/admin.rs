//! Administrators' routes: the policy, the circuit breaker, users' KYC flags and Google tokens,
//! and the system audit streams.

use super::*;

impl IntakeService {
    /// The host application records whether a user passed KYC (needed by `make_purchase`).
    /// `GET` (read, `change` false) or `PUT` (set, `change` true) a user's KYC flag.
    pub async fn kyc(&self, call: &Call, user: &str, identity: &Identity, change: bool) -> Result<Reply, ApiError> {
        let user = administered_user(identity, user)?;
        if change {
            let body = call.json_body(4 * 1024)?;
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
        Ok(Reply::json(200, &json!({"user_id": user, "kyc_verified": verified})))
    }

    /// `GET`/`PUT`/`DELETE /approvers/{email}/delegation`: an approver (or an administrator)
    /// sends their approval requests to someone else until a time, or stops; audited on the
    /// approver's stream (`GET /admin/users/{email}/audit`).
    pub async fn delegation(
        &self,
        call: &Call,
        email: &str,
        identity: &Identity,
        method: &str,
    ) -> Result<Reply, ApiError> {
        // The path segment arrives decoded.
        let approver = EmailAddress::parse(email)
            .filter(|a| a.as_str() == email.trim())
            .ok_or_else(|| ApiError::invalid("email", "must be an email address"))?;
        // Exactly their address (a +tag is someone else's here: this grants lasting power).
        let theirs = identity.email.as_deref().is_some_and(|e| approver.matches(e));
        if !theirs && !identity.admin {
            return Err(ApiError::Forbidden);
        }
        let key = approver.as_str().to_ascii_lowercase();
        // The approver's audit stream is keyed like a user's: an address that cannot be one is refused.
        if crate::domain::approvers::approver_user(&key).is_none() {
            return Err(ApiError::invalid("email", "cannot be an approver's key (no '#', at most 128 characters)"));
        }
        let now = self.clock.now();
        let by = identity.email.clone().unwrap_or_else(|| identity.user.to_string());
        match method {
            "PUT" => {
                let body = call.json_body(4 * 1024)?;
                if let Some(extra) = body.as_object().and_then(|o| o.keys().find(|k| *k != "to" && *k != "until")) {
                    return Err(ApiError::invalid(extra.clone(), "is not a known field"));
                }
                let to = body
                    .get("to")
                    .and_then(Value::as_str)
                    .filter(|t| t.trim() == *t)
                    .and_then(EmailAddress::parse)
                    .ok_or_else(|| ApiError::invalid("to", "must be an email address"))?;
                if crate::domain::ids::is_same_mailbox(to.as_str(), approver.as_str()) {
                    return Err(ApiError::invalid("to", "must be someone else"));
                }
                if !self.policies.current().await.may_stand_in(&to) {
                    return Err(ApiError::invalid(
                        "to",
                        "must be someone the policy could ask to approve (an approver, a group member or an allowed address)",
                    ));
                }
                let until = body
                    .get("until")
                    .and_then(Value::as_str)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc))
                    .ok_or_else(|| ApiError::invalid("until", "must be an RFC 3339 time"))?;
                let longest = now + chrono::Duration::days(crate::domain::approvers::MAX_DELEGATION_DAYS);
                if until <= now || until > longest {
                    return Err(ApiError::invalid(
                        "until",
                        format!(
                            "must be in the future and within {} days",
                            crate::domain::approvers::MAX_DELEGATION_DAYS
                        ),
                    ));
                }
                let delegation = crate::domain::approvers::Delegation { to, until };
                self.store.set_delegation(&key, Some(&delegation), &by, now).await.map_err(busy_or_internal)?;
                tracing::info!(approver = %key, by = %by, "delegation set");
            }
            // Nothing to end: nothing written.
            "DELETE" if self.store.delegation(&key).await.map_err(ApiError::internal)?.is_some() => {
                self.store.set_delegation(&key, None, &by, now).await.map_err(busy_or_internal)?;
                tracing::info!(approver = %key, by = %by, "delegation ended");
            }
            _ => {}
        }
        let current = self.store.delegation(&key).await.map_err(ApiError::internal)?;
        let shown = current.map(|d| json!({"to": d.to, "until": format_time(d.until), "active": d.until > now}));
        Ok(Reply::json(200, &json!({"approver": key, "delegation": shown})))
    }

    /// The approvers in `pool` who delegated, replaced by their delegates (while the delegation
    /// lasts; never to the requester or to someone already asked), and who stood in for whom.
    /// A delegation that cannot be read leaves that approver asked (nobody is lost).
    pub(super) async fn delegate(
        &self,
        pool: Vec<EmailAddress>,
        identity: &Identity,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> (Vec<EmailAddress>, Vec<crate::domain::approvers::Delegated>) {
        let same = crate::domain::ids::is_same_mailbox;
        let is_requester = |a: &str| identity.owns_address(a);
        let mut out: Vec<EmailAddress> = Vec::with_capacity(pool.len());
        let mut delegated = Vec::new();
        for member in &pool {
            let found = match self.store.delegation(&member.as_str().to_ascii_lowercase()).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, approver = %member, "reading a delegation failed; the approver is asked");
                    None
                }
            };
            let usable = found.filter(|d| {
                d.until > now
                    && policy.may_stand_in(&d.to)
                    && !is_requester(d.to.as_str())
                    && !pool.iter().chain(out.iter()).any(|p| same(p.as_str(), d.to.as_str()))
            });
            match usable {
                Some(d) => {
                    delegated.push(crate::domain::approvers::Delegated {
                        from: member.as_str().to_owned(),
                        to: d.to.as_str().to_owned(),
                        until: d.until,
                    });
                    out.push(d.to);
                }
                None => out.push(member.clone()),
            }
        }
        (out, delegated)
    }

    /// The administrative changes to a user (KYC, stored credentials), oldest first.
    pub async fn user_audit(&self, call: &Call, user: &str, identity: &Identity) -> Result<Reply, ApiError> {
        let user = administered_user(identity, user)?;
        let (events, next) = self.trail_page(&crate::domain::streams::user_audit_stream(&user), call).await?;
        Ok(Reply::json(200, &json!({"user_id": user, "events": events, "events_next": next})))
    }

    pub async fn policy_status(&self, call: &Call, identity: &Identity) -> Result<Reply, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        let stored = self.store.policy_override_raw().await.map_err(ApiError::internal)?;
        let events = self.trail_page(crate::domain::streams::POLICY_AUDIT_STREAM, call).await?;
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
        Ok(Reply::json(200, &body))
    }

    /// Replaces the policy at run time. The whole document is validated first; an invalid one
    /// is refused and nothing is stored. Every change is audited.
    pub async fn replace_policy(&self, call: &Call, identity: &Identity) -> Result<Reply, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        let body = call.json_body(256 * 1024)?;
        let policy = Policy::parse_json(body)
            .map_err(|e| ApiError::InvalidRequest { message: e.to_string(), field: Some("$".into()) })?;
        let before = self.store.policy_override_raw().await.map_err(ApiError::internal)?.map_or(0, |s| s.version);
        match self.store.put_policy(before, &policy, identity.user.as_str(), self.clock.now()).await {
            Ok(version) => {
                tracing::info!(by = %identity.user, version, "policy replaced");
                Ok(Reply::json(200, &json!({"policy": policy, "source": "override", "version": version})))
            }
            Err(e) => Err(busy_or_internal(e)),
        }
    }

    /// The circuit breaker as of now, its window as the policy sets it.
    pub async fn breaker(&self) -> Result<crate::breaker::Breaker, ApiError> {
        let window = self.policies.current().await.auto_execution.breaker.window;
        self.store.breaker(window).await.map_err(ApiError::internal)
    }

    /// A page of a system audit stream: `?events_after=<seq>` continues where `events_next`
    /// of the previous page left off.
    pub async fn trail_page(&self, stream: &str, call: &Call) -> Result<(Vec<Value>, Option<u64>), ApiError> {
        let after = match call.query("events_after") {
            None | Some("") => 0,
            Some(v) => v.parse::<u64>().map_err(|_| ApiError::invalid("events_after", "must be a whole number"))?,
        };
        self.store.system_trail(stream, after, TRAIL_PAGE).await.map_err(ApiError::internal)
    }

    pub async fn breaker_status(&self, call: &Call, identity: &Identity) -> Result<Reply, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        let mut body = self.breaker().await?.to_api();
        let (events, next) = self.trail_page(crate::domain::streams::BREAKER_AUDIT_STREAM, call).await?;
        body["events"] = json!(events);
        body["events_next"] = json!(next);
        Ok(Reply::json(200, &body))
    }

    /// Closes the breaker (audited); held tier-1 work is started by the next sweep.
    pub async fn breaker_reset(&self, identity: &Identity) -> Result<Reply, ApiError> {
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
                    return Ok(Reply::json(200, &breaker.to_api()));
                }
                Err(TransitionError::Conflict) => continue,
                Err(TransitionError::Store(e)) => return Err(ApiError::internal(e)),
            }
        }
        Err(ApiError::internal(anyhow::anyhow!("the circuit breaker kept changing during the reset")))
    }

    /// `GET /admin/integrations`: every integration's circuit breaker (those ever called).
    pub async fn integrations(&self, identity: &Identity) -> Result<Reply, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        let policy = self.policies.current().await;
        let now = self.clock.now();
        let window = |name: &str| crate::domain::integrations::settings_for(&policy.integrations, name);
        // One query of one partition; a window wide enough for any integration's settings.
        let found = self.store.integrations(MAX_INTEGRATIONS, 200).await.map_err(ApiError::internal)?;
        let list: Vec<Value> = found
            .into_iter()
            .map(|(name, mut breaker)| {
                let settings = window(&name);
                trim_window(&mut breaker, settings.window);
                breaker.to_api(&name, &settings, now)
            })
            .collect();
        Ok(Reply::json(200, &json!({"integrations": list})))
    }

    /// `GET /admin/integrations/{name}`: one breaker and a page of its audit trail.
    pub async fn integration(&self, call: &Call, name: &str, identity: &Identity) -> Result<Reply, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        if !crate::domain::integrations::valid_name(name) {
            return Err(ApiError::NotFound("integration"));
        }
        let settings = crate::domain::integrations::settings_for(&self.policies.current().await.integrations, name);
        let breaker = self.store.integration(name, settings.window).await.map_err(ApiError::internal)?;
        let mut body = breaker.to_api(name, &settings, self.clock.now());
        let stream = crate::domain::streams::integration_audit_stream(name);
        let (events, next) = self.trail_page(&stream, call).await?;
        body["events"] = json!(events);
        body["events_next"] = json!(next);
        Ok(Reply::json(200, &body))
    }

    /// `POST /admin/integrations/{name}/reset`: closes one integration's breaker (audited);
    /// its waiting work runs when its message comes back.
    pub async fn integration_reset(&self, name: &str, identity: &Identity) -> Result<Reply, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        if !crate::domain::integrations::valid_name(name) {
            return Err(ApiError::NotFound("integration"));
        }
        let settings = crate::domain::integrations::settings_for(&self.policies.current().await.integrations, name);
        for _ in 0..5 {
            let mut breaker = self.store.integration(name, settings.window).await.map_err(ApiError::internal)?;
            let before = breaker.version();
            let now = self.clock.now();
            let from = breaker.state_at(&settings, now);
            if !breaker.close(now) {
                return Ok(Reply::json(200, &breaker.to_api(name, &settings, now)));
            }
            let change = Some((from, "closed", identity.user.as_str(), "reset by an administrator"));
            match self.store.save_integration(name, before, &breaker, change, now).await {
                Ok(()) => {
                    tracing::info!(by = %identity.user, integration = name, "integration circuit reset");
                    return Ok(Reply::json(200, &breaker.to_api(name, &settings, now)));
                }
                Err(TransitionError::Conflict) => continue,
                Err(TransitionError::Store(e)) => return Err(ApiError::internal(e)),
            }
        }
        Err(ApiError::internal(anyhow::anyhow!("the integration's breaker kept changing during the reset")))
    }

    /// The host application stores a user's Google OAuth access token for the Gmail and
    /// Calendar handlers. It is write-only through the API and never logged.
    pub async fn google_token(&self, call: &Call, user: &str, identity: &Identity) -> Result<Reply, ApiError> {
        let user = administered_user(identity, user)?;
        let body = call.json_body(16 * 1024)?;
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
        Ok(Reply::json(200, &json!({"user_id": user, "google_token": "stored"})))
    }
}

/// The user an administrator's route is about: only an administrator may ask, and the path
/// must name a valid user id.
fn administered_user(identity: &Identity, user: &str) -> Result<UserId, ApiError> {
    if !identity.admin {
        return Err(ApiError::Forbidden);
    }
    UserId::parse(user).ok_or_else(|| ApiError::invalid("user_id", "is not a valid user id"))
}

/// The most integrations `GET /admin/integrations` lists (one query page).
const MAX_INTEGRATIONS: i32 = 500;

/// Keeps the last `window` outcomes of a breaker read with a wider window.
fn trim_window(breaker: &mut crate::domain::integrations::IntegrationBreaker, window: usize) {
    let excess = breaker.breaker.recent.len().saturating_sub(window.max(1));
    breaker.breaker.recent.drain(..excess);
}
