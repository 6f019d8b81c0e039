//! The owner's routes besides creation: reading, listing, the audit trail, cancel / done /
//! dismiss, rate-limit status and stats.

use super::*;

impl IntakeService {
    pub async fn list(&self, call: &Call, identity: &Identity) -> Result<Reply, ApiError> {
        // With any filter beyond status, the caller's own actions through the filtered listing.
        if ["action_type", "execution", "from", "to"].iter().any(|k| call.query(k).is_some()) {
            if call.query("user").is_some() {
                return Err(ApiError::invalid(
                    "user",
                    "lists only your own actions; administrators use /admin/actions",
                ));
            }
            let mut query = action_query(call, self.clock.now())?;
            query.user = Some(identity.user.clone());
            return self.query_page(call, &query).await;
        }
        let status = match call.query("status") {
            None | Some("") => None,
            Some(s) => Some(
                Status::parse(s)
                    .ok_or_else(|| ApiError::invalid("status", format!("`{s}` is not an action status")))?,
            ),
        };
        let limit = page_limit(call)?;
        let cursor = call.query("cursor").filter(|c| !c.is_empty());
        let page = self
            .store
            .list_actions(&identity.user, status, limit, cursor)
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::invalid("cursor", e.to_string()))?;
        Ok(Reply::json(200, &page_body("actions", page)))
    }

    /// `GET /admin/actions`: everyone's actions, newest first, filtered by status, type, user,
    /// execution (`auto` | `approved` | `manual`: the tier) and creation time (`from`, `to`:
    /// dates or RFC 3339 times; the last 30 days by default, at most 92), from indexes.
    pub async fn admin_list(&self, call: &Call, identity: &Identity) -> Result<Reply, ApiError> {
        if !identity.admin {
            return Err(ApiError::Forbidden);
        }
        let query = action_query(call, self.clock.now())?;
        self.query_page(call, &query).await
    }

    async fn query_page(&self, call: &Call, query: &crate::ports::store::ActionQuery) -> Result<Reply, ApiError> {
        let limit = page_limit(call)?;
        let cursor = call.query("cursor").filter(|c| !c.is_empty());
        let page = self
            .store
            .query_actions(query, limit, cursor)
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::invalid("cursor", e.to_string()))?;
        Ok(Reply::json(200, &page_body("actions", page)))
    }

    /// `GET /approvals?status=pending`: what waits for the caller's decision (by their verified
    /// email claim, or a user id that is an address), newest first, a page at a time.
    pub async fn inbox(&self, call: &Call, identity: &Identity) -> Result<Reply, ApiError> {
        match call.query("status") {
            None | Some("") | Some("pending") => {}
            Some(other) => return Err(ApiError::invalid("status", format!("`{other}` is not one of: pending"))),
        }
        let limit = page_limit(call)?;
        let cursor = call.query("cursor").filter(|c| !c.is_empty());
        let address = identity
            .email
            .clone()
            .or_else(|| EmailAddress::parse(identity.user.as_str()).map(|a| a.as_str().to_owned()));
        let Some(address) = address else {
            return Ok(Reply::json(200, &json!({"approvals": []})));
        };
        let mut page = self
            .store
            .inbox(&address, limit, cursor)
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::invalid("cursor", e.to_string()))?;
        // The index may lag a moment behind a decision: only what still waits for this person.
        // An expired one the sweep has not reached yet no longer waits either. (A page may come
        // back short, or empty with a cursor: keep following `next_cursor`.)
        let now = self.clock.now();
        page.actions.retain(|a| {
            a.status == Status::AwaitingApproval
                && a.undecided().iter().any(|x| x.as_str().eq_ignore_ascii_case(&address))
                && a.approval_expires_at.is_none_or(|t| t > now)
        });
        Ok(Reply::json(200, &page_body("approvals", page)))
    }

    pub async fn audit(&self, id: &str, identity: &Identity) -> Result<Reply, ApiError> {
        let action = self.visible_action(id, identity).await?;
        let events = self.store.audit_trail(action.action_id).await.map_err(ApiError::internal)?;
        let events: Vec<Value> = events.iter().map(AuditEvent::to_api).collect();
        Ok(Reply::json(200, &json!({ "action_id": action.action_id, "events": events })))
    }

    /// The action's status notifications (`notify_url`) and the audit of every delivery attempt.
    pub async fn notifications(&self, id: &str, identity: &Identity) -> Result<Reply, ApiError> {
        let action = self.visible_action(id, identity).await?;
        let found = self.store.notifications(action.action_id).await.map_err(ApiError::internal)?;
        let stream = crate::domain::notify::notification_stream(action.action_id);
        let (events, more) = self.store.system_trail(&stream, 0, TRAIL_PAGE).await.map_err(ApiError::internal)?;
        let notifications: Vec<Value> = found.iter().map(crate::domain::notify::Notification::to_api).collect();
        Ok(Reply::json(
            200,
            &json!({
                "action_id": action.action_id,
                "notify_url": action.notify_url,
                "notifications": notifications,
                "attempts": events,
                "attempts_truncated": more.is_some(),
            }),
        ))
    }

    /// `cancel` (owner withdraws unstarted work), `done` and `dismiss` (a human closes a tier-3
    /// action they carried out, or decided against).
    pub async fn close(&self, call: &Call, id: &str, verb: &str, identity: &Identity) -> Result<Reply, ApiError> {
        let reason = call.optional_reason(1024)?;
        let meta = call.meta.clone();
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
        Ok(Reply::json(200, &updated.to_api()))
    }

    pub async fn apply_transition(
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

    /// `GET /action-types`: every type the policy in force lets a caller propose (blocked
    /// ones left out), with its tier, whether it can be undone, what it does and its payload's
    /// JSON Schema, so an agent can turn them into tool definitions.
    pub async fn action_types(&self) -> Result<Reply, ApiError> {
        let policy = self.policies.current().await;
        let types: Vec<Value> = policy
            .types
            .iter()
            .filter(|(_, rule)| !rule.blocked)
            .map(|(name, rule)| {
                let schema = crate::domain::builtin_schemas::schema(name)
                    .or_else(|| rule.schema.clone())
                    .unwrap_or_else(|| json!({"type": "object"}));
                let description = rule.description.clone().unwrap_or_else(|| {
                    crate::domain::builtin_schemas::schema(name)
                        .and_then(|s| s["description"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| name.clone())
                });
                let mut entry = json!({
                    "action_type": name,
                    "tier": rule.tier,
                    "description": description,
                    "reversible": rule.reversible,
                    "built_in": crate::validation::BUILTIN_ACTION_TYPES.contains(&name.as_str()),
                    "payload_schema": schema,
                });
                // Risk thresholds stay unpublished: an agent reports its own risk score.
                if rule.requires_approval && rule.tier != Some(crate::domain::Tier::Manual) {
                    entry["requires_approval"] = json!(true);
                }
                // The connector's name only (its URL and secret stay with the administrators).
                if let Some(connector) = &rule.connector {
                    entry["connector"] = json!(connector);
                }
                entry
            })
            .collect();
        Ok(Reply::json(200, &json!({ "action_types": types })))
    }

    pub async fn rate_limits(&self, action_type: &str, identity: &Identity) -> Result<Reply, ApiError> {
        let now = self.clock.now();
        let policy = self.policies.current().await;
        let builtin = crate::validation::BUILTIN_ACTION_TYPES.contains(&action_type);
        // A blocked declared type is as unknown here as in `GET /action-types`.
        if !policy.types.get(action_type).is_some_and(|r| builtin || !r.blocked) {
            return Err(ApiError::NotFound("action type"));
        }
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
        Ok(Reply::json(200, &json!({"action_type": action_type, "limits": limits})))
    }

    /// Today's outcomes, from counters kept with each transition: the caller's own, or
    /// everyone's for an admin; with `from` and `to` (dates, at most 92 days), each day's too,
    /// and the types' counts over the range.
    pub async fn stats(&self, call: &Call, identity: &Identity) -> Result<Reply, ApiError> {
        let now = self.clock.now();
        let scope = if identity.admin {
            crate::domain::stats::STATS_ALL.to_owned()
        } else {
            crate::domain::stats::user_stats_scope(&identity.user)
        };
        let today = now.date_naive();
        let range = match (call.query("from"), call.query("to")) {
            (None, None) => None,
            (from, to) => {
                let to = to.map(|t| parse_day("to", t)).transpose()?.unwrap_or(today);
                let from = from.map(|f| parse_day("from", f)).transpose()?.unwrap_or(to - chrono::Duration::days(13));
                if from > to || (to - from).num_days() >= MAX_RANGE_DAYS {
                    return Err(ApiError::invalid(
                        "from",
                        format!("must be on or before to, at most {MAX_RANGE_DAYS} days before it"),
                    ));
                }
                Some((from, to))
            }
        };
        let counters = self.store.daily_stats(&scope, today).await.map_err(ApiError::internal)?;
        let get = |k: &str| counters.get(k).copied().unwrap_or(0);
        let mut by_type = serde_json::Map::new();
        let mut days = Vec::new();
        let count_types = |counters: &std::collections::BTreeMap<String, u64>,
                           by_type: &mut serde_json::Map<String, Value>| {
            for (key, value) in counters {
                if let Some((action_type, field)) = key.strip_prefix("t#").and_then(|r| r.rsplit_once('#')) {
                    let entry = by_type
                        .entry(action_type.to_owned())
                        .or_insert_with(|| json!({"executed": 0, "succeeded": 0, "failed": 0, "rolled_back": 0}));
                    entry[field] = json!(entry[field].as_u64().unwrap_or(0) + value);
                }
            }
        };
        match range {
            None => count_types(&counters, &mut by_type),
            Some((from, to)) => {
                let mut day = from;
                while day <= to {
                    let c = if day == today {
                        counters.clone()
                    } else {
                        self.store.daily_stats(&scope, day).await.map_err(ApiError::internal)?
                    };
                    let at = |k: &str| c.get(k).copied().unwrap_or(0);
                    days.push(json!({"day": day.format("%Y-%m-%d").to_string(), "auto_executed": at("auto_executed"), "approved_executed": at("approved_executed"), "failed": at("failed"), "rolled_back": at("rolled_back")}));
                    count_types(&c, &mut by_type);
                    match day.succ_opt() {
                        Some(next) => day = next,
                        None => break,
                    }
                }
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
        Ok(Reply::json(
            200,
            &json!({
                "scope": if identity.admin { "all" } else { "own" },
                "day": now.format("%Y-%m-%d").to_string(),
                "today": {"auto_executed": get("auto_executed"), "approved_executed": get("approved_executed"), "failed": get("failed"), "rolled_back": get("rolled_back")},
                "by_type": by_type,
                "days": days,
                "success_rate": ratio(succeeded, executed),
                "rollback_rate": ratio(get("rolled_back"), succeeded),
                "recent": recent,
            }),
        ))
    }
}

/// The longest range a listing or the stats cover, in days.
const MAX_RANGE_DAYS: i64 = 92;

/// The years a listing or the stats may name (date arithmetic stays far from chrono's limits).
const YEARS: std::ops::RangeInclusive<i32> = 2000..=9999;

/// A date (`2026-12-01`) of the query, in [`YEARS`].
fn parse_day(field: &str, text: &str) -> Result<chrono::NaiveDate, ApiError> {
    use chrono::Datelike;
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|d| YEARS.contains(&d.year()))
        .ok_or_else(|| ApiError::invalid(field, "must be a date such as 2026-12-01 (years 2000 to 9999)"))
}

/// A listing's filters from the query: `status`, `action_type`, `user`, `execution`
/// (`auto` | `approved` | `manual`), `from` and `to` (a date: from its start, to its end; or an
/// RFC 3339 time). The last 30 days by default; at most [`MAX_RANGE_DAYS`].
fn action_query(call: &Call, now: DateTime<Utc>) -> Result<crate::ports::store::ActionQuery, ApiError> {
    let status = match call.query("status") {
        None => None,
        Some(s) => Some(
            Status::parse(s).ok_or_else(|| ApiError::invalid("status", format!("`{s}` is not an action status")))?,
        ),
    };
    let action_type = match call.query("action_type") {
        None => None,
        Some(t) if t.chars().count() <= 64 && !t.chars().any(char::is_control) => Some(t.to_owned()),
        Some(_) => return Err(ApiError::invalid("action_type", "must be an action type (at most 64 characters)")),
    };
    let user = match call.query("user") {
        None => None,
        Some(u) => Some(UserId::parse(u).ok_or_else(|| ApiError::invalid("user", "is not a user id"))?),
    };
    let tier = match call.query("execution") {
        None => None,
        Some("auto") => Some(Tier::Auto),
        Some("approved") => Some(Tier::Approval),
        Some("manual") => Some(Tier::Manual),
        Some(_) => return Err(ApiError::invalid("execution", "must be auto, approved or manual")),
    };
    let time = |field: &str, text: &str, end_of_day: bool| -> Result<DateTime<Utc>, ApiError> {
        use chrono::Datelike;
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            let t = t.with_timezone(&Utc);
            if !YEARS.contains(&t.year()) {
                return Err(ApiError::invalid(field, "must be a time in the years 2000 to 9999"));
            }
            return Ok(t);
        }
        let day = parse_day(field, text)?;
        let day = if end_of_day { day.succ_opt().unwrap_or(day) } else { day };
        Ok(day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now))
    };
    let to = match call.query("to") {
        Some(t) => time("to", t, true)?,
        None => now + chrono::Duration::seconds(1),
    };
    // One user's or one status's listing reads one partition: any range, from the beginning by
    // default (a manual task or a hold may wait for months). Everyone's of every status reads
    // a partition per day: the last 30 days by default, at most MAX_RANGE_DAYS.
    let one_partition = status.is_some() || user.is_some();
    let beginning = DateTime::from_timestamp(946_684_800, 0).unwrap_or(now); // 2000-01-01
    let from = match call.query("from") {
        Some(f) => time("from", f, false)?,
        None if one_partition => beginning,
        None => to - chrono::Duration::days(30),
    };
    if from >= to || (!one_partition && to - from > chrono::Duration::days(MAX_RANGE_DAYS)) {
        return Err(ApiError::invalid(
            "from",
            format!("must be before to (at most {MAX_RANGE_DAYS} days before it without status or user)"),
        ));
    }
    Ok(crate::ports::store::ActionQuery { status, action_type, user, tier, from, to })
}

/// `limit` from the query: 1 to `MAX_PAGE`, `DEFAULT_PAGE` when absent.
fn page_limit(call: &Call) -> Result<i32, ApiError> {
    match call.query("limit") {
        None | Some("") => Ok(DEFAULT_PAGE),
        Some(s) => s
            .parse::<i32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", format!("must be a whole number from 1 to {MAX_PAGE}"))),
    }
}

/// A page of actions under `key`, with the cursor to the next one.
fn page_body(key: &str, page: crate::ports::store::Page) -> Value {
    let actions: Vec<Value> = page.actions.iter().map(Action::to_api).collect();
    let mut body = json!({ key: actions });
    if let Some(next) = page.next_cursor {
        body["next_cursor"] = json!(next);
    }
    body
}
