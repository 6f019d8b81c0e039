//! The store, split by capability. Every write that moves an action is one conditional,
//! all-or-nothing change (the version and state it was read at, its audit events, the counters
//! it consumes); a lost race is [`TransitionError::Conflict`], never a partial write.
//!
//! Two implementations keep the same semantics and pass the same adapter suite: DynamoDB
//! (`adapters::aws::dynamo`) and memory ([`crate::ports::memory`]).

use crate::domain::approval::{ApprovalRecord, ApprovalUse};
use crate::domain::breaker::Breaker;
use crate::domain::guards::{Cooldown, CounterSpec};
use crate::domain::integrations::IntegrationBreaker;
use crate::domain::notify::Notification;
use crate::domain::policy::Policy;
use crate::domain::{Action, ActionId, AuditEvent, IdempotencyKey, Status, UserId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;

/// One hop of a move: the state it reaches, why, and the audit event's detail.
pub type Hop = (Status, String, Option<Value>);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB request failed: {0}")]
    Aws(String),
    #[error("stored item is corrupt: {0}")]
    Corrupt(String),
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

/// How long a client's `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL_DAYS: i64 = 7;

/// A client idempotency record: which action a key produced, for which request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub action_id: ActionId,
    pub body_sha256: String,
}

pub struct Page {
    pub actions: Vec<Action>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("the cursor is not one this API returned for this listing")]
pub struct BadCursor;

/// The administrator's policy override and who set it when.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPolicy {
    pub policy: crate::domain::policy::Policy,
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
    pub fn parse(&self) -> Result<crate::domain::policy::Policy, String> {
        let doc: serde_json::Value = serde_json::from_str(&self.doc).map_err(|e| format!("policy: {e}"))?;
        crate::domain::policy::Policy::parse_json(doc).map_err(|e| e.to_string())
    }
}

/// How long rollback snapshots are kept unless configured otherwise.
pub const DEFAULT_ROLLBACK_RETENTION_DAYS: i64 = 90;

/// A step's stored snapshot and when the retention lets it go.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSnapshot {
    pub snapshot: serde_json::Value,
    pub expires_at: DateTime<Utc>,
}

/// Actions, their audit trails and idempotency records.
#[async_trait]
pub trait ActionStore: Send + Sync {
    /// Stores a new action with its first audit events, its idempotency record and its rate
    /// counters, all or nothing. A full counter or a reused key cancels the whole write. An
    /// action created `queued` for automatic execution also checks, in the same write, that the
    /// circuit breaker is closed.
    // Each parameter is an independent part of the one creation transaction.
    #[allow(clippy::too_many_arguments)]
    async fn create_action(
        &self,
        action: &Action,
        events: &[AuditEvent],
        idempotency: Option<(&IdempotencyKey, &str)>,
        counters: &[CounterSpec],
        approvals: &[ApprovalRecord],
        cooldown: Option<&Cooldown>,
        now: DateTime<Utc>,
    ) -> Result<(), CreateError>;

    /// Moves an action to its next state: one conditional write on the version and state it
    /// was read at, with the audit event of the move in the same write.
    async fn transition(&self, before: &Action, after: &Action, event: &AuditEvent) -> Result<(), TransitionError> {
        self.transition_many(before, after, std::slice::from_ref(event), None).await
    }

    /// Like [`ActionStore::transition`] for a chain of moves written at once (one audit event
    /// each, e.g. `awaiting_approval → approved → queued`), optionally consuming an approval link.
    async fn transition_many(
        &self,
        before: &Action,
        after: &Action,
        events: &[AuditEvent],
        approval: Option<ApprovalUse<'_>>,
    ) -> Result<(), TransitionError>;

    /// Moves `before` along `path` (one audit event per hop, by `actor`) and stores `after`
    /// in that final state, in one conditional write. Returns the stored action.
    async fn advance(
        &self,
        before: &Action,
        after: Action,
        path: &[Hop],
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<Action, TransitionError> {
        self.advance_counting(before, after, path, actor, at, false).await
    }

    /// [`ActionStore::advance`] that, for a step of automatic work that succeeded
    /// (`automatic_success`), also counts the success on the circuit breaker.
    async fn advance_counting(
        &self,
        before: &Action,
        after: Action,
        path: &[Hop],
        actor: &str,
        at: DateTime<Utc>,
        automatic_success: bool,
    ) -> Result<Action, TransitionError>;

    /// Like [`ActionStore::advance`], also consuming `counters` and starting a `cooldown`, all
    /// or nothing (automatic execution's limits); with `breaker_closed`, only while the circuit
    /// breaker is closed, checked in the same write (never from an earlier reading).
    #[allow(clippy::too_many_arguments)]
    async fn advance_guarded(
        &self,
        before: &Action,
        after: Action,
        path: &[Hop],
        actor: &str,
        at: DateTime<Utc>,
        counters: &[CounterSpec],
        cooldown: Option<&Cooldown>,
        breaker_closed: bool,
    ) -> Result<Action, GuardError>;

    /// Actions with timed work of `status` due at or before `now`
    /// ([`crate::domain::execution::due_at`]), oldest first, at most `limit`. May lag behind
    /// writes: re-read an action before acting on it.
    async fn due(&self, status: Status, now: DateTime<Utc>, limit: i32) -> Result<Vec<Action>, StoreError>;

    async fn get_action(&self, id: ActionId) -> Result<Option<Action>, StoreError>;

    /// The caller's actions, newest first, optionally of one status. A cursor works only for
    /// the listing (user and status) that returned it.
    async fn list_actions(
        &self,
        user: &UserId,
        status: Option<Status>,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Result<Page, BadCursor>, StoreError>;

    /// Everyone's actions created in `query`'s time range that match its filters, newest first
    /// (`GET /admin/actions`), served from indexes: by user (and status), by status, or by
    /// day of creation; the other filters apply to what the index returns. A page may come back
    /// short, or empty with a cursor: keep following it. A cursor works only for the query that
    /// returned it.
    async fn query_actions(
        &self,
        query: &ActionQuery,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Result<Page, BadCursor>, StoreError>;

    /// The actions waiting for `approver`'s decision (`awaiting_approval` with that approver),
    /// newest first; an index that may lag a moment behind writes.
    async fn inbox(
        &self,
        approver: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Result<Page, BadCursor>, StoreError>;

    /// The audit trail of an action, oldest first.
    async fn audit_trail(&self, id: ActionId) -> Result<Vec<AuditEvent>, StoreError>;

    /// The newest rejection of a request with this fingerprint by `user`
    /// (`crate::domain::rejections`), recorded with the rejection itself.
    async fn last_rejection(
        &self,
        user: &UserId,
        fingerprint: &str,
    ) -> Result<Option<crate::domain::rejections::Rejection>, StoreError>;

    /// The record of a client's idempotency key; one past its lifetime is forgotten.
    async fn get_idempotency(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;
}

/// Which actions an administrator lists (`ActionStore::query_actions`).
#[derive(Debug, Clone, PartialEq)]
pub struct ActionQuery {
    pub status: Option<Status>,
    pub action_type: Option<String>,
    pub user: Option<UserId>,
    pub tier: Option<crate::domain::Tier>,
    /// Created at or after `from` and before `to`.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl ActionQuery {
    /// Whether `action` matches every filter.
    pub fn matches(&self, action: &Action) -> bool {
        self.status.is_none_or(|s| action.status == s)
            && self.action_type.as_ref().is_none_or(|t| &action.action_type == t)
            && self.user.as_ref().is_none_or(|u| &action.user_id == u)
            && self.tier.is_none_or(|t| action.tier == Some(t))
            && action.created_at >= self.from
            && action.created_at < self.to
    }
}

/// Approval links.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Stores new approval links for an action (and closes an old one, if given and still
    /// pending) with the action's update and its audit note, if any, all or nothing.
    async fn reissue_link(
        &self,
        before: &Action,
        after: &Action,
        note: Option<&AuditEvent>,
        new_links: &[ApprovalRecord],
        old_link: Option<ApprovalUse<'_>>,
    ) -> Result<(), TransitionError>;

    async fn get_approval(&self, token_hash: &str) -> Result<Option<ApprovalRecord>, StoreError>;
}

/// Automatic execution's guards: rate counters and the circuit breaker (cool-downs are taken
/// with the writes that start work).
#[async_trait]
pub trait GuardStore: Send + Sync {
    /// The circuit breaker (closed when never written), with the successes counted since it
    /// was last saved folded into a `window` of recent outcomes.
    async fn breaker(&self, window: usize) -> Result<Breaker, StoreError>;

    /// Saves the breaker if nobody changed it since `before_version` was read; a change of state
    /// (`from`, `to`, `actor`, `reason`) is audited on the `circuit-breaker` stream in the same
    /// write. The successes it absorbed leave the counter; ones counted since stay there.
    async fn save_breaker(
        &self,
        before_version: u64,
        after: &Breaker,
        change: Option<(&str, &str, &str, &str)>,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError>;

    /// Units used of each counter (0 for a window nobody has used yet).
    async fn counter_usage(&self, counters: &[CounterSpec]) -> Result<Vec<u32>, StoreError>;
}

/// Administration: the policy override, users' KYC flags and stored credentials, each change
/// on a system audit stream.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// The administrator's policy override, if any. `Err(Corrupt)` when it is stored but no
    /// longer parses or passes the checks (see [`AdminStore::policy_override_raw`]).
    async fn policy_override(&self) -> Result<Option<StoredPolicy>, StoreError> {
        let Some(raw) = self.policy_override_raw().await? else { return Ok(None) };
        let policy = raw.parse().map_err(StoreError::Corrupt)?;
        Ok(Some(StoredPolicy { policy, version: raw.version, updated_by: raw.updated_by, updated_at: raw.updated_at }))
    }

    /// The stored override as it is, parsed or not: an administrator can always see it and
    /// replace it, even after a release made it invalid.
    async fn policy_override_raw(&self) -> Result<Option<RawPolicy>, StoreError>;

    /// Stores a (validated) policy override if the stored version is still `before_version`,
    /// with its audit event in the same write. Returns the new version.
    async fn put_policy(
        &self,
        before_version: u64,
        policy: &Policy,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, TransitionError>;

    /// A page of an audit stream that is not an action's (`policy`, `circuit-breaker`, a
    /// user's), oldest first: at most `limit` events after sequence `after`, and the sequence
    /// to continue from when there are more.
    async fn system_trail(&self, stream: &str, after: u64, limit: i32)
        -> Result<(Vec<Value>, Option<u64>), StoreError>;

    /// The user's Google OAuth access token, as the host application stored it.
    async fn google_token(&self, user: &UserId) -> Result<Option<String>, StoreError>;

    /// Stores `user`'s Google token (write-only: it never appears in the audit event).
    async fn set_google_token(
        &self,
        user: &UserId,
        token: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError>;

    async fn kyc_verified(&self, user: &UserId) -> Result<bool, StoreError>;

    /// `approver`'s delegation (lower-case address), if one is set (it may have ended).
    async fn delegation(&self, approver: &str) -> Result<Option<crate::domain::approvers::Delegation>, StoreError>;

    /// Sets (or with `None` ends) `approver`'s delegation, audited on their stream
    /// (`user#<address>`).
    async fn set_delegation(
        &self,
        approver: &str,
        delegation: Option<&crate::domain::approvers::Delegation>,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError>;

    async fn set_kyc_verified(
        &self,
        user: &UserId,
        verified: bool,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError>;
}

/// Rollback snapshots, written with the step that took them and kept for the retention.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// The snapshots of an action's steps that are still kept, by step index.
    async fn snapshots(&self, id: ActionId) -> Result<BTreeMap<usize, StoredSnapshot>, StoreError>;
}

/// Daily outcome counters, counted with the transitions that produce them.
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// One UTC day's counters for `scope` ([`crate::domain::stats::STATS_ALL`] or
    /// [`crate::domain::stats::user_stats_scope`]).
    async fn daily_stats(&self, scope: &str, day: chrono::NaiveDate) -> Result<BTreeMap<String, u64>, StoreError>;
}

/// Every capability of the store, for services that use several.
/// Per-integration circuit breakers (`crate::domain::integrations`), one item each.
#[async_trait]
pub trait IntegrationStore: Send + Sync {
    /// Integration `name`'s breaker (closed, version 0, when never saved), with the successes
    /// counted since it was last saved folded into a `window` of recent calls.
    async fn integration(&self, name: &str, window: usize) -> Result<IntegrationBreaker, StoreError>;

    /// Counts a success on a closed breaker, without reading it (one write, no condition).
    async fn integration_success(&self, name: &str) -> Result<(), StoreError>;

    /// Saves the breaker if nobody changed it since `before_version` was read; a change of
    /// state (`from`, `to`, `actor`, `reason`) is audited on the integration's stream
    /// ([`crate::domain::streams::integration_audit_stream`]) in the same write.
    async fn save_integration(
        &self,
        name: &str,
        before_version: u64,
        after: &IntegrationBreaker,
        change: Option<(&str, &str, &str, &str)>,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError>;

    /// Every integration with a breaker item (at most `limit`), by name, folded into `window`.
    async fn integrations(&self, limit: i32, window: usize) -> Result<Vec<(String, IntegrationBreaker)>, StoreError>;
}

/// Status notifications (`crate::domain::notify`): recorded by the writes of [`ActionStore`]
/// that make a reported move of an action with a `notify_url`, in the same write.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// An action's notifications, oldest first.
    async fn notifications(&self, id: ActionId) -> Result<Vec<Notification>, StoreError>;

    async fn notification(&self, id: ActionId, version: u64) -> Result<Option<Notification>, StoreError>;

    /// Pending notifications due at or before `now` (or whose lease ended), oldest first, at
    /// most `limit`. May lag behind writes: re-read one before acting on it.
    async fn due_notifications(&self, now: DateTime<Utc>, limit: i32) -> Result<Vec<Notification>, StoreError>;

    /// Saves `after` if the stored notification is still pending with `before_attempts`
    /// attempts; an attempt's end (`audit`) goes on the action's notification stream in the
    /// same write.
    async fn save_notification(
        &self,
        before_attempts: u32,
        after: &Notification,
        audit: bool,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError>;
}

pub trait Store:
    ActionStore
    + ApprovalStore
    + GuardStore
    + AdminStore
    + SnapshotStore
    + StatsStore
    + IntegrationStore
    + NotificationStore
{
}

impl<
        T: ActionStore
            + ApprovalStore
            + GuardStore
            + AdminStore
            + SnapshotStore
            + StatsStore
            + IntegrationStore
            + NotificationStore,
    > Store for T
{
}
