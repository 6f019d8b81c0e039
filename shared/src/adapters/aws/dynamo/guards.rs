//! The guards of automatic execution: fixed-window rate counters, entity cool-downs and the
//! circuit breaker item.

use super::*;

/// Which of automatic execution's guards refused a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The counter at this index of the request's counters is full.
    CounterFull(usize),
    CoolingDown,
    BreakerOpen,
}

/// Where the guards sit in a transaction's items, to tell which one cancelled it.
pub(super) struct GuardItems {
    first_counter: usize,
    cooldown: Option<usize>,
    breaker: Option<usize>,
}

impl GuardItems {
    /// The guard whose condition failed, among the cancelled items' indexes (the breaker
    /// first, then the cool-down, then a counter).
    pub(super) fn refusal(&self, failed: &[usize]) -> Option<Refusal> {
        if self.breaker.is_some_and(|i| failed.contains(&i)) {
            return Some(Refusal::BreakerOpen);
        }
        if self.cooldown.is_some_and(|i| failed.contains(&i)) {
            return Some(Refusal::CoolingDown);
        }
        let counters_end = self.cooldown.or(self.breaker).unwrap_or(usize::MAX);
        failed
            .iter()
            .find(|i| **i >= self.first_counter && **i < counters_end)
            .map(|i| Refusal::CounterFull(i - self.first_counter))
    }

    /// Whether a cancelled item comes before the guards (the action's own write: a conflict).
    pub(super) fn before_guards(&self, failed: &[usize]) -> bool {
        failed.iter().any(|i| *i < self.first_counter)
    }
}

impl DynamoStore {
    /// Appends automatic execution's guards to a transaction: the `counters` (callers refuse
    /// [`never_fits`] first), the entity's `cooldown`, and (with `breaker_closed`) a check that
    /// the circuit breaker is closed.
    pub(super) fn push_guards(
        &self,
        items: &mut Vec<TransactWriteItem>,
        counters: &[CounterSpec],
        cooldown: Option<&Cooldown>,
        breaker_closed: bool,
        now: DateTime<Utc>,
    ) -> Result<GuardItems, StoreError> {
        let first_counter = items.len();
        for counter in counters {
            items.push(TransactWriteItem::builder().update(self.counter_update(counter)?).build());
        }
        let cooldown_index = cooldown.map(|_| items.len());
        if let Some(c) = cooldown {
            items.push(TransactWriteItem::builder().put(self.cooldown_put(c, now)?).build());
        }
        let breaker = breaker_closed.then_some(items.len());
        if breaker_closed {
            items.push(TransactWriteItem::builder().condition_check(self.breaker_closed_check()?).build());
        }
        Ok(GuardItems { first_counter, cooldown: cooldown_index, breaker })
    }

    /// Counts a success of automatic work on the breaker item (no condition: it never opens it).
    pub(super) fn breaker_success(&self) -> Result<Update, StoreError> {
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
    pub(super) fn breaker_closed_check(&self) -> Result<ConditionCheck, StoreError> {
        Ok(ConditionCheck::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::BREAKER_PK))
            .key(keys::SK, s(keys::BREAKER_SK))
            .condition_expression("attribute_not_exists(#open) OR #open = :closed")
            .expression_attribute_names("#open", keys::BREAKER_OPEN)
            .expression_attribute_values(":closed", AttributeValue::Bool(false))
            .build()?)
    }

    /// Callers refuse a counter with more units than its limit first (it can never fit).
    pub(super) fn counter_update(&self, counter: &CounterSpec) -> Result<Update, StoreError> {
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

    pub(super) fn cooldown_put(&self, c: &Cooldown, now: DateTime<Utc>) -> Result<Put, StoreError> {
        Ok(Put::builder()
            .table_name(&self.table)
            .item(keys::PK, s(keys::cooldown_pk(&c.user, &c.entity)))
            .item(keys::SK, s(keys::COOLDOWN_SK))
            .item("until", s(crate::domain::time::format_time(c.until)))
            .item("action_id", s(c.action_id.to_string()))
            .item(keys::TTL, n((c.until + chrono::Duration::days(1)).timestamp()))
            .condition_expression("attribute_not_exists(pk) OR #until <= :now OR #action = :action")
            .expression_attribute_names("#until", "until")
            .expression_attribute_names("#action", "action_id")
            .expression_attribute_values(":now", s(crate::domain::time::format_time(now)))
            .expression_attribute_values(":action", s(c.action_id.to_string()))
            .build()?)
    }
}

#[async_trait]
impl GuardStore for DynamoStore {
    /// The circuit breaker (closed when never written), with the successes counted since its
    /// document was written folded into a `window` of recent outcomes.
    async fn breaker(&self, window: usize) -> Result<crate::breaker::Breaker, StoreError> {
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
    async fn save_breaker(
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

    /// Units used of each counter (0 for a window nobody has used yet).
    async fn counter_usage(&self, counters: &[CounterSpec]) -> Result<Vec<u32>, StoreError> {
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
}
