//! The store in memory, continued: the circuit breaker and counters, administration (policy
//! override, KYC, credentials, system audit streams), snapshots and daily stats.

use super::store::{MemoryStore, Profile, State};
use crate::domain::breaker::Breaker;
use crate::domain::guards::CounterSpec;
use crate::domain::integrations::IntegrationBreaker;
use crate::domain::notify::{notification_stream, DeliveryState, Notification};
use crate::domain::policy::Policy;
use crate::domain::streams::{integration_audit_stream, user_audit_stream, BREAKER_AUDIT_STREAM, POLICY_AUDIT_STREAM};
use crate::domain::time::format_time;
use crate::domain::{ActionId, UserId};
use crate::ports::store::*;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Appends an event to a system audit stream, written once: a taken sequence is a conflict.
fn put_stream_event(s: &mut State, stream: &str, seq: u64, at: DateTime<Utc>, mut event: Value) -> bool {
    event["stream"] = json!(stream);
    event["seq"] = json!(seq);
    event["at"] = json!(format_time(at));
    let events = s.streams.entry(stream.to_owned()).or_default();
    if events.contains_key(&seq) {
        return false;
    }
    events.insert(seq, event);
    true
}

impl MemoryStore {
    /// Applies `change` to a copy of the state; keeps it only when it returns `true`.
    fn conditional(&self, change: impl FnOnce(&mut State) -> bool) -> Result<(), TransitionError> {
        let mut state = self.lock();
        let mut copy = state.clone();
        if !change(&mut copy) {
            return Err(TransitionError::Conflict);
        }
        *state = copy;
        Ok(())
    }

    /// An administrative change to a user, with one event on the user's audit stream.
    fn change_user(
        &self,
        user: &UserId,
        by: &str,
        at: DateTime<Utc>,
        (to, reason): (&str, &str),
        apply: impl FnOnce(&mut Profile),
    ) -> Result<(), TransitionError> {
        self.conditional(|s| {
            let profile = s.profiles.entry(user.clone()).or_default();
            let from = match (to.starts_with("kyc"), to.starts_with("delegation")) {
                (true, _) if profile.kyc => "kyc_verified",
                (true, _) => "kyc_unverified",
                (false, true) => "delegation",
                _ => "google_token",
            };
            profile.audit_seq += 1;
            let seq = profile.audit_seq;
            apply(profile);
            let event = json!({"actor": by, "from": from, "to": to, "reason": reason});
            put_stream_event(s, &user_audit_stream(user), seq, at, event)
        })
    }
}

#[async_trait]
impl GuardStore for MemoryStore {
    async fn breaker(&self, window: usize) -> Result<Breaker, StoreError> {
        let state = self.lock();
        let mut breaker = state.breaker.doc.clone().unwrap_or_default();
        breaker.absorbed = 0;
        breaker.absorb(u64::try_from(state.breaker.successes).unwrap_or(0), window);
        Ok(breaker)
    }

    async fn save_breaker(
        &self,
        before_version: u64,
        after: &Breaker,
        change: Option<(&str, &str, &str, &str)>,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.conditional(|s| {
            let expected = if before_version == 0 { None } else { Some(before_version) };
            if s.breaker.version != expected {
                return false;
            }
            let mut doc = after.clone();
            doc.absorbed = 0;
            s.breaker.doc = Some(doc);
            s.breaker.version = Some(after.version);
            s.breaker.open = after.is_open();
            s.breaker.successes -= i64::try_from(after.absorbed).unwrap_or(i64::MAX);
            match change {
                Some((from, to, actor, reason)) => {
                    let event = json!({"actor": actor, "from": from, "to": to, "reason": reason});
                    put_stream_event(s, BREAKER_AUDIT_STREAM, after.version, at, event)
                }
                None => true,
            }
        })
    }

    async fn counter_usage(&self, counters: &[CounterSpec]) -> Result<Vec<u32>, StoreError> {
        let state = self.lock();
        Ok(counters
            .iter()
            .map(|c| {
                let key = (c.scope.clone(), c.limit.window.as_str(), c.window_start.timestamp());
                state.counters.get(&key).copied().unwrap_or(0)
            })
            .collect())
    }
}

#[async_trait]
impl AdminStore for MemoryStore {
    async fn policy_override_raw(&self) -> Result<Option<RawPolicy>, StoreError> {
        Ok(self.lock().policy.clone())
    }

    async fn put_policy(
        &self,
        before_version: u64,
        policy: &Policy,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, TransitionError> {
        let version = before_version + 1;
        let doc = serde_json::to_string(policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conditional(|s| {
            if s.policy.as_ref().is_some_and(|p| p.version != before_version) {
                return false;
            }
            s.policy = Some(RawPolicy { doc, version, updated_by: by.to_owned(), updated_at: format_time(at) });
            let event = json!({"from": before_version, "to": version, "actor": by,
                "reason": "policy replaced by an administrator", "detail": {"policy": policy}});
            put_stream_event(s, POLICY_AUDIT_STREAM, version, at, event)
        })?;
        Ok(version)
    }

    async fn system_trail(
        &self,
        stream: &str,
        after: u64,
        limit: i32,
    ) -> Result<(Vec<Value>, Option<u64>), StoreError> {
        let state = self.lock();
        let limit = limit.max(1) as usize;
        let page: Vec<(u64, Value)> = state
            .streams
            .get(stream)
            .zip(after.checked_add(1))
            .map(|(events, from)| events.range(from..).take(limit).map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default();
        // As DynamoDB does: a full page carries where to continue, even when nothing follows.
        let next = (page.len() == limit).then(|| page[limit - 1].0);
        Ok((page.into_iter().map(|(_, v)| v).collect(), next))
    }

    async fn google_token(&self, user: &UserId) -> Result<Option<String>, StoreError> {
        Ok(self.lock().profiles.get(user).and_then(|p| p.google_token.clone()))
    }

    async fn set_google_token(
        &self,
        user: &UserId,
        token: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let change = ("google_token_stored", "Google OAuth token stored");
        self.change_user(user, by, at, change, |p| p.google_token = Some(token.to_owned()))
    }

    async fn kyc_verified(&self, user: &UserId) -> Result<bool, StoreError> {
        Ok(self.lock().profiles.get(user).is_some_and(|p| p.kyc))
    }

    async fn set_kyc_verified(
        &self,
        user: &UserId,
        verified: bool,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let change = if verified { ("kyc_verified", "KYC verified") } else { ("kyc_unverified", "KYC withdrawn") };
        self.change_user(user, by, at, change, |p| p.kyc = verified)
    }

    async fn delegation(&self, approver: &str) -> Result<Option<crate::domain::approvers::Delegation>, StoreError> {
        let Some(user) = crate::domain::approvers::approver_user(approver) else { return Ok(None) };
        Ok(self.lock().profiles.get(&user).and_then(|p| p.delegation.clone()))
    }

    async fn set_delegation(
        &self,
        approver: &str,
        delegation: Option<&crate::domain::approvers::Delegation>,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let user = crate::domain::approvers::approver_user(approver)
            .ok_or_else(|| TransitionError::Store(StoreError::Corrupt(format!("approver {approver}"))))?;
        let (to, reason) = crate::domain::approvers::delegation_event(delegation);
        let kept = delegation.cloned();
        self.change_user(&user, by, at, (to, &reason), |p| p.delegation = kept)
    }
}

#[async_trait]
impl SnapshotStore for MemoryStore {
    async fn snapshots(&self, id: ActionId) -> Result<BTreeMap<usize, StoredSnapshot>, StoreError> {
        let state = self.lock();
        Ok(state.snapshots.range((id, 0)..=(id, usize::MAX)).map(|((_, i), s)| (*i, s.clone())).collect())
    }
}

#[async_trait]
impl StatsStore for MemoryStore {
    async fn daily_stats(&self, scope: &str, day: chrono::NaiveDate) -> Result<BTreeMap<String, u64>, StoreError> {
        Ok(self.lock().stats.get(&(scope.to_owned(), day)).cloned().unwrap_or_default())
    }
}

#[async_trait]
impl IntegrationStore for MemoryStore {
    async fn integration(&self, name: &str, window: usize) -> Result<IntegrationBreaker, StoreError> {
        let state = self.lock();
        Ok(state.integrations.get(name).map(|item| folded(item, window)).unwrap_or_default())
    }

    async fn integration_success(&self, name: &str) -> Result<(), StoreError> {
        self.lock().integrations.entry(name.to_owned()).or_default().successes += 1;
        Ok(())
    }

    async fn save_integration(
        &self,
        name: &str,
        before_version: u64,
        after: &IntegrationBreaker,
        change: Option<(&str, &str, &str, &str)>,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.conditional(|s| {
            let item = s.integrations.entry(name.to_owned()).or_default();
            let expected = if before_version == 0 { None } else { Some(before_version) };
            if item.version != expected {
                return false;
            }
            let mut doc = after.clone();
            doc.breaker.absorbed = 0;
            item.doc = Some(doc);
            item.version = Some(after.version());
            item.successes -= i64::try_from(after.breaker.absorbed).unwrap_or(i64::MAX);
            match change {
                Some((from, to, actor, reason)) => {
                    let event = json!({"actor": actor, "from": from, "to": to, "reason": reason});
                    put_stream_event(s, &integration_audit_stream(name), after.version(), at, event)
                }
                None => true,
            }
        })
    }

    async fn integrations(&self, limit: i32, window: usize) -> Result<Vec<(String, IntegrationBreaker)>, StoreError> {
        let state = self.lock();
        let limit = usize::try_from(limit).unwrap_or(0);
        Ok(state.integrations.iter().take(limit).map(|(name, item)| (name.clone(), folded(item, window))).collect())
    }
}

/// The item's document with the successes counted since it was saved.
fn folded(item: &super::store::IntegrationItem, window: usize) -> IntegrationBreaker {
    let mut doc = item.doc.clone().unwrap_or_default();
    doc.breaker.absorbed = 0;
    doc.breaker.absorb(u64::try_from(item.successes).unwrap_or(0), window);
    doc
}

#[async_trait]
impl NotificationStore for MemoryStore {
    async fn notifications(&self, id: ActionId) -> Result<Vec<Notification>, StoreError> {
        let state = self.lock();
        Ok(state.notifications.range((id, 0)..=(id, u64::MAX)).map(|(_, n)| n.clone()).collect())
    }

    async fn notification(&self, id: ActionId, version: u64) -> Result<Option<Notification>, StoreError> {
        Ok(self.lock().notifications.get(&(id, version)).cloned())
    }

    async fn due_notifications(&self, now: DateTime<Utc>, limit: i32) -> Result<Vec<Notification>, StoreError> {
        let state = self.lock();
        let mut due: Vec<&Notification> = state.notifications.values().filter(|n| n.due(now)).collect();
        due.sort_by_key(|n| (n.next_attempt_at, n.action_id, n.version));
        Ok(due.into_iter().take(limit.max(0) as usize).cloned().collect())
    }

    async fn save_notification(
        &self,
        before_attempts: u32,
        after: &Notification,
        audit: bool,
        at: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        let mut state = self.lock();
        let key = (after.action_id, after.version);
        match state.notifications.get(&key) {
            Some(n) if n.state == DeliveryState::Pending && n.attempts == before_attempts => {}
            _ => return Err(TransitionError::Conflict),
        }
        if audit
            && !put_stream_event(
                &mut state,
                &notification_stream(after.action_id),
                after.attempt_seq(),
                at,
                after.attempt_event(),
            )
        {
            return Err(TransitionError::Conflict);
        }
        state.notifications.insert(key, after.clone());
        Ok(())
    }
}
