//! Actions: creation (with idempotency, counters, cool-down and the breaker check in one
//! transaction), every conditional transition with its audit events, reads, listings and the
//! sweep's `due` index.

use super::guards::Refusal;
use super::*;
use crate::domain::action::advanced;

/// The actions of a page or batch; one that cannot be read is logged and left out, so one bad
/// item never fails the listing or the sweep for everyone else.
pub(super) fn readable_actions(items: &[Item]) -> Vec<Action> {
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

pub(super) fn action_from_item(item: &Item) -> Result<Action, StoreError> {
    let doc = item
        .get("doc")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| StoreError::Corrupt("action item without doc".into()))?;
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("action doc: {e}")))
}

pub(super) fn encode_cursor(key: &Item) -> String {
    let map: std::collections::BTreeMap<&str, &str> =
        key.iter().filter_map(|(k, v)| Some((k.as_str(), v.as_s().ok()?.as_str()))).collect();
    let json = serde_json::to_vec(&map).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// A cursor is only accepted with exactly the expected key attributes and the caller's own
/// partition, so it cannot be used to page through someone else's actions.
pub(super) fn decode_cursor(cursor: &str, expected: &[&str], partition_attr: &str, partition: &str) -> Option<Item> {
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

#[async_trait]
impl ActionStore for DynamoStore {
    /// Stores a new action with its first audit events, its idempotency record and its rate
    /// counters, all or nothing. A full counter or a reused key cancels the whole write. An
    /// action created `queued` for automatic execution also checks, in the same transaction,
    /// that the circuit breaker is closed (no read of its own).
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
    ) -> Result<(), CreateError> {
        let mut items = Vec::new();
        items.push(TransactWriteItem::builder().put(self.put_action(action, None)?).build());
        items.extend(self.inbox_writes(None, action)?);
        for record in approvals {
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
        if let Some(i) = crate::domain::guards::never_fits(counters) {
            return Err(CreateError::RateLimited(i));
        }
        let queued_automatic = action.status == Status::Queued && action.tier == Some(crate::domain::Tier::Auto);
        let guards = self.push_guards(&mut items, counters, cooldown, queued_automatic, now)?;
        match self.transact(items).await {
            Ok(_) => Ok(()),
            Err(err) => {
                let failed = cancelled_indexes(&err);
                if idempotency_index.is_some_and(|i| failed.contains(&i)) {
                    return Err(CreateError::IdempotencyKeyUsed);
                }
                match guards.refusal(&failed) {
                    Some(Refusal::BreakerOpen) => return Err(CreateError::BreakerOpen),
                    Some(Refusal::CoolingDown) => return Err(CreateError::CoolingDown),
                    Some(Refusal::CounterFull(i)) => return Err(CreateError::RateLimited(i)),
                    None => {}
                }
                Err(CreateError::Store(aws_error(err)))
            }
        }
    }

    /// Like [`Store::transition`] for a chain of moves written at once (one audit event each,
    /// e.g. `awaiting_approval → approved → queued`), optionally consuming an approval link.
    async fn transition_many(
        &self,
        before: &Action,
        after: &Action,
        events: &[AuditEvent],
        approval: Option<ApprovalUse<'_>>,
    ) -> Result<(), TransitionError> {
        self.write_transition(before, after, events, approval, false).await
    }

    /// [`Store::advance`] that, for a step of automatic work that succeeded
    /// (`automatic_success`), also counts the success on the circuit breaker.
    async fn advance_counting(
        &self,
        before: &Action,
        after: Action,
        path: &[(Status, String, Option<serde_json::Value>)],
        actor: &str,
        at: DateTime<Utc>,
        automatic_success: bool,
    ) -> Result<Action, TransitionError> {
        let (after, events) = advanced(before, after, path, actor, at).ok_or(TransitionError::Conflict)?;
        self.write_transition(before, &after, &events, None, automatic_success).await?;
        Ok(after)
    }

    /// Actions with timed work of `status` due at or before `now`, oldest first. The index is
    /// eventually consistent: re-read an action before acting on it.
    async fn due(&self, status: Status, now: DateTime<Utc>, limit: i32) -> Result<Vec<Action>, StoreError> {
        let items = self.due_items(format!("DUE#{status}"), now, limit).await?;
        let actions = readable_actions(&items);
        if actions.len() < items.len() {
            self.unindex_unreadable(&items, &actions).await;
        }
        Ok(actions)
    }

    async fn get_action(&self, id: ActionId) -> Result<Option<Action>, StoreError> {
        let found = self.item(keys::action_pk(id), keys::ACTION_SK).await?;
        found.as_ref().map(action_from_item).transpose()
    }

    /// The caller's actions, newest first, optionally of one status.
    async fn list_actions(
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
        self.newest_first(index, pk_name, sk_name, partition, limit, cursor).await
    }

    async fn query_actions(
        &self,
        query: &ActionQuery,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Result<Page, BadCursor>, StoreError> {
        self.listing(query, limit, cursor).await
    }

    /// What waits for `approver`'s decision, newest first.
    async fn inbox(
        &self,
        approver: &str,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Result<Page, BadCursor>, StoreError> {
        let partition = keys::approver_partition(approver);
        let page = match self
            .newest_first_items(keys::GSI_BY_APPROVER, keys::GSI3_PK, keys::GSI3_SK, partition, limit, cursor)
            .await?
        {
            Ok(page) => page,
            Err(bad) => return Ok(Err(bad)),
        };
        // Entries name their action; each is read whole (at most a page of reads).
        let mut actions = Vec::new();
        for item in &page.0 {
            let id = item
                .get(keys::PK)
                .and_then(|v| v.as_s().ok())
                .and_then(|p| p.strip_prefix("ACTION#"))
                .and_then(ActionId::parse);
            if let Some(action) = match id {
                Some(id) => self.get_action(id).await?,
                None => None,
            } {
                actions.push(action);
            }
        }
        Ok(Ok(Page { actions, next_cursor: page.1 }))
    }

    /// The audit trail of an action, oldest first.
    async fn audit_trail(&self, id: ActionId) -> Result<Vec<AuditEvent>, StoreError> {
        let mut events = Vec::new();
        for item in self.whole_partition(&self.audit_table, keys::AUDIT_PK, id.to_string()).await? {
            // One unreadable event is logged and left out; the rest of the trail is shown.
            match item.get("doc").and_then(|v| v.as_s().ok()).map(|d| serde_json::from_str(d)) {
                Some(Ok(event)) => events.push(event),
                Some(Err(e)) => tracing::error!(error = %e, action_id = %id, "skipping an unreadable audit event"),
                None => tracing::error!(action_id = %id, "skipping an audit item without doc"),
            }
        }
        Ok(events)
    }

    async fn last_rejection(
        &self,
        user: &UserId,
        fingerprint: &str,
    ) -> Result<Option<crate::domain::rejections::Rejection>, StoreError> {
        let Some(item) = self.item(keys::rejection_pk(user, fingerprint), keys::REJECTION_SK).await? else {
            return Ok(None);
        };
        let doc = item
            .get("doc")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| StoreError::Corrupt("rejection without doc".into()))?;
        serde_json::from_str(doc).map(Some).map_err(|e| StoreError::Corrupt(format!("rejection: {e}")))
    }

    async fn get_idempotency(
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

    /// Like [`Store::advance`], also consuming `counters` and starting a `cooldown`, all or
    /// nothing (automatic execution's limits); with `breaker_closed`, only while the circuit
    /// breaker is closed, checked in the same transaction (never from an earlier reading).
    #[allow(clippy::too_many_arguments)]
    async fn advance_guarded(
        &self,
        before: &Action,
        after: Action,
        path: &[(Status, String, Option<serde_json::Value>)],
        actor: &str,
        at: DateTime<Utc>,
        counters: &[CounterSpec],
        cooldown: Option<&Cooldown>,
        breaker_closed: bool,
    ) -> Result<Action, GuardError> {
        let (after, events) = advanced(before, after, path, actor, at).ok_or(GuardError::Conflict)?;
        if let Some(i) = crate::domain::guards::never_fits(counters) {
            return Err(GuardError::CounterFull(i));
        }
        let mut items = self.action_writes(before, &after)?;
        for event in &events {
            items.push(TransactWriteItem::builder().put(self.put_audit(event)?).build());
        }
        let notification = self.notification_write(before, &after, &events)?.map(|(write, n)| {
            items.push(write);
            n
        });
        let guards = self.push_guards(&mut items, counters, cooldown, breaker_closed, at)?;
        match self.transact(items).await {
            Ok(_) => {
                self.announce(notification.as_ref()).await;
                Ok(after)
            }
            Err(err) => {
                let failed = cancelled_indexes(&err);
                if guards.before_guards(&failed) {
                    return Err(GuardError::Conflict);
                }
                Err(match guards.refusal(&failed) {
                    Some(Refusal::BreakerOpen) => GuardError::BreakerOpen,
                    Some(Refusal::CoolingDown) => GuardError::CoolingDown,
                    Some(Refusal::CounterFull(i)) => GuardError::CounterFull(i),
                    None => GuardError::Store(aws_error(err)),
                })
            }
        }
    }
}

impl DynamoStore {
    /// The items of one partition of the sparse `due` index due at or before `now`, oldest
    /// first, at most `limit` (eventually consistent: re-read before acting).
    pub(super) async fn due_items(
        &self,
        partition: String,
        now: DateTime<Utc>,
        limit: i32,
    ) -> Result<Vec<Item>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(keys::GSI_DUE)
            .key_condition_expression("#pk = :pk AND #sk <= :now")
            .expression_attribute_names("#pk", keys::DUE_PK)
            .expression_attribute_names("#sk", keys::DUE_SK)
            .expression_attribute_values(":pk", s(partition))
            // `~` sorts after every id character, so everything due in this second is included.
            .expression_attribute_values(":now", s(format!("{}#~", crate::domain::time::format_time(now))))
            .scan_index_forward(true)
            .limit(limit)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(out.items.unwrap_or_default())
    }

    /// Every item of one partition of `table` (keyed `pk_name`), in key order, read consistently
    /// page after page.
    pub(super) async fn whole_partition(
        &self,
        table: &str,
        pk_name: &str,
        pk: String,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", pk_name)
                .expression_attribute_values(":pk", s(pk.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(aws_error)?;
            items.extend(out.items().iter().cloned());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// A page of the actions in `partition` of `index` (keyed `pk_name`, `sk_name`), newest
    /// first; a cursor works only for the partition that returned it.
    async fn newest_first(
        &self,
        index: &str,
        pk_name: &str,
        sk_name: &str,
        partition: String,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Result<Page, BadCursor>, StoreError> {
        Ok(self
            .newest_first_items(index, pk_name, sk_name, partition, limit, cursor)
            .await?
            .map(|(items, next_cursor)| Page { actions: readable_actions(&items), next_cursor }))
    }

    /// A page of an index's items, newest first, and the cursor of the next page.
    async fn newest_first_items(
        &self,
        index: &str,
        pk_name: &str,
        sk_name: &str,
        partition: String,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Result<(Vec<Item>, Option<String>), BadCursor>, StoreError> {
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
            .map_err(aws_error)?;
        let next_cursor = out.last_evaluated_key().map(encode_cursor);
        Ok(Ok((out.items().to_vec(), next_cursor)))
    }

    pub(super) async fn write_transition(
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
        // A human's rejection is remembered with it (`domain::rejections`).
        if let Some((fingerprint, rejection)) = crate::domain::rejections::recorded_by(before, after) {
            let mut item = Item::new();
            item.insert(keys::PK.into(), s(keys::rejection_pk(&after.user_id, &fingerprint)));
            item.insert(keys::SK.into(), s(keys::REJECTION_SK));
            let doc = serde_json::to_string(&rejection).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            item.insert("doc".into(), s(doc));
            let keep = chrono::Duration::days(crate::domain::rejections::MAX_MEMORY_DAYS as i64 + 1);
            item.insert(keys::TTL.into(), n((rejection.rejected_at + keep).timestamp()));
            let put = Put::builder().table_name(&self.table).set_item(Some(item)).build().map_err(StoreError::from)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        // The notification of a reported move is recorded with it (an outbox).
        let notification = self.notification_write(before, after, events)?.map(|(write, n)| {
            items.push(write);
            n
        });
        self.conditional_transaction(items).await?;
        self.announce(notification.as_ref()).await;
        Ok(())
    }

    /// Takes items no reader can parse out of the `due` index (they stay in the table for a
    /// human), so they never fill the sweep's batches.
    pub(super) async fn unindex_unreadable(&self, items: &[Item], readable: &[Action]) {
        for item in items {
            let (Some(pk), Some(sk)) = (item.get(keys::PK), item.get(keys::SK)) else { continue };
            let id = pk.as_s().ok().and_then(|p| p.strip_prefix("ACTION#")).and_then(ActionId::parse);
            if id.is_some_and(|id| readable.iter().any(|a| a.action_id == id)) {
                continue;
            }
            self.leave_due_index(pk, sk).await;
        }
    }

    /// Takes one item out of the `due` index (it stays in the table for a human to look at).
    pub(super) async fn leave_due_index(&self, pk: &AttributeValue, sk: &AttributeValue) {
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

    /// The conditional put of `after`, plus the snapshots its steps took since `before`.
    pub(super) fn action_writes(&self, before: &Action, after: &Action) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut items = vec![TransactWriteItem::builder().put(self.put_action(after, Some(before))?).build()];
        items.extend(self.inbox_writes(Some(before), after)?);
        for step in &after.steps {
            let (Some(snapshot), Some(taken)) = (&step.snapshot, step.snapshot_at) else { continue };
            if before.steps.get(step.index).and_then(|b| b.snapshot_at) == Some(taken) {
                continue;
            }
            let mut item = Item::new();
            item.insert(keys::PK.into(), s(keys::snapshot_pk(after.action_id)));
            item.insert(keys::SK.into(), s(keys::snapshot_sk(step.index)));
            item.insert("taken_at".into(), s(crate::domain::time::format_time(taken)));
            let doc = serde_json::to_string(snapshot).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            item.insert("doc".into(), s(doc));
            item.insert(keys::TTL.into(), n((taken + self.snapshot_retention).timestamp()));
            let put = Put::builder().table_name(&self.table).set_item(Some(item)).build()?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        Ok(items)
    }

    pub(super) fn put_action(&self, action: &Action, before: Option<&Action>) -> Result<Put, StoreError> {
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::action_pk(action.action_id)));
        item.insert(keys::SK.into(), s(keys::ACTION_SK));
        item.insert(keys::GSI1_PK.into(), s(keys::user_partition(&action.user_id)));
        item.insert(keys::GSI1_SK.into(), s(action.action_id.to_string()));
        item.insert(keys::GSI2_PK.into(), s(keys::user_status_partition(&action.user_id, action.status)));
        item.insert(keys::GSI2_SK.into(), s(action.action_id.to_string()));
        item.insert(keys::GSI4_PK.into(), s(keys::status_partition(action.status)));
        item.insert(keys::GSI4_SK.into(), s(action.action_id.to_string()));
        item.insert(keys::GSI5_PK.into(), s(keys::day_partition(action.created_at.date_naive())));
        item.insert(keys::GSI5_SK.into(), s(action.action_id.to_string()));
        // What administrators' listings filter on, beside the keys.
        item.insert("action_type".into(), s(&action.action_type));
        if let Some(tier) = action.tier {
            item.insert("tier".into(), n(tier as u8));
        }
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

    /// The inbox entries of `after` (`keys::inbox_sk`): one per member of its pool who has
    /// not decided yet while it waits for approval, in the sparse `by_approver` index (keys
    /// only: the inbox reads the action itself); entries of `before` no longer due are deleted
    /// in the same write.
    pub(super) fn inbox_writes(
        &self,
        before: Option<&Action>,
        after: &Action,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let members = |a: &Action| -> Vec<String> {
            if a.status != Status::AwaitingApproval {
                return Vec::new();
            }
            a.undecided().iter().map(|m| m.as_str().to_ascii_lowercase()).collect()
        };
        let now_in = members(after);
        let mut items = Vec::new();
        {
            for member in &now_in {
                let mut item = Item::new();
                item.insert(keys::PK.into(), s(keys::action_pk(after.action_id)));
                item.insert(keys::SK.into(), s(keys::inbox_sk(member)));
                item.insert(keys::GSI3_PK.into(), s(keys::approver_partition(member)));
                item.insert(keys::GSI3_SK.into(), s(after.action_id.to_string()));
                let put = Put::builder().table_name(&self.table).set_item(Some(item)).build()?;
                items.push(TransactWriteItem::builder().put(put).build());
            }
        }
        for gone in before.map(members).unwrap_or_default().into_iter().filter(|m| !now_in.contains(m)) {
            let delete = aws_sdk_dynamodb::types::Delete::builder()
                .table_name(&self.table)
                .key(keys::PK, s(keys::action_pk(after.action_id)))
                .key(keys::SK, s(keys::inbox_sk(&gone)))
                .build()?;
            items.push(TransactWriteItem::builder().delete(delete).build());
        }
        Ok(items)
    }

    pub(super) fn put_audit(&self, event: &AuditEvent) -> Result<Put, StoreError> {
        let mut item = Item::new();
        item.insert(keys::AUDIT_PK.into(), s(event.action_id.to_string()));
        item.insert(keys::AUDIT_SK.into(), n(event.seq));
        item.insert("at".into(), s(crate::domain::time::format_time(event.at)));
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

#[cfg(test)]
mod tests {
    use super::*;

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
