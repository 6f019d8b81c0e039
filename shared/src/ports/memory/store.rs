//! The store in memory: actions, audit trails, idempotency records and approval links. Every
//! write works on a copy of the state and replaces it only when each of its conditions held,
//! so a write is all or nothing exactly as a DynamoDB transaction is.

use crate::domain::action::advanced;
use crate::domain::approval::{ApprovalRecord, ApprovalStatus, ApprovalUse};
use crate::domain::breaker::Breaker;
use crate::domain::guards::{never_fits, Cooldown, CounterSpec};
use crate::domain::time::format_time;
use crate::domain::{Action, ActionId, AuditEvent, IdempotencyKey, Status, Tier, UserId};
use crate::ports::store::*;
use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// A user's profile: KYC flag, stored Google token and the sequence of their audit stream.
#[derive(Debug, Clone, Default)]
pub(super) struct Profile {
    pub kyc: bool,
    pub audit_seq: u64,
    pub google_token: Option<String>,
    pub delegation: Option<crate::domain::approvers::Delegation>,
}

/// The circuit breaker item: the saved document (if ever saved), its version, the flag
/// creation checks, and successes counted since the document was written.
#[derive(Debug, Clone, Default)]
pub(super) struct BreakerItem {
    pub doc: Option<Breaker>,
    pub version: Option<u64>,
    pub open: bool,
    pub successes: i64,
}

/// One integration's breaker item: the saved document, its version, and successes counted
/// since it was saved.
#[derive(Debug, Clone, Default)]
pub(super) struct IntegrationItem {
    pub doc: Option<crate::domain::integrations::IntegrationBreaker>,
    pub version: Option<u64>,
    pub successes: i64,
}

#[derive(Debug, Clone, Default)]
pub(super) struct State {
    pub actions: BTreeMap<ActionId, Action>,
    pub trails: BTreeMap<ActionId, BTreeMap<u64, AuditEvent>>,
    /// Audit streams that are not an action's (`policy`, `circuit-breaker`, `user#…`).
    pub streams: BTreeMap<String, BTreeMap<u64, Value>>,
    /// (user, key) → record and its TTL (epoch seconds).
    pub idempotency: HashMap<(UserId, String), (IdempotencyRecord, i64)>,
    /// Counter key (scope, window, start) → units used.
    pub counters: HashMap<(String, &'static str, i64), u32>,
    /// (user, entity) → (until as stored, the action that started it).
    pub cooldowns: HashMap<(UserId, String), (String, ActionId)>,
    pub breaker: BreakerItem,
    pub integrations: BTreeMap<String, IntegrationItem>,
    pub approvals: HashMap<String, ApprovalRecord>,
    pub snapshots: BTreeMap<(ActionId, usize), StoredSnapshot>,
    pub stats: HashMap<(String, chrono::NaiveDate), BTreeMap<String, u64>>,
    pub policy: Option<RawPolicy>,
    pub profiles: HashMap<UserId, Profile>,
    pub notifications: BTreeMap<(ActionId, u64), crate::domain::notify::Notification>,
    /// (user, fingerprint) → the newest rejection.
    pub rejections: HashMap<(UserId, String), crate::domain::rejections::Rejection>,
}

/// Creations held at a barrier until all of them arrive, and how many are still to come.
type Race = (Arc<tokio::sync::Barrier>, usize);

/// Every store capability in memory. Clones share the same state.
#[derive(Clone)]
pub struct MemoryStore {
    pub(super) state: Arc<Mutex<State>>,
    snapshot_retention: Duration,
    /// Creations that wait for each other before writing, and how many are still to come.
    race: Arc<Mutex<Option<Race>>>,
    /// Where a write that recorded a notification asks for its delivery at once.
    delivery_queue: Option<Arc<dyn crate::ports::queue::WorkQueue>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a write's conditions did not hold.
#[derive(Debug, Default)]
struct Failures {
    /// The action's own write or an audit event (someone else moved first).
    conflict: bool,
    idempotency: bool,
    breaker: bool,
    cooldown: bool,
    counter: Option<usize>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            snapshot_retention: Duration::days(DEFAULT_ROLLBACK_RETENTION_DAYS),
            race: Arc::default(),
            delivery_queue: None,
        }
    }

    /// A page of the actions `wanted` picks, newest first, as an index partition named
    /// `partition` would give them (a cursor works only for that partition).
    fn newest_first(
        &self,
        partition: &str,
        limit: i32,
        cursor_in: Option<&str>,
        wanted: impl Fn(&Action) -> bool,
    ) -> Result<Page, BadCursor> {
        let after = match cursor_in {
            None => None,
            Some(c) => Some(after_cursor(c, partition).ok_or(BadCursor)?.to_string()),
        };
        let state = self.lock();
        let mut found: Vec<&Action> = state
            .actions
            .values()
            .filter(|a| wanted(a))
            .filter(|a| after.as_ref().is_none_or(|last| a.action_id.to_string() < *last))
            .collect();
        found.sort_by_key(|a| std::cmp::Reverse(a.action_id.to_string()));
        let limit = limit.max(1) as usize;
        let actions: Vec<Action> = found.into_iter().take(limit).cloned().collect();
        // As DynamoDB does: a full page carries a cursor, even when nothing follows.
        let next_cursor = (actions.len() == limit).then(|| cursor(partition, actions[limit - 1].action_id));
        Ok(Page { actions, next_cursor })
    }

    /// Status notifications recorded by this store's writes are queued for delivery at once.
    pub fn with_delivery_queue(mut self, queue: Arc<dyn crate::ports::queue::WorkQueue>) -> Self {
        self.delivery_queue = Some(queue);
        self
    }

    /// Records the notification a move from `before` to `after` reports, if any.
    fn put_notification(
        s: &mut State,
        f: &mut Failures,
        before: &Action,
        after: &Action,
        events: &[AuditEvent],
    ) -> Option<crate::domain::notify::Notification> {
        let n = crate::domain::notify::recorded_by(before, after, events)?;
        if s.notifications.insert((n.action_id, n.version), as_stored(&n)).is_some() {
            f.conflict = true;
        }
        Some(n)
    }

    /// After a committed write that recorded `n`: asks for its delivery now.
    async fn announce(&self, n: Option<crate::domain::notify::Notification>) {
        if let (Some(n), Some(queue)) = (n, &self.delivery_queue) {
            crate::ports::notify::queue_delivery(queue.as_ref(), &n).await;
        }
    }

    /// A race on demand: the next `n` creations wait until all `n` have read what they needed
    /// and are about to write, then write one after another (as two Lambdas would).
    pub fn race_next_creations(&self, n: usize) {
        *self.race.lock().unwrap_or_else(|p| p.into_inner()) = Some((Arc::new(tokio::sync::Barrier::new(n)), n));
    }

    /// How long a step's rollback snapshot is kept.
    pub fn with_snapshot_retention(mut self, retention: Duration) -> Self {
        self.snapshot_retention = retention;
        self
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `write` on a copy of the state and keeps the copy only if it reported no failure.
    fn transact<T>(&self, write: impl FnOnce(&mut State, &mut Failures) -> T) -> (T, Failures) {
        let mut state = self.lock();
        let mut copy = state.clone();
        let mut failures = Failures::default();
        let out = write(&mut copy, &mut failures);
        if !failures.any() {
            *state = copy;
        }
        (out, failures)
    }

    /// The conditional put of `after` (created when `before` is `None`), with the snapshots its
    /// steps took since `before`.
    fn put_action(&self, s: &mut State, f: &mut Failures, before: Option<&Action>, after: &Action) {
        match (before, s.actions.get(&after.action_id)) {
            (None, None) => {}
            (Some(b), Some(stored)) if stored.version == b.version && stored.status == b.status => {}
            _ => f.conflict = true,
        }
        s.actions.insert(after.action_id, as_stored(after));
        for step in &after.steps {
            let (Some(snapshot), Some(taken)) = (&step.snapshot, step.snapshot_at) else { continue };
            if before.and_then(|b| b.steps.get(step.index)).and_then(|b| b.snapshot_at) == Some(taken) {
                continue;
            }
            // Whole seconds, as the TTL attribute stores it.
            let expires_at =
                DateTime::from_timestamp((taken + self.snapshot_retention).timestamp(), 0).unwrap_or(taken);
            s.snapshots
                .insert((after.action_id, step.index), StoredSnapshot { snapshot: snapshot.clone(), expires_at });
        }
    }

    fn put_audit(s: &mut State, f: &mut Failures, event: &AuditEvent) {
        let trail = s.trails.entry(event.action_id).or_default();
        if trail.contains_key(&event.seq) {
            f.conflict = true;
        }
        trail.insert(event.seq, as_stored(event));
    }

    fn count_outcome(s: &mut State, before: &Action, after: &Action) {
        let fields = crate::domain::stats::outcome_fields(before, after);
        if fields.is_empty() {
            return;
        }
        let day = after.updated_at.date_naive();
        for scope in
            [crate::domain::stats::STATS_ALL.to_owned(), crate::domain::stats::user_stats_scope(&after.user_id)]
        {
            let counters = s.stats.entry((scope, day)).or_default();
            for field in &fields {
                *counters.entry(field.clone()).or_default() += 1;
            }
        }
    }

    fn close_link(s: &mut State, f: &mut Failures, used: &ApprovalUse<'_>) {
        match s.approvals.get_mut(used.token_hash) {
            Some(link) if link.status == ApprovalStatus::Pending => {
                link.status = used.status;
                link.decided_by = Some(used.by.to_owned());
                link.decided_at = Some(whole_seconds(used.at));
            }
            _ => f.conflict = true,
        }
    }

    fn put_link(s: &mut State, f: &mut Failures, record: &ApprovalRecord) {
        if s.approvals.contains_key(&record.token_hash) {
            f.conflict = true;
        }
        let mut stored = record.clone();
        stored.expires_at = whole_seconds(record.expires_at);
        s.approvals.insert(record.token_hash.clone(), stored);
    }

    /// Automatic execution's guards: counters that must fit, the entity's cool-down, and (with
    /// `breaker_closed`) a closed breaker.
    fn take_guards(
        s: &mut State,
        f: &mut Failures,
        counters: &[CounterSpec],
        cooldown: Option<&Cooldown>,
        breaker_closed: bool,
        now: DateTime<Utc>,
    ) {
        for (i, counter) in counters.iter().enumerate() {
            let key = (counter.scope.clone(), counter.limit.window.as_str(), counter.window_start.timestamp());
            let used = s.counters.entry(key).or_default();
            if i64::from(*used) > i64::from(counter.limit.limit) - i64::from(counter.units) {
                f.counter = f.counter.or(Some(i));
            }
            *used += counter.units;
        }
        if let Some(c) = cooldown {
            let key = (c.user.clone(), c.entity.clone());
            let free = s
                .cooldowns
                .get(&key)
                .is_none_or(|(until, by)| until.as_str() <= format_time(now).as_str() || *by == c.action_id);
            if !free {
                f.cooldown = true;
            }
            s.cooldowns.insert(key, (format_time(c.until), c.action_id));
        }
        if breaker_closed && s.breaker.open {
            f.breaker = true;
        }
    }
}

/// Which of automatic execution's guards refused a write, in the order DynamoDB's store
/// reports them: the breaker, then the cool-down, then a counter.
enum Refusal {
    BreakerOpen,
    CoolingDown,
    CounterFull(usize),
}

impl Failures {
    fn refusal(&self) -> Option<Refusal> {
        if self.breaker {
            Some(Refusal::BreakerOpen)
        } else if self.cooldown {
            Some(Refusal::CoolingDown)
        } else {
            self.counter.map(Refusal::CounterFull)
        }
    }

    fn any(&self) -> bool {
        self.conflict || self.idempotency || self.breaker || self.cooldown || self.counter.is_some()
    }
}

/// What a reader gets back: the value through its stored JSON document (fields the document
/// leaves out, such as a step's snapshot, are left out here too).
fn as_stored<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(value: &T) -> T {
    serde_json::to_value(value).and_then(serde_json::from_value).unwrap_or_else(|_| value.clone())
}

/// Times as stored: whole seconds.
pub(super) fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn cursor(partition: &str, last: ActionId) -> String {
    let json = serde_json::json!({"p": partition, "id": last.to_string()}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// The id a cursor continues after, if it is one this listing returned.
fn after_cursor(c: &str, partition: &str) -> Option<ActionId> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let map = v.as_object()?;
    if map.len() != 2 || map.get("p")?.as_str()? != partition {
        return None;
    }
    ActionId::parse(map.get("id")?.as_str()?)
}

#[async_trait]
impl ActionStore for MemoryStore {
    async fn create_action(
        &self,
        action: &Action,
        events: &[AuditEvent],
        idempotency: Option<(&IdempotencyKey, &str)>,
        counters: &[CounterSpec],
        approvals: &[ApprovalRecord],
        cooldown: Option<&Cooldown>,
        now: DateTime<Utc>,
    ) -> Result<(), CreateError> {
        if let Some(i) = never_fits(counters) {
            return Err(CreateError::RateLimited(i));
        }
        let gate = {
            let mut race = self.race.lock().unwrap_or_else(|p| p.into_inner());
            let gate = race.as_ref().map(|(barrier, _)| Arc::clone(barrier));
            if let Some((_, left)) = race.as_mut() {
                *left -= 1;
                if *left == 0 {
                    *race = None;
                }
            }
            gate
        };
        if let Some(barrier) = gate {
            barrier.wait().await;
        }
        let ((), f) = self.transact(|s, f| {
            self.put_action(s, f, None, action);
            for record in approvals {
                Self::put_link(s, f, record);
            }
            for event in events {
                Self::put_audit(s, f, event);
            }
            if let Some((key, body_sha256)) = idempotency {
                let k = (action.user_id.clone(), key.as_str().to_owned());
                if s.idempotency.get(&k).is_some_and(|(_, ttl)| *ttl >= now.timestamp()) {
                    f.idempotency = true;
                }
                let record = IdempotencyRecord { action_id: action.action_id, body_sha256: body_sha256.to_owned() };
                let ttl = (now + Duration::days(IDEMPOTENCY_TTL_DAYS)).timestamp();
                s.idempotency.insert(k, (record, ttl));
            }
            let queued_automatic = action.status == Status::Queued && action.tier == Some(Tier::Auto);
            Self::take_guards(s, f, counters, cooldown, queued_automatic, now);
        });
        if f.idempotency {
            return Err(CreateError::IdempotencyKeyUsed);
        }
        match f.refusal() {
            Some(Refusal::BreakerOpen) => return Err(CreateError::BreakerOpen),
            Some(Refusal::CoolingDown) => return Err(CreateError::CoolingDown),
            Some(Refusal::CounterFull(i)) => return Err(CreateError::RateLimited(i)),
            None => {}
        }
        if f.conflict {
            return Err(CreateError::Store(StoreError::Aws("ConditionalCheckFailed: the action exists".into())));
        }
        Ok(())
    }

    async fn transition_many(
        &self,
        before: &Action,
        after: &Action,
        events: &[AuditEvent],
        approval: Option<ApprovalUse<'_>>,
    ) -> Result<(), TransitionError> {
        self.write_transition(before, after, events, approval, false).await
    }

    async fn advance_counting(
        &self,
        before: &Action,
        after: Action,
        path: &[Hop],
        actor: &str,
        at: DateTime<Utc>,
        automatic_success: bool,
    ) -> Result<Action, TransitionError> {
        let (after, events) = advanced(before, after, path, actor, at).ok_or(TransitionError::Conflict)?;
        self.write_transition(before, &after, &events, None, automatic_success).await?;
        Ok(after)
    }

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
    ) -> Result<Action, GuardError> {
        let (after, events) = advanced(before, after, path, actor, at).ok_or(GuardError::Conflict)?;
        if let Some(i) = never_fits(counters) {
            return Err(GuardError::CounterFull(i));
        }
        let (notification, f) = self.transact(|s, f| {
            self.put_action(s, f, Some(before), &after);
            for event in &events {
                Self::put_audit(s, f, event);
            }
            let n = Self::put_notification(s, f, before, &after, &events);
            Self::take_guards(s, f, counters, cooldown, breaker_closed, at);
            n
        });
        if f.conflict {
            return Err(GuardError::Conflict);
        }
        match f.refusal() {
            Some(Refusal::BreakerOpen) => Err(GuardError::BreakerOpen),
            Some(Refusal::CoolingDown) => Err(GuardError::CoolingDown),
            Some(Refusal::CounterFull(i)) => Err(GuardError::CounterFull(i)),
            None => {
                self.announce(notification).await;
                Ok(after)
            }
        }
    }

    async fn due(&self, status: Status, now: DateTime<Utc>, limit: i32) -> Result<Vec<Action>, StoreError> {
        let upto = format!("{}#~", format_time(now));
        let state = self.lock();
        let mut due: Vec<(String, &Action)> = state
            .actions
            .values()
            .filter(|a| a.status == status)
            .filter_map(|a| {
                let at = crate::domain::execution::due_at(a)?;
                Some((format!("{}#{}", format_time(at), a.action_id), a))
            })
            .filter(|(key, _)| key.as_str() <= upto.as_str())
            .collect();
        due.sort_by(|x, y| x.0.cmp(&y.0));
        Ok(due.into_iter().take(limit.max(0) as usize).map(|(_, a)| a.clone()).collect())
    }

    async fn get_action(&self, id: ActionId) -> Result<Option<Action>, StoreError> {
        Ok(self.lock().actions.get(&id).cloned())
    }

    async fn list_actions(
        &self,
        user: &UserId,
        status: Option<Status>,
        limit: i32,
        cursor_in: Option<&str>,
    ) -> Result<Result<Page, BadCursor>, StoreError> {
        let partition = match status {
            None => format!("USER#{user}"),
            Some(st) => format!("USER#{user}#{st}"),
        };
        Ok(self.newest_first(&partition, limit, cursor_in, |a| {
            &a.user_id == user && status.is_none_or(|st| a.status == st)
        }))
    }

    async fn audit_trail(&self, id: ActionId) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(self.lock().trails.get(&id).map(|t| t.values().cloned().collect()).unwrap_or_default())
    }

    async fn query_actions(
        &self,
        query: &ActionQuery,
        limit: i32,
        cursor_in: Option<&str>,
    ) -> Result<Result<Page, BadCursor>, StoreError> {
        // One listing per query: a cursor of another query is refused, as DynamoDB's would be.
        // Bound to the filters, not the range, like DynamoDB's partition.
        let filters = format!("{:?}|{:?}|{:?}|{:?}", query.status, query.action_type, query.user, query.tier);
        let partition = format!("QUERY#{}", crate::domain::digest::hex_sha256(filters.as_bytes()));
        Ok(self.newest_first(&partition, limit, cursor_in, |a| query.matches(a)))
    }

    async fn inbox(
        &self,
        approver: &str,
        limit: i32,
        cursor_in: Option<&str>,
    ) -> Result<Result<Page, BadCursor>, StoreError> {
        let partition = format!("APPROVER#{}", approver.to_ascii_lowercase());
        Ok(self.newest_first(&partition, limit, cursor_in, |a| {
            a.status == Status::AwaitingApproval
                && a.undecided().iter().any(|x| x.as_str().eq_ignore_ascii_case(approver))
        }))
    }

    async fn last_rejection(
        &self,
        user: &UserId,
        fingerprint: &str,
    ) -> Result<Option<crate::domain::rejections::Rejection>, StoreError> {
        Ok(self.lock().rejections.get(&(user.clone(), fingerprint.to_owned())).cloned())
    }

    async fn get_idempotency(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let state = self.lock();
        let found = state.idempotency.get(&(user.clone(), key.as_str().to_owned()));
        Ok(found.filter(|(_, ttl)| *ttl >= now.timestamp()).map(|(record, _)| record.clone()))
    }
}

impl MemoryStore {
    async fn write_transition(
        &self,
        before: &Action,
        after: &Action,
        events: &[AuditEvent],
        approval: Option<ApprovalUse<'_>>,
        automatic_success: bool,
    ) -> Result<(), TransitionError> {
        let (notification, f) = self.transact(|s, f| {
            self.put_action(s, f, Some(before), after);
            if automatic_success {
                s.breaker.successes += 1;
            }
            for event in events {
                Self::put_audit(s, f, event);
            }
            Self::count_outcome(s, before, after);
            if let Some(used) = &approval {
                Self::close_link(s, f, used);
            }
            if let Some((fingerprint, rejection)) = crate::domain::rejections::recorded_by(before, after) {
                s.rejections.insert((after.user_id.clone(), fingerprint), as_stored(&rejection));
            }
            Self::put_notification(s, f, before, after, events)
        });
        if f.any() {
            return Err(TransitionError::Conflict);
        }
        self.announce(notification).await;
        Ok(())
    }
}

#[async_trait]
impl ApprovalStore for MemoryStore {
    async fn reissue_link(
        &self,
        before: &Action,
        after: &Action,
        note: Option<&AuditEvent>,
        new_links: &[ApprovalRecord],
        old_link: Option<ApprovalUse<'_>>,
    ) -> Result<(), TransitionError> {
        let ((), f) = self.transact(|s, f| {
            self.put_action(s, f, Some(before), after);
            for link in new_links {
                Self::put_link(s, f, link);
            }
            if let Some(note) = note {
                Self::put_audit(s, f, note);
            }
            if let Some(used) = &old_link {
                Self::close_link(s, f, used);
            }
        });
        if f.any() {
            return Err(TransitionError::Conflict);
        }
        Ok(())
    }

    async fn get_approval(&self, token_hash: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        Ok(self.lock().approvals.get(token_hash).cloned())
    }
}
