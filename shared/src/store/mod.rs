//! DynamoDB persistence: actions, their audit trail, idempotency records, rate counters and
//! user profiles. Every state change is one `TransactWriteItems` that checks the previous
//! version and state of the action and appends the audit event.

pub mod keys;

use crate::domain::{Action, ActionId, AuditEvent, IdempotencyKey, Status, UserId};
use crate::policy::RateLimit;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};

type Item = HashMap<String, AttributeValue>;

/// How long a client's `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL_DAYS: i64 = 7;
/// How many times a transaction cancelled only by conflicts is tried again.
const TRANSACTION_CONFLICT_RETRIES: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB request failed: {0}")]
    Aws(String),
    #[error("stored item is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    fn aws<E: std::error::Error + 'static, R: std::fmt::Debug>(e: SdkError<E, R>) -> Self {
        StoreError::Aws(DisplayErrorContext(e).to_string())
    }
}

impl From<aws_sdk_dynamodb::error::BuildError> for StoreError {
    fn from(e: aws_sdk_dynamodb::error::BuildError) -> Self {
        StoreError::Aws(e.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("the idempotency key was already used")]
    IdempotencyKeyUsed,
    /// The counter at this index of the request's counters is full.
    #[error("rate limit reached")]
    RateLimited(usize),
    #[error("the entity is cooling down")]
    CoolingDown,
    /// The circuit breaker was open, so the action may not be queued for automatic execution.
    #[error("the circuit breaker is open")]
    BreakerOpen,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    /// Someone else changed the action first (version or state moved on).
    #[error("the action changed concurrently")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The lifecycle of one approval link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
    /// The action was decided, cancelled or re-requested some other way.
    Closed,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Closed => "closed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Rejected, Self::Expired, Self::Closed]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// An approval link: bound to one action, one approver and the digest of the exact plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRecord {
    pub token_hash: String,
    pub action_id: ActionId,
    pub approver: String,
    pub plan_digest: String,
    pub expires_at: DateTime<Utc>,
    pub status: ApprovalStatus,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
}

/// Consumes an approval link together with a transition: only a link still pending may be used.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalUse<'a> {
    pub token_hash: &'a str,
    pub status: ApprovalStatus,
    pub by: &'a str,
    pub at: DateTime<Utc>,
}

/// The administrator's policy override and who set it when.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPolicy {
    pub policy: crate::policy::Policy,
    pub version: u64,
    pub updated_by: String,
    pub updated_at: String,
}

/// The stored override before it is parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPolicy {
    pub doc: String,
    pub version: u64,
    pub updated_by: String,
    pub updated_at: String,
}

impl RawPolicy {
    /// The policy it holds, or why it cannot be used.
    pub fn parse(&self) -> Result<crate::policy::Policy, String> {
        let doc: serde_json::Value = serde_json::from_str(&self.doc).map_err(|e| format!("policy: {e}"))?;
        crate::policy::Policy::parse_json(doc).map_err(|e| e.to_string())
    }
}

/// How long an approval record outlives its expiry (so late clicks still get a clear page).
pub const APPROVAL_RECORD_DAYS: i64 = 30;

/// A client idempotency record: which action a key produced, for which request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub action_id: ActionId,
    pub body_sha256: String,
}

/// One fixed-window counter a write consumes units of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSpec {
    /// What is counted: `<user>#<type>` for per-user type limits, `auto#all` / `auto#<user>` for
    /// automatic execution.
    pub scope: String,
    /// What to call it in messages (an action type, or "automatic execution").
    pub label: String,
    pub limit: RateLimit,
    /// How many units this request consumes (a plan may repeat a type).
    pub units: u32,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
}

impl CounterSpec {
    pub fn at(
        scope: impl Into<String>,
        label: impl Into<String>,
        limit: RateLimit,
        units: u32,
        now: DateTime<Utc>,
    ) -> Self {
        let (window_start, window_end) = limit.window.bounds(now);
        Self { scope: scope.into(), label: label.into(), limit, units, window_start, window_end }
    }
}

/// "Not again before": an entity (`rate_limit_key`) acted on automatically rests until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cooldown {
    pub user: UserId,
    pub entity: String,
    pub until: DateTime<Utc>,
    /// The action that started it: that action restarting (held by the kill switch or the
    /// breaker, then started again) is never stopped by its own cool-down.
    pub action_id: ActionId,
}

/// Why a guarded write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("the action changed concurrently")]
    Conflict,
    /// The counter at this index is full.
    #[error("limit reached")]
    CounterFull(usize),
    #[error("the entity is cooling down")]
    CoolingDown,
    /// The circuit breaker on automatic execution is open.
    #[error("the circuit breaker is open")]
    BreakerOpen,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TransitionError> for GuardError {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::Conflict => GuardError::Conflict,
            TransitionError::Store(e) => GuardError::Store(e),
        }
    }
}

pub struct Page {
    pub actions: Vec<Action>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("the cursor is not one this API returned for this listing")]
pub struct BadCursor;

#[derive(Clone)]
pub struct Store {
    client: Client,
    table: String,
    audit_table: String,
    snapshot_retention: chrono::Duration,
}

/// An administrative change to a user's profile (its fields, plus another item to write).
struct UserChange {
    set: Vec<(&'static str, AttributeValue)>,
    other: Option<Put>,
    to: &'static str,
    reason: &'static str,
}

/// How long rollback snapshots are kept unless configured otherwise.
pub const DEFAULT_ROLLBACK_RETENTION_DAYS: i64 = 90;

/// A step's stored snapshot and when the retention lets it go.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSnapshot {
    pub snapshot: serde_json::Value,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>, audit_table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            audit_table: audit_table.into(),
            snapshot_retention: chrono::Duration::days(DEFAULT_ROLLBACK_RETENTION_DAYS),
        }
    }

    /// How long a step's rollback snapshot is kept (its item's TTL).
    pub fn with_snapshot_retention(mut self, retention: chrono::Duration) -> Self {
        self.snapshot_retention = retention;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stores a new action with its first audit events, its idempotency record and its rate
    /// counters, all or nothing. A full counter or a reused key cancels the whole write. An
    /// action created `queued` for automatic execution also checks, in the same transaction,
    /// that the circuit breaker is closed (no read of its own).
    // Each parameter is an independent part of the one creation transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_action(
        &self,
        action: &Action,
        events: &[AuditEvent],
        idempotency: Option<(&IdempotencyKey, &str)>,
        counters: &[CounterSpec],
        approval: Option<&ApprovalRecord>,
        cooldown: Option<&Cooldown>,
        now: DateTime<Utc>,
    ) -> Result<(), CreateError> {
        let mut items = Vec::new();
        items.push(TransactWriteItem::builder().put(self.put_action(action, None)?).build());
        if let Some(record) = approval {
            items.push(TransactWriteItem::builder().put(self.put_approval(record)?).build());
        }
        for event in events {
            items.push(TransactWriteItem::builder().put(self.put_audit(event)?).build());
        }
        let idempotency_index = idempotency.map(|_| items.len());
        if let Some((key, body_sha256)) = idempotency {
            let mut item = Item::new();
            item.insert(keys::PK.into(), s(keys::idempotency_pk(&action.user_id, key)));
            item.insert(keys::SK.into(), s(keys::IDEMPOTENCY_SK));
            item.insert("action_id".into(), s(action.action_id.to_string()));
            item.insert("body_sha256".into(), s(body_sha256));
            item.insert(keys::TTL.into(), n((now + chrono::Duration::days(IDEMPOTENCY_TTL_DAYS)).timestamp()));
            // A record past its lifetime that TTL has not deleted yet may be replaced.
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR #ttl < :now")
                .expression_attribute_names("#ttl", keys::TTL)
                .expression_attribute_values(":now", n(now.timestamp()))
                .build()
                .map_err(StoreError::from)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        if let Some(i) = counters.iter().position(|c| c.units > c.limit.limit) {
            return Err(CreateError::RateLimited(i));
        }
        let first_counter = items.len();
        for counter in counters {
            items.push(TransactWriteItem::builder().update(self.counter_update(counter)?).build());
        }
        let cooldown_index = items.len();
        if let Some(c) = cooldown {
            items.push(TransactWriteItem::builder().put(self.cooldown_put(c, now)?).build());
        }
        let breaker_index =
            (action.status == Status::Queued && action.tier == Some(crate::domain::Tier::Auto)).then_some(items.len());
        if breaker_index.is_some() {
            items.push(TransactWriteItem::builder().condition_check(self.breaker_closed_check()?).build());
        }
        match self.transact(items).await {
            Ok(_) => Ok(()),
            Err(err) => {
                let failed = cancelled_indexes(&err);
                if idempotency_index.is_some_and(|i| failed.contains(&i)) {
                    return Err(CreateError::IdempotencyKeyUsed);
                }
                if breaker_index.is_some_and(|i| failed.contains(&i)) {
                    return Err(CreateError::BreakerOpen);
                }
                if cooldown.is_some() && failed.contains(&cooldown_index) {
                    return Err(CreateError::CoolingDown);
                }
                if let Some(i) = failed.iter().find(|i| **i >= first_counter && **i < cooldown_index) {
                    return Err(CreateError::RateLimited(i - first_counter));
                }
                Err(CreateError::Store(StoreError::aws(err)))
            }
        }
    }

    /// Moves an action to its next state: one conditional write on the version and state it
    /// was read at, with the audit event of the move in the same transaction.
    pub async fn transition(&self, before: &Action, after: &Action, event: &AuditEvent) -> Result<(), TransitionError> {
        self.transition_many(before, after, std::slice::from_ref(event), None).await
    }

    /// Like [`Store::transition`] for a chain of moves written at once (one audit event each,
    /// e.g. `awaiting_approval → approved → queued`), optionally consuming an approval link.
    pub async fn transition_many(
        &self,
        before: &Action,
        after: &Action,
        events: &[AuditEvent],
        approval: Option<ApprovalUse<'_>>,
    ) -> Result<(), TransitionError> {
        self.write_transition(before, after, events, approval, false).await
    }

    async fn write_transition(
        &self,
        before: &Action,
        after: &Action,
        events: &[AuditEvent],
        approval: Option<ApprovalUse<'_>>,
        automatic_success: bool,
    ) -> Result<(), TransitionError> {
        let mut items = self.action_writes(before, after)?;
        if automatic_success {
            items.push(TransactWriteItem::builder().update(self.breaker_success()?).build());
        }
        for event in events {
            items.push(TransactWriteItem::builder().put(self.put_audit(event)?).build());
        }
        // Outcomes are counted with the transition that produces them: exact, and no scans.
        for update in self.stats_updates(before, after)? {
            items.push(TransactWriteItem::builder().update(update).build());
        }
        if let Some(used) = approval {
            items.push(TransactWriteItem::builder().update(self.close_link(&used)?).build());
        }
        self.conditional_transaction(items).await
    }

    /// Moves `before` along `path` (one audit event per hop, by `actor`) and stores `after`
    /// in that final state, in one conditional transaction. Returns the stored action.
    pub async fn advance(
        &self,
        before: &Action,
        after: Action,
        path: &[(Status, String, Option<serde_json::Value>)],
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<Action, TransitionError> {
        self.advance_counting(before, after, path, actor, at, false).await
    }

    /// [`Store::advance`] that, for a step of automatic work that succeeded
    /// (`automatic_success`), also counts the success on the circuit breaker.
    pub async fn advance_counting(
        &self,
        before: &Action,
        mut after: Action,
        path: &[(Status, String, Option<serde_json::Value>)],
        actor: &str,
        at: DateTime<Utc>,
        automatic_success: bool,
    ) -> Result<Action, TransitionError> {
        let events = path_events(before, path, actor, at).ok_or(TransitionError::Conflict)?;
        let from = events.last().map_or(before.status, |e| e.to);
        after.status = from;
        after.version = before.version + path.len() as u64;
        after.updated_at = at;
        self.write_transition(before, &after, &events, None, automatic_success).await?;
        Ok(after)
    }

    /// Actions with timed work of `status` due at or before `now`, oldest first. The index is
    /// eventually consistent: re-read an action before acting on it.
    pub async fn due(&self, status: Status, now: DateTime<Utc>, limit: i32) -> Result<Vec<Action>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(keys::GSI_DUE)
            .key_condition_expression("#pk = :pk AND #sk <= :now")
            .expression_attribute_names("#pk", keys::DUE_PK)
            .expression_attribute_names("#sk", keys::DUE_SK)
            .expression_attribute_values(":pk", s(format!("DUE#{status}")))
            // `~` sorts after every id character, so everything due in this second is included.
            .expression_attribute_values(":now", s(format!("{}#~", crate::clock::format_time(now))))
            .scan_index_forward(true)
            .limit(limit)
            .send()
            .await
            .map_err(StoreError::aws)?;
        let actions = readable_actions(out.items());
        if actions.len() < out.items().len() {
            self.unindex_unreadable(out.items(), &actions).await;
        }
        Ok(actions)
    }

    /// Takes items no reader can parse out of the `due` index (they stay in the table for a
    /// human), so they never fill the sweep's batches.
    async fn unindex_unreadable(&self, items: &[Item], readable: &[Action]) {
        for item in items {
            let (Some(pk), Some(sk)) = (item.get(keys::PK), item.get(keys::SK)) else { continue };
            let id = pk.as_s().ok().and_then(|p| p.strip_prefix("ACTION#")).and_then(ActionId::parse);
            if id.is_some_and(|id| readable.iter().any(|a| a.action_id == id)) {
                continue;
            }
            let removed = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(keys::PK, pk.clone())
                .key(keys::SK, sk.clone())
                .update_expression("REMOVE #dpk, #dsk")
                .expression_attribute_names("#dpk", keys::DUE_PK)
                .expression_attribute_names("#dsk", keys::DUE_SK)
                .send()
                .await;
            if let Err(e) = removed {
                tracing::error!(error = %DisplayErrorContext(e), "taking an unreadable item out of the due index failed");
            }
        }
    }

    /// Stores a new approval link for an action (and closes an old one, if given and still
    /// pending) with the action's update and its audit note, if any, all or nothing.
    pub async fn reissue_link(
        &self,
        before: &Action,
        after: &Action,
        note: Option<&AuditEvent>,
        new_link: &ApprovalRecord,
        old_link: Option<ApprovalUse<'_>>,
    ) -> Result<(), TransitionError> {
        let mut items = vec![
            TransactWriteItem::builder().put(self.put_action(after, Some(before))?).build(),
            TransactWriteItem::builder().put(self.put_approval(new_link)?).build(),
        ];
        if let Some(note) = note {
            items.push(TransactWriteItem::builder().put(self.put_audit(note)?).build());
        }
        if let Some(used) = old_link {
            items.push(TransactWriteItem::builder().update(self.close_link(&used)?).build());
        }
        self.conditional_transaction(items).await
    }

    /// The administrator's policy override, if any. `Err(Corrupt)` when it is stored but no
    /// longer parses or passes the checks (see [`Store::policy_override_raw`] to read it anyway).
    pub async fn policy_override(&self) -> Result<Option<StoredPolicy>, StoreError> {
        let Some(raw) = self.policy_override_raw().await? else { return Ok(None) };
        let policy = raw.parse().map_err(StoreError::Corrupt)?;
        Ok(Some(StoredPolicy { policy, version: raw.version, updated_by: raw.updated_by, updated_at: raw.updated_at }))
    }

    /// The stored override as it is, parsed or not: an administrator can always see it and
    /// replace it, even after a release made it invalid.
    pub async fn policy_override_raw(&self) -> Result<Option<RawPolicy>, StoreError> {
        let found = self.item(keys::POLICY_PK, keys::POLICY_SK).await?;
        let Some(item) = found else { return Ok(None) };
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        let version = item.get("version").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0);
        Ok(Some(RawPolicy {
            doc: text("doc"),
            version,
            updated_by: text("updated_by"),
            updated_at: text("updated_at"),
        }))
    }

    /// Stores a (validated) policy override if the stored version is still `before_version`,
    /// with its audit event in the same transaction.
    pub async fn put_policy(
        &self,
        before_version: u64,
        policy: &crate::policy::Policy,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, TransitionError> {
        let version = before_version + 1;
        let doc = serde_json::to_string(policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let put = Put::builder()
            .table_name(&self.table)
            .item(keys::PK, s(keys::POLICY_PK))
            .item(keys::SK, s(keys::POLICY_SK))
            .item("version", n(version))
            .item("doc", s(&doc))
            .item("updated_by", s(by))
            .item("updated_at", s(crate::clock::format_time(at)))
            .condition_expression("attribute_not_exists(pk) OR #version = :version")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":version", n(before_version))
            .build()
            .map_err(StoreError::from)?;
        let event = serde_json::json!({"from": before_version, "to": version, "actor": by,
            "reason": "policy replaced by an administrator", "detail": {"policy": policy}});
        let audit = self.put_stream_event(keys::POLICY_AUDIT_STREAM, version, at, event)?;
        let items =
            vec![TransactWriteItem::builder().put(put).build(), TransactWriteItem::builder().put(audit).build()];
        self.conditional_transaction(items).await.map(|()| version)
    }

    /// A page of an audit stream that is not an action's (`policy`, `circuit-breaker`, a
    /// user's), oldest first: at most `limit` events after sequence `after`, and the sequence
    /// to continue from when there are more.
    pub async fn system_trail(
        &self,
        stream: &str,
        after: u64,
        limit: i32,
    ) -> Result<(Vec<serde_json::Value>, Option<u64>), StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.audit_table)
            .key_condition_expression("#pk = :pk AND #sk > :after")
            .expression_attribute_names("#pk", keys::AUDIT_PK)
            .expression_attribute_names("#sk", keys::AUDIT_SK)
            .expression_attribute_values(":pk", s(stream))
            .expression_attribute_values(":after", n(after))
            .limit(limit)
            .send()
            .await
            .map_err(StoreError::aws)?;
        let events = out
            .items()
            .iter()
            .filter_map(|i| i.get("doc")?.as_s().ok().and_then(|d| serde_json::from_str(d).ok()))
            .collect();
        let next = out
            .last_evaluated_key()
            .and_then(|k| k.get(keys::AUDIT_SK))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok());
        Ok((events, next))
    }

    /// The circuit breaker (closed when never written), with the successes counted since its
    /// document was written folded into a `window` of recent outcomes.
    pub async fn breaker(&self, window: usize) -> Result<crate::breaker::Breaker, StoreError> {
        let found = self.item(keys::BREAKER_PK, keys::BREAKER_SK).await?;
        let mut breaker = match found.as_ref().and_then(|i| i.get("doc")).and_then(|v| v.as_s().ok()) {
            None => crate::breaker::Breaker::default(),
            Some(doc) => serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("breaker: {e}")))?,
        };
        let successes = found
            .as_ref()
            .and_then(|i| i.get(keys::BREAKER_SUCCESSES))
            .and_then(|v| v.as_n().ok())
            .map(|v| v.parse::<u64>().map_err(|e| StoreError::Corrupt(format!("breaker successes: {e}"))))
            .transpose()?
            .unwrap_or(0);
        breaker.absorb(successes, window);
        Ok(breaker)
    }

    /// Saves the breaker if nobody changed it since `before_version` was read; a change of state
    /// (`from` → `to`, by `actor`, because `reason`) is audited in the same transaction. The
    /// successes it absorbed leave the item's counter; ones counted since stay there.
    pub async fn save_breaker(
        &self,
        before_version: u64,
        after: &crate::breaker::Breaker,
        change: Option<(&str, &str, &str, &str)>,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let doc = serde_json::to_string(after).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // The item may exist without a version: successes were counted before the first save.
        let condition = if before_version == 0 { "attribute_not_exists(#version)" } else { "#version = :before" };
        let mut update = Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::BREAKER_PK))
            .key(keys::SK, s(keys::BREAKER_SK))
            .update_expression("SET #version = :version, #doc = :doc, #open = :open ADD #successes :absorbed")
            .condition_expression(condition)
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#doc", "doc")
            .expression_attribute_names("#open", keys::BREAKER_OPEN)
            .expression_attribute_names("#successes", keys::BREAKER_SUCCESSES)
            .expression_attribute_values(":version", n(after.version))
            .expression_attribute_values(":doc", s(doc))
            .expression_attribute_values(":open", AttributeValue::Bool(after.is_open()))
            .expression_attribute_values(":absorbed", n(-i64::try_from(after.absorbed).unwrap_or(i64::MAX)));
        if before_version != 0 {
            update = update.expression_attribute_values(":before", n(before_version));
        }
        let mut items = vec![TransactWriteItem::builder().update(update.build().map_err(StoreError::from)?).build()];
        if let Some((from, to, actor, reason)) = change {
            let event = serde_json::json!({"actor": actor, "from": from, "to": to, "reason": reason});
            let audit = self.put_stream_event(keys::BREAKER_AUDIT_STREAM, after.version, at, event)?;
            items.push(TransactWriteItem::builder().put(audit).build());
        }
        self.conditional_transaction(items).await
    }

    /// Records one failure of automatic work on the circuit breaker (read, decide, conditional
    /// save; retried on a concurrent change). Returns the reason when this failure opened it
    /// (audited as a change by `actor`, and published as the `CircuitBreakerOpen` metric).
    pub async fn record_breaker_failure(
        &self,
        settings: &crate::breaker::BreakerSettings,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, TransitionError> {
        for _ in 0..5 {
            let mut breaker = self.breaker(settings.window).await?;
            let before = breaker.version;
            let opened = breaker.record(false, settings, now);
            breaker.version += 1;
            let change = opened.as_deref().map(|r| ("closed", "open", actor, r));
            match self.save_breaker(before, &breaker, change, now).await {
                Ok(()) => {
                    if let Some(reason) = &opened {
                        tracing::error!(%reason, "circuit breaker opened: automatic execution paused");
                        crate::telemetry::breaker_open_metric(now);
                    }
                    return Ok(opened);
                }
                Err(TransitionError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(TransitionError::Conflict)
    }

    pub async fn get_action(&self, id: ActionId) -> Result<Option<Action>, StoreError> {
        let found = self.item(keys::action_pk(id), keys::ACTION_SK).await?;
        found.as_ref().map(action_from_item).transpose()
    }

    /// The caller's actions, newest first, optionally of one status.
    pub async fn list_actions(
        &self,
        user: &UserId,
        status: Option<Status>,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Result<Page, BadCursor>, StoreError> {
        let (index, pk_name, sk_name, partition) = match status {
            None => (keys::GSI_BY_USER, keys::GSI1_PK, keys::GSI1_SK, keys::user_partition(user)),
            Some(st) => (keys::GSI_BY_USER_STATUS, keys::GSI2_PK, keys::GSI2_SK, keys::user_status_partition(user, st)),
        };
        let start_key = match cursor {
            None => None,
            Some(c) => match decode_cursor(c, &[keys::PK, keys::SK, pk_name, sk_name], pk_name, &partition) {
                Some(k) => Some(k),
                None => return Ok(Err(BadCursor)),
            },
        };
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", pk_name)
            .expression_attribute_values(":pk", s(partition))
            .scan_index_forward(false)
            .limit(limit)
            .set_exclusive_start_key(start_key)
            .send()
            .await
            .map_err(StoreError::aws)?;
        let actions = readable_actions(out.items());
        let next_cursor = out.last_evaluated_key().map(encode_cursor);
        Ok(Ok(Page { actions, next_cursor }))
    }

    /// The audit trail of an action, oldest first.
    pub async fn audit_trail(&self, id: ActionId) -> Result<Vec<AuditEvent>, StoreError> {
        let mut events = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.audit_table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", keys::AUDIT_PK)
                .expression_attribute_values(":pk", s(id.to_string()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(StoreError::aws)?;
            for item in out.items() {
                // One unreadable event is logged and left out; the rest of the trail is shown.
                match item.get("doc").and_then(|v| v.as_s().ok()).map(|d| serde_json::from_str(d)) {
                    Some(Ok(event)) => events.push(event),
                    Some(Err(e)) => tracing::error!(error = %e, action_id = %id, "skipping an unreadable audit event"),
                    None => tracing::error!(action_id = %id, "skipping an audit item without doc"),
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(events);
            }
        }
    }

    pub async fn get_approval(&self, token_hash: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        let found = self.item(keys::approval_pk(token_hash), keys::APPROVAL_SK).await?;
        let Some(item) = found else { return Ok(None) };
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let time = |k: &str| text(k).and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
        let corrupt = || StoreError::Corrupt(format!("approval record {token_hash}"));
        Ok(Some(ApprovalRecord {
            token_hash: token_hash.to_owned(),
            action_id: text("action_id").and_then(|id| ActionId::parse(&id)).ok_or_else(corrupt)?,
            approver: text("approver").ok_or_else(corrupt)?,
            plan_digest: text("plan_digest").ok_or_else(corrupt)?,
            expires_at: time("expires_at").ok_or_else(corrupt)?,
            status: text("status").and_then(|st| ApprovalStatus::parse(&st)).ok_or_else(corrupt)?,
            decided_by: text("decided_by"),
            decided_at: time("decided_at"),
        }))
    }

    pub async fn get_idempotency(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let found = self.item(keys::idempotency_pk(user, key), keys::IDEMPOTENCY_SK).await?;
        let Some(item) = found else {
            return Ok(None);
        };
        // TTL deletion is lazy (up to days late): a key past its lifetime is forgotten now.
        if expired(&item, now) {
            return Ok(None);
        }
        let id = item.get("action_id").and_then(|v| v.as_s().ok()).and_then(|s| ActionId::parse(s));
        let hash = item.get("body_sha256").and_then(|v| v.as_s().ok());
        match (id, hash) {
            (Some(action_id), Some(hash)) => Ok(Some(IdempotencyRecord { action_id, body_sha256: hash.clone() })),
            _ => Err(StoreError::Corrupt("idempotency record".into())),
        }
    }

    /// Units used of each counter (0 for a window nobody has used yet).
    pub async fn counter_usage(&self, counters: &[CounterSpec]) -> Result<Vec<u32>, StoreError> {
        let mut used = Vec::with_capacity(counters.len());
        for counter in counters {
            let found = self
                .item(keys::rate_counter_pk(&counter.scope, counter.limit.window, counter.window_start), keys::RATE_SK)
                .await?;
            let count = found
                .as_ref()
                .and_then(|i| i.get("count"))
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            used.push(count);
        }
        Ok(used)
    }

    /// The user's Google OAuth access token, as the host application stored it.
    pub async fn google_token(&self, user: &UserId) -> Result<Option<String>, StoreError> {
        let found = self.item(keys::profile_pk(user), keys::GOOGLE_CREDENTIAL_SK).await?;
        Ok(found.as_ref().and_then(|i| i.get("access_token")).and_then(|v| v.as_s().ok()).cloned())
    }

    /// Stores `user`'s Google token (write-only: it never appears in the audit event).
    pub async fn set_google_token(
        &self,
        user: &UserId,
        token: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let credential = Put::builder()
            .table_name(&self.table)
            .item(keys::PK, s(keys::profile_pk(user)))
            .item(keys::SK, s(keys::GOOGLE_CREDENTIAL_SK))
            .item("access_token", s(token))
            .item("updated_at", s(crate::clock::format_time(at)))
            .build()
            .map_err(StoreError::from)?;
        let change = UserChange {
            set: vec![],
            other: Some(credential),
            to: "google_token_stored",
            reason: "Google OAuth token stored",
        };
        self.change_user(user, change, by, at).await
    }

    pub async fn kyc_verified(&self, user: &UserId) -> Result<bool, StoreError> {
        let found = self.item(keys::profile_pk(user), keys::PROFILE_SK).await?;
        Ok(found.as_ref().and_then(|i| i.get("kyc_verified")).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false))
    }

    pub async fn set_kyc_verified(
        &self,
        user: &UserId,
        verified: bool,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let set = vec![
            ("kyc_verified", AttributeValue::Bool(verified)),
            ("kyc_updated_by", s(by)),
            ("kyc_updated_at", s(crate::clock::format_time(at))),
        ];
        let (to, reason) =
            if verified { ("kyc_verified", "KYC verified") } else { ("kyc_unverified", "KYC withdrawn") };
        self.change_user(user, UserChange { set, other: None, to, reason }, by, at).await
    }

    /// An administrative change to a user, with one event on the user's audit stream in the
    /// same transaction. The stream's sequence number is kept on the profile item, so two
    /// concurrent changes cannot take the same one (the loser retries).
    async fn change_user(
        &self,
        user: &UserId,
        change: UserChange,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let stream = keys::user_audit_stream(user);
        for _ in 0..5 {
            let profile = self.item(keys::profile_pk(user), keys::PROFILE_SK).await?;
            let field = |name: &str| profile.as_ref().and_then(|i| i.get(name));
            let seq: u64 = field("audit_seq").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
            let kyc = field("kyc_verified").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
            let from = if change.to.starts_with("kyc") {
                if kyc {
                    "kyc_verified"
                } else {
                    "kyc_unverified"
                }
            } else {
                "google_token"
            };
            let mut profile_update = Update::builder()
                .table_name(&self.table)
                .key(keys::PK, s(keys::profile_pk(user)))
                .key(keys::SK, s(keys::PROFILE_SK))
                .expression_attribute_values(":next", n(seq + 1));
            profile_update = match seq {
                0 => profile_update.condition_expression("attribute_not_exists(audit_seq)"),
                _ => {
                    profile_update.condition_expression("audit_seq = :seq").expression_attribute_values(":seq", n(seq))
                }
            };
            let mut sets = vec!["audit_seq = :next".to_owned()];
            for (i, (name, value)) in change.set.iter().enumerate() {
                sets.push(format!("#f{i} = :f{i}"));
                profile_update = profile_update
                    .expression_attribute_names(format!("#f{i}"), *name)
                    .expression_attribute_values(format!(":f{i}"), value.clone());
            }
            let profile_update = profile_update
                .update_expression(format!("SET {}", sets.join(", ")))
                .build()
                .map_err(StoreError::from)?;
            let event = serde_json::json!({"actor": by, "from": from, "to": change.to, "reason": change.reason});
            let audit = self.put_stream_event(&stream, seq + 1, at, event)?;
            let mut items = vec![
                TransactWriteItem::builder().update(profile_update).build(),
                TransactWriteItem::builder().put(audit).build(),
            ];
            if let Some(other) = change.other.clone() {
                items.push(TransactWriteItem::builder().put(other).build());
            }
            match self.conditional_transaction(items).await {
                Err(TransitionError::Conflict) => continue,
                done => return done,
            }
        }
        Err(TransitionError::Conflict)
    }

    /// The conditional put of `after`, plus the snapshots its steps took since `before`.
    fn action_writes(&self, before: &Action, after: &Action) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut items = vec![TransactWriteItem::builder().put(self.put_action(after, Some(before))?).build()];
        for step in &after.steps {
            let (Some(snapshot), Some(taken)) = (&step.snapshot, step.snapshot_at) else { continue };
            if before.steps.get(step.index).and_then(|b| b.snapshot_at) == Some(taken) {
                continue;
            }
            let mut item = Item::new();
            item.insert(keys::PK.into(), s(keys::snapshot_pk(after.action_id)));
            item.insert(keys::SK.into(), s(keys::snapshot_sk(step.index)));
            item.insert("taken_at".into(), s(crate::clock::format_time(taken)));
            let doc = serde_json::to_string(snapshot).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            item.insert("doc".into(), s(doc));
            item.insert(keys::TTL.into(), n((taken + self.snapshot_retention).timestamp()));
            let put = Put::builder().table_name(&self.table).set_item(Some(item)).build()?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        Ok(items)
    }

    /// The rollback snapshots of an action's steps that are still kept, by step index.
    pub async fn snapshots(&self, id: ActionId) -> Result<BTreeMap<usize, StoredSnapshot>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_values(":pk", s(keys::snapshot_pk(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::aws)?;
        let mut snapshots = BTreeMap::new();
        for item in out.items() {
            let field = |name: &str| item.get(name).and_then(|v| v.as_s().ok().or_else(|| v.as_n().ok()));
            let corrupt = || StoreError::Corrupt(format!("snapshot item of {id}"));
            let index = field(keys::SK)
                .and_then(|sk| sk.strip_prefix("STEP#"))
                .and_then(|i| i.parse::<usize>().ok())
                .ok_or_else(corrupt)?;
            let snapshot = serde_json::from_str(field("doc").ok_or_else(corrupt)?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let expires_at = field(keys::TTL)
                .and_then(|t| t.parse::<i64>().ok())
                .and_then(|t| DateTime::from_timestamp(t, 0))
                .ok_or_else(corrupt)?;
            snapshots.insert(index, StoredSnapshot { snapshot, expires_at });
        }
        Ok(snapshots)
    }

    fn put_action(&self, action: &Action, before: Option<&Action>) -> Result<Put, StoreError> {
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::action_pk(action.action_id)));
        item.insert(keys::SK.into(), s(keys::ACTION_SK));
        item.insert(keys::GSI1_PK.into(), s(keys::user_partition(&action.user_id)));
        item.insert(keys::GSI1_SK.into(), s(action.action_id.to_string()));
        item.insert(keys::GSI2_PK.into(), s(keys::user_status_partition(&action.user_id, action.status)));
        item.insert(keys::GSI2_SK.into(), s(action.action_id.to_string()));
        if let Some((due_pk, due_sk)) = keys::sweep_due(action) {
            item.insert(keys::DUE_PK.into(), s(due_pk));
            item.insert(keys::DUE_SK.into(), s(due_sk));
        }
        item.insert("status".into(), s(action.status.as_str()));
        item.insert("version".into(), n(action.version));
        let doc = serde_json::to_string(action).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        item.insert("doc".into(), s(doc));
        let builder = Put::builder().table_name(&self.table).set_item(Some(item));
        let builder = match before {
            None => builder.condition_expression("attribute_not_exists(pk)"),
            Some(prev) => builder
                .condition_expression("#version = :version AND #status = :status")
                .expression_attribute_names("#version", "version")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":version", n(prev.version))
                .expression_attribute_values(":status", s(prev.status.as_str())),
        };
        Ok(builder.build()?)
    }

    /// Counts a success of automatic work on the breaker item (no condition: it never opens it).
    fn breaker_success(&self) -> Result<Update, StoreError> {
        Ok(Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::BREAKER_PK))
            .key(keys::SK, s(keys::BREAKER_SK))
            .update_expression("ADD #successes :one")
            .expression_attribute_names("#successes", keys::BREAKER_SUCCESSES)
            .expression_attribute_values(":one", n(1))
            .build()?)
    }

    /// Holds when the breaker is closed (or was never written).
    fn breaker_closed_check(&self) -> Result<ConditionCheck, StoreError> {
        Ok(ConditionCheck::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::BREAKER_PK))
            .key(keys::SK, s(keys::BREAKER_SK))
            .condition_expression("attribute_not_exists(#open) OR #open = :closed")
            .expression_attribute_names("#open", keys::BREAKER_OPEN)
            .expression_attribute_values(":closed", AttributeValue::Bool(false))
            .build()?)
    }

    /// Uses up an approval link, on the condition that it is still pending.
    fn close_link(&self, used: &ApprovalUse<'_>) -> Result<Update, StoreError> {
        Ok(Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::approval_pk(used.token_hash)))
            .key(keys::SK, s(keys::APPROVAL_SK))
            .update_expression("SET #status = :status, decided_by = :by, decided_at = :at")
            .condition_expression("#status = :pending")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(used.status.as_str()))
            .expression_attribute_values(":pending", s(ApprovalStatus::Pending.as_str()))
            .expression_attribute_values(":by", s(used.by))
            .expression_attribute_values(":at", s(crate::clock::format_time(used.at)))
            .build()?)
    }

    /// Counter updates for a transition that finishes work (`completed`, `failed`,
    /// `rolled_back`), for the user and for everyone, on the day it happened.
    fn stats_updates(&self, before: &Action, after: &Action) -> Result<Vec<Update>, StoreError> {
        if before.status == after.status {
            return Ok(Vec::new());
        }
        let t = &after.action_type;
        let auto = after.tier == Some(crate::domain::Tier::Auto);
        let fields: Vec<String> = match after.status {
            Status::Completed => vec![
                if auto { "auto_executed".into() } else { "approved_executed".into() },
                format!("t#{t}#executed"),
                format!("t#{t}#succeeded"),
            ],
            Status::Failed => vec!["failed".into(), format!("t#{t}#executed"), format!("t#{t}#failed")],
            Status::RolledBack => vec!["rolled_back".into(), format!("t#{t}#rolled_back")],
            _ => return Ok(Vec::new()),
        };
        let day = after.updated_at.date_naive();
        let mut updates = Vec::new();
        for scope in [keys::STATS_ALL.to_owned(), keys::user_stats_scope(&after.user_id)] {
            let mut builder = Update::builder()
                .table_name(&self.table)
                .key(keys::PK, s(keys::stats_pk(&scope, day)))
                .key(keys::SK, s(keys::STATS_SK))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":ttl", n((after.updated_at + chrono::Duration::days(400)).timestamp()));
            let mut adds = Vec::new();
            for (i, field) in fields.iter().enumerate() {
                builder = builder.expression_attribute_names(format!("#f{i}"), field);
                adds.push(format!("#f{i} :one"));
            }
            builder = builder
                .expression_attribute_names("#ttl", keys::TTL)
                .update_expression(format!("ADD {} SET #ttl = :ttl", adds.join(", ")));
            updates.push(builder.build()?);
        }
        Ok(updates)
    }

    /// One UTC day's outcome counters for `scope` ([`keys::STATS_ALL`] or
    /// [`keys::user_stats_scope`]).
    pub async fn daily_stats(&self, scope: &str, day: chrono::NaiveDate) -> Result<BTreeMap<String, u64>, StoreError> {
        let found = self.item(keys::stats_pk(scope, day), keys::STATS_SK).await?;
        Ok(found
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k, v.as_n().ok()?.parse().ok()?)))
            .filter(|(k, _)| k != keys::TTL)
            .collect())
    }

    /// One TransactWriteItems, tried again (up to 4 times, after 10–20, 20–40, 40–80, 80–160 ms)
    /// while it is cancelled only by conflicts with other transactions.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput,
        SdkError<TransactWriteItemsError, aws_smithy_runtime_api::http::Response>,
    > {
        let mut attempt = 0;
        loop {
            let result = self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await;
            match result {
                Err(e) if attempt < TRANSACTION_CONFLICT_RETRIES && only_conflicts(&e) => {
                    attempt += 1;
                    let ceiling = 10u64 << attempt;
                    let delay = ceiling / 2 + (rand::random::<f64>() * (ceiling / 2) as f64) as u64;
                    tracing::debug!(attempt, delay_ms = delay, "transaction conflict; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                }
                other => return other,
            }
        }
    }

    /// Runs a transaction whose only expected failure is a condition: any cancelled item means
    /// someone else changed something first.
    async fn conditional_transaction(&self, items: Vec<TransactWriteItem>) -> Result<(), TransitionError> {
        match self.transact(items).await {
            Ok(_) => Ok(()),
            Err(err) if !cancelled_indexes(&err).is_empty() => Err(TransitionError::Conflict),
            Err(err) => Err(TransitionError::Store(StoreError::aws(err))),
        }
    }

    /// One item by key, read consistently.
    async fn item(&self, pk: impl Into<String>, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(keys::PK, s(pk.into()))
            .key(keys::SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::aws)?;
        Ok(out.item)
    }

    /// Callers refuse a counter with more units than its limit first (it can never fit).
    fn counter_update(&self, counter: &CounterSpec) -> Result<Update, StoreError> {
        Ok(Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::rate_counter_pk(&counter.scope, counter.limit.window, counter.window_start)))
            .key(keys::SK, s(keys::RATE_SK))
            // The counter only moves if the whole request still fits: exact under concurrency.
            .update_expression("ADD #count :units SET #ttl = :ttl")
            .condition_expression("attribute_not_exists(#count) OR #count <= :max_before")
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#ttl", keys::TTL)
            .expression_attribute_values(":units", n(counter.units))
            .expression_attribute_values(":max_before", n(i64::from(counter.limit.limit) - i64::from(counter.units)))
            .expression_attribute_values(":ttl", n((counter.window_end + chrono::Duration::days(1)).timestamp()))
            .build()?)
    }

    fn cooldown_put(&self, c: &Cooldown, now: DateTime<Utc>) -> Result<Put, StoreError> {
        Ok(Put::builder()
            .table_name(&self.table)
            .item(keys::PK, s(keys::cooldown_pk(&c.user, &c.entity)))
            .item(keys::SK, s(keys::COOLDOWN_SK))
            .item("until", s(crate::clock::format_time(c.until)))
            .item("action_id", s(c.action_id.to_string()))
            .item(keys::TTL, n((c.until + chrono::Duration::days(1)).timestamp()))
            .condition_expression("attribute_not_exists(pk) OR #until <= :now OR #action = :action")
            .expression_attribute_names("#until", "until")
            .expression_attribute_names("#action", "action_id")
            .expression_attribute_values(":now", s(crate::clock::format_time(now)))
            .expression_attribute_values(":action", s(c.action_id.to_string()))
            .build()?)
    }

    /// Like [`Store::advance`], also consuming `counters` and starting a `cooldown`, all or
    /// nothing (automatic execution's limits); with `breaker_closed`, only while the circuit
    /// breaker is closed, checked in the same transaction (never from an earlier reading).
    #[allow(clippy::too_many_arguments)]
    pub async fn advance_guarded(
        &self,
        before: &Action,
        mut after: Action,
        path: &[(Status, String, Option<serde_json::Value>)],
        actor: &str,
        at: DateTime<Utc>,
        counters: &[CounterSpec],
        cooldown: Option<&Cooldown>,
        breaker_closed: bool,
    ) -> Result<Action, GuardError> {
        let events = path_events(before, path, actor, at).ok_or(GuardError::Conflict)?;
        if let Some(i) = counters.iter().position(|c| c.units > c.limit.limit) {
            // `attribute_not_exists` would let it through on a fresh window: refuse it here.
            return Err(GuardError::CounterFull(i));
        }
        after.status = events.last().map_or(before.status, |e| e.to);
        after.version = before.version + path.len() as u64;
        after.updated_at = at;
        let mut items = self.action_writes(before, &after)?;
        for event in &events {
            items.push(TransactWriteItem::builder().put(self.put_audit(event)?).build());
        }
        let first_counter = items.len();
        for counter in counters {
            items.push(TransactWriteItem::builder().update(self.counter_update(counter)?).build());
        }
        let cooldown_index = items.len();
        if let Some(c) = cooldown {
            items.push(TransactWriteItem::builder().put(self.cooldown_put(c, at)?).build());
        }
        let breaker_index = breaker_closed.then_some(items.len());
        if breaker_closed {
            items.push(TransactWriteItem::builder().condition_check(self.breaker_closed_check()?).build());
        }
        match self.transact(items).await {
            Ok(_) => Ok(after),
            Err(err) => {
                let failed = cancelled_indexes(&err);
                if failed.iter().any(|i| *i < first_counter) {
                    Err(GuardError::Conflict)
                } else if breaker_index.is_some_and(|i| failed.contains(&i)) {
                    Err(GuardError::BreakerOpen)
                } else if cooldown.is_some() && failed.contains(&cooldown_index) {
                    Err(GuardError::CoolingDown)
                } else if let Some(i) = failed.iter().find(|i| **i >= first_counter && **i < cooldown_index) {
                    Err(GuardError::CounterFull(i - first_counter))
                } else {
                    Err(GuardError::Store(StoreError::aws(err)))
                }
            }
        }
    }

    fn put_approval(&self, record: &ApprovalRecord) -> Result<Put, StoreError> {
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::approval_pk(&record.token_hash)));
        item.insert(keys::SK.into(), s(keys::APPROVAL_SK));
        item.insert("action_id".into(), s(record.action_id.to_string()));
        item.insert("approver".into(), s(&record.approver));
        item.insert("plan_digest".into(), s(&record.plan_digest));
        item.insert("expires_at".into(), s(crate::clock::format_time(record.expires_at)));
        item.insert("status".into(), s(record.status.as_str()));
        item.insert(
            keys::TTL.into(),
            n((record.expires_at + chrono::Duration::days(APPROVAL_RECORD_DAYS)).timestamp()),
        );
        Ok(Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()?)
    }

    /// An event of an audit stream that is not an action's (`event` gives actor, from, to,
    /// reason, detail; the stream, sequence number and time are added), written once.
    fn put_stream_event(
        &self,
        stream: &str,
        seq: u64,
        at: DateTime<Utc>,
        mut event: serde_json::Value,
    ) -> Result<Put, StoreError> {
        event["stream"] = serde_json::json!(stream);
        event["seq"] = serde_json::json!(seq);
        event["at"] = serde_json::json!(crate::clock::format_time(at));
        Ok(Put::builder()
            .table_name(&self.audit_table)
            .item(keys::AUDIT_PK, s(stream))
            .item(keys::AUDIT_SK, n(seq))
            .item("at", s(crate::clock::format_time(at)))
            .item("doc", s(event.to_string()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", keys::AUDIT_PK)
            .build()?)
    }

    fn put_audit(&self, event: &AuditEvent) -> Result<Put, StoreError> {
        let mut item = Item::new();
        item.insert(keys::AUDIT_PK.into(), s(event.action_id.to_string()));
        item.insert(keys::AUDIT_SK.into(), n(event.seq));
        item.insert("at".into(), s(crate::clock::format_time(event.at)));
        item.insert("to".into(), s(event.to.as_str()));
        let doc = serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        item.insert("doc".into(), s(doc));
        // Audit events are written once and never replaced.
        Ok(Put::builder()
            .table_name(&self.audit_table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", keys::AUDIT_PK)
            .build()?)
    }
}

/// One audit event per hop of `path`, checked against the state machine.
fn path_events(
    before: &Action,
    path: &[(Status, String, Option<serde_json::Value>)],
    actor: &str,
    at: DateTime<Utc>,
) -> Option<Vec<AuditEvent>> {
    let mut events = Vec::with_capacity(path.len());
    let mut from = before.status;
    for (i, (to, reason, detail)) in path.iter().enumerate() {
        from.transition_to(*to).ok()?;
        events.push(AuditEvent {
            action_id: before.action_id,
            seq: before.version + 1 + i as u64,
            at,
            actor: actor.to_owned(),
            from: Some(from),
            to: *to,
            reason: reason.clone(),
            detail: detail.clone(),
            request_id: None,
            source_ip: None,
            user_agent: None,
        });
        from = *to;
    }
    Some(events)
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Whether an item's TTL has passed (DynamoDB deletes such items lazily).
fn expired(item: &Item, now: DateTime<Utc>) -> bool {
    item.get(keys::TTL)
        .and_then(|v| v.as_n().ok())
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|t| t < now.timestamp())
}

/// The actions of a page or batch; one that cannot be read is logged and left out, so one bad
/// item never fails the listing or the sweep for everyone else.
fn readable_actions(items: &[Item]) -> Vec<Action> {
    items
        .iter()
        .filter_map(|item| match action_from_item(item) {
            Ok(action) => Some(action),
            Err(e) => {
                let pk = item.get(keys::PK).and_then(|v| v.as_s().ok()).map_or("?", String::as_str);
                tracing::error!(error = %e, pk, "skipping an unreadable action item");
                None
            }
        })
        .collect()
}

fn action_from_item(item: &Item) -> Result<Action, StoreError> {
    let doc = item
        .get("doc")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| StoreError::Corrupt("action item without doc".into()))?;
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("action doc: {e}")))
}

/// Whether a transaction was cancelled only because another one held one of its items
/// (`TransactionConflict`; DynamoDB applied nothing): worth trying again at once, unlike a
/// failed condition. Hot items (the day's outcome counters, the circuit breaker) meet this
/// under concurrency.
fn only_conflicts<R>(err: &SdkError<TransactWriteItemsError, R>) -> bool {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
            let codes: Vec<&str> = e.cancellation_reasons().iter().filter_map(|r| r.code()).collect();
            conflict_codes(&codes)
        }
        _ => false,
    }
}

/// `codes`: the cancellation reasons' codes (`None` for the items that were fine).
fn conflict_codes(codes: &[&str]) -> bool {
    codes.contains(&"TransactionConflict") && codes.iter().all(|c| matches!(*c, "None" | "TransactionConflict"))
}

/// Indexes of the transaction items whose condition failed, if the transaction was cancelled.
fn cancelled_indexes<R>(err: &SdkError<TransactWriteItemsError, R>) -> Vec<usize> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => e
            .cancellation_reasons()
            .iter()
            .enumerate()
            .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
            .map(|(i, _)| i)
            .collect(),
        _ => Vec::new(),
    }
}

fn encode_cursor(key: &Item) -> String {
    let map: std::collections::BTreeMap<&str, &str> =
        key.iter().filter_map(|(k, v)| Some((k.as_str(), v.as_s().ok()?.as_str()))).collect();
    let json = serde_json::to_vec(&map).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// A cursor is only accepted with exactly the expected key attributes and the caller's own
/// partition, so it cannot be used to page through someone else's actions.
fn decode_cursor(cursor: &str, expected: &[&str], partition_attr: &str, partition: &str) -> Option<Item> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let map: HashMap<String, String> = serde_json::from_slice(&bytes).ok()?;
    if map.len() != expected.len()
        || !expected.iter().all(|k| map.contains_key(*k))
        || map.get(partition_attr)? != partition
    {
        return None;
    }
    Some(map.into_iter().map(|(k, v)| (k, AttributeValue::S(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_cancellation_by_conflicts_is_tried_again() {
        assert!(conflict_codes(&["None", "TransactionConflict", "None"]));
        assert!(!conflict_codes(&["None", "None"]), "nothing conflicted");
        assert!(
            !conflict_codes(&["TransactionConflict", "ConditionalCheckFailed"]),
            "a failed condition is an answer, not a conflict"
        );
        assert!(!conflict_codes(&["ValidationError"]));
    }

    #[test]
    fn cursor_round_trips_and_is_bound_to_its_partition() {
        let mut key = Item::new();
        for (k, v) in [("pk", "ACTION#1"), ("sk", "ACTION"), ("gsi1pk", "USER#alice"), ("gsi1sk", "1")] {
            key.insert(k.into(), s(v));
        }
        let cursor = encode_cursor(&key);
        let expected = ["pk", "sk", "gsi1pk", "gsi1sk"];
        assert_eq!(decode_cursor(&cursor, &expected, "gsi1pk", "USER#alice"), Some(key));
        assert_eq!(decode_cursor(&cursor, &expected, "gsi1pk", "USER#bob"), None);
        assert_eq!(decode_cursor("!!!", &expected, "gsi1pk", "USER#alice"), None);
        assert_eq!(decode_cursor("e30", &expected, "gsi1pk", "USER#alice"), None);
    }
}
